"""Candidate search: each cell's exact nearest tiles within its nearest tile clusters.

An inverted-file search over the index's tile clusters (:class:`TileClusters`, the
lists): a query probes the clusters whose centroid is nearest (:func:`top_clusters_by_l2`,
or lists given by the caller, as refined mode's coarse step gives them), and its ``k``
nearest tiles among their members are found exactly (:func:`search_lists`) and measured
again one by one (:func:`exact_distances`), so a cell's candidates never depend on the
other cells searched with it. :class:`TileSearch` runs it in blocks of queries for the
video's planner and for stills; :class:`Orientations` turns a cell's features so that a
tile may be searched in every orientation allowed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pipeline.visibility import orient


@dataclass(frozen=True)
class TileClusters:
    """The kept tile clusters of an index, in a form the matchers can index at once.

    Attributes
    ----------
    centers : ndarray (K, D), float64, cluster centres (histogram space).
    members : ndarray (M,), int64, tile ids grouped by cluster, ascending within one.
    offsets : ndarray (K,), int64, start of each cluster in ``members``.
    sizes : ndarray (K,), int64, population of each cluster.
    """

    centers: np.ndarray
    members: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_labels(cls, centers: np.ndarray, labels: np.ndarray) -> TileClusters:
        """Build from kept centres (K, D) and per-tile labels (N,) (-1 = pruned)."""
        kept = np.flatnonzero(labels >= 0)
        members = kept[np.argsort(labels[kept], kind="stable")]
        sizes = np.bincount(labels[kept], minlength=centers.shape[0]).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        if (sizes == 0).any():
            raise ValueError("every kept tile cluster must have members")
        return cls(centers.astype(np.float64), members.astype(np.int64), offsets, sizes)


def top_clusters_by_l2(queries: np.ndarray, centers: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` nearest rows of ``centers`` (K, D) in L2 for each query: (n, m) int."""
    return smallest_sorted(_sq_dist(queries, centers), m)


_ARGMIN_PASSES = 8  # up to this many, repeated argmin beats argpartition on wide rows


def smallest_sorted(d: np.ndarray, m: int) -> np.ndarray:
    """Columns of the ``m`` smallest values of each row of ``d`` (n, K), nearest first,
    ties to the lower column: (n, min(m, K)) int64.

    A few passes of ``argmin`` (vectorised over whole rows) for a small ``m``: numpy's
    per-row ``argpartition`` costs 70x more on 500-wide rows.
    """
    m = min(m, d.shape[1])
    if m > _ARGMIN_PASSES:
        part = np.argpartition(d, m - 1, axis=1)[:, :m]
        order = np.lexsort((part, np.take_along_axis(d, part, 1)), axis=1)
        return np.take_along_axis(part, order, 1)
    work = np.array(d, copy=True)
    rows = np.arange(len(work))
    out = np.empty((len(work), m), np.int64)
    for j in range(m):
        out[:, j] = col = work.argmin(1)
        work[rows, col] = np.inf
    return out


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 distances (n, k) between rows of ``a`` (n, D) and ``b`` (k, D), float32."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    d = (a * a).sum(1)[:, None] - 2 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.maximum(d, 0, out=d)


_BLOCK = 1 << 21  # distances computed at once in a search (8 MiB of float32)


