#!/usr/bin/env python3
"""Renders on 1..N workers, each pinned to as many cores, beside the scaling simulation.

Each worker count N is one fresh job (its own cache: nothing reused), started the way
users start it, ``python -m pipeline render VIDEO ... --workers N``, under ``taskset -c
0-(N-1)`` so that the job, its encoders and its decoders have N cores: an N-core box.
For each run it prints the wall time, the span of its tasks (the first task's start to
the last's end, as ``tasks.jsonl`` records it), the CPU of its plan and paint tasks, the
speed-up over the first run and the output's MD5 (the same on any number of workers).

Then ``scripts/project_scale.py``'s list-scheduling simulation replays the records of
one run (``--simulate-from``, default the first: the fewest workers, the least
contended durations) for every N measured, and the table sets the simulated makespan
beside the measured span. The records are kept in ``--records`` (default
``.cache/scale-records``, outside what git tracks) as
``tasks-<preset>-<N>.jsonl`` for later projections.

``--budget`` stops starting runs once that many seconds have passed (a lease that ends).

    python scripts/bench_workers.py .cache/media/multishot-640x480.mp4 \\
        --index .cache/media/photo-index-40k --workers 1 2 --preset ultrafast
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from project_scale import make_tasks, recorded_span, simulate  # noqa: E402

from pipeline.tasklog import read_tasks  # noqa: E402


def md5(path: Path) -> str:
    """The file's MD5, hex."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_one(args: argparse.Namespace, workers: int, work: Path) -> dict:
    """One fresh render on ``workers`` workers pinned to as many cores; its figures."""
    job = work / f"{args.preset}-{workers}"
    job.mkdir(parents=True)
    out = job / "out.mp4"
    cmd = [sys.executable, "-m", "pipeline", "render", str(args.video), "--index",
           str(args.index), "--out", str(out), "--scale", str(args.scale), "--preset",
           args.preset, "--workers", str(workers), "--quiet", *args.extra]
    if args.frames:
        cmd += ["--frames", str(args.frames)]
    if args.pin:
        cmd = ["taskset", "-c", f"0-{workers - 1}", *cmd]
    env = dict(os.environ, MOSAIC_CACHE=str(job / "cache"))
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"render on {workers} workers failed ({done.returncode}): "
                         f"{done.stderr.strip()[-2000:]}")
    found = sorted((job / "cache").glob("render/*/tasks.jsonl"))
    if len(found) != 1:
        raise SystemExit(f"expected one tasks.jsonl under {job / 'cache'}, found {found}")
    kept = args.records / f"tasks-{args.preset}-{workers}.jsonl"
    shutil.copyfile(found[0], kept)
    records = read_tasks(kept)
    cpu = {k: sum(r["cpu_s"] + r.get("child_cpu_s", 0.0) for r in records
                  if r.get("kind") == k) for k in ("plan", "paint")}
    figures = {"workers": workers, "wall": wall, "span": recorded_span(records),
               "plan": cpu["plan"], "paint": cpu["paint"], "md5": md5(out),
               "records": str(kept)}
    shutil.rmtree(job / "cache", ignore_errors=True)
    out.unlink()
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames", type=int, default=0, help="0: the whole video")
    ap.add_argument("--scale", type=float, default=4)
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin N workers to N cores")
    ap.add_argument("--records", type=Path, default=Path(".cache/scale-records"))
    ap.add_argument("--simulate-from", type=int,
                    help="the worker count whose records the simulation replays "
                         "(default: the first run's)")
    ap.add_argument("--budget", type=float, default=0,
                    help="start no run after this many seconds (0: no limit)")
    ap.add_argument("--set", dest="extra", action="append", default=[],
                    type=lambda s: f"--set={s}", help="render option SECTION.KEY=VALUE")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    if args.pin and shutil.which("taskset") is None:
        ap.error("taskset (util-linux) is not installed: install it, or pass --no-pin")
    if min(args.workers) < 1 or args.frames < 0:
        ap.error("--workers must be >= 1 and --frames >= 0")
    if args.pin and max(args.workers) > cores:
        ap.error(f"--workers {max(args.workers)} needs that many cores; this process has "
                 f"{cores} (or pass --no-pin)")
    args.records.mkdir(parents=True, exist_ok=True)
    begun, runs = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        for n in args.workers:
            if args.budget and time.perf_counter() - begun > args.budget:
                print(f"budget of {args.budget:g} s spent: no run on {n} workers")
                continue
            runs.append(run_one(args, n, Path(tmp)))
            r = runs[-1]
            print(f"{args.preset} {n:>3} workers: wall {r['wall']:7.1f} s  span "
                  f"{r['span']:7.1f} s  CPU plan {r['plan']:7.1f} paint {r['paint']:7.1f}  "
                  f"md5 {r['md5']}", flush=True)
    if not runs:
        return 1
    base = next((r for r in runs if r["workers"] == args.simulate_from), runs[0])
    tasks = make_tasks(read_tasks(Path(base["records"])), "cpu", None)
    print(f"\n{args.video.name}, {args.frames or 'all'} frames, x{args.scale:g}, preset "
          f"{args.preset}; simulation from the {base['workers']}-worker run's CPU seconds")
    print(f"{'N':>4} {'wall':>8} {'span':>8} {'speed-up':>9} {'simulated':>10} "
          f"{'sim/span':>9}")
    for r in runs:
        sim = simulate(tasks, r["workers"]).makespan
        print(f"{r['workers']:>4} {r['wall']:8.1f} {r['span']:8.1f} "
              f"{runs[0]['wall'] / r['wall']:8.2f}x {sim:10.1f} {sim / r['span']:9.2f}")
    same = len({r["md5"] for r in runs}) == 1
    print("outputs " + ("identical" if same else "DIFFER") + " across worker counts")
    (args.records / f"runs-{args.preset}.json").write_text(json.dumps(runs, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
