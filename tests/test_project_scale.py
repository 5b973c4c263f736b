"""scripts/project_scale.py: list scheduling of recorded task durations onto N workers,
on hand-made records whose makespans are worked out by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "project_scale.py"
_spec = importlib.util.spec_from_file_location("project_scale", SCRIPT)
ps = importlib.util.module_from_spec(_spec)
sys.modules["project_scale"] = ps  # dataclasses look their module up
_spec.loader.exec_module(ps)


def rec(kind: str, n: int | None, frames: tuple[int, int], cpu: float, deps: list[str],
        read: dict | None = None, written: dict | None = None, run: str = "r1") -> dict:
    """A task record as the render writes it (the child CPU split off half the time)."""
    ident = kind if n is None else f"{kind}-{n:05d}"
    return {"run": run, "id": ident, "kind": kind, "segment": n, "frames": list(frames),
            "deps": deps, "start": 100.0, "wall_s": cpu * 1.5, "cpu_s": cpu / 2,
            "child_cpu_s": cpu / 2, "read": read or {}, "written": written or {}}


def chain(plan: float = 1.0, paint: float = 2.0, mux: float = 0.5, run: str = "r1",
          segments: int = 3, size: int = 10) -> list[dict]:
    """Today's graph: plans chained, each paint after its plan, the mux after all."""
    records = []
    for n in range(segments):
        span = (n * size, (n + 1) * size)
        records.append(rec("plan", n, span, plan, [f"plan-{n - 1:05d}"] if n else [], run=run))
        records.append(rec("paint", n, span, paint, [f"plan-{n:05d}"], run=run))
    records.append(rec("mux", None, (0, segments * size), mux,
                       [f"paint-{n:05d}" for n in range(segments)], run=run))
    return records


def test_one_worker_runs_everything_back_to_back() -> None:
    tasks = ps.make_tasks(chain())
    p = ps.simulate(tasks, 1)
    assert p.makespan == pytest.approx(3 * 1 + 3 * 2 + 0.5)
    # the mux is the client's: the worker is busy for all but it
    assert p.utilisation == pytest.approx(9 / 9.5) and p.bound == "work"


def test_two_workers_follow_the_plan_chain() -> None:
    # t=0 plan0; t=1 plan1 + paint0; t=2 plan2 (bottom level 3.5 beats paint1's 2.5);
    # t=3 paint1 + paint2, done at 5; mux 5 -> 5.5: the critical path
    # plan0 + plan1 + plan2 + paint2 + mux
    p = ps.simulate(ps.make_tasks(chain()), 2)
    assert p.makespan == pytest.approx(5.5) and p.critical_path == pytest.approx(5.5)
    assert p.utilisation == pytest.approx(9 / (2 * 5.5)) and p.bound == "critical path"
    assert ps.simulate(ps.make_tasks(chain()), 16).makespan == pytest.approx(5.5)


def streamed(segments: int = 2, join: float = 0.5, mux: float = 0.1) -> list[dict]:
    """Independent plans, each paint after its plan, each segment joined on the client
    after its paint and the join before, then the mux (a streamed join)."""
    records = []
    for n in range(segments):
        span = (n * 10, (n + 1) * 10)
        records.append(rec("plan", n, span, 1.0, []))
        records.append(rec("paint", n, span, 2.0, [f"plan-{n:05d}"]))
        records.append(rec("join", n, span, join,
                           [f"paint-{n:05d}", *([f"join-{n - 1:05d}"] if n else [])]))
    records.append(rec("mux", None, (0, segments * 10), mux, [f"join-{segments - 1:05d}"]))
    return records


def test_the_client_joins_beside_the_workers() -> None:
    # one worker: plan0 0-1, plan1 1-2 (bottom level 3.6 beats paint0's 3.1), paint0
    # 2-4, paint1 4-6; the client joins segment 0 at 4-4.5 while paint1 runs, segment
    # 1 at 6-6.5, the mux 6.5-6.6
    p = ps.simulate(ps.make_tasks(streamed()), 1)
    assert p.makespan == pytest.approx(6.6) and p.busy == pytest.approx(6.0)
    # joined at the end instead (one mux of both, 1.1): 6 + 1.1
    ended = [r for r in streamed() if r["kind"] not in ("join", "mux")] + [
        rec("mux", None, (0, 20), 1.1, ["paint-00000", "paint-00001"])]
    assert ps.simulate(ps.make_tasks(ended), 1).makespan == pytest.approx(7.1)
    # scaled: each copy's first join follows the last join of the copy before
    scaled = ps.scale_tasks(ps.make_tasks(streamed()), 60)
    head = next(t for t in scaled if t.id == "join-00000@1")
    assert "join-00001@0" in head.deps and "paint-00000@1" in head.deps
    assert sum(t.kind == "join" for t in scaled) == 6
    # a last copy cut short: the mux still waits for its last join
    short = ps.scale_tasks(ps.make_tasks(streamed()), 30)
    mux = next(t for t in short if t.kind == "mux")
    assert sorted(mux.deps) == ["join-00000@1", "join-00001@0"]


