"""``mosaic photo``: still mosaics through the real command, checked pixel by pixel.

The tiles a run placed are read back from its PNG output (with recolouring off, every
cell is exactly one tile of the bank), so the radius and cap rules are checked on what
the user gets, not on internal state.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import gradient_image, mosaic

from pipeline.index import load_index
from pipeline.photo import MAX_SIDE, violations


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gradient_image(tmp_path_factory.mktemp("photo") / "src.png")


def placed_tiles(out: Path, index_dir: Path, rows: int, cols: int) -> np.ndarray:
    """Tile id of every cell of a pure, un-recoloured mosaic, (rows, cols) int64."""
    bank = np.asarray(load_index(index_dir).tiles)
    lookup = {t.tobytes(): i for i, t in enumerate(bank)}
    img = cv2.imread(str(out))
    th, tw = bank.shape[1:3]
    assert img.shape == (rows * th, cols * tw, 3)
    cells = img.reshape(rows, th, cols, tw, 3).swapaxes(1, 2)
    ids = np.array([[lookup.get(cells[r, c].tobytes(), -1) for c in range(cols)]
                    for r in range(rows)])
    assert (ids >= 0).all(), "every cell must be exactly one tile of the bank"
    return ids


def brute_force_repeats(ids: np.ndarray, radius: int) -> int:
    """Pairs of cells within ``radius`` (Chebyshev) showing the same tile id."""
    rows, cols = ids.shape
    count = 0
    for r in range(rows):
        for c in range(cols):
            window = ids[max(0, r - radius):r + radius + 1, max(0, c - radius):c + radius + 1]
            count += int((window == ids[r, c]).sum()) - 1
    return count


def test_output_size_follows_cells_and_tile_px(photo: Path, tile_index: Path,
                                               tmp_path: Path) -> None:
    for args, size in ((("--cells", "20"), (640, 480)),
                       (("--cells", "16", "--tile-px", "48"), (768, 576)),
                       (("--cell-size", "40"), (256, 192))):
        out = tmp_path / "m.jpg"
        run = mosaic("photo", photo, "--index", tile_index, "--out", out, "--radius", "1",
                     *args)
        assert run.returncode == 0, run.stderr
        img = cv2.imread(str(out))
        assert (img.shape[1], img.shape[0]) == size, args
    for ext in (".png", ".tif"):
        run = mosaic("photo", photo, "--index", tile_index, "--out", tmp_path / f"m{ext}",
                     "--cells", "12", "--radius", "1", "-q")
        assert run.returncode == 0, run.stderr
        assert cv2.imread(str(tmp_path / f"m{ext}")).shape == (288, 384, 3)


def test_no_tile_repeats_within_the_radius(photo: Path, tile_index: Path,
                                           tmp_path: Path) -> None:
    out = tmp_path / "r.png"
    run = mosaic("photo", photo, "--index", tile_index, "--out", out, "--cells", "24",
                 "--radius", "3", "--recolour", "0", "-q")
    assert run.returncode == 0, run.stderr
    ids = placed_tiles(out, tile_index, 18, 24)
    assert brute_force_repeats(ids, 3) == 0
    assert len(np.unique(ids)) >= 49  # a 7x7 window needs 49 different tiles


def test_the_use_cap_holds(photo: Path, tile_index: Path, tmp_path: Path) -> None:
    groups = load_index(tile_index).groups
    n_groups = len(np.unique(groups))
    cols = 16
    rows = 12
    assert rows * cols <= 2 * n_groups, "the fixture index is too small for this test"
    out = tmp_path / "c.png"
    run = mosaic("photo", photo, "--index", tile_index, "--out", out, "--cells", cols,
                 "--radius", "1", "--max-uses", "2", "--recolour", "0", "-q")
    assert run.returncode == 0, run.stderr
    ids = placed_tiles(out, tile_index, rows, cols)
    assert np.bincount(groups[ids.ravel()]).max() <= 2
    assert brute_force_repeats(ids, 1) == 0
    assert len(violations(ids, groups, 1, 2)) == 0
    # without the cap the same picture repeats tiles more often (the cap did something)
    run = mosaic("photo", photo, "--index", tile_index, "--out", out, "--cells", cols,
                 "--radius", "1", "--recolour", "0", "-q")
    assert np.bincount(groups[placed_tiles(out, tile_index, rows, cols).ravel()]).max() > 2


def test_blend_of_one_gives_the_source(photo: Path, tile_index: Path, tmp_path: Path) -> None:
    exact = gradient_image(tmp_path / "s.png", 320, 224)  # 10x7 cells of 32 px: same size
    out = tmp_path / "b.png"
    run = mosaic("photo", exact, "--index", tile_index, "--out", out, "--cells", "10",
                 "--radius", "1", "--alpha", "1", "-q")
    assert run.returncode == 0, run.stderr
    assert np.array_equal(cv2.imread(str(out)), cv2.imread(str(exact)))
    out2 = tmp_path / "b2.png"  # upscaled: the source resized as cv2.resize does it
    run = mosaic("photo", photo, "--index", tile_index, "--out", out2, "--cells", "20",
                 "--radius", "1", "--alpha", "1", "-q")
    assert run.returncode == 0, run.stderr
    expected = cv2.resize(cv2.imread(str(photo)), (640, 480), interpolation=cv2.INTER_LINEAR)
    diff = np.abs(cv2.imread(str(out2)).astype(int) - expected.astype(int))
    assert diff.max() <= 1


def test_bad_input_is_one_line(photo: Path, tile_index: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jpg"
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    cases = [
        ((tmp_path / "missing.jpg", "--out", out), "no such image file"),
        ((corrupt, "--out", out), "not a readable image"),
        ((photo, "--out", out, "--radius", "10"), "--radius 10 needs at least 121"),
        ((photo, "--out", out, "--cells", str(MAX_SIDE // 32 + 1)), "over the limit"),
        ((photo, "--out", tmp_path / "o.gif"), "unknown image type"),
        ((photo, "--out", photo), "would overwrite"),
        ((photo, "--out", out, "--cells", "40", "--max-uses", "1"), "raise --max-uses"),
    ]
    for args, message in cases:
        run = mosaic("photo", *args, "--index", tile_index)
        assert run.returncode == 1, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporaries left"
