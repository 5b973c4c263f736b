"""Zoom videos: the mosaic of an image, zoomed into until one of its photos fills the
frame (or, reversed, out of it), as frames in memory.

:func:`make_movie` plans the mosaics (:func:`pipeline.zoomplan.plan_chain`), lays out the
camera (:func:`zoom_path`: one homothety per mosaic, chained through the landing
cells), times it (:class:`~pipeline.camera.Timeline`, :func:`~pipeline.camera.ease`),
works out how large each cell will be shown (so each photo is decoded once, at that
size) and returns a :class:`ZoomMovie`, whose :meth:`~ZoomMovie.frame` draws any frame
(:mod:`pipeline.zoomdraw`). Encoding and files are the stage's
(:mod:`pipeline.stages.zoom`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

import numpy as np

from pipeline.camera import Link, Shot, Timeline, Zoom, ZoomPath, ease
from pipeline.config import PhotoOptions
from pipeline.errors import ConfigError
from pipeline.index import TileIndex
from pipeline.originals import Originals, TileBank
from pipeline.zoomdraw import Looks, MosaicDrawer, draw_shots, peak_sizes
from pipeline.zoomplan import Level, Target, landing_cell, plan_chain

MAX_SIDE = 8192  # pixels per side of a zoom's frames
MAX_SECONDS = 3600  # length of a zoom video
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
    crf, preset : the x264 encoder's quality and speed.
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


def check_options(opts: ZoomOptions) -> None:
    """Raise :class:`ConfigError` (one line) for options no zoom can be made with."""
    w, h = opts.size
    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE) or w % 2 or h % 2:
        raise ConfigError(f"--size {w}x{h}: each side must be an even number of pixels "
                          f"from 16 to {MAX_SIDE}")
    if not 0 < opts.duration <= MAX_SECONDS or not 0 < opts.fps <= 240:
        raise ConfigError(f"--duration must be more than 0 and at most {MAX_SECONDS} "
                          f"seconds (got {opts.duration:g}) and --fps within 0..240 (got "
                          f"{str(opts.fps)[:20]})")
    if not 0 <= opts.hold <= opts.duration or opts.frames - 2 * opts.hold_frames < 2:
        raise ConfigError(f"--duration {opts.duration:g} s at {float(opts.fps):g} fps leaves "
                          f"no motion between the --hold {opts.hold:g} s at each end; "
                          "lengthen --duration or shorten --hold")
    if opts.chain < 0 or opts.fit not in FITS or not 0 <= opts.crf <= 51:
        raise ConfigError("--chain must be 0 or more, --fit one of "
                          f"{', '.join(FITS)}, --crf within 0..51")


def zoom_path(levels: list[Level]) -> ZoomPath:
    """The camera of a chain of mosaics: each from its start view to its landing cell
    filling the frame, the next mosaic filling that cell."""
    links = [Link(landing_cell(lv), float(nxt.grid.cols))
             for lv, nxt in pairwise(levels)]
    return ZoomPath([Zoom(lv.start, lv.end) for lv in levels], links)


@dataclass
class ZoomMovie:
    """A planned zoom: its mosaics, camera, the layers of every frame and the drawers.

    ``shots[i]`` are frame ``i``'s layers (:meth:`pipeline.camera.ZoomPath.shots`).
    """

    levels: list[Level]
    path: ZoomPath
    timeline: Timeline
    shots: list[list[Shot]]
    drawers: list[MosaicDrawer]
    originals: Originals

    def __len__(self) -> int:
        return len(self.shots)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i``: (height, width, 3) uint8 BGR."""
        return draw_shots(self.drawers, self.shots[i])

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame in order."""
        for i in range(len(self.shots)):
            yield self.frame(i)


def make_movie(image: np.ndarray, index: TileIndex, paths: list[str], opts: ZoomOptions,
               photo: PhotoOptions, target: Target | None = None) -> ZoomMovie:
    """Plan the zoom of ``image`` (H, W, 3) uint8 BGR over ``index`` (whose tiles' source
    photos are ``paths``); ``target``: where the (last) zoom lands."""
    check_options(opts)
    extra = target is not None and target.tile is not None
    bank = TileBank(index.tiles, target.tile[None] if extra else None)
    cover = opts.fit == "cover"
    levels = plan_chain(image, index, bank, photo, paths, opts.size, cover, opts.chain, target)
    path = zoom_path(levels)
    timeline = Timeline(opts.frames, opts.hold_frames, opts.reverse)
    ramp = 0.5 / len(levels)  # one ease in and out over the whole chain
    shots = [path.shots(ease(timeline.time(i), ramp)) for i in range(opts.frames)]
    budget = CACHE_FRAMES * opts.size[0] * opts.size[1] * 3
    originals = Originals([*paths, *([target.path] if extra else [])], bank.tile_hw, budget)
    peaks = peak_sizes(levels, shots, opts.size)
    drawers = [MosaicDrawer(lv, bank, originals, opts.size,
                            Looks.for_zoom(bank.tile_hw[1], z.start.cell_px, z.end.cell_px),
                            peak) for lv, z, peak in zip(levels, path.zooms, peaks, strict=True)]
    return ZoomMovie(levels, path, timeline, shots, drawers, originals)
