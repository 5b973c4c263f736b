"""Video input: finding ffmpeg, probing, decoding frames through a pipe (encoding is
:mod:`pipeline.encode`, URLs :mod:`pipeline.download`, the output's mux :mod:`pipeline.output`).

Frames cross process boundaries as raw ``bgr24`` over pipes: ffmpeg decodes (applying
rotation metadata and normalising to a constant frame rate) and ffmpeg encodes. PyAV,
whose wheel carries FFmpeg's libraries, does the probing. Inputs are checked before
anything reads them: ``file://`` URLs name local files (:func:`local_path`), and only
regular files are opened (:func:`check_regular`: a FIFO with no writer would block
forever). An ffmpeg that is missing or does not run is said once (:func:`ffmpeg_exe`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import stat
import subprocess
import threading
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.errors import FFmpegError, ToolError, VideoError
from pipeline.processes import widen_pipe

log = logging.getLogger(__name__)

# Demuxers of single pictures (PNG, JPEG, ... are read as "<codec>_pipe" too).
STILL_IMAGE_FORMATS = frozenset({"image2", "image2pipe"})


def ffmpeg_exe() -> str:
    """The ffmpeg to run: ``$MOSAIC_FFMPEG``, else a system ffmpeg that passes the checks
    of :func:`pipeline.tools.ffmpeg_problem` (version and every feature used), else the
    one shipped by imageio-ffmpeg (with one info line saying why).

    Raises :class:`~pipeline.errors.ToolError` in one line when ``$MOSAIC_FFMPEG`` is missing
    or does not run as ffmpeg (checked once per process); what it lacks is said in a warning.
    """
    if exe := os.environ.get("MOSAIC_FFMPEG"):
        if exe not in _CHECKED:
            _check_chosen(exe)
            _CHECKED.add(exe)
        return exe
    return _default_ffmpeg()


_FFMPEG: str | None = None
_CHECKED: set[str] = set()


def _check_chosen(exe: str) -> None:
    """Refuse a ``$MOSAIC_FFMPEG`` that is missing or is not a working ffmpeg."""
    from pipeline.tools import ffmpeg_problem

    found = shutil.which(exe)
    if found is None:
        raise ToolError(f"MOSAIC_FFMPEG={exe}: no such program; point it at an ffmpeg, "
                          "or unset it to use the bundled one")
    problem = ffmpeg_problem(found)
    if problem == "it does not run or is not ffmpeg":
        raise ToolError(f"MOSAIC_FFMPEG={exe}: {problem} (`{exe} -version` fails); point "
                          "it at a working ffmpeg, or unset it to use the bundled one")
    if problem:
        log.warning("MOSAIC_FFMPEG=%s: %s; some steps may fail", exe, problem)


def _default_ffmpeg() -> str:
    global _FFMPEG
    if _FFMPEG is None:
        from pipeline.tools import ffmpeg_problem

        system = shutil.which("ffmpeg")
        problem = ffmpeg_problem(system) if system else None
        if system and problem is None:
            _FFMPEG = system
        else:
            import imageio_ffmpeg

            try:
                _FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
            except RuntimeError as exc:
                raise ToolError(f"no usable ffmpeg: {exc}; install ffmpeg or set "
                                  "MOSAIC_FFMPEG") from None
            if system:
                log.info("not using the system ffmpeg %s: %s; using the bundled ffmpeg",
                         system, problem)
    return _FFMPEG


def local_path(text: str) -> str:
    """``text`` as a local path: a ``file://`` URL becomes the path it names (percent
    escapes decoded); anything else is returned as it is."""
    if not text.lower().startswith("file:"):
        return text
    parts = urllib.parse.urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise VideoError(f"{text}: a file:// URL on another host ({parts.netloc}); give a "
                         "local path")
    return urllib.request.url2pathname(parts.path)


def check_regular(path: str | Path, what: str = "input") -> None:
    """Refuse an input that exists but is not a regular file (a FIFO, a device, a
    socket), following symbolic links: reading one could block forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing: the caller says so in its own words
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if
                stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if
                stat.S_ISSOCK(mode) else "not a regular file")
        raise VideoError(f"{path}: is {kind}, not a regular file; give the {what} as a file")


def ffmpeg_command(*args: str, overwrite: bool = False) -> list[str]:
    """The ffmpeg command line with ``args``: quiet but for errors, never reading stdin,
    overwriting its output only with ``overwrite``."""
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
            *(["-y"] if overwrite else []), *args]


