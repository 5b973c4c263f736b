"""The render's plan and paint tasks on one pool: each segment planned as soon as the
segment it continues is (a shot's first segment at once), painted as soon as its plan
chunk lands, one progress bar over all of them, and everything stopped at once on a
failure or an interrupt.

Plan tasks (:func:`pipeline.stages.planner.plan_task`) and paint tasks
(:func:`pipeline.paint.paint_task`) run on the same workers: local processes or Dask
tasks (:mod:`pipeline.execute`). The client keeps at most one task per local worker in
flight and hands a free worker a segment ready to plan before any to paint (the plan is
the longer chain), the one with the most work after it first (:func:`task_levels`: the
frames left to plan in its shot, so that the last shot's plan is not left to run alone
at the end, and the frames the join still has to read from its segment on, so that a
long film's join is not held up by its first segment), until two segments a worker are
planned and waiting, then paints the one with the most work after it first; on Dask
every ready task is submitted, at those priorities. It holds the plan
folder's lock while any segment is being planned, checks each landed chunk against the
pinned index (a chunk planned while it changed is removed), and writes the plan's
manifest once every chunk is there.

Every plan and paint task's record (:mod:`pipeline.tasklog`) is appended to the job's
``tasks.jsonl`` by this process as its result is collected.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.bank import check_pin
from pipeline.clean import remove_temporaries
from pipeline.errors import IndexChangedError, MosaicError
from pipeline.execute import LocalPool, usable_cores
from pipeline.locks import file_lock
from pipeline.paint import PaintJob, paint_task, progress_path
from pipeline.planfile import (
    MANIFEST,
    PLAN_FILES,
    Segment,
    chunk_path,
    planned,
    write_manifest,
)
from pipeline.stages.planner import PlanJob, plan_task
from pipeline.stash import job_stash
from pipeline.tasklog import TaskLog

log = logging.getLogger(__name__)

_POLL = 0.2  # seconds between looks at the workers
# the streamed join's reading of a frame (its segment's bytes, about 0.5 MB a CPU-second
# of painting) at about 125 MB/s, against a frame's painting: 1/256 of it
JOIN_WEIGHT = 1 / 256
_LEAD = 2  # planned segments waiting per local worker before painting goes first
DONE = "done.json"  # a job's record of its verified output (written last)


class SegmentError(MosaicError):
    """A painter failed: names the segment and the cause."""

    def __init__(self, seg: Segment, cause: BaseException) -> None:
        what = str(cause) or type(cause).__name__
        super().__init__(f"segment {seg.number} (frames {seg.start}-"
                         f"{seg.start + seg.count - 1}): {what}")


@dataclass
class RenderJob:
    """One run's moving parts: the plan's job, the painters' job, what is left to do."""

    plan: PlanJob
    paint: PaintJob
    segments: list[Segment]
    plan_reused: bool
    to_paint: list[Segment]
    done: dict[int, dict]  # statistics of the segments already painted
    tasks: TaskLog | None = None  # where the task records go
    painted: Callable[[int], None] | None = None  # told each segment painted (the join)


def job_record(job: RenderJob, workers: int, threads: int, local: bool) -> dict:
    """The record that opens a run's task records: the frames, the segments, the
    workers and the sizes (``scripts/project_scale.py`` reads it)."""
    paint, segs = job.paint, job.segments
    return {"id": "job", "kind": "job", "segment": None,
            "frames": [segs[0].start, segs[-1].start + segs[-1].count],
            "segments": len(segs), "shots": sum(s.fresh for s in segs),
            "to_paint": len(job.to_paint),
            "plan_reused": job.plan_reused, "workers": workers, "threads": threads,
            "scheduler": not local, "cores": usable_cores(),
            "source": [paint.info.width, paint.info.height],
            "out_size": [paint.grid.out_w, paint.grid.out_h],
            "grid": [paint.grid.rows, paint.grid.cols], "codec": list(paint.codec),
            "start": round(time.time(), 3)}


