"""The ``zoom`` stage: an image + a tile index -> a video zooming from its mosaic into one
photo (or, with ``reverse``, out of it).

Steps: check the options and the output path before any work (the output is never an
input); read the image, the index and its source paths, the target and the audio; plan
the mosaics (:mod:`pipeline.zoomplan`); lay out the camera (:mod:`pipeline.camera`); find
how large each cell will be shown, so each photo is decoded once at that size; draw every
frame (:mod:`pipeline.zoomdraw`) into the encoder (:class:`~pipeline.video.FrameWriter`,
drawing the next frame while the last is sent); mux the audio cut to the video's length
and check the file (:func:`~pipeline.video.concat_and_mux`), which is only then renamed
over the output.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from pipeline import photo as ph
from pipeline.camera import (
    Link,
    Timeline,
    Zoom,
    ZoomPath,
    cell_view,
    ease,
    fit_view,
    outer_to_inner,
)
from pipeline.errors import ConfigError, OutputError, VideoError
from pipeline.index import load_index
from pipeline.originals import Originals, TileBank, source_paths
from pipeline.output import check_output, container_for, default_output
from pipeline.video import AudioInfo, FrameWriter, concat_and_mux, encoder_args, probe
from pipeline.zoomdraw import Looks, MosaicDrawer, draw_shots, peak_sizes
from pipeline.zoomplan import Level, plan_chain, resolve_target

log = logging.getLogger(__name__)

MAX_SIDE = 8192  # pixels per side of a zoom's frames
CACHE_FRAMES = 32  # decoded photos kept: at most this many frames' bytes (and again resized)
FITS = ("cover", "contain")


@dataclass(frozen=True)
class ZoomOptions:
    """Options of ``mosaic zoom`` beyond the still matcher's (:class:`PhotoOptions`).

    size : frame (width, height) in pixels.
    duration : seconds of the whole video, the holds included.
    hold : seconds held still at each end.
    chain : times the landed photo becomes the next mosaic.
    fit : ``cover`` (the image is cropped to the frame's aspect) or ``contain`` (the
        whole image, with bars).
    """

    size: tuple[int, int] = (1920, 1080)
    duration: float = 10.0
    fps: Fraction = Fraction(30)
    hold: float = 1.0
    reverse: bool = False
    chain: int = 0
    fit: str = "cover"
    crf: int = 20
    preset: str = "medium"

    @property
    def frames(self) -> int:
        """Frames in the video."""
        return max(1, round(self.duration * self.fps))

    @property
    def hold_frames(self) -> int:
        """Still frames at each end."""
        return round(self.hold * self.fps)


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


def check_options(opts: ZoomOptions) -> None:
    """Raise :class:`ConfigError` (one line) for options no zoom can be made with."""
    w, h = opts.size
    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE) or w % 2 or h % 2:
        raise ConfigError(f"--size {w}x{h}: each side must be an even number of pixels "
                          f"from 16 to {MAX_SIDE}")
    if not opts.duration > 0 or not 0 < opts.fps <= 240:
        raise ConfigError(f"--duration must be more than 0 seconds (got {opts.duration:g}) "
                          f"and --fps within 0..240 (got {float(opts.fps):g})")
    if opts.hold < 0 or opts.frames - 2 * opts.hold_frames < 2:
        raise ConfigError(f"--duration {opts.duration:g} s at {float(opts.fps):g} fps leaves "
                          f"no motion between the --hold {opts.hold:g} s at each end; "
                          "lengthen --duration or shorten --hold")
    if opts.chain < 0 or opts.fit not in FITS or not 0 <= opts.crf <= 51:
        raise ConfigError("--chain must be 0 or more, --fit one of "
                          f"{', '.join(FITS)}, --crf within 0..51")


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


def zoom_path(levels: list[Level], frame: tuple[int, int], cover: bool) -> ZoomPath:
    """The camera of a chain of mosaics: each from its start view to its landing cell,
    the next mosaic filling that cell."""
    zooms, links = [], []
    start = fit_view(levels[0].extent, frame, cover)
    for k, level in enumerate(levels):
        end = cell_view(*level.landing, level.aspect, frame)
        zooms.append(Zoom(start, end))
        if k + 1 < len(levels):
            row, col = level.landing
            links.append(Link((float(col), row * level.aspect), float(levels[k + 1].grid.cols)))
            start = outer_to_inner(end, links[-1].cell, links[-1].n)
    return ZoomPath(zooms, links)


def run_zoom(image_path: str | Path, index_dir: str | Path, out: str | Path | None,
             opts: ZoomOptions, photo_opts: ph.PhotoOptions, cache_dir: str | Path,
             target: str | Path | None = None, audio_path: str | Path | None = None,
             progress: bool = False) -> ZoomReport:
    """Make the zoom video of ``image_path`` (see the module doc); returns the report."""
    t0 = time.perf_counter()
    check_options(opts)
    image_path, index_dir = Path(image_path), Path(index_dir)
    given = out is not None
    out = Path(out) if given else default_output(str(image_path), cache_dir, "-zoom.mp4")
    container = container_for(out, "libx264")
    reads = [image_path, *(p for p in (target, audio_path) if p is not None)]
    if index_dir.is_dir():
        reads += [p for p in index_dir.iterdir() if p.is_file()]
    check_output(out, reads, create_parent=not given)
    image = ph.read_image(image_path)
    index = load_index(index_dir)
    paths = source_paths(index)
    goal = resolve_target(target, index, paths) if target is not None else None
    audio = probe_audio(audio_path) if audio_path is not None else None
    bank = TileBank(index.tiles, None if goal is None or goal.tile is None else goal.tile[None])
    levels = plan_chain(image, index, bank, photo_opts, paths, opts.size, opts.fit == "cover",
                        opts.chain, goal)
    report = ZoomReport(out, opts.frames, opts.size, audio=audio is not None)
    report.mosaics = [(lv.grid.cols, lv.grid.rows, _file(lv.landed, paths, goal))
                      for lv in levels]
    report.timings["plan"] = time.perf_counter() - t0
    t = time.perf_counter()
    extra = [goal.path] if goal is not None and goal.tile is not None else []
    budget = CACHE_FRAMES * opts.size[0] * opts.size[1] * 3
    originals = Originals([*paths, *extra], bank.tile_hw, budget)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.absolute().parent) as work:
        video = Path(work) / "video.mp4"
        _render(levels, bank, originals, opts, video, progress)
        report.timings["render"] = time.perf_counter() - t
        t = time.perf_counter()
        duration = float(opts.frames / opts.fps)
        concat_and_mux([video], out, str(audio_path) if audio else "", audio, 0.0, duration,
                       Path(work), container,
                       check=lambda path: _check_video(path, out, opts, audio is not None))
        report.timings["mux"] = time.perf_counter() - t
    report.missing, report.decoded = len(originals.missing), originals.decoded
    if originals.missing:
        log.warning("%d source photos are missing or unreadable (moved or deleted since "
                    "the index was built); their cells were drawn from the tile bank",
                    len(originals.missing))
    return report


def _render(levels: list[Level], bank: TileBank, originals: Originals, opts: ZoomOptions,
            video: Path, progress: bool) -> None:
    """Draw every frame into an H.264 file at ``video``."""
    path = zoom_path(levels, opts.size, opts.fit == "cover")
    timeline = Timeline(opts.frames, opts.hold_frames, opts.reverse)
    ramp = 0.5 / len(levels)
    shots = [path.shots(ease(timeline.time(i), ramp)) for i in range(opts.frames)]
    peaks = peak_sizes(levels, shots, opts.size)
    drawers = [MosaicDrawer(lv, bank, originals, opts.size,
                            Looks.for_zoom(bank.tile_hw[1], z.start.cell_px, z.end.cell_px),
                            peak) for lv, z, peak in zip(levels, path.zooms, peaks, strict=True)]
    writer = FrameWriter(video, *opts.size, opts.fps,
                         encoder_args("libx264", opts.crf, opts.preset), faststart=False)
    bar = tqdm(total=opts.frames, desc="zoom", unit="frames", disable=None if progress
               else True, smoothing=0.1)
    try:
        with bar, ThreadPoolExecutor(1) as pool:
            pending: deque = deque()
            for frame_shots in shots:
                pending.append(pool.submit(writer.write, draw_shots(drawers, frame_shots)))
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
