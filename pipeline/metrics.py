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
  their 4-neighbours; over textured cells only (:mod:`pipeline.repeats`: the share left
  out is ``textured_share``), ``repeats_r2`` (from pixels; with tile ids also
  ``repeats_r2_id`` and ``repeats_r2_group``, by near-duplicate group) and
  ``distinct_share``, distinct tiles among the textured cells of a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline import visibility
from pipeline.features import area_means, luma, srgb_to_lab
from pipeline.grid import Grid
from pipeline.repeats import (
    REPEAT_RADIUS,
    SHAPE_LEVELS,
    SUB,
    TEXTURE_LEVELS,
    PixelRepeats,
    cell_layout,
    id_repeats,
)

STATIC_DELTA_E = 2.0
CHANGED_LEVELS = 3.0  # pixel-based churn: mean |change| above this is a change
SAME_LEVELS = 2.0  # pixel-based identity: 4x4 means within this are the same tile


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
    every: int = 1  # a render's sample: frames 0, N, 2N... scored (each against the one before)

    def add(self, other: Scores) -> None:
        """Accumulate another run of frames (e.g. another segment)."""
        for name in ("frames", "delta_e_cell", "delta_e_subgrid", "ssim_view", "static_cells",
                     "churned_cells", "flicker_sum", "distinct_tiles", "identical_neighbours",
                     "cells", "textured_cells", "repeat_pixels", "repeat_id", "repeat_group",
                     "distinct_share"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.by_id = self.by_id or other.by_id
        self.every = max(self.every, other.every)
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
            "scored_every": self.every,
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

    def update_pixels(self, source_bgr: np.ndarray, mosaic_bgr: np.ndarray) -> None:
        """Add one frame scored from pixels alone (any tool's mosaic).

        ``source_bgr`` (H, W, 3) uint8 at any resolution; ``mosaic_bgr`` (rows * tile_h,
        cols * tile_w, 3) uint8, the pure mosaic. Tile identity comes from the pixels
        (4x4 means within :data:`SAME_LEVELS`), churn from each cell's mean absolute
        change (above :data:`CHANGED_LEVELS`).
        """
        g, s = self.grid, self.scores
        src_sub, src_lab = source_cells(source_bgr, g)
        mos_sub = sub_means(mosaic_bgr, g)
        self._fidelity(src_sub, src_lab, mos_sub, to_lab(mos_sub))
        key = (mos_sub * 255).reshape(g.rows, SUB, g.cols, SUB, 3).swapaxes(1, 2)
        key = key.reshape(g.rows, g.cols, -1)
        same_r = np.abs(key[:, 1:] - key[:, :-1]).max(-1) <= SAME_LEVELS
        same_d = np.abs(key[1:, :] - key[:-1, :]).max(-1) <= SAME_LEVELS
        s.distinct_tiles += _distinct_by_pixels(key)
        s.identical_neighbours += identical_neighbour_share(same_r, same_d)
        self._variety(cell_layout(mos_sub, g), None, None)
        first = self._prev_mosaic is None
        cell_change = self._pixel_change(mosaic_bgr)
        if self.identifier is not None:
            self._identified_visibility(mosaic_bgr, None if first else
                                        cell_change > CHANGED_LEVELS)
        self._stability(src_lab, key, cell_change, lambda: cell_change > CHANGED_LEVELS)

    def update_ids(self, source_bgr: np.ndarray, ids: np.ndarray, orients: np.ndarray,
                   cell_change: np.ndarray, mosaic_sub: np.ndarray,
                   mosaic_sub_lab: np.ndarray, changed: np.ndarray | None = None) -> None:
        """Add one frame of a render's own mosaic, whose tiles are known.

        ``ids``, ``orients`` (rows, cols): tile id and orientation code per cell;
        ``cell_change`` (rows, cols) float: mean absolute pixel change of each mosaic
        cell since the previous frame; ``mosaic_sub``, ``mosaic_sub_lab`` (rows, cols, 4,
        4, 3) float32: each cell's sub-grid mean colours (BGR 0..1) and their Lab values;
        ``changed`` (rows, cols) bool: the only cells of ``mosaic_sub`` that may differ
        from the previous call's (the variety scores are then kept up to date for them
        alone, :class:`pipeline.repeats.PixelRepeats`); None: any may.
        """
        g, s = self.grid, self.scores
        src_sub, src_lab = source_cells(source_bgr, g)
        self._fidelity(src_sub, src_lab, image_layout(mosaic_sub), image_layout(mosaic_sub_lab))
        key = tile_keys(ids, orients)
        s.distinct_tiles += len(np.unique(ids))
        same_r, same_d = ids[:, 1:] == ids[:, :-1], ids[1:, :] == ids[:-1, :]
        s.identical_neighbours += identical_neighbour_share(same_r, same_d)
        self._variety(mosaic_sub, ids, changed)
        self._stability(src_lab, key, cell_change, lambda: key != self._prev_key)

    def _fidelity(self, src_sub: np.ndarray, src_lab: np.ndarray, mos_sub: np.ndarray,
                  mos_sub_lab: np.ndarray) -> None:
        """Cell and sub-grid ΔE and viewing-scale SSIM, from image-layout sub-grid means
        (rows * 4, cols * 4, 3) float32 and the source's Lab cell colours."""
        g, s = self.grid, self.scores
        mos_cell = cv2.resize(mos_sub, (g.cols, g.rows), interpolation=cv2.INTER_AREA)
        mos_lab = to_lab(mos_cell)
        s.delta_e_cell += float(_lab_distance(src_lab, mos_lab).mean())
        s.delta_e_subgrid += float(_lab_distance(to_lab(src_sub), mos_sub_lab).mean())
        s.ssim_view += ssim(luma(src_sub), luma(mos_sub))

    def _stability(self, src_lab: np.ndarray, key: np.ndarray, cell_change: np.ndarray,
                   churned) -> None:
        """Churn and flicker among the static cells (``churned()``: the cells whose tile
        changed), then the frame is counted and becomes the previous one."""
        s = self.scores
        if self._prev_src_lab is not None:
            static = np.linalg.norm(src_lab - self._prev_src_lab, axis=-1) < STATIC_DELTA_E
            s.static_cells += int(static.sum())
            s.churned_cells += int((churned() & static).sum())
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


def image_layout(per_cell: np.ndarray) -> np.ndarray:
    """(rows, cols, S, S, 3) per-cell sub-grids -> (rows * S, cols * S, 3) image layout."""
    rows, cols, sub = per_cell.shape[:3]
    return np.ascontiguousarray(per_cell.swapaxes(1, 2)).reshape(rows * sub, cols * sub, 3)


def _distinct_by_pixels(key: np.ndarray) -> int:
    """Distinct cells by their 4x4 colour means, quantised to SAME_LEVELS steps."""
    q = np.round(key.reshape(-1, key.shape[-1]) / (2 * SAME_LEVELS)).astype(np.int32)
    return len(np.unique(q, axis=0))
