"""Painting: one segment's plan + its source frames -> one encoded segment file.

:func:`paint_segment` is a pure function of (input, index, plan, options, segment
number): it reads the plan chunk, loads only the tiles the segment shows, rebuilds the
canvas the segment starts from, applies each frame's changes (recolouring them by the
paint-time strength), blends with the source, scores the pure mosaic, and encodes.
It runs in any process on any machine that sees the same paths, in any order, and
gives the same frames. Its outputs, in the job's work directory:

* ``seg-NNNNN.mp4``: the encoded frames (written to a unique temporary name, renamed);
* ``seg-NNNNN.json``: written last: the job key, the frame count, statistics, scores
  and the video file's size and digests. A segment counts as done only with it, and
  only while its file still matches them;
* ``seg-NNNNN.progress``: frames painted so far, while it runs (for the progress bar).

A rerun of a done segment returns its statistics without painting it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cache import artifact_problem, record_artifact, umask_mode, write_json
from pipeline.compose import Canvas, blend
from pipeline.execute import steady_heap, trim_heap
from pipeline.grid import Grid
from pipeline.index import TILES, IndexPin, load_groups, pinned_bank
from pipeline.metrics import SUB, FrameScorer, tile_keys
from pipeline.plan import DIFF_SCALE, RATIO_SCALE, PlanChunk, Segment, chunk_path, read_chunk
from pipeline.video import FrameWriter, VideoInfo, bgr_to_i420, prefetch_frames
from pipeline.visibility import y_plane_spread

log = logging.getLogger(__name__)

_OUT_BUFFERS = 3  # painted frames (I420) waiting for the encoder
_PROGRESS_EVERY = 8  # frames between progress-file updates


@dataclass(frozen=True)
class PaintJob:
    """Everything a painter needs, by value or by path (picklable; paths must be valid
    where the painter runs: the shared-storage contract).

    ``key`` names the render job (plan + paint options), ``plan_key`` its plan.
    ``recolour`` is the paint-time recolour strength (0 in cluster mode), ``tone`` the
    contrast-matching strength (:func:`gains`); ``codec`` the encoder's ffmpeg output
    options.
    """

    key: str
    plan_key: str
    info: VideoInfo
    grid: Grid
    index_dir: str
    plan_dir: str
    work: str
    alpha: float
    recolour: float
    report: bool
    codec: tuple[str, ...]
    tone: float = 0.0
    index_pin: IndexPin | None = None  # the index planned with; painters refuse another


def segment_path(work: str | Path, number: int) -> Path:
    """The encoded frames of segment ``number``."""
    return Path(work) / f"seg-{number:05d}.mp4"


def stats_path(work: str | Path, number: int) -> Path:
    """The record of a finished segment (written last)."""
    return Path(work) / f"seg-{number:05d}.json"


def progress_path(work: str | Path, number: int) -> Path:
    """Frames painted so far by the segment's painter, while it runs."""
    return Path(work) / f"seg-{number:05d}.progress"


def finished(job: PaintJob, number: int, full: bool = False) -> dict | None:
    """The statistics of segment ``number`` if it is done and its file is intact (size
    and a sample digest; the whole digest with ``full``); None if it must be painted."""
    try:
        stats = json.loads(stats_path(job.work, number).read_text())
    except (OSError, ValueError):
        return None
    if stats.get("key") != job.key:
        return None
    problem = artifact_problem(segment_path(job.work, number), stats.get("video"), full)
    if problem is not None:
        log.warning("segment %d of %s: %s; it will be painted again", number, job.work, problem)
        return None
    return stats


def paint_segment(job: PaintJob, seg: Segment) -> dict:
    """Paint and encode segment ``seg`` of ``job``; returns its statistics.

    Idempotent: a segment already done is not painted again, and two painters of the
    same segment (a retried task) each write their own temporary file.
    """
    if (done := finished(job, seg.number)) is not None:
        return done
    steady_heap()  # a long-lived worker paints many segments: keep its memory flat
    chunk = read_chunk(chunk_path(job.plan_dir, seg.number), job.plan_key)
    if chunk is None:
        raise RuntimeError(f"plan chunk {seg.number} is missing or damaged")
    stats = _paint(job, seg, chunk)
    stats.update({"key": job.key, "video": record_artifact(segment_path(job.work, seg.number))})
    write_json(stats_path(job.work, seg.number), stats)
    progress_path(job.work, seg.number).unlink(missing_ok=True)
    trim_heap()
    return stats


def load_tiles(index_dir: str | Path, ids: np.ndarray) -> np.ndarray:
    """Tiles ``ids`` (m,) sorted int of an index's bank, read into memory: (m, h, w, 3)."""
    bank = np.load(Path(index_dir) / TILES, mmap_mode="r", allow_pickle=False)
    return np.ascontiguousarray(bank[ids])


def _groups(index_dir: str | Path) -> np.ndarray:
    """The index's near-duplicate group of every tile, (N,) int64 (for the variety scores)."""
    bank = np.load(Path(index_dir) / TILES, mmap_mode="r", allow_pickle=False)
    return load_groups(index_dir, bank)


def shifts(diffs: np.ndarray, strength: float) -> np.ndarray | None:
    """Recolour shifts (int16) from plan differences (1/16 levels) at ``strength``."""
    if strength <= 0:
        return None
    return np.rint(diffs * np.float32(strength / DIFF_SCALE)).astype(np.int16)


# contrast gains are kept within these: a photo keeps (nearly) its own contrast (a gain
# under 1 fades it towards a flat patch, which raises SSIM and hides the photo)
GAIN_RANGE = (0.8, 1.25)
GAIN_STEP = 64  # gains are quantised to 1/64


