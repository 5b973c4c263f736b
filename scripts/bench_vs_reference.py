#!/usr/bin/env python3
"""Whole-job speed of our render against the reference notebook's, in one run.

Renders the first ``--frames`` frames of VIDEO ``--runs`` times with each, alternating
(ours, reference, reference, ours, ...: each pair in both orders, so neither always runs
on a machine warmed, or slowed, by the other), each run a whole command in a fresh
process:

* ours: ``mosaic render VIDEO --index DIR --frames N --scale S --preset P`` in a fresh
  cache (no plan or segment reused), the default settings otherwise (scores on);
* the reference: ``scripts/reference_render.py`` (the notebook's loop as written: mp4v
  output, tiles read from PNG files per placement), on the same index's tiles. Its
  one-time step (the tiles written as PNG files) runs before the first run, untimed.

fps is frames over the command's wall time. It prints every run, the medians and the
median of the pairwise ratios ours / reference (the figure that holds when a shared
machine's speed drifts). Both outputs are probed: each must hold N frames.

    python scripts/bench_vs_reference.py .cache/media/bikes3x-640x480.mp4 \\
        --index .cache/media/photo-index-40k --frames 120 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.video import probe

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "scripts" / "reference_render.py"


def run_timed(cmd: list[str], env: dict | None = None) -> float:
    """Wall seconds of one command (its output hidden; a failure stops the benchmark)."""
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return elapsed


def ours(video: str, index: str, frames: int, args: argparse.Namespace, tmp: Path) -> float:
    """Wall seconds of one ``mosaic render`` in a fresh cache."""
    out = tmp / "ours.mp4"
    env = dict(os.environ, MOSAIC_CACHE=str(tmp / "cache"))
    cmd = [sys.executable, "-m", "pipeline", "render", video, "--index", index, "--out",
           str(out), "--frames", str(frames), "--scale", str(args.scale), "--preset",
           args.preset, "-q", *(a for s in args.sets for a in ("--set", s))]
    seconds = run_timed(cmd, env)
    check_frames(out, frames)
    return seconds


def reference(video: str, index: str, frames: int, args: argparse.Namespace,
              tmp: Path) -> float:
    """Wall seconds of one reference render."""
    out = tmp / "reference.mp4"
    cmd = [sys.executable, str(REFERENCE), video, "--index", index, "--out", str(out),
           "--frames", str(frames), "--scale", str(args.scale), "--tiles-dir",
           str(args.tiles_dir)]
    seconds = run_timed(cmd)
    check_frames(out, frames)
    return seconds


def check_frames(path: Path, frames: int) -> None:
    got = probe(path).frames
    if got != frames:
        raise SystemExit(f"{path}: {got} frames where {frames} were rendered")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--index", required=True, help="tile index directory (both use it)")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--runs", type=int, default=3, help="runs of each, alternating")
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--preset", default="ultrafast", help="our encoder preset")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="config override for ours, e.g. render.workers=2")
    ap.add_argument("--tiles-dir", type=Path, default=ROOT / ".cache" / "reference-tiles",
                    help="the reference's tile PNG files (written once per index)")
    args = ap.parse_args()
    info = probe(args.video)
    frames = min(args.frames, info.frames)
    video, index = str(Path(args.video).resolve()), str(Path(args.index).resolve())
    subprocess.run([sys.executable, str(REFERENCE), video, "--index", index, "--out",
                    "unused.mp4", "--tiles-dir", str(args.tiles_dir), "--prepare-only"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {video} "
          f"{info.width}x{info.height}, {frames} frames at x{args.scale:g}; ours preset "
          f"{args.preset} {' '.join(args.sets)}; {args.runs} runs each, alternating")
    fps: dict[str, list[float]] = {"ours": [], "reference": []}
    ratios = []
    (ROOT / ".cache").mkdir(exist_ok=True)
    for run in range(args.runs):
        order = [("ours", ours), ("reference", reference)]
        for name, fn in order if run % 2 == 0 else order[::-1]:
            with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
                seconds = fn(video, index, frames, args, Path(tmp))
            fps[name].append(frames / seconds)
            print(f"run {run + 1} {name:9s}: {seconds:7.1f} s = {fps[name][-1]:6.2f} fps",
                  flush=True)
        ratios.append(fps["ours"][-1] / fps["reference"][-1])
    print(f"median fps: ours {statistics.median(fps['ours']):.2f}, reference "
          f"{statistics.median(fps['reference']):.2f}; ours / reference: median of the "
          f"pairwise ratios {statistics.median(ratios):.2f}x "
          f"({', '.join(f'{r:.2f}' for r in ratios)}); load now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
