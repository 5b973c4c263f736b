"""The planner engine on hand-made frames, in memory: no files, no video.

The index is made in memory too (random textured tiles, clustered); frames are numpy
arrays of 4 x 6 cells of 16 px. Frames go in, each frame's changes come out, and the
state carries the canvas and the activity from one call to the next. One test splits
the candidate search over threads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import RenderConfig
from pipeline.features import colour_histogram, lab_grid_means
from pipeline.grid import make_grid
from pipeline.index import TileIndex, fit_clusters
from pipeline.plan import PlanEngine

TILE = 16
ROWS, COLS = 4, 6


def memory_index(n: int = 80, seed: int = 0) -> TileIndex:
    """An index of ``n`` random textured tiles (gradients in random colours), made and
    clustered in memory: nothing of it is on disk."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:TILE, 0:TILE] / TILE
    base = rng.integers(20, 236, (n, 1, 1, 3)).astype(np.float32)
    slope = rng.normal(0, 60, (n, 1, 1, 3)).astype(np.float32)
    shape = np.where(rng.random((n, 1, 1)) < 0.5, x[None], y[None])[..., None]
    tiles = np.clip(base + slope * (shape - 0.5), 0, 255).astype(np.uint8)
    hist = colour_histogram(tiles, 5)
    centers, labels = fit_clusters(hist, 4, seed=0, batch_size=64, max_iter=20)
    return TileIndex(Path("in-memory"), tiles, hist, lab_grid_means(tiles, 4), centers,
                     labels, np.bincount(labels, minlength=4).astype(np.int64),
                     {"params": {"hist_bins": 5, "lab_grid": 4}},
                     np.arange(n, dtype=np.int64))


