"""Candidate search: each cell's exact nearest tiles within its nearest tile clusters.

An inverted-file search over the index's tile clusters (:class:`TileClusters`, the
lists): a query probes the clusters whose centroid is nearest (:func:`top_clusters_by_l2`,
or lists given by the caller, as refined mode's coarse step gives them), and its ``k``
nearest tiles among their members are found exactly and measured again one by one
(:func:`exact_distances`), so a cell's candidates never depend on the other cells
searched with it. :class:`TileSearch` runs it in blocks of queries for the video's
planner and for stills, with the compiled scan (:func:`pipeline.scan.scan_lists`: each
query's lists, nearest first, only the members the triangle inequality leaves possible)
or, where numba does not load, by matrix products (:func:`search_lists`);
:class:`Orientations` turns a cell's features so that a tile may be searched in every
orientation allowed, and merges what each orientation found (compiled where the scan is).
"""

from __future__ import annotations

import itertools
import logging
import sys
from dataclasses import dataclass

import numpy as np

from pipeline.visibility import orient

log = logging.getLogger(__name__)


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
    return smallest_sorted(_sq_dist(queries, centers), m, overwrite=True)


_ARGMIN_PASSES = 8  # up to this many, repeated argmin beats argpartition on wide rows


def smallest_sorted(d: np.ndarray, m: int, overwrite: bool = False) -> np.ndarray:
    """Columns of the ``m`` smallest values of each row of ``d`` (n, K), nearest first,
    ties to the lower column: (n, min(m, K)) int64 (``overwrite``: ``d`` may be written).

    A few passes of ``argmin`` (vectorised over whole rows) for a small ``m``: numpy's
    per-row ``argpartition`` costs 70x more on 500-wide rows.
    """
    m = min(m, d.shape[1])
    if m > _ARGMIN_PASSES:
        part = np.argpartition(d, m - 1, axis=1)[:, :m]
        order = np.lexsort((part, np.take_along_axis(d, part, 1)), axis=1)
        return np.take_along_axis(part, order, 1)
    work = d if overwrite else np.array(d, copy=True)
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
    # |a|^2 - 2 a.b + |b|^2 in place, rounded as written so (the -2 in the product's
    # small operand: a power of two scales every partial sum exactly, the same bits)
    d = a @ (b * np.float32(-2)).T
    d += (a * a).sum(1)[:, None]
    d += (b * b).sum(1)[None, :]
    return np.maximum(d, 0, out=d)


_BLOCK = 1 << 21  # distances computed at once in a search (8 MiB of float32)

# Candidates are kept as sort keys: a distance's float32 bits (non-negative, so they
# order as the numbers do) above the tile id + 1. One sort of plain 64-bit integers
# (numpy sorts them with SIMD) orders them by distance, then id, where a partition or a
# two-key lexsort of the (id, distance) pairs costs 3-25x more; an empty slot (id -1,
# distance inf) sorts last.
_SIGN_OFF = np.uint32(0x7FFFFFFF)  # -0.0 as +0.0
_EMPTY = np.uint64(0x7F800000 << 32)  # no tile (id -1) at distance inf
_LOW = np.uint64(0xFFFFFFFF)
MAX_TILES = 1 << 28  # tile ids (+1) a key holds, with room for an orientation


def _bits(dist: np.ndarray) -> np.ndarray:
    """Distances (...) float32, >= 0 or inf, as their bits, (...) uint64: in the same order."""
    return (dist.view(np.uint32) & _SIGN_OFF).astype(np.uint64)


def _distances(keys: np.ndarray) -> np.ndarray:
    """The distances (...) float32 in the upper 32 bits of ``keys`` (...) uint64."""
    return (keys >> np.uint64(32)).astype(np.uint32).view(np.float32)


