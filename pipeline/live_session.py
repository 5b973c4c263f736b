"""One ``mosaic live`` run: source -> engine -> JPEG frames, on a thread of its own.

The engine thread takes the newest frame from the reader (older ones are dropped and
counted), plans and paints it (:class:`pipeline.live_engine.LiveEngine`), blends the
source over it, encodes it as a JPEG once for every client, and hands it to
:attr:`LiveSession.publish` (the server's). Between frames it applies the controls the
page sent, adds the faces the grower found, and, in auto mode, changes the cells across
to hold the frame rate (:class:`pipeline.live_pace.CellGovernor`). It also feeds the
recorder and the grower.

A file that ends, or a source that fails or sends nothing for ``stall`` seconds, ends
the session: :attr:`LiveSession.outcome` then holds the exit code and the one line to
print; the status the page shows says it first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.config import RenderConfig
from pipeline.live_engine import LiveEngine, TilePool
from pipeline.live_grow import FaceGrower, GrownFace
from pipeline.live_look import Look, changed_look, layout, max_cols, render_command
from pipeline.live_pace import CellGovernor, Pace
from pipeline.live_reader import Frame, FrameSource, Source, processing_size
from pipeline.live_record import Recorder, Sound

log = logging.getLogger(__name__)

START_COLS = 40  # auto mode starts here: the tutorial's 16-pixel cells at 640 wide
MAX_VIEW_WIDTH = 1920  # wider mosaics are scaled down for the stream
STALL_WARN = 2.0  # seconds without a frame before the page says "stalled"
FIRST_FRAME_WAIT = 20.0  # seconds a camera or stream may take to send its first frame


@dataclass(frozen=True)
class LiveOptions:
    """What ``mosaic live`` was asked for (see its ``--help``)."""

    source: Source
    index_text: str
    config: RenderConfig
    cols: int | None = None  # None: auto
    fps: float | None = None
    loop: bool = False
    quality: int = 80
    stall: float = 10.0
    grow: Path | None = None
    record: Path | None = None
    render_args: tuple[str, ...] = ()  # --config/--set to repeat in the render command


@dataclass(frozen=True)
class Published:
    """A frame made: its JPEG, its sequence number, when its source frame was read and
    that frame's number, and the image size (w, h)."""

    jpeg: bytes
    seq: int
    read_at: float
    number: int
    size: tuple[int, int]


@dataclass
class Outcome:
    code: int
    line: str
    error: BaseException | None = None


@dataclass
class _Inbox:
    """What other threads hand the engine thread (applied between frames)."""

    look: Look | None = None
    faces: list[tuple[np.ndarray, GrownFace]] = field(default_factory=list)


