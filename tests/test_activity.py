"""When a cell may change its tile (pipeline.activity): the activity mask, settling, the
scene-cut rule, and the state machine that holds them."""

from __future__ import annotations

import numpy as np

from pipeline.activity import (
    CUT_DELTA_E,
    MOTION_DELTA_E,
    Activity,
    ActivityTracker,
    Phase,
    Settler,
    Tracking,
    cell_lab,
)
from pipeline.grid import make_grid


def _lab(values: list[float]) -> np.ndarray:
    lab = np.zeros((len(values), 3), np.float32)
    lab[:, 0] = values
    return lab


def test_marked_cells_wait_for_their_own_motion_then_are_decided_quietly() -> None:
    s = Settler(3, 4, _lab([50, 50, 50]))
    # all three marked; only cell 1 moves in this frame: decided, not quietly
    d = s.decide(np.array([True, True, True]), _lab([50, 50 + MOTION_DELTA_E, 50.5]))
    assert d.cells.tolist() == [1] and d.quiet.tolist() == [False] and not d.cut
    # nothing newly marked; cell 2 moves now and is decided, cell 0 keeps waiting
    d = s.decide(np.zeros(3, bool), _lab([50, 52, 53]))
    assert d.cells.tolist() == [2] and d.quiet.tolist() == [False]
    assert s.decide(np.zeros(3, bool), _lab([50, 52, 53])).cells.tolist() == []
    # cell 0 has waited 4 frames without moving: decided quietly (colour, and a tile
    # switch only for a clearly better one)
    d = s.decide(np.zeros(3, bool), _lab([50, 52, 53]))
    assert d.cells.tolist() == [0] and d.quiet.tolist() == [True]
    assert s.decide(np.zeros(3, bool), _lab([50, 52, 53])).cells.tolist() == []


def test_noise_marks_every_cell_but_moves_none_and_is_no_cut() -> None:
    rng = np.random.default_rng(0)
    s = Settler(100, 8, _lab([50] * 100), scene_cut=0.6)
    loud = 0
    for _ in range(40):
        lab = _lab(list(50 + rng.normal(0, 0.4, 100)))  # sensor noise on the cell means
        d = s.decide(np.ones(100, bool), lab)
        assert not d.cut
        loud += int((~d.quiet).sum())
    # (almost) nothing decided as moving: no tile switches by the usual margin
    assert loud <= 0.01 * 100 * 40


def test_a_scene_cut_is_a_frame_where_most_cells_change_a_lot() -> None:
    s = Settler(10, 8, _lab([50] * 10), scene_cut=0.6)
    step = [50 + CUT_DELTA_E] * 7 + [50] * 3  # 70% of the cells jumped
    d = s.decide(np.array([True] * 7 + [False] * 3), _lab(step))
    assert d.cut and d.cells.tolist() == list(range(7)) and not d.quiet.any()
    small = [v + MOTION_DELTA_E for v in step]  # everything moves a little: no cut
    assert not s.decide(np.ones(10, bool), _lab(small)).cut


def test_fresh_masks_and_settle_zero_decide_at_once() -> None:
    fresh = Settler(2, 8, None)  # no previous frame: nothing to wait for
    assert fresh.decide(np.array([True, True]), _lab([1, 2])).cells.tolist() == [0, 1]
    s = Settler(3, 8, _lab([50, 50, 50]))
    assert s.decide(np.array([True, False, True]), _lab([50, 50, 50])).cells.tolist() == []
    # a fresh mask (a segment's first frame after a reset) decides everything marked or
    # waiting
    d = s.decide(np.array([False, True, False]), _lab([50, 50, 50]), fresh=True)
    assert d.cells.tolist() == [0, 1, 2]
    off = Settler(3, 0, _lab([50, 50, 50]))  # settle 0 is the reference: at once
    assert off.decide(np.array([True, False, True]), _lab([50, 50, 50])).cells.tolist() == [0, 2]


def test_settling_continues_from_a_saved_tracking() -> None:
    t = Tracking(np.zeros((2, 2, 3), np.uint8), np.array([True, False, True]),
                 np.array([3, 0, 1], np.int32), _lab([50, 50, 50]))
    s = Settler(3, 4, t)
    # cell 0 had waited 3 frames: this one is its 4th; cell 2 waits on
    d = s.decide(np.zeros(3, bool), _lab([50, 50, 50]))
    assert d.cells.tolist() == [0] and d.quiet.tolist() == [True]


