"""Quality metrics of a mosaic against its source: fidelity, stability, variety.

They work on any pair (source frames, pure-mosaic frames) given the grid (scale and
tile size), so they score other tools' output too; a render also feeds them its tile
ids, which makes churn and neighbour identity exact.

Per frame, with the cell grid of the mosaic:

* **Fidelity**: CIE76 ΔE between the mean colour (in CIELAB) of each cell in the
  source and in the mosaic (``delta_e_cell``), and the same on a 4x4 sub-grid of each
  cell (``delta_e_subgrid``). ``ssim_view``: SSIM (Gaussian 7x7, σ 1.5, on luma) of
  mosaic and source both downscaled so that each cell is 4x4 pixels, the viewing
  distance. Source colours are area averages over each cell's footprint in the source.
* **Stability**: among *static* cells (the source cell's mean colour moved by less
  than ΔE 2 since the previous frame), ``churn`` is the share whose mosaic cell
  changed (another tile or orientation; from pixels: mean absolute change above 3 levels), and
  ``flicker`` the mean absolute pixel change there (0..255).
* **Variety**: ``distinct_tiles`` per frame, and ``identical_neighbours``, the share of
  cells with an identical tile (same id; from pixels: 4x4 means within 2 levels) among
  their 4-neighbours. Then, over *textured* cells only (a mosaic cell whose 4x4
  sub-grid, with the cell's mean colour removed, has an RMS spread of at least
  :data:`TEXTURE_LEVELS`; a flat cell has nothing to repeat, and the share left out is
  reported as ``textured_share``):

  - ``repeats_r2``: the share of textured cells with the same tile on another textured
    cell within :data:`REPEAT_RADIUS` cells (Chebyshev distance: the 5x5 window). From
    pixels, "the same" is the 4x4 sub-grid with each cell's mean colour removed, within
    :data:`SHAPE_LEVELS` levels, mirrored or not: recolouring (a shift of the whole
    tile) does not hide a repeat. With tile ids (a render's own report) it is
    ``repeats_r2_id``, by tile id, and ``repeats_r2_group``, by near-duplicate group,
    and ``repeats_r2`` is still the pixel figure, for comparison with other tools;
  - ``distinct_share``: distinct tiles among the textured cells of a frame, as a share
    of them (by id in a render; from pixels, by the mean-removed sub-grid quantised to
    2 x SHAPE_LEVELS steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline import visibility
from pipeline.features import area_means, srgb_to_lab
from pipeline.grid import Grid

SUB = 4  # sub-grid per cell, and pixels per cell at the viewing scale
STATIC_DELTA_E = 2.0
CHANGED_LEVELS = 3.0  # pixel-based churn: mean |change| above this is a change
SAME_LEVELS = 2.0  # pixel-based identity: 4x4 means within this are the same tile
REPEAT_RADIUS = 2  # cells: a repeat within this Chebyshev distance counts
TEXTURE_LEVELS = 8.0  # RMS of a cell's mean-removed 4x4 sub-grid (0..255): textured
SHAPE_LEVELS = 5.0  # mean-removed 4x4 sub-grids within this (0..255) are the same tile


to_lab = srgb_to_lab


def sub_means(image_bgr: np.ndarray, grid: Grid, sub: int = SUB) -> np.ndarray:
    """Area-averaged colour of every sub-cell: (rows * sub, cols * sub, 3) float32 0..1.

    ``image_bgr`` (H, W, 3) uint8 may be the mosaic or the source at any resolution.
    """
    return area_means(image_bgr, grid.cols * sub, grid.rows * sub)


def source_cells(source_bgr: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """The source side of the scores: sub-cell means and each cell's mean colour in Lab.

    Returns
    -------
    src_sub : ndarray (rows * 4, cols * 4, 3), float32, BGR in 0..1.
    src_lab : ndarray (rows, cols, 3), float32, CIELAB of each cell's mean colour.
    """
    src_sub = sub_means(source_bgr, grid)
    src_cell = cv2.resize(src_sub, (grid.cols, grid.rows), interpolation=cv2.INTER_AREA)
    return src_sub, to_lab(src_cell)


def _lab_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 ΔE of two (..., 3) Lab arrays: (...) float32 (channel by channel, faster
    than ``np.linalg.norm`` over a last axis of 3)."""
    d = a - b
    return np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two single-channel float images in 0..255 (Wang et al., 2004)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (7, 7), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())


