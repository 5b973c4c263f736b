"""Video I/O: finding ffmpeg, probing, decoding and encoding through pipes, muxing audio
(URLs are downloaded by :mod:`pipeline.download`).

Frames cross process boundaries as raw ``bgr24`` over pipes: ffmpeg decodes (applying
rotation metadata and normalising to a constant frame rate) and ffmpeg encodes. PyAV,
whose wheel carries FFmpeg's libraries, does the probing.

Inputs are checked before anything reads them: ``file://`` URLs name local files
(:func:`local_path`), and only regular files are opened (:func:`check_regular`: a FIFO
with no writer would block forever). An ffmpeg that is missing or does not run is said
once, before any work (:func:`ffmpeg_exe`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.errors import FFmpegError, MosaicError, VideoError

if TYPE_CHECKING:
    from pipeline.output import Container

log = logging.getLogger(__name__)

# Demuxers of single pictures (PNG, JPEG, ... are read as "<codec>_pipe" too).
STILL_IMAGE_FORMATS = frozenset({"image2", "image2pipe"})


def ffmpeg_exe() -> str:
    """The ffmpeg to run: ``$MOSAIC_FFMPEG``, else a system ffmpeg that passes the checks
    of :func:`pipeline.tools.ffmpeg_problem` (version and every feature used), else the
    one shipped by imageio-ffmpeg (with one info line saying why).

    Raises :class:`~pipeline.errors.MosaicError` in one line when ``$MOSAIC_FFMPEG`` is
    missing or does not run as ffmpeg (checked once per process); what it lacks is said
    in one warning.
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
        raise MosaicError(f"MOSAIC_FFMPEG={exe}: no such program; point it at an ffmpeg, "
                          "or unset it to use the bundled one")
    problem = ffmpeg_problem(found)
    if problem == "it does not run or is not ffmpeg":
        raise MosaicError(f"MOSAIC_FFMPEG={exe}: {problem} (`{exe} -version` fails); point "
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
                raise MosaicError(f"no usable ffmpeg: {exc}; install ffmpeg or set "
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


def run_ffmpeg(args: list[str], what: str) -> None:
    """Run ffmpeg with ``args`` to completion; raise :class:`FFmpegError` with its stderr."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
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
    rate used for decoding and encoding; ``frames`` the number of frames at that rate.
    """

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


class _Piped:
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


class FrameReader(_Piped):
    """Decode frames ``[start, start + count)`` of a video as (H, W, 3) uint8 BGR arrays.

    ffmpeg seeks accurately to half a frame before ``start`` (so rounding cannot skip
    the wanted frame), applies rotation, and resamples to the constant frame rate
    ``info.rate``. Iterating yields frames; :meth:`close` stops the decoder. Up to
    ``slack`` frames missing at the very end are filled by repeating the last one; a
    larger shortfall raises :class:`VideoError`.
    """

    def __init__(self, info: VideoInfo, start: int, count: int, slack: int = 0) -> None:
        self.info, self.count, self.slack = info, count, slack
        t = max(0.0, (start - 0.5) / info.rate) if start > 0 else 0.0
        r = info.rate
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
        if start > 0:
            cmd += ["-ss", f"{t:.6f}"]
        cmd += ["-i", info.path, "-map", "0:v:0", "-vf", f"fps={r.numerator}/{r.denominator}",
                "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
        super().__init__(cmd, stdout=subprocess.PIPE, bufsize=0)

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


def prefetch_frames(info: VideoInfo, start: int, count: int, depth: int = 6
                    ) -> Generator[np.ndarray, None, None]:
    """Frames ``[start, start + count)``, (H, W, 3) uint8 BGR, decoded ahead on a thread.

    Up to ``depth`` frames wait in a queue while the caller works on the current one.
    The last frame or two of the video may be repeats (see :class:`FrameReader`).
    Closing the generator stops the decoder.
    """
    slack = 2 if start + count - 1 >= info.frames - 2 else 0
    reader = FrameReader(info, start, count, slack=slack)
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
            for frame in reader:
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


def encoder_args(encoder: str, crf: int, preset: str, extra: str = "") -> list[str]:
    """ffmpeg output options of a video encoder: rate control, speed preset, and ``extra``
    options (a shell-quoted string)."""
    if encoder in ("libx264", "libx265"):
        args = ["-c:v", encoder, "-preset", preset, "-crf", str(crf)]
    elif encoder.endswith("_nvenc"):
        nv_preset = preset if preset.startswith("p") and preset[1:].isdigit() else "p5"
        args = ["-c:v", encoder, "-preset", nv_preset, "-rc", "vbr", "-cq", str(crf), "-b:v", "0"]
    else:
        args = ["-c:v", encoder]
    return [*args, *shlex.split(extra)]


def encode_command(path: str | Path, width: int, height: int, rate: Fraction,
                   codec_args: list[str], source: str = "-", faststart: bool = False
                   ) -> list[str]:
    """The ffmpeg command that encodes raw I420 (yuv420p) frames from ``source`` (a pipe
    by default) into an mp4 at the exact rational frame rate.

    The frames come from :func:`bgr_to_i420` (BT.601 matrix, limited range) and are
    tagged so; the primaries and transfer are sRGB's (BT.709).
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
           "-r", f"{rate.numerator}/{rate.denominator}", "-i", source,
           *codec_args, "-pix_fmt", "yuv420p", "-colorspace", "smpte170m",
           "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
    if faststart:
        cmd += ["-movflags", "+faststart"]
    return [*cmd, "-f", "mp4", str(path)]


def bgr_to_i420(frame_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR, even H and W -> planar I420 (H * 3 / 2, W) uint8.

    OpenCV's SIMD conversion (BT.601, limited range): a few ms at 5 megapixels, and half
    the bytes of BGR through the pipe, so the encoder spends its time encoding.
    """
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YUV_I420, dst=out)


class FrameWriter(_Piped):
    """Encode (H, W, 3) uint8 BGR frames written one by one into a video file.

    Frames are converted to I420 here (:func:`bgr_to_i420`) and piped to ffmpeg, which
    writes ``path`` (see :func:`encode_command`). :meth:`close` waits for it and raises
    :class:`FFmpegError` on failure; :meth:`abort` kills it.
    """

    def __init__(self, path: str | Path, width: int, height: int, rate: Fraction,
                 codec_args: list[str], faststart: bool = False) -> None:
        if width % 2 or height % 2:
            raise VideoError(f"{path}: {width}x{height} cannot be yuv420p: both sides must "
                             "be even (use an even tile size)")
        self.path = Path(path)
        self.frames = 0
        self._i420: np.ndarray | None = None  # made on the first BGR frame, then reused
        self._shape = (height * 3 // 2, width)
        super().__init__(encode_command(self.path, width, height, rate, codec_args,
                                        faststart=faststart), stdin=subprocess.PIPE)

    def write(self, frame_bgr: np.ndarray) -> None:
        """Send one frame, (H, W, 3) uint8 BGR."""
        if self._i420 is None:
            self._i420 = np.empty(self._shape, np.uint8)
        self.write_i420(bgr_to_i420(frame_bgr, self._i420))

    def write_i420(self, frame_i420: np.ndarray) -> None:
        """Send one frame already in I420, (H * 3 / 2, W) uint8 (:func:`bgr_to_i420`)."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame_i420)).cast("B"))
        except BrokenPipeError:
            raise FFmpegError(f"encoding {self.path}", self._finish()[1]) from None
        self.frames += 1

    def close(self) -> None:
        """Finish the file; raises :class:`FFmpegError` if the encoder failed."""
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        code, err = self._finish()
        if code != 0:
            raise FFmpegError(f"encoding {self.path}", err)

    def abort(self) -> None:
        """Kill the encoder; the partial file is left for the caller to remove."""
        self._kill()


def output_size_ok(width: int, height: int) -> bool:
    """Whether a frame size fits H.264 level 5.2 (what most hardware players decode)."""
    return math.ceil(width / 16) * math.ceil(height / 16) <= 36864 and max(width, height) <= 4096


def is_url(text: str) -> bool:
    """Whether ``text`` looks like a URL for yt-dlp rather than a local path."""
    return "://" in text and text.split("://", 1)[0].lower() in ("http", "https", "ftp")


def concat_and_mux(segments: list[Path], out: Path, source: VideoInfo | str,
                   audio: AudioInfo | None,
                   start_s: float, duration_s: float, work: Path, container: Container,
                   check: Callable[[Path], None] | None = None) -> None:
    """Join encoded segments (stream copy) and add the source's audio, cut to the range.

    ``source`` is the input video, or the path of any file with the ``audio`` stream.

    The container (:func:`pipeline.output.container_for`) decides the muxer and whether
    the audio is copied or re-encoded. The result is written to a unique temporary file,
    handed to ``check`` (which raises if it is not what was planned), and only then
    renamed over ``out``.
    """
    from pipeline.cache import atomic_output, umask_mode
    from pipeline.output import audio_args, mux_args

    listing = work / "concat.txt"
    with atomic_output(listing, "w") as f:
        for seg in segments:
            escaped = str(seg.resolve()).replace("'", "'\\''")
            f.write(f"file '{escaped}'\n")
    args = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    if audio is not None:
        if start_s > 0:
            args += ["-ss", f"{start_s:.6f}"]
        path = source if isinstance(source, str) else source.path
        args += ["-t", f"{duration_s:.6f}", "-i", path]
    args += ["-map", "0:v:0", "-c:v", "copy"]
    if audio is not None:
        args += ["-map", f"1:a:{audio.index}", *audio_args(container, audio.codec)]
    args += mux_args(container)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        run_ffmpeg([*args, str(tmp)], f"writing {out}")
        if check is not None:
            check(tmp)
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600; the output is an ordinary file
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