def test_quiet_switches_are_the_stalest_within_the_budget() -> None:
    """Quiet cells may switch tiles only where a candidate is clearly better, stalest
    first, at most QUIET_SHARE of the grid's cells in a frame."""
    from types import SimpleNamespace

    from pipeline.activity import QUIET_SHARE
    from pipeline.modes import NearestMode

    cells_in_grid = 400
    budget = int(QUIET_SHARE * cells_in_grid)
    lab = np.zeros((50, 48), np.float32)  # tile t: every value t
    lab += np.arange(50, dtype=np.float32)[:, None]
    fake = SimpleNamespace(lab=lab, lab_grid=4, grid=SimpleNamespace(cells=cells_in_grid),
                           config=SimpleNamespace(hysteresis=0.9))
    n = 10
    cells = np.arange(n)
    current = np.full(cells_in_grid, 0, np.int64)
    current[:n] = np.arange(n) + 1  # cell i shows tile i + 1
    seen = np.zeros((n, 48), np.float32)  # every cell now looks like tile 0
    seen[7] = lab[8] + 0.2  # ... but cell 7 still looks like its own tile (8): not stale
    cand_ids = np.tile(np.arange(5), (n, 1))  # tile 0 (exact) first
    cand_d = ((lab[cand_ids] - seen[:, None]) ** 2).sum(-1)
    quiet = np.ones(n, bool)
    quiet[3] = False  # decided as moving: not the quiet rule's business
    got = NearestMode.stalest(fake, cells, quiet, seen, cand_ids, cand_d, current)
    assert len(got) == budget
    # the stalest first: the cells whose tiles are furthest from what they now show
    assert got.tolist() == [9, 8, 6, 5][:budget]
    assert 3 not in got and 7 not in got


def test_activity_follows_the_reference_definition() -> None:
    g = make_grid(16, 16, (8, 8), 1)  # 2x2 cells of 8x8 source pixels
    tracker = ActivityTracker(g, threshold=16, fraction=0.5)
    frame = np.zeros((16, 16, 3), np.uint8)
    assert tracker.update(frame).all()  # first frame: everything active
    nxt = frame.copy()
    nxt[:8, :8] = (10, 10, 10)  # L2 = 17.3 > 16 on the whole top-left cell
    nxt[:8, 8:] = (9, 9, 9)  # L2 = 15.6: not a change
    nxt[8:, :8][:4] = (50, 0, 0)  # exactly half of bottom-left changed: not more than half
    nxt[8:, 8:][:5] = (50, 0, 0)  # 5 of 8 rows changed: active
    assert tracker.update(nxt).tolist() == [[True, False], [False, True]]
    # the reference image took the new values only where pixels changed: a further
    # small step from the unchanged (9, 9, 9) area against 0 now crosses the threshold
    again = nxt.copy()
    again[:8, 8:] = (12, 12, 12)
    assert tracker.update(again).tolist() == [[False, True], [False, False]]
    tracker.reset()
    assert tracker.update(again).all()


def test_the_phases_cold_new_mask_settling() -> None:
    g = make_grid(16, 32, (8, 8), 1)  # 2 x 4 cells
    frame = np.full((16, 32, 3), 100, np.uint8)
    cold = Activity(g, 10, 0.5, 4, 0.6, placed=False)
    assert cold.phase is Phase.COLD
    d = cold.decide(frame, cell_lab(frame, g))
    assert d.cut and len(d.cells) == 8 and not d.quiet.any()  # all chosen afresh
    assert cold.phase is Phase.SETTLING
    assert len(cold.decide(frame, cell_lab(frame, g)).cells) == 0  # then nothing moves
    new = Activity(g, 10, 0.5, 4, 0.6, placed=True)  # tiles, but nothing to compare with
    assert new.phase is Phase.NEW_MASK
    d = new.decide(frame, cell_lab(frame, g))
    assert len(d.cells) == 8 and not d.cut
    carried = Activity(g, 10, 0.5, 4, 0.6, new.tracking(), placed=True)
    assert carried.phase is Phase.SETTLING  # the mask goes on
    assert len(carried.decide(frame, cell_lab(frame, g)).cells) == 0
    # a tracking is ignored on a blank canvas: cold whatever it says
    assert Activity(g, 10, 0.5, 4, 0.6, new.tracking(), placed=False).phase is Phase.COLD


def test_a_slow_drift_marks_a_cell_that_the_mask_misses_and_noise_does_not() -> None:
    """The drift rule: a cell whose colour creeps (a slow pan, a fade) by less than
    MOTION_DELTA_E a frame, never marked by the mask, is marked once it has moved
    DRIFT_DELTA_E since it was last decided, then waits and is decided quietly. A cell
    whose colour only jitters around one value (noise) is never marked by it."""
    from pipeline.activity import DRIFT_DELTA_E

    step = DRIFT_DELTA_E / 2.5  # under the motion line every frame
    assert step < MOTION_DELTA_E
    s = Settler(2, 2, _lab([50, 50]))
    none = np.zeros(2, bool)
    jitter = [50 + 0.9 * DRIFT_DELTA_E / 2, 50 - 0.9 * DRIFT_DELTA_E / 2]
    got = []
    for i in range(1, 8):
        d = s.decide(none, _lab([50 + step * i, jitter[i % 2]]))
        got.append((d.cells.tolist(), d.quiet.tolist()))
    # frames 1, 2: drifted 0.4 and 0.8 of the line; frame 3 (1.2): marked, waits 1;
    # frame 4: waited 2 without moving: decided quietly; then the drift counts afresh
    assert got[:4] == [([], []), ([], []), ([], []), ([0], [True])]
    assert all(1 not in cells for cells, _ in got)
    assert s.fitted[0, 0] == np.float32(50 + step * 4)
    # settle 0 is the reference's rule: the mask alone
    ref = Settler(1, 0, _lab([50]))
    assert all(len(ref.decide(np.zeros(1, bool), _lab([50 + 2 * step * i])).cells) == 0
               for i in range(1, 6))