def test_the_executor_order_replays_the_renders() -> None:
    """``--order executor`` weighs each task as the render's executor does (frames:
    a shot's plan chain, a segment's paint and the joins from it on)."""
    from pipeline.planfile import Segment
    from pipeline.stages.painting import task_levels

    segs = [Segment(0, 0, 10, True), Segment(1, 10, 300, True), Segment(2, 310, 300),
            Segment(3, 610, 50, True)]
    records = []
    for s in segs:
        n, span = s.number, (s.start, s.start + s.count)
        records += [rec("plan", n, span, 1.0, [] if s.fresh else [f"plan-{n - 1:05d}"]),
                    rec("paint", n, span, 1.0, [f"plan-{n:05d}"]),
                    rec("join", n, span, 0.1, [f"paint-{n:05d}",
                                               *([f"join-{n - 1:05d}"] if n else [])])]
    levels = ps.executor_levels(ps.make_tasks(records))
    plans, paints = task_levels(segs)
    for n in range(4):
        assert levels[f"plan-{n:05d}"] == pytest.approx(plans[n])
        assert levels[f"paint-{n:05d}"] == pytest.approx(paints[n])
    assert max(plans, key=plans.get) == 1  # it heads 600 frames of plans
    # a long film: its first shots before a longer one at its end (the join reads the
    # film in order), where the longest shot first would take the last one first
    film = [Segment(n, 100 * n, 100, True) for n in range(999)] + [
        Segment(999, 99900, 120, True)]
    plans, paints = task_levels(film)
    assert plans[0] > plans[999] and paints[0] > paints[999]


def test_the_local_order_paints_once_two_segments_a_worker_wait() -> None:
    """``--order local``: plans first until two planned segments a worker wait, so the
    first paints, and the client's joins after them, start while the plan runs on."""
    records = []
    for n in range(4):
        span = (10 * n, 10 * n + 10)
        records += [rec("plan", n, span, 1.0, []), rec("paint", n, span, 1.0, [f"plan-{n:05d}"]),
                    rec("join", n, span, 2.0, [f"paint-{n:05d}",
                                               *([f"join-{n - 1:05d}"] if n else [])])]
    tasks = ps.make_tasks(records)
    # every plan first (0-4), the paints 4-8, the joins 5-7, 7-9, 9-11, 11-13
    assert ps.simulate(tasks, 1, "executor").makespan == pytest.approx(13.0)
    # plans 0-2, paint 0 2-3 (join 3-5), plan 3-4, paint 4-5 (join 5-7), plan 5-6,
    # paints 6-8 (joins 7-9, 9-11)
    assert ps.simulate(tasks, 1, "local").makespan == pytest.approx(11.0)


def test_independent_tasks_fill_the_workers() -> None:
    records = [rec("paint", n, (n, n + 1), 1.0, []) for n in range(5)]
    assert ps.simulate(ps.make_tasks(records), 2).makespan == pytest.approx(3.0)
    assert ps.simulate(ps.make_tasks(records), 5).makespan == pytest.approx(1.0)


def test_longest_path_first_beats_record_order() -> None:
    # two short tasks recorded first, one long one last: on 2 workers the long one
    # starts at once (makespan 4), not after a short one (which would give 5)
    records = [rec("paint", 0, (0, 1), 1.0, []), rec("paint", 1, (1, 2), 1.0, []),
               rec("paint", 2, (2, 3), 4.0, [])]
    assert ps.simulate(ps.make_tasks(records), 2).makespan == pytest.approx(4.0)


def test_wall_durations_and_transfer_at_a_bandwidth() -> None:
    records = [rec("plan", 0, (0, 10), 1.0, [], read={"bank": 2_000_000, "source": 10**9},
                   written={"chunk": 1_000_000}),
               rec("paint", 0, (0, 10), 2.0, ["plan-00000"], read={"chunk": 1_000_000},
                   written={"segment": 3_000_000})]
    # 1 MB/s: the plan moves 3 MB (bank + chunk; source is not transferred by default),
    # the paint 4 MB (chunk + segment)
    tasks = ps.make_tasks(records, bandwidth=1.0)
    assert [t.transfer for t in tasks] == [pytest.approx(3.0), pytest.approx(4.0)]
    assert ps.simulate(tasks, 4).makespan == pytest.approx(1 + 3 + 2 + 4)
    with_source = ps.make_tasks(records, bandwidth=1000.0, transfer=("source",))
    assert with_source[0].transfer == pytest.approx(1.0) and with_source[1].transfer == 0
    wall = ps.make_tasks(records, duration="wall")
    assert [t.compute for t in wall] == [pytest.approx(1.5), pytest.approx(3.0)]


