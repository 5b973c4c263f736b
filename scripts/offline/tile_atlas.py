#!/usr/bin/env python3
"""An index's tiles as one small image, and back as a corpus of files.

``pack``: the (N, 32, 32, 3) tiles of INDEX/tiles.npy laid out in rows of 205 into one
WebP image (quality 60: 7.9 MB for 42,050 tiles, where tiles.npy is 129 MB).
``unpack``: that image cut back into N JPEG files, a corpus that ``mosaic index``
indexes like any other: the same photos, recompressed. For benchmarks on a box that
cannot fetch the corpus (``scripts/offline/pack.sh``).

    python scripts/offline/tile_atlas.py pack INDEX atlas.webp
    python scripts/offline/tile_atlas.py unpack atlas.webp CORPUS N
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

COLUMNS = 205


def pack(index: Path, out: Path, quality: int = 60) -> int:
    """Write the index's tiles into one WebP image; the number of tiles."""
    tiles = np.load(index / "tiles.npy", mmap_mode="r")
    n, h, w, _ = tiles.shape
    rows = -(-n // COLUMNS)
    atlas = np.zeros((rows * h, COLUMNS * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, COLUMNS)
        atlas[r * h:(r + 1) * h, c * w:(c + 1) * w] = tiles[i]
    ok, data = cv2.imencode(".webp", atlas, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise SystemExit(f"{out}: could not encode the atlas")
    out.write_bytes(data.tobytes())
    return n


def unpack(atlas_path: Path, corpus: Path, n: int, side: int = 32) -> None:
    """Cut the atlas into ``n`` JPEG files (``t00000.jpg``, ...) in ``corpus``."""
    atlas = cv2.imread(str(atlas_path))
    if atlas is None:
        raise SystemExit(f"{atlas_path}: not a readable image")
    corpus.mkdir(parents=True, exist_ok=True)
    columns = atlas.shape[1] // side
    for i in range(n):
        r, c = divmod(i, columns)
        tile = atlas[r * side:(r + 1) * side, c * side:(c + 1) * side]
        cv2.imwrite(str(corpus / f"t{i:05d}.jpg"), tile, [cv2.IMWRITE_JPEG_QUALITY, 95])


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "pack":
        print(pack(Path(argv[1]), Path(argv[2])))
        return 0
    if len(argv) == 4 and argv[0] == "unpack":
        unpack(Path(argv[1]), Path(argv[2]), int(argv[3]))
        return 0
    print(__doc__.strip().splitlines()[-2:], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
