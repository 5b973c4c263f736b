"""Encoding: how a painted frame becomes a video file, and what an encoder costs.

* :func:`encoder_args` and :func:`codec_args`: the ffmpeg output options of a video
  encoder (rate control, preset, threads, x264's lookahead), from the render options;
  :data:`ENCODER_CODECS`: the codec each known encoder writes.
* :class:`FrameWriter`: an ffmpeg encoder fed raw I420 frames through a pipe
  (:func:`encode_command`, :func:`bgr_to_i420`); :class:`SegmentEncoder`: one fed from a
  thread with a small pool of frame buffers, writing a temporary file that is renamed
  into place when finished.
* The memory model: peak memory of one x264 encoder per output pixel and per thread
  (:func:`encoder_bytes`), its lookahead shortened where frames are very large
  (:func:`x264_lookahead`), its threads per preset (:func:`encoder_threads`).
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shlex
import subprocess
import tempfile
import threading
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from pipeline.cache import publish
from pipeline.config import X264_PRESETS, RenderConfig
from pipeline.errors import FFmpegError, VideoError
from pipeline.processes import widen_pipe
from pipeline.video import Piped, ffmpeg_command

# The codec each known ffmpeg video encoder produces.
ENCODER_CODECS = {
    "libx264": "h264", "h264_nvenc": "h264", "h264_qsv": "h264", "h264_vaapi": "h264",
    "libx265": "hevc", "hevc_nvenc": "hevc", "hevc_qsv": "hevc", "hevc_vaapi": "hevc",
    "libvpx": "vp8", "libvpx-vp9": "vp9", "libaom-av1": "av1", "libsvtav1": "av1",
    "librav1e": "av1", "av1_nvenc": "av1", "prores_ks": "prores", "ffv1": "ffv1",
    "mpeg4": "mpeg4",
}
X264 = ("libx264", "libx265")  # the encoders with x264's options (presets, crf, threads)

# Peak memory of one x264 encoder per output pixel at one thread (bytes/pixel), and what
# each further thread adds; measured with 5120x2880 frames at the preset's own lookahead
# (BENCHMARKS.md): lookahead and reference frames grow with the preset.
_X264_BYTES_PER_PIXEL = {"ultrafast": 40, "superfast": 45, "veryfast": 60, "faster": 90,
                         "fast": 130, "medium": 170, "slow": 230, "slower": 250,
                         "veryslow": 260, "placebo": 270}
_X264_THREAD_BYTES_PER_PIXEL = 6
# x264's own lookahead (rc-lookahead, frames) per preset, and what one lookahead frame
# holds per output pixel (measured at 5120x2880, preset slow: 50 -> 20 frames, 3.74 ->
# 2.38 GB, the same PSNR and SSIM within 0.002 dB and 0.0003, a 1.5% smaller file)
_X264_LOOKAHEAD = {"ultrafast": 0, "superfast": 0, "veryfast": 10, "faster": 20, "fast": 30,
                   "medium": 40, "slow": 50, "slower": 60, "veryslow": 60, "placebo": 60}
_LOOKAHEAD_BYTES_PER_PIXEL = 3.1
LOOKAHEAD_BUDGET = 1 << 30  # bytes of lookahead frames one x264 encoder may hold
_MIN_LOOKAHEAD = 10
# x264 threads per encoder: fast presets leave the CPU to painting (one worker per core),
# slow presets are mostly encoding, which x264's own threads share at less memory
_X264_THREADS = {"ultrafast": 1, "superfast": 1, "veryfast": 1, "faster": 2, "fast": 2,
                 "medium": 2, "slow": 4, "slower": 4, "veryslow": 4, "placebo": 4}
_HARDWARE_BYTES = 300 << 20  # hardware encoders keep their frames on the device
_OUT_BUFFERS = 3  # painted frames (I420) waiting for the encoder


def encoder_args(encoder: str, crf: int, preset: str, extra: str = "") -> list[str]:
    """ffmpeg output options of a video encoder: rate control, speed preset, and ``extra``
    options (a shell-quoted string)."""
    if encoder in X264:
        args = ["-c:v", encoder, "-preset", preset, "-crf", str(crf)]
    elif encoder.endswith("_nvenc"):
        nv_preset = preset if preset.startswith("p") and preset[1:].isdigit() else "p5"
        args = ["-c:v", encoder, "-preset", nv_preset, "-rc", "vbr", "-cq", str(crf), "-b:v", "0"]
    else:
        args = ["-c:v", encoder]
    return [*args, *shlex.split(extra)]


# x264 options for mosaic frames (``render.encoder_tuning = "mosaic"``) at the presets
# that search harder: a tile does not move across frames, it stays or is replaced, and only
# the source's shading blended over it moves, so the slow presets' wide motion search over
# several reference frames and their deepest subpixel refinement buy next to nothing. At
# 5120x2880 and preset slow: 59-61% less encoder CPU for files 0.5% smaller (busy) to 5.5%
# larger (calm) at the same PSNR (BENCHMARKS.md, "x264 options for mosaic frames").
MOSAIC_X264 = "me=dia:ref=1:subme=6:trellis=1"
_TUNED_PRESETS = X264_PRESETS[X264_PRESETS.index("fast"):]  # fast to placebo
# a user's options that set what the tuning sets (x264 would let the tuning win): with
# any of them, no tuning is added. A user's -x264-params are kept after the tuning's.
_X264_OWN = ("-x264opts", "-refs", "-subq", "-trellis", "-me_method", "-motion-est")


def mosaic_tuned(config: RenderConfig) -> bool:
    """Whether the render's encoder gets the options for mosaic frames (:func:`mosaic_tuning`):
    on, libx264, a preset from ``fast`` down, none of x264's options it sets given as an
    ffmpeg option in ``encoder_options``."""
    return (config.encoder_tuning == "mosaic" and config.encoder == "libx264"
            and config.preset in _TUNED_PRESETS
            and not any(a.split(":")[0] in _X264_OWN  # "-refs:v 3" as "-refs 3"
                        for a in shlex.split(config.encoder_options)))


def mosaic_tuning(config: RenderConfig, args: list[str]) -> list[str]:
    """The encoder options ``args`` with the mosaic tuning for ``config``: :data:`MOSAIC_X264`
    ahead of the user's own -x264-params (theirs win), or ``args`` as they are where the
    tuning does not apply (:func:`mosaic_tuned`)."""
    if not mosaic_tuned(config):
        return args
    if "-x264-params" not in args:
        return [*args, "-x264-params", MOSAIC_X264]
    at = len(args) - 1 - args[::-1].index("-x264-params")  # ffmpeg takes the last one
    return [*args[:at + 1], f"{MOSAIC_X264}:{args[at + 1]}", *args[at + 2:]]


def codec_args(config: RenderConfig, threads: int, lookahead: int | None = None) -> list[str]:
    """The render's encoder options, with the mosaic tuning (:func:`mosaic_tuning`), its
    thread count for x264/x265 and x264's shortened lookahead (:func:`x264_lookahead`)
    unless the options set them."""
    args = mosaic_tuning(config, encoder_args(config.encoder, config.crf, config.preset,
                                              config.encoder_options))
    if config.encoder in X264 and "-threads" not in args:
        args += ["-threads", str(threads)]
    if config.encoder == "libx264" and lookahead and "rc-lookahead" not in config.encoder_options:
        args += ["-rc-lookahead", str(lookahead)]
    return args


def x264_lookahead(pixels: int, preset: str) -> int | None:
    """The rc-lookahead x264 gets for frames of ``pixels`` at ``preset``: None for the
    preset's own, or fewer frames where the preset's would hold more than
    :data:`LOOKAHEAD_BUDGET` (at 5120x2880 and preset slow: 23 frames, not 50; about
    1.3 GB less per encoder at the same quality, see BENCHMARKS.md)."""
    own = _X264_LOOKAHEAD.get(preset)
    if own is None or pixels <= 0:
        return None
    cap = max(_MIN_LOOKAHEAD, int(LOOKAHEAD_BUDGET / (_LOOKAHEAD_BYTES_PER_PIXEL * pixels)))
    return cap if cap < own else None


def encoder_bytes(pixels: int, encoder: str, preset: str, threads: int,
                  lookahead: int | None = None) -> float:
    """Estimated peak memory of one encoder for frames of ``pixels`` (x264 with
    ``lookahead`` frames, or the preset's own where None)."""
    if encoder not in X264:
        return _HARDWARE_BYTES
    per_px = _X264_BYTES_PER_PIXEL.get(preset, 230)
    if lookahead is not None and preset in _X264_LOOKAHEAD:
        per_px -= _LOOKAHEAD_BYTES_PER_PIXEL * max(0, _X264_LOOKAHEAD[preset] - lookahead)
    return pixels * (per_px + _X264_THREAD_BYTES_PER_PIXEL * (threads - 1))


def encoder_threads(encoder: str, preset: str, tuned: bool = False) -> int:
    """Threads an encoder wants at ``preset`` (1 for the fast x264 presets, up to 4 for the
    slow ones; 1 for other encoders). ``tuned``: x264 with the options for mosaic frames
    (:func:`mosaic_tuned`), light enough for one worker a core, as the fast presets: 1
    (measured on 2 cores at preset slow: 2 workers of 1 thread 15-22% faster than 1 of 3)."""
    return _X264_THREADS.get(preset, 2) if encoder in X264 and not tuned else 1


def output_size_ok(width: int, height: int) -> bool:
    """Whether a frame size fits H.264 level 5.2 (what most hardware players decode)."""
    return math.ceil(width / 16) * math.ceil(height / 16) <= 36864 and max(width, height) <= 4096


def encode_command(path: str | Path, width: int, height: int, rate: Fraction,
                   codec: list[str], source: str = "-", faststart: bool = False) -> list[str]:
    """The ffmpeg command that encodes raw I420 (yuv420p) frames from ``source`` (a pipe
    by default) into an mp4 at the exact rational frame rate.

    The frames come from :func:`bgr_to_i420` (BT.601 matrix, limited range) and are
    tagged so; the primaries and transfer are sRGB's (BT.709).
    """
    cmd = ffmpeg_command("-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
                         "-r", f"{rate.numerator}/{rate.denominator}", "-i", source,
                         *codec, "-pix_fmt", "yuv420p", "-colorspace", "smpte170m",
                         "-color_primaries", "bt709", "-color_trc", "bt709",
                         "-color_range", "tv", overwrite=True)
    if faststart:
        cmd += ["-movflags", "+faststart"]
    return [*cmd, "-f", "mp4", str(path)]


def bgr_to_i420(frame_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR, even H and W -> planar I420 (H * 3 / 2, W) uint8.

    OpenCV's SIMD conversion (BT.601, limited range): a few ms at 5 megapixels, and half
    the bytes of BGR through the pipe, so the encoder spends its time encoding.
    """
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YUV_I420, dst=out)


class FrameWriter(Piped):
    """Encode (H, W, 3) uint8 BGR frames written one by one into a video file.

    Frames are converted to I420 here (:func:`bgr_to_i420`) and piped to ffmpeg, which
    writes ``path`` (see :func:`encode_command`). :meth:`close` waits for it and raises
    :class:`FFmpegError` on failure; :meth:`abort` kills it.
    """

    def __init__(self, path: str | Path, width: int, height: int, rate: Fraction,
                 codec: list[str], faststart: bool = False) -> None:
        if width % 2 or height % 2:
            raise VideoError(f"{path}: {width}x{height} cannot be yuv420p: both sides must "
                             "be even (use an even tile size)")
        self.path = Path(path)
        self.frames = 0
        self._i420: np.ndarray | None = None  # made on the first BGR frame, then reused
        self._shape = (height * 3 // 2, width)
        super().__init__(encode_command(self.path, width, height, rate, codec,
                                        faststart=faststart), stdin=subprocess.PIPE)
        # a frame in a few turns of 1 MiB, not a hundred of 64 KiB: at 2560x1920 about
        # 2 CPU-ms a frame less, the two processes together (scripts/bench_pipe.py)
        widen_pipe(self._proc.stdin)

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


class SegmentEncoder:
    """An ffmpeg encoder fed from a thread (the pipe write overlaps the painting of the
    next frame), with a small pool of reusable I420 frame buffers, writing a unique
    temporary file in ``folder`` (named after ``name``) until :meth:`finish`.

    ``scratch`` is a (H, W, 3) uint8 buffer the caller may paint or blend into.
    """

    def __init__(self, folder: str | Path, name: str, width: int, height: int,
                 rate: Fraction, codec: list[str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(name).stem}.", suffix=".mp4.tmp",
                                   dir=folder)
        os.close(fd)
        self.tmp = Path(tmp)
        self.writer = FrameWriter(self.tmp, width, height, rate, codec)
        self.scratch = np.empty((height, width, 3), np.uint8)
        self._free: queue.Queue = queue.Queue()
        for _ in range(_OUT_BUFFERS + 1):
            self._free.put(np.empty((height * 3 // 2, width), np.uint8))
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
        """A frame buffer (H * 3 / 2, W) uint8 the encoder is done with."""
        self._check()
        buf = self._free.get()
        self._check()
        return buf

    def put(self, frame: np.ndarray | None) -> None:
        """Queue a painted I420 frame (a :meth:`buffer`) for encoding."""
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
        publish(self.tmp, dest)

    def abort(self) -> None:
        """Stop the encoder if it still runs and remove the temporary file."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._todo.put_nowait(None)
            self.writer.abort()
            self._thread.join(timeout=5)
        self.tmp.unlink(missing_ok=True)