def luma(bgr01: np.ndarray) -> np.ndarray:
    """Luma (Rec. 601, 0..255) of BGR colours in 0..1, any leading shape (..., 3)."""
    return (bgr01 @ np.array([0.114, 0.587, 0.299], np.float32)) * 255.0


@dataclass
class Scores:
    """Sums over frames; :meth:`summary` turns them into the reported means."""

    frames: int = 0
    delta_e_cell: float = 0.0
    delta_e_subgrid: float = 0.0
    ssim_view: float = 0.0
    static_cells: int = 0
    churned_cells: int = 0
    flicker_sum: float = 0.0
    distinct_tiles: float = 0.0
    identical_neighbours: float = 0.0
    cells: int = 0
    textured_cells: int = 0
    repeat_pixels: int = 0
    repeat_id: int = 0
    repeat_group: int = 0
    distinct_share: float = 0.0
    by_id: bool = False
    # photo visibility: histograms of the contrast shares (pipeline.visibility) of the
    # pure mosaic and of the output as written (blend included)
    visibility: list[int] = field(default_factory=list)
    visibility_output: list[int] = field(default_factory=list)
    identified_cells: int = -1  # scoring from pixels: cells whose tile was identified

    def add(self, other: Scores) -> None:
        """Accumulate another run of frames (e.g. another segment)."""
        for name in ("frames", "delta_e_cell", "delta_e_subgrid", "ssim_view", "static_cells",
                     "churned_cells", "flicker_sum", "distinct_tiles", "identical_neighbours",
                     "cells", "textured_cells", "repeat_pixels", "repeat_id", "repeat_group",
                     "distinct_share"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.by_id = self.by_id or other.by_id
        for name in ("visibility", "visibility_output"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs:
                setattr(self, name, (np.asarray(mine or np.zeros(len(theirs), np.int64))
                                     + theirs).tolist())
        if other.identified_cells >= 0:
            self.identified_cells = max(self.identified_cells, 0) + other.identified_cells

    def add_visibility(self, own: np.ndarray, painted: np.ndarray,
                       shown: np.ndarray | None = None) -> None:
        """Count one frame's contrast shares: ``own`` (rows, cols) the luma spread of each
        cell's tile in the bank (0: none or unknown), ``painted`` that of the cell in the
        pure mosaic, ``shown`` in the output as written (None: the pure mosaic is shown)."""
        pure = visibility.share_histogram(painted, own)
        out = pure if shown is None else visibility.share_histogram(shown, own)
        for name, hist in (("visibility", pure), ("visibility_output", out)):
            mine = getattr(self, name)
            setattr(self, name, (hist + mine).tolist() if mine else hist.tolist())

    def summary(self) -> dict[str, float]:
        """Per-frame means (fidelity, variety) and static-cell shares (stability)."""
        n = max(self.frames, 1)
        return {
            "frames": self.frames,
            "delta_e_cell": self.delta_e_cell / n,
            "delta_e_subgrid": self.delta_e_subgrid / n,
            "ssim_view": self.ssim_view / n,
            "static_cells": self.static_cells,
            "churn": self.churned_cells / self.static_cells if self.static_cells else 0.0,
            "flicker": self.flicker_sum / self.static_cells if self.static_cells else 0.0,
            "distinct_tiles": self.distinct_tiles / n,
            "identical_neighbours": self.identical_neighbours / n,
            **self._variety(),
            **self._visibility(),
        }

    def _visibility(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.visibility:
            out.update(visibility.summarise(self.visibility, "visibility"))
            out.update(visibility.summarise(self.visibility_output, "visibility_output"))
            # cells showing a photo with something to see (not a featureless tile)
            out["visible_share"] = sum(self.visibility) / max(self.cells, 1)
            out["visibility_note"] = (
                f"painted luma spread over the tile's own, cells whose tile has a spread of "
                f"{visibility.MIN_SPREAD:g} levels or more")
        if self.identified_cells >= 0:
            out["identified_share"] = self.identified_cells / max(self.cells, 1)
        return out

    def _variety(self) -> dict[str, float | str]:
        t = max(self.textured_cells, 1)
        out: dict[str, float | str] = {
            "textured_share": self.textured_cells / max(self.cells, 1),
            "repeats_r2": self.repeat_pixels / t,
            "distinct_share": self.distinct_share / max(self.frames, 1),
            "variety_note": f"over textured cells only (mean-removed 4x4 RMS >= "
                            f"{TEXTURE_LEVELS:g}); repeats within {REPEAT_RADIUS} cells",
        }
        if self.by_id:
            out["repeats_r2_id"] = self.repeat_id / t
            out["repeats_r2_group"] = self.repeat_group / t
        return out

    def to_json(self) -> dict:
        """The raw sums, for caching per segment."""
        return dict(self.__dict__)


def tile_keys(ids: np.ndarray, orients: np.ndarray | None) -> np.ndarray:
    """One integer per (tile id, orientation code): what churn by id compares, any
    shape, int64."""
    key = ids.astype(np.int64) * 8
    return key + orients.astype(np.int64) if orients is not None else key


def identical_neighbour_share(same_right: np.ndarray, same_down: np.ndarray) -> float:
    """Share of cells equal to at least one 4-neighbour, from pairwise equality maps.

    ``same_right`` (rows, cols - 1): cell equals its right neighbour; ``same_down``
    (rows - 1, cols): cell equals the one below.
    """
    rows, cols = same_right.shape[0], same_down.shape[1]
    hit = np.zeros((rows, cols), bool)
    hit[:, :-1] |= same_right
    hit[:, 1:] |= same_right
    hit[:-1, :] |= same_down
    hit[1:, :] |= same_down
    return float(hit.mean())


def shape_keys(mos_sub: np.ndarray, grid: Grid) -> np.ndarray:
    """Each cell's sub-grid with its mean colour removed: (rows, cols, S*S*3) float32 in
    levels (0..255 scale), from image-layout sub means (rows*S, cols*S, 3) in 0..1."""
    return cell_keys(_cell_layout(mos_sub, grid))


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


def pair_windows(rows: int, cols: int, radius: int = REPEAT_RADIUS) -> list[tuple]:
    """Every offset within ``radius`` (Chebyshev), once: pairs of (slice, slice) windows
    of a (rows, cols) grid, the second shifted against the first."""
    out = []
    for dy in range(radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy == 0 and dx <= 0) or dy >= rows or abs(dx) >= cols:
                continue
            out.append(((slice(0, rows - dy), slice(max(0, -dx), cols - max(0, dx))),
                        (slice(dy, rows), slice(max(0, dx), cols - max(0, -dx)))))
    return out


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


class FrameScorer:
    """Score a sequence of (source, mosaic) frames one pair at a time.

    ``groups`` (N,) int, optional: near-duplicate group per tile id, for
    ``repeats_r2_group`` (without it each tile is its own group). ``identifier``,
    optional, scoring from pixels: the tile bank's :class:`~pipeline.visibility.
    TileIdentifier`, which tells each cell's tile for the photo visibility score (a
    render's painters count it themselves, from the tiles they place).
    """

    def __init__(self, grid: Grid, groups: np.ndarray | None = None,
                 identifier: visibility.TileIdentifier | None = None) -> None:
        self.grid = grid
        self.groups = groups
        self.identifier = identifier
        self.scores = Scores()
        self._prev_src_lab: np.ndarray | None = None
        self._prev_key: np.ndarray | None = None
        self._prev_mosaic: np.ndarray | None = None
        self._repeats = PixelRepeats(grid.rows, grid.cols)
        self._own = np.zeros((grid.rows, grid.cols), np.float32)  # identified tiles' spread

    def reset(self) -> None:
        """Forget the previous frame (stability restarts)."""
        self._prev_src_lab = self._prev_key = self._prev_mosaic = None
        self._repeats = PixelRepeats(self.grid.rows, self.grid.cols)

    def state(self) -> dict[str, np.ndarray]:
        """What stability needs of the last frame (tile-id scoring), to carry it over."""
        if self._prev_src_lab is None or self._prev_key is None:
            return {}
        return {"prev_src_lab": self._prev_src_lab, "prev_key": self._prev_key}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state` of the previous segment's scorer."""
        if "prev_src_lab" in state:
            self._prev_src_lab, self._prev_key = state["prev_src_lab"], state["prev_key"]

    def update(self, source_bgr: np.ndarray, mosaic_bgr: np.ndarray | None = None,
               ids: np.ndarray | None = None, orients: np.ndarray | None = None,
               cell_change: np.ndarray | None = None, mosaic_sub: np.ndarray | None = None,
               mosaic_sub_lab: np.ndarray | None = None, changed: np.ndarray | None = None
               ) -> None:
        """Add one frame.

        Parameters
        ----------
        source_bgr : ndarray (H, W, 3), uint8, the source frame at any resolution.
        mosaic_bgr : ndarray (rows * tile_h, cols * tile_w, 3), uint8, the pure mosaic;
            or, instead, its per-cell sub-grid means ``mosaic_sub`` and their Lab values
            ``mosaic_sub_lab``, ndarrays (rows, cols, 4, 4, 3) float32 (BGR in 0..1).
        ids, orients : optional ndarrays (rows, cols): tile id and orientation code per cell.
        cell_change : optional ndarray (rows, cols), float: mean absolute pixel change of
            each mosaic cell since the previous frame (needs ``mosaic_bgr`` if absent).
        changed : optional ndarray (rows, cols), bool: the only cells of ``mosaic_sub``
            that may differ from the previous call's (the variety scores are then kept up
            to date for them alone, :class:`PixelRepeats`); None: any may.
        """
        g, s = self.grid, self.scores
        src_sub, src_lab = source_cells(source_bgr, g)
        if mosaic_sub is None:
            mos_sub = sub_means(mosaic_bgr, g)
            mos_sub_lab = to_lab(mos_sub)
            mosaic_sub = _cell_layout(mos_sub, g)
            changed = None
        else:
            mos_sub = _image_layout(mosaic_sub)
            mos_sub_lab = _image_layout(mosaic_sub_lab)
        mos_cell = cv2.resize(mos_sub, (g.cols, g.rows), interpolation=cv2.INTER_AREA)
        mos_lab = to_lab(mos_cell)
        s.delta_e_cell += float(_lab_distance(src_lab, mos_lab).mean())
        s.delta_e_subgrid += float(_lab_distance(to_lab(src_sub), mos_sub_lab).mean())
        s.ssim_view += ssim(luma(src_sub), luma(mos_sub))
        if ids is not None:
            key = tile_keys(ids, orients)
            s.distinct_tiles += len(np.unique(ids))
            same_r, same_d = ids[:, 1:] == ids[:, :-1], ids[1:, :] == ids[:-1, :]
        else:
            key = (mos_sub * 255).reshape(g.rows, SUB, g.cols, SUB, 3).swapaxes(1, 2)
            key = key.reshape(g.rows, g.cols, -1)
            same_r = np.abs(key[:, 1:] - key[:, :-1]).max(-1) <= SAME_LEVELS
            same_d = np.abs(key[1:, :] - key[:-1, :]).max(-1) <= SAME_LEVELS
            s.distinct_tiles += _distinct_by_pixels(key)
        s.identical_neighbours += identical_neighbour_share(same_r, same_d)
        self._variety(mosaic_sub, ids, changed)
        if cell_change is None:
            first = self._prev_mosaic is None
            cell_change = self._pixel_change(mosaic_bgr)
            if self.identifier is not None:
                self._identified_visibility(mosaic_bgr, None if first else
                                            cell_change > CHANGED_LEVELS)
        if self._prev_src_lab is not None:
            static = np.linalg.norm(src_lab - self._prev_src_lab, axis=-1) < STATIC_DELTA_E
            changed = key != self._prev_key if ids is not None else cell_change > CHANGED_LEVELS
            s.static_cells += int(static.sum())
            s.churned_cells += int((changed & static).sum())
            s.flicker_sum += float(cell_change[static].sum())
        s.frames += 1
        self._prev_src_lab, self._prev_key = src_lab, key

    def _variety(self, per_cell_sub: np.ndarray, ids: np.ndarray | None,
                 changed: np.ndarray | None) -> None:
        """Repeats within the radius and distinct tiles, over the textured cells."""
        s = self.scores
        keys, tex, repeats = self._repeats.update(per_cell_sub, changed)
        n_tex = int(tex.sum())
        s.cells += tex.size
        s.textured_cells += n_tex
        s.repeat_pixels += int(repeats.sum())
        if ids is not None:
            s.by_id = True
            s.repeat_id += int(id_repeats(ids, tex).sum())
            groups = ids if self.groups is None else self.groups[np.maximum(ids, 0)]
            s.repeat_group += int(id_repeats(groups, tex).sum())
            distinct = len(np.unique(ids[tex]))
        else:
            q = np.round(keys[tex] / (2 * SHAPE_LEVELS)).astype(np.int32)
            distinct = len(np.unique(q, axis=0)) if n_tex else 0
        s.distinct_share += distinct / n_tex if n_tex else 1.0

    def _identified_visibility(self, mosaic_bgr: np.ndarray, changed: np.ndarray | None
                               ) -> None:
        """Photo visibility from pixels: each cell's tile identified (again only where the
        cell ``changed``, (rows, cols) bool; None: every cell), its bank spread against
        the cell's own."""
        g = self.grid
        cells = mosaic_bgr.reshape(g.rows, g.tile_h, g.cols, g.tile_w, 3).swapaxes(1, 2)
        where = np.ones((g.rows, g.cols), bool) if changed is None else changed
        r, c = np.nonzero(where)
        ids, _ = self.identifier.identify(np.ascontiguousarray(cells[r, c]))
        self._own[r, c] = np.where(ids >= 0, self.identifier.spread[np.maximum(ids, 0)], 0)
        painted = visibility.luma_spread(cells.reshape(-1, g.tile_h, g.tile_w, 3)).reshape(
            g.rows, g.cols)
        self.scores.add_visibility(self._own, painted)
        self.scores.identified_cells = max(self.scores.identified_cells, 0) + int(
            (self._own > 0).sum())  # any tile, flat ones too

    def _pixel_change(self, mosaic_bgr: np.ndarray) -> np.ndarray:
        """Per-cell mean absolute change against the previous mosaic frame."""
        g = self.grid
        prev, self._prev_mosaic = self._prev_mosaic, mosaic_bgr.copy()
        if prev is None:
            return np.zeros((g.rows, g.cols), np.float32)
        diff = cv2.absdiff(mosaic_bgr, prev).astype(np.float32).mean(axis=-1)
        return cv2.resize(diff, (g.cols, g.rows), interpolation=cv2.INTER_AREA)


def _cell_layout(image: np.ndarray, grid: Grid) -> np.ndarray:
    """(rows * S, cols * S, 3) image layout -> (rows, cols, S, S, 3) per-cell sub-grids
    (a view): the inverse of :func:`_image_layout`."""
    return image.reshape(grid.rows, SUB, grid.cols, SUB, 3).swapaxes(1, 2)


def _image_layout(per_cell: np.ndarray) -> np.ndarray:
    """(rows, cols, S, S, 3) per-cell sub-grids -> (rows * S, cols * S, 3) image layout."""
    rows, cols, sub = per_cell.shape[:3]
    return np.ascontiguousarray(per_cell.swapaxes(1, 2)).reshape(rows * sub, cols * sub, 3)


def _distinct_by_pixels(key: np.ndarray) -> int:
    """Distinct cells by their 4x4 colour means, quantised to SAME_LEVELS steps."""
    q = np.round(key.reshape(-1, key.shape[-1]) / (2 * SAME_LEVELS)).astype(np.int32)
    return len(np.unique(q, axis=0))


def score_videos(source: str, mosaic: str, scale: float, tile_hw: tuple[int, int],
                 max_frames: int | None = None, progress: bool = False,
                 bank: np.ndarray | None = None) -> dict[str, float]:
    """Score a pure-mosaic video against its source video, frame by frame.

    The cell grid is the one a render with ``scale`` and tiles of ``tile_hw`` (h, w) makes
    of the source; the mosaic must have that size. Tile identity comes from the pixels;
    with ``bank`` (N, h, w, 3) uint8, an index's tiles, each cell's tile is identified in
    it for the photo visibility score.
    """
    from tqdm import tqdm

    from pipeline.errors import VideoError
    from pipeline.grid import make_grid
    from pipeline.video import FrameReader, probe

    src_info, mos_info = probe(source), probe(mosaic)
    grid = make_grid(src_info.height, src_info.width, tile_hw, scale)
    if (mos_info.width, mos_info.height) != (grid.out_w, grid.out_h):
        raise VideoError(f"{mosaic}: {mos_info.width}x{mos_info.height} is not the "
                         f"{grid.out_w}x{grid.out_h} mosaic of {source} at scale {scale} "
                         f"with {tile_hw[1]}x{tile_hw[0]} tiles")
    count = min(src_info.frames, mos_info.frames, max_frames or src_info.frames)
    identifier = visibility.TileIdentifier(bank) if bank is not None else None
    scorer = FrameScorer(grid, identifier=identifier)
    frames = zip(FrameReader(src_info, 0, count, slack=2), FrameReader(mos_info, 0, count,
                                                                       slack=2), strict=True)
    for src, mos in tqdm(frames, total=count, desc="score", unit="frames",
                         disable=None if progress else True):
        scorer.update(src, mos)
    return scorer.scores.summary()