def gains(ratios: np.ndarray, tone: float) -> np.ndarray | None:
    """Contrast gains, float32 like ``ratios``, from the plan's contrast ratios (uint8 in
    1/:data:`RATIO_SCALE`) at strength ``tone`` (0: none, 1: the cell's contrast), kept
    within :data:`GAIN_RANGE`; None when ``tone`` is 0."""
    if tone <= 0:
        return None
    g = np.power(ratios.astype(np.float32) / RATIO_SCALE, np.float32(tone))
    g = np.rint(g * GAIN_STEP) / GAIN_STEP
    return np.clip(g, *GAIN_RANGE).astype(np.float32)


def _paint(job: PaintJob, seg: Segment, chunk: PlanChunk) -> dict:
    grid = job.grid
    bank_ids = chunk.tile_ids()
    bank, groups = pinned_bank(job.index_dir, job.index_pin, groups=job.report)
    canvas = Canvas(grid, np.ascontiguousarray(bank[bank_ids]),
                    track=SUB if job.report else 0, bank_ids=bank_ids)
    del bank
    start = chunk.start_state
    canvas.reset(start.ids, start.orients, shifts(start.diffs, job.recolour),
                 gains(start.ratios, job.tone))
    scorer = FrameScorer(grid, groups) if job.report else None
    if scorer is not None and chunk.start_src_lab is not None:
        scorer.restore({"prev_src_lab": chunk.start_src_lab,
                        "prev_key": tile_keys(start.ids, start.orients)})
    need_source = job.alpha > 0 or job.report
    source = prefetch_frames(job.info, seg.start, seg.count) if need_source else None
    encoder = _Encoder(job, seg, grid)
    try:
        for i in range(seg.count):
            frame = next(source) if source is not None else None
            cells, ids, orients, diffs, ratios = chunk.frame(i)
            change = canvas.place(cells, ids, orients, shifts(diffs, job.recolour),
                                  measure=scorer is not None, gain=gains(ratios, job.tone))
            if scorer is not None:
                per_cell = np.zeros(grid.cells, np.float32)
                per_cell[cells] = change
                placed = np.zeros(grid.cells, bool)
                placed[cells] = True
                scorer.update(frame, None, canvas.ids, canvas.orients,
                              per_cell.reshape(grid.rows, grid.cols), canvas.sub,
                              canvas.sub_lab, changed=placed.reshape(grid.rows, grid.cols))
            # the blend (if any) into the scratch frame, then straight to I420 (half the
            # bytes of BGR: the buffers queued for the encoder are I420)
            shown = canvas.image if job.alpha <= 0 else blend(
                canvas.image, frame, job.alpha, encoder.scratch, encoder.scratch)
            out = encoder.buffer()
            bgr_to_i420(shown, out)
            if scorer is not None:  # the photos' contrast, painted and as written
                scorer.scores.add_visibility(canvas.own, canvas.spread, None if job.alpha <= 0
                                             else y_plane_spread(out[:grid.out_h], grid.rows,
                                                                 grid.cols))
            encoder.put(out)
            if (i + 1) % _PROGRESS_EVERY == 0:
                _note_progress(job, seg, i + 1)
        encoder.finish(segment_path(job.work, seg.number))
    finally:
        encoder.abort()
        if source is not None:
            source.close()
    stats = {"frames": seg.count, "active_cells": int(chunk.active.sum()),
             "cells": seg.count * grid.cells}
    if scorer is not None:
        stats["scores"] = scorer.scores.to_json()
    return stats


def _note_progress(job: PaintJob, seg: Segment, frames: int) -> None:
    with contextlib.suppress(OSError):  # advisory only
        progress_path(job.work, seg.number).write_text(str(frames))


class _Encoder:
    """An ffmpeg encoder fed from a thread (the pipe write overlaps the painting of the
    next frame), with a small pool of reusable I420 frame buffers."""

    def __init__(self, job: PaintJob, seg: Segment, grid: Grid) -> None:
        work = Path(job.work)
        fd, tmp = tempfile.mkstemp(prefix=f".seg-{seg.number:05d}.", suffix=".mp4.tmp",
                                   dir=work)
        os.close(fd)
        self.tmp = Path(tmp)
        self.writer = FrameWriter(self.tmp, grid.out_w, grid.out_h, job.info.rate,
                                  list(job.codec))
        self.scratch = np.empty((grid.out_h, grid.out_w, 3), np.uint8)
        self._free: queue.Queue = queue.Queue()
        for _ in range(_OUT_BUFFERS + 1):
            self._free.put(np.empty((grid.out_h * 3 // 2, grid.out_w), np.uint8))
        self._todo: queue.Queue = queue.Queue(_OUT_BUFFERS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="mosaic-encode")
        self._thread.start()

    def _run(self) -> None:
        try:
            while (frame := self._todo.get()) is not None:
                self.writer.write_i420(frame)
                self._free.put(frame)
        except BaseException as exc:  # handed to the painter
            self._error = exc
            self._free.put(None)  # wake a painter waiting for a buffer

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def buffer(self) -> np.ndarray:
        """A frame buffer the encoder is done with."""
        self._check()
        buf = self._free.get()
        self._check()
        return buf

    def put(self, frame: np.ndarray) -> None:
        """Queue a painted frame for encoding."""
        while True:
            self._check()
            try:
                self._todo.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self, dest: Path) -> None:
        """Encode what is queued, close the file and rename it to ``dest``."""
        self.put(None)
        self._thread.join()
        self._check()
        self.writer.close()
        os.chmod(self.tmp, umask_mode())
        os.replace(self.tmp, dest)

    def abort(self) -> None:
        """Stop the encoder if it still runs and remove the temporary file."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._todo.put_nowait(None)
            self.writer.abort()
            self._thread.join(timeout=5)
        self.tmp.unlink(missing_ok=True)
