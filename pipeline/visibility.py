"""Photo visibility: do the placed photos keep their own contrast?

A photomosaic's photos must be seen up close. Fidelity scores reward a mosaic that fades
its tiles towards the source (a pixelated source scores higher still), so they are read
together with this one. For every cell showing a tile, the *contrast share* is the luma
spread (standard deviation, Rec. 601 luma in 0..255) of the painted cell over that of
the tile in the bank: 1 is the photo as it is, 0.5 a photo at half its contrast, 0 a
flat patch of colour. Flat tiles (own spread under :data:`MIN_SPREAD`) have no contrast
to keep and are left out.

The shares of every cell of every frame are counted in a fixed histogram
(:data:`BINS` bins of 1/:data:`PER_UNIT` up to :data:`TOP`), so segments painted apart
add up exactly; the reports give the median, the 10th percentile and the share of cells
below one half.

:class:`TileIdentifier` finds which tile of a bank a mosaic cell shows from its pixels
(a normalised 8x8 luma signature, every orientation, correlation at least
:data:`MATCH_CORRELATION`), so that another tool's output, or a video alone, can be
scored the same way (``mosaic score --index``).
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.features import block_means

MIN_SPREAD = 8.0  # luma std (0..255) under which a tile is flat: nothing to see
PER_UNIT = 64  # histogram bins per unit of contrast share
TOP = 4.0  # shares at or above this go in the last bin
BINS = int(TOP * PER_UNIT) + 1
HALF = 0.5  # a photo shown below half its contrast is "faded"
MATCH_CORRELATION = 0.9  # 8x8 luma signatures at least this correlated: the same tile
# a tile or cell with a luma spread under this has no signature to tell it by (a codec's
# noise is of that size): such tiles are not candidates, such cells are not identified
SIGNATURE_SPREAD = 4.0
_EPS = 2.0  # the k-d tree's approximation: neighbours within (1 + eps) of the nearest
LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights, Rec. 601
_SQUARES = (np.arange(256, dtype=np.float32) ** 2).reshape(1, 256)  # level -> its square
_Y_SCALE = np.float32(255 / 219)  # limited-range Y (16..235) back to luma levels


def luma_spread(tiles_bgr: np.ndarray) -> np.ndarray:
    """Luma standard deviation of each tile, (k, h, w, 3) uint8 BGR -> (k,) float32: of its
    luma rounded to 0..255 levels, from exact sums of the levels and their squares."""
    k = len(tiles_bgr)
    if k == 0:
        return np.zeros(0, np.float32)
    flat = np.ascontiguousarray(tiles_bgr).reshape(k, -1, 3)
    y = cv2.transform(flat, LUMA[None, :]).reshape(k, -1)  # uint8 levels, one pass
    total = cv2.reduce(y, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    # squares of levels from a table (exact in float32), their sums in float64
    square = cv2.reduce(cv2.LUT(y, _SQUARES), 1, cv2.REDUCE_SUM, dtype=cv2.CV_64F).ravel()
    return spread_of_sums(total, square, y.shape[1])


def spread_of_sums(total: np.ndarray, squares: np.ndarray, pixels: int) -> np.ndarray:
    """Luma standard deviations (k,) float32 from the exact sums of ``pixels`` luma levels
    (k,) and of their squares (k,) (integers, or floats holding them)."""
    mean = total / pixels
    return np.sqrt(np.maximum(squares.astype(np.float64) / pixels - mean * mean, 0)
                   ).astype(np.float32)


def bank_spread(bank: np.ndarray, block: int = 4096) -> np.ndarray:
    """:func:`luma_spread` of a whole (memory-mapped) bank, in blocks: (N,) float32."""
    parts = [luma_spread(np.asarray(bank[lo:lo + block])) for lo in range(0, len(bank), block)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def y_plane_spread(y_plane: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Luma spread of each cell of an encoder's limited-range Y plane, (H, W) uint8 ->
    (rows, cols) float32 in luma levels, from every second pixel of every second row
    (a quarter sample: about 2 ms at 2560x1920; the spread of a 16x16 sample of a 32x32
    cell is an unbiased estimate of the cell's)."""
    sample = y_plane[::2, ::2].astype(np.float32)
    mean = cv2.resize(sample, (cols, rows), interpolation=cv2.INTER_AREA)
    sq = cv2.resize(sample * sample, (cols, rows), interpolation=cv2.INTER_AREA)
    return np.sqrt(np.maximum(sq - mean * mean, 0)) * _Y_SCALE


