"""Matching modes as strategy objects: how one batch of frames' decided cells get tiles.

The planner engine (:mod:`pipeline.plan`) asks its mode three things, never which mode it
is:

* :meth:`~MatchingMode.gate`: the activity's decision as the mode can carry it out;
* :meth:`~MatchingMode.candidates`: batch-level work for every frame of a batch at once,
  from the decided cells' views (cluster mode: the tiles themselves; the others: each
  cell's search features and candidate tiles);
* :meth:`~MatchingMode.choose`: one frame's tiles, given the canvas (the sequential part:
  hysteresis and the variety rules): the cells to (re)place, their tiles, orientation
  codes, and which of them keep their tile and only step their colour towards the
  picture's (:data:`pipeline.activity.QUIET_STEP`).

:data:`MODES` names them: ``cluster`` (:class:`ClusterMode`, the reference's),
``refined`` (:class:`RefinedMode`) and ``nearest`` (:class:`NearestMode`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from pipeline.activity import (
    QUIET_COLOUR,
    QUIET_GAIN,
    QUIET_RECOLOUR_SHARE,
    QUIET_SHARE,
    QUIET_STEP_FROM,
    Decision,
)
from pipeline.assign import TileAssigner
from pipeline.config import RenderConfig
from pipeline.execute import usable_cores
from pipeline.features import colour_histogram, lab_grid_means
from pipeline.grid import Grid
from pipeline.index import TileIndex
from pipeline.matching import ClusterMatcher, search_features
from pipeline.planfile import CanvasState
from pipeline.search import Orientations, TileClusters, TileSearch
from pipeline.tone import DIFF_SCALE
from pipeline.visibility import bank_spread, orientations

SEARCH_BLOCK = 8192  # queries searched at once (about 10 MB of scratch)
MIN_THREAD_BLOCK = 512  # fewest queries worth a thread of their own
# a cell's nearest candidates whose tiles' colours the plan reads ahead (state-free):
# two thirds of the tiles its choice then reads at 720p x4, for a fifth more tiles read
# in all (a 120-frame plan at 640x480: 9.2k tiles against 7.5k, 0.03 CPU-s; all 32
# candidates: 14k tiles at 720p, 1.7 times the picks')
LIKELY_PICKS = 4


class MatchingMode(Protocol):
    """What the engine needs of a matching mode (see the module doc)."""

    def reset(self, seed: int) -> None: ...

    def gate(self, decision: Decision) -> Decision: ...

    def candidates(self, views: list[np.ndarray],
                   kept: list[np.ndarray | None] | None = None) -> list[Any]: ...

    def candidate_tiles(self, found: list[Any]) -> np.ndarray: ...

    def choose(self, cells: np.ndarray, found: Any, canvas: CanvasState, decision: Decision,
               means: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...


def _split(parts: list[np.ndarray], views: list[np.ndarray]) -> list[np.ndarray]:
    """``parts`` rows split back into the frames of ``views`` (one piece per frame)."""
    return np.split(parts, np.cumsum([len(v) for v in views])[:-1])


class ClusterMode:
    """The reference's mode: cell histograms clustered per batch, each cell cluster's
    nearest tile cluster's members in turn, mirrored at random (never recoloured; a
    quiet cell is left as it is: this mode cannot tell a clearly better tile)."""

    def __init__(self, cluster: ClusterMatcher, bins: int) -> None:
        self.cluster, self.bins = cluster, bins

    def reset(self, seed: int) -> None:
        self.cluster.reset(seed)

    def gate(self, decision: Decision) -> Decision:
        if decision.quiet.any():
            loud = ~decision.quiet
            return Decision(decision.cells[loud], decision.quiet[loud], decision.cut,
                            None if decision.drifted is None else decision.drifted[loud])
        return decision

    def candidates(self, views: list[np.ndarray], kept: list[np.ndarray | None] | None = None
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame, the tiles (k,) int64 and mirror codes (k,) uint8 of its cells
        (``kept``: ignored, as :meth:`gate` passes no quiet cell)."""
        if not any(len(v) for v in views):  # a still stretch: nothing to match
            return [(np.zeros(0, np.int64), np.zeros(0, np.uint8)) for _ in views]
        hists = np.concatenate([colour_histogram(v, self.bins) for v in views])
        ids, flips = self.cluster.match(hists)  # mirrored or not: codes 1 and 0
        return list(zip(_split(ids, views), _split(flips.astype(np.uint8), views),
                        strict=True))

    def candidate_tiles(self, found: list[tuple]) -> np.ndarray:
        """The tiles (k,) int64 that :meth:`choose` will place: every cell's match."""
        return np.concatenate([f[0] for f in found]) if found else np.zeros(0, np.int64)

    def choose(self, cells: np.ndarray, found: tuple, canvas: CanvasState,
               decision: Decision, means: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return cells, found[0], found[1], np.zeros(len(cells), bool)


class NearestMode:
    """Each cell's nearest tiles over the whole index (the search, :mod:`pipeline.search`,
    in every orientation allowed), chosen under hysteresis and the variety rules
    (:class:`pipeline.assign.TileAssigner`); quiet cells switch only when stale."""

    def __init__(self, config: RenderConfig, grid: Grid, search: TileSearch,
                 orients: Orientations, assigner: TileAssigner, lab_grid: int,
                 tile_means: Any) -> None:
        self.config, self.grid, self.search = config, grid, search
        self.orients, self.assigner, self.lab_grid = orients, assigner, lab_grid
        self.lab = search.features
        self.tile_means = tile_means  # tile ids -> (k, 3) mean colours (0..255)
        self.threads = config.plan_threads or usable_cores()
        self._pool: ThreadPoolExecutor | None = None

    def _map(self, fn: Any, items: list) -> list:
        """``fn`` over ``items``, on the search threads (``render.plan_threads``), in
        order. The search's matrix products and sorts release the GIL, and a
        cell's candidates do not depend on which cells share its block, so the result
        is the same on any number of threads."""
        if self.threads <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mosaic-search")
        return list(self._pool.map(fn, items))

    def reset(self, seed: int) -> None:
        """Nothing to reset: the search carries no state."""

    def gate(self, decision: Decision) -> Decision:
        return decision

    def coarse(self, views: list[np.ndarray]) -> np.ndarray | None:
        """The lists each cell probes, or None: the clusters of nearest centroid."""
        return None

    def candidates(self, views: list[np.ndarray], kept: list[np.ndarray | None] | None = None
                   ) -> list[tuple]:
        """Per frame, its cells' search features (k, D) and candidates: ids, squared
        distances and orientation codes, (k, candidates) each. ``kept`` (per frame, (k,)
        bool or None): cells that keep their tile whatever is found (marked by drift
        alone: :attr:`pipeline.activity.Decision.drifted`), not searched; they get no
        candidate."""
        if kept is not None and any(k is not None and k.any() for k in kept):
            masks = [np.zeros(len(v), bool) if k is None else k
                     for v, k in zip(views, kept, strict=True)]
            found = self.candidates([v[~m] for v, m in zip(views, masks, strict=True)])
            return [self._none_for(f, m) for f, m in zip(found, masks, strict=True)]
        cfg = self.config
        if not any(len(v) for v in views):
            none = np.zeros(0, np.int64)
            return [(None, none, none, none) for _ in views]
        queries = search_features(lab_grid_means(np.concatenate(views), self.lab_grid),
                                  cfg.mean_weight, cfg.recolour)
        coarse = self.coarse(views)
        # in blocks of queries: the scratch stays bounded however many cells a batch of
        # frames has active (a scene cut at 5120x2880 is 14,400 of them per frame); at
        # least one block per search thread
        turns = self.orients.codes
        block = min(self.search.block // len(turns),
                    max(MIN_THREAD_BLOCK, -(-len(queries) // self.threads)))

        def search(lo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # a tile in orientation ``code`` against the cell is the tile as it is against
            # the cell turned back: the same distance, searched in the tiles' own features;
            # orientation after orientation, each bounded by the k-th distance of those
            # before (each gives k distinct tiles: a tile beyond it cannot be merged in)
            part = queries[lo:lo + block]
            probes = coarse[lo:lo + block] if coarse is not None else None
            found, bound = [], None
            for code in turns:
                ids, dist = self.search.block_search(
                    self.orients.unturn(part, code), cfg.candidates, cfg.nprobe, probes,
                    bound=bound)
                found.append((ids, dist))
                bound = dist[:, -1] if bound is None else np.minimum(bound, dist[:, -1])
            return self.orients.merge(found, cfg.candidates)

        parts = self._map(search, list(range(0, len(queries), block)))
        cand = [np.concatenate([p[i] for p in parts]) for i in range(3)]
        return list(zip(_split(queries, views), *(_split(c, views) for c in cand),
                        strict=True))

    def _none_for(self, found: tuple, kept: np.ndarray) -> tuple:
        """``found`` for the searched cells, widened to all (``kept`` (k,) bool: the
        others), the kept ones with zero features and no candidate (id -1, distance
        inf), which the assignment reads as: keep the tile."""
        n, k = len(kept), self.config.candidates
        out = (np.zeros((n, self.lab.shape[1]), np.float32), np.full((n, k), -1, np.int64),
               np.full((n, k), np.inf, np.float32), np.zeros((n, k), np.uint8))
        if (~kept).any():
            for full, part in zip(out, found, strict=True):
                full[~kept] = part
        return out

    def candidate_tiles(self, found: list[tuple]) -> np.ndarray:
        """The tiles (k,) int64 :meth:`choose` will most likely place: each searched
        cell's :data:`LIKELY_PICKS` nearest candidates (-1: none; a kept tile is on the
        canvas already)."""
        ids = [f[1][:, :LIKELY_PICKS].ravel() for f in found if f[1].ndim == 2]
        return np.concatenate(ids) if ids else np.zeros(0, np.int64)

    def choose(self, cells: np.ndarray, found: tuple, canvas: CanvasState,
               decision: Decision, means: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Tiles for one frame's decided cells (``means`` (k, 3) float64: their source's
        exact mean colours, :func:`pipeline.tone.exact_means`; None without recolouring);
        returns the cells to (re)place (j,) int64, their tiles (j,) int64,
        orientation codes (j,) uint8, and which only step their colour (j,) bool."""
        if len(cells) == 0:
            return cells, np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, bool)
        queries, cand_ids, cand_d, cand_codes = found
        current = canvas.ids.ravel()
        held = canvas.orients.ravel()[cells]
        # the cells as their current tiles see them (hysteresis weighs those tiles' costs)
        seen = self.orients.unturn(queries, held)
        quiet = decision.quiet
        margin = None
        if quiet.any():
            margin = np.where(quiet, np.float32(0), np.float32(self.config.hysteresis))
            may = quiet if decision.drifted is None else quiet & ~decision.drifted
            margin[self.stalest(cells, may, seen, cand_ids, cand_d, current)] = \
                self.config.hysteresis
        ids = self.assigner.assign(cells, seen, cand_ids, cand_d, current,
                                   decision.cut & ~quiet, margin)
        # a kept tile keeps its orientation; a new one takes its candidate's
        switched = ids != current[cells]
        new = np.flatnonzero(switched)
        codes = held.astype(np.uint8)
        codes[new] = cand_codes[new, (cand_ids[new] == ids[new, None]).argmax(1)]
        moved = switched | (codes != held)
        steps = np.zeros(len(cells), bool)
        if self.config.recolours:  # re-placed: recoloured again (quietly only where it pays)
            moved |= ~quiet
            if quiet.any():
                at_once, steps = self.recolours(cells, quiet & ~moved, means, canvas)
                moved |= at_once | steps
        return cells[moved], ids[moved], codes[moved], steps[moved]

    def recolours(self, cells: np.ndarray, kept: np.ndarray, means: np.ndarray,
                  canvas: CanvasState) -> tuple[np.ndarray, np.ndarray]:
        """Quiet cells that keep their tile but get its colour refreshed, two (k,) bool
        masks over ``cells``: at once, those whose colour has drifted by
        :data:`~pipeline.activity.QUIET_COLOUR` levels or more that a refresh would
        correct, largest first, at most
        :data:`~pipeline.activity.QUIET_RECOLOUR_SHARE` of the grid's cells a frame (a
        large error is seen: one step now beats many small ones); by a step towards the
        picture's colour (:data:`~pipeline.activity.QUIET_STEP` levels at most), the
        others that a refresh would correct by
        :data:`~pipeline.activity.QUIET_STEP_FROM` levels or more. ``means`` (k, 3)
        float64: the cells' source mean colours."""
        at_once, steps = np.zeros(len(cells), bool), np.zeros(len(cells), bool)
        pos = np.flatnonzero(kept)
        budget = max(1, int(QUIET_RECOLOUR_SHARE * self.grid.cells))
        if not len(pos):
            return at_once, steps
        r, c = np.divmod(cells[pos], self.grid.cols)
        tile_mean = self.tile_means(canvas.ids[r, c])
        now = means[pos]
        shown = tile_mean + np.rint(canvas.diffs[r, c] * np.float32(
            self.config.recolour / DIFF_SCALE))
        after = (1 - np.float32(self.config.recolour)) * (now - tile_mean)
        gain = np.abs(now - shown).max(1) - np.abs(after).max(1)
        ok = gain >= QUIET_COLOUR
        at_once[pos[ok][np.argsort(-gain[ok], kind="stable")[:budget]]] = True
        steps[pos[gain >= QUIET_STEP_FROM]] = True
        return at_once, steps & ~at_once

    def stalest(self, cells: np.ndarray, quiet: np.ndarray, seen: np.ndarray,
                cand_ids: np.ndarray, cand_d: np.ndarray, current: np.ndarray
                ) -> np.ndarray:
        """Which quiet cells may switch tiles this frame, (j,) positions into ``cells``:
        those whose tile has gone clearly stale (a candidate past the hysteresis margin,
        with at least :data:`~pipeline.activity.QUIET_GAIN` less error per sub-cell), at
        most :data:`~pipeline.activity.QUIET_SHARE` of the grid's cells a frame, the
        largest gains first. The others only get their colour refreshed: a still cell
        never flickers, however long it waits, and a slowly changing one catches up."""
        pos = np.flatnonzero(quiet & (current[cells] >= 0))
        cur = current[cells[pos]]
        diff = seen[pos] - self.lab[cur]
        own = (diff * diff).sum(1)
        other = np.where(cand_ids[pos] == cur[:, None], np.inf, cand_d[pos]).min(1)
        per_sub = np.float32(self.lab_grid * self.lab_grid)
        gain = np.sqrt(own / per_sub) - np.sqrt(np.minimum(other, own) / per_sub)
        ok = (other < np.float32(self.config.hysteresis) ** 2 * own) & (gain >= QUIET_GAIN)
        budget = max(1, int(QUIET_SHARE * self.grid.cells))
        return pos[ok][np.argsort(-gain[ok], kind="stable")[:budget]]


class RefinedMode(NearestMode):
    """Nearest mode whose cells probe the tile clusters their cell cluster is nearest to
    (cosine on histograms, :meth:`pipeline.matching.ClusterMatcher.coarse`)."""

    def __init__(self, *args: Any, cluster: ClusterMatcher, bins: int) -> None:
        super().__init__(*args)
        self.cluster, self.bins = cluster, bins

    def reset(self, seed: int) -> None:
        self.cluster.reset(seed)

    def coarse(self, views: list[np.ndarray]) -> np.ndarray:
        hists = np.concatenate([colour_histogram(v, self.bins) for v in views])
        return self.cluster.coarse(hists, self.config.refine_clusters)


def flat_tiles(index: TileIndex, spread: float) -> np.ndarray | None:
    """Blank tiles, (N,) bool: a luma spread under ``spread`` (``render.flat_spread``:
    nothing to see in them, nothing to repeat; the use cap spares them,
    :class:`pipeline.assign.TileAssigner`); None for 0. The spread the index recorded,
    or, in an index from before it did, measured from the bank (about 0.5 s for 42,000
    tiles)."""
    if spread <= 0:
        return None
    return (index.spread if index.spread is not None else bank_spread(index.tiles)) < spread


class _Builder:
    """Makes a mode from an index, a grid and the render options."""

    def __init__(self, index: TileIndex, grid: Grid, config: RenderConfig,
                 tile_means: Any, flat: np.ndarray | None = None) -> None:
        self.index, self.grid, self.config, self.tile_means = index, grid, config, tile_means
        self.flat = flat
        self.tiles = TileClusters.from_labels(index.centers, np.asarray(index.labels))
        self.bins = int(index.manifest["params"]["hist_bins"])
        self.lab_grid = int(index.manifest["params"]["lab_grid"])

    def cluster(self) -> ClusterMatcher:
        return ClusterMatcher(self.tiles, self.config.cell_clusters)

    def search_args(self) -> tuple:
        """The parts of a searching mode: the search, orientations, assigner, grid size."""
        cfg, index, grid = self.config, self.index, self.grid
        th, tw = index.tiles.shape[1:3]
        orients = Orientations(orientations(cfg.orientations, th == tw), self.lab_grid)
        # the search measures the error left after recolouring (by structure)
        lab = search_features(np.asarray(index.lab, dtype=np.float32), cfg.mean_weight,
                              cfg.recolour)
        assigner = TileAssigner(grid.rows, grid.cols, lab, cfg.hysteresis, cfg.max_uses,
                                groups=index.groups, radius=cfg.repeat_radius,
                                use_cap=cfg.use_cap, unseen=cfg.unseen, joint=cfg.joint,
                                flat=self.flat if self.flat is not None else
                                flat_tiles(index, cfg.flat_spread))
        return (cfg, grid, TileSearch(self.tiles, lab, SEARCH_BLOCK), orients, assigner,
                self.lab_grid, self.tile_means)


def matching_mode(index: TileIndex, grid: Grid, config: RenderConfig, tile_means: Any,
                  flat: np.ndarray | None = None) -> MatchingMode:
    """The mode ``config.matching`` names (:data:`MODES`), for ``index`` and ``grid``;
    ``tile_means``: tile ids (k,) -> their mean colours (k, 3) float32, 0..255; ``flat``:
    the blank tiles (N,) bool when already known (a live pool keeps them; default:
    :func:`flat_tiles` reads them from the bank)."""
    return MODES[config.matching](_Builder(index, grid, config, tile_means, flat))


MODES = {
    "cluster": lambda b: ClusterMode(b.cluster(), b.bins),
    "refined": lambda b: RefinedMode(*b.search_args(), cluster=b.cluster(), bins=b.bins),
    "nearest": lambda b: NearestMode(*b.search_args()),
}
