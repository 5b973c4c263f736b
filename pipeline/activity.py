"""When a cell may change its tile: the activity mask, settling and the scene-cut rule,
as one named state machine (:class:`Activity`).

The activity mask (:class:`ActivityTracker`) follows the reference: a pixel has
*changed* when the L2 norm of its BGR difference from a reference image exceeds a
threshold; the reference image takes the new value at changed pixels only. A cell is
*marked* when more than a share of its area changed (computed at source resolution, the
changed fraction averaged over the cell's footprint with INTER_AREA, as the reference's
upscaled mask is). It marks the cells whose source changed since their tile was chosen.
What a viewer sees as flicker is a tile that changes where the picture stands still; a
change made while the region moves is hidden by the motion. So a marked cell waits for
its own motion, measured on the signal the stability scores use, the cell's mean colour,
which sensor noise, grain or ripples barely move (a 32-pixel cell averages them out):

* **moving**: the cell's mean colour moved by :data:`MOTION_DELTA_E` or more since the
  previous frame. A marked cell is decided in such a frame, its tile switching by the
  usual hysteresis.
* **quiet**: a marked cell that has waited ``frames`` frames without moving is decided
  quietly: its tile switches only if it has gone clearly stale (:data:`QUIET_GAIN`), for
  at most :data:`QUIET_SHARE` of the cells a frame, stalest first; a tile it keeps gets
  its colour refreshed where that corrects :data:`QUIET_COLOUR` levels or more at once,
  for at most :data:`QUIET_RECOLOUR_SHARE` of the cells a frame, largest first, and
  otherwise, where its colour is :data:`QUIET_STEP_FROM` levels off, moved towards the
  picture's by at most :data:`QUIET_STEP` levels a frame (a colour that follows a slow
  pan, under the line at which the scores see a change)
  (:meth:`pipeline.modes.NearestMode.stalest`,
  :meth:`~pipeline.modes.NearestMode.recolours`). So waiting never freezes a
  tile that has gone wrong for good, and noise never switches one.
* **drift**: a cell is marked too when its mean colour has moved by
  :data:`DRIFT_DELTA_E` or more since it was last decided, though no pixel changed by
  the mask's threshold in any one frame: a slow pan or a fade, which the frame
  difference misses. A cell's mean barely follows noise, so a still region is not
  marked by it. A quiet cell marked by its drift alone (:attr:`Decision.drifted`) keeps
  its tile: light changed, not the picture; only its colour may be refreshed.
  (``frames`` 0, the reference's rule, marks by the mask alone.)
* **scene cut**: a frame in which more than ``scene_cut`` of the cells moved by
  :data:`CUT_DELTA_E` or more; its moving cells are chosen afresh (no hysteresis, the
  joint assignment), its still cells as above. A frame full of noise marks every cell
  but moves none, and is no cut.

``frames`` 0 decides every marked cell at once (the reference's behaviour).

A canvas's activity is in one of three :class:`Phase` s before a frame: ``COLD`` (no tile
on the canvas yet: every cell is chosen afresh, as at a cut), ``NEW_MASK`` (tiles, but no
reference image or cell colours to compare with, e.g. a segment that does not carry the
previous one's: every marked cell is decided at once) and ``SETTLING`` (the rules above).
Every frame leaves it ``SETTLING``; :meth:`Activity.tracking` is what a later segment
needs to continue it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.features import area_means, srgb_to_lab
from pipeline.grid import Grid
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
QUIET_GAIN = 2.0
QUIET_SHARE = 0.01
# a quiet cell that keeps its tile has its colour refreshed at once when that corrects
# this many levels or more, for at most this share of the grid's cells a frame (a budget
# of its own: a refresh keeps the photo, it only follows the picture's colour) ...
QUIET_COLOUR = 8.0
QUIET_RECOLOUR_SHARE = 0.0075
# ... and any other whose colour is this many levels off is moved towards the picture's
# by at most QUIET_STEP levels a channel a frame: below the stability scores' line for a
# changed cell (pipeline.metrics.CHANGED_LEVELS), as the source's own colour moves in a
# slow pan, and never for noise (a cell's mean jitters by about one level)
QUIET_STEP_FROM = 4.0
QUIET_STEP = 2.0
# a cell whose mean colour moved this much since it was last decided is marked, whatever
# the mask says (a slow pan, a fade, a change of light): half as far over frames as a
# moving cell moves in one. Noise jitters a cell's mean rather than adding up as a pan
# does, and a cell marked by drift alone may only have its colour refreshed (where it is
# QUIET_STEP_FROM levels off), which noise does not reach
DRIFT_DELTA_E = 1.0
_BAND = 96  # rows of a frame the activity mask works on at once


@dataclass(frozen=True)
class Decision:
    """The cells one frame decides.

    Attributes
    ----------
    cells : ndarray (k,), int64, sorted flat cell indices.
    quiet : ndarray (k,), bool, decided without moving (colour refresh; a tile switch
        only for a clearly better one).
    cut : bool, a scene cut: the moving cells are chosen afresh.
    drifted : ndarray (k,), bool, or None: quiet cells marked by their colour's drift
        alone (the mask saw no change): their colour may be refreshed, their tile stays.
    """

    cells: np.ndarray
    quiet: np.ndarray
    cut: bool
    drifted: np.ndarray | None = None


@dataclass
class Tracking:
    """Where the activity mask and the settling stand after a frame, so that the next
    segment continues them (its first frame is then not all active).

    Attributes
    ----------
    reference : ndarray (H, W, 3), uint8, the activity mask's reference image.
    pending, waited : ndarrays (cells,), bool and int32: cells marked and waiting for
        motion, and for how many frames.
    lab : ndarray (cells, 3), float32, Lab cell colours of the last frame.
    fitted : ndarray (cells, 3), float32, or None: each cell's Lab colour when it was
        last decided (None: ``lab``).
    masked : ndarray (cells,), bool, or None: waiting cells the mask marked (the others
        wait for their drift alone; None: all of them).
    """

    reference: np.ndarray
    pending: np.ndarray
    waited: np.ndarray
    lab: np.ndarray
    fitted: np.ndarray | None = None
    masked: np.ndarray | None = None


def cell_lab(frame_bgr: np.ndarray, grid: Grid) -> np.ndarray:
    """CIELAB of each cell's mean colour, (rows * cols, 3) float32, row-major."""
    return srgb_to_lab(area_means(frame_bgr, grid.cols, grid.rows)).reshape(-1, 3)


