"""The render's paint stage: each segment handed to a pool of painters as soon as its
plan chunk lands, one progress bar over all of them, and everything stopped at once on a
failure or an interrupt.

The plan runs on a thread of this process (:class:`pipeline.stages.planner.Planner`); the
painters (:func:`pipeline.paint.paint_segment`) are local worker processes or Dask tasks
(:mod:`pipeline.execute`). A segment is handed to the pool once the index is checked to
be still the pinned one (a chunk planned while it changed is removed).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.bank import check_pin
from pipeline.errors import IndexChangedError, MosaicError, PlanError
from pipeline.paint import PaintJob, paint_segment, progress_path
from pipeline.planfile import MANIFEST, Segment, chunk_path
from pipeline.stages.planner import Planner
from pipeline.video import stop_pipes

_POLL = 0.2  # seconds between looks at the workers


class SegmentError(MosaicError):
    """A painter failed: names the segment and the cause."""

    def __init__(self, seg: Segment, cause: BaseException) -> None:
        what = str(cause) or type(cause).__name__
        super().__init__(f"segment {seg.number} (frames {seg.start}-"
                         f"{seg.start + seg.count - 1}): {what}")


@dataclass
class RenderJob:
    """One run's moving parts: the planner, the painters' job, what is left to paint."""

    planner: Planner
    paint: PaintJob
    segments: list[Segment]
    plan_reused: bool
    to_paint: list[Segment]
    done: dict[int, dict]  # statistics of the segments already painted


class _Run:
    """The plan thread and the painters of one :func:`render_segments` call."""

    def __init__(self, job: RenderJob, pool, bar: tqdm) -> None:
        self.job, self.pool, self.bar = job, pool, bar
        self.planned: queue.Queue[Segment] = queue.Queue()
        self.stop = threading.Event()
        self.failure: list[BaseException] = []
        self.waiting = {s.number: s for s in job.to_paint}
        self.running: dict = {}
        self.stats: dict[int, dict] = {}
        self.thread = threading.Thread(target=self._plan, daemon=True, name="mosaic-plan")

    def _on_chunk(self, seg: Segment) -> None:
        paint = self.job.paint
        try:
            check_pin(paint.index_dir, paint.index_pin)
        except IndexChangedError:
            chunk_path(paint.plan_dir, seg.number).unlink(missing_ok=True)
            (Path(paint.plan_dir) / MANIFEST).unlink(missing_ok=True)
            raise
        self.planned.put(seg)

    def _plan(self) -> None:
        try:
            if self.job.plan_reused:
                for seg in self.job.segments:
                    self.planned.put(seg)
            else:
                self.job.planner.run(self.job.segments, self._on_chunk, self.stop)
        except BaseException as exc:  # handed to the main thread
            self.failure.append(exc)

    def _submit_planned(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                seg = self.planned.get_nowait()
                if seg.number in self.waiting:
                    del self.waiting[seg.number]
                    future = self.pool.submit(paint_segment, self.job.paint, seg,
                                              key=f"paint-{seg.number:05d}")
                    self.running[future] = seg

    def _collect_done(self) -> None:
        for future, seg in list(self.running.items()):
            if future.done():
                try:
                    self.stats[seg.number] = future.result()
                except IndexChangedError:
                    raise
                except Exception as exc:
                    raise SegmentError(seg, exc) from exc
                del self.running[future]

    def loop(self) -> None:
        """Until every segment is painted: submit what is planned, collect what is done."""
        while self.waiting or self.running or self.thread.is_alive():
            self._submit_planned()
            self._collect_done()
            if self.failure:
                raise self.failure[0]
            if not self.thread.is_alive() and self.waiting and self.planned.empty():
                raise PlanError(f"the plan ended without segments {sorted(self.waiting)}")
            show_progress(self.bar, self.job, self.stats, self.running.values())
            time.sleep(_POLL)
        show_progress(self.bar, self.job, self.stats, [])

    def close(self, failed: bool) -> None:
        """Stop the plan; after a failure, the painters, their encoders and the plan's
        decoder at once."""
        self.stop.set()
        for future in self.running:
            future.cancel()
        if failed:
            self.pool.close(abort=True)
            stop_pipes(self.thread.ident)
        self.thread.join(timeout=5 if failed else None)


def render_segments(job: RenderJob, pool, bar: tqdm) -> dict[int, dict]:
    """Plan (on a thread) and paint (in the pool) what is missing; each segment's stats.

    The bar counts the frames painted by all workers (from their progress files). On
    any failure or interrupt the painters and the plan's decoder are stopped at once.
    """
    run = _Run(job, pool, bar)
    run.thread.start()
    failed = True
    try:
        run.loop()
        failed = False
    finally:
        run.close(failed)
    return run.stats


def show_progress(bar: tqdm, job: RenderJob, stats: dict[int, dict], running) -> None:
    """Move the bar to the frames painted: finished segments and running ones' progress."""
    frames = sum(s["frames"] for s in stats.values())
    for seg in running:
        with contextlib.suppress(OSError, ValueError):
            frames += int(progress_path(job.paint.work, seg.number).read_text() or 0)
    if frames > bar.n:
        bar.update(frames - bar.n)
