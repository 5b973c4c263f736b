#!/usr/bin/env python3
"""Project a render onto N workers from its measured task durations (``tasks.jsonl``).

A render appends one record per task to its job directory's ``tasks.jsonl``
(:mod:`pipeline.tasklog`): plan and paint tasks per segment, the join of each segment
and the final mux, each with its CPU and wall seconds, bytes read and written by kind,
and ``deps``, the tasks whose outputs it reads (the planner carries each chunk on from the
previous one within a shot, so the plan tasks form one chain per shot of at least
``render.shot_frames`` frames; a segment is painted after its plan; the client joins
each segment after it is painted and the one before it is joined (:mod:`pipeline.join`),
then the mux closes the file; a render that joins at the end has one mux of every
segment instead).

This replays one run's records in a list-scheduling simulation: N identical workers (one
core each); whenever a worker is free it takes the ready task (all deps done) that the
render's executor would hand it (``--order executor``, the default: the most work after
it counted in frames, :func:`pipeline.stages.painting.task_levels`, as on Dask;
``--order local``, the same but plans first until two planned segments a worker wait to
be painted, as on local workers), or the one with the longest path of measured durations
to the end of the job (``--order critical``: its "bottom level", what the executor's
frame counts stand in for; ties in record order). A task occupies its worker for its
duration, by default its CPU seconds (its process's threads plus the ffmpeg processes it
waited for: the work, as if on one core; ``--duration wall`` takes the measured wall
time instead), plus the time to move its bytes of the ``--transfer`` kinds (default
bank, chunk and segment: read and written) over the worker's own link at ``--bandwidth``
MB/s (shared storage: nothing is local; the storage side is not a bottleneck). A dep
that is not among the records (a plan reused from an earlier run) counts as done at the
start. The join and the mux run on the client, one at a time beside the workers, with
the same link. Records of any kind but ``job`` are tasks, so new kinds (shot detection,
per-block features) replay without a change here; those without a segment (the mux) are
tasks of the whole job.

``--scale-to-frames F`` projects a longer video: the recorded tasks are repeated (ids
kept apart) until they cover F frames (rounded up to whole segments), the last copy cut
short; each copy's first join follows the last of the copy before; the mux is one task
whose duration and bytes grow with the frames. By default a
copy's first shot continues the previous copy's last (its first plan task waits for the
previous copy's last one: the recorded chains, joined end to end, the conservative
model), or, with ``--independent-copies``, each copy starts a shot of its own.

It prints, per N, the makespan, the speed-up over N = 1, the utilisation (busy
worker-seconds over N x makespan) and what bounds it: the critical path (the longest
chain of durations) or the work (total duration / N).

    python scripts/project_scale.py CACHE/render/JOB/tasks.jsonl --workers 1 2 16 64 160 \\
        --bandwidth 125 --scale-to-frames 180000
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.planfile import Segment
from pipeline.stages.painting import _LEAD as LEAD
from pipeline.stages.painting import task_levels
from pipeline.tasklog import read_tasks

NOT_TASKS = ("job",)  # record kinds that describe a run, not a task
CLIENT_KINDS = ("join", "mux")  # tasks the client runs (one at a time), not a worker
DEFAULT_TRANSFER = ("bank", "chunk", "segment")


@dataclass
class Task:
    """One task of the graph: its own duration (compute + transfer) and deps."""

    id: str
    kind: str
    compute: float
    transfer: float
    deps: list[str] = field(default_factory=list)
    frames: tuple[int, int] = (0, 0)
    whole: bool = False  # a task of the whole job (the mux), not of one segment

    @property
    def client(self) -> bool:
        """Run by the client, beside the workers (the join), not by one of them."""
        return self.kind in CLIENT_KINDS

    @property
    def duration(self) -> float:
        return self.compute + self.transfer


@dataclass
class Projection:
    """The simulation's result for one N."""

    workers: int
    makespan: float
    busy: float
    critical_path: float

    @property
    def utilisation(self) -> float:
        return self.busy / (self.workers * self.makespan) if self.makespan > 0 else 0.0

    @property
    def bound(self) -> str:
        """What sets the makespan's floor: the critical path or the work over N."""
        return "critical path" if self.critical_path >= self.busy / self.workers else "work"


