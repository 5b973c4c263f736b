"""The candidate search's lists scanned query by query, compiled (numba).

:func:`pipeline.search.search_lists` measures every tile of every probed list against
every query by matrix products and sorts each (query, list) row. Most of those tiles
cannot be among a query's ``k`` nearest, and the triangle inequality says which: a tile
at distance ``t`` from its list's centroid, and a query at distance ``q`` from it, are at
least ``|q - t|`` apart. :func:`scan_lists` takes a query's probed lists nearest centroid
first (its ``k``-th distance falls soonest) and, once it holds ``k`` candidates, measures
in each list only the window of members with ``|q - t| <= r``, ``r`` the square root of
its ``k``-th distance (with a margin for rounding): two binary searches, the members
being sorted by ``t`` (:class:`SortedLists`). On a busy clip's cells it measures about
40% of the (query, tile) pairs (whole blocks of eight), in about a fifth of the matrix
products' CPU.

Each distance is summed as numpy sums a short row (:func:`pipeline.distances.row_sq`:
eight interleaved partial sums, then pairs of them, then the rest), eight tiles at once
(:func:`pipeline.distances.block_sq`, the members' features stored in blocks of eight):
the bits the numpy search's :func:`pipeline.search.exact_distances` gives, and the
variety rules' own-tile sums, so the ``k`` kept are the ``k`` nearest by them, ties by
id, with nothing to measure again. The matrix products round apart from these sums: the
two searches' ``k``-th candidate can differ where two tiles are within rounding of each
other there (6-28 rows in 10^5 on real clips).

The lists a query probes, the ``m`` of nearest centroid, are picked from its row of
centroid distances as the row is finished (:func:`pipeline.probes.nearest_columns`, the
columns of the numpy search's ``m`` passes of argmin, best chunk of centroids first);
each orientation's candidates are merged in one pass (:func:`merge_orientations`).
Compiled on first use and cached next to this file; a process pays numba's load once
(0.4-0.65 CPU-s, shared with :mod:`pipeline.rules`), and a fresh install the compile
(about 8 CPU-s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from pipeline.distances import block_sq
from pipeline.probes import NO_KEY, centroid_order, insert_key, nearest_columns

# reassociation and contraction let a row's 48 squares vectorise; no "nnan" or "ninf"
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_SLACK = np.float32(1e-4)  # the window's margin, relative (and absolute), for rounding


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _sq(q, f):  # pragma: no cover - compiled
    """Squared L2 distance of two rows (D,) float32."""
    s = np.float32(0)
    for d in range(q.shape[0]):
        x = q[d] - f[d]
        s += x * x
    return s


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _nearest_first(q, probes, centroids, to_list, order):  # pragma: no cover - compiled
    """The query's distances ``to_list`` (m,) to its probed lists' centroids, and the
    lists' ``order`` (m,) by them (nearest first: the k-th distance falls soonest)."""
    m = probes.shape[0]
    for j in range(m):
        to_list[j] = np.sqrt(_sq(q, centroids[probes[j]]))
        order[j] = j
    for a in range(1, m):
        b = a
        while b > 0 and to_list[order[b - 1]] > to_list[order[b]]:
            order[b], order[b - 1] = order[b - 1], order[b]
            b -= 1


@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="always")
def _window(radial, lo, hi, to, kth):  # pragma: no cover - compiled
    """The members ``lo:hi`` of a list (sorted by their distance ``radial`` to its
    centroid) that may be within ``kth`` (a squared distance) of a query at distance
    ``to`` from the centroid: ``|to - radial| <= r``, ``r`` the root of ``kth`` with a
    margin for rounding (triangle inequality)."""
    r = np.sqrt(kth) * (1 + _SLACK) + (to + 1) * _SLACK
    first = lo + np.searchsorted(radial[lo:hi], to - r)
    return first, lo + np.searchsorted(radial[lo:hi], to + r, side="right")


