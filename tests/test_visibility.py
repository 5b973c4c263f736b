"""Photo visibility (pipeline.visibility): contrast shares, tile identification from
pixels, and orientation variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.compose import Canvas, blend
from pipeline.encode import bgr_to_i420
from pipeline.grid import make_grid
from pipeline.metrics import Scores
from pipeline.tone import retone
from pipeline.visibility import (
    MIN_SPREAD,
    PER_UNIT,
    TileIdentifier,
    luma_spread,
    orient,
    orientations,
    share_histogram,
    summarise,
    y_plane_spread,
)

TOL = 1.5 / PER_UNIT  # a share is reported at its histogram bin's centre


def _photos(k: int, seed: int = 0, size: int = 16) -> np.ndarray:
    """Textured tiles: smooth random structure at mid grey (no clipping at gain 1.5)."""
    rng = np.random.default_rng(seed)
    import cv2

    small = rng.integers(70, 186, (k, 4, 4, 3)).astype(np.float32)
    return np.stack([cv2.resize(t, (size, size), interpolation=cv2.INTER_CUBIC)
                     for t in small]).clip(0, 255).astype(np.uint8)


def test_a_tile_faded_to_half_scores_half() -> None:
    tiles = _photos(50)
    own = luma_spread(tiles)
    assert (own >= MIN_SPREAD).all()
    half = retone(tiles.copy(), np.full(50, 0.5, np.float32), None)
    got = summarise(share_histogram(luma_spread(half), own))
    assert abs(got["visibility_median"] - 0.5) <= TOL
    assert got["visibility_below_half"] <= 1.0 and got["visibility_cells"] == 50
    same = summarise(share_histogram(own, own))
    assert abs(same["visibility_median"] - 1) <= TOL and same["visibility_below_half"] == 0
    boosted = retone(tiles.copy(), np.full(50, 1.5, np.float32), None)
    assert abs(summarise(share_histogram(luma_spread(boosted), own))["visibility_median"]
               - 1.5) <= TOL


def test_flat_tiles_are_left_out() -> None:
    flat = np.full((3, 8, 8, 3), 120, np.uint8)
    flat[:, 0, 0] = 125  # a speck: spread far under MIN_SPREAD
    assert (luma_spread(flat) < MIN_SPREAD).all()
    assert summarise(share_histogram(np.zeros(3), luma_spread(flat))) == {"visibility_cells": 0}


def test_painters_count_pure_and_blended_shares() -> None:
    """The canvas keeps each cell's painted and own spread; a 50/50 blend with a flat
    source halves what the output shows; the scores add segments exactly."""
    tiles = _photos(6, size=16)
    grid = make_grid(32, 48, (16, 16), 1.0)  # 2 x 3 cells
    canvas = Canvas(grid, tiles, track=4)
    canvas.place(np.arange(6), np.arange(6), np.zeros(6, np.uint8),
                 gain=np.array([1, 1, 1, 0.5, 0.5, 0.5], np.float32))
    np.testing.assert_allclose(canvas.own.ravel(), luma_spread(tiles), rtol=1e-5)
    ratio = (canvas.spread / canvas.own).ravel()
    np.testing.assert_allclose(ratio, [1, 1, 1, 0.5, 0.5, 0.5], atol=0.02)
    flat_source = np.full((32, 48, 3), 128, np.uint8)
    out = blend(canvas.image, flat_source, 0.5, np.empty_like(canvas.image))
    shown = y_plane_spread(bgr_to_i420(out)[:32], 2, 3)
    a, b = Scores(), Scores()
    a.add_visibility(canvas.own, canvas.spread, shown)
    b.add_visibility(canvas.own, canvas.spread, shown)
    a.add(b)
    s = a.summary()
    assert s["visibility_cells"] == 12 and s["visibility_output_cells"] == 12
    assert abs(s["visibility_median"] - 0.75) <= 0.26  # half at 1, half at 0.5
    assert s["visibility_below_half"] <= 0.5
    # the blend halves every share (a quarter sample of the Y plane: within 10%)
    assert 0.2 < s["visibility_output_p10"] < 0.3 and s["visibility_output_median"] < 0.56


def test_orientations_and_their_codes() -> None:
    assert orientations("none", True) == (0,)
    assert orientations("mirror", True) == (0, 1)
    assert len(orientations("all", True)) == 8 and len(orientations("all", False)) == 4
    t = np.arange(16).reshape(1, 4, 4)
    seen = {orient(t, c).tobytes() for c in range(8)}
    assert len(seen) == 8  # the 8 symmetries of the square, all different
    assert (orient(t, 1)[0] == t[0, :, ::-1]).all()  # code 1: the mirror


def test_identifier_finds_tiles_recoloured_faded_and_turned() -> None:
    bank = _photos(300, seed=3, size=32)
    ident = TileIdentifier(bank)
    rng = np.random.default_rng(1)
    ids = rng.choice(300, 120, replace=False)
    codes = rng.integers(0, 8, 120)
    cells = np.stack([orient(bank[i][None], int(c))[0] for i, c in zip(ids, codes, strict=True)])
    cells = retone(cells, np.full(120, 0.6, np.float32), np.full((120, 3), -20, np.int16))
    got, got_codes = ident.identify(cells)
    assert (got == ids).mean() >= 0.98
    hit = got == ids
    assert (got_codes[hit] == codes[hit]).all()
    noise = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    assert (ident.identify(noise)[0] < 0).all()  # nothing like a tile: not identified


@pytest.mark.parametrize("kind", ["none", "all"])
def test_orientation_variants_follow_the_option(tile_index: Path, tmp_path: Path,
                                                kind: str) -> None:
    """render.orientations=none places every tile as it is; all also turns them."""
    from helpers import make_clip

    from pipeline.config import RenderConfig
    from pipeline.stages.render import run_render

    clip = make_clip(tmp_path / "c.mp4", seconds=0.6, audio=False)
    config = RenderConfig(scale=2, preset="ultrafast", alpha=0, orientations=kind)
    run_render(str(clip), tile_index, tmp_path / "o.mp4", config, tmp_path / "cache",
               progress=False)
    codes = np.concatenate([np.load(p)["orients"] for p in
                            (tmp_path / "cache" / "plans").glob("*/chunk-*.npz")])
    assert len(codes)
    if kind == "none":
        assert (codes == 0).all()
    else:
        assert (codes > 1).any()  # vertical flips or quarter turns


def test_score_with_index_identifies_the_tiles_from_pixels(tile_index: Path, tmp_path: Path,
                                                           run_cli) -> None:
    """`mosaic score --index` tells each cell's tile from its pixels: its photo visibility
    agrees with the render's own report (which knows the tiles)."""
    from helpers import make_clip

    clip = make_clip(tmp_path / "c.mp4", seconds=0.8, audio=False)
    out = tmp_path / "m.mp4"
    code, _, _ = run_cli("render", clip, "--index", tile_index, "--out", out, "--alpha", "0",
                         "--scale", "2", "--preset", "ultrafast", "--set", "render.crf=10",
                         "-q")
    assert code == 0
    own = json.loads((tmp_path / "m.mp4.scores.json").read_text())["scores"]
    code, text, _ = run_cli("score", clip, out, "--scale", "2", "--index", tile_index, "-q")
    assert code == 0
    got = json.loads(text)
    assert got["identified_share"] > 0.6
    assert abs(got["visibility_median"] - own["visibility_median"]) <= 0.05
    code, _, err = run_cli("score", clip, out, "--scale", "2", "--index", tmp_path, "-q")
    assert code == 1 and str(tmp_path) in err


