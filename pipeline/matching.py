"""Matching: the reference's cluster matcher, and the features cells and tiles are
searched in (:func:`search_features`; the search itself is :mod:`pipeline.search`, the
modes that use both :mod:`pipeline.modes`).

``cluster`` mode is the reference's: the active cells of a batch of frames are
clustered with MiniBatchKMeans (150 clusters; one ``partial_fit`` step per batch, the
model carried over batches within a segment and reset on a scene change), each cell
cluster is matched to the nearest tile cluster by cosine distance, and the cells are
filled with that tile cluster's members in turn, each flipped horizontally at random.
The tile is never compared with the cell: that is the reference's look.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.assign import rank_within_groups
from pipeline.features import compiled
from pipeline.search import TileClusters, smallest_sorted


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


def recolour_aware(lab_grid: np.ndarray, recolour: float, mean: np.ndarray | None = None
                   ) -> np.ndarray:
    """Grid Lab features as they will look after recolouring: (n, g*g*3) float32.

    Recolouring moves a placed tile's mean colour the share ``recolour`` of the way to
    its cell's. Subtracting ``recolour`` times each feature's own mean colour from every
    sub-cell makes the squared L2 distance between a cell and a tile the error left
    *after* that correction, ``|(q - t) - s (mean q - mean t)|^2``: with recolouring on,
    tiles are chosen by structure, and a tile whose colour can be corrected competes.
    The structure's chroma counts :data:`CHROMA_STRUCTURE` as much as its lightness.
    ``mean`` (n, 3) float32: each feature's mean colour where the caller has it.
    """
    lab_grid = np.ascontiguousarray(lab_grid, dtype=np.float32)
    if recolour <= 0:
        return lab_grid
    cells = lab_grid.reshape(len(lab_grid), -1, 3)
    mean = cells.mean(1, keepdims=True) if mean is None else mean[:, None, :]
    structure = cells - mean
    structure[:, :, 1:] *= CHROMA_STRUCTURE
    return (structure + np.float32(1 - recolour) * mean).reshape(len(lab_grid), -1)


def search_features(lab_grid: np.ndarray, mean_weight: float, recolour: float) -> np.ndarray:
    """The features nearest mode searches in, for tiles and cells alike: the grid made
    :func:`recolour_aware`, then the weighted mean colour appended (:func:`with_mean`).
    Where numba is loaded (a render worker), in one compiled pass with these bits
    (:func:`pipeline.features_compiled.recoloured_rows`, checked once a process: the
    571,286 cells of 200 busy 640x480 frames in 0.12 CPU-s against numpy's 0.33)."""
    lab_grid = np.ascontiguousarray(lab_grid, dtype=np.float32)
    if recolour > 0 and lab_grid.ndim == 2 and lab_grid.shape[1] % 3 == 0 and \
            (kernels := compiled("recolour", _recolour_agrees)) is not None:
        feats, mean = np.empty_like(lab_grid), np.empty((len(lab_grid), 3), np.float32)
        kernels.recoloured_rows(lab_grid, np.float32(1 - recolour), CHROMA_STRUCTURE,
                                feats, mean)
    else:
        mean = lab_grid.reshape(len(lab_grid), -1, 3).mean(1)
        feats = recolour_aware(lab_grid, recolour, mean)
    if mean_weight <= 0:
        return feats
    return np.concatenate([feats, mean_weight * mean], axis=1).astype(np.float32)


def _recolour_agrees(kernels: Any) -> bool:
    """Whether ``kernels.recoloured_rows`` gives numpy's bits here (numpy's mean sums a
    row's sub-cells in order; a numpy that summed them otherwise would fail this)."""
    rng = np.random.default_rng(0)
    for cells in (16, 9, 1):
        lab = (rng.standard_normal((257, cells * 3)) * 40).astype(np.float32)
        mean = lab.reshape(len(lab), -1, 3).mean(1)
        want = recolour_aware(lab, 0.9, mean)
        got, got_mean = np.empty_like(lab), np.empty_like(mean)
        kernels.recoloured_rows(lab, np.float32(1 - 0.9), CHROMA_STRUCTURE, got, got_mean)
        if got.tobytes() != want.tobytes() or got_mean.tobytes() != mean.tobytes():
            return False
    return True
