#!/usr/bin/env python3
"""CPU of sending raw frames to an ffmpeg encoder through its stdin pipe, at the pipe's
default size (64 KiB on Linux) and widened to 1 MiB (:func:`pipeline.processes.widen_pipe`,
what :class:`pipeline.encode.FrameWriter` does).

ffmpeg reads I420 frames of ``--size`` and throws them away (``-f null``), so the figure
is the pipe's own cost: our write plus ffmpeg's read, in CPU-ms a frame (this process's
and its child's user + system time). Runs alternate, default first.

    python scripts/bench_pipe.py --size 2560x1920 --frames 400 --runs 4
"""

from __future__ import annotations

import argparse
import fcntl
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.processes import PIPE_BYTES, widen_pipe
from pipeline.video import ffmpeg_command


def cpu() -> float:
    """User + system seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def send(width: int, height: int, frames: int, widen: bool) -> tuple[float, float]:
    """CPU-ms a frame and wall seconds of piping ``frames`` I420 frames to ffmpeg."""
    cmd = ffmpeg_command("-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
                         "-r", "25", "-i", "pipe:", "-f", "null", "-")
    frame = np.random.default_rng(0).integers(0, 256, (height * 3 // 2, width), np.uint8)
    view = memoryview(frame).cast("B")
    c, t = cpu(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if widen:
        widen_pipe(proc.stdin)
    for _ in range(frames):
        proc.stdin.write(view)
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit(f"ffmpeg failed: {' '.join(cmd)}")
    return (cpu() - c) / frames * 1000, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2560x1920", help="frame size WxH (default 2560x1920)")
    ap.add_argument("--frames", type=int, default=400, help="frames a run (default 400)")
    ap.add_argument("--runs", type=int, default=4, help="runs of each (default 4)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"{args.size}, {args.frames} frames a run; pipe widened to {PIPE_BYTES} bytes: "
          f"{'yes' if hasattr(fcntl, 'F_SETPIPE_SZ') else 'not on this system'}")
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs):
        for widen in (False, True):
            ms, wall = send(width, height, args.frames, widen)
            results[widen].append(ms)
            print(f"  {'1 MiB' if widen else 'default'}: {ms:.2f} CPU-ms a frame, "
                  f"{wall:.2f} s", flush=True)
    for widen, ms in results.items():
        print(f"{'1 MiB' if widen else 'default'}: median {np.median(ms):.2f} CPU-ms a frame "
              f"(min {min(ms):.2f}, max {max(ms):.2f})")


if __name__ == "__main__":
    main()
