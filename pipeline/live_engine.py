"""The live mosaic's engine: the render's planner and painter, driven one frame at a time.

This module is the only part of ``mosaic live`` that touches the planner's and the
painter's pieces (:mod:`pipeline.plan`, :mod:`pipeline.compose`); the reader, the loop,
the server and the growth use its small interface:

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
from pathlib import Path

import numpy as np

from pipeline.activity import Settler
from pipeline.compose import Canvas, blend
from pipeline.config import RenderConfig
from pipeline.features import block_means, colour_histogram, lab_grid_means
from pipeline.grid import ActivityTracker, Grid, cell_views
from pipeline.index import TileIndex
from pipeline.matching import TileAssigner, nearest_by_cosine, search_features
from pipeline.paint import gains, shifts
from pipeline.plan import (
    DIFF_SCALE,
    RATIO_SCALE,
    CanvasState,
    Planner,
    cell_lab,
    contrast_ratios,
    luma_grid,
    recolours,
)
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
        self.means[lo:hi] = block_means(tiles, 1).reshape(-1, 3) * 255
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
        cfg = self.config
        self.grid = grid
        self.planner = _planner(self.pool, grid, cfg)
        self.tracker = ActivityTracker(grid, cfg.activity_threshold, cfg.active_fraction)
        self.settler = Settler(grid.cells, cfg.settle, None, cfg.scene_cut)
        self.state = CanvasState.empty(grid)
        self.canvas = Canvas(grid, self.pool.bank)
        self._fresh = True

    def configure(self, config: RenderConfig, grid: Grid) -> None:
        """Apply new settings: a new grid starts afresh; new planning options (matching
        mode, recolour strength) keep the canvas; paint-only ones repaint it."""
        old, self.config = self.config, config
        if grid != self.grid:
            self._start(grid)
        elif (old.matching, old.recolour) != (config.matching, config.recolour):
            self.planner = _planner(self.pool, grid, config)
            self._repaint()
        elif old.tone != config.tone:
            self._repaint()

    def _strengths(self) -> tuple[float, float]:
        """Paint-time recolour and tone (0 where the matching mode does not recolour)."""
        on = recolours(self.config)
        return (self.config.recolour, self.config.tone) if on else (0.0, 0.0)

    def _repaint(self) -> None:
        recolour, tone = self._strengths()
        s = self.state
        self.canvas = Canvas(self.grid, self.pool.bank)
        self.canvas.reset(s.ids, s.orients, shifts(s.diffs, recolour), gains(s.ratios, tone))

    def grow(self, tiles: np.ndarray, debut: bool = True) -> np.ndarray:
        """Add ``tiles`` (k, h, w, 3) uint8 to the pool (each filed under the cluster a
        search would look for it in); with ``debut``, they debut on the next frame.
        Their ids (fewer when the pool is full)."""
        feats = lab_grid_means(tiles, self.pool.lab_grid)
        p = self.planner
        if self.config.matching == "nearest":
            q = search_features(feats, self.config.mean_weight, self.config.recolour)
            d = ((q[:, None, :] - p.lab_centroids[None]) ** 2).sum(-1)
            labels = d.argmin(1)
        else:
            labels = nearest_by_cosine(colour_histogram(tiles, self.pool.bins),
                                       p.tiles.centers)
        ids = self.pool.add(tiles, labels)
        if not len(ids):
            return ids
        self.planner = _planner(self.pool, self.grid, self.config)
        self._repaint()  # the canvas's bank statistics include the new tiles
        if debut:
            self._debuts.extend(ids.tolist())
        return ids

    def showing(self, ids: np.ndarray) -> np.ndarray:
        """Which of tile ``ids`` (k,) are on the canvas now, (k,) bool."""
        return np.isin(ids, self.state.ids)

    def step(self, frame: np.ndarray) -> LiveStep:
        """Plan frame ``frame`` (H, W, 3) uint8 BGR, at the grid's source size, and
        paint its changes."""
        p, grid = self.planner, self.grid
        changed = self.tracker.update(frame).ravel()
        decision = self.settler.decide(changed, cell_lab(frame, grid), self._fresh)
        decision = p._gate(decision, self._fresh and not self.state.placed)
        self._fresh = False
        views = cell_views(frame, grid)
        plan = p._plan_batch([views[decision.cells]], [decision.cells])[0]
        placed, ids, orients = p._choose(decision.cells, plan, self.state, decision)
        debuts = self._debut(views, placed) if self._debuts else {}
        if debuts:
            keep = ~np.isin(placed, list(debuts))
            placed = np.concatenate([placed[keep], list(debuts)]).astype(np.int64)
            ids = np.concatenate([ids[keep], list(debuts.values())]).astype(np.int64)
            orients = np.concatenate([orients[keep], np.zeros(len(debuts), np.uint8)])
        self._place(placed, ids, orients.astype(np.uint8), views[placed])
        return LiveStep(len(decision.cells), len(placed), tuple(debuts.values()))

    def _place(self, cells: np.ndarray, ids: np.ndarray, orients: np.ndarray,
               views: np.ndarray) -> None:
        """Put tiles on the plan's canvas and paint them (recolour differences and
        contrast ratios measured against the cells' ``views``)."""
        diffs = np.zeros((len(cells), 3), np.int16)
        ratios = np.full(len(cells), RATIO_SCALE, np.uint8)
        if recolours(self.config) and len(cells):
            means, grids = self.planner._tile_stats(ids)
            cell_mean = views.reshape(len(cells), -1, 3).mean(1)
            lim = 255 * DIFF_SCALE
            diffs = np.clip(np.rint((cell_mean - means) * DIFF_SCALE), -lim, lim)
            diffs = diffs.astype(np.int16)
            ratios = contrast_ratios(luma_grid(views), grids, orients)
        s = self.state
        r, c = np.divmod(cells, self.grid.cols)
        s.ids[r, c], s.orients[r, c], s.diffs[r, c], s.ratios[r, c] = ids, orients, diffs, \
            ratios
        recolour, tone = self._strengths()
        self.canvas.place(cells, ids, orients, shifts(diffs, recolour), gain=gains(ratios, tone))

    def _debut(self, views: np.ndarray, placed: np.ndarray) -> dict[int, int]:
        """``{cell: tile id}`` for the tiles waiting to debut: each in the free cell
        whose source is nearest it in the search's features."""
        cfg, ids = self.config, np.asarray(self._debuts, np.int64)
        self._debuts = []
        grid = self.pool.lab_grid
        q = search_features(lab_grid_means(views, grid), cfg.mean_weight, cfg.recolour)
        t = search_features(self.pool.lab[ids], cfg.mean_weight, cfg.recolour)
        d = ((t[:, None, :] - q[None]) ** 2).sum(-1)
        d[:, self.state.ids.ravel() >= self.pool.first_grown] = np.inf  # grown ones stay
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
    libraries), so that they do not stall the live loop."""
    import scipy.sparse.csgraph  # noqa: F401
    import sklearn.cluster  # noqa: F401


def _planner(pool: TilePool, grid: Grid, config: RenderConfig) -> Planner:
    """Today's :class:`~pipeline.plan.Planner` for live use: no plan files (none are
    written), the tile statistics and the blank-tile flags from the pool (not the
    index's folder: grown tiles are in memory only)."""
    index = pool.index()
    planner = Planner(None, grid, index, dataclasses.replace(config, flat_spread=0.0),
                      Path("."), "live")
    if config.matching != "cluster":
        flat = pool.spread[:pool.n] < config.flat_spread if config.flat_spread > 0 else None
        planner.assigner = TileAssigner(
            grid.rows, grid.cols, planner.lab, config.hysteresis, config.max_uses,
            groups=index.groups, radius=config.repeat_radius, use_cap=config.use_cap,
            unseen=config.unseen, joint=config.joint, flat=flat)
    planner._tile_means, planner._tile_grids = pool.means[:pool.n], pool.grids[:pool.n]
    planner.cluster.reset(config.seed)
    return planner
