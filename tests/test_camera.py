"""The zoom's camera and resampling on hand-made numbers: exact answers, no files."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from pipeline.camera import (
    Link,
    Timeline,
    View,
    Zoom,
    ZoomPath,
    centre_drift,
    ease,
    fit_view,
    inner_to_outer,
    landing_view,
    outer_to_inner,
)
from pipeline.resample import area_warp, box_kernel, coverage

FRAME = (320, 180)


def contains(outer: View, inner: View, eps: float = 1e-9) -> bool:
    a, b = outer.rect(*FRAME), inner.rect(*FRAME)
    return a[0] <= b[0] + eps and a[1] <= b[1] + eps and b[2] <= a[2] + eps and \
        b[3] <= a[3] + eps


def test_fit_view_contain_and_cover():
    whole = fit_view((16.0, 12.0), FRAME, cover=False)  # 4:3 mosaic in a 16:9 frame
    assert whole.rect(*FRAME)[1] == pytest.approx(0) and whole.rect(*FRAME)[3] == 12
    assert whole.rect(*FRAME)[0] < 0 < 16 < whole.rect(*FRAME)[2]  # bars at the sides
    cover = fit_view((16.0, 12.0), FRAME, cover=True)
    x0, y0, x1, y1 = cover.rect(*FRAME)
    assert (x0, x1) == pytest.approx((0, 16)) and 0 < y0 < y1 < 12


def test_landing_view_fills_frame_with_the_cell_and_keeps_its_centre():
    start = fit_view((16.0, 9.0), FRAME, cover=True)  # 20 px cells
    v = landing_view(start, 2, 5, 1.0, FRAME)  # a square cell in a 16:9 frame: width fills
    x0, y0, x1, y1 = v.rect(*FRAME)
    assert (x0, x1) == pytest.approx((5, 6)) and 2 <= y0 < y1 <= 3
    # its centre starts 50 px from the top: it ends there, as far as the cell allows
    assert v.to_screen(5.5, 2.5)[1] == pytest.approx(start.to_screen(5.5, 2.5)[1])
    low = landing_view(start, 8, 7, 1.0, FRAME)  # starts at 170 px: kept inside the cell
    assert low.rect(*FRAME)[1] == pytest.approx(8)
    assert low.to_screen(7.5, 8.5)[1] == pytest.approx(160)


def test_centre_drift():
    start = fit_view((15.0, 9.0), FRAME, cover=False)  # 15x9 cells of 20 px, bars
    drift = centre_drift(start, 9, 15, 1.0, FRAME).reshape(9, 15)
    assert drift[4, 7] == pytest.approx(0, abs=1e-9)  # the centre cell: stays put
    assert drift[4, 8] == pytest.approx(start.cell_px)  # one cell off: one cell
    tall = fit_view((16.0, 12.0), FRAME, cover=True)  # rows 0 and 11 partly cropped
    cut = centre_drift(tall, 12, 16, 1.0, FRAME).reshape(12, 16)
    assert np.isinf(cut[0]).all() and np.isfinite(cut[2:10]).all()  # no zoom reaches them


def test_zoom_keeps_its_fixed_point_on_screen_and_nests_views():
    start = fit_view((16.0, 9.0), FRAME, cover=True)
    zoom = Zoom(start, landing_view(start, 4, 9, 1.0, FRAME))
    sx, sy = zoom.fixed_screen
    mx, my = zoom.fixed_point
    assert 0 <= sx <= FRAME[0] and 0 <= sy <= FRAME[1]
    assert 9 <= mx <= 10 and 4 <= my <= 5  # inside the landing cell
    views = [zoom.at(z) for z in np.linspace(0, zoom.span, 50)]
    for v in views:
        assert v.to_screen(mx, my) == pytest.approx((sx, sy))
    assert all(contains(a, b) for a, b in pairwise(views))
    assert (views[0].x, views[0].y, views[0].unit) == pytest.approx((start.x, start.y, start.unit))
    assert views[-1].unit == pytest.approx(zoom.end.unit)
    assert views[-1].x == pytest.approx(zoom.end.x) and views[-1].y == pytest.approx(zoom.end.y)
    scales = [math.log(v.unit) for v in views]
    assert np.allclose(np.diff(scales), np.diff(scales)[0])  # geometric: constant log steps


def test_zoom_must_end_closer():
    v = fit_view((4.0, 4.0), FRAME, cover=True)
    with pytest.raises(ValueError):
        Zoom(v, v)


def test_inner_outer_round_trip():
    v = View(3.25, 1.5, 0.01)
    back = outer_to_inner(inner_to_outer(v, (7.0, 2.0), 16.0), (7.0, 2.0), 16.0)
    assert (back.x, back.y, back.unit) == pytest.approx((v.x, v.y, v.unit))


def test_chain_path_is_continuous_and_cross_fades_at_the_seam():
    start = fit_view((16.0, 9.0), FRAME, True)
    outer = Zoom(start, landing_view(start, 4, 8, 1.0, FRAME))
    link = Link((8.0, 4.0), 16.0)  # a 16x16 mosaic in cell (4, 8)
    inner_start = outer_to_inner(outer.end, link.cell, link.n)
    inner = Zoom(inner_start, landing_view(inner_start, 8, 7, 1.0, FRAME))
    path = ZoomPath([outer, inner], [link])
    assert path.total == pytest.approx(outer.span + inner.span)
    assert len(path.shots(0.0)) == 1 and len(path.shots(1.0)) == 1
    seam = path.shots(outer.span / path.total)
    assert [s.level for s in seam] == [0, 1]
    assert seam[1].weight == pytest.approx(0.5)
    as_outer = inner_to_outer(seam[1].view, link.cell, link.n)
    assert (as_outer.x, as_outer.y, as_outer.unit) == pytest.approx(
        (seam[0].view.x, seam[0].view.y, seam[0].view.unit))
    weights = [path.shots(p)[-1].weight for p in np.linspace(0.3, 0.7, 41)]
    assert all(b >= a - 1e-12 for a, b in pairwise(weights) if a < 1 and b < 1)


def test_ease_starts_and_stops_smoothly():
    t = np.linspace(0, 1, 1001)
    for ramp in (0.5, 0.25, 0.1):
        e = np.array([ease(x, ramp) for x in t])
        assert e[0] == 0 and e[-1] == pytest.approx(1)
        assert (np.diff(e) >= 0).all()
        speed = np.diff(e) / np.diff(t)
        assert speed[0] < 0.01 and speed[-1] < 0.01  # eased in and out
    assert ease(0.3, 0.5) == pytest.approx(0.3 - math.sin(0.6 * math.pi) / (2 * math.pi))


def test_timeline_holds_and_reverses():
    tl = Timeline(frames=20, hold=3)
    times = [tl.time(i) for i in range(20)]
    assert times[:4] == [0, 0, 0, 0] and times[-4:] == [1, 1, 1, 1]
    back = Timeline(frames=20, hold=3, reverse=True)
    assert [back.time(i) for i in range(20)] == times[::-1]
    with pytest.raises(ValueError):
        Timeline(frames=7, hold=3)


def test_box_kernel():
    assert box_kernel(1.0).tolist() == [1.0]
    assert box_kernel(2.0) == pytest.approx([0.25, 0.5, 0.25])
    for w in (1.3, 1.9, 2.7, 4.2):
        k = box_kernel(w)
        assert k.sum() == pytest.approx(1) and len(k) % 2 == 1


def exact_area(img: np.ndarray, x0: float, y0: float, r: float, size: tuple[int, int]
               ) -> np.ndarray:
    """The exact mean of each screen pixel's footprint (summed-area table, float64)."""
    h, w = img.shape
    table = np.zeros((h + 1, w + 1))
    table[1:, 1:] = img.astype(np.float64).cumsum(0).cumsum(1)

    def integral(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xi = np.minimum(np.floor(x).astype(int), w - 1)
        yi = np.minimum(np.floor(y).astype(int), h - 1)
        fx, fy = x - xi, y - yi
        return (table[yi, xi] * (1 - fx) * (1 - fy) + table[yi, xi + 1] * fx * (1 - fy)
                + table[yi + 1, xi] * (1 - fx) * fy + table[yi + 1, xi + 1] * fx * fy)

    xs = x0 + np.arange(size[0] + 1) * r
    ys = y0 + np.arange(size[1] + 1) * r
    c = integral(xs[None, :], ys[:, None])
    return (c[1:, 1:] - c[1:, :-1] - c[:-1, 1:] + c[:-1, :-1]) / (r * r)


@pytest.mark.parametrize("x0, y0, r", [(10.3, 20.7, 1.37), (50.5, 5.25, 1.9),
                                       (3.1, 3.3, 1.05), (7.75, 2.5, 3.3)])
def test_area_warp_averages_each_footprint(x0, y0, r):
    y, x = np.mgrid[0:500, 0:800]
    grey = (127 + 100 * np.sin(x / 7.0) * np.cos(y / 9.0)).astype(np.float32)
    out = area_warp(np.dstack([grey] * 3), x0, y0, r, r, (150, 100))[:, :, 0]
    want = exact_area(grey, x0, y0, r, (150, 100))
    err = out[2:-2, 2:-2] - want[2:-2, 2:-2]
    assert np.sqrt((err ** 2).mean()) < 1.5  # grey levels, of a pattern spanning 200


def test_area_warp_whole_scale_and_outside():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert (area_warp(img, 0, 0, 1, 1, (60, 40)) == img).all()
    out = area_warp(img, -10, 0, 1, 1, (60, 40))
    assert (out[:, :10] == 0).all() and (out[:, 10:] == img[:, :50]).all()


def test_coverage():
    assert coverage(-0.5, 1.0, 4, 0.0, 2.2).tolist() == pytest.approx([0.5, 1, 0.7, 0])
