"""The compiled tile placement (pipeline.placing) against numpy's, and when it loads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pipeline.compose as compose
from pipeline.compose import Canvas
from pipeline.grid import Grid
from pipeline.placing import place_tiles

ROOT = Path(__file__).resolve().parents[1]


def _frames(rng: np.random.Generator, grid: Grid, bank_ids: np.ndarray, n: int) -> list:
    """``n`` frames of placements: distinct cells, tiles of the bank, half of them
    mirrored, shifts that saturate at both ends (and none at all, every third frame)."""
    out = []
    for f in range(n):
        k = int(rng.integers(1, grid.cells))
        cells = rng.choice(grid.cells, k, replace=False)
        ids = rng.choice(bank_ids, k)
        orients = (rng.random(k) < 0.5).astype(np.uint8)
        shift = None if f % 3 == 2 else rng.integers(-300, 300, (k, 3)).astype(np.int16)
        out.append((cells, ids, orients, shift))
    return out


@pytest.mark.parametrize("tile", [(4, 6), (5, 5), (7, 16), (32, 32), (3, 48), (2, 64)])
def test_compiled_placement_is_numpys_to_the_bit(monkeypatch: pytest.MonkeyPatch,
                                                 tile: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    grid = Grid(src_h=30, src_w=40, rows=7, cols=9, tile_h=tile[0], tile_w=tile[1])
    bank_ids = np.sort(rng.choice(1000, 60, replace=False))
    bank = rng.integers(0, 256, (60, *tile, 3), dtype=np.uint8)
    canvases = {}
    for name, kernel in (("numpy", False), ("compiled", place_tiles)):
        monkeypatch.setattr(compose, "_placing", kernel)
        canvas = Canvas(grid, bank, track=2, bank_ids=bank_ids)
        changes = [canvas.place(*frame[:3], frame[3], measure=bool(i % 2))
                   for i, frame in enumerate(_frames(np.random.default_rng(3), grid,
                                                     bank_ids, 12))]
        canvases[name] = (canvas, changes)
    (a, ca), (b, cb) = canvases["numpy"], canvases["compiled"]
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.orients, b.orients)
    assert all((x is None and y is None) or np.array_equal(x, y)
               for x, y in zip(ca, cb, strict=True))
    assert any(x is not None and (x > 0).any() for x in cb)
    assert np.array_equal(a.sub_lab, b.sub_lab) and np.array_equal(a.spread, b.spread)


def test_turns_and_gains_still_placed_by_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flip or a contrast gain is not the kernel's: such a batch is placed by numpy."""
    calls = []
    monkeypatch.setattr(compose, "_placing", lambda *a: calls.append(a))
    grid = Grid(src_h=8, src_w=8, rows=2, cols=2, tile_h=4, tile_w=4)
    bank = np.arange(4 * 4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 4, 3)
    canvas = Canvas(grid, bank)
    canvas.place(np.arange(4), np.arange(4), np.array([0, 1, 2, 3], np.uint8))
    canvas.place(np.arange(2), np.arange(2), np.zeros(2, np.uint8),
                 gain=np.full(2, 1.25, np.float32))
    assert not calls
    assert np.array_equal(canvas.image[4:, :4], bank[2][::-1])
    assert np.array_equal(canvas.image[4:, 4:], bank[3][::-1, ::-1])
    assert not np.array_equal(canvas.image[:4, 4:], bank[1])  # contrast scaled


def test_numba_is_loaded_for_the_placement_only_once_it_pays() -> None:
    """A process without numba places with numpy until PLACE_COMPILE_AFTER cells, then
    loads the kernel; the canvas is the same either way."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import pipeline.compose as compose
        from pipeline.grid import Grid
        compose.PLACE_COMPILE_AFTER = 50
        grid = Grid(src_h=8, src_w=8, rows=6, cols=6, tile_h=2, tile_w=2)
        bank = np.random.default_rng(1).integers(0, 256, (36, 2, 2, 3), dtype=np.uint8)
        canvas = compose.Canvas(grid, bank)
        cells = np.arange(36)
        canvas.place(cells, cells, np.zeros(36, np.uint8))
        assert "numba" not in sys.modules and compose._placing is None
        canvas.place(cells, cells[::-1], np.ones(36, np.uint8))
        assert "numba" not in sys.modules
        canvas.place(cells, cells, np.zeros(36, np.uint8), np.ones((36, 3), np.int16))
        assert "numba" in sys.modules and compose._placing, compose._placing
        want = np.clip(bank.astype(int) + 1, 0, 255).reshape(6, 6, 2, 2, 3)
        assert np.array_equal(canvas.image, want.swapaxes(1, 2).reshape(12, 12, 3))
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
