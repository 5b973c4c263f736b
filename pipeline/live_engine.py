"""The live mosaic's engine: the render's planner and painter, driven one frame at a time.

This module is the only part of ``mosaic live`` that touches the planner engine
(:class:`pipeline.plan.PlanEngine`, the render's, fed one frame at a time) and the
painter (:class:`pipeline.compose.Canvas`); the reader, the loop, the server and the
growth use its small interface:

* :class:`TilePool`: the index's tiles, held in memory, and tiles grown live (faces),
  with their features, clusters and near-duplicate groups; nothing is written to disk.
* :class:`LiveEngine`: ``step(frame)`` plans one frame as the render does (activity
  mask, settling and scene cuts, the matching mode's search, hysteresis, the variety
  rules, recolour differences and contrast ratios), carries its state to the next frame
  and paints only the cells that changed; ``shown(frame, alpha)`` is the frame to show;
  ``configure(config, grid)`` applies new settings; ``grow(tiles)`` adds tiles.

A grown tile *debuts*: on the frame after it joins, it is placed in the cell whose
source it fits best (in the search's own features); from then on it competes by the
usual rules. Without that, a face among 40,000 photos might never be seen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from pipeline.assign import load_compiled
from pipeline.compose import Canvas, blend, compiled_placing
from pipeline.config import RenderConfig
from pipeline.features import colour_histogram, lab_grid_means
from pipeline.grid import Grid, cell_views
from pipeline.index import TileIndex
from pipeline.matching import nearest_by_cosine, search_features
from pipeline.modes import NearestMode, RefinedMode, matching_mode
from pipeline.plan import PlanEngine, PlanState
from pipeline.search import compiled_scan
from pipeline.tone import colour_diffs, contrast_ratios, gains, luma_grid, mean_colours, shifts
from pipeline.visibility import bank_spread


class TilePool:
    """The tiles of ``index`` in memory, with room for ``room`` grown ones (ids from
    ``len(index.tiles)`` on). Arrays hold ``capacity`` rows; the first :attr:`n` count.

    bank (capacity, h, w, 3) uint8 BGR; hist, lab float32 features; labels int32 (kept
    cluster or -1); groups int64; spread float32 (luma spread); means (capacity, 3) and
    grids (capacity, 16) float32, each tile's mean colour (0..255) and 4x4 luma grid.
    """

    def __init__(self, index: TileIndex, room: int = 2048) -> None:
        n, cap = len(index.tiles), len(index.tiles) + room
        self.base, self.n, self.capacity = index, n, cap
        self.bins = int(index.manifest["params"]["hist_bins"])
        self.lab_grid = int(index.manifest["params"]["lab_grid"])
        self.bank = np.zeros((cap, *index.tiles.shape[1:]), np.uint8)
        self.bank[:n] = index.tiles
        groups = np.asarray(index.groups if index.groups is not None else np.arange(n))
        self.hist = _grow(index.hist, cap, np.float32)
        self.lab = _grow(index.lab, cap, np.float32)
        self.labels = _grow(index.labels, cap, np.int32)
        self.groups = _grow(groups, cap, np.int64)
        self.spread = np.zeros(cap, np.float32)
        self.means = np.zeros((cap, 3), np.float32)
        self.grids = np.zeros((cap, 16), np.float32)
        for lo in range(0, n, 4096):
            self._measure(lo, self.bank[lo:min(n, lo + 4096)])
        # the index's own arrays (memory maps of its files) are no longer needed
        self.base = dataclasses.replace(index, tiles=self.bank[:n], hist=self.hist[:n],
                                        lab=self.lab[:n], groups=self.groups[:n])
        self.first_grown = n  # tile ids from here on are grown ones

    @property
    def tile_hw(self) -> tuple[int, int]:
        return int(self.bank.shape[1]), int(self.bank.shape[2])

    def _measure(self, lo: int, tiles: np.ndarray) -> None:
        hi = lo + len(tiles)
        self.spread[lo:hi] = bank_spread(tiles)
        self.means[lo:hi] = mean_colours(tiles)
        self.grids[lo:hi] = luma_grid(tiles)

    def index(self) -> TileIndex:
        """The pool as a tile index (views of its first :attr:`n` rows)."""
        n = self.n
        return dataclasses.replace(self.base, tiles=self.bank[:n], hist=self.hist[:n],
                                   lab=self.lab[:n], labels=self.labels[:n],
                                   groups=self.groups[:n])

    def add(self, tiles: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Append ``tiles`` (k, h, w, 3) uint8 in kept clusters ``labels`` (k,), each its
        own near-duplicate group; their ids (k,) int64 (fewer when the pool is full)."""
        k = min(len(tiles), self.capacity - self.n)
        lo, hi = self.n, self.n + k
        self.bank[lo:hi] = tiles[:k]
        self.hist[lo:hi] = colour_histogram(tiles[:k], self.bins)
        self.lab[lo:hi] = lab_grid_means(tiles[:k], self.lab_grid)
        self.labels[lo:hi] = labels[:k]
        self.groups[lo:hi] = self.groups[:lo].max() + 1 + np.arange(k) if lo else np.arange(k)
        self._measure(lo, self.bank[lo:hi])
        self.n = hi
        return np.arange(lo, hi, dtype=np.int64)


