"""The render's plan stage: the planner engine (:mod:`pipeline.plan`) over a video's
segments, with its storage (:mod:`pipeline.planfile`) and its resumption.

:class:`Planner` decodes a segment's frames, feeds them to the engine one batch at a
time, and writes the segment's chunk. A fresh segment (a shot's first: see
:func:`pipeline.planfile.job_segments`) starts from a blank canvas; any other from the
canvas and the activity the previous segment ended on, read back from its chunk. So the
segments of one shot are planned in order, and different shots in any order, anywhere:
:func:`plan_task` plans one segment in a worker process (local or Dask), with the planner
kept between the worker's tasks. :meth:`Planner.run` plans segments one after the other
in this process, under the plan folder's lock (the render's client holds that lock while
its workers plan). Each segment planned is a task whose record (:mod:`pipeline.tasklog`)
goes to :attr:`Planner.on_task` when set.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.activity import Tracking
from pipeline.ahead import run_ahead
from pipeline.bank import IndexPin, check_pin, read_tiles
from pipeline.config import RenderConfig
from pipeline.errors import PlanError
from pipeline.execute import decode_backend, opencv_threads, usable_cores
from pipeline.grid import Grid
from pipeline.heap import trim_heap
from pipeline.index import TileIndex, load_index
from pipeline.locks import file_lock
from pipeline.metrics import source_cells
from pipeline.plan import PlanEngine
from pipeline.planfile import (
    CanvasState,
    FrameChange,
    Segment,
    chunk_path,
    read_chunk,
    read_shots,
    segment_seed,
    write_chunk,
    write_manifest,
    write_shots,
)
from pipeline.shots import PARALLEL_FRAMES, job_shots
from pipeline.stash import Tee
from pipeline.tasklog import TaskClock, file_bytes, source_bytes
from pipeline.video import VideoInfo, prefetch_frames

log = logging.getLogger(__name__)


class Planner:
    """Plans the segments of one render job, one after the other.

    Parameters
    ----------
    info, grid : the source and its cell layout.
    index : the tile index (features and clusters; the tile bank only for tile means).
    config : the render options (paint-only ones are ignored).
    plan_dir : where the chunks go; ``key`` names the plan.

    ``on_task``, when set, is called with the task record of every segment planned.
    """

    def __init__(self, info: VideoInfo, grid: Grid, index: TileIndex, config: RenderConfig,
                 plan_dir: Path, key: str) -> None:
        self.info, self.grid, self.config = info, grid, config
        self.plan_dir, self.key = Path(plan_dir), key
        self.index_path = index.path
        self.on_task: Callable[[dict], None] | None = None
        self._bank_read = 0  # bytes of tiles read (for the task records)
        # tiles are read only for their colours, through a map that lives for one read:
        # the plan's memory does not grow with the tiles it has used
        self.engine = PlanEngine(grid, index, config, self._read_tiles)

    def _read_tiles(self, ids: np.ndarray) -> np.ndarray:
        """:func:`pipeline.bank.read_tiles` of the index, counting the bytes read."""
        tiles = read_tiles(self.index_path, ids)
        self._bank_read += tiles.nbytes
        return tiles

    def missing(self, segments: list[Segment]) -> list[Segment]:
        """The segments still to plan: from the first one without a valid chunk on.

        Each chunk starts from the previous one's end, so everything after a missing
        chunk is planned again.
        """
        for i, seg in enumerate(segments):
            if read_chunk(chunk_path(self.plan_dir, seg.number), self.key) is None:
                return segments[i:]
        return []

    def run(self, segments: list[Segment], on_chunk: Callable[[Segment], None],
            stop: threading.Event | None = None) -> None:
        """Plan what is missing of ``segments`` in order, then write the manifest.

        Holds the plan directory's lock (another job planning the same frames is waited
        for, then its chunks are used). ``on_chunk`` is called for every segment whose
        chunk exists, as it lands; ``stop`` ends the pass early (without a manifest).
        """
        with file_lock(self.plan_dir / ".lock", f"the plan {self.key[:12]}"), \
                self._threads():
            todo = self.missing(segments)
            for seg in segments[:len(segments) - len(todo)]:
                on_chunk(seg)
            start, src_lab, tracking = self._resume(todo)
            for seg in todo:
                if stop is not None and stop.is_set():
                    return
                if seg.fresh:
                    start, src_lab, tracking = self._blank(), None, None
                start, src_lab, tracking = self.plan_segment(seg, start, src_lab, tracking)
                trim_heap()  # between segments: fragmentation must not add up
                on_chunk(seg)
            write_manifest(self.plan_dir, self.key, segments, self.grid.rows, self.grid.cols)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """The plan's share of the cores, which it shares with the painters: BLAS on one
        thread (the search is many small matrix products, where BLAS threads only add
        overhead), OpenCV on the search's threads (``render.plan_threads``)."""
        with threadpool_limits(1, user_api="blas"), opencv_threads(self.config.plan_threads):
            yield

    def _blank(self) -> CanvasState:
        return CanvasState.empty(self.grid.rows, self.grid.cols)

    def _resume(self, todo: list[Segment]
                ) -> tuple[CanvasState, np.ndarray | None, Tracking | None]:
        """Where the first segment to plan starts: blank when it is fresh, else the
        previous chunk's end."""
        if todo and not todo[0].fresh and todo[0].number > 0:
            prev = read_chunk(chunk_path(self.plan_dir, todo[0].number - 1), self.key)
            if prev is None:
                raise PlanError(f"plan chunk {todo[0].number - 1} of {self.plan_dir} "
                                "vanished while planning; rerun to plan it again")
            return prev.end_state, prev.end_src_lab, prev.end_tracking
        return self._blank(), None, None

    def plan_one(self, seg: Segment) -> None:
        """Plan segment ``seg`` alone: from a blank canvas when it is fresh, else from
        the previous segment's chunk (which must be there: :class:`PlanError`
        otherwise). Writes its chunk (the caller holds the plan's lock)."""
        with self._threads():
            self.plan_segment(seg, *self._resume([seg]))
            trim_heap()

    def plan_segment(self, seg: Segment, start: CanvasState,
                     start_src_lab: np.ndarray | None, tracking: Tracking | None = None
                     ) -> tuple[CanvasState, np.ndarray, Tracking]:
        """Plan one segment from ``start`` (and, carried over, the activity mask and the
        settling where ``tracking`` left them); writes its chunk and returns its end
        state, the Lab cell colours of its last source frame and its tracking."""
        engine, batch = self.engine, self.config.cluster_batch_frames
        clock, self._bank_read = TaskClock(), 0
        state = engine.start(start, tracking, segment_seed(self.config.seed, seg.number))
        changes: list[FrameChange] = []
        last = None
        # the frames also stashed for the segment's painter, where the client made room
        # (written on the decoder's thread)
        stash = Tee(self.plan_dir, self.key, seg.number, seg.start, seg.count,
                    (self.info.height, self.info.width, 3))
        frames = prefetch_frames(self.info, seg.start, seg.count, exact=True,
                                 threads=self.config.plan_threads, through=stash.over)
        # each frame's activity mask on a thread of its own, a batch ahead of the choice
        inputs = run_ahead(frames, partial(engine.marked, state),
                           ahead_frames(batch, self.info), "mosaic-mask")
        try:
            for b0 in range(0, seg.count, batch):
                block = [next(inputs) for _ in range(min(batch, seg.count - b0))]
                done, state = engine.plan(state, block)
                changes += done
                last = block[-1].frame
        finally:
            inputs.close()
        end_src_lab = source_cells(last, self.grid)[1]
        end_tracking = state.tracking()
        carried = start.placed
        write_chunk(chunk_path(self.plan_dir, seg.number), self.key, seg, changes, start,
                    state.canvas, start_src_lab if carried else None, end_src_lab,
                    end_tracking)
        if self.on_task is not None:
            deps = [] if seg.fresh or not seg.number else [f"plan-{seg.number - 1:05d}"]
            self.on_task(clock.record(
                "plan", seg.number, (seg.start, seg.start + seg.count), deps,
                {"bank": self._bank_read,
                 "source": source_bytes(self.info.path, seg.count, self.info.frames)},
                {"chunk": file_bytes(chunk_path(self.plan_dir, seg.number)),
                 **({"stash": stash.stored} if stash.stored else {})}))
        return state.canvas, end_src_lab, end_tracking


