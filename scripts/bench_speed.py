#!/usr/bin/env python3
"""Whole-job speed of this tree against an earlier commit's, in one run, A B A B ...

Renders the first ``--frames`` frames of each VIDEO with this tree's code (A) and with
the code of ``--today DIR`` (B, an export of an earlier commit: ``git archive REV | tar
-x -C DIR``), alternately, ``--runs`` times each, every run in a fresh cache (so no plan
or segment is reused), with the default settings but the preset. It prints each run's
fps (frames over the whole command's wall time), the medians, and the median of the
pairwise ratios A/B (pairs run back to back: the figure that holds when a shared
machine's speed drifts).

    git archive 7ea8897 | tar -x -C /tmp/today
    python scripts/bench_speed.py .cache/media/bikes3x-640x480.mp4 \\
        --index .cache/media/photo-index-40k --today /tmp/today --frames 120 --preset slow
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render_seconds(src: Path, video: str, index: str, frames: int, preset: str,
                   sets: list[str]) -> float:
    """Wall seconds of one whole ``mosaic render`` with the code in ``src``."""
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        env = dict(os.environ, MOSAIC_CACHE=str(Path(tmp) / "cache"), PYTHONPATH=str(src))
        cmd = [sys.executable, "-m", "pipeline", "render", video, "--index", index, "--out",
               str(Path(tmp) / "out.mp4"), "--frames", str(frames), "--preset", preset, "-q",
               *(a for s in sets for a in ("--set", s))]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=src, env=env, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", metavar="VIDEO")
    ap.add_argument("--index", required=True)
    ap.add_argument("--today", type=Path, required=True, help="the earlier commit's tree")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--preset", default="slow")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="config override for both, e.g. render.workers=2")
    args = ap.parse_args()
    if not (args.today / "pipeline").is_dir():
        raise SystemExit(f"{args.today}: not a tree of this project (no pipeline/)")
    index = str(Path(args.index).resolve())
    print(f"machine: {os.cpu_count()} cores; {args.frames} frames, preset {args.preset}; "
          f"A = {ROOT}, B = {args.today}; {args.runs} runs each, alternating")
    shutil.rmtree(ROOT / ".cache" / "bench-speed", ignore_errors=True)
    for video in args.videos:
        a_fps, b_fps = [], []
        for _ in range(args.runs):
            for src, out in ((ROOT, a_fps), (args.today, b_fps)):
                out.append(args.frames / render_seconds(src, str(Path(video).resolve()),
                                                        index, args.frames, args.preset,
                                                        args.sets))
        ratios = [a / b for a, b in zip(a_fps, b_fps, strict=True)]
        print(f"{video}: A fps {' '.join(f'{v:.2f}' for v in a_fps)} (median "
              f"{statistics.median(a_fps):.2f}); B fps {' '.join(f'{v:.2f}' for v in b_fps)} "
              f"(median {statistics.median(b_fps):.2f}); A/B pairwise "
              f"{' '.join(f'{r:.2f}' for r in ratios)}, median {statistics.median(ratios):.2f}",
              flush=True)


if __name__ == "__main__":
    main()