def task_levels(segments: list[Segment]) -> tuple[dict[int, float], dict[int, float]]:
    """Each segment's plan and paint task's work from its start to the job's end, in
    frames (a frame planned or painted counting 1; its join :data:`JOIN_WEIGHT`): a
    plan, its frames and those of the plans that continue it in its shot, or its paint
    and the joins from it on, whichever is more; a paint, its frames and those joins.
    The ready task with the most goes first (list scheduling by bottom level, which
    ``scripts/project_scale.py --order executor`` replays)."""
    plans: dict[int, float] = {}
    paints: dict[int, float] = {}
    left = follow = 0.0  # frames to the job's end; the plans continuing this one
    for seg in reversed(segments):
        left += seg.count
        paints[seg.number] = seg.count + JOIN_WEIGHT * left
        plans[seg.number] = seg.count + max(follow, paints[seg.number])
        follow = 0.0 if seg.fresh else plans[seg.number]
    return plans, paints


class _Run:
    """The plan and paint tasks of one :func:`render_segments` call."""

    def __init__(self, job: RenderJob, pool, bar: tqdm) -> None:
        self.job, self.pool, self.bar = job, pool, bar
        self.slots = pool.workers if isinstance(pool, LocalPool) else 1 << 30
        self.planned: set[int] = set()
        self.to_plan: list[Segment] = []
        self.waiting = {s.number: s for s in job.to_paint}
        self.running: dict = {}  # future -> ("plan" | "paint", segment)
        self.stats: dict[int, dict] = {}
        self.manifest = job.plan_reused
        self.plan_level, self.paint_level = task_levels(job.segments)

    def start(self) -> None:
        """What is planned already (read under the plan's lock: another job may have
        planned it meanwhile) and what is left to plan."""
        job = self.job
        if job.plan_reused:
            self.planned = {s.number for s in job.segments}
        else:
            self.planned = planned(job.plan.plan_dir, job.plan.key, job.segments)
        self.to_plan = [s for s in job.segments if s.number not in self.planned]
        if self.planned and self.to_plan:
            log.info("resuming the plan: %d of %d segments to plan", len(self.to_plan),
                     len(job.segments))

    def _next(self) -> tuple[str, Segment] | None:
        """The next task to hand a free worker: a segment ready to plan (fresh, or
        continuing a planned one), the one with the most work after it
        (:func:`task_levels`; then the first), else the planned one left to paint with
        the most (then the first: the job does not end on a long segment painted alone);
        but painting first once :data:`_LEAD` segments per worker are planned and
        waiting (the plan stays ahead without running away: the frames keep coming)."""
        waiting = [self.waiting[n] for n in sorted(self.waiting) if n in self.planned]
        paint = max(waiting, key=lambda seg: self.paint_level[seg.number],
                    default=None)  # (ties: the first)
        ahead = len(waiting)
        if paint is not None and ahead >= _LEAD * self.slots:
            return "paint", paint
        busy = {seg.number for kind, seg in self.running.values() if kind == "plan"}
        ready = [seg for seg in self.to_plan if seg.number not in busy
                 and (seg.fresh or seg.number - 1 in self.planned)]
        if ready:
            return "plan", max(ready, key=lambda seg: (self.plan_level[seg.number],
                                                       -seg.number))
        return None if paint is None else ("paint", paint)

    def _submit(self) -> None:
        while len(self.running) < self.slots and (task := self._next()) is not None:
            kind, seg = task
            if kind == "plan":
                future = self.pool.submit(plan_task, self.job.plan, seg,
                                          key=f"plan-{seg.number:05d}",
                                          priority=round(self.plan_level[seg.number]))
            else:
                del self.waiting[seg.number]
                future = self.pool.submit(paint_task, self.job.paint, seg,
                                          key=f"paint-{seg.number:05d}",
                                          priority=round(self.paint_level[seg.number]))
            self.running[future] = task

    def _landed(self, seg: Segment) -> None:
        """A plan task's chunk landed: still the pinned index (else it goes)?"""
        plan = self.job.plan
        try:
            if plan.index_pin is not None:
                check_pin(plan.index_dir, plan.index_pin)
        except IndexChangedError:
            chunk_path(plan.plan_dir, seg.number).unlink(missing_ok=True)
            (Path(plan.plan_dir) / MANIFEST).unlink(missing_ok=True)
            raise
        self.planned.add(seg.number)
        self.to_plan.remove(seg)

    def _collect(self) -> None:
        for future, (kind, seg) in list(self.running.items()):
            if not future.done():
                continue
            try:
                result = future.result()
            except IndexChangedError:
                raise
            except Exception as exc:
                if kind == "plan":  # its own one-line error (a bad source, a full disk)
                    raise
                raise SegmentError(seg, exc) from exc
            del self.running[future]
            if kind == "plan":
                self._landed(seg)
                record = result
            else:
                self.stats[seg.number], record = result
                if self.job.painted is not None:
                    self.job.painted(seg.number)
            if self.job.tasks is not None:
                self.job.tasks.append(record)
        self._finish_plan()

    def _finish_plan(self) -> None:
        """The plan's manifest, written (last) once every chunk is there."""
        if not self.manifest and not self.to_plan:
            plan, grid = self.job.plan, self.job.plan.grid
            write_manifest(Path(plan.plan_dir), plan.key, self.job.segments, grid.rows,
                           grid.cols)
            self.manifest = True

    def _wait(self) -> None:
        """Until a task ends or :data:`_POLL` seconds pass."""
        local = [f for f in self.running if isinstance(f, concurrent.futures.Future)]
        if local and len(local) == len(self.running):
            concurrent.futures.wait(local, timeout=_POLL,
                                    return_when=concurrent.futures.FIRST_COMPLETED)
        else:
            time.sleep(_POLL)

    def loop(self) -> None:
        """Until every segment is planned and painted: hand out what is ready, collect
        what is done."""
        self._finish_plan()
        while self.waiting or self.running or not self.manifest:
            self._submit()
            if not self.running:
                raise MosaicError(f"nothing left to run, but segments "
                                  f"{sorted(self.waiting) or [s.number for s in self.to_plan]} "
                                  "are not done (a plan chunk vanished? rerun)")
            self._wait()
            self._collect()
            show_progress(self.bar, self.job, self.stats,
                          [seg for kind, seg in self.running.values() if kind == "paint"])
        show_progress(self.bar, self.job, self.stats, [])

    def close(self, failed: bool) -> None:
        """After a failure or an interrupt: the workers, their encoders and decoders
        stopped at once."""
        for future in self.running:
            future.cancel()
        if failed:
            self.pool.close(abort=True)


