"""Grid layout: cells, size limits, each cell's view, windows within a radius."""

from __future__ import annotations

import numpy as np

from pipeline.grid import cell_views, make_grid, pair_windows


def test_grid_rounds_up_to_whole_cells() -> None:
    g = make_grid(359, 641, (32, 32), 4)
    assert (g.rows, g.cols) == (45, 81)  # ceil(1436 / 32), ceil(2564 / 32)
    assert (g.out_h, g.out_w) == (1440, 2592)
    g = make_grid(720, 1280, (32, 32), 4)
    assert (g.out_w, g.out_h, g.cells) == (5120, 2880, 14400)


def test_grid_cap_lowers_the_scale() -> None:
    g = make_grid(720, 1280, (32, 32), 4, max_w=4096)
    assert g.out_w == 4096 and g.out_h == 2304


def test_cell_views_are_row_major() -> None:
    g = make_grid(16, 32, (8, 8), 1)  # 2 rows x 4 cols
    frame = np.zeros((16, 32, 3), np.uint8)
    frame[8:, 24:] = 200  # bottom-right cell
    views = cell_views(frame, g, sample=4)
    assert views.shape == (8, 4, 4, 3)
    assert views[7].min() == 200 and views[:7].max() == 0


def test_pair_windows_visit_each_pair_within_the_radius_once() -> None:
    rows, cols = 4, 5
    pairs = set()
    for a, b in pair_windows(rows, cols, 2):
        ra, ca = np.mgrid[a[0], a[1]]
        rb, cb = np.mgrid[b[0], b[1]]
        for p in zip(ra.ravel(), ca.ravel(), rb.ravel(), cb.ravel(), strict=True):
            assert (p[2], p[3]) > (p[0], p[1])  # the second cell comes later
            pairs.add(p)
    want = {(r1, c1, r2, c2) for r1 in range(rows) for c1 in range(cols)
            for r2 in range(rows) for c2 in range(cols)
            if (r2, c2) > (r1, c1) and max(abs(r1 - r2), abs(c1 - c2)) <= 2}
    assert pairs == want