def share_histogram(painted: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Histogram (:data:`BINS`,) int64 of the contrast shares ``painted / own`` of the
    cells whose tile is not flat (``own`` >= :data:`MIN_SPREAD`); any equal shapes."""
    keep = own >= MIN_SPREAD
    share = painted[keep] / own[keep]
    bins = np.minimum((share * PER_UNIT).astype(np.int64), BINS - 1)
    return np.bincount(bins, minlength=BINS)


def summarise(hist: np.ndarray | list[int], prefix: str = "visibility") -> dict[str, float]:
    """Median, 10th percentile and share below :data:`HALF` of a share histogram, and how
    many cells it counts (``{prefix}_median``, ``_p10``, ``_below_half``, ``_cells``)."""
    h = np.asarray(hist, np.int64)
    n = int(h.sum())
    if n == 0:
        return {f"{prefix}_cells": 0}
    cum = np.cumsum(h)

    def quantile(q: float) -> float:  # the bin's centre
        return (int(np.searchsorted(cum, q * n)) + 0.5) / PER_UNIT

    return {f"{prefix}_median": quantile(0.5), f"{prefix}_p10": quantile(0.1),
            f"{prefix}_below_half": float(h[:int(HALF * PER_UNIT)].sum() / n),
            f"{prefix}_cells": n}


# -- orientations --------------------------------------------------------------------
# An orientation is a code 0..7 of the dihedral group of the square: bit 0 mirrors left
# to right, bit 1 flips top to bottom, bit 2 transposes first (square tiles only). Code 1
# is the plain mirror of the reference's cluster mode.
MIRROR, VFLIP, TRANSPOSE = 1, 2, 4


def orient(tiles: np.ndarray, code: int) -> np.ndarray:
    """Tiles (k, h, w, ...) seen in orientation ``code`` (a view where possible)."""
    out = tiles
    if code & TRANSPOSE:
        out = out.swapaxes(1, 2)
    if code & VFLIP:
        out = out[:, ::-1]
    if code & MIRROR:
        out = out[:, :, ::-1]
    return out


def orient_grids(grids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each of ``grids`` (k, g, g, ...) in its own orientation ``codes`` (k,): a copy."""
    codes = np.asarray(codes, np.uint8)
    out = np.array(grids, copy=True)
    for code in np.unique(codes[codes > 0]):
        sel = codes == code
        out[sel] = orient(grids[sel], int(code))
    return out


def orientations(kind: str, square: bool) -> tuple[int, ...]:
    """The orientation codes a setting allows: ``none`` (0), ``mirror`` (0, 1), ``all``
    (the 8 of a square tile; a non-square tile cannot be transposed: 4)."""
    if kind == "none":
        return (0,)
    if kind == "mirror":
        return (0, MIRROR)
    return tuple(range(8)) if square else (0, MIRROR, VFLIP, MIRROR | VFLIP)


def _signature(tiles_bgr: np.ndarray, grid: int) -> np.ndarray:
    """Mean-removed, unit-length ``grid x grid`` luma signature: (k, grid*grid) float32."""
    k = len(tiles_bgr)
    if k == 0:
        return np.zeros((0, grid * grid), np.float32)
    y = block_means(np.ascontiguousarray(tiles_bgr), grid) @ LUMA
    y = y.reshape(k, grid * grid)
    y -= y.mean(1, keepdims=True)
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-6)
    return y.astype(np.float32)


class TileIdentifier:
    """Which tile of a bank, in which orientation, each mosaic cell shows.

    Candidates come from a k-d tree over every (tile, orientation)'s 4x4 signature
    (low-contrast tiles included: a cell showing one must find it, not a textured tile of
    similar shape); the best of them by 8x8 signature correlation is the cell's tile when
    the correlation is at least :data:`MATCH_CORRELATION` (recolouring, contrast gains
    and a light blend change neither signature much; another tile rarely comes close).
    Tiles and cells with a luma spread under :data:`SIGNATURE_SPREAD` have no usable
    signature: a cell that flat is not identified (a photo faded that far cannot be told
    from a blank one).

    Parameters
    ----------
    bank : ndarray (N, h, w, 3), uint8 BGR (memory-mapped is fine).
    codes : orientation codes to consider (default: every one the tile shape allows).
    """

    def __init__(self, bank: np.ndarray, codes: tuple[int, ...] | None = None,
                 candidates: int = 16) -> None:
        from scipy.spatial import cKDTree  # only scoring from pixels needs it

        h, w = bank.shape[1:3]
        self.codes = codes or orientations("all", h == w)
        self.spread = bank_spread(bank)
        self.ids = np.flatnonzero(self.spread >= SIGNATURE_SPREAD)
        coarse, fine = [], []
        for lo in range(0, len(self.ids), 4096):
            tiles = np.asarray(bank[self.ids[lo:lo + 4096]])
            fine.append(_signature(tiles, 8))
            coarse.append(np.stack([_signature(orient(tiles, c), 4) for c in self.codes], 1))
        self._fine = np.concatenate(fine) if fine else np.zeros((0, 64), np.float32)
        pts = np.concatenate(coarse).reshape(-1, 16) if coarse else np.zeros((0, 16))
        self._tree = cKDTree(pts) if len(pts) else None
        self._k = min(candidates, len(pts))
        # the 8x8 signature permutation of each orientation
        grid = np.arange(64).reshape(1, 8, 8)
        self._perm = np.stack([orient(grid, c).reshape(64) for c in self.codes])

    def identify(self, cells_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tile ids (k,) int64 (-1 = none identified) and orientation codes (k,) uint8
        of cells (k, h, w, 3) uint8 BGR."""
        k = len(cells_bgr)
        ids = np.full(k, -1, np.int64)
        codes = np.zeros(k, np.uint8)
        if k == 0 or self._tree is None:
            return ids, codes
        # approximate neighbours (within 3x the nearest distance): a cell's own tile is
        # far nearer than any other, and the search is 30x faster than an exact one
        _, hits = self._tree.query(_signature(cells_bgr, 4), k=self._k, eps=_EPS)
        hits = hits.reshape(k, -1)
        fine = _signature(cells_bgr, 8)
        tile_pos, code_pos = np.divmod(hits, len(self.codes))
        best = np.full(k, -np.inf, np.float32)
        for j in range(hits.shape[1]):
            cand = self._fine[tile_pos[:, j]]
            perm = self._perm[code_pos[:, j]]
            corr = (np.take_along_axis(cand, perm, 1) * fine).sum(1)
            better = corr > best
            best[better] = corr[better]
            ids[better] = self.ids[tile_pos[better, j]]
            codes[better] = np.asarray(self.codes, np.uint8)[code_pos[better, j]]
        ids[(best < MATCH_CORRELATION) | (luma_spread(cells_bgr) < SIGNATURE_SPREAD)] = -1
        return ids, codes