AHEAD_BYTES = 256 << 20  # source frames the activity mask may run ahead of the choice


def ahead_frames(batch: int, info: VideoInfo) -> int:
    """How many frames the activity mask runs ahead of the choice: a batch of them (so
    it works while the batch before is chosen), within :data:`AHEAD_BYTES` of frames."""
    return max(2, min(batch, AHEAD_BYTES // max(1, info.width * info.height * 3)))


@dataclass(frozen=True)
class PlanJob:
    """What a worker needs to plan a job's segments (picklable; paths valid where it
    runs, as for the painters): the source, its grid, the index and the pin it was
    planned with, the options, the plan folder and key."""

    info: VideoInfo
    grid: Grid
    index_dir: str
    config: RenderConfig
    plan_dir: str
    key: str
    index_pin: IndexPin | None = None


def local_plan_config(config: RenderConfig, workers: int, cores: int | None = None
                      ) -> RenderConfig:
    """``config`` for plan tasks on ``workers`` local workers: ``render.plan_threads``
    when set, else the usable ``cores`` shared among the workers (at least one thread
    each): two workers on two cores each searching on two threads only contend (about 6%
    more plan CPU on a short busy job, BENCHMARKS.md)."""
    if config.plan_threads > 0:
        return config
    threads = max(1, (cores or usable_cores()) // max(1, workers))
    return replace(config, plan_threads=threads)


_PLANNER: tuple[PlanJob, Planner] | None = None  # this worker's, kept for its next task


def _planner(job: PlanJob) -> Planner:
    """This process's planner of ``job`` (made on its first task: the index loaded, the
    search built; kept while the tasks are of the same job: the same plan in the same
    folder)."""
    global _PLANNER
    if _PLANNER is None or _PLANNER[0] != job:
        _PLANNER = None  # the previous plan's memory goes before the next one's comes
        planner = Planner(job.info, job.grid, load_index(job.index_dir), job.config,
                          Path(job.plan_dir), job.key)
        _PLANNER = (job, planner)
    return _PLANNER[1]


def plan_task(job: PlanJob, seg: Segment) -> dict:
    """Plan segment ``seg`` of ``job`` in this process (a worker's task); its task
    record. The index must still be the pinned one before it is loaded
    (:class:`~pipeline.errors.IndexChangedError`); the client checks the pin again once
    the chunk has landed, and removes a chunk planned while it changed."""
    if job.index_pin is not None:
        check_pin(job.index_dir, job.index_pin)
    planner = _planner(job)
    records: list[dict] = []
    planner.on_task = records.append
    try:
        planner.plan_one(seg)
    finally:
        planner.on_task = None
    return records[0]


def plan_shots(plan: PlanJob, first: int, count: int, scheduler: str | None,
               workers: int) -> list[int]:
    """Where the shots of the job's ``count`` frames from ``first`` start
    (:func:`pipeline.shots.job_shots`): as recorded in the plan's folder, or found now
    (a long job on ``workers`` processes, or on the Dask cluster of ``scheduler``) and
    recorded (:func:`pipeline.planfile.write_shots`)."""
    config = plan.config
    if (starts := read_shots(plan.plan_dir, plan.key)) is not None:
        return starts
    args = (plan.info, plan.grid, first, count, config.scene_cut, config.shot_frames)
    if config.shot_frames and count >= PARALLEL_FRAMES:
        log.info("finding the shots of %d frames", count)
        with decode_backend(scheduler) as n_jobs:
            starts = job_shots(*args, 8, 0) if n_jobs is not None else \
                job_shots(*args, workers, max(1, usable_cores() // workers))
    else:  # in this process, its decoder on one thread: the pass's own step is the
        # bound (1,000 frames at 640x480 on 2 cores: 1.21-1.26 s against 1.35-1.42 s
        # with ffmpeg's threads, 2.2 CPU-s against 2.4, while the workers load)
        starts = job_shots(*args, 1, 1)
    write_shots(plan.plan_dir, plan.key, starts)
    return starts
