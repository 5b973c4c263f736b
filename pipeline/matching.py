"""Matching: cell features -> tile ids.

``cluster`` mode is the reference's: the active cells of a batch of frames are
clustered with MiniBatchKMeans (150 clusters; one ``partial_fit`` step per batch, the
model carried over batches within a segment and reset on a scene change), each cell
cluster is matched to the nearest tile cluster by cosine distance, and the cells are
filled with that tile cluster's members in turn, each flipped horizontally at random.
The tile is never compared with the cell: that is the reference's look.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pipeline.assign import TileAssigner, rank_within_groups

__all__ = ["ClusterMatcher", "TileAssigner", "TileClusters", "rank_within_groups",
           "search_features", "search_lists"]


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


def nearest_by_cosine(queries: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``centers`` (K, D) for each query (n, D) by cosine."""
    from scipy.spatial.distance import cdist  # heavy: only the cluster modes need it

    return cdist(queries.astype(np.float64), centers, metric="cosine").argmin(axis=1)


class ClusterMatcher:
    """The reference's ``cluster`` mode, with the state of one segment.

    Parameters
    ----------
    tiles : the index's tile clusters.
    n_clusters : cell clusters per model (the reference uses 150).
    seed : seeds the k-means model and the flips; :meth:`reset` takes a new seed.
    """

    def __init__(self, tiles: TileClusters, n_clusters: int = 150, seed: int = 0) -> None:
        self.tiles, self.n_clusters = tiles, n_clusters
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start afresh (a new segment): no model, no scene-change threshold."""
        self._rng = np.random.default_rng(seed)
        self._model = None  # a MiniBatchKMeans, made on first use
        self._reset_above: float | None = None

    def _fit(self, hists: np.ndarray) -> np.ndarray:
        """One ``partial_fit`` step on a batch (reset on a scene change); cell labels."""
        n = hists.shape[0]
        if self._reset_above is None:
            self._reset_above = 0.5 * n
        elif n > self._reset_above:  # the reference's scene-change rule
            self._model = None
        if self._model is None:
            from sklearn.cluster import MiniBatchKMeans  # heavy: only cluster mode needs it

            self._model = MiniBatchKMeans(n_clusters=min(self.n_clusters, n), n_init=1,
                                          random_state=int(self._rng.integers(2**31)))
        self._model.partial_fit(hists)
        return self._model.predict(hists)

    def coarse(self, hists: np.ndarray, m: int) -> np.ndarray:
        """Refined mode's coarse search: each cell's cell cluster's ``m`` nearest tile
        clusters by cosine, (n, m) int64 (empty for no cells)."""
        if hists.shape[0] == 0:
            return np.zeros((0, m), np.int64)
        labels = self._fit(hists)
        lists = top_clusters_by_cosine(self._model.cluster_centers_, self.tiles.centers, m)
        return lists[labels]

    def match(self, hists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Choose tiles for one batch's active cells, in order (frame-major, row-major).

        Parameters
        ----------
        hists : ndarray (n, D), float32, the cells' colour histograms.

        Returns
        -------
        tile_ids : ndarray (n,), int64.
        flips : ndarray (n,), bool, whether each tile is mirrored horizontally.
        """
        n = hists.shape[0]
        if n == 0:
            return np.empty(0, np.int64), np.empty(0, bool)
        labels = self._fit(hists)
        tile_cluster = nearest_by_cosine(self._model.cluster_centers_, self.tiles.centers)
        chosen = tile_cluster[labels]
        rank = rank_within_groups(labels) % self.tiles.sizes[chosen]
        ids = self.tiles.members[self.tiles.offsets[chosen] + rank]
        return ids, self._rng.random(n) < 0.5


def top_clusters_by_cosine(queries: np.ndarray, centers: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` nearest rows of ``centers`` (K, D) by cosine for each query: (n, m) int."""
    from scipy.spatial.distance import cdist

    d = cdist(queries.astype(np.float64), centers, metric="cosine")
    return smallest_sorted(d, m)


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


def with_mean(lab_grid: np.ndarray, weight: float) -> np.ndarray:
    """Append the weighted mean Lab colour to 4x4-grid Lab features: (n, 48) -> (n, 51).

    With squared L2 distances, ``weight`` w makes a mean-colour difference count w**2
    times as much as the same difference in one sub-cell: it steers matching towards
    the right overall colour while the grid keeps the structure (0: grid only).
    """
    if weight <= 0:
        return np.ascontiguousarray(lab_grid, dtype=np.float32)
    mean = lab_grid.reshape(len(lab_grid), -1, 3).mean(1)
    return np.concatenate([lab_grid, weight * mean], axis=1).astype(np.float32)


CHROMA_STRUCTURE = np.float32(0.5)  # weight of a*, b* against L* in a recoloured tile's
# structure: the eye reads structure mostly in lightness (measured: viewing-scale SSIM
# 0.692 -> 0.699 on 48 real frames, cell ΔE 4.69 -> 4.61, sub-cell ΔE 5.88 -> 5.92)


def recolour_aware(lab_grid: np.ndarray, recolour: float) -> np.ndarray:
    """Grid Lab features as they will look after recolouring: (n, g*g*3) float32.

    Recolouring moves a placed tile's mean colour the share ``recolour`` of the way to
    its cell's. Subtracting ``recolour`` times each feature's own mean colour from every
    sub-cell makes the squared L2 distance between a cell and a tile the error left
    *after* that correction, ``|(q - t) - s (mean q - mean t)|^2``: with recolouring on,
    tiles are chosen by structure, and a tile whose colour can be corrected competes.
    The structure's chroma counts :data:`CHROMA_STRUCTURE` as much as its lightness.
    """
    lab_grid = np.ascontiguousarray(lab_grid, dtype=np.float32)
    if recolour <= 0:
        return lab_grid
    cells = lab_grid.reshape(len(lab_grid), -1, 3)
    mean = cells.mean(1, keepdims=True)
    structure = cells - mean
    structure[:, :, 1:] *= CHROMA_STRUCTURE
    return (structure + np.float32(1 - recolour) * mean).reshape(len(lab_grid), -1)


def search_features(lab_grid: np.ndarray, mean_weight: float, recolour: float) -> np.ndarray:
    """The features nearest mode searches in, for tiles and cells alike: the grid made
    :func:`recolour_aware`, then the weighted mean colour appended (:func:`with_mean`)."""
    mean = np.ascontiguousarray(lab_grid, dtype=np.float32).reshape(
        len(lab_grid), -1, 3).mean(1)
    feats = recolour_aware(lab_grid, recolour)
    if mean_weight <= 0:
        return feats
    return np.concatenate([feats, mean_weight * mean], axis=1).astype(np.float32)