def select_run(records: list[dict], run: str | None = None) -> list[dict]:
    """The records of ``run`` (default: the last run that has plan or paint tasks)."""
    if run is None:
        runs = [r.get("run") for r in records if r.get("kind") in ("plan", "paint")]
        if not runs:
            raise ValueError("no plan or paint task records")
        run = runs[-1]
    chosen = [r for r in records if r.get("run") == run]
    if not chosen:
        raise ValueError(f"no records of run {run}")
    return chosen


def make_tasks(records: list[dict], duration: str = "cpu", bandwidth: float | None = None,
               transfer: tuple[str, ...] = DEFAULT_TRANSFER) -> list[Task]:
    """Tasks from task records of any kind (``job`` records skipped); ``bandwidth`` in
    MB/s (10^6 bytes), None for no transfer cost."""
    tasks = []
    for r in records:
        if r.get("kind") in NOT_TASKS:
            continue
        compute = float(r["wall_s"]) if duration == "wall" else \
            float(r["cpu_s"]) + float(r.get("child_cpu_s", 0.0))
        moved = sum(int(v) for side in ("read", "written")
                    for k, v in r.get(side, {}).items() if k in transfer)
        seconds = moved / (bandwidth * 1e6) if bandwidth else 0.0
        tasks.append(Task(r["id"], r["kind"], compute, seconds, list(r.get("deps", [])),
                          tuple(r["frames"]), r.get("segment") is None))
    return tasks


def _frames_span(tasks: list[Task]) -> tuple[int, int]:
    work = [t for t in tasks if not t.whole] or tasks
    return min(t.frames[0] for t in work), max(t.frames[1] for t in work)


def scale_tasks(tasks: list[Task], frames: int, chained: bool = True) -> list[Task]:
    """The graph repeated to cover ``frames`` frames (see the module's description)."""
    first, end = _frames_span(tasks)
    span = end - first
    factor = frames / span
    body = [t for t in tasks if not t.whole]
    muxes = [t for t in tasks if t.whole]
    ids = {t.id for t in body}
    plans = [t for t in body if t.kind == "plan"]
    # the first shot of a copy continues the last of the copy before
    heads = [min(plans, key=lambda t: t.frames[0]).id] if plans else []
    tails = [max(plans, key=lambda t: t.frames[0]).id] if plans else []
    joins = [t for t in body if t.kind == "join"]  # joined in order, copy after copy
    join_head = min(joins, key=lambda t: t.frames[0]).id if joins else None
    join_tail = max(joins, key=lambda t: t.frames[0]).id if joins else None
    out: list[Task] = []
    for c in range(math.ceil(factor)):
        left = frames - c * span  # frames this copy still has to cover
        kept = {t.id for t in body if t.frames[0] - first < left}
        for t in body:
            if t.id not in kept:
                continue
            deps = [f"{d}@{c}" for d in t.deps if d in ids and d in kept]
            if chained and c > 0 and t.id in heads:
                deps += [f"{h}@{c - 1}" for h in tails]
            if c > 0 and t.id == join_head:
                deps.append(f"{join_tail}@{c - 1}")
            shift = c * span
            out.append(Task(f"{t.id}@{c}", t.kind, t.compute, t.transfer, deps,
                            (t.frames[0] + shift, t.frames[1] + shift)))
    by_id, last = {t.id: t for t in body}, f"@{math.ceil(factor) - 1}"
    for m in muxes:  # after every copy of what it waited for
        deps = [t.id for t in out if t.id.rsplit("@", 1)[0] in m.deps]
        cut = [t for t in out if t.id.endswith(last)]  # the last copy, maybe cut short
        for d in m.deps:  # one it lost: its last kept task of that kind instead
            if d in by_id and not any(t.id == d + last for t in cut):
                same = [t for t in cut if t.kind == by_id[d].kind]
                deps += [max(same, key=lambda t: t.frames[1]).id] if same else []
        deps = list(dict.fromkeys(deps))
        out.append(Task(m.id, m.kind, m.compute * factor, m.transfer * factor, deps,
                        (first, first + frames), True))
    return out


def _children(tasks: list[Task]) -> dict[str, list[str]]:
    """Each task's dependants (deps that are not among ``tasks`` are ignored)."""
    children: dict[str, list[str]] = {t.id: [] for t in tasks}
    for t in tasks:
        for d in t.deps:
            if d in children:
                children[d].append(t.id)
    return children


def _waiting(tasks: list[Task]) -> dict[str, int]:
    """Each task's number of deps among ``tasks``."""
    ids = {t.id for t in tasks}
    return {t.id: sum(1 for d in t.deps if d in ids) for t in tasks}


