"""Plan once, paint in parallel: identical output with 1 worker, 2 workers and a real
Dask cluster, on a multi-shot clip, whatever the plan's search threads; resilience to
killed workers and killed jobs; plans reused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_clip, make_shots

from pipeline.config import RenderConfig
from pipeline.grid import make_grid
from pipeline.output import scores_path
from pipeline.shots import find_cuts
from pipeline.stages.render import run_render
from pipeline.tasklog import TASKS, read_tasks
from pipeline.video import ffmpeg_exe, probe

# encoder threads fixed: x264's bitstream depends on its thread count, not on the workers
# shots of 16 frames or more planned on their own: the clip's four shots are four
# independent plan chains of two segments each
SMALL = RenderConfig(scale=2, preset="ultrafast", segment_frames=10, encoder_threads=1,
                     shot_frames=16)


def framemd5(path: Path) -> list[str]:
    """The decoded frames' MD5s (ffmpeg's framemd5 muxer), video stream only."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v",
                          "-f", "framemd5", "-"], capture_output=True, text=True, check=True)
    return [line.rsplit(",", 1)[1].strip() for line in out.stdout.splitlines()
            if line and not line.startswith("#")]


def scores_of(out: Path) -> dict:
    return json.loads(scores_path(out).read_text())["scores"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four shots of 20 frames with a tone: 80 frames, 8 segments of 10."""
    path = make_shots(tmp_path_factory.mktemp("scale") / "clip.mp4", seconds=0.8)
    info = probe(path)
    grid = make_grid(info.height, info.width, (32, 32), SMALL.scale)
    assert find_cuts(info, grid, 0, info.frames, SMALL.scene_cut) == [20, 40, 60]
    return path


@pytest.fixture(scope="module")
def single(clip: Path, tile_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one worker, a single stream of segments, one search thread."""
    tmp = tmp_path_factory.mktemp("single")
    out = tmp / "one.mp4"
    run_render(str(clip), tile_index, out,
               RenderConfig(**{**SMALL.__dict__, "workers": 1, "plan_threads": 1}),
               tmp / "cache", progress=False)
    return out


@pytest.fixture(scope="module")
def cluster():
    """A real Dask LocalCluster with 2 worker processes, one thread each."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc, Client(lc) as client:
        yield lc, client


def test_two_workers_equal_one(clip: Path, tile_index: Path, single: Path,
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.modes.MIN_THREAD_BLOCK", 8)  # the search really splits
    out = tmp_path / "two.mp4"
    report = run_render(str(clip), tile_index, out,
                        RenderConfig(**{**SMALL.__dict__, "workers": 2, "plan_threads": 3}),
                        tmp_path / "cache", progress=False)
    assert report.workers == 2 and report.rendered == 80
    assert framemd5(out) == framemd5(single)
    assert len(framemd5(out)) == 80
    assert scores_of(out) == scores_of(single)  # churn/flicker across boundaries included
    # each shot planned on its own, in the workers: a shot's first segment needs no
    # other plan, the next one continues it
    plan = next((tmp_path / "cache" / "plans").iterdir())
    assert json.loads((plan / "manifest.json").read_text())["shots"] == [0, 20, 40, 60]
    work = next((tmp_path / "cache" / "render").iterdir())
    plans = {r["segment"]: r for r in read_tasks(work / TASKS) if r["kind"] == "plan"}
    assert sorted(plans) == list(range(8))
    assert all(plans[n]["deps"] == ([] if n % 2 == 0 else [f"plan-{n - 1:05d}"])
               for n in plans)
    assert all(r["pid"] != os.getpid() for r in plans.values())


def test_workers_fitted_to_the_shots(clip: Path, tile_index: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """One 80-frame segment before the cut, four after it: the workers and encoder
    threads are fitted to the four (two workers of one thread on two cores), not to the
    one (one worker given both cores as encoder threads)."""
    monkeypatch.setattr("pipeline.execute.usable_cores", lambda: 2)
    config = RenderConfig(**{**SMALL.__dict__, "segment_frames": 80, "encoder_threads": 0,
                             "workers": 2})
    report = run_render(str(clip), tile_index, tmp_path / "o.mp4", config, tmp_path / "c",
                        progress=False)
    assert (report.workers, report.threads) == (2, 1)
    work = next((tmp_path / "c" / "render").iterdir())
    job = next(r for r in read_tasks(work / TASKS) if r["kind"] == "job")
    assert (job["segments"], job["workers"], job["threads"]) == (4, 2, 1)
    assert job["codec"][job["codec"].index("-threads") + 1] == "1"


def test_dask_cluster_equals_one_worker(clip: Path, tile_index: Path, single: Path,
                                        tmp_path: Path, cluster) -> None:
    lc, _ = cluster
    out = tmp_path / "dask.mp4"
    run_render(str(clip), tile_index, out, SMALL, tmp_path / "cache", progress=False,
               scheduler=lc.scheduler_address)
    assert framemd5(out) == framemd5(single)
    assert scores_of(out) == scores_of(single)
    # the painting really ran on the cluster's workers
    work = next((tmp_path / "cache" / "render").iterdir())
    assert len(list(work.glob("seg-*.json"))) == 8
    # their task records came back with the results, written here (tasks.jsonl)
    paints = [r for r in read_tasks(work / TASKS) if r["kind"] == "paint"]
    assert sorted(r["segment"] for r in paints) == list(range(8))
    assert all(r["pid"] != os.getpid() and r["cpu_s"] > 0 for r in paints)


def test_killed_dask_worker_is_replaced_and_output_identical(
        tile_index: Path, tmp_path: Path, cluster) -> None:
    lc, client = cluster
    clip = make_clip(tmp_path / "big.mp4", size="320x240", seconds=4)  # 100 frames
    config = RenderConfig(scale=4, preset="medium", segment_frames=50, encoder_threads=1)
    ref = tmp_path / "ref.mp4"
    run_render(str(clip), tile_index, ref, RenderConfig(**{**config.__dict__, "workers": 1}),
               tmp_path / "ref-cache", progress=False)
    out, errors = tmp_path / "dask.mp4", []

    def render() -> None:
        try:
            run_render(str(clip), tile_index, out, config, tmp_path / "cache", progress=False,
                       scheduler=lc.scheduler_address)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=render)
    thread.start()
    killed, deadline = None, time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        painting = [p for p in (tmp_path / "cache" / "render").glob("*/seg-*.progress")
                    if p.read_text().strip() not in ("", "0")]
        busy = [w for w, tasks in client.processing().items() if tasks]
        if painting and busy:  # a worker is mid-segment: kill its process
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.02)
    thread.join(timeout=240)
    assert killed is not None, "no worker was caught mid-segment"
    assert not errors, errors
    assert framemd5(out) == framemd5(ref)
    assert scores_of(out) == scores_of(ref)


def _job(clip: Path, index: Path, out: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(_command(clip, index, out), start_new_session=True,
                            env={**os.environ, "MOSAIC_CACHE": str(cache)})


def _command(clip: Path, index: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "render", str(clip), "--index", str(index),
           "--out", str(out), "--scale", "2", "--preset", "ultrafast", "--quiet",
           "--workers", "2", "--set", "render.segment_frames=10",
           "--set", "render.encoder_threads=1"]


def _snapshot(cache: Path) -> dict[str, tuple[int, int]]:
    """Finished plan chunks and segments: path -> (inode, mtime) (rewrites show).

    A segment is finished once its record (seg-N.json, written last) exists: a video
    renamed into place just before a kill, without its record, was still in flight.
    """
    files = [*cache.glob("plans/*/chunk-*.npz"), *cache.glob("render/*/seg-*.json"),
             *(p for p in cache.glob("render/*/seg-*.mp4") if p.with_suffix(".json").exists())]
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


def _kill_when(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, f"the job finished before it was {what}"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_mid_plan_then_mid_paint_resumes_identically(tile_index: Path, single: Path,
                                                             clip: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "killed.mp4"
    long_clip = make_clip(tmp_path / "long.mp4", seconds=8)  # 200 frames, 20 segments
    proc = _job(long_clip, tile_index, out, cache)
    _kill_when(proc, lambda: len(list(cache.glob("plans/*/chunk-*.npz"))) >= 2,
               "killed mid-plan")
    assert not list(cache.glob("plans/*/manifest.json")) and not out.exists()
    before = _snapshot(cache)
    assert len([p for p in before if p.endswith(".npz")]) < 20

    proc = _job(long_clip, tile_index, out, cache)
    _kill_when(proc, lambda: list(cache.glob("plans/*/manifest.json")) and
               len(list(cache.glob("render/*/seg-*.json"))) >= 3, "killed mid-paint")
    middle = _snapshot(cache)
    assert all(middle.get(p) == v for p, v in before.items()), "finished work was redone"
    segments_done = len(list(cache.glob("render/*/seg-*.json")))
    assert 3 <= segments_done < 20 and not out.exists()

    subprocess.run(_command(long_clip, tile_index, out),
                   env={**os.environ, "MOSAIC_CACHE": str(cache)}, check=True, timeout=300)
    after = _snapshot(cache)
    assert all(after.get(p) == v for p, v in middle.items()), "finished work was redone"
    clean = tmp_path / "clean.mp4"
    run_render(str(long_clip), tile_index, clean, RenderConfig(**{**SMALL.__dict__,
               "workers": 1}), tmp_path / "clean-cache", progress=False)
    assert framemd5(out) == framemd5(clean)
    assert len(framemd5(out)) == 200
    assert scores_of(out) == scores_of(clean)


def test_paint_only_change_reuses_the_plan(clip: Path, tile_index: Path, tmp_path: Path,
                                           run_cli, monkeypatch) -> None:
    monkeypatch.setenv("MOSAIC_CACHE", str(tmp_path / "cache"))
    args = ["render", clip, "--index", tile_index, "--scale", "2", "--preset", "ultrafast",
            "--set", "render.segment_frames=10"]
    assert run_cli(*args, "--out", tmp_path / "a.mp4")[0] == 0
    chunks = _snapshot(tmp_path / "cache")
    for extra in (["--alpha", "0"], ["--set", "render.crf=30"], ["--preset", "veryfast"],
                  ["--set", "render.tone=1"]):
        code, _, err = run_cli(*args, *extra, "--out", tmp_path / f"{extra[-1]}.mp4")
        assert code == 0, err
        assert "reusing the plan" in err and "plan reused" in err
        assert {p: v for p, v in _snapshot(tmp_path / "cache").items()
                if "chunk-" in p} == {p: v for p, v in chunks.items() if "chunk-" in p}
    # a planning option does re-plan
    code, _, err = run_cli(*args, "--set", "render.hysteresis=0.5", "--out", tmp_path / "h.mp4")
    assert code == 0 and "reusing the plan" not in err
    assert len(list((tmp_path / "cache" / "plans").iterdir())) == 2


def test_index_decode_shards_on_dask_equal_local(sample_corpus_master: Path, tmp_path: Path,
                                                 cluster) -> None:
    from pipeline.config import IndexConfig
    from pipeline.stages.index import run_index

    lc, _ = cluster
    config = IndexConfig(clusters=8, jobs=1, shard_size=40)
    run_index(sample_corpus_master, tmp_path / "local", config, progress=False)
    run_index(sample_corpus_master, tmp_path / "dask", config, progress=False,
              scheduler=lc.scheduler_address)
    for name in ("tiles.npy", "features_hist.npy", "features_lab.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "local" / name),
                                      np.load(tmp_path / "dask" / name))


def test_unreachable_scheduler_is_one_line(clip: Path, tile_index: Path, tmp_path: Path,
                                          run_cli, monkeypatch) -> None:
    monkeypatch.setattr("pipeline.execute.CONNECT_TIMEOUT", "2s")
    code, _, err = run_cli("render", clip, "--index", tile_index, "--out", tmp_path / "o.mp4",
                           "--scheduler", "tcp://127.0.0.1:9", "-q")
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert not (tmp_path / "o.mp4").exists()
