"""Grid layout and the reference's activity mask."""

from __future__ import annotations

import numpy as np

from pipeline.activity import ActivityTracker
from pipeline.grid import cell_views, make_grid


def test_grid_rounds_up_to_whole_cells() -> None:
    g = make_grid(359, 641, (32, 32), 4)
    assert (g.rows, g.cols) == (45, 81)  # ceil(1436 / 32), ceil(2564 / 32)
    assert (g.out_h, g.out_w) == (1440, 2592)
    g = make_grid(720, 1280, (32, 32), 4)
    assert (g.out_w, g.out_h, g.cells) == (5120, 2880, 14400)


def test_grid_cap_lowers_the_scale() -> None:
    g = make_grid(720, 1280, (32, 32), 4, max_w=4096)
    assert g.out_w == 4096 and g.out_h == 2304


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


def test_cell_views_are_row_major() -> None:
    g = make_grid(16, 32, (8, 8), 1)  # 2 rows x 4 cols
    frame = np.zeros((16, 32, 3), np.uint8)
    frame[8:, 24:] = 200  # bottom-right cell
    views = cell_views(frame, g, sample=4)
    assert views.shape == (8, 4, 4, 3)
    assert views[7].min() == 200 and views[:7].max() == 0