def _grow(a: np.ndarray, rows: int, dtype: type) -> np.ndarray:
    out = np.zeros((rows, *np.shape(a)[1:]), dtype)
    out[:len(a)] = a
    return out


@dataclass(frozen=True)
class LiveStep:
    """One frame's work: cells decided, cells (re)painted, tiles that debuted."""

    decided: int
    painted: int
    debuts: tuple[int, ...] = ()


class LiveEngine:
    """Plans and paints one frame at a time on ``grid`` from ``pool`` with ``config``."""

    def __init__(self, pool: TilePool, config: RenderConfig, grid: Grid) -> None:
        self.pool, self.config = pool, config
        self._debuts: list[int] = []
        self._start(grid)

    def _start(self, grid: Grid) -> None:
        self.grid = grid
        self.planner = _planner(self.pool, grid, self.config)
        self.state: PlanState = self.planner.start(seed=self.config.seed)
        self.canvas = Canvas(grid, self.pool.bank)

    def _replan(self) -> None:
        """A new planner (new matching options or tiles) on the same canvas and tracking."""
        canvas = self.state.canvas
        tracking = self.state.tracking() if canvas.placed else None  # after a frame only
        self.planner = _planner(self.pool, self.grid, self.config)
        self.state = self.planner.start(canvas, tracking, self.config.seed)

    def configure(self, config: RenderConfig, grid: Grid) -> None:
        """Apply new settings: a new grid starts afresh; new planning options (matching
        mode, recolour strength) keep the canvas; paint-only ones repaint it."""
        old, self.config = self.config, config
        if grid != self.grid:
            self._start(grid)
        elif (old.matching, old.recolour) != (config.matching, config.recolour):
            self._replan()
            self._repaint()
        elif old.tone != config.tone:
            self._repaint()

    def _strengths(self) -> tuple[float, float]:
        """Paint-time recolour and tone (0 where the matching mode does not recolour)."""
        cfg = self.config
        return (cfg.recolour, cfg.tone) if cfg.recolours else (0.0, 0.0)

    def _repaint(self) -> None:
        recolour, tone = self._strengths()
        s = self.state.canvas
        self.canvas = Canvas(self.grid, self.pool.bank)
        self.canvas.reset(s.ids, s.orients, shifts(s.diffs, recolour), gains(s.ratios, tone))

    def grow(self, tiles: np.ndarray, debut: bool = True) -> np.ndarray:
        """Add ``tiles`` (k, h, w, 3) uint8 to the pool (each filed under the cluster a
        search would look for it in); with ``debut``, they debut on the next frame.
        Their ids (fewer when the pool is full)."""
        mode, cfg = self.planner.mode, self.config
        if isinstance(mode, NearestMode) and not isinstance(mode, RefinedMode):
            feats = lab_grid_means(tiles, self.pool.lab_grid)
            q = search_features(feats, cfg.mean_weight, cfg.recolour)
            labels = ((q[:, None, :] - mode.search.centroids[None]) ** 2).sum(-1).argmin(1)
        else:  # the cluster modes look for tiles by colour histogram
            centers = np.asarray(self.pool.base.centers)
            labels = nearest_by_cosine(colour_histogram(tiles, self.pool.bins), centers)
        ids = self.pool.add(tiles, labels)
        if not len(ids):
            return ids
        self._replan()
        self._repaint()  # the canvas's bank statistics include the new tiles
        if debut:
            self._debuts.extend(ids.tolist())
        return ids

    def showing(self, ids: np.ndarray) -> np.ndarray:
        """Which of tile ``ids`` (k,) are on the canvas now, (k,) bool."""
        return np.isin(ids, self.state.canvas.ids)

    def step(self, frame: np.ndarray) -> LiveStep:
        """Plan frame ``frame`` (H, W, 3) uint8 BGR, at the grid's source size, and
        paint its changes."""
        change, self.state = self.planner.step(self.state, frame)
        cells, ids = change.cells, change.ids
        orients, diffs, ratios = change.orients, change.diffs, change.ratios
        debuts = self._debut(cell_views(frame, self.grid)) if self._debuts else {}
        if debuts:
            keep = ~np.isin(cells, list(debuts))
            d_cells = np.fromiter(debuts, np.int64, len(debuts))
            d_ids = np.fromiter(debuts.values(), np.int64, len(debuts))
            d_diffs, d_ratios = self._place_debuts(d_cells, d_ids, frame)
            cells = np.concatenate([cells[keep], d_cells])
            ids = np.concatenate([ids[keep], d_ids])
            orients = np.concatenate([orients[keep], np.zeros(len(debuts), np.uint8)])
            diffs = np.concatenate([diffs[keep], d_diffs])
            ratios = np.concatenate([ratios[keep], d_ratios])
        recolour, tone = self._strengths()
        self.canvas.place(cells, ids, orients.astype(np.uint8), shifts(diffs, recolour),
                          gain=gains(ratios, tone))
        return LiveStep(change.active, len(cells), tuple(debuts.values()))

    def _place_debuts(self, cells: np.ndarray, ids: np.ndarray, frame: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Put tiles ``ids`` on the plan's canvas at ``cells`` (as they are: orientation
        0); their recolour differences (k, 3) int16 and contrast ratios (k,) uint8."""
        views = cell_views(frame, self.grid)[cells]
        means, grids = self.pool.means[ids], self.pool.grids[ids]
        diffs = colour_diffs(views, means)
        ratios = contrast_ratios(luma_grid(views), grids, np.zeros(len(ids), np.uint8))
        canvas = self.state.canvas
        r, c = np.divmod(cells, self.grid.cols)
        canvas.ids[r, c], canvas.orients[r, c] = ids, 0
        canvas.diffs[r, c], canvas.ratios[r, c] = diffs, ratios
        return diffs, ratios

    def _debut(self, views: np.ndarray) -> dict[int, int]:
        """``{cell: tile id}`` for the tiles waiting to debut: each in the cell whose
        source ``views`` (cells, h, w, 3) is nearest it in the search's features (not one
        that shows a grown tile already)."""
        cfg, ids = self.config, np.asarray(self._debuts, np.int64)
        self._debuts = []
        grid = self.pool.lab_grid
        q = search_features(lab_grid_means(views, grid), cfg.mean_weight, cfg.recolour)
        t = search_features(self.pool.lab[ids], cfg.mean_weight, cfg.recolour)
        d = ((t[:, None, :] - q[None]) ** 2).sum(-1)
        d[:, self.state.canvas.ids.ravel() >= self.pool.first_grown] = np.inf
        out: dict[int, int] = {}
        for i, tile in enumerate(ids):
            cell = int(d[i].argmin())
            if np.isfinite(d[i, cell]):
                out[cell] = int(tile)
                d[:, cell] = np.inf
        return out

    def shown(self, frame: np.ndarray, alpha: float, out: np.ndarray | None = None
              ) -> np.ndarray:
        """The frame to show: the mosaic, with ``frame`` blended over it at ``alpha``
        (into ``out`` when given; the canvas itself when ``alpha`` is 0: read it before
        the next :meth:`step`), (out_h, out_w, 3) uint8 BGR."""
        if alpha <= 0:
            return self.canvas.image
        if out is None or out.shape != self.canvas.image.shape:
            out = np.empty_like(self.canvas.image)
        return blend(self.canvas.image, frame, alpha, out)


def warm_up() -> None:
    """Import what the first frames need (the joint assignment's and the cluster modes'
    libraries, the compiled variety rules: from now on the choice's, the compiled search
    and tile placement, compiled here on a fresh install), so that they do not stall
    the live loop."""
    import scipy.sparse.csgraph  # noqa: F401
    import sklearn.cluster  # noqa: F401

    load_compiled()
    compiled_scan()
    compiled_placing(0)


def _planner(pool: TilePool, grid: Grid, config: RenderConfig) -> PlanEngine:
    """The render's planner engine over the pool (grown tiles included), with the
    pool's own tile statistics and blank-tile flags (measured once, not per planner)."""
    index = pool.index()
    n = pool.n
    flat = pool.spread[:n] < config.flat_spread if config.flat_spread > 0 else None
    mode = matching_mode(index, grid, config, lambda ids: pool.means[ids], flat)
    return PlanEngine(grid, index, config, read_tiles=lambda ids: pool.bank[ids], mode=mode)