def bottom_levels(tasks: list[Task]) -> dict[str, float]:
    """Each task's longest path of durations to the end of the graph, itself included
    (ValueError when the deps form a cycle)."""
    by_id, children, waiting = {t.id: t for t in tasks}, _children(tasks), _waiting(tasks)
    todo = [tid for tid, n in waiting.items() if n == 0]
    order = []
    while todo:
        tid = todo.pop()
        order.append(tid)
        for c in children[tid]:
            waiting[c] -= 1
            if waiting[c] == 0:
                todo.append(c)
    if len(order) != len(tasks):
        raise ValueError("the task dependencies form a cycle")
    level: dict[str, float] = {}
    for tid in reversed(order):
        level[tid] = by_id[tid].duration + max((level[c] for c in children[tid]), default=0.0)
    return level


ORDERS = ("critical", "executor", "local")


def executor_levels(tasks: list[Task]) -> dict[str, float]:
    """Each plan and paint task's work to the job's end as the render's executor weighs
    it: :func:`pipeline.stages.painting.task_levels` of the segments the tasks cover (a
    segment is fresh unless its plan task waits for another plan)."""
    work = [t for t in tasks if t.kind in ("plan", "paint")]
    plans = {t.id for t in work if t.kind == "plan"}
    spans = sorted({t.frames for t in work})
    fresh = {t.frames: not any(d in plans for d in t.deps) for t in work if t.kind == "plan"}
    number = {span: n for n, span in enumerate(spans)}
    plan_level, paint_level = task_levels([
        Segment(n, span[0], span[1] - span[0], fresh.get(span, True))
        for n, span in enumerate(spans)])
    return {t.id: (plan_level if t.kind == "plan" else paint_level)[number[t.frames]]
            for t in work}


def priorities(tasks: list[Task], order: str) -> dict[str, tuple]:
    """Each task's place in the ready queue (the smallest goes first): ``critical``, the
    longest path of measured durations to the end first (list scheduling by bottom
    level); ``executor``, what the render's executor does without knowing durations
    (:func:`executor_levels`, then the first); the client's tasks in their order."""
    rank = {t.id: i for i, t in enumerate(tasks)}
    if order == "critical":
        level = bottom_levels(tasks)
        return {t.id: (-level[t.id], rank[t.id]) for t in tasks}
    # ("local" takes the same keys; simulate() adds the local executor's rule)
    level = executor_levels(tasks)
    return {t.id: (rank[t.id],) if t.client else (-level.get(t.id, 0.0), t.frames[0],
                                                   rank[t.id]) for t in tasks}


def simulate(tasks: list[Task], workers: int, order: str = "critical") -> Projection:
    """List scheduling of ``tasks`` on ``workers`` workers, and the client's tasks
    (:data:`CLIENT_KINDS`) on the client, one at a time, in ``order`` (:func:`priorities`)."""
    by_id, children, waiting = {t.id: t for t in tasks}, _children(tasks), _waiting(tasks)
    level = bottom_levels(tasks)
    rank = {t.id: i for i, t in enumerate(tasks)}
    key = priorities(tasks, order)
    # the queues: the client's, the workers' plans, the workers' other tasks (one queue
    # for the workers but in the local order, which weighs plans and paints apart)
    ready: dict[str, list] = {"client": [], "plan": [], "work": []}
    free = {False: workers, True: 1}

    def queue(t: Task) -> str:
        return "client" if t.client else "plan" if order == "local" and \
            t.kind == "plan" else "work"

    def pick() -> str | None:
        """The workers' queue to take from (the local executor: plans first until
        LEAD x workers planned segments wait to be painted)."""
        if ready["plan"] and len(ready["work"]) < LEAD * workers:
            return "plan"
        return "work" if ready["work"] else "plan" if ready["plan"] else None

    for t in tasks:
        if waiting[t.id] == 0:
            heapq.heappush(ready[queue(t)], (key[t.id], t.id))
    running: list[tuple[float, int, str]] = []
    now = 0.0
    while any(ready.values()) or running:
        while free[True] and ready["client"]:
            _, tid = heapq.heappop(ready["client"])
            heapq.heappush(running, (now + by_id[tid].duration, rank[tid], tid))
            free[True] -= 1
        while free[False] and (side := pick()) is not None:
            _, tid = heapq.heappop(ready[side])
            heapq.heappush(running, (now + by_id[tid].duration, rank[tid], tid))
            free[False] -= 1
        now, _, tid = heapq.heappop(running)
        free[by_id[tid].client] += 1
        for c in children[tid]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready[queue(by_id[c])], (key[c], c))
    return Projection(workers, now, sum(t.duration for t in tasks if not t.client),
                      max(level.values(), default=0.0))


