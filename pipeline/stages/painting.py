"""The render's paint stage: each segment handed to a pool of painters as soon as its
plan chunk lands, one progress bar over all of them, and everything stopped at once on a
failure or an interrupt.

The plan runs on a thread of this process (:class:`pipeline.stages.planner.Planner`); the
painters (:func:`pipeline.paint.paint_segment`) are local worker processes or Dask tasks
(:mod:`pipeline.execute`). A segment is handed to the pool once the index is checked to
be still the pinned one (a chunk planned while it changed is removed).

Every plan and paint task's record (:mod:`pipeline.tasklog`) is appended to the job's
``tasks.jsonl`` by this process: the plan thread's as each chunk is written, a painter's
when its result is collected.
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
from pipeline.execute import usable_cores
from pipeline.paint import PaintJob, paint_task, progress_path
from pipeline.planfile import MANIFEST, Segment, chunk_path
from pipeline.stages.planner import Planner
from pipeline.tasklog import TaskLog
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
    tasks: TaskLog | None = None  # where the task records go


def job_record(job: RenderJob, workers: int, threads: int, local: bool) -> dict:
    """The record that opens a run's task records: the frames, the segments, the
    workers and the sizes (``scripts/project_scale.py`` reads it)."""
    paint, segs = job.paint, job.segments
    return {"id": "job", "kind": "job", "segment": None,
            "frames": [segs[0].start, segs[-1].start + segs[-1].count],
            "segments": len(segs), "to_paint": len(job.to_paint),
            "plan_reused": job.plan_reused, "workers": workers, "threads": threads,
            "scheduler": not local, "cores": usable_cores(),
            "source": [paint.info.width, paint.info.height],
            "out_size": [paint.grid.out_w, paint.grid.out_h],
            "grid": [paint.grid.rows, paint.grid.cols], "codec": list(paint.codec),
            "start": round(time.time(), 3)}


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
        if job.tasks is not None:
            job.planner.on_task = job.tasks.append

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
                    future = self.pool.submit(paint_task, self.job.paint, seg,
                                              key=f"paint-{seg.number:05d}")
                    self.running[future] = seg

    def _collect_done(self) -> None:
        for future, seg in list(self.running.items()):
            if future.done():
                try:
                    self.stats[seg.number], record = future.result()
                except IndexChangedError:
                    raise
                except Exception as exc:
                    raise SegmentError(seg, exc) from exc
                del self.running[future]
                if self.job.tasks is not None:
                    self.job.tasks.append(record)

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
