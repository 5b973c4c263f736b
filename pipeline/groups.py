"""Near-duplicate tile groups: a perceptual hash per tile, and groups of tiles whose
hashes are within a few bits of each other.

The variety rules (repeat radius, per-frame cap, preference for tiles not on screen)
apply per group, so two crops of one photo that look the same, or two frames of one
celebrity's video, count as one tile. Exact duplicates are already dropped by the index
stage (content digests); this catches the near ones.

The hash is the classic DCT pHash: the tile's luma resized to 32x32, its 2-D DCT, the
8x8 lowest frequencies without the DC term compared with their median, 63 bits packed
in a uint64. Tiles within :data:`HAMMING` bits are candidates; a candidate pair is
linked only when the tiles' 8x8 luma grids, each with its mean removed (brightness and
recolouring do not hide a repeat), differ by at most :data:`THUMB_TOL` levels on
average. Groups are the connected components of those links. The check matters: aligned
faces share their low frequencies, so on a CelebA-like corpus hash links alone chain
nearly every face into one group. Flat tiles (luma spread under :data:`FLAT_STD`) have
no structure for a hash to see, and a repeat of a flat tile cannot be seen either: each
is its own group.
"""

from __future__ import annotations

import itertools
import logging

import cv2
import numpy as np
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

log = logging.getLogger(__name__)

VERSION = "2"  # of the grouping rule: recorded in the index's parameters
HAMMING = 4  # bits: hashes this close are near-duplicate candidates
THUMB_TOL = 4.0  # mean |difference| (0..255) of mean-removed 8x8 luma grids of a link
FLAT_STD = 4.0  # luma standard deviation (0..255) below which a tile is flat
_CHUNKS = HAMMING + 1  # pigeonhole: two hashes within HAMMING bits share one chunk
_HASH_BATCH = 8192
_PAIR_BLOCK = 1 << 22  # pair comparisons at once


def _luma32(tiles_bgr: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) uint8 -> (n, 32, 32) float32 luma (BT.601 weights)."""
    _n, h, w, _ = tiles_bgr.shape
    y = tiles_bgr.astype(np.float32) @ np.array([0.114, 0.587, 0.299], np.float32)
    if (h, w) == (32, 32):
        return y
    return np.stack([cv2.resize(t, (32, 32), interpolation=cv2.INTER_AREA) for t in y])


def perceptual_hashes(tiles_bgr: np.ndarray, thumbs: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """pHash and flatness of every tile (and, into ``thumbs`` (N, 64) float32 when given,
    each tile's 8x8 luma grid with its mean removed).

    Parameters
    ----------
    tiles_bgr : ndarray (N, h, w, 3), uint8 (may be memory-mapped; read in batches).

    Returns
    -------
    hashes : ndarray (N,), uint64, 63-bit DCT hashes.
    flat : ndarray (N,), bool, tiles whose luma spread is under :data:`FLAT_STD`.
    """
    n = len(tiles_bgr)
    hashes = np.zeros(n, np.uint64)
    flat = np.zeros(n, bool)
    weights = (np.uint64(1) << np.arange(63, dtype=np.uint64))
    for lo in range(0, n, _HASH_BATCH):
        y = _luma32(np.asarray(tiles_bgr[lo:lo + _HASH_BATCH]))
        flat[lo:lo + len(y)] = y.reshape(len(y), -1).std(1) < FLAT_STD
        if thumbs is not None:
            grid = y.reshape(len(y), 8, 4, 8, 4).mean((2, 4)).reshape(len(y), 64)
            thumbs[lo:lo + len(y)] = grid - grid.mean(1, keepdims=True)
        low = dctn(y, type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(y), 64)[:, 1:]
        bits = low > np.median(low, axis=1, keepdims=True)
        hashes[lo:lo + len(y)] = (bits.astype(np.uint64) * weights).sum(1, dtype=np.uint64)
    return hashes, flat


def _close_pairs(hashes: np.ndarray, members: np.ndarray, thumbs: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The pairs among ``members`` (tile ids sharing one chunk value) within HAMMING
    bits, and, with ``thumbs``, whose mean-removed luma grids agree within THUMB_TOL."""
    m = len(members)
    ii, jj = [], []
    step = max(1, _PAIR_BLOCK // max(1, m))
    h = hashes[members]
    for lo in range(0, m, step):
        a = h[lo:lo + step]
        dist = np.bitwise_count(a[:, None] ^ h[None, :])
        r, c = np.nonzero(dist <= HAMMING)
        keep = c > r + lo
        a, b = members[r[keep] + lo], members[c[keep]]
        if thumbs is not None and len(a):
            same = np.abs(thumbs[a] - thumbs[b]).mean(1) <= THUMB_TOL
            a, b = a[same], b[same]
        ii.append(a)
        jj.append(b)
    return np.concatenate(ii), np.concatenate(jj)


def group_near_duplicates(hashes: np.ndarray, flat: np.ndarray,
                          thumbs: np.ndarray | None = None) -> np.ndarray:
    """Group id per tile: connected components of hashes within HAMMING bits (and, with
    ``thumbs`` (N, 64), mean-removed luma grids within THUMB_TOL).

    Flat tiles are never linked. Group ids are numbered by their smallest member, so
    a tile with no near-duplicate keeps a group of its own.

    Returns
    -------
    ndarray (N,), int64, group id per tile (0..G-1).
    """
    n = len(hashes)
    ii, jj = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    textured = np.flatnonzero(~flat)
    bits_per_chunk = -(-63 // _CHUNKS)
    for k in range(_CHUNKS):
        chunk = (hashes[textured] >> np.uint64(k * bits_per_chunk)) & np.uint64(
            (1 << bits_per_chunk) - 1)
        order = np.argsort(chunk, kind="stable")
        ids, vals = textured[order], chunk[order]
        bounds = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1], True])
        for lo, hi in itertools.pairwise(bounds):
            if hi - lo > 1:
                a, b = _close_pairs(hashes, ids[lo:hi], thumbs)
                ii.append(a)
                jj.append(b)
    i, j = np.concatenate(ii), np.concatenate(jj)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by smallest member: stable across runs and easy to read
    first = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(first, labels, np.arange(n))
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[labels].astype(np.int64)


def tile_groups(tiles_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and near-duplicate groups of a tile bank: ((N,) uint64, (N,) int64)."""
    thumbs = np.empty((len(tiles_bgr), 64), np.float32)
    hashes, flat = perceptual_hashes(tiles_bgr, thumbs)
    groups = group_near_duplicates(hashes, flat, thumbs)
    log.info("%d tiles in %d near-duplicate groups (%d tiles share a group)", len(groups),
             len(np.unique(groups)), int((np.bincount(groups)[groups] > 1).sum()))
    return hashes, groups


def group_summary(groups: np.ndarray, top: int = 10) -> dict:
    """Counts for reports: groups, tiles in shared groups, the largest groups' sizes."""
    sizes = np.bincount(groups)
    shared = sizes[sizes > 1]
    largest = np.argsort(-sizes, kind="stable")[:top]
    return {"tiles": len(groups), "groups": len(sizes),
            "groups_shared": len(shared), "tiles_in_shared": int(shared.sum()),
            "largest": [(int(g), int(sizes[g])) for g in largest if sizes[g] > 1]}
