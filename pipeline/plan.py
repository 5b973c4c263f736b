"""The planner engine: ``state, frames -> changes, state``, as a plain object.

No files, locks or threads: frames (numpy arrays) go in, each frame's changes come out
(which cells get which tile, in which orientation, with which recolour difference and
contrast ratio), and the state is carried from one call to the next. The render's plan
stage (:mod:`pipeline.stages.planner`) feeds it a segment's decoded frames and stores
the changes (:mod:`pipeline.planfile`); a live source may feed it a camera's.

Each frame goes through:

1. state-free inputs (:meth:`PlanEngine.inputs`): its cells' Lab colours; their views
   (:func:`pipeline.grid.cell_views`) are taken for the cells decided;
2. the sequential decision (:class:`pipeline.activity.Activity`): which cells may change
   (activity mask, settling, scene cuts), as the matching mode can carry it out;
3. batch-level matching for the decided cells of all frames of a batch at once
   (:meth:`pipeline.modes.MatchingMode.candidates`: in nearest mode, a pure function of
   the cells' views: features and the candidate search, in blocks of cells spread over
   ``render.plan_threads`` threads);
4. the decided cells' exact mean colours and luma grids (state-free, with recolouring:
   :meth:`PlanEngine.cell_tones`);
5. the sequential choice (:meth:`~pipeline.modes.MatchingMode.choose`): hysteresis, the
   variety rules, the canvas updated, and the recolour differences of the placed tiles
   (:mod:`pipeline.tone`, from the cells' tones of step 4);
6. the placed tiles' contrast ratios (state-free: no later choice reads them;
   :meth:`PlanEngine.contrast`).

A batch (:meth:`PlanEngine.plan`) is ``render.cluster_batch_frames`` frames in the
render; the cluster modes fit one k-means step per batch, so the batching is part of the
plan's identity. :meth:`PlanEngine.step` plans one frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.activity import QUIET_STEP, Activity, Decision, Tracking, cell_lab
from pipeline.config import RenderConfig
from pipeline.grid import Grid, cell_views
from pipeline.index import TileIndex
from pipeline.modes import MatchingMode, matching_mode
from pipeline.planfile import CanvasState, FrameChange
from pipeline.tone import (
    RATIO_SCALE,
    contrast_ratios,
    diffs_of_means,
    exact_means,
    luma_grid,
    mean_colours,
    step_diffs,
)

TileReader = Callable[[np.ndarray], np.ndarray]  # tile ids (k,) -> pixels (k, h, w, 3)


@dataclass
class PlanState:
    """Everything the engine carries from frame to frame: what every cell shows, and
    where the activity mask and the settling stand (mutable: the engine updates it in
    place and returns it)."""

    canvas: CanvasState
    activity: Activity

    def tracking(self) -> Tracking:
        """A copy of the activity's state, for a later segment to continue from."""
        return self.activity.tracking()


@dataclass(frozen=True)
class FrameInputs:
    """A frame and what is computed from it alone: ``frame`` (H, W, 3) uint8 BGR and its
    cells' Lab colours ``lab`` (cells, 3) float32; and its activity mask ``changed``
    (cells,) bool where the mask's chain has run ahead (:meth:`PlanEngine.marked`)."""

    frame: np.ndarray
    lab: np.ndarray
    changed: np.ndarray | None = None