def _delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2)


def jumped(delta: np.ndarray) -> float:
    """Share of the cells whose colour moved by :data:`CUT_DELTA_E` or more since the frame
    before, from their ΔE ``delta`` (cells,) float32: a frame is a scene cut when this is
    over ``render.scene_cut``."""
    return float((delta >= CUT_DELTA_E).mean())


def cut_share(lab: np.ndarray, prev: np.ndarray) -> float:
    """:func:`jumped` between two frames' Lab cell colours, ``lab`` and ``prev`` (cells, 3)
    float32: the planner's cut test, which :mod:`pipeline.shots` applies on its own."""
    return jumped(_delta_e(lab, prev))


class Settler:
    """Changes wait for motion (see the module doc): one call per frame.

    It continues where ``tracking`` (the previous segment's :class:`Tracking`, or
    anything with ``pending``, ``waited`` and ``lab``) left it, or starts
    empty; ``tracking`` may also be just the Lab cell colours (cells, 3) of the frame
    before. ``fitted`` (cells, 3) float32 holds each cell's Lab colour when it was last
    decided (the drift rule's baseline).
    """

    def __init__(self, cells: int, frames: int, tracking=None, scene_cut: float = 0.6
                 ) -> None:
        self.frames, self.scene_cut = frames, scene_cut
        self.pending = np.zeros(cells, bool)
        self.waited = np.zeros(cells, np.int32)
        self.masked = np.zeros(cells, bool)
        self.prev: np.ndarray | None = None
        self.fitted: np.ndarray | None = None
        fitted = None
        if hasattr(tracking, "pending"):
            self.pending[:] = tracking.pending
            self.waited[:] = tracking.waited
            fitted = getattr(tracking, "fitted", None)
            masked = getattr(tracking, "masked", None)
            self.masked[:] = tracking.pending if masked is None else masked
            tracking = tracking.lab
        if tracking is not None:
            self.prev = np.asarray(tracking, np.float32).reshape(-1, 3)
            self.fitted = np.array(self.prev if fitted is None else fitted, np.float32
                                   ).reshape(-1, 3)

    def decide(self, changed: np.ndarray, lab: np.ndarray, fresh: bool = False) -> Decision:
        """The cells to decide in this frame, from the activity mask's ``changed``
        (cells,) bool and the frame's Lab cell colours ``lab`` (cells, 3) float32.
        ``fresh`` (a new activity mask: nothing to compare with) decides every marked
        and waiting cell at once."""
        prev, self.prev = self.prev, lab
        if fresh or prev is None or self.fitted is None:
            cells = np.flatnonzero(self.pending | changed)
            self.pending[:] = False
            self.masked[:] = False
            self.waited[:] = 0
            self.fitted = np.array(lab, np.float32, copy=True)
            return Decision(cells, np.zeros(len(cells), bool), False)
        delta = _delta_e(lab, prev)
        cut = jumped(delta) > self.scene_cut
        if self.frames <= 0:
            cells = np.flatnonzero(changed)
            return Decision(cells, np.zeros(len(cells), bool), cut)
        self.masked |= changed
        self.pending |= changed | (_delta_e(lab, self.fitted) >= DRIFT_DELTA_E)
        self.waited[self.pending] += 1
        moving = delta >= MOTION_DELTA_E
        quiet = self.pending & ~moving & (self.waited >= self.frames)
        decide = (self.pending & moving) | quiet
        drifted = (quiet & ~self.masked)[decide]
        self.pending &= ~decide
        self.masked &= ~decide
        self.waited[decide] = 0
        np.copyto(self.fitted, lab, where=decide[:, None])  # the decided cells' rows
        cells = np.flatnonzero(decide)
        return Decision(cells, quiet[cells], cut, drifted)

    def follow(self, cells: np.ndarray) -> None:
        """Flat ``cells`` (j,) int64 whose colour is a step short of the picture's
        (:data:`QUIET_STEP`): decided again in the next frame, without waiting (quietly,
        unless they move), so that the colour keeps following."""
        if self.frames > 0:
            self.pending[cells] = True
            self.waited[cells] = np.maximum(self.waited[cells], self.frames)


