"""Shot boundaries: a state-free pass that finds the frames where a new shot starts.

The test is the planner's own scene-cut rule (:class:`pipeline.activity.Settler`): a
frame is a cut when more than ``render.scene_cut`` of its cells' mean colours (CIELAB,
:func:`pipeline.activity.cell_lab` on the render's grid) moved by
:data:`~pipeline.activity.CUT_DELTA_E` or more since the frame before. It needs only two
consecutive frames, so any range of frames can be searched on its own: a range
``[start, stop)`` is decoded from ``start - 1`` (one frame of overlap), so that a cut
exactly at ``start`` is found, and :func:`find_cuts_parallel` runs ranges as joblib
tasks and returns exactly what one sequential pass over them returns.

Frames are decoded exactly (:class:`pipeline.video.FrameReader` with ``exact``), as the
plan and the painters decode them: a range gives the whole decode's frames from any
start. Frame 0 starts the first shot and is never listed (there is nothing before it);
the plan marks it as a cut because its canvas starts blank. Nothing is written here.

The render (:func:`job_shots`) keeps the cuts that start a shot of at least
``render.shot_frames`` frames (:func:`shot_starts`) and plans each such shot from a
blank canvas, on its own (:func:`pipeline.planfile.job_segments`): the shots of a job are
planned in parallel, and a cut inside a shorter one is handled by its plan, as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np

from pipeline.activity import cell_lab, cut_share
from pipeline.errors import VideoError
from pipeline.grid import Grid
from pipeline.planfile import MIN_TAIL, plan_segments
from pipeline.video import VideoInfo, prefetch_frames, probe

log = logging.getLogger(__name__)

Video = VideoInfo | str | Path


def _info(video: Video) -> VideoInfo:
    return video if isinstance(video, VideoInfo) else probe(video)


def check_range(info: VideoInfo, start: int, stop: int) -> None:
    """Refuse a frame range that is not ``0 <= start <= stop <= info.frames``, in one
    line naming the file (as the render refuses a ``--start`` past the end)."""
    if not 0 <= start <= stop:
        raise VideoError(f"{info.path}: frames [{start}, {stop}) are not a range "
                         "(need 0 <= start <= stop)")
    if stop > info.frames:
        raise VideoError(f"{info.path}: frames [{start}, {stop}) run past the end of the "
                         f"video ({info.frames} frames)")


def cut_shares(video: Video, grid: Grid, start: int, stop: int, threads: int = 0
               ) -> np.ndarray:
    """For each frame of ``[start, stop)``, the share of the cells whose colour jumped
    since the frame before (:func:`pipeline.activity.cut_share`).

    Parameters
    ----------
    video : the video, probed or as a path.
    grid : the render's cell layout (its ``src_h x src_w`` must be the video's size).
    start, stop : the frame range, ``0 <= start <= stop <= frames``.
    threads : the decoder's threads (:class:`pipeline.video.FrameReader`; 0: ffmpeg's
        choice).

    Returns
    -------
    ndarray of shape (stop - start,), float32, in 0..1; frame 0's entry is 0 (nothing
    before it to compare with).
    """
    info = _info(video)
    check_range(info, start, stop)
    if (grid.src_h, grid.src_w) != (info.height, info.width):
        raise VideoError(f"{info.path}: {info.width}x{info.height} frames, but the grid "
                         f"is laid out for {grid.src_w}x{grid.src_h}")
    shares = np.zeros(stop - start, np.float32)
    if stop == start:
        return shares
    first = max(0, start - 1)  # one frame of overlap: a cut at ``start`` is found
    frames = prefetch_frames(info, first, stop - first, exact=True, threads=threads)
    try:
        prev = cell_lab(next(frames), grid) if first < start else None
        for i in range(stop - start):
            lab = cell_lab(next(frames), grid)
            if prev is not None:
                shares[i] = cut_share(lab, prev)
            prev = lab
    finally:
        frames.close()
    return shares


def find_cuts(video: Video, grid: Grid, start: int, stop: int, scene_cut: float,
              threads: int = 0) -> list[int]:
    """The frames of ``[start, stop)`` where a new shot starts: those whose
    :func:`cut_shares` is over ``scene_cut`` (``render.scene_cut``), in order.

    A cut exactly at ``start`` is found (the frame before is decoded too); frame 0 is
    never listed. An empty range gives ``[]``; a range past the end raises
    :class:`~pipeline.errors.VideoError`.
    """
    shares = cut_shares(video, grid, start, stop, threads)
    return [start + int(i) for i in np.flatnonzero(shares > scene_cut)]


def split_range(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into consecutive ranges of ``size`` frames (the last may be
    shorter): ``[(start, start + size), ...]``; an empty range gives ``[]``."""
    if size < 1:
        raise ValueError(f"range size must be >= 1, not {size}")
    return [(s.start, s.start + s.count) for s in plan_segments(start, stop - start, size)]