class TileStats:
    """Mean colour and 4x4 luma grid of tiles, computed on first use from ``read`` (tile
    ids -> pixels): the plan measures a placed tile's recolour difference and contrast
    ratio against them."""

    def __init__(self, count: int, read: TileReader) -> None:
        self._read = read
        self._means = np.zeros((count, 3), np.float32)
        self._grids = np.zeros((count, 16), np.float32)
        self._known = np.zeros(count, bool)

    def means(self, ids: np.ndarray) -> np.ndarray:
        """Mean BGR colour (k, 3) float32 (0..255) of tiles ``ids`` (k,) int."""
        self._load(ids)
        return self._means[ids]

    def grids(self, ids: np.ndarray) -> np.ndarray:
        """4x4 luma grid (k, 16) float32 of tiles ``ids`` (k,) int."""
        self._load(ids)
        return self._grids[ids]

    def prefetch(self, ids: np.ndarray) -> None:
        """Read the statistics of tiles ``ids`` (k,) int now (negative ids ignored): the
        plan's sequential step then finds its picks' ready."""
        ids = ids[ids >= 0]
        if len(ids):  # a count per tile: no sort of the ids
            wanted = np.bincount(ids, minlength=len(self._known)) > 0
            self._load(np.flatnonzero(wanted & ~self._known))

    def _load(self, ids: np.ndarray) -> None:
        """Read the tiles among ``ids`` not seen before and keep their statistics."""
        missing = np.unique(ids[~self._known[ids]])
        if len(missing):
            tiles = self._read(missing)
            self._means[missing] = mean_colours(tiles)
            self._grids[missing] = luma_grid(tiles)
            self._known[missing] = True


