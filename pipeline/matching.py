"""Matching: cell features -> tile ids.

``cluster`` mode is the reference's: the active cells of a batch of frames are
clustered with MiniBatchKMeans (150 clusters; one ``partial_fit`` step per batch, the
model carried over batches within a segment and reset on a scene change), each cell
cluster is matched to the nearest tile cluster by cosine distance, and the cells are
filled with that tile cluster's members in turn, each flipped horizontally at random.
The tile is never compared with the cell: that is the reference's look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import MiniBatchKMeans


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
    return cdist(queries.astype(np.float64), centers, metric="cosine").argmin(axis=1)


def rank_within_groups(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group: (n,) int64."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    ranks = np.empty(len(groups), dtype=np.int64)
    ranks[order] = np.arange(len(groups)) - run_start
    return ranks


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
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._model: MiniBatchKMeans | None = None
        self._reset_above: float | None = None

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
        if self._reset_above is None:
            self._reset_above = 0.5 * n
        elif n > self._reset_above:  # the reference's scene-change rule
            self._model = None
        if self._model is None:
            self._model = MiniBatchKMeans(n_clusters=min(self.n_clusters, n), n_init=1,
                                          random_state=int(self._rng.integers(2**31)))
        self._model.partial_fit(hists)
        labels = self._model.predict(hists)
        tile_cluster = nearest_by_cosine(self._model.cluster_centers_, self.tiles.centers)
        chosen = tile_cluster[labels]
        rank = rank_within_groups(labels) % self.tiles.sizes[chosen]
        ids = self.tiles.members[self.tiles.offsets[chosen] + rank]
        return ids, self._rng.random(n) < 0.5