def split_even(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into ``parts`` consecutive ranges of (nearly) equal length
    (fewer when there are fewer frames than parts)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, not {parts}")
    return split_range(start, stop, max(1, math.ceil((stop - start) / parts)))


def find_cuts_parallel(video: Video, grid: Grid, ranges: Sequence[tuple[int, int]],
                       scene_cut: float, workers: int = 2, threads: int = 0) -> list[int]:
    """:func:`find_cuts` over each of ``ranges`` as joblib tasks on ``workers``
    processes; the cuts of all ranges, sorted and unique.

    Over consecutive ranges that cover ``[a, b)`` this is exactly
    ``find_cuts(video, grid, a, b, scene_cut)``: each range decodes the frame before its
    start, so a cut at a range boundary is found once. ``workers`` 1 runs the ranges in
    this process, one after the other. Every range is checked before any work; the
    backend is joblib's current one (``joblib.parallel_config(backend="dask")`` runs
    the tasks on a Dask cluster). ``threads``: each range's decoder's (0: ffmpeg's
    choice; a local worker's share of the cores keeps the pass from running a thread a
    core in every process).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    info = _info(video)
    for a, b in ranges:
        check_range(info, a, b)
    todo = [(a, b) for a, b in ranges if b > a]
    if not todo:
        return []
    log.debug("shot boundaries of %s: %d ranges on %d workers", info.path, len(todo),
              workers)
    tasks = (joblib.delayed(find_cuts)(info, grid, a, b, scene_cut, threads)
             for a, b in todo)
    found = joblib.Parallel(n_jobs=min(workers, len(todo)))(tasks)
    return sorted({f for cuts in found for f in cuts})


PARALLEL_FRAMES = 2048  # a job at least this long looks for its cuts on several workers


def shot_starts(cuts: Sequence[int], first: int, count: int, min_frames: int) -> list[int]:
    """The cuts of ``cuts`` (frames, sorted) that start a shot planned on its own: each
    at least ``min_frames`` after the previous start (``first`` the first) and before
    ``first + count - min_frames`` (a short last shot stays with the one before).
    ``min_frames`` 0 keeps none: one plan over the whole range; else it is at least
    :data:`~pipeline.planfile.MIN_TAIL` (a segment of a frame or two cannot be joined
    after a longer one with B-frames)."""
    if min_frames < 1:
        return []
    min_frames = max(min_frames, MIN_TAIL)
    starts, last, stop = [], first, first + count
    for c in sorted(cuts):
        if c - last >= min_frames and stop - c >= min_frames:
            starts.append(int(c))
            last = c
    return starts


def job_shots(info: VideoInfo, grid: Grid, first: int, count: int, scene_cut: float,
              min_frames: int, workers: int = 1, threads: int = 0) -> list[int]:
    """Where the shots of a render job of ``count`` frames from ``first`` start
    (:func:`shot_starts` of its cuts; the first shot's start is not listed). A job of
    :data:`PARALLEL_FRAMES` frames or more is searched in ``4 x workers`` ranges on
    ``workers`` processes (joblib's current backend), a shorter one here, in one pass;
    ``threads``: each decoder's. ``min_frames`` 0: no search, ``[]``."""
    if min_frames < 1 or count < 2 * min_frames:
        return []
    stop = first + count
    if count >= PARALLEL_FRAMES and workers > 1:
        cuts = find_cuts_parallel(info, grid, split_even(first, stop, 4 * workers),
                                  scene_cut, workers, threads)
    else:
        cuts = find_cuts(info, grid, first, stop, scene_cut, threads)
    return shot_starts(cuts, first, count, min_frames)