def recorded_span(records: list[dict]) -> float:
    """Wall seconds from the first task's start to the last one's end, as recorded."""
    work = [r for r in records if r.get("kind") not in NOT_TASKS]
    return max(r["start"] + r["wall_s"] for r in work) - min(r["start"] for r in work)


def _clock(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    h, rest = divmod(round(seconds), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def report(records: list[dict], args: argparse.Namespace) -> list[str]:
    """The projection's lines for the chosen run."""
    tasks = make_tasks(records, args.duration, args.bandwidth, tuple(args.transfer))
    first, end = _frames_span(tasks)
    job = next((r for r in records if r.get("kind") == "job"), {})
    kinds = list(dict.fromkeys(t.kind for t in tasks))
    counts = ", ".join(f"{sum(1 for t in tasks if t.kind == k)} {k}" for k in kinds)
    lines = [f"run {records[0].get('run')}: {counts} tasks over frames [{first}, {end}); "
             "recorded with "
             f"{job.get('workers', '?')} worker(s) on {job.get('cores', '?')} cores, "
             f"{_clock(recorded_span(records))} from the first task's start to the last's end"]
    if job.get("plan_reused"):
        lines.append("note: the plan was reused in this run: no plan tasks were recorded")
    if args.scale_to_frames:
        tasks = scale_tasks(tasks, args.scale_to_frames, not args.independent_copies)
        lines.append(f"scaled to {args.scale_to_frames} frames "
                     f"({args.scale_to_frames / (end - first):.1f}x the recorded "
                     f"{end - first}), copies planned "
                     + ("independently" if args.independent_copies else
                        "with each copy's first shot continuing the last of the one before"))
    work = {k: sum(t.compute for t in tasks if t.kind == k) for k in kinds}
    moved = sum(t.transfer for t in tasks)
    lines.append(f"durations: {args.duration} seconds; transfer of "
                 f"{', '.join(args.transfer) or 'nothing'} at "
                 + (f"{args.bandwidth:g} MB/s per worker" if args.bandwidth else "no cost"))
    lines.append("work: " + ", ".join(f"{k} {_clock(v)}" for k, v in work.items())
                 + f", transfer {_clock(moved)}")
    lines.append(f"{'N':>5} {'makespan':>10} {'speed-up':>9} {'utilisation':>12}  bound "
                 "(critical path / work per worker)")
    one = simulate(tasks, 1, args.order).makespan
    for n in args.workers:
        p = simulate(tasks, n, args.order)
        speedup = one / p.makespan if p.makespan else 1.0
        lines.append(f"{n:>5} {_clock(p.makespan):>10} {speedup:8.2f}x {p.utilisation:>11.0%}  "
                     f"{p.bound} ({_clock(p.critical_path)} / {_clock(p.busy / n)})")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tasks", type=Path, help="a render job's tasks.jsonl")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 16, 64, 160])
    ap.add_argument("--bandwidth", type=float, default=125.0,
                    help="MB/s per worker for the transferred bytes (default 125: 1 Gb/s; "
                         "0: no transfer cost)")
    ap.add_argument("--transfer", nargs="*", default=list(DEFAULT_TRANSFER),
                    help="byte kinds moved over the network (bank chunk segment source "
                         "output)")
    ap.add_argument("--duration", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--scale-to-frames", type=int, help="project a video this many frames long")
    ap.add_argument("--independent-copies", action="store_true",
                    help="with --scale-to-frames: each copy starts a shot of its own")
    ap.add_argument("--run", help="the run to replay (default: the last one with tasks)")
    ap.add_argument("--order", choices=ORDERS, default="executor",
                    help="which ready task a free worker takes: as the render's executor "
                         "picks them on Dask (default), as it picks them on local "
                         "workers (local: plans first until two segments a worker wait "
                         "to be painted), or the longest path of measured durations to "
                         "the end first (critical)")
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.workers) or (args.scale_to_frames or 1) < 1 \
            or args.bandwidth < 0:
        print("error: --workers, --scale-to-frames must be >= 1 and --bandwidth >= 0",
              file=sys.stderr)
        return 2
    try:
        records = select_run(read_tasks(args.tasks), args.run)
        lines = report(records, args)
    except OSError as exc:
        print(f"error: {args.tasks}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.tasks}: not usable task records ({exc})", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