class ActivityTracker:
    """The reference's frame-difference activity mask, one call per frame.

    The first frame after :meth:`reset` marks every cell active.
    """

    def __init__(self, grid: Grid, threshold: float = 16.0, fraction: float = 0.5) -> None:
        self.grid, self.fraction = grid, fraction
        self._threshold_sq = np.float32(threshold * threshold)
        self._ones = np.ones((1, 3), np.float32)
        self._ref: np.ndarray | None = None
        self._buffers: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        """Forget the reference image: the next frame is all active."""
        self._ref = None

    @property
    def reference(self) -> np.ndarray | None:
        """The reference image (H, W, 3) uint8 the next frame is compared with, or None."""
        return self._ref

    def restore(self, reference: np.ndarray) -> None:
        """Continue from a saved :attr:`reference` (a copy is kept)."""
        self._ref = np.array(reference, dtype=np.uint8, copy=True)
        self._allocate(self._ref)

    def _allocate(self, frame_bgr: np.ndarray) -> None:
        h, w = frame_bgr.shape[:2]
        band = min(h, _BAND)
        self._buffers = {"diff": np.empty((band, w, 3), np.uint8),
                         "sq": np.empty((band, w, 3), np.float32),
                         "dist": np.empty((band, w), np.float32),
                         "changed": np.empty((h, w), np.uint8),
                         "share": np.empty((h, w), np.float32)}

    def update(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Mark the active cells of ``frame_bgr`` (H, W, 3) uint8.

        Returns
        -------
        ndarray of shape (rows, cols), bool.
        """
        g = self.grid
        if self._ref is None:
            self._ref = frame_bgr.copy()
            self._allocate(frame_bgr)
            return np.ones((g.rows, g.cols), dtype=bool)
        b = self._buffers
        # in bands of rows, so that the temporaries stay in cache (half the time of
        # whole-frame passes; the same pixels)
        for y in range(0, frame_bgr.shape[0], _BAND):
            rows = slice(y, y + _BAND)
            frame, ref, changed = frame_bgr[rows], self._ref[rows], b["changed"][rows]
            n = len(frame)
            diff, sq, dist = b["diff"][:n], b["sq"][:n], b["dist"][:n]
            cv2.absdiff(frame, ref, dst=diff)
            cv2.multiply(diff, diff, dst=sq, dtype=cv2.CV_32F)
            cv2.transform(sq, self._ones, dst=dist)
            cv2.compare(dist, float(self._threshold_sq), cv2.CMP_GT, dst=changed)
            cv2.copyTo(frame, changed, ref)  # the reference takes changed pixels
        np.copyto(b["share"], b["changed"])  # 0/255 as float: exact area averages
        share = cv2.resize(b["share"], (g.cols, g.rows), interpolation=cv2.INTER_AREA)
        return share > self.fraction * 255


class Phase(enum.Enum):
    """Where a canvas's activity stands before a frame (see the module doc)."""

    COLD = "cold"  # no tile on the canvas: every cell is chosen afresh
    NEW_MASK = "new mask"  # nothing to compare with: every marked cell is decided at once
    SETTLING = "settling"  # marked cells wait for motion; scene cuts from colour jumps


class Activity:
    """The activity mask, settling and scene cuts of one canvas: :meth:`decide` once per
    frame.

    Parameters
    ----------
    grid : the cell layout.
    threshold, fraction : the mask's pixel threshold and marked share of a cell.
    settle : frames a marked cell waits for motion (0: decided at once).
    scene_cut : share of the cells whose colour jumps that makes a frame a cut.
    tracking : where a previous segment left the mask and the settling (None: a new mask).
    placed : whether the canvas has tiles (False: ``COLD``, and ``tracking`` is ignored).
    """

    def __init__(self, grid: Grid, threshold: float, fraction: float, settle: int,
                 scene_cut: float, tracking: Tracking | None = None,
                 placed: bool = True) -> None:
        if not placed:
            tracking = None
        self.grid = grid
        self.mask = ActivityTracker(grid, threshold, fraction)
        if tracking is not None:  # the mask goes on: the first frame is not all active
            self.mask.restore(tracking.reference)
        self.settler = Settler(grid.cells, settle, tracking, scene_cut)
        self.phase = (Phase.COLD if not placed else Phase.NEW_MASK if tracking is None
                      else Phase.SETTLING)

    def decide(self, frame_bgr: np.ndarray, lab: np.ndarray,
               changed: np.ndarray | None = None) -> Decision:
        """The cells ``frame_bgr`` (H, W, 3) uint8 decides, from its Lab cell colours
        ``lab`` (cells, 3) float32 (:func:`cell_lab`) and its activity mask ``changed``
        (cells,) bool when :attr:`mask` has marked it already (ahead of the settling:
        the mask depends on the frames alone); else marked now. A ``COLD`` canvas decides
        every cell afresh (a cut, nothing quiet)."""
        if changed is None:
            changed = self.mask.update(frame_bgr).ravel()
        phase, self.phase = self.phase, Phase.SETTLING
        decision = self.settler.decide(changed, lab, fresh=phase is not Phase.SETTLING)
        if phase is Phase.COLD:
            return Decision(decision.cells, np.zeros(len(decision.cells), bool), True)
        return decision

    def follow(self, cells: np.ndarray) -> None:
        """See :meth:`Settler.follow`."""
        self.settler.follow(cells)

    def tracking(self) -> Tracking:
        """A copy of where the mask and the settling stand (after at least one frame)."""
        s = self.settler
        return Tracking(self.mask.reference.copy(), s.pending.copy(), s.waited.copy(),
                        s.prev.copy(), s.fitted.copy(), s.masked.copy())
