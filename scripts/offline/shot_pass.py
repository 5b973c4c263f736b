#!/usr/bin/env python3
"""The render's shot pass (:func:`pipeline.shots.find_cuts`) over a whole video in one
process, then in ranges on W workers for each W given: joblib's fresh processes
(:func:`~pipeline.shots.find_cuts_parallel`, what a job of 2,048 frames or more uses) and
the render's own workers forked from its server (:class:`pipeline.execute.LocalPool`),
one range per worker and four; wall seconds, and whether the cuts are the same. The
grid is a render's at x4 with 32-pixel tiles.

    python scripts/offline/shot_pass.py VIDEO 2 4 8 16
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    from pipeline.server import start_server
    from pipeline.stages import WORKER_MODULE
    start_server(WORKER_MODULE)  # as a render does, first
    from pipeline.config import RenderConfig
    from pipeline.execute import LocalPool
    from pipeline.grid import make_grid
    from pipeline.shots import find_cuts, find_cuts_parallel, split_even
    from pipeline.video import probe
    info = probe(sys.argv[1])
    grid = make_grid(info.height, info.width, (32, 32), 4)
    cut = RenderConfig().scene_cut
    time.sleep(1.5)  # the server loads, as while a render sets its job up
    t = time.perf_counter()
    one = find_cuts(info, grid, 0, info.frames, cut)
    print(f"shot pass, {info.frames} frames, one process: {time.perf_counter() - t:.2f} s")
    for w in map(int, sys.argv[2:]):
        for parts in (w, 4 * w):
            ranges = split_even(0, info.frames, parts)
            t = time.perf_counter()
            got = find_cuts_parallel(info, grid, ranges, cut, w)
            a = time.perf_counter() - t
            pool = LocalPool(w)  # the render's own workers, forked from the server
            t = time.perf_counter()
            futures = [pool.submit(find_cuts, info, grid, x, y, cut, key="") for x, y in ranges]
            own = sorted({c for f in futures for c in f.result()})
            print(f"  {w} workers, {parts} ranges: joblib {a:.2f} s, the render's workers "
                  f"{time.perf_counter() - t:.2f} s; same cuts: {got == own == one}")


if __name__ == "__main__":
    main()
