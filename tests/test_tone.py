"""Contrast matching ("tone"): the plan's contrast ratios, the painters' gains, and the
pixel arithmetic that applies them."""

from __future__ import annotations

import numpy as np

from pipeline.compose import Canvas
from pipeline.features import luma
from pipeline.grid import make_grid
from pipeline.metrics import ssim, sub_means
from pipeline.tone import (
    GAIN_RANGE,
    RATIO_SCALE,
    adjust,
    contrast_ratios,
    gains,
    luma_grid,
    recolour,
    retone,
)


def _tiles(k: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (k, 8, 8, 3), dtype=np.uint8)


def test_gain_one_is_exactly_the_plain_recolour() -> None:
    tiles = _tiles()
    shift = np.random.default_rng(1).integers(-80, 80, (6, 3)).astype(np.int16)
    a = recolour(tiles.copy(), shift)
    b = retone(tiles.copy(), np.ones(6, np.float32), shift)
    assert np.array_equal(a, b)
    c = tiles.copy()
    adjust(c, shift, np.ones(6, np.float32))
    assert np.array_equal(a, c)


def test_retone_scales_contrast_around_the_mean_and_keeps_it() -> None:
    tile = np.full((1, 4, 4, 3), 100, np.uint8)
    tile[0, :2] = 140  # half at 140, half at 100: mean 120, spread 20
    out = retone(tile.copy(), np.array([0.5], np.float32), None)
    assert set(np.unique(out[0, :2])) == {130} and set(np.unique(out[0, 2:])) == {110}
    shifted = retone(tile.copy(), np.array([0.5], np.float32),
                     np.array([[-10, 0, 10]], np.int16))
    assert np.array_equal(shifted[0, ..., 0], out[0, ..., 0] - 10)
    assert np.array_equal(shifted[0, ..., 2], out[0, ..., 2] + 10)
    assert retone(tile.copy(), np.array([4.0], np.float32), None).max() == 200  # clipped
    assert retone(tile.copy(), np.array([8.0], np.float32), None).min() == 0


def test_adjust_mixes_scaled_and_plain_tiles() -> None:
    tiles = _tiles(5)
    shift = np.full((5, 3), 7, np.int16)
    g = np.array([1, 0.5, 1, 2, 1], np.float32)
    got = tiles.copy()
    adjust(got, shift, g)
    for i in range(5):
        one = tiles[i:i + 1].copy()
        want = recolour(one, shift[i:i + 1]) if g[i] == 1 else retone(one, g[i:i + 1],
                                                                     shift[i:i + 1])
        assert np.array_equal(got[i], want[0])


def test_ratios_follow_the_cells_contrast_and_the_correlation() -> None:
    ramp = np.tile(np.linspace(-1, 1, 4, dtype=np.float32), 4)  # a left-right ramp
    tile = 128 + 40 * ramp
    cells = np.stack([128 + 80 * ramp,      # same structure, twice the contrast
                      128 - 40 * ramp,      # mirrored structure: anti-correlated
                      np.full(16, 128.0),   # flat
                      128 + 400 * ramp])    # far more contrast than a tile can gain
    tiles = np.repeat(tile[None], 4, 0)
    r = contrast_ratios(cells.astype(np.float32), tiles.astype(np.float32),
                        np.zeros(4, bool)) / RATIO_SCALE
    # correlated: close to the spread ratio 2 (SSIM's constant pulls it a little below)
    assert 1.8 < r[0] <= 2.0
    assert r[1] == 0 and r[2] == 0  # nothing to gain from the tile's structure: flatten
    assert r[3] == 255 / RATIO_SCALE  # stored saturated
    # the same mirrored tile, flagged as mirrored, correlates again
    flipped = contrast_ratios(cells[1:2].astype(np.float32), tiles[:1].astype(np.float32),
                              np.array([True])) / RATIO_SCALE
    assert 0.9 < flipped[0] <= 1.0


def test_gains_from_ratios_strength_and_range() -> None:
    """Gains stay within a narrow band around 1: a photo is never faded to a patch."""
    assert GAIN_RANGE == (0.8, 1.25)
    ratios = np.array([0, 32, 58, 64, 70, 128, 255], np.uint8)
    assert gains(ratios, 0.0) is None
    g = gains(ratios, 1.0)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, [0.8, 0.8, 58 / 64, 1.0, 70 / 64, 1.25, 1.25], rtol=1e-6)
    half = gains(ratios, 0.5)
    assert half[3] == 1.0 and abs(half[4] - (70 / 64) ** 0.5) < 1 / 64 and half[2] > g[2]


def test_gain_raises_viewing_scale_ssim_of_a_placed_tile() -> None:
    """A tile with the cell's structure at the wrong contrast: the gain the plan computes
    brings the mosaic's viewing-scale SSIM up."""
    grid = make_grid(32, 32, (16, 16), 1.0)  # 2x2 cells of 16 px
    rng = np.random.default_rng(3)
    base = rng.integers(60, 200, (1, 16, 16, 3)).astype(np.uint8)
    low = (128 + (base.astype(np.int16) - 128) * 4 // 5).astype(np.uint8)  # 0.8 contrast
    canvas = Canvas(grid, low)
    cells = np.arange(4)
    source = np.tile(base[0], (2, 2, 1))
    ratio = contrast_ratios(luma_grid(np.repeat(base, 4, 0)), luma_grid(np.repeat(low, 4, 0)),
                            np.zeros(4, bool))

    def view_ssim(img: np.ndarray) -> float:  # as the scores measure it
        return ssim(luma(sub_means(source, grid)), luma(sub_means(img, grid)))

    canvas.place(cells, np.zeros(4, np.int64), np.zeros(4, bool))
    plain = view_ssim(canvas.image)
    canvas.place(cells, np.zeros(4, np.int64), np.zeros(4, bool), gain=gains(ratio, 1.0))
    assert view_ssim(canvas.image) > plain + 0.01


def test_a_colour_step_is_painted_as_at_most_its_levels_and_stops_at_the_target() -> None:
    """step_diffs: whatever the strength and the rounding of the painted shift, a step
    moves each channel by at most ``levels`` once painted, and lands on the target when
    that is closer."""
    from pipeline.tone import DIFF_SCALE, shifts, step_diffs

    rng = np.random.default_rng(0)
    old = rng.integers(-200 * DIFF_SCALE, 200 * DIFF_SCALE, (5000, 3)).astype(np.int16)
    new = (old + rng.integers(-40 * DIFF_SCALE, 40 * DIFF_SCALE, (5000, 3))).astype(np.int16)
    for strength in (0.9, 0.5, 1.0):
        step = step_diffs(old, new, 2, strength)
        painted = shifts(step, strength).astype(int) - shifts(old, strength).astype(int)
        assert np.abs(painted).max() == 2
        assert (np.sign(step.astype(int) - old) == np.sign(new.astype(int) - old)).all()
    near = (old + 5).astype(np.int16)  # a third of a level away: reached
    np.testing.assert_array_equal(step_diffs(old, near, 2, 0.9), near)
