#!/usr/bin/env python3
"""Benchmark ``mosaic faces`` on a folder of real photographs.

The folder is made of OpenCV's sample photos (Debian's opencv-doc package, fetched by
``scripts/fetch_media.py`` into ``.cache/media/opencv``; fetched here if missing) and
scikit-image's bundled photographs, copied ``--repeat`` times under distinct names with
one byte changed (so the content duplicates are real work, not byte-identical skips:
they go through decoding and detection, then their faces are dropped as duplicates).
Runs the command as a subprocess and prints photos/s, the counts it reports and the peak
RSS of its process tree.

    python scripts/bench_faces.py [--repeat 4] [--jobs 0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from benchutil import mib, run_sampled

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "hubble_deep_field",
           "immunohistochemistry", "cat", "colorwheel", "page")


def opencv_photos(media: Path) -> list[Path]:
    data = media / "opencv"
    if not data.is_dir():
        sys.path.insert(0, str(ROOT / "scripts"))
        from fetch_media import fetch_opencv_data

        fetch_opencv_data(media)
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def make_folder(dest: Path, media: Path, repeat: int) -> int:
    from skimage import data

    sources: list[tuple[str, np.ndarray]] = []
    for p in opencv_photos(media):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None and min(img.shape[:2]) >= 64:
            sources.append((p.stem, img))
    for name in SKIMAGE:
        with_rgb = np.asarray(getattr(data, name)())
        img = with_rgb if with_rgb.ndim == 2 else np.ascontiguousarray(with_rgb[..., :3][..., ::-1])
        sources.append((f"skimage-{name}", img))
    dest.mkdir(parents=True)
    n = 0
    for r in range(repeat):
        for stem, img in sources:
            copy = img.copy()
            copy.flat[r] ^= 1  # a different file, the same picture
            cv2.imwrite(str(dest / f"{stem}-{r}.png"), copy)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=4, help="copies of each photo (default 4)")
    ap.add_argument("--jobs", type=int, default=0, help="mosaic faces --jobs (0 = all cores)")
    ap.add_argument("--media", type=Path, default=ROOT / ".cache" / "media")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
        src, out = Path(tmp) / "photos", Path(tmp) / "faces"
        n = make_folder(src, args.media, args.repeat)
        sizes = [cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_8).size * 64
                 for p in sorted(src.iterdir())[:2000]]
        cmd = [sys.executable, "-m", "pipeline", "faces", str(src), "--out", str(out),
               "--jobs", str(args.jobs)]
        elapsed, peak, err, code = run_sampled(cmd)
        if code != 0:
            sys.exit(f"mosaic faces failed ({code}): {err.strip()[-500:]}")
        print(f"folder: {n} real photos (median {np.median(sizes) / 1e6:.2f} Mpx)")
        print(f"command: mosaic faces PHOTOS --out FACES --jobs {args.jobs}")
        for line in err.splitlines():
            if line.startswith(f"{n} photos (") or "face tiles of" in line:
                print(line)
        print(f"time: {elapsed:.1f} s end to end = {n / elapsed:.1f} photos/s; "
              f"peak RSS of the process tree: {mib(peak)}")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
