"""Changes wait for motion (render.settle): the plan's per-cell gate."""

from __future__ import annotations

import numpy as np

from pipeline.plan import MOTION_DELTA_E, Settler


def _lab(values: list[float]) -> np.ndarray:
    lab = np.zeros((len(values), 3), np.float32)
    lab[:, 0] = values
    return lab


def test_marked_cells_wait_for_their_own_motion() -> None:
    s = Settler(3, 4, _lab([50, 50, 50]))
    # all three marked; only cell 1 moves in this frame
    got = s.decide(np.array([True, True, True]), _lab([50, 50 + MOTION_DELTA_E, 50.5]), False)
    assert got.tolist() == [1]
    # nothing newly marked; cell 2 moves now and is decided, cell 0 keeps waiting
    got = s.decide(np.zeros(3, bool), _lab([50, 52, 53]), False)
    assert got.tolist() == [2]
    assert s.decide(np.zeros(3, bool), _lab([50, 52, 53]), False).tolist() == []
    # cell 0 has waited 4 frames: decided without motion
    assert s.decide(np.zeros(3, bool), _lab([50, 52, 53]), False).tolist() == [0]
    assert s.decide(np.zeros(3, bool), _lab([50, 52, 53]), False).tolist() == []


def test_scene_cuts_first_frames_and_zero_decide_at_once() -> None:
    s = Settler(3, 8, _lab([50, 50, 50]))
    assert s.decide(np.array([True, False, True]), _lab([50, 50, 50]), False).tolist() == []
    # a scene cut (or a segment's first frame) decides everything marked or waiting
    assert s.decide(np.array([False, True, False]), _lab([50, 50, 50]), True).tolist() == [0, 1, 2]
    # no previous frame: nothing to wait for
    fresh = Settler(2, 8, None)
    assert fresh.decide(np.array([True, True]), _lab([1, 2]), False).tolist() == [0, 1]
    # settle 0 is the reference: every marked cell at once
    off = Settler(3, 0, _lab([50, 50, 50]))
    assert off.decide(np.array([True, False, True]), _lab([50, 50, 50]), False).tolist() == [0, 2]


def test_settling_continues_from_a_saved_tracking() -> None:
    from pipeline.plan import Tracking

    t = Tracking(np.zeros((2, 2, 3), np.uint8), np.array([True, False, True]),
                 np.array([3, 0, 1], np.int32), _lab([50, 50, 50]))
    s = Settler(3, 4, t)
    # cell 0 had waited 3 frames: this one is its 4th; cell 2 waits on
    assert s.decide(np.zeros(3, bool), _lab([50, 50, 50]), False).tolist() == [0]
