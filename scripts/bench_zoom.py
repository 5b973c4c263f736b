#!/usr/bin/env python3
"""Benchmark ``mosaic zoom``: a 10 s 1920x1080 30 fps zoom from a 150x100-cell mosaic.

Runs the command as a subprocess, the way users run it, and prints the wall time with
the steps the command reports, the peak RSS of its process tree (the pipeline and its
ffmpeg encoder, sampled from /proc), the CPU seconds of each, and the load average
around the run (the machine is shared: a load above its core count means the wall time
is pessimistic). A 3:2 image with ``--fit contain`` gives exactly ``cells x (cells *
2/3)`` cells; ``--repeat`` runs it that many times and reports each.

    python scripts/bench_zoom.py --index .cache/media/photo-index-40k \\
        --image .cache/media/backgrounds/nature-Storm.jpg --cells 150
    python scripts/bench_zoom.py --index DIR --image IMG --cells 300 --preset medium
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import TreeRss, mib


def run(cmd: list[str]) -> dict:
    """Run ``cmd`` while sampling its process tree; the figures of the run."""
    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    rss = TreeRss(proc.pid)
    _, err = proc.communicate()
    elapsed = time.perf_counter() - start
    peak = rss.stop()
    if proc.returncode != 0:
        sys.exit(f"mosaic zoom failed ({proc.returncode}): {err.strip()[-500:]}")
    summary = [line for line in err.splitlines() if line.startswith(("zoom of", "mosaic 1"))]
    return {"seconds": elapsed, "peak": peak, "root": rss.peak_root,
            "children": rss.peak_children, "cpu_own": rss.cpu_own,
            "cpu_encoder": rss.cpu_encoder, "load": (load0, os.getloadavg()[0]),
            "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="tile index directory")
    ap.add_argument("--image", type=Path, required=True, help="the picture (3:2 for "
                    "cells x cells*2/3 with --fit contain)")
    ap.add_argument("--cells", type=int, default=150, help="cells across (default 150)")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--fps", default="30")
    ap.add_argument("--hold", type=float, default=0.0, help="default 0: all frames move")
    ap.add_argument("--fit", default="contain")
    ap.add_argument("--preset", help="x264 preset (default: the command's)")
    ap.add_argument("--target", type=Path, help="the photo to land on")
    ap.add_argument("--out", type=Path, help="keep the video here (default: temporary)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zoom-") as tmp:
        out = args.out or Path(tmp) / "zoom.mp4"
        cmd = [sys.executable, "-m", "pipeline", "zoom", str(args.image), "--index",
               str(args.index), "--out", str(out), "--cells", str(args.cells), "--size",
               args.size, "--duration", str(args.duration), "--fps", args.fps, "--hold",
               str(args.hold), "--fit", args.fit,
               *(["--preset", args.preset] if args.preset else []),
               *(["--target", str(args.target)] if args.target else [])]
        print(f"command: {' '.join(cmd[1:])}")
        for i in range(args.repeat):
            r = run(cmd)
            for line in r["summary"]:
                print(line)
            print(f"run {i + 1}: {r['seconds']:.1f} s end to end; peak RSS of the process "
                  f"tree {mib(r['peak'])} (pipeline {mib(r['root'])}, encoder "
                  f"{mib(r['children'])}); CPU {r['cpu_own']:.1f} s pipeline + "
                  f"{r['cpu_encoder']:.1f} s encoder; load average {r['load'][0]:.1f} "
                  f"before, {r['load'][1]:.1f} after ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