def pack(dist: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Sort keys of candidates: ``dist`` (...) float32 (>= 0 or inf) and tile ``ids``
    (...) int (-1: none), broadcast: uint64, by distance, then id."""
    return (_bits(dist) << np.uint64(32)) | (np.asarray(ids) + 1).astype(np.uint64)


def unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tile ids (...) int64 (-1: none) and distances (...) float32 of :func:`pack`'s keys."""
    return (keys & _LOW).astype(np.int64) - 1, _distances(keys)


_LITTLE = sys.byteorder == "little"


def _list_keys(d: np.ndarray, low: np.ndarray) -> np.ndarray:
    """:func:`pack` of distances ``d`` (n, L) float32 (>= 0) and one list's ids, given
    as ``low`` (L,) uint32, the ids + 1: (n, L) uint64, written as the keys' two 32-bit
    halves (one pass each, where pack's shifts and ors take five)."""
    if not _LITTLE:
        return pack(d, low.astype(np.int64) - 1)
    keys = np.empty(d.shape, np.uint64)
    halves = keys.view(np.uint32).reshape(*d.shape, 2)
    halves[..., 0] = low
    np.bitwise_and(d.view(np.uint32), _SIGN_OFF, out=halves[..., 1])
    return keys


def _smallest_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` smallest keys of each row of ``keys`` (n, m) uint64, in order (keys are
    distinct, so the partition's ``k`` are the sort's)."""
    if k < keys.shape[1]:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    return np.sort(keys, axis=1)


def search_lists(queries: np.ndarray, probes: np.ndarray, tiles: TileClusters,
                 features: np.ndarray, k: int, grouped: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest tiles (L2 on ``features``) within each query's probed clusters.

    An inverted-file search: the tile clusters are the lists, ``probes`` says which
    lists each query looks in. Work is grouped by list, so there is no per-query loop:
    each (query, probed list) pair puts its k best into a slot of its own, and one
    final pass keeps each query's k best of all its slots. Ties in distance go to the
    lower tile id (candidates are sorted as :func:`pack` keys).

    Parameters
    ----------
    queries : ndarray (n, D), float32.
    probes : ndarray (n, m), int, distinct tile clusters to search for each query.
    features : ndarray (N, D), float32, per-tile features (indexed by tile id).
    k : candidates to return.
    grouped : optional ndarray (M, D + 1), float32: :func:`grouped_features` of the lists
        (computed here when not given).

    Returns
    -------
    ids : ndarray (n, k), int64, tile ids by increasing distance (-1 where fewer exist).
    dist : ndarray (n, k), float32, squared distances (inf where fewer exist).
    """
    n, m = probes.shape
    if grouped is None:
        grouped = grouped_features(tiles, features)
    slots = np.full((n * m, k), _EMPTY, np.uint64)  # each (query, probe) pair's k best
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    q_norms = (queries * queries).sum(1)
    flat_q, flat_j = np.repeat(np.arange(n), m), np.tile(np.arange(m), n)
    order = np.argsort(probes.ravel(), kind="stable")
    flat_q, flat_j, flat_c = flat_q[order], flat_j[order], probes.ravel()[order]
    bounds = np.flatnonzero(np.r_[True, flat_c[1:] != flat_c[:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        c = flat_c[lo]
        span = slice(tiles.offsets[c], tiles.offsets[c] + tiles.sizes[c])
        members, member_features = tiles.members[span], grouped[span, :-1]
        m_norms, low = grouped[span, -1], (members + 1).astype(np.uint32)
        kk = min(k, len(members))
        step = max(1, _BLOCK // max(1, len(members)))  # bounded distance matrices
        for start in range(lo, hi, step):
            qi, jj = flat_q[start:min(start + step, hi)], flat_j[start:min(start + step, hi)]
            d = queries[qi] @ member_features.T * np.float32(-2)
            d += q_norms[qi, None]
            d += m_norms[None, :]
            np.maximum(d, 0, out=d)
            keys = _list_keys(d, low)
            keys.sort(axis=1)
            slots[qi * m + jj, :kk] = keys[:, :kk]
    ids, _ = unpack(_smallest_keys(slots.reshape(n, m * k), k))
    return exact_distances(queries, ids, features)


def grouped_features(tiles: TileClusters, features: np.ndarray) -> np.ndarray:
    """The lists' members' features side by side, each row followed by its squared norm:
    (M, D + 1) float32, in the order of ``tiles.members``."""
    grouped = np.empty((len(tiles.members), features.shape[1] + 1), np.float32)
    grouped[:, :-1] = features[tiles.members]
    grouped[:, -1] = (grouped[:, :-1] * grouped[:, :-1]).sum(1)
    return grouped


_EXACT_ROWS = 256  # queries whose candidate distances are recomputed at once (in cache)


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
        d = (diff * diff).sum(-1)  # numpy's short-row order, as pipeline.distances sums it
        dist[lo:lo + len(part)] = np.where(part >= 0, d, np.inf)
    return unpack(np.sort(pack(dist, ids), axis=1))


def cluster_centroids(tiles: TileClusters, features: np.ndarray) -> np.ndarray:
    """Mean feature of each tile cluster: (K, D) float32 (a coarse quantiser in that space)."""
    return (np.add.reduceat(features[tiles.members].astype(np.float64), tiles.offsets, axis=0)
            / tiles.sizes[:, None]).astype(np.float32)


_compiled: bool | None = None  # the compiled scan: not tried yet, loaded, or failed


def compiled_scan() -> bool:
    """Whether the search runs the compiled scan (:mod:`pipeline.scan`): loaded on the
    first call of a process; False where numba does not load (missing, broken, no
    folder for its cache), said once: the matrix products then search, the same
    candidates but where two tiles are within rounding at a query's ``k``-th place."""
    global _compiled
    if _compiled is None:
        try:
            from pipeline.scan import warm

            warm()
            _compiled = True
        except Exception as e:  # any failure of the compiler: numpy goes on
            log.warning("the compiled candidate search could not be loaded (%s: %s); "
                        "searching by matrix products (about 1.5 times the CPU)",
                        type(e).__name__, e)
            _compiled = False
    return _compiled


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
        if len(features) >= MAX_TILES:
            raise ValueError(f"{len(features)} tiles: the search holds at most {MAX_TILES - 1}")
        self.tiles, self.features, self.block = tiles, features, block
        self.centroids = cluster_centroids(tiles, features)
        self._grouped: np.ndarray | None = None
        self._sorted = None  # pipeline.scan.SortedLists, where the compiled scan runs

    @property
    def grouped(self) -> np.ndarray:
        """:func:`grouped_features` of the lists (built on first use)."""
        if self._grouped is None:
            self._grouped = grouped_features(self.tiles, self.features)
        return self._grouped

    @property
    def sorted(self):  # -> pipeline.scan.SortedLists (numba: imported where it runs)
        """The lists as the compiled scan reads them (built on first use)."""
        if self._sorted is None:
            from pipeline.scan import SortedLists

            self._sorted = SortedLists.build(self.tiles, self.features, self.centroids)
        return self._sorted

    def block_search(self, queries: np.ndarray, k: int, nprobe: int,
                     probes: np.ndarray | None = None, compiled: bool | None = None,
                     bound: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One block's candidates (ids, squared distances), (n, k): within ``probes``
        (n, m) lists, or the ``nprobe`` clusters of nearest centroid. ``compiled``: the
        compiled scan or the matrix products (None: the scan where it loads,
        :func:`compiled_scan`). ``bound`` (n,) float32: a squared distance per query
        beyond which no candidate is wanted; the scan then measures fewer tiles and
        leaves those beyond it out (id -1, distance inf), the matrix products keep them."""
        if compiled if compiled is not None else compiled_scan():
            queries = np.ascontiguousarray(queries, dtype=np.float32)
            if probes is None:  # top_clusters_by_l2's, in one pass over each row
                probes = self.sorted.nearest_lists(queries, nprobe)

            return self.sorted.scan(queries, probes, k, bound)
        if probes is None:
            probes = top_clusters_by_l2(queries, self.centroids, nprobe)
        return search_lists(queries, probes, self.tiles, self.features, k, self.grouped)

    def search(self, queries: np.ndarray, k: int, nprobe: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Every query's candidates, block by block: (ids, distances), (n, k)."""
        parts = [self.block_search(queries[lo:lo + self.block], k, nprobe)
                 for lo in range(0, len(queries), self.block)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class Orientations:
    """The orientations a cell may take its tile in (:func:`pipeline.visibility.orientations`),
    on the search features (a ``g x g`` grid of 3 values per sub-cell, then any extra)."""

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
        for c in np.flatnonzero(np.bincount(codes, minlength=8)[1:]) + 1:
            rows = np.flatnonzero(codes == c)  # (np.take: half the time of fancy rows)
            out[rows] = np.take(queries, rows, 0)[:, self._order(int(c), queries)]
        return out

    def _order(self, code: int, queries: np.ndarray) -> np.ndarray:
        """The columns of ``queries`` (n, D) in orientation ``code`` turned back."""
        cols = self._columns[code]
        extra = queries.shape[1] - len(cols)
        return np.concatenate([cols, np.arange(len(cols), len(cols) + extra)]) if extra \
            else cols

    def merge(self, found: list[tuple[np.ndarray, np.ndarray]], k: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each orientation's candidates (ids, squared distances), (n, k) each, by distance
        then id (as searched), in the order of :attr:`codes`, merged: every tile once, in
        its best orientation, the ``k`` nearest by distance, then id: (ids, dist, codes)."""
        if len(found) == 1:
            ids, dist = found[0]
            return ids, dist, np.full(ids.shape, self.codes[0], np.uint8)
        if compiled_scan():  # the same, in one pass over each row
            from pipeline.scan import merge_orientations as merged

            ids, dist, turn = merged(*(np.stack([f[i] for f in found]) for i in (0, 1)), k)
            return ids, dist, np.asarray(self.codes, np.uint8)[turn]
        ids = np.concatenate([f[0] for f in found], 1)
        dist = np.concatenate([f[1] for f in found], 1)
        turn = np.repeat(np.arange(len(found), dtype=np.uint64), ids.shape[1] // len(found))
        # by tile, nearest orientation first (then the earlier code): (id + 1, distance
        # bits, orientation) in one key
        tile = (ids + 1).astype(np.uint64)
        keys = np.sort((tile << np.uint64(35)) | (_bits(dist) << np.uint64(3)) | turn, axis=1)
        tile, dist_bits = keys >> np.uint64(35), (keys >> np.uint64(3)) & _LOW
        again = np.zeros(ids.shape, bool)
        again[:, 1:] = tile[:, 1:] == tile[:, :-1]
        dist_bits[again | (tile == 0)] = _EMPTY >> np.uint64(32)
        # then the k nearest, by distance and id
        keys = np.sort((dist_bits << np.uint64(32)) | (tile << np.uint64(3))
                       | (keys & np.uint64(7)), axis=1)[:, :k]
        ids = (keys & _LOW).astype(np.int64) // 8 - 1
        dist = _distances(keys)
        codes = np.asarray(self.codes, np.uint8)[(keys & np.uint64(7)).astype(np.intp)]
        return np.where(np.isfinite(dist), ids, -1), dist, codes