class PlanEngine:
    """Plans frames of one video's grid with one index and the render options.

    Parameters
    ----------
    grid : the cell layout.
    index : the tile index (features, clusters, groups; see :mod:`pipeline.index`). It
        may be made in memory: nothing is read from its folder.
    config : the render options (paint-only ones are ignored).
    read_tiles : tile ids -> pixels, for the tiles' colours (default: from
        ``index.tiles``).
    mode : the matching mode (default: the one ``config.matching`` names).
    """

    def __init__(self, grid: Grid, index: TileIndex, config: RenderConfig,
                 read_tiles: TileReader | None = None, mode: MatchingMode | None = None
                 ) -> None:
        self.grid, self.config = grid, config
        self.tile_stats = TileStats(len(index.tiles), read_tiles or (
            lambda ids: np.asarray(index.tiles[ids])))
        self.mode = mode or matching_mode(index, grid, config, self.tile_stats.means)

    def start(self, canvas: CanvasState | None = None, tracking: Tracking | None = None,
              seed: int = 0) -> PlanState:
        """The state to plan from: ``canvas`` (copied; default: blank) and where the
        activity stood (``tracking``; None: a new mask, and ignored on a blank canvas);
        ``seed`` seeds the mode's randomness (the cluster modes' k-means and flips)."""
        cfg, grid = self.config, self.grid
        canvas = canvas.copy() if canvas is not None else CanvasState.empty(grid.rows,
                                                                             grid.cols)
        self.mode.reset(seed)
        activity = Activity(grid, cfg.activity_threshold, cfg.active_fraction, cfg.settle,
                            cfg.scene_cut, tracking, placed=canvas.placed)
        return PlanState(canvas, activity)

    def inputs(self, frame: np.ndarray) -> FrameInputs:
        """What a frame gives without any state (may run anywhere, in any order)."""
        return FrameInputs(frame, cell_lab(frame, self.grid))

    def marked(self, state: PlanState, frame: np.ndarray) -> FrameInputs:
        """:meth:`inputs` with the frame's activity mask, from ``state``'s mask: a chain
        of its own (each frame's mask is against the reference the frames before it left;
        nothing the choice does touches it), so it may run on a thread of its own, in
        order, ahead of :meth:`plan` given the same ``state`` (as the planner runs it)."""
        return FrameInputs(frame, cell_lab(frame, self.grid),
                           state.activity.mask.update(frame).ravel())

    def decide(self, state: PlanState, inputs: FrameInputs) -> Decision:
        """The cells this frame decides (sequential: activity and settling)."""
        return self.mode.gate(state.activity.decide(inputs.frame, inputs.lab,
                                                    inputs.changed))

    def plan(self, state: PlanState, frames: Sequence[np.ndarray | FrameInputs]
             ) -> tuple[list[FrameChange], PlanState]:
        """Plan a batch of frames, (H, W, 3) uint8 BGR each (or their :meth:`inputs`), in
        order; their changes and the state after the last."""
        inputs = [f if isinstance(f, FrameInputs) else self.inputs(f) for f in frames]
        decisions = [self.decide(state, x) for x in inputs]
        views = [cell_views(x.frame, self.grid)[d.cells]
                 for x, d in zip(inputs, decisions, strict=True)]
        found = self.mode.candidates(views, [d.drifted for d in decisions])
        if self.config.recolours:  # state-free: the candidates' colours, read ahead
            self.tile_stats.prefetch(self.mode.candidate_tiles(found))
        tones = [self.cell_tones(v) for v in views]
        changes = [self.apply(state, d, c, t)
                   for d, c, t in zip(decisions, found, tones, strict=True)]
        changes = [self.contrast(d, c, t) for d, c, t in zip(decisions, changes, tones,
                                                             strict=True)]
        for c in changes:  # in order: a cell placed twice keeps its later ratio
            r, col = np.divmod(c.cells, self.grid.cols)
            state.canvas.ratios[r, col] = c.ratios
        return changes, state

    def cell_tones(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """What the recolour differences and contrast ratios need of cells ``views``
        (k, s, s, 3) uint8, computed from them alone: exact mean colours (k, 3) float64
        (:func:`pipeline.tone.exact_means`) and 4x4 luma grids (k, 16) float32; None
        without recolouring."""
        if not self.config.recolours:
            return None
        return exact_means(views), luma_grid(views)

    def step(self, state: PlanState, frame: np.ndarray) -> tuple[FrameChange, PlanState]:
        """Plan one frame (a batch of one)."""
        changes, state = self.plan(state, [frame])
        return changes[0], state

    def apply(self, state: PlanState, decision: Decision, found,
              tones: tuple[np.ndarray, np.ndarray] | None) -> FrameChange:
        """One frame's choice (sequential): its decided cells' tiles from their
        candidates ``found``, placed on the canvas; the frame's changes, their contrast
        ratios still to come (:meth:`contrast`, state-free: no later choice reads them).
        ``tones``: the cells' :meth:`cell_tones`."""
        cell_means = None if tones is None else tones[0]
        placed, ids, orients, steps = self.mode.choose(decision.cells, found, state.canvas,
                                                       decision, cell_means)
        canvas = state.canvas
        r, c = np.divmod(placed, self.grid.cols)
        diffs = np.zeros((len(placed), 3), np.int16)
        ratios = np.full(len(placed), RATIO_SCALE, np.uint8)
        if self.config.recolours and len(placed):
            at = np.searchsorted(decision.cells, placed)  # the placed cells' rows
            diffs = diffs_of_means(cell_means[at], self.tile_stats.means(ids))
            if steps.any():  # a kept tile's colour follows the picture's a step at a time
                step = step_diffs(canvas.diffs[r[steps], c[steps]], diffs[steps],
                                  QUIET_STEP, self.config.recolour)
                state.activity.follow(placed[steps][(step != diffs[steps]).any(1)])
                diffs[steps] = step
        canvas.ids[r, c], canvas.orients[r, c], canvas.diffs[r, c] = ids, orients, diffs
        return FrameChange(placed, ids, orients, diffs, ratios, len(decision.cells),
                           decision.cut)

    def contrast(self, decision: Decision, change: FrameChange,
                 tones: tuple[np.ndarray, np.ndarray] | None) -> FrameChange:
        """``change`` (:meth:`apply`'s) with its placed tiles' contrast ratios, from the
        cells' luma grids in ``tones`` and the tiles' (none without recolouring)."""
        if not self.config.recolours or not len(change.cells):
            return change
        grids = self.tile_stats.grids(change.ids)
        at = np.searchsorted(decision.cells, change.cells)  # the placed cells' rows
        return change._replace(ratios=contrast_ratios(tones[1][at], grids, change.orients))