@numba.njit(cache=True, nogil=True, inline="always")
def _scan_blocks(q, blocks, block_ids, start, stop, limit, best, eight, bits
                 ):  # pragma: no cover - compiled
    """Measure ``q`` against blocks ``start:stop`` (:func:`scan_lists`' arrays) and put
    each tile within ``limit`` into the keys of the ``k`` best, ``best`` (``eight`` (8,)
    float32 and ``bits``, its view as int32: scratch); the pairs measured."""
    k = best.shape[0]
    for blk in range(start, stop):
        block_sq(q, blocks, blk, eight)
        for u in range(8):
            tid = block_ids[8 * blk + u]
            if tid >= 0 and eight[u] <= limit:
                key = (np.int64(bits[u]) << 32) | tid
                if key < best[k - 1]:
                    insert_key(best, key)
    return 8 * (stop - start)


@numba.njit(cache=True, nogil=True)
def scan_lists(queries, probes, offsets, sizes, first_block, block_ids, blocks, radial,
               centroids, k, bound):  # pragma: no cover - compiled
    """Each query's ``k`` nearest tiles in its probed lists, by (distance, id), among
    those within its ``bound``, and their squared distances (numpy's bits).

    Parameters
    ----------
    queries : ndarray (n, D), float32, C-contiguous.
    probes : ndarray (n, m), int64, distinct lists to search for each query.
    offsets, sizes, first_block, block_ids, blocks, radial, centroids : the lists, as
        :class:`SortedLists` holds them.
    k : candidates to keep.
    bound : ndarray (n,), float32, a squared distance per query (inf: none) beyond which
        no tile is wanted (with a margin for rounding: a tile within it is never lost):
        the windows are that narrow from the first list on, and no tile beyond is kept.

    Returns
    -------
    ids : ndarray (n, k), int64, by increasing distance, then id (-1 where fewer exist
        within the bound).
    dist : ndarray (n, k), float32, their squared distances (inf where no tile).
    measured : int, the (query, tile) pairs measured (whole blocks).
    """
    n, m = queries.shape[0], probes.shape[1]
    out_i = np.full((n, k), -1, np.int64)
    out_d = np.full((n, k), np.inf, np.float32)
    # the k best as 64-bit keys: a distance's bits (non-negative floats order as their
    # bits), then the id: one comparison orders them by (distance, id)
    best, eight, high = np.empty(k, np.int64), np.empty(8, np.float32), np.empty(1, np.int32)
    bits, value = eight.view(np.int32), high.view(np.float32)  # (a key's distance: value)
    to_list, order, measured = np.empty(m, np.float32), np.empty(m, np.int64), 0
    for i in range(n):
        q = queries[i]
        _nearest_first(q, probes[i], centroids, to_list, order)
        best[:] = NO_KEY
        limit = bound[i] * (1 + _SLACK) + _SLACK  # (inf stays inf)
        for a in range(m):
            j = order[a]
            c = probes[i, j]
            lo = offsets[c]
            hi = lo + sizes[c]
            kth = limit
            if best[k - 1] != NO_KEY:
                high[0] = np.int32(best[k - 1] >> 32)
                kth = min(value[0], limit)
            if kth < np.inf:
                lo, hi = _window(radial, lo, hi, to_list[j], kth)
            if hi > lo:  # the window's blocks, whole: their other members are the list's too
                measured += _scan_blocks(q, blocks, block_ids,
                                         first_block[c] + (lo - offsets[c]) // 8,
                                         first_block[c] + (hi - 1 - offsets[c]) // 8 + 1,
                                         limit, best, eight, bits)
        for b in range(k):
            if best[b] == NO_KEY:
                break
            high[0] = np.int32(best[b] >> 32)
            out_i[i, b], out_d[i, b] = best[b] & 0xFFFFFFFF, value[0]
    return out_i, out_d, measured


