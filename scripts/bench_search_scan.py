#!/usr/bin/env python3
"""The candidate search's two forms, measured: the compiled scan against the matrix products.

The plan's search is most of a busy clip's plan CPU. :func:`pipeline.search.search_lists`
(numpy, where numba does not load) measures every (query, tile) pair of each probed list
by matrix products and sorts each (query, list) row; :func:`pipeline.scan.scan_lists`
(compiled, the default) scans each query's lists nearest first and measures only the
members the triangle inequality leaves possible (a window of each list, its members
sorted by their distance to the centroid), eight at a time with numpy's bits
(:mod:`pipeline.distances`); the products' candidates are re-measured one by one
(:func:`pipeline.search.exact_distances`), as :meth:`pipeline.search.TileSearch.block_search`
does.

It records the search's inputs while planning the first ``--frames`` frames of VIDEO
(:func:`bench_plan.run`: the render's defaults), then times both on them, alternating,
on one BLAS thread (as a render's workers run), and prints the CPU seconds, the share
of (query, tile) pairs the prototype measures, and the rows whose candidates differ
(near-ties at the ``k``-th place: the products and the kernel's sums round apart).

    python scripts/bench_search_scan.py .cache/media/bikes3x-640x480.mp4 \\
        --index .cache/media/photo-index-40k --frames 24
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_plan

import pipeline.search as search
from pipeline.scan import _SLACK, scan_lists, warm


def record(video: str, index: str, frames: int, sets: list[str]) -> tuple[list, object]:
    """The search's inputs while planning ``frames`` frames: [(queries, probes, k,
    bound)] (bound None: none; the second orientation's is the first's ``k``-th), and
    the engine's :class:`pipeline.search.TileSearch`."""
    calls: list = []
    searches: list = []
    block = search.TileSearch.block_search

    def recorded(self, queries, k, nprobe, probes=None, compiled=None, bound=None):
        if probes is None:
            probes = search.top_clusters_by_l2(queries, self.centroids, nprobe)
        calls.append((np.ascontiguousarray(queries, np.float32), probes.astype(np.int64), k,
                      bound))
        if not searches:
            searches.append(self)
        return block(self, queries, k, nprobe, probes, compiled, bound)

    search.TileSearch.block_search = recorded
    try:
        bench_plan.run(video, index, frames, 1, sets, "auto")
    finally:
        search.TileSearch.block_search = block
    return calls, searches[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--index", required=True)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    calls, ts = record(args.video, args.index, args.frames, args.sets)
    tiles, feats = ts.tiles, ts.features
    threadpool_limits(1)
    warm()
    lists = ts.sorted
    arrays = (lists.offsets, lists.sizes, lists.first_block, lists.block_ids, lists.blocks,
              lists.radial, lists.centroids)
    q, p, k, _ = calls[0]
    queries = sum(len(c[0]) for c in calls)
    print(f"{Path(args.video).name}: {len(calls)} search blocks, {queries} queries "
          f"({args.frames} frames, every orientation), {p.shape[1]} lists probed, k {k}; "
          f"{len(tiles.sizes)} lists of {np.median(tiles.sizes):.0f} tiles (median)", flush=True)
    for rnd in range(args.rounds):
        t_np = t_scan = 0.0
        differ = measured = pairs = 0
        for q, p, k, bound in calls:
            t = time.process_time()
            ids0, _ = search.search_lists(q, p, tiles, feats, k, ts.grouped)
            t_np += time.process_time() - t
            t = time.process_time()
            ids1, _, seen = scan_lists(q, p, *arrays, k, np.full(len(q), np.inf, np.float32)
                                       if bound is None else bound)
            t_scan += time.process_time() - t
            if bound is not None:  # the products keep what lies beyond the bound
                ids0, d0 = search.exact_distances(q, ids0, feats)
                limit = bound * (1 + _SLACK) + _SLACK  # the kernel's, margin included
                ids0 = np.where(d0 > limit[:, None], -1, ids0)
            differ += int((ids0 != ids1).any(1).sum())
            measured += seen
            pairs += int(tiles.sizes[p].sum())
        print(f"round {rnd + 1}: search_lists {t_np:.3f} CPU-s, scanned {t_scan:.3f} "
              f"({t_np / t_scan:.2f}x); pairs measured {measured / pairs:.1%}; rows with "
              f"other candidates {differ} of {queries}", flush=True)


if __name__ == "__main__":
    main()