def test_scaled_copies_as_one_stream_or_independent() -> None:
    tasks = ps.make_tasks(chain())  # 30 frames
    one_stream = ps.scale_tasks(tasks, 60)
    assert len(one_stream) == 2 * 6 + 1
    mux = next(t for t in one_stream if t.kind == "mux")
    assert mux.compute == pytest.approx(1.0)  # twice the frames: twice the mux
    assert "plan-00002@0" in next(t for t in one_stream if t.id == "plan-00000@1").deps
    # many workers: six chained plans, the last paint, the mux
    assert ps.simulate(one_stream, 64).makespan == pytest.approx(6 * 1 + 2 + 1)
    apart = ps.scale_tasks(tasks, 60, chained=False)
    assert ps.simulate(apart, 64).makespan == pytest.approx(3 * 1 + 2 + 1)
    # 1.5 x: the second copy cut to the segments starting in its first 15 frames
    part = ps.scale_tasks(tasks, 45)
    assert sorted(t.id for t in part if t.id.endswith("@1")) == [
        "paint-00000@1", "paint-00001@1", "plan-00000@1", "plan-00001@1"]
    assert max(t.frames[1] for t in part if t.kind == "paint") == 50


def test_any_task_kind_replays() -> None:
    # a later planner's graph: state-free feature tasks (2 s, no deps) feed the plan
    # chain (0.5 s each). On 3 workers: preps 0-2; plans 2-2.5, 2.5-3, 3-3.5; paints
    # 2.5-3.5, 3-4, 3.5-4.5; mux 4.5-5
    records = []
    for n in range(3):
        span = (10 * n, 10 * n + 10)
        records.append(rec("prep", n, span, 2.0, []))
        records.append(rec("plan", n, span, 0.5,
                           [f"prep-{n:05d}"] + ([f"plan-{n - 1:05d}"] if n else [])))
        records.append(rec("paint", n, span, 1.0, [f"plan-{n:05d}"]))
    records.append(rec("mux", None, (0, 30), 0.5, [f"paint-{n:05d}" for n in range(3)]))
    tasks = ps.make_tasks(records)
    assert ps.simulate(tasks, 3).makespan == pytest.approx(5.0)
    assert ps.simulate(tasks, 1).makespan == pytest.approx(3 * 2 + 3 * 0.5 + 3 + 0.5)
    scaled = ps.scale_tasks(tasks, 60)  # the mux waits for both copies' paints
    mux = next(t for t in scaled if t.kind == "mux")
    assert len(mux.deps) == 6 and all(d.startswith("paint-") for d in mux.deps)


def test_missing_deps_count_as_done_and_cycles_are_refused() -> None:
    # the plan was reused: paints whose plans are not recorded are ready at once
    paints = [rec("paint", n, (n, n + 1), 2.0, [f"plan-{n:05d}"]) for n in range(2)]
    assert ps.simulate(ps.make_tasks(paints), 2).makespan == pytest.approx(2.0)
    loop = [rec("paint", 0, (0, 1), 1.0, ["paint-00001"]),
            rec("paint", 1, (1, 2), 1.0, ["paint-00000"])]
    with pytest.raises(ValueError, match="cycle"):
        ps.simulate(ps.make_tasks(loop), 2)


def test_the_last_run_with_tasks_is_replayed(tmp_path: Path) -> None:
    records = [*chain(run="old"), *chain(plan=3.0, run="new"),
               rec("mux", None, (0, 30), 0.5, [], run="mux-only")]
    assert {r["run"] for r in ps.select_run(records)} == {"new"}
    assert {r["run"] for r in ps.select_run(records, "old")} == {"old"}
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = subprocess.run([sys.executable, str(SCRIPT), str(path), "--workers", "1", "2",
                           "--bandwidth", "0"], capture_output=True, text=True, check=True)
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()
            if line.split() and line.split()[0].isdigit()}
    # run "new": plans of 3 s: N=1 3*3 + 3*2 + 0.5 = 15.5; N=2: the plan chain, the last
    # paint, the mux = 9 + 2 + 0.5 = 11.5
    assert rows["1"][1:3] == ["15.5", "s"] and rows["2"][1:3] == ["11.5", "s"]
    assert "run new" in proc.stdout


def test_bad_input_is_one_line_error(tmp_path: Path) -> None:
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none.jsonl")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    assert len(missing.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"run": "a", "kind": "job"}\n')
    proc = subprocess.run([sys.executable, str(SCRIPT), str(empty)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "no plan or paint task records" in proc.stderr