@numba.njit(cache=True, nogil=True, inline="always")
def _next_entry(ids, dist, head, i):  # pragma: no cover - compiled
    """The orientation whose next candidate for query ``i`` comes first by (distance,
    id, orientation), -1 when none is left (see :func:`merge_orientations`)."""
    best = -1
    for t in range(ids.shape[0]):
        h = head[t]
        if h >= ids.shape[2] or ids[t, i, h] < 0:
            continue
        if best < 0 or dist[t, i, h] < dist[best, i, head[best]] or (
                dist[t, i, h] == dist[best, i, head[best]]
                and ids[t, i, h] < ids[best, i, head[best]]):
            best = t
    return best


@numba.njit(cache=True, nogil=True)
def merge_orientations(ids, dist, k):  # pragma: no cover - compiled
    """Each orientation's candidates merged as :meth:`pipeline.search.Orientations.merge`
    merges them, to the bit: every tile once, in its nearest orientation (then the
    earlier), the ``k`` nearest by (distance, id, orientation).

    ``ids`` (m, n, c) int64 and ``dist`` (m, n, c) float32: each orientation's candidates
    (-1 and inf: none), each row sorted by (distance, id). Returns ids (n, k) int64,
    distances (n, k) float32 and orientations (n, k) uint8 (index among the m); an empty
    slot's orientation is the one numpy's sort gives it (of the empty and repeated
    entries, by id + 1, then orientation).
    """
    m, n, c = ids.shape
    k = min(k, m * c)
    out_i = np.full((n, k), -1, np.int64)
    out_d = np.full((n, k), np.inf, np.float32)
    out_t = np.zeros((n, k), np.uint8)
    head = np.zeros(m, np.int64)
    spare = np.empty(m * c, np.int64)  # empty or repeated entries: (id + 1) * m + turn
    kept = np.zeros(ids.max() + 1 if ids.size else 1, np.int32)  # query + 1 a tile is kept for
    for i in range(n):
        head[:] = 0
        got = left = 0
        while got < k:
            best = _next_entry(ids, dist, head, i)
            if best < 0:
                break
            tile = ids[best, i, head[best]]
            if kept[tile] == i + 1:  # a tile once: in its first, nearest, orientation
                spare[left] = (tile + 1) * m + best
                left += 1
            else:
                out_i[i, got], out_d[i, got], out_t[i, got] = tile, dist[best, i, head[best]], best
                kept[tile] = i + 1
                got += 1
            head[best] += 1
        if got < k:  # every entry seen: the empty slots as numpy's merge fills them
            for t in range(m):
                for h in range(head[t], c):
                    spare[left] = (ids[t, i, h] + 1) * m + t
                    left += 1
            order = np.sort(spare[:left])
            for j in range(min(k - got, left)):
                out_t[i, got + j] = order[j] % m
    return out_i, out_d, out_t


