"""``mosaic live --record FILE``: what was shown, as H.264 at the real frame rate.

A ticker thread feeds the encoder at a constant ``rate``: each tick writes the frame
shown last (again, when no new one was made in time), so the file's timeline is the
wall clock's, dropped frames and all. Frames of another size (the cells changed) are
resized to the first one's.

The encoder writes a temporary file beside FILE; :meth:`Recorder.finish` closes it,
adds the source's sound when the source is a file (from where the recording started,
looped with the video), and only then renames the result to FILE: an interrupted or
failed recording leaves FILE complete or absent, never half-written. ffmpeg runs in a
session of its own, so a Ctrl-C in the terminal reaches only this process, which
finishes the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from pipeline.cache import umask_mode
from pipeline.encode import bgr_to_i420, encode_command, encoder_args
from pipeline.errors import FFmpegError
from pipeline.output import Container, audio_args, container_for, mux_args
from pipeline.processes import widen_pipe
from pipeline.video import ffmpeg_exe

log = logging.getLogger(__name__)

CRF, PRESET = 23, "veryfast"  # light enough to share two cores with the engine
_FINISH_TIMEOUT = 60.0  # seconds for the encoder to flush and the mux to run


@dataclass(frozen=True)
class Sound:
    """The sound to add: audio stream ``stream`` of file ``path`` (codec ``codec``),
    from ``start`` seconds, ``loop`` ed as the video was."""

    path: str
    codec: str
    start: float = 0.0
    loop: bool = False


class Recorder:
    """Record shown frames into ``out`` (see the module doc). ``offer`` frames from the
    engine; ``finish`` or ``abort`` once."""

    def __init__(self, out: Path, rate: Fraction, encoder: str = "libx264") -> None:
        self.out, self.rate, self.encoder = Path(out), rate, encoder
        self.container: Container = container_for(out, encoder)
        self.sound: Sound | None = None
        self.frames = 0  # written to the encoder
        self.error: str | None = None
        self._size: tuple[int, int] | None = None  # (w, h) of the file
        self._i420: np.ndarray | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = 0.0
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        fd, tmp = tempfile.mkstemp(prefix=f".{self.out.stem}.", suffix=".mp4.tmp",
                                   dir=self.out.absolute().parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def offer(self, shown_bgr: np.ndarray) -> None:
        """The frame just shown, (H, W, 3) uint8 BGR (copied here: the caller may reuse
        it). The first one fixes the file's size and starts the clock."""
        if self.error is not None or self._stop.is_set():
            return
        if self._size is None:
            h, w = shown_bgr.shape[:2]
            self._size = (w // 2 * 2, h // 2 * 2)
        w, h = self._size
        if shown_bgr.shape[:2] != (h, w):
            shown_bgr = cv2.resize(shown_bgr, (w, h), interpolation=cv2.INTER_AREA)
        i420 = bgr_to_i420(np.ascontiguousarray(shown_bgr))
        with self._lock:
            self._i420 = i420
        if self._proc is None:
            self._start()

    def _start(self) -> None:
        w, h = self._size
        cmd = encode_command(self.tmp, w, h, self.rate,
                             encoder_args(self.encoder, CRF, PRESET))
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        widen_pipe(self._proc.stdin)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._tick, daemon=True, name="live-record")
        self._thread.start()

    def _tick(self) -> None:
        """Write the latest frame at every tick of the clock, until stopped."""
        assert self._proc is not None and self._proc.stdin is not None
        period = 1 / float(self.rate)
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - self._started) / period) + 1
                while self.frames < due:
                    with self._lock:
                        frame = self._i420
                    self._proc.stdin.write(memoryview(frame).cast("B"))
                    self.frames += 1
                self._stop.wait(self._started + due * period - time.monotonic())
        except (BrokenPipeError, OSError, ValueError) as exc:
            self.error = f"the encoder stopped ({exc})"

    @property
    def seconds(self) -> float:
        return self.frames / float(self.rate)

    def finish(self) -> Path | None:
        """Close the file, add the sound and rename it to :attr:`out`; the path, or
        None when nothing was recorded. FFmpegError when the encoder or the mux failed
        (nothing is left behind then)."""
        try:
            if self._proc is None:
                return None
            self._stop.set()
            self._thread.join()
            try:  # closes the encoder's input: it finishes the file
                err = self._proc.communicate(timeout=_FINISH_TIMEOUT)[1]
            except subprocess.TimeoutExpired:
                raise FFmpegError(f"recording {self.out}", "the encoder did not finish in "
                                  f"{_FINISH_TIMEOUT:.0f} s") from None
            if self._proc.returncode != 0 or self.error is not None or self.frames == 0:
                raise FFmpegError(f"recording {self.out}",
                                  err.decode(errors="replace") or (self.error or ""))
            self._mux()
            return self.out
        finally:
            self.abort()

    def _mux(self) -> None:
        """The recorded video (stream copy) and the sound into FILE's container, written
        to a temporary name and renamed."""
        fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp",
                                   dir=self.out.absolute().parent)
        os.close(fd)
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                "-i", str(self.tmp)]
        if (s := self.sound) is not None:
            args += [*(["-stream_loop", "-1"] if s.loop else []), "-ss", f"{s.start:.3f}",
                     "-i", s.path, "-map", "0:v:0", "-map", "1:a:0",
                     *audio_args(self.container, s.codec), "-t", f"{self.seconds:.3f}"]
        args += ["-c:v", "copy", *mux_args(self.container), tmp]
        try:
            try:
                proc = subprocess.run(args, capture_output=True, text=True,
                                      timeout=_FINISH_TIMEOUT, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise FFmpegError(f"writing {self.out}", "the mux did not finish in "
                                  f"{_FINISH_TIMEOUT:.0f} s") from None
            if proc.returncode != 0:
                raise FFmpegError(f"writing {self.out}", proc.stderr)
            os.chmod(tmp, umask_mode())
            os.replace(tmp, self.out)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def abort(self) -> None:
        """Stop the encoder if it runs and remove the temporary file (FILE, if it was
        finished, stays)."""
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.tmp.unlink(missing_ok=True)
