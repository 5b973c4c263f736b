"""Variety: which cells of a mosaic repeat a tile nearby, from tile ids or from pixels.

A cell's *shape key* is its 4x4 sub-grid of mean colours with the cell's own mean colour
removed (:func:`shape_keys`): recolouring, a shift of the whole tile, leaves it alone.
A cell is *textured* when that key's RMS is at least :data:`TEXTURE_LEVELS`: a flat cell
has nothing to repeat. Two textured cells within :data:`REPEAT_RADIUS` (Chebyshev) show
the same tile when their keys, or one's and the other's mirror, are within
:data:`SHAPE_LEVELS` (:func:`pixel_repeats`, kept up to date cell by cell by
:class:`PixelRepeats`), or, with ids, when their ids or groups are equal
(:func:`id_repeats`). The pairs of cells within the radius are the windows of
:func:`pipeline.grid.pair_windows`.
"""

from __future__ import annotations

import numpy as np

from pipeline.grid import Grid, pair_windows

SUB = 4  # sub-grid per cell, and pixels per cell at the viewing scale
REPEAT_RADIUS = 2  # cells: a repeat within this Chebyshev distance counts
TEXTURE_LEVELS = 8.0  # RMS of a cell's mean-removed 4x4 sub-grid (0..255): textured
SHAPE_LEVELS = 5.0  # mean-removed 4x4 sub-grids within this (0..255) are the same tile


def cell_layout(image: np.ndarray, grid: Grid) -> np.ndarray:
    """(rows * S, cols * S, 3) image layout -> (rows, cols, S, S, 3) per-cell sub-grids
    (a view): the inverse of :func:`pipeline.metrics.image_layout`."""
    return image.reshape(grid.rows, SUB, grid.cols, SUB, 3).swapaxes(1, 2)


def shape_keys(mos_sub: np.ndarray, grid: Grid) -> np.ndarray:
    """Each cell's sub-grid with its mean colour removed: (rows, cols, S*S*3) float32 in
    levels (0..255 scale), from image-layout sub means (rows*S, cols*S, 3) in 0..1."""
    return cell_keys(cell_layout(mos_sub, grid))


def cell_keys(per_cell_sub: np.ndarray) -> np.ndarray:
    """:func:`shape_keys` of cells given by their sub-grids, (..., S, S, 3) float32 BGR in
    0..1 -> (..., S*S*3) float32 levels; the same values cell by cell as for a whole
    grid, so that keys can be kept up to date for the cells that change."""
    lead = per_cell_sub.shape[:-3]
    key = (per_cell_sub * np.float32(255)).reshape(*lead, SUB * SUB, 3)
    mean = np.add.reduce(key, axis=-2, keepdims=True)
    key -= mean / np.float32(SUB * SUB)
    return key.reshape(*lead, SUB * SUB * 3)


def textured(keys: np.ndarray) -> np.ndarray:
    """Cells whose mean-removed sub-grid has an RMS of at least TEXTURE_LEVELS: (rows, cols)."""
    return np.sqrt((keys * keys).mean(-1)) >= TEXTURE_LEVELS


def _mirrored(keys: np.ndarray) -> np.ndarray:
    rows, cols = keys.shape[:2]
    return keys.reshape(rows, cols, SUB, SUB, 3)[:, :, :, ::-1].reshape(rows, cols, -1)


def repeats_within(same, rows: int, cols: int, radius: int = REPEAT_RADIUS) -> np.ndarray:
    """Cells with a partner within ``radius`` (Chebyshev) for which ``same(a, b)`` holds.

    ``same`` takes two (slice, slice) windows of the grid, shifted against each other,
    and returns the boolean map of equal pairs. Returns (rows, cols) bool.
    """
    hit = np.zeros((rows, cols), bool)
    for a, b in pair_windows(rows, cols, radius):
        eq = same(a, b)
        hit[a] |= eq
        hit[b] |= eq
    return hit


_PREFILTER = 6  # key values compared before whole keys (an exact filter)


def pixel_repeats(keys: np.ndarray, tex: np.ndarray, radius: int = REPEAT_RADIUS
                  ) -> np.ndarray:
    """Textured cells whose mean-removed sub-grid (or its mirror) recurs on a textured
    cell within ``radius``: (rows, cols) bool."""
    rows, cols = tex.shape
    hit = np.zeros((rows, cols), bool)
    windows = pair_windows(rows, cols, radius)
    for (a, b), eq in zip(windows, _same_pairs(keys, _mirrored(keys), tex, windows),
                          strict=True):
        hit[a] |= eq
        hit[b] |= eq
    return hit