def frame_of(seed: int) -> np.ndarray:
    """A (64, 96, 3) uint8 BGR frame: one flat random colour per cell."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(30, 226, (ROWS, COLS, 3), dtype=np.uint8)
    return np.repeat(np.repeat(cells, TILE, 0), TILE, 1)


@pytest.fixture(scope="module")
def index() -> TileIndex:
    return memory_index()


def engine_for(index: TileIndex, **options) -> PlanEngine:
    config = RenderConfig(scale=1.0, repeat_radius=1, candidates=8, nprobe=2, **options)
    return PlanEngine(make_grid(ROWS * TILE, COLS * TILE, (TILE, TILE), 1.0), index, config)


def test_first_frame_places_every_cell_and_the_state_holds_them(index: TileIndex) -> None:
    engine = engine_for(index)
    state = engine.start()
    change, state = engine.step(state, frame_of(0))
    assert change.active == ROWS * COLS and change.cut  # a blank canvas: chosen afresh
    assert sorted(change.cells) == list(range(ROWS * COLS))
    assert ((change.ids >= 0) & (change.ids < len(index.tiles))).all()
    np.testing.assert_array_equal(state.canvas.ids.ravel()[change.cells], change.ids)
    # nearest mode recolours: each placed tile carries its cell's colour difference
    assert change.diffs.shape == (ROWS * COLS, 3) and np.abs(change.diffs).max() > 0
    # the repeat radius (1 here): no tile twice among a cell's 8 neighbours
    ids = state.canvas.ids
    for (r, c), tile in np.ndenumerate(ids):
        near = ids[max(0, r - 1):r + 2, max(0, c - 1):c + 2]
        assert (near == tile).sum() == 1


def test_a_still_frame_changes_nothing(index: TileIndex) -> None:
    engine = engine_for(index)
    state = engine.start()
    _, state = engine.step(state, frame_of(0))
    before = state.canvas.ids.copy()
    changes, state = engine.plan(state, [frame_of(0)] * 3)
    assert [c.active for c in changes] == [0, 0, 0]
    assert all(len(c.cells) == 0 for c in changes)
    np.testing.assert_array_equal(state.canvas.ids, before)


def test_a_moving_cell_is_decided_at_once(index: TileIndex) -> None:
    engine = engine_for(index)
    state = engine.start()
    frame = frame_of(0)
    _, state = engine.step(state, frame)
    moved = frame.copy()
    moved[TILE:2 * TILE, TILE:2 * TILE] = 255 - moved[TILE, TILE]  # cell (1, 1): a new colour
    change, state = engine.step(state, moved)
    assert change.active == 1 and list(change.cells) == [1 * COLS + 1]
    assert not change.cut


def test_settle_rule_a_marked_still_cell_waits_then_is_refreshed_quietly(
        index: TileIndex) -> None:
    """A cell whose pixels all change but whose mean colour does not (a checkerboard of
    +-20 laid on it) is marked but not moving: it waits ``settle`` frames, then is decided
    quietly: its tile kept (nothing clearly better), and not even re-placed (its colour
    has not drifted: a quiet refresh is spent only where it corrects 8 levels or more)."""
    engine = engine_for(index, settle=4)
    state = engine.start()
    frame = frame_of(0)
    _, state = engine.step(state, frame)
    tile = state.canvas.ids[1, 1]
    noisy = frame.astype(np.int16)
    checker = (np.indices((TILE, TILE)).sum(0) % 2) * 40 - 20
    noisy[TILE:2 * TILE, TILE:2 * TILE] += checker[..., None]
    noisy = noisy.astype(np.uint8)
    changes, state = engine.plan(state, [noisy] * 5)
    assert [c.active for c in changes] == [0, 0, 0, 1, 0]  # waited 4 frames, then quiet
    assert len(changes[3].cells) == 0 and state.canvas.ids[1, 1] == tile
    # with settle 0, the same marked cell is decided in the frame it is marked
    engine = engine_for(index, settle=0)
    state = engine.start()
    _, state = engine.step(state, frame)
    change, state = engine.step(state, noisy)
    assert change.active == 1


def drifting(frame: np.ndarray, cells: dict[tuple[int, int], float], frames: int
             ) -> list[np.ndarray]:
    """``frames`` frames after ``frame``: each cell of ``cells`` gets a checkerboard of
    +-20 (every pixel changes: the activity mask marks it) and its colour drifts by
    ``step`` levels a frame (a mean colour move well under ΔE 2: never "moving")."""
    checker = (np.indices((TILE, TILE)).sum(0) % 2) * 40 - 20
    out = []
    for k in range(1, frames + 1):
        f = frame.astype(np.int16)
        for (r, c), step in cells.items():
            f[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] += (
                checker[..., None] + round(step * k))
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


def test_quiet_recolour_where_the_colour_drifted_8_levels_largest_first(
        index: TileIndex) -> None:
    """The quiet colour rule (:data:`pipeline.activity.QUIET_COLOUR`): a marked cell
    that never moves but whose colour has drifted is, once it has waited, re-placed with
    its own tile and a new colour difference, at once if that corrects 8 levels or more,
    within the recolour budget (0.75% of the cells, at least 1 a frame: here 1 of 24),
    the largest drift first; any other that a refresh would correct by
    :data:`~pipeline.activity.QUIET_STEP_FROM` levels has its colour moved towards the
    picture's by :data:`~pipeline.activity.QUIET_STEP` levels at most. A cell drifting
    less than that keeps its colour."""
    from pipeline.activity import QUIET_STEP
    from pipeline.tone import shifts

    engine = engine_for(index, settle=4, recolour=0.9)
    state = engine.start()
    frame = frame_of(0)
    _, state = engine.step(state, frame)
    ids, diffs = state.canvas.ids.copy(), state.canvas.diffs.copy()
    big, small = (1, 1), (2, 4)  # drift 3 and 2 levels a frame: 12 and 8 after 4 frames
    changes, state = engine.plan(state, drifting(frame, {big: 3, small: 2}, 5))
    assert [c.active for c in changes] == [0, 0, 0, 2, 0]  # both waited, decided quietly
    quiet = changes[3]
    # both re-placed: the largest at once (the budget), the other by a step
    assert list(quiet.cells) == [big[0] * COLS + big[1], small[0] * COLS + small[1]]
    np.testing.assert_array_equal(state.canvas.ids, ids)  # no tile switched

    def moved(cell: tuple[int, int]) -> np.ndarray:  # painted colour change, levels
        return shifts(state.canvas.diffs[cell], 0.9) - shifts(diffs[cell], 0.9)

    assert np.abs(moved(big)).max() > QUIET_STEP  # refreshed at once: about 11 levels
    assert (moved(small) == QUIET_STEP).all()  # a step towards the picture's (8 levels up)
    # a drift under 4 levels (2 after 4 frames) is no reason to re-place a still cell,
    # even with the budget free
    engine = engine_for(index, settle=4, recolour=0.9)
    state = engine.start()
    _, state = engine.step(state, frame)
    changes, state = engine.plan(state, drifting(frame, {small: 0.5}, 5))
    assert changes[3].active == 1 and len(changes[3].cells) == 0


def test_a_slow_fade_is_followed_in_steps_under_the_churn_line(index: TileIndex) -> None:
    """A still picture that fades up by 0.6 levels a frame (never a moving cell, and the
    activity mask held off): every cell is marked by its drift alone, keeps its tile, and
    its painted colour follows the picture's; in each frame at most the recolour budget
    (1 cell here) changes colour by more than :data:`~pipeline.activity.QUIET_STEP`
    levels, which is under the stability scores' line for a changed cell."""
    from pipeline.activity import QUIET_STEP
    from pipeline.metrics import CHANGED_LEVELS
    from pipeline.tone import mean_colours, shifts

    assert QUIET_STEP < CHANGED_LEVELS
    engine = engine_for(index, settle=4, recolour=0.9, activity_threshold=400)
    state = engine.start()
    frame = frame_of(0)
    _, state = engine.step(state, frame)
    ids = state.canvas.ids.copy()
    shown = shifts(state.canvas.diffs, 0.9).astype(np.int32)
    big, small = 0, 0
    for k in range(1, 51):
        _, state = engine.step(state, np.clip(frame + round(0.6 * k), 0, 255
                                                   ).astype(np.uint8))
        now = shifts(state.canvas.diffs, 0.9).astype(np.int32)
        step = np.abs(now - shown).max(-1)
        assert (step > QUIET_STEP).sum() <= 1
        big, small = big + (step > QUIET_STEP).sum(), small + (step > 0).sum()
        shown = now
    np.testing.assert_array_equal(state.canvas.ids, ids)  # the photos stay
    assert small > 2 * big  # mostly steps
    # what a full refresh would show now (0.9 of the way from each tile's mean colour to
    # its cell's, faded 30 levels): the steps kept up (27 levels behind otherwise)
    target = np.minimum(frame[::TILE, ::TILE].astype(np.float32) + 30, 255)
    tile_means = mean_colours(index.tiles[ids.ravel()]).reshape(ROWS, COLS, 3)
    assert np.abs(shown - 0.9 * (target - tile_means)).mean() < 6


