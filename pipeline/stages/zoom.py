"""The ``zoom`` stage: an image + a tile index -> a video zooming from its mosaic into one
photo (or, with ``reverse``, out of it).

Steps: check the options and the output path before any work (the output is never an
input); read the image, the index and its source paths, the target and the audio; plan
the movie (:func:`pipeline.zoom.make_movie`); draw every frame into the encoder
(:class:`~pipeline.encode.FrameWriter`, drawing the next frame while the last is sent),
in a temporary directory beside the output; mux the audio cut to the video's length and
check the file (:func:`~pipeline.video.concat_and_mux`), which is only then renamed over
the output. Source photos that could not be read are counted in one warning line.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline import photo as ph
from pipeline.cache import mark_owned, open_cache
from pipeline.config import PhotoOptions
from pipeline.encode import FrameWriter, encoder_args
from pipeline.errors import OutputError, VideoError
from pipeline.index import load_index
from pipeline.originals import source_paths
from pipeline.output import check_output, concat_and_mux, container_for, default_output
from pipeline.video import AudioInfo, check_regular, local_path, probe
from pipeline.zoom import ZoomMovie, ZoomOptions, check_options, make_movie
from pipeline.zoomplan import resolve_target

log = logging.getLogger(__name__)


@dataclass
class ZoomReport:
    """What a run made: the output, its frames, the mosaics and where time went."""

    out: Path
    frames: int
    size: tuple[int, int]
    mosaics: list[tuple[int, int, str]] = field(default_factory=list)  # cols, rows, landed
    missing: int = 0
    decoded: int = 0
    audio: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def probe_audio(path: str | Path) -> AudioInfo:
    """The first audio stream of ``path``; :class:`VideoError` in one line if none."""
    import av

    if not Path(path).is_file():
        raise VideoError(f"{path}: --audio: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise VideoError(f"{path}: --audio has no audio stream")
            s = container.streams.audio[0]
            duration = float(s.duration * s.time_base) if s.duration else None
            return AudioInfo(0, s.codec_context.name, duration)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: --audio is not a readable audio file "
                         f"({exc.strerror or exc})") from None


def run_zoom(image_path: str | Path, index_dir: str | Path, out: str | Path | None,
             opts: ZoomOptions, photo_opts: PhotoOptions, cache_dir: str | Path,
             target: str | Path | None = None, audio_path: str | Path | None = None,
             progress: bool = False, force: bool = False) -> ZoomReport:
    """Make the zoom video of ``image_path`` (see the module doc); returns the report.
    ``force`` replaces an existing OUT that is not a video."""
    t0 = time.perf_counter()
    check_options(opts)
    image_path, index_dir = Path(local_path(str(image_path))), Path(index_dir)
    target = None if target is None else Path(local_path(str(target)))
    audio_path = None if audio_path is None else Path(local_path(str(audio_path)))
    for path, what in ((target, "--target photo"), (audio_path, "--audio file")):
        if path is not None:
            check_regular(path, what)
    cache = open_cache(cache_dir)
    given = out is not None
    if not given:
        mark_owned(cache / "renders", "renders")
    out = Path(out) if given else default_output(str(image_path), cache, "-zoom.mp4")
    container = container_for(out, "libx264")
    reads = [image_path, *(p for p in (target, audio_path) if p is not None)]
    if index_dir.is_dir():
        reads += [p for p in index_dir.iterdir() if p.is_file()]
    check_output(out, reads, create_parent=not given, kind="video", force=force,
                 cache_dir=cache)
    image = ph.read_image(image_path)
    index = load_index(index_dir)
    paths = source_paths(index)
    goal = resolve_target(target, index, paths) if target is not None else None
    audio = probe_audio(audio_path) if audio_path is not None else None
    movie = make_movie(image, index, paths, opts, photo_opts, goal)
    report = ZoomReport(out, opts.frames, opts.size, audio=audio is not None)
    report.mosaics = [(lv.grid.cols, lv.grid.rows, _file(lv.landed, paths, goal))
                      for lv in movie.levels]
    report.timings["plan"] = time.perf_counter() - t0
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.absolute().parent) as work:
        video = Path(work) / "video.mp4"
        _encode(movie, opts, video, progress)
        report.timings["render"] = time.perf_counter() - t
        t = time.perf_counter()
        duration = float(opts.frames / opts.fps)
        concat_and_mux([video], out, str(audio_path) if audio else "", audio, 0.0, duration,
                       Path(work), container,
                       check=lambda path: _check_video(path, out, opts, audio is not None))
        report.timings["mux"] = time.perf_counter() - t
    originals = movie.originals
    report.missing, report.decoded = len(originals.missing), originals.decoded
    if originals.missing:
        log.warning("%d source photos are missing or unreadable (moved or deleted since "
                    "the index was built); their cells were drawn from the tile bank",
                    len(originals.missing))
    return report


def _encode(movie: ZoomMovie, opts: ZoomOptions, video: Path, progress: bool) -> None:
    """Draw every frame into an H.264 file at ``video``, the next frame drawn while the
    last is converted and sent to the encoder."""
    writer = FrameWriter(video, *opts.size, opts.fps,
                         encoder_args("libx264", opts.crf, opts.preset))
    bar = tqdm(total=len(movie), desc="zoom", unit="frames", disable=None if progress
               else True, smoothing=0.1)
    try:
        with bar, ThreadPoolExecutor(1) as pool:
            pending: deque = deque()
            for frame in movie.frames():
                pending.append(pool.submit(writer.write, frame))
                while len(pending) > 2:
                    pending.popleft().result()
                    bar.update()
            while pending:
                pending.popleft().result()
                bar.update()
        writer.close()
    except BaseException:
        writer.abort()
        raise


def _check_video(path: Path, out: Path, opts: ZoomOptions, audio: bool) -> None:
    """Raise unless the muxed file holds the planned frames, length and streams."""
    try:
        got = probe(path)
    except VideoError as exc:
        raise OutputError(f"{out}: the encoded zoom is unreadable ({exc})") from None
    duration = float(opts.frames / opts.fps)
    if got.frames != opts.frames or (got.width, got.height) != opts.size or \
            len(got.audio) != int(audio) or abs(got.duration - duration) > 1.5 / float(opts.fps):
        raise OutputError(f"{out}: the encoded zoom has {got.frames} frames of "
                          f"{got.width}x{got.height} and {len(got.audio)} audio stream(s) "
                          f"where {opts.frames} frames of {opts.size[0]}x{opts.size[1]} and "
                          f"{int(audio)} were planned; it was not written")


def _file(tile: int, paths: list[str], goal) -> str:
    """The photo file of ``tile`` (a bank tile, or the target outside the index)."""
    return paths[tile] if tile < len(paths) else goal.path