def _same_pairs(keys: np.ndarray, mirror: np.ndarray, tex: np.ndarray, windows: list
                ) -> list[np.ndarray]:
    """For each pair of windows (:func:`pair_windows`), which pairs of textured cells
    have the same key, mirrored or not (window-shaped bool maps)."""
    # the first few values of each key, plane by plane (P, rows, cols): the prefilter's
    # reductions then run over whole planes, not over a short last axis
    head = np.ascontiguousarray(np.moveaxis(keys[..., :_PREFILTER], -1, 0))
    head_m = np.ascontiguousarray(np.moveaxis(mirror[..., :_PREFILTER], -1, 0))

    def close_planes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        d = np.abs(x - y)
        return np.maximum.reduce(d, axis=0) <= SHAPE_LEVELS

    out = []
    for a, b in windows:
        # within the tolerance on all values implies within it on the first few: compare
        # those first, and whole keys only for the textured pairs that pass
        ha = head[(slice(None), *a)]
        cand = tex[a] & tex[b] & (close_planes(ha, head[(slice(None), *b)])
                                  | close_planes(ha, head_m[(slice(None), *b)]))
        eq = np.zeros(cand.shape, bool)
        ka = keys[a][cand]
        eq[cand] = _close(ka, keys[b][cand]) | _close(ka, mirror[b][cand])
        out.append(eq)
    return out


def _close(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(x - y).max(-1) <= SHAPE_LEVELS


_INCREMENTAL_SHARE = 0.08  # above this share of changed cells a full recount is faster
# (measured on 4,800 cells: at 5% changed 1.5 ms against 2.8-6.8 for a recount, at 20%
# 5 ms against 2.3-6.7, at 46% 24 ms against 2.2-8.3)


class PixelRepeats:
    """:func:`pixel_repeats` of a mosaic that changes a few cells at a time, kept up to
    date: the keys, texture flags and the result of every pair of cells within the
    radius are stored, and only pairs with a changed cell are compared again. The
    result is exactly that of :func:`pixel_repeats` on the same keys: a repetitive
    mosaic (the reference's cluster mode repeats tiles everywhere) costs no more than a
    varied one, and a still one almost nothing.
    """

    def __init__(self, rows: int, cols: int, radius: int = REPEAT_RADIUS) -> None:
        self.rows, self.cols = rows, cols
        self.windows = pair_windows(rows, cols, radius)
        self.keys: np.ndarray | None = None
        self._mirror = self._tex = None
        self._same: list[np.ndarray] = []

    def update(self, sub: np.ndarray, changed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mosaic's per-cell sub-grids ``sub`` (rows, cols, S, S, 3) float32, of which
        only the cells ``changed`` (rows, cols) bool differ from the previous call (None:
        any may differ). Returns (keys (rows, cols, 48), textured (rows, cols) bool,
        repeats (rows, cols) bool); the arrays are this object's, valid until the next
        call."""
        if self.keys is None or changed is None or \
                changed.sum() > _INCREMENTAL_SHARE * changed.size:
            self.keys = cell_keys(sub)
            self._mirror = _mirrored(self.keys)
            self._tex = textured(self.keys)
            self._same = _same_pairs(self.keys, self._mirror, self._tex, self.windows)
        elif changed.any():
            r, c = np.nonzero(changed)
            self.keys[r, c] = cell_keys(sub[r, c])
            self._mirror[r, c] = _mirrored(self.keys[r, c][None])[0]
            self._tex[r, c] = textured(self.keys[r, c])
            for same, (a, b) in zip(self._same, self.windows, strict=True):
                need = changed[a] | changed[b]
                if need.any():
                    same[need] = self._pairs_at(need, a, b)
        hit = np.zeros((self.rows, self.cols), bool)
        for same, (a, b) in zip(self._same, self.windows, strict=True):
            hit[a] |= same
            hit[b] |= same
        return self.keys, self._tex, hit

    def _pairs_at(self, need: np.ndarray, a: tuple, b: tuple) -> np.ndarray:
        """The pairs of windows ``a``, ``b`` where ``need`` (a window-shaped mask) holds."""
        r, c = np.nonzero(need)
        ra, ca = r + a[0].start, c + a[1].start
        rb, cb = r + b[0].start, c + b[1].start
        ok = self._tex[ra, ca] & self._tex[rb, cb]
        ka = self.keys[ra, ca]
        return ok & (_close(ka, self.keys[rb, cb]) | _close(ka, self._mirror[rb, cb]))


def id_repeats(labels: np.ndarray, tex: np.ndarray, radius: int = REPEAT_RADIUS
               ) -> np.ndarray:
    """Textured cells whose label (tile id or group) recurs on a textured cell within
    ``radius``: (rows, cols) bool."""
    return repeats_within(lambda a, b: tex[a] & tex[b] & (labels[a] == labels[b]),
                          *tex.shape, radius)


