#!/usr/bin/env python3
"""Benchmark ``mosaic photo``: a 12,800x9,600 poster (200x150 cells of 64x64 pixels).

Runs the command as a subprocess, the way users run it, and prints the wall time (and
the steps the command reports), the peak RSS of its process tree (sampled from /proc),
and the output's size. The source defaults to scikit-image's astronaut photograph
cropped to 4:3 (a real photo from a registry package); any --image works.

    python scripts/bench_photo.py --index .cache/bench/index-celeba-like-50000
    python scripts/bench_photo.py --index DIR --image photo.jpg --cells 200 --tile-px 64 --dzi
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from benchutil import mib, run_sampled


def default_image(path: Path) -> Path:
    """scikit-image's astronaut (512x512), its top 512x384 (4:3), as PNG at ``path``."""
    from skimage import data

    cv2.imwrite(str(path), np.ascontiguousarray(data.astronaut()[:384, :, ::-1]))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="tile index directory")
    ap.add_argument("--image", type=Path, help="source photo (default: the astronaut, 4:3)")
    ap.add_argument("--cells", type=int, default=200, help="cells across (default 200)")
    ap.add_argument("--tile-px", type=int, default=64, help="pixels per cell (default 64)")
    ap.add_argument("--out", type=Path, help="output (default: a temporary .jpg)")
    ap.add_argument("--dzi", action="store_true", help="also time the Deep Zoom pyramid")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-photo-") as tmp:
        image = args.image or default_image(Path(tmp) / "astronaut-4x3.png")
        out = args.out or Path(tmp) / "poster.jpg"
        cmd = [sys.executable, "-m", "pipeline", "photo", str(image), "--index",
               str(args.index), "--out", str(out), "--cells", str(args.cells), "--tile-px",
               str(args.tile_px), *(["--dzi"] if args.dzi else [])]
        elapsed, peak, err, code = run_sampled(cmd)
        if code != 0:
            sys.exit(f"mosaic photo failed ({code}): {err.strip()[-500:]}")
        img = cv2.imread(str(out), cv2.IMREAD_REDUCED_COLOR_8)
        summary = [line for line in err.splitlines() if line.startswith("mosaic of")]
        print(f"command: {' '.join(cmd[1:])}")
        print(summary[-1] if summary else err.strip()[-300:])
        print(f"poster: {out.stat().st_size / 2**20:,.1f} MiB {out.suffix[1:].upper()}, "
              f"{img.shape[1] * 8}x{img.shape[0] * 8} px (approx., from a 1/8 decode)")
        print(f"time: {elapsed:.1f} s end to end; peak RSS of the process tree: {mib(peak)}")


if __name__ == "__main__":
    main()
