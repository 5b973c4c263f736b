#!/usr/bin/env python3
"""A lead for the candidate search, measured: the lists scanned query by query, compiled.

The plan's search (:func:`pipeline.search.search_lists`, 57-68% of a busy clip's plan
CPU) computes every (query, tile) distance of each probed list by matrix products, then
sorts each (query, list) row. This script measures a prototype that is not in the
pipeline: a numba kernel that scans each query's probed lists nearest first and skips
the tiles that cannot be among its ``k`` nearest by the triangle inequality. Each list's
members are sorted by their distance ``t`` to the list's centroid; a query at distance
``q`` from it can only gain a tile within ``|q - t| <= r``, ``r`` the square root of its
current ``k``-th distance (with a margin for rounding): a window of the sorted members,
found by two binary searches. The candidates are then re-measured as the pipeline does
(:func:`pipeline.search.exact_distances`).

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

import numba
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_plan

import pipeline.search as search

# reassociation and contraction let the 48-value sums vectorise; no "nnan"/"ninf": the
# kernel compares against inf
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


@numba.njit(nogil=True, fastmath=_FAST)
def _sq(q, f):  # pragma: no cover - compiled
    """Squared L2 distance of two rows (D,) float32."""
    s = np.float32(0)
    for d in range(q.shape[0]):
        x = q[d] - f[d]
        s += x * x
    return s


@numba.njit(nogil=True, fastmath=_FAST)
def scan_lists(queries, probes, offsets, sizes, members, feats, radial, centroids, k
               ):  # pragma: no cover - compiled
    """Each query's ``k`` nearest tiles in its probed lists, by (distance, id): ids (n, k)
    int64 (-1: none), and the (query, tile) pairs measured. ``members`` (M,) int64,
    ``feats`` (M, D) float32 and ``radial`` (M,) float32 (distance to the centroid) are
    the lists' members, each list sorted by ``radial``."""
    n = queries.shape[0]
    m = probes.shape[1]
    out = np.full((n, k), -1, np.int64)
    best_d = np.empty(k, np.float32)
    best_i = np.empty(k, np.int64)
    scratch = np.empty(max(1, sizes.max()), np.float32)
    dq = np.empty(m, np.float32)
    order = np.empty(m, np.int64)
    measured = 0
    for i in range(n):
        q = queries[i]
        for j in range(m):
            dq[j] = np.sqrt(_sq(q, centroids[probes[i, j]]))
            order[j] = j
        for a in range(1, m):  # nearest list first: the k-th distance falls soonest
            b = a
            while b > 0 and dq[order[b - 1]] > dq[order[b]]:
                order[b], order[b - 1] = order[b - 1], order[b]
                b -= 1
        best_d[:] = np.inf
        best_i[:] = -1
        for a in range(m):
            j = order[a]
            c = probes[i, j]
            s = offsets[c]
            e = s + sizes[c]
            lo, hi = s, e
            kth = best_d[k - 1]
            if kth < np.inf:  # the window: |q - t| <= r, with a margin for rounding
                r = np.sqrt(kth) * np.float32(1.0001) + dq[j] * np.float32(1e-4) \
                    + np.float32(1e-4)
                lo = s + np.searchsorted(radial[s:e], dq[j] - r)
                hi = s + np.searchsorted(radial[s:e], dq[j] + r, side="right")
            measured += hi - lo
            for t in range(lo, hi):  # the distances first (a loop that vectorises) ...
                scratch[t - lo] = _sq(q, feats[t])
            for t in range(lo, hi):  # ... then the few that enter the k best
                d = scratch[t - lo]
                if d <= best_d[k - 1]:
                    tid = members[t]
                    if d < best_d[k - 1] or tid < best_i[k - 1]:
                        b = k - 1
                        while b > 0 and (best_d[b - 1] > d
                                         or (best_d[b - 1] == d and best_i[b - 1] > tid)):
                            best_d[b] = best_d[b - 1]
                            best_i[b] = best_i[b - 1]
                            b -= 1
                        best_d[b] = d
                        best_i[b] = tid
        out[i] = best_i
    return out, measured


def sorted_lists(tiles, features: np.ndarray, centroids: np.ndarray) -> tuple:
    """The lists' members sorted by distance to their centroid: (offsets, sizes, members,
    features, radial), for :func:`scan_lists`."""
    members = tiles.members.astype(np.int64).copy()
    radial = np.empty(len(members), np.float32)
    for c in range(len(tiles.sizes)):
        lo, hi = tiles.offsets[c], tiles.offsets[c] + tiles.sizes[c]
        mem = members[lo:hi]
        d = np.sqrt(((features[mem] - centroids[c]) ** 2).sum(1)).astype(np.float32)
        order = np.argsort(d, kind="stable")
        members[lo:hi], radial[lo:hi] = mem[order], d[order]
    return (tiles.offsets.astype(np.int64), tiles.sizes.astype(np.int64), members,
            np.ascontiguousarray(features[members]), radial)


def record(video: str, index: str, frames: int, sets: list[str]) -> tuple[list, object]:
    """The search's inputs while planning ``frames`` frames: [(queries, probes, k)], and
    the engine's :class:`pipeline.search.TileSearch`."""
    calls: list = []
    searches: list = []
    plain, block = search.search_lists, search.TileSearch.block_search

    def recorded(queries, probes, tiles, features, k, grouped=None):
        calls.append((queries.copy(), probes.copy(), k))
        return plain(queries, probes, tiles, features, k, grouped)

    def seen(self, *args, **kwargs):
        if not searches:
            searches.append(self)
        return block(self, *args, **kwargs)

    search.search_lists, search.TileSearch.block_search = recorded, seen
    try:
        bench_plan.run(video, index, frames, 1, sets, "auto")
    finally:
        search.search_lists, search.TileSearch.block_search = plain, block
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
    lists = sorted_lists(tiles, feats, ts.centroids)
    threadpool_limits(1)
    q, p, k = calls[0]
    t = time.process_time()
    scan_lists(q[:4], p[:4], *lists, ts.centroids, k)
    compile_s = time.process_time() - t
    queries = sum(len(c[0]) for c in calls)
    print(f"{Path(args.video).name}: {len(calls)} search blocks, {queries} queries "
          f"({args.frames} frames, every orientation), {p.shape[1]} lists probed, k {k}; "
          f"{len(tiles.sizes)} lists of {np.median(tiles.sizes):.0f} tiles (median); "
          f"the kernel compiled in {compile_s:.1f} CPU-s", flush=True)
    for rnd in range(args.rounds):
        t_np = t_scan = 0.0
        differ = measured = pairs = 0
        for q, p, k in calls:
            t = time.process_time()
            ids0, _ = search.search_lists(q, p, tiles, feats, k, ts.grouped)
            t_np += time.process_time() - t
            t = time.process_time()
            ids1, seen = scan_lists(q, p, *lists, ts.centroids, k)
            ids1, _ = search.exact_distances(q, ids1, feats)
            t_scan += time.process_time() - t
            differ += int((ids0 != ids1).any(1).sum())
            measured += seen
            pairs += int(tiles.sizes[p].sum())
        print(f"round {rnd + 1}: search_lists {t_np:.3f} CPU-s, scanned {t_scan:.3f} "
              f"({t_np / t_scan:.2f}x); pairs measured {measured / pairs:.1%}; rows with "
              f"other candidates {differ} of {queries}", flush=True)


if __name__ == "__main__":
    main()