class LiveSession:
    """The engine thread and what it reports (see the module doc)."""

    def __init__(self, opts: LiveOptions, pool: TilePool) -> None:
        src = opts.source
        self.opts, self.pool = opts, pool
        self.proc_hw = processing_size(src.width, src.height)
        self.max_cols = max_cols(self.proc_hw[1])
        start = min(opts.cols or START_COLS, self.max_cols)
        self.look = Look.from_config(opts.config, start, opts.cols is None)
        self.grid, self.scale = self._layout(start)
        rate = Fraction(opts.fps).limit_denominator(1001) if opts.fps else (src.rate or 30)
        self.rate = rate
        self.engine = LiveEngine(pool, self.look.config(opts.config), self.grid)
        self.pace = Pace()
        self.governor = CellGovernor(start, 1 / float(rate))
        self.reader = FrameSource(src, self.proc_hw, opts.fps)
        self.recorder = Recorder(opts.record, rate) if opts.record else None
        self.grower = FaceGrower(opts.grow, pool.tile_hw, self._face) if opts.grow else None
        self.grown: list[GrownFace] = []
        self.publish: Callable[[Published], None] = lambda p: None
        self.status, self.message = "starting", ""
        self.outcome: Outcome | None = None
        self.done = threading.Event()
        self.latest: Published | None = None
        self.first_number: int | None = None
        self._inbox, self._lock = _Inbox(), threading.Lock()
        self._cold = True  # the next frame starts a canvas
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-engine")

    def _layout(self, cols: int):
        src = self.opts.source
        return layout((src.height, src.width), self.proc_hw, self.pool.tile_hw, cols)

    # -- other threads --------------------------------------------------------------
    def start(self) -> None:
        if self.grower is not None:
            existing = self.grower.existing()
            if existing:
                ids = self.engine.grow(np.stack([t for t, _ in existing]), debut=False)
                for (_, face), tile_id in zip(existing, ids, strict=False):
                    face.tile_id = int(tile_id)
                    self.grown.append(face)
            self.grower.start()
        self.reader.__enter__()
        self._thread.start()

    def stop(self) -> Path | None:
        """Stop everything (ffmpeg included) and finish the record; its path or None.
        Raises what finishing the record raised (the record is then removed)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.reader.close()
        if self.grower is not None:
            self.grower.stop()
        if self.recorder is None:
            return None
        src = self.opts.source
        if self.first_number is not None and src.is_file and src.audio:
            start = self.first_number / float(self.rate)
            if self.opts.loop and src.duration > 0:
                start %= src.duration
            self.recorder.sound = Sound(src.target, src.audio, start, self.opts.loop)
        return self.recorder.finish()

    def control(self, changes: dict) -> Look:
        """Apply the page's ``changes`` (checked here; ConfigError for a bad one) from the
        next frame on; the look they give."""
        with self._lock:
            look = changed_look(self._inbox.look or self.look, changes, self.max_cols)
            self._inbox.look = look
        return look

    def _face(self, tile: np.ndarray, face: GrownFace) -> None:
        with self._lock:
            self._inbox.faces.append((tile, face))

    def commands(self) -> tuple[str, str]:
        """The ``mosaic render`` and ``make render`` lines of the current look."""
        src = self.opts.source
        video = src.text if src.kind == "file" or src.text.startswith("http") else (
            str(self.opts.record) if self.opts.record else "VIDEO.mp4")
        return render_command(video, self.opts.index_text, self.look, self.scale,
                              self.opts.render_args)

    def stats(self) -> dict:
        """The figures the page shows, as JSON-ready values."""
        p50, p95 = self.pace.latency_ms()
        mosaic, make = self.commands()
        latest = self.latest
        return {
            "status": self.status, "message": self.message,
            "source": self.opts.source.text, "kind": self.opts.source.kind,
            "fps": round(self.pace.fps(), 2), "latency_ms": {"p50": p50, "p95": p95},
            "work_ms": round(self.pace.work(50) * 1000, 1), "frames": self.pace.frames,
            "read": self.reader.read, "dropped": self.reader.dropped,
            "cells": {"cols": self.grid.cols, "rows": self.grid.rows,
                      "auto": self.look.auto, "max": self.max_cols},
            "size": list(latest.size) if latest else None, "look": self.look.to_json(),
            "commands": {"mosaic": mosaic, "make": make},
            "grown": [f.to_json() for f in self.grown],
            "record": None if self.recorder is None else {
                "file": str(self.opts.record), "seconds": round(self.recorder.seconds, 2)},
        }

    # -- the engine thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            with threadpool_limits(1, user_api="blas"):
                started = time.monotonic()
                while not self._stop.is_set():
                    self._apply_inbox()
                    frame = self.reader.take(0.25)
                    if frame is not None:
                        self._make(frame)
                    elif self._source_gone(started):
                        break
        except Exception as exc:  # a bug: the CLI raises it again, with its traceback
            self._end(1, f"the live engine failed: {exc}", exc)

    def _end(self, code: int, line: str, error: BaseException | None = None) -> None:
        self.status = "ended" if code == 0 else "failed"
        self.message = line
        self.outcome = Outcome(code, line, error)
        self.done.set()

    def _source_gone(self, started: float) -> bool:
        """Whether the source ended or stalled for good (the session ends then); says
        a stall on the page first."""
        name, ended = self.opts.source.text, self.reader.ended
        if ended == "":
            self._end(0, f"{name}: the video ended after {self.reader.read} frames")
            return True
        if ended is not None:
            self._end(1, f"{name}: the source stopped: {ended}")
            return True
        now = time.monotonic()
        idle = now - (self.reader.last_read if self.reader.read else started)
        limit = self.opts.stall if self.reader.read else max(self.opts.stall,
                                                             FIRST_FRAME_WAIT)
        if idle > limit:
            self._end(1, f"{name}: no frame for {limit:g} s: the source stalled")
            return True
        if idle > STALL_WARN and self.status == "running":
            self.status, self.message = "stalled", f"no frame for {idle:.0f} s"
            log.warning("%s: no frame for %.0f s", name, idle)
        return False

    def _make(self, frame: Frame) -> None:
        """Plan, paint, blend and encode one frame; publish it."""
        if self.status != "running":
            if self.status == "stalled":
                log.info("%s: frames again", self.opts.source.text)
            self.status, self.message = "running", ""
        t0 = time.monotonic()
        step = self.engine.step(frame.image)
        shown = self.engine.shown(frame.image, self.look.alpha)
        if shown.shape[1] > MAX_VIEW_WIDTH:
            h = round(shown.shape[0] * MAX_VIEW_WIDTH / shown.shape[1] / 2) * 2
            shown = cv2.resize(shown, (MAX_VIEW_WIDTH, h), interpolation=cv2.INTER_AREA)
        _, jpeg = cv2.imencode(".jpg", shown, [cv2.IMWRITE_JPEG_QUALITY, self.opts.quality])
        self.pace.made(time.monotonic() - t0)
        out = Published(jpeg.tobytes(), self.pace.frames, frame.read_at, frame.number,
                        (shown.shape[1], shown.shape[0]))
        self.latest = out
        self.publish(out)
        if self.first_number is None:
            self.first_number = frame.number
        if self.recorder is not None:
            self.recorder.offer(shown)
            if self.recorder.error is not None:
                self._end(1, f"{self.opts.record}: recording failed: {self.recorder.error}")
        if self.grower is not None:
            self.grower.offer(frame.image, frame.number)
        self._note_placed(step.debuts, frame.number)
        if self._cold:  # the first frame on a new canvas: its time tells nothing
            self._cold = False
            self.pace.reset_work()
            self.governor.restarted()
        if self.look.auto and (cols := self.governor.suggest(self.grid.cols, self.pace)):
            with self._lock:
                base = self._inbox.look or self.look
                self._inbox.look = changed_look(base, {"cols": cols, "auto": True},
                                                self.max_cols)

    def _note_placed(self, debuts: tuple[int, ...], number: int) -> None:
        waiting = [f for f in self.grown if f.placed_frame is None and f.tile_id is not None]
        if not waiting:
            return
        shows = self.engine.showing(np.array([f.tile_id for f in waiting]))
        now = time.monotonic()
        for face, on in zip(waiting, shows, strict=True):
            if on or face.tile_id in debuts:
                face.placed_frame, face.placed_at = number, now

    def _apply_inbox(self) -> None:
        with self._lock:
            look, faces = self._inbox.look, self._inbox.faces
            self._inbox = _Inbox()
        if look is not None and look != self.look:
            if look.cols != self.grid.cols:
                self.grid, self.scale = self._layout(look.cols)
                self._cold = True
            self.look = look
            self.engine.configure(look.config(self.opts.config), self.grid)
        if faces:
            ids = self.engine.grow(np.stack([t for t, _ in faces]))
            for (_, face), tile_id in zip(faces, ids, strict=False):
                face.tile_id = int(tile_id)
                self.grown.append(face)