def test_a_cell_marked_by_drift_alone_may_only_be_recoloured() -> None:
    """A quiet cell the mask never marked (its colour drifted: light, a fade) keeps its
    tile, its colour refreshed; one the mask marked may switch when clearly stale."""
    from pipeline.activity import DRIFT_DELTA_E

    s = Settler(2, 1, _lab([50, 50]))
    half = DRIFT_DELTA_E / 2  # under the motion line
    d = s.decide(np.array([False, True]), _lab([50 + half, 50.5]))
    assert d.cells.tolist() == [1] and d.quiet.tolist() == [True]
    assert d.drifted.tolist() == [False]  # the mask marked it: it may switch
    d = s.decide(np.zeros(2, bool), _lab([50 + 2 * half, 50.5]))
    assert d.cells.tolist() == [0] and d.quiet.tolist() == [True]
    assert d.drifted.tolist() == [True]  # drift alone: its colour only


def test_the_drift_baseline_is_carried_by_the_tracking() -> None:
    s = Settler(2, 2, _lab([50, 50]))
    s.decide(np.array([True, False]), _lab([51, 50.25]))  # cell 0 marked, waits
    s.decide(np.zeros(2, bool), _lab([51, 50.5]))  # cell 1 drifts under the line
    s.decide(np.zeros(2, bool), _lab([51, 50.5]))
    t = Tracking(np.zeros((2, 2, 3), np.uint8), s.pending, s.waited, s.prev, s.fitted,
                 s.masked)
    again = Settler(2, 2, t)
    np.testing.assert_array_equal(again.fitted, s.fitted)
    np.testing.assert_array_equal(again.masked, s.masked)
    assert again.fitted[0, 0] == 51 and again.fitted[1, 0] == 50  # 0 decided, 1 not
    # an older Tracking without a baseline: the last frame's colours stand for it
    old = Settler(2, 2, Tracking(t.reference, t.pending, t.waited, t.lab))
    np.testing.assert_array_equal(old.fitted, t.lab)


def test_quiet_recolours_have_a_budget_of_their_own() -> None:
    """Quiet colour refreshes: at once, the cells drifted QUIET_COLOUR levels or more,
    largest first, at most QUIET_RECOLOUR_SHARE of the grid's cells a frame, however many
    quiet switches the frame made; by a step, the others drifted QUIET_STEP_FROM levels
    or more; none for a smaller drift."""
    from types import SimpleNamespace

    from pipeline.activity import QUIET_COLOUR, QUIET_RECOLOUR_SHARE, QUIET_STEP_FROM
    from pipeline.modes import NearestMode
    from pipeline.planfile import CanvasState

    cells_in_grid = 400
    budget = int(QUIET_RECOLOUR_SHARE * cells_in_grid)
    n = budget + 6
    fake = SimpleNamespace(grid=SimpleNamespace(cells=cells_in_grid, cols=20),
                           config=SimpleNamespace(recolour=1.0),
                           tile_means=lambda ids: np.full((len(ids), 3), 100, np.float32))
    canvas = CanvasState.empty(20, 20)
    canvas.ids[:] = 0
    drift = np.r_[np.linspace(QUIET_COLOUR + 10, QUIET_COLOUR + 1, n - 3),
                  QUIET_COLOUR - 1, QUIET_STEP_FROM, QUIET_STEP_FROM - 1]
    means = np.broadcast_to((100 + drift)[:, None], (n, 3)).astype(np.float64)
    at_once, steps = NearestMode.recolours(fake, np.arange(n), np.ones(n, bool), means,
                                           canvas)
    assert np.flatnonzero(at_once).tolist() == list(range(budget))  # largest first
    assert np.flatnonzero(steps).tolist() == list(range(budget, n - 1))  # the rest...
    assert not at_once[n - 1] and not steps[n - 1]  # ... but the one under QUIET_STEP_FROM
    at_once, steps = NearestMode.recolours(fake, np.arange(n), np.arange(n) >= n - 4,
                                           means, canvas)
    assert np.flatnonzero(at_once).tolist() == [n - 4]  # the only one of QUIET_COLOUR
    assert np.flatnonzero(steps).tolist() == [n - 3, n - 2]
