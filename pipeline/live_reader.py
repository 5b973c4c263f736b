"""The live source: a camera, a video file played in real time, or a stream, read by
ffmpeg, keeping only the newest frame.

:func:`open_source` tells what SOURCE is and probes its frame size and rate:

* a camera: ``/dev/videoN`` or just ``N``, through ffmpeg's ``v4l2`` input;
* a stream URL ffmpeg reads: ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``,
  ``tcp://``, ``srt://``, ``rtp://`` (``file://`` names a local file);
* anything else is a video file, played at its own pace (``-re``), looped with ``loop``.

:class:`FrameSource` runs ffmpeg (in a session of its own: a Ctrl-C in the terminal
reaches this process, which stops it) and reads its raw ``bgr24`` frames on a thread
into a one-frame slot. A frame not taken before the next one arrives is dropped and
counted, so lateness never builds up. When ffmpeg ends, :attr:`FrameSource.ended` says
how: a file played to its end, or a failure with ffmpeg's last words.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from pipeline.errors import VideoError
from pipeline.video import check_regular, ffmpeg_exe, local_path, probe

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt",
                  "rtp")
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp")  # no -re
PROC_WIDTH = 640  # frames are planned at most this wide (the tutorial's webcam size)
_PROBE_TIMEOUT = 15.0  # seconds to open a stream or camera


@dataclass(frozen=True)
class Source:
    """What SOURCE is: ``kind`` (``file``, ``camera``, ``stream``), the ffmpeg input
    (``target``, with ``input_args`` before ``-i``), the frame size as decoded
    (``width``, ``height``), the rate (None when unknown) and, for a file, its sound's codec
    (None without sound) and its length."""

    text: str
    kind: str
    target: str
    input_args: tuple[str, ...]
    width: int
    height: int
    rate: Fraction | None
    audio: str | None = None  # a file's first audio stream's codec
    duration: float = 0.0  # a file's length in seconds

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


def open_source(text: str, loop: bool = False) -> Source:
    """Tell what ``text`` names and probe it; :class:`VideoError` in one line when it
    cannot be opened (no such file or camera, no video, a stream that does not answer)."""
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme and scheme != "file":
        if scheme not in STREAM_SCHEMES:
            raise VideoError(f"{text}: unknown stream scheme {scheme!r} (ffmpeg reads "
                             f"{', '.join(STREAM_SCHEMES)})")
        if loop:
            raise VideoError(f"{text}: --loop is for video files, not streams")
        # a second of probing, not five: a live stream starts at once
        extra = ("-analyzeduration", "1000000", "-probesize", "1000000",
                 *(("-fflags", "nobuffer") if scheme in LIVE_SCHEMES else ("-re",)))
        w, h, rate = _probe_av(text, None)
        return Source(text, "stream", text, extra, w, h, rate)
    if re.fullmatch(r"\d+", text) or text.startswith("/dev/video"):
        device = f"/dev/video{text}" if text.isdigit() else text
        if loop:
            raise VideoError(f"{text}: --loop is for video files, not cameras")
        if not os.path.exists(device):
            raise VideoError(f"{device}: no such camera (is it plugged in? `ls /dev/video*` "
                             "lists the cameras)")
        w, h, rate = _probe_av(device, "v4l2")
        return Source(text, "camera", device, ("-f", "v4l2"), w, h, rate)
    path = local_path(text)
    check_regular(path, "video")
    info = probe(path)
    extra = ("-re", "-stream_loop", "-1") if loop else ("-re",)
    return Source(text, "file", path, extra, info.width, info.height, info.rate,
                  info.audio[0].codec if info.audio else None, info.duration)


def _probe_av(target: str, fmt: str | None) -> tuple[int, int, Fraction | None]:
    """Frame size and rate of a stream or camera, through PyAV (with a timeout)."""
    import av

    try:
        with av.open(target, format=fmt, timeout=_PROBE_TIMEOUT) as c:
            if not c.streams.video:
                raise VideoError(f"{target}: no video stream")
            s = c.streams.video[0]
            w, h = s.codec_context.width, s.codec_context.height
            if not w or not h:
                frame = next(c.decode(s))
                w, h = frame.width, frame.height
            r = s.average_rate or s.guessed_rate
            rate = Fraction(r.numerator, r.denominator) if r and 0 < float(r) <= 1000 else None
    except av.error.FFmpegError as exc:
        raise VideoError(f"{target}: cannot open ({exc.strerror or exc})") from None
    except StopIteration:
        raise VideoError(f"{target}: no frames") from None
    return w, h, rate


def processing_size(width: int, height: int, limit: int = PROC_WIDTH) -> tuple[int, int]:
    """The (height, width) frames are planned at: the source's, at most ``limit`` wide,
    even sides."""
    w = min(width, limit) // 2 * 2
    h = max(2, round(height * w / width / 2) * 2)
    return h, w


@dataclass(frozen=True)
class Frame:
    """One source frame: ``image`` (H, W, 3) uint8 BGR, its ``number`` in the order
    read (0 first) and when its last byte was read (``time.monotonic()``)."""

    image: np.ndarray
    number: int
    read_at: float


class FrameSource:
    """ffmpeg reading ``source`` at the processing size ``proc_hw`` (and ``fps`` frames a
    second when given), on a thread, newest frame only. Use as a context manager."""

    def __init__(self, source: Source, proc_hw: tuple[int, int], fps: float | None = None
                 ) -> None:
        self.source, self.proc_hw = source, proc_hw
        h, w = proc_hw
        vf = f"scale={w}:{h}" + (f",fps={fps:g}" if fps else "")
        self.cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
                    *source.input_args, "-i", source.target, "-map", "0:v:0", "-an", "-sn",
                    "-dn", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
        self.read = 0  # frames read from ffmpeg
        self.taken = 0  # frames handed out
        self.ended: str | None = None  # None while running, then "" (clean end) or why
        self.last_read = time.monotonic()
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._stderr: list[bytes] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FrameSource:
        self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._drain, daemon=True, name="live-ffmpeg-err").start()
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-reader")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        """Frames read but never handed out (overwritten by a newer one)."""
        with self._cond:
            return self.read - self.taken - (self._slot is not None)

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr = [*self._stderr[-19:], line]

    def _run(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        h, w = self.proc_hw
        size = h * w * 3
        out = self._proc.stdout
        while True:
            buf = bytearray(size)
            view, filled = memoryview(buf), 0
            while filled < size and (n := out.readinto(view[filled:])):
                filled += n
            if filled < size:
                break
            now = time.monotonic()
            frame = Frame(np.frombuffer(buf, np.uint8).reshape(h, w, 3), self.read, now)
            with self._cond:
                self._slot, self.last_read = frame, now
                self.read += 1
                self._cond.notify_all()
        code = self._proc.wait()
        with self._cond:
            self.ended = self._why(code)
            self._cond.notify_all()

    def _why(self, code: int) -> str:
        """"" for a file played to its end, else why the source stopped (one line)."""
        words = " | ".join(b.decode(errors="replace").strip() for b in self._stderr[-3:])
        if code == 0 and self.source.is_file and self.read:
            return ""
        if code < 0:
            return f"ffmpeg was stopped by signal {-code} after {self.read} frames"
        if code == 0:
            return f"the {self.source.kind} ended after {self.read} frames"
        return f"ffmpeg failed after {self.read} frames" + (f": {words}" if words else "")

    def take(self, timeout: float) -> Frame | None:
        """The newest frame not yet taken, waiting up to ``timeout`` seconds; None when
        there is none (yet, or any more: see :attr:`ended`)."""
        with self._cond:
            if self._slot is None and self.ended is None:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            if frame is not None:
                self.taken += 1
            return frame

    def close(self) -> None:
        """Stop ffmpeg (if it still runs) and the reading thread."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.kill()
        if self._proc is not None:
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