@dataclass(frozen=True)
class SortedLists:
    """The lists as :func:`scan_lists` reads them: each list's members sorted by their
    distance to its centroid (ties by id), their features in blocks of eight.

    Attributes
    ----------
    offsets, sizes : ndarray (K,), int64, as :class:`pipeline.search.TileClusters`'.
    members : ndarray (M,), int64, tile ids.
    radial : ndarray (M,), float32, each member's distance to its list's centroid.
    first_block : ndarray (K,), int64, each list's first block.
    block_ids : ndarray (B * 8,), int64, the blocks' tile ids (-1: a list's last block's
        padding).
    blocks : ndarray (B, D, 8), float32, the members' features, eight members a block,
        feature by feature (:func:`pipeline.distances.block_sq`); padding is 0.
    centroids : ndarray (K, D), float32 (:func:`pipeline.search.cluster_centroids`).
    columns : ndarray (K,), int64, the centroids in chunks that lie close together
        (:func:`pipeline.probes.centroid_order`), the order of the next two.
    twice_back, norms : ndarray (K, D) and (K,), float32: the centroids times -2, and
        their squared norms, in that order, for each query's distances to them.
    """

    offsets: np.ndarray
    sizes: np.ndarray
    members: np.ndarray
    radial: np.ndarray
    first_block: np.ndarray
    block_ids: np.ndarray
    blocks: np.ndarray
    centroids: np.ndarray
    columns: np.ndarray
    twice_back: np.ndarray
    norms: np.ndarray

    @classmethod
    def build(cls, tiles, features: np.ndarray, centroids: np.ndarray) -> SortedLists:
        """From the clusters (:class:`pipeline.search.TileClusters`: each list's members
        side by side, in list order), the tiles' features (N, D) float32 and the lists'
        centroids (K, D) float32."""
        sizes = tiles.sizes.astype(np.int64)
        lists = np.repeat(np.arange(len(sizes)), sizes)
        diff = features[tiles.members] - centroids[lists]
        radial = np.sqrt(np.einsum("md,md->m", diff, diff)).astype(np.float32)
        order = np.lexsort((tiles.members, radial, lists))
        members = tiles.members[order].astype(np.int64)
        spans = -(-sizes // 8)  # each list's blocks
        first = np.concatenate([[0], np.cumsum(spans)[:-1]]).astype(np.int64)
        slots = 8 * np.repeat(first, sizes) + (np.arange(len(members))
                                                - np.repeat(tiles.offsets, sizes))
        ids = np.full(8 * int(spans.sum()), -1, np.int64)
        ids[slots] = members
        rows = np.zeros((len(ids), features.shape[1]), np.float32)
        rows[slots] = features[members]
        blocks = np.ascontiguousarray(rows.reshape(-1, 8, features.shape[1]).transpose(0, 2, 1))
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        columns = centroid_order(c)
        return cls(tiles.offsets.astype(np.int64), sizes, members,
                   np.ascontiguousarray(radial[order]), first, ids, blocks, c, columns,
                   c[columns] * np.float32(-2), (c * c).sum(1)[columns])

    def nearest_lists(self, queries: np.ndarray, m: int) -> np.ndarray:
        """The ``m`` lists of nearest centroid (n, m) int64 of each query (n, D) float32,
        nearest first: :func:`pipeline.search.top_clusters_by_l2`'s, to the bit."""
        return nearest_columns(queries @ self.twice_back.T, (queries * queries).sum(1),
                               self.norms, m, self.columns)

    def scan(self, queries: np.ndarray, probes: np.ndarray, k: int,
             bound: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:func:`scan_lists`: the ``k`` nearest tile ids (n, k) int64 of each query
        (n, D) float32 within its ``probes`` (n, m) lists and its ``bound`` (n,) float32
        squared distance (None: no bound), -1 where fewer exist, and their squared
        distances (n, k) float32 (inf: none), by (distance, id)."""
        bound = np.full(len(queries), np.inf, np.float32) if bound is None else \
            np.ascontiguousarray(bound, dtype=np.float32)
        ids, dist, _ = scan_lists(np.ascontiguousarray(queries, dtype=np.float32),
                                  np.ascontiguousarray(probes, dtype=np.int64), self.offsets,
                                  self.sizes, self.first_block, self.block_ids, self.blocks,
                                  self.radial, self.centroids, k, bound)
        return ids, dist


def warm() -> None:
    """Load the kernel's machine code now (from the cache; compiled on the first run
    after an install or a change)."""
    one = np.zeros(1, np.int64)
    scan_lists(np.zeros((1, 3), np.float32), np.zeros((1, 1), np.int64), one - 0, one + 1,
               one - 0, np.full(8, -1, np.int64), np.zeros((1, 3, 8), np.float32),
               np.zeros(1, np.float32), np.zeros((1, 3), np.float32), 1,
               np.full(1, np.inf, np.float32))
    nearest_columns(np.zeros((1, 2), np.float32), np.zeros(1, np.float32),
                    np.zeros(2, np.float32), 1, np.arange(2, dtype=np.int64))
    merge_orientations(np.zeros((2, 1, 1), np.int64), np.zeros((2, 1, 1), np.float32), 1)