def _k_smallest(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest values of each row of ``d`` (n, m) in no particular order:
    (cols (n, min(k, m)) int64, values). For a candidate set that is re-sorted later."""
    if k >= d.shape[1]:
        cols = np.broadcast_to(np.arange(d.shape[1]), d.shape)
        return cols, d
    cols = np.argpartition(d, k - 1, axis=1)[:, :k]
    return cols, np.take_along_axis(d, cols, 1)


def search_lists(queries: np.ndarray, probes: np.ndarray, tiles: TileClusters,
                 features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest tiles (L2 on ``features``) within each query's probed clusters.

    An inverted-file search: the tile clusters are the lists, ``probes`` says which
    lists each query looks in. Work is grouped by list, so there is no per-query loop:
    each (query, probed list) pair puts its k best into a slot of its own, and one
    final pass keeps each query's k best of all its slots.

    Parameters
    ----------
    queries : ndarray (n, D), float32.
    probes : ndarray (n, m), int, distinct tile clusters to search for each query.
    features : ndarray (N, D), float32, per-tile features (indexed by tile id).
    k : candidates to return.

    Returns
    -------
    ids : ndarray (n, k), int64, tile ids by increasing distance (-1 where fewer exist).
    dist : ndarray (n, k), float32, squared distances (inf where fewer exist).
    """
    n, m = probes.shape
    slot_d = np.full((n, m * k), np.inf, np.float32)
    slot_i = np.full((n, m * k), -1, np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    q_norms = (queries * queries).sum(1)
    flat_q = np.repeat(np.arange(n), m)
    flat_j = np.tile(np.arange(m), n)
    order = np.argsort(probes.ravel(), kind="stable")
    flat_q, flat_j, flat_c = flat_q[order], flat_j[order], probes.ravel()[order]
    bounds = np.flatnonzero(np.r_[True, flat_c[1:] != flat_c[:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        c = flat_c[lo]
        members = tiles.members[tiles.offsets[c]:tiles.offsets[c] + tiles.sizes[c]]
        member_features = np.ascontiguousarray(features[members], dtype=np.float32)
        m_norms = (member_features * member_features).sum(1)
        kk = min(k, len(members))
        step = max(1, _BLOCK // max(1, len(members)))  # bounded distance matrices
        for start in range(lo, hi, step):
            qi, jj = flat_q[start:min(start + step, hi)], flat_j[start:min(start + step, hi)]
            d = queries[qi] @ member_features.T
            d *= -2
            d += q_norms[qi, None]
            d += m_norms[None, :]
            np.maximum(d, 0, out=d)
            cols, vals = _k_smallest(d, kk)  # unsorted: the final pass sorts
            slots = jj[:, None] * k + np.arange(kk)
            slot_d[qi[:, None], slots] = vals
            slot_i[qi[:, None], slots] = members[cols]
    cols, _ = _k_smallest(slot_d, k)  # exact_distances sorts them
    return exact_distances(queries, np.take_along_axis(slot_i, cols, 1), features)


_EXACT_ROWS = 2048  # queries whose candidate distances are recomputed at once


def exact_distances(queries: np.ndarray, ids: np.ndarray, features: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Candidates re-measured one by one and re-sorted: (ids, squared distances), (n, k).

    The search's matrix products round differently with the shape of a batch; these
    sums do not, so a cell's candidates and distances do not depend on which other
    cells shared its batch (the joint assignment would otherwise see the difference).
    """
    dist = np.full(ids.shape, np.inf, np.float32)
    for lo in range(0, len(ids), _EXACT_ROWS):
        part = ids[lo:lo + _EXACT_ROWS]
        diff = features[np.maximum(part, 0)] - queries[lo:lo + _EXACT_ROWS, None, :]
        d = np.einsum("nkd,nkd->nk", diff, diff)
        dist[lo:lo + len(part)] = np.where(part >= 0, d, np.inf)
    order = np.lexsort((ids, dist), axis=1) if ids.size else np.zeros(ids.shape, np.int64)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)


def cluster_centroids(tiles: TileClusters, features: np.ndarray) -> np.ndarray:
    """Mean feature of each tile cluster: (K, D) float32 (a coarse quantiser in that space)."""
    sums = np.add.reduceat(features[tiles.members].astype(np.float64), tiles.offsets, axis=0)
    return (sums / tiles.sizes[:, None]).astype(np.float32)


class TileSearch:
    """The search over one index's tiles in one feature space, in blocks of queries.

    Parameters
    ----------
    tiles : the index's tile clusters (the lists).
    features : ndarray (N, D), float32, per-tile features (indexed by tile id).
    block : queries searched at once (bounded scratch: distances to the centroids and a
        slot per query, probe and candidate).
    """

    def __init__(self, tiles: TileClusters, features: np.ndarray, block: int) -> None:
        self.tiles, self.features, self.block = tiles, features, block
        self.centroids = cluster_centroids(tiles, features)

    def block_search(self, queries: np.ndarray, k: int, nprobe: int,
                     probes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One block's candidates (ids, squared distances), (n, k): within ``probes``
        (n, m) lists, or the ``nprobe`` clusters of nearest centroid."""
        if probes is None:
            probes = top_clusters_by_l2(queries, self.centroids, nprobe)
        return search_lists(queries, probes, self.tiles, self.features, k)

    def search(self, queries: np.ndarray, k: int, nprobe: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Every query's candidates, block by block: (ids, distances), (n, k)."""
        parts = [self.block_search(queries[lo:lo + self.block], k, nprobe)
                 for lo in range(0, len(queries), self.block)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class Orientations:
    """The orientations a cell may take its tile in (:func:`pipeline.visibility.orientations`),
    on the search features (a ``g x g`` grid of 3 values per sub-cell,
    then any extra values, which no orientation moves)."""

    def __init__(self, codes: tuple[int, ...], grid: int) -> None:
        self.codes, self.grid = codes, grid
        perms = [orient(np.arange(grid * grid).reshape(1, grid, grid), c).reshape(-1)
                 for c in range(8)]
        # the grid seen in orientation c, turned back: its inverse permutation, as one of
        # the feature columns (3 values per sub-cell; the extra columns stay in place)
        back = np.stack([np.argsort(p) for p in perms])
        self._columns = (3 * back[:, :, None] + np.arange(3)).reshape(8, -1)

    def unturn(self, queries: np.ndarray, code: int | np.ndarray) -> np.ndarray:
        """Cell features (n, D) float32 turned back from orientation ``code`` (one code, or
        (n,) codes): a tile in that orientation is as far from the cell as the tile
        itself is from the result. (A permutation of the columns: the same values.)"""
        if np.isscalar(code):
            return queries if code == 0 else queries[:, self._order(int(code), queries)]
        codes = np.broadcast_to(np.asarray(code), (len(queries),))
        out = queries.copy()
        for c in np.unique(codes):
            if c != 0:
                rows = np.flatnonzero(codes == c)
                out[rows] = queries[rows][:, self._order(int(c), queries)]
        return out

    def _order(self, code: int, queries: np.ndarray) -> np.ndarray:
        """The columns of ``queries`` (n, D) in orientation ``code`` turned back."""
        cols = self._columns[code]
        extra = queries.shape[1] - len(cols)
        return np.concatenate([cols, np.arange(len(cols), len(cols) + extra)]) if extra \
            else cols

    def merge(self, found: list[tuple[np.ndarray, np.ndarray]], k: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each orientation's candidates (ids, squared distances), (n, k) each, in the
        order of :attr:`codes`, merged: every tile once, in its best orientation, the
        ``k`` nearest by distance, then id: (ids, distances, codes), (n, k)."""
        if len(found) == 1:
            ids, dist = found[0]
            return ids, dist, np.full(ids.shape, self.codes[0], np.uint8)
        ids = np.concatenate([f[0] for f in found], 1)
        dist = np.concatenate([f[1] for f in found], 1)
        codes = np.repeat(np.asarray(self.codes, np.uint8), found[0][0].shape[1])
        codes = np.broadcast_to(codes, ids.shape)
        order = np.lexsort((dist, ids), axis=1)  # by tile, nearest orientation first
        ids, dist, codes = (np.take_along_axis(a, order, 1) for a in (ids, dist, codes))
        again = np.zeros(ids.shape, bool)
        again[:, 1:] = ids[:, 1:] == ids[:, :-1]
        dist = np.where(again | (ids < 0), np.inf, dist)
        order = np.lexsort((ids, dist), axis=1)[:, :k]
        ids, dist, codes = (np.take_along_axis(a, order, 1) for a in (ids, dist, codes))
        return np.where(np.isfinite(dist), ids, -1), dist, codes
