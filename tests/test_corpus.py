"""Scanning and decoding: file selection, formats, crops, and per-file failures."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.corpus import (
    crop_resize,
    decode_files,
    decode_image,
    jpeg_size,
    reduction_for,
    scan_corpus,
)
from pipeline.errors import CorpusError


def write_palette_png(path: Path, indices: np.ndarray, palette: list[tuple[int, int, int]]
                      ) -> None:
    """Write an 8-bit palette (colour type 3) PNG by hand: RGB palette, one index a pixel."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    h, w = indices.shape
    raw = b"".join(b"\x00" + row.astype(np.uint8).tobytes() for row in indices)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
           + chunk(b"PLTE", bytes(c for rgb in palette for c in rgb))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.write_bytes(png)


def test_scan_selects_images_any_case_and_skips_hidden(tmp_path: Path) -> None:
    for name in ["a.jpg", "b.JPEG", "c.Png", "d.webp", "e.BMP", "f.tif", "g.tiff", "notes.txt",
                 ".hidden.jpg", "sub/h.jpg", ".git/i.jpg", "sub/.j.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    names = [Path(e.path).relative_to(tmp_path).as_posix() for e in scan_corpus(tmp_path)]
    assert names == ["a.jpg", "b.JPEG", "c.Png", "d.webp", "e.BMP", "f.tif", "g.tiff",
                     "sub/h.jpg"]


def test_scan_missing_and_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        scan_corpus(tmp_path / "nope")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(CorpusError, match="not a directory"):
        scan_corpus(tmp_path / "file.jpg")


def test_reduction_keeps_tile_covered() -> None:
    assert reduction_for(218, 178, (32, 32)) == 4  # CelebA: 178/4 = 44 >= 32, 178/8 < 32
    assert reduction_for(1080, 1920, (32, 32)) == 8
    assert reduction_for(40, 40, (32, 32)) == 1
    assert reduction_for(100, 100, (32, 48)) == 2  # width 100/2 = 50 >= 48


def test_jpeg_size_and_reduced_decode() -> None:
    img = np.full((218, 178, 3), (30, 160, 220), np.uint8)
    data = cv2.imencode(".jpg", img)[1].tobytes()
    assert jpeg_size(data) == (218, 178)
    assert jpeg_size(b"not a jpeg") is None
    tile = decode_image(data, ".jpg", (32, 32))
    assert tile.shape == (32, 32, 3)
    np.testing.assert_allclose(tile.reshape(-1, 3).mean(0), (30, 160, 220), atol=3)


def test_centre_crop_to_aspect() -> None:
    # 10 rows x 30 cols: left third red, middle green, right third blue -> square crop
    # keeps the middle third only.
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, :10] = (0, 0, 255)
    img[:, 10:20] = (0, 255, 0)
    img[:, 20:] = (255, 0, 0)
    np.testing.assert_array_equal(crop_resize(img, (5, 5)), np.full((5, 5, 3), (0, 255, 0)))
    tall = crop_resize(np.zeros((100, 20, 3), np.uint8), (8, 4))  # non-square tile
    assert tall.shape == (8, 4, 3)


def test_sixteen_bit_grey_alpha_and_palette(tmp_path: Path) -> None:
    deep = np.full((8, 8, 3), (1000, 30000, 65535), np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    grey = np.full((8, 8), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    bgra = np.zeros((8, 8, 4), np.uint8)
    bgra[..., :3] = (0, 0, 200)
    bgra[:, :4, 3] = 255  # left half opaque red, right half transparent -> white
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    write_palette_png(tmp_path / "palette.png", np.array([[0, 1] * 4] * 8),
                      [(255, 0, 0), (0, 0, 255)])  # RGB red, blue
    paths = [str(tmp_path / n) for n in ("deep.png", "grey.png", "alpha.png", "palette.png")]
    batch = decode_files(paths, (8, 8), bins=5, grid=2)
    assert batch.ok.all()
    np.testing.assert_array_equal(batch.tiles[0][0, 0], (1000 >> 8, 30000 >> 8, 255))
    np.testing.assert_array_equal(batch.tiles[1], np.full((8, 8, 3), 77))
    np.testing.assert_array_equal(batch.tiles[2][:, :4], np.full((8, 4, 3), (0, 0, 200)))
    np.testing.assert_array_equal(batch.tiles[2][:, 4:], np.full((8, 4, 3), 255))
    np.testing.assert_array_equal(batch.tiles[3][0, :2], [(0, 0, 255), (255, 0, 0)])


def test_bad_files_are_reported_not_raised(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((16, 16, 3), 128, np.uint8))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("this is not an image\n")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "missing-target.jpg")
    names = ["good.png", "empty.jpg", "text.png", "corrupt.jpg", "dangling.jpg"]
    batch = decode_files([str(tmp_path / n) for n in names], (8, 8), 5, 2)
    assert batch.ok.tolist() == [True, False, False, False, False]
    assert batch.reasons[1] == "empty file (0 bytes)"
    assert batch.reasons[2] == "not a decodable image"
    assert batch.reasons[3] == "not a decodable image"
    assert batch.reasons[4].startswith("cannot read")
    assert len(batch.digests[0]) == 32 and batch.digests[4] == ""
