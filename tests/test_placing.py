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


def test_compiled_canvas_measure_is_numpys_to_the_bit(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """The scores' measures read in place (pipeline.placing.measure_cells) are the numpy
    measures' bits on the render's layout (32x32 tiles, 4x4 sub-grid), and its luma
    levels are OpenCV's for every one of the 2^24 colours (summed tile by tile)."""
    from pipeline.placing import measure_cells
    from pipeline.visibility import LUMA

    rng = np.random.default_rng(11)
    grid = Grid(src_h=30, src_w=40, rows=6, cols=8, tile_h=32, tile_w=32)
    bank = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    bank[:10] = rng.integers(100, 110, (10, 32, 32, 3), dtype=np.uint8)  # low spread
    measured = {}
    for name in ("numpy", "compiled"):
        monkeypatch.setattr(compose, "_measuring", False if name == "numpy" else None)
        rng = np.random.default_rng(12)
        canvas = Canvas(grid, bank, track=4)
        cells = rng.choice(grid.cells, 30, replace=False)
        canvas.place(np.arange(grid.cells), rng.integers(0, 40, grid.cells),
                     (rng.random(grid.cells) < 0.5).astype(np.uint8),
                     rng.integers(-80, 80, (grid.cells, 3)).astype(np.int16))
        canvas.place(cells, rng.integers(0, 40, 30), np.zeros(30, np.uint8))
        measured[name] = (canvas.sub.copy(), canvas.sub_lab.copy(), canvas.spread.copy())
    assert compose._measuring is measure_cells
    for a, b in zip(measured["numpy"], measured["compiled"], strict=True):
        assert a.tobytes() == b.tobytes()
    every = np.arange(2**24, dtype=np.uint32)
    tiles = np.stack([every >> 16, (every >> 8) & 255, every & 255], -1).astype(np.uint8)
    tiles = tiles.reshape(65536, 16, 16, 3)
    image = np.ascontiguousarray(tiles.reshape(256, 256, 16, 16, 3).swapaxes(1, 2).reshape(
        4096, 4096, 3))
    total, squares = np.empty(65536, np.int64), np.empty(65536, np.int64)
    measure_cells(image, np.arange(65536, dtype=np.int64), 256, 16, 16, 1, LUMA,
                  np.empty((65536, 1, 1, 3), np.int32), total, squares)
    import cv2

    levels = cv2.transform(tiles.reshape(65536, -1, 3), LUMA[None, :]).reshape(65536, -1)
    assert np.array_equal(total, levels.sum(1, dtype=np.int64))
    assert np.array_equal(squares, (levels.astype(np.int64) ** 2).sum(1))
