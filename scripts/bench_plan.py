#!/usr/bin/env python3
"""Where the plan's CPU goes, per frame: the sequential step against the state-free work.

Plans the first ``--frames`` frames of each VIDEO with the planner engine
(:class:`pipeline.plan.PlanEngine`, the render's defaults but the ``--set`` options), the
frames decoded beforehand (decoding is not counted), and splits its CPU seconds:

* **decide** (sequential): settling, drift and cuts, frame by frame;
* **apply** (sequential): the choice (hysteresis, variety rules, quiet switches and
  recolours) and the placed tiles' colour differences and contrast ratios;
* **mask**: the activity mask, a chain of its own over the frames (nothing the choice
  does touches it), run as the planner runs it: on a thread of its own, a batch ahead
  of the choice (:meth:`pipeline.plan.PlanEngine.marked`);
* **state-free**: everything else, mostly the candidate search (cell views, search
  features, the search in every orientation), run on ``render.plan_threads`` threads
  (on the main thread too where a batch has a single block).

The sequential parts and the mask are their threads' own CPU time inside those calls
(``time.thread_time``); the state-free part is the process's CPU time minus them. It
prints, per clip and thread count, the wall and CPU milliseconds per frame of each part,
the sequential share, and a digest of the plan (the same on any number of threads).

    python scripts/bench_plan.py .cache/media/bikes3x-1280x720.mp4 \\
        --index .cache/media/photo-index-40k --frames 64 --threads 1 2
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.ahead import run_ahead
from pipeline.config import load_config
from pipeline.grid import make_grid
from pipeline.index import load_index
from pipeline.plan import PlanEngine
from pipeline.video import prefetch_frames, probe


class Timed:
    """Wraps an engine method: the main thread's CPU seconds spent in it."""

    def __init__(self, fn) -> None:
        self.fn, self.cpu = fn, 0.0

    def __call__(self, *args, **kwargs):
        t = time.thread_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.cpu += time.thread_time() - t


def run(video: str, index_dir: str, frames: int, threads: int, sets: list[str],
        rules: str = "auto") -> dict:
    """Plan ``frames`` frames; the parts' CPU seconds, the wall seconds and the digest.
    ``rules``: the variety rules as the render runs them (auto: numpy for a process's
    first :data:`pipeline.assign.COMPILE_AFTER` cells), compiled, or numpy."""
    config = replace(load_config(None, sets).render, plan_threads=threads)
    index = load_index(index_dir)
    info = probe(video)
    grid = make_grid(info.height, info.width, index.tiles.shape[1:3], config.scale,
                     config.max_width, config.max_height)
    engine = PlanEngine(grid, index, config)
    load = 0.0
    assigner = getattr(engine.mode, "assigner", None)
    if assigner is not None and rules != "auto":
        assigner.compiled = rules == "compiled"
        if assigner.compiled:  # numba's one-time load, apart from the frames' CPU
            load = time.process_time()
            from pipeline.rules import warm
            warm()
            load = time.process_time() - load
    decoded = list(prefetch_frames(info, 0, min(frames, info.frames), exact=True))
    engine.decide = decide = Timed(engine.decide)
    engine.apply = apply = Timed(engine.apply)
    digest = hashlib.sha256()
    batch = config.cluster_batch_frames
    with threadpool_limits(1, user_api="blas"):  # as the render's plan stage runs it
        state = engine.start()
        tracker = state.activity.mask
        tracker.update = mask = Timed(tracker.update)
        wall, cpu = time.perf_counter(), time.process_time()
        inputs = run_ahead(iter(decoded), partial(engine.marked, state), batch, "mask")
        for b0 in range(0, len(decoded), batch):
            block = [next(inputs) for _ in range(min(batch, len(decoded) - b0))]
            changes, state = engine.plan(state, block)
            for c in changes:
                for part in (c.cells, c.ids, c.orients, c.diffs, c.ratios):
                    digest.update(np.ascontiguousarray(part).tobytes())
        inputs.close()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"frames": len(decoded), "grid": (grid.rows, grid.cols), "wall": wall, "cpu": cpu,
            "decide": decide.cpu, "apply": apply.cpu, "mask": mask.cpu,
            "digest": digest.hexdigest()[:16], "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", metavar="VIDEO")
    ap.add_argument("--index", required=True)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rules", choices=("auto", "compiled", "numpy"), default="auto",
                    help="the variety rules: as a render runs them (auto), or forced")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a render option, as `mosaic render --set` takes it")
    args = ap.parse_args()
    for video in args.videos:
        for threads in args.threads:
            r = run(video, args.index, args.frames, threads, args.sets, args.rules)
            n = r["frames"]

            def ms(seconds: float, n: int = n) -> float:
                return 1000 * seconds / n

            seq = r["decide"] + r["apply"]
            free = r["cpu"] - seq - r["mask"]
            print(f"{Path(video).name} {r['grid'][0]}x{r['grid'][1]} cells, {n} frames, "
                  f"{threads} thread(s): wall {ms(r['wall']):.0f} ms/frame, CPU "
                  f"{ms(r['cpu']):.0f} ms/frame = sequential {ms(seq):.1f} (decide "
                  f"{ms(r['decide']):.1f}, apply {ms(r['apply']):.1f}) + mask (ahead) "
                  f"{ms(r['mask']):.1f} + state-free {ms(free):.1f}; sequential share "
                  f"{seq / r['cpu']:.0%}; "
                  f"rules {args.rules}" + (f" (loaded once: {r['load']:.2f} CPU-s)"
                                           if r["load"] else "")
                  + f"; plan {r['digest']}", flush=True)


if __name__ == "__main__":
    main()
