"""When a cell may change its tile: settling and the scene-cut rule.

The activity mask (:class:`pipeline.grid.ActivityTracker`) marks the cells whose source
changed since their tile was chosen. What a viewer sees as flicker is a tile that
changes where the picture stands still; a change made while the region moves is hidden
by the motion. So a marked cell waits for its own motion, measured on the signal the
stability scores use, the cell's mean colour, which sensor noise, grain or ripples
barely move (a 32-pixel cell averages them out):

* **moving**: the cell's mean colour moved by :data:`MOTION_DELTA_E` or more since the
  previous frame. A marked cell is decided in such a frame, its tile switching by the
  usual hysteresis.
* **quiet**: a marked cell that has waited ``frames`` frames without moving is decided
  quietly: its colour is refreshed, and its tile switches only if it has gone clearly
  stale (:data:`QUIET_GAIN`), for at most :data:`QUIET_SHARE` of the cells a frame,
  stalest first (:meth:`pipeline.plan.Planner._stalest`). So waiting never freezes a
  tile that has gone wrong for good, and noise never switches one.
* **scene cut**: a frame in which more than ``scene_cut`` of the cells moved by
  :data:`CUT_DELTA_E` or more; its moving cells are chosen afresh (no hysteresis, the
  joint assignment), its still cells as above. A frame full of noise marks every cell
  but moves none, and is no cut.

``frames`` 0 decides every marked cell at once (the reference's behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.metrics import STATIC_DELTA_E

# a cell's source moves: its mean colour by this much in one frame (the scores' own line
# between a static cell and a moving one)
MOTION_DELTA_E = STATIC_DELTA_E
CUT_DELTA_E = 3 * STATIC_DELTA_E  # a cell that changed this much in a frame: a cut's
# a quiet cell switches tiles only for one with at least this much less error per
# sub-cell (RMS, ΔE units; noise moves a sub-cell's colour by less), and at most this
# share of the grid's cells switches quietly in a frame, stalest first: a still region
# never flickers, and a slowly changing one (a slow pan over grass) catches up within
# the stability scores' churn budget
QUIET_GAIN = 1.0
QUIET_SHARE = 0.01
# a quiet cell that keeps its tile has its colour refreshed only when that corrects this
# many levels or more (within the same budget): small drifts wait for the cell to move
QUIET_COLOUR = 4.0


@dataclass(frozen=True)
class Decision:
    """The cells one frame decides.

    Attributes
    ----------
    cells : ndarray (k,), int64, sorted flat cell indices.
    quiet : ndarray (k,), bool, decided without moving (colour refresh; a tile switch
        only for a clearly better one).
    cut : bool, a scene cut: the moving cells are chosen afresh.
    """

    cells: np.ndarray
    quiet: np.ndarray
    cut: bool


def _delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2)


class Settler:
    """Changes wait for motion (see the module doc): one call per frame.

    It continues where ``tracking`` (the previous segment's :class:`pipeline.plan.
    Tracking`, or anything with ``pending``, ``waited`` and ``lab``) left it, or starts
    empty; ``tracking`` may also be just the Lab cell colours (cells, 3) of the frame
    before.
    """

    def __init__(self, cells: int, frames: int, tracking=None, scene_cut: float = 0.6
                 ) -> None:
        self.frames, self.scene_cut = frames, scene_cut
        self.pending = np.zeros(cells, bool)
        self.waited = np.zeros(cells, np.int32)
        self.prev: np.ndarray | None = None
        if hasattr(tracking, "pending"):
            self.pending[:] = tracking.pending
            self.waited[:] = tracking.waited
            tracking = tracking.lab
        if tracking is not None:
            self.prev = np.asarray(tracking, np.float32).reshape(-1, 3)

    def decide(self, changed: np.ndarray, lab: np.ndarray, fresh: bool = False) -> Decision:
        """The cells to decide in this frame, from the activity mask's ``changed``
        (cells,) bool and the frame's Lab cell colours ``lab`` (cells, 3) float32.
        ``fresh`` (a new activity mask: nothing to compare with) decides every marked
        and waiting cell at once."""
        prev, self.prev = self.prev, lab
        if fresh or prev is None:
            cells = np.flatnonzero(self.pending | changed)
            self.pending[:] = False
            self.waited[:] = 0
            return Decision(cells, np.zeros(len(cells), bool), False)
        delta = _delta_e(lab, prev)
        cut = bool((delta >= CUT_DELTA_E).mean() > self.scene_cut)
        if self.frames <= 0:
            cells = np.flatnonzero(changed)
            return Decision(cells, np.zeros(len(cells), bool), cut)
        self.pending |= changed
        self.waited[self.pending] += 1
        moving = delta >= MOTION_DELTA_E
        quiet = self.pending & ~moving & (self.waited >= self.frames)
        decide = (self.pending & moving) | quiet
        self.pending &= ~decide
        self.waited[decide] = 0
        cells = np.flatnonzero(decide)
        return Decision(cells, quiet[cells], cut)