def run_ffmpeg(args: list[str], what: str) -> None:
    """Run ffmpeg with ``args`` to completion (its output overwritten); raise
    :class:`FFmpegError` with its stderr."""
    proc = subprocess.run(ffmpeg_command(*args, overwrite=True), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise FFmpegError(what, proc.stderr)


@dataclass(frozen=True)
class AudioInfo:
    """One audio stream: its index among the audio streams, codec and duration (s)."""

    index: int
    codec: str
    duration: float | None


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about an input video.

    ``width``/``height`` are as displayed (after rotation); ``rate`` is the exact frame
    rate used for decoding and encoding; ``frames`` the number of frames at that rate."""

    path: str
    width: int
    height: int
    rate: Fraction
    frames: int
    duration: float
    rotation: int
    codec: str
    audio: tuple[AudioInfo, ...]


def _rate_of(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) <= 1000:
            return Fraction(rate.numerator, rate.denominator)
    raise VideoError(f"{stream.container.name}: cannot tell the video's frame rate")


def probe(path: str | Path) -> VideoInfo:
    """Probe ``path`` with PyAV: size, exact rate, frame count, rotation, audio streams.

    The frame count comes from the video packets' timestamps (demuxing only, no decode),
    mapped onto the constant-rate grid the decoder produces. Raises :class:`VideoError`
    for a missing, unreadable or video-less file.
    """
    import av

    path = str(path)
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VideoError(f"{path}: is a directory, not a video")
    check_regular(path, "video")
    try:
        with av.open(path) as container:
            if container.format.name in STILL_IMAGE_FORMATS or container.format.name.endswith(
                    "_pipe"):
                raise VideoError(f"{path}: is a still picture ({container.format.name}), not "
                                 "a video")
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = _rate_of(stream)
            rotation = 0
            for frame in container.decode(stream):
                rotation = round(getattr(frame, "rotation", 0) or 0) % 360
                break
            else:
                raise VideoError(f"{path}: the video stream has no decodable frames")
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = stream.codec_context.name
            audio = tuple(
                AudioInfo(i, s.codec_context.name,
                          float(s.duration * s.time_base) if s.duration else None)
                for i, s in enumerate(container.streams.audio))
            container.seek(0)
            frames, duration = _count_frames(container, stream, rate)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({exc.strerror or exc})") from None
    if frames == 0:
        raise VideoError(f"{path}: the video stream has no frames")
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(path, width, height, rate, frames, duration, rotation, codec, audio)


def _count_frames(container, stream, rate: Fraction) -> tuple[int, float]:
    """Frames on the constant ``rate`` grid covered by the stream, and its duration (s)."""
    first, last, count = None, None, 0
    for packet in container.demux(stream):
        if packet.pts is None or packet.size == 0:
            continue
        count += 1
        t = float(packet.pts * stream.time_base)
        first = t if first is None else min(first, t)
        step = float(packet.duration * stream.time_base) if packet.duration else 1 / float(rate)
        end = t + step
        last = end if last is None else max(last, end)
    if count == 0:
        return 0, 0.0
    if stream.frames and count < stream.frames:
        raise VideoError(f"{container.name}: truncated video: the header lists "
                         f"{stream.frames} frames but only {count} are present")
    duration = last - first
    return max(1, round(duration * rate)), duration


_LIVE: weakref.WeakSet = weakref.WeakSet()  # the ffmpeg pipes of this process


def stop_pipes(thread: int | None = None) -> None:
    """Kill every ffmpeg process this process started through a pipe (only those started
    on ``thread``, a thread ident, when given): whatever reads or writes them then ends
    at once with an error, e.g. a planning thread that must stop mid-segment."""
    for piped in list(_LIVE):
        if thread is None or piped.thread == thread:
            with contextlib.suppress(OSError):
                piped._proc.kill()


class Piped:
    """An ffmpeg process whose stderr is collected on a thread (for error messages)."""

    def __init__(self, cmd: list[str], **popen: object) -> None:
        self._proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, **popen)
        self.thread = threading.get_ident()
        _LIVE.add(self)
        self._stderr: list[bytes] = []
        self._err_thread = threading.Thread(target=self._drain, daemon=True)
        self._err_thread.start()

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        self._stderr.append(self._proc.stderr.read())

    def _finish(self) -> tuple[int, str]:
        """Wait for the process; its exit code and stderr text."""
        code = self._proc.wait()
        self._err_thread.join()
        return code, b"".join(self._stderr).decode(errors="replace")

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()


class FrameReader(Piped):
    """Decode frames ``[start, start + count)`` of a video as (H, W, 3) uint8 BGR arrays.

    ffmpeg seeks accurately to half a frame before ``start`` (so rounding cannot skip the
    wanted frame), applies rotation, and resamples to the constant frame rate ``info.rate``.
    Iterating yields frames; :meth:`close` stops the decoder. Up to ``slack`` frames missing
    at the very end are filled by repeating the last one; a larger shortfall raises
    :class:`VideoError`. Past frame 0 of an MP4 whose audio starts with its video that gives
    the first frame twice, then each one late (the render's output keeps it); ``exact``
    gives the whole decode's frames from any ``start``. The pipe is widened to a frame.
    ``threads`` > 0 caps the decoder's and filters' threads (0: ffmpeg's, one a core)."""

    def __init__(self, info: VideoInfo, start: int, count: int, slack: int = 0,
                 exact: bool = False, threads: int = 0) -> None:
        self.info, self.count, self.slack, r = info, count, slack, info.rate
        fps = f"fps={r.numerator}/{r.denominator}"
        seek = ["-ss", f"{float((start - 0.5) / r):.6f}"] if start > 0 else []
        if exact:  # timestamps kept from the file's start; the fps filter trims/pads to start
            fps += f":start_time={float(start / r):.6f}"
            seek = ["-ss", f"{max(0.0, float((start - 2) / r)):.6f}", "-copyts", "-start_at_zero"]
        seek += ["-threads", str(threads), "-filter_threads", str(threads)] * (threads > 0)
        cmd = ffmpeg_command(*seek, "-i", info.path, "-map", "0:v:0", "-vf", fps,
                             *["-fps_mode", "passthrough"] * exact, "-frames:v", str(count),
                             "-f", "rawvideo", "-pix_fmt", "bgr24", "-")
        super().__init__(cmd, stdout=subprocess.PIPE, bufsize=0)
        widen_pipe(self._proc.stdout)

    def __iter__(self) -> Iterator[np.ndarray]:
        size = self.info.width * self.info.height * 3
        assert self._proc.stdout is not None
        got, last = 0, None
        while got < self.count:
            buf = bytearray(size)
            view, filled = memoryview(buf), 0
            while filled < size:
                n = self._proc.stdout.readinto(view[filled:])
                if not n:
                    break
                filled += n
            if filled < size:
                break
            got += 1
            last = np.frombuffer(buf, np.uint8).reshape(self.info.height, self.info.width, 3)
            yield last
        _, err = self._finish()
        if last is not None and 0 < self.count - got <= self.slack:
            # the rate grid's last frame or so can fall past the stream's end: repeat it
            for _ in range(self.count - got):
                yield last
            got = self.count
        if got < self.count:
            raise VideoError(f"{self.info.path}: decoder gave {got} of {self.count} frames "
                             f"(truncated or corrupt video?){_tail(err)}")

    def close(self) -> None:
        """Stop the decoder process if it is still running."""
        self._kill()


_END = object()


def prefetch_frames(info: VideoInfo, start: int, count: int, depth: int = 6,
                    exact: bool = False, threads: int = 0, through: Callable | None = None
                    ) -> Generator[np.ndarray, None, None]:
    """Frames ``[start, start + count)``, (H, W, 3) uint8 BGR, decoded ahead on a thread.

    Up to ``depth`` frames wait in a queue while the caller works on the current one.
    The last frame or two of the video may be repeats; ``exact`` and ``threads`` are as
    in :class:`FrameReader`; ``through`` (frames -> frames) runs on that thread (a plan
    task's :class:`pipeline.stash.Tee`). Closing the generator stops the decoder."""
    slack = 2 if start + count - 1 >= info.frames - 2 else 0
    reader = FrameReader(info, start, count, slack=slack, exact=exact, threads=threads)
    frames: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def pump() -> None:
        try:
            for frame in (reader if through is None else through(reader)):
                put(frame)
                if stop.is_set():
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    thread = threading.Thread(target=pump, daemon=True, name="mosaic-decode")
    thread.start()
    try:
        while (item := frames.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.close()
        thread.join()


def _tail(text: str, lines: int = 3) -> str:
    text = " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
    return f": {text}" if text else ""


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode every frame of a video file (for tests and metrics), (H, W, 3) uint8 BGR."""
    info = probe(path)
    yield from FrameReader(info, 0, info.frames, slack=2)