def test_luma_spread_is_the_std_of_the_rounded_luma() -> None:
    import cv2

    rng = np.random.default_rng(2)
    tiles = rng.integers(0, 256, (40, 8, 6, 3), np.uint8)
    tiles[:5] = tiles[:5, :1, :1]  # flat
    luma = cv2.transform(tiles.reshape(40, -1, 3), np.array([[0.114, 0.587, 0.299]]))
    want = luma.reshape(40, -1).std(1)
    assert np.allclose(luma_spread(tiles), want, rtol=1e-6, atol=1e-6)
    assert (luma_spread(tiles[:5]) == 0).all()


def test_the_canvas_measures_its_cells_when_read_as_they_are_then() -> None:
    """Cells placed several times between two reads are measured once, as last placed
    (turned and recoloured); cells never read again are not measured at all."""
    from pipeline.features import block_means, srgb_to_lab

    tiles = _photos(6, size=16)
    grid = make_grid(32, 48, (16, 16), 1.0)  # 2 x 3 cells
    canvas = Canvas(grid, tiles, track=4)
    canvas.place(np.arange(6), np.arange(6), np.zeros(6, np.uint8))
    first = canvas.sub.copy()
    canvas.place(np.arange(3), np.array([5, 4, 3]), np.ones(3, np.uint8),
                 shift=np.full((3, 3), 40, np.int16))
    canvas.place(np.array([0]), np.array([1]), np.zeros(1, np.uint8))
    painted = canvas.image.reshape(2, 16, 3, 16, 3).swapaxes(1, 2).reshape(6, 16, 16, 3)
    want = block_means(np.ascontiguousarray(painted), 4).reshape(2, 3, 4, 4, 3)
    np.testing.assert_array_equal(canvas.sub, want)
    np.testing.assert_array_equal(canvas.sub_lab, srgb_to_lab(want))
    np.testing.assert_array_equal(canvas.spread.ravel(), luma_spread(painted))
    np.testing.assert_allclose(canvas.own.ravel(), luma_spread(tiles[[1, 4, 3, 3, 4, 5]]))
    np.testing.assert_array_equal(canvas.sub[1], first[1])  # not placed again: as it was
