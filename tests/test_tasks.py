"""Task records: every plan, paint and mux task of a render appends one whole JSON line to
the job's ``tasks.jsonl`` (kind, frames, CPU and wall seconds, bytes read and written)."""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path

import numpy as np

from pipeline.config import RenderConfig
from pipeline.paint import segment_path
from pipeline.planfile import chunk_path
from pipeline.stages.render import run_render
from pipeline.tasklog import TASKS, TaskClock, TaskLog, read_tasks

# 50 frames in segments of 20: 3 plan tasks, 3 paint tasks on 2 local workers, 1 mux
CONFIG = RenderConfig(scale=2, preset="ultrafast", segment_frames=20, cluster_batch_frames=8,
                      workers=2, encoder_threads=1)


def _covers(records: list[dict], first: int, end: int) -> bool:
    """Whether the records' frame ranges tile ``[first, end)`` in order, without gaps."""
    ranges = sorted(tuple(r["frames"]) for r in records)
    return ranges[0][0] == first and ranges[-1][1] == end and all(
        a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_render_records_every_task(clip_with_audio: Path, tile_index: Path,
                                   tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    run_render(str(clip_with_audio), tile_index, out, CONFIG, tmp_path / "cache",
               progress=False)
    work = next((tmp_path / "cache" / "render").iterdir())
    plan_dir = next((tmp_path / "cache" / "plans").iterdir())
    records = read_tasks(work / TASKS)
    assert len({r["run"] for r in records}) == 1
    kinds = [r["kind"] for r in records]
    assert kinds.count("job") == 1 and kinds.count("plan") == 3 and \
        kinds.count("paint") == 3 and kinds.count("join") == 3 and \
        kinds.count("mux") == 1 and len(records) == 11
    job = next(r for r in records if r["kind"] == "job")
    assert job["frames"] == [0, 50] and job["segments"] == 3 and job["workers"] == 2
    by_id = {r["id"]: r for r in records}
    plans = [r for r in records if r["kind"] == "plan"]
    paints = [r for r in records if r["kind"] == "paint"]
    assert _covers(plans, 0, 50) and _covers(paints, 0, 50)
    assert by_id["mux"]["frames"] == [0, 50] and records[-1]["kind"] == "mux"
    tile_bytes = int(np.prod(np.load(tile_index / "tiles.npy", mmap_mode="r").shape[1:]))
    for n in range(3):
        plan, paint = by_id[f"plan-{n:05d}"], by_id[f"paint-{n:05d}"]
        assert plan["deps"] == ([f"plan-{n - 1:05d}"] if n else [])  # carried over
        assert paint["deps"] == [f"plan-{n:05d}"] and not paint["cached"]
        chunk = chunk_path(plan_dir, n).stat().st_size
        assert plan["written"]["chunk"] == chunk and paint["read"]["chunk"] == chunk
        # the plan's decoded frames handed to the painter on this machine (BGR), not
        # decoded again (pipeline.stash)
        frames = paint["frames"][1] - paint["frames"][0]
        assert plan["written"]["stash"] == paint["read"]["stash"] == frames * 120 * 160 * 3
        assert "source" not in paint["read"]
        assert paint["written"] == {"segment": segment_path(work, n).stat().st_size}
        # the plan reads a tile's pixels once (its colour statistics are kept): a later
        # segment that places only tiles seen before reads none
        assert plan["read"]["bank"] >= (1 if n == 0 else 0)
        assert plan["read"]["bank"] % tile_bytes == 0
        assert paint["read"]["bank"] > 0 and paint["read"]["bank"] % tile_bytes == 0
        assert plan["read"]["source"] > 0
        for r in (plan, paint):
            assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["child_cpu_s"] >= 0
        # plans and paints run in worker processes, and a painter's encoder (a child it
        # waits for) is counted in its task
        assert plan["pid"] != os.getpid() and paint["pid"] != os.getpid()
        assert paint["child_cpu_s"] > 0
        assert paint["start"] >= plan["start"] + plan["wall_s"] - 0.01  # after its plan
    # the client joins each segment as it is painted, after the one before it
    for n in range(3):
        join, paint = by_id[f"join-{n:05d}"], by_id[f"paint-{n:05d}"]
        assert join["deps"] == [f"paint-{n:05d}", *([f"join-{n - 1:05d}"] if n else [])]
        assert join["read"] == {"segment": paint["written"]["segment"]}
        assert join["frames"] == paint["frames"] and join["pid"] == os.getpid()
        assert join["start"] >= paint["start"] + paint["wall_s"] - 0.01
    mux = by_id["mux"]
    assert mux["deps"] == ["join-00002"] and mux["read"] == {}
    assert mux["written"] == {"output": out.stat().st_size}

    # a rerun that only muxes again appends its own run; the first run's lines stay
    before = (work / TASKS).read_bytes()
    out.unlink()
    run_render(str(clip_with_audio), tile_index, out, CONFIG, tmp_path / "cache",
               progress=False)
    after = (work / TASKS).read_bytes()
    assert after.startswith(before)
    again = read_tasks(work / TASKS)[len(records):]
    assert [r["kind"] for r in again] == ["join"] * 3 + ["mux"]
    assert again[0]["run"] != records[0]["run"]


def test_task_log_lines_never_interleave(tmp_path: Path) -> None:
    log = TaskLog(tmp_path)
    payload = "x" * 20_000  # larger than a pipe buffer: a torn write would show

    def write(n: int) -> None:
        for i in range(50):
            log.append({"id": f"t{n}-{i}", "payload": payload})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / TASKS).read_text().splitlines()
    assert len(lines) == 300
    ids = {json.loads(line)["id"] for line in lines}
    assert len(ids) == 300 and all(json.loads(line)["payload"] == payload for line in lines)


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    log = TaskLog(tmp_path)
    record = TaskClock().record("plan", 0, (0, 10), [], {"bank": 3}, {"chunk": 5})
    log.append(record)
    with open(tmp_path / TASKS, "a") as f:
        f.write('{"run": "x", "kind": "pa')  # a kill mid-write
    got = read_tasks(tmp_path / TASKS)
    assert len(got) == 1 and got[0]["id"] == "plan-00000" and got[0]["read"] == {"bank": 3}
    assert got[0]["frames"] == [0, 10] and got[0]["run"] == log.run


def test_the_longest_planned_segment_is_painted_first() -> None:
    """A free local worker gets a segment to plan (the longest chain first) until two
    segments a worker are planned and waiting; then the longest of those is painted
    first (ties: the first), so a job does not end on a long segment painted alone."""
    from types import SimpleNamespace

    from pipeline.planfile import Segment
    from pipeline.stages.painting import _Run

    counts = [30, 50, 40, 50, 20, 45]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    segs = [Segment(i, int(s), c, fresh=True)
            for i, (s, c) in enumerate(zip(starts, counts, strict=True))]
    job = SimpleNamespace(segments=segs, to_paint=list(segs), plan_reused=False)
    run = _Run(job, SimpleNamespace(workers=2), bar=None)
    run.slots = 2  # two local workers
    run.to_plan = list(segs)
    assert run._next() == ("plan", segs[1])  # the longest chain, then the first
    run.running = {"a": ("plan", segs[1])}
    assert run._next() == ("plan", segs[3])
    # four planned and waiting (two a worker): paint the longest of them, the first of a tie
    for n in (0, 1, 2, 3):
        run.planned.add(n)
        run.to_plan.remove(segs[n])
    run.running = {}
    assert run._next() == ("paint", segs[1])
    del run.waiting[1]
    assert run._next() == ("plan", segs[5])  # three waiting: the plan goes first again
    run.to_plan = []
    assert run._next() == ("paint", segs[3])