def render_segments(job: RenderJob, pool, bar: tqdm) -> dict[int, dict]:
    """Plan and paint what is missing on ``pool``; each painted segment's stats.

    Holds the plan folder's lock while anything is left to plan (another job planning
    the same frames is waited for; its chunks are then used). The bar counts the frames
    painted by all workers (from their progress files). On any failure or interrupt the
    workers and everything they started are stopped at once.
    """
    run = _Run(job, pool, bar)
    plan_dir = Path(job.plan.plan_dir)
    lock = contextlib.nullcontext() if job.plan_reused else file_lock(
        plan_dir / ".lock", f"the plan {job.plan.key[:12]}")
    # plan tasks hand their decoded frames to the painters of this machine (none where
    # the plan is reused: nothing is decoded twice then)
    stash = job_stash(job.plan.plan_dir, job.plan.key, enabled=not job.plan_reused)
    with lock, stash:
        failed = True
        try:
            run.start()
            run.loop()
            failed = False
        finally:
            run.close(failed)
            if failed and not job.plan_reused:  # a chunk being written when stopped
                remove_temporaries(plan_dir, PLAN_FILES)
    return run.stats


def show_progress(bar: tqdm, job: RenderJob, stats: dict[int, dict], running) -> None:
    """Move the bar to the frames painted: finished segments and running ones' progress."""
    frames = sum(s["frames"] for s in stats.values())
    for seg in running:
        with contextlib.suppress(OSError, ValueError):
            frames += int(progress_path(job.paint.work, seg.number).read_text() or 0)
    if frames > bar.n:
        bar.update(frames - bar.n)