def test_scene_cut_chooses_the_moving_cells_afresh(index: TileIndex) -> None:
    engine = engine_for(index)
    state = engine.start()
    _, state = engine.step(state, frame_of(0))
    change, state = engine.step(state, frame_of(1))  # another picture: most cells jump
    assert change.cut and change.active == ROWS * COLS
    fresh = engine_for(index)
    first, _ = fresh.step(fresh.start(), frame_of(1))
    # chosen afresh (the joint assignment, no hysteresis): mostly what a blank canvas
    # would get for that frame
    same = state.canvas.ids.ravel()[first.cells] == first.ids
    assert same.mean() > 0.5


def test_state_carries_over_a_new_start_like_a_segment_boundary(index: TileIndex) -> None:
    engine = engine_for(index)
    state = engine.start()
    _, state = engine.step(state, frame_of(0))
    again = engine.start(state.canvas, state.tracking())  # the next segment
    change, _ = engine.step(again, frame_of(0))
    assert change.active == 0  # the mask goes on: nothing to re-decide
    cold = engine.start(state.canvas, None)  # tiles, but a new mask: every cell decided
    change, _ = engine.step(cold, frame_of(0))
    assert change.active == ROWS * COLS and not change.cut


def test_one_frame_at_a_time_plans_as_a_batch_does(index: TileIndex) -> None:
    frames = [frame_of(0), frame_of(0), frame_of(2), frame_of(2)]
    engine = engine_for(index)
    batch, _ = engine.plan(engine.start(), frames)
    state, single = engine.start(), []
    for frame in frames:
        change, state = engine.step(state, frame)
        single.append(change)
    for a, b in zip(batch, single, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_the_mask_run_ahead_on_its_thread_plans_as_inline(index: TileIndex) -> None:
    """The activity mask marked a batch ahead on a thread of its own (as the planner
    runs it) gives the plan and the tracking of the mask marked inside the choice."""
    from functools import partial

    from pipeline.ahead import run_ahead

    frames = [frame_of(s) for s in (0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 4)]
    engine = engine_for(index)
    inline, a = engine.plan(engine.start(), frames)
    state = engine.start()
    ahead, inputs = [], run_ahead(iter(frames), partial(engine.marked, state), 4, "mask")
    for _ in range(len(frames) // 4):
        done, state = engine.plan(state, [next(inputs) for _ in range(4)])
        ahead += done
    inputs.close()
    for x, y in zip(inline, ahead, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.tracking().reference, state.tracking().reference)


def test_run_ahead_keeps_order_raises_in_place_and_stops_when_left() -> None:
    import threading

    from pipeline.ahead import run_ahead

    assert list(run_ahead(range(50), lambda x: x * x, 3)) == [x * x for x in range(50)]

    def bad(x: int) -> int:
        if x == 5:
            raise ValueError("frame 5 is damaged")
        return x

    got = []
    with pytest.raises(ValueError, match="frame 5"):
        for x in run_ahead(range(10), bad, 2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    gen = run_ahead(endless(), lambda x: x, 2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # the thread stops and closes its source
    assert closed.is_set()


def test_the_search_threads_change_nothing(index: TileIndex,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate search split over threads (blocks of 4 queries here) plans exactly
    what one thread plans, cut, quiet and moving frames included."""
    import pipeline.modes

    monkeypatch.setattr(pipeline.modes, "MIN_THREAD_BLOCK", 4)
    frames = [frame_of(0), frame_of(0), frame_of(2), frame_of(2), frame_of(3)]
    plans = []
    for threads in (1, 3):
        engine = engine_for(index, plan_threads=threads)
        plans.append(engine.plan(engine.start(), frames)[0])
        assert (engine.mode._pool is not None) == (threads > 1)
    for a, b in zip(*plans, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_cluster_mode_is_a_strategy_of_the_same_engine(index: TileIndex) -> None:
    engine = engine_for(index, matching="cluster", cell_clusters=4)
    state = engine.start(seed=3)
    change, state = engine.step(state, frame_of(0))
    assert change.active == ROWS * COLS
    assert set(np.unique(change.orients)) <= {0, 1}  # mirrored at random, or not
    assert not change.diffs.any()  # never recoloured: the reference's look
