#!/usr/bin/env python3
"""Frames of a zoom for looking at: a strip for the README, and a scan for pops.

Plans and draws the zoom in memory with the same engine as ``mosaic zoom``
(:func:`pipeline.zoom.make_movie`; no encoding, so what is seen is the drawing, not the
codec). Saves the frames at the given percentages of the motion at full size (to
``--full``) and scaled to ``--width`` (``zoom-<percent>.png`` in ``--out``, for the
README; side by side with ``--strip``). Scans every pair of frames for pops: the mean
change from one frame to the next once the earlier frame is moved to the later one's
view (what the motion does not explain), each over the median of the 10 around it (at
least one grey level). A pop is a spike in that ratio.

    python scripts/zoom_strip.py IMAGE --index DIR --out docs/img --full .cache/zoom/frames
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import PhotoOptions
from pipeline.index import load_index
from pipeline.originals import source_paths
from pipeline.photo import read_image
from pipeline.zoom import ZoomOptions, make_movie
from pipeline.zoomplan import resolve_target


def residual(a: np.ndarray, b: np.ndarray, va, vb) -> float:
    """Mean |b - a moved to b's view|, grey levels (a 4-pixel border left out)."""
    k, (x0, y0) = vb.unit / va.unit, va.to_screen(vb.x, vb.y)
    m = np.array([[k, 0, x0 + 0.5 * k - 0.5], [0, k, y0 + 0.5 * k - 0.5]])
    moved = cv2.warpAffine(a, m, (a.shape[1], a.shape[0]),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return float(np.abs(b.astype(np.float32) - moved)[4:-4, 4:-4].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for the small frames")
    ap.add_argument("--full", type=Path, help="folder for the full-size frames")
    ap.add_argument("--strip", type=Path, help="also the small frames side by side (PNG)")
    ap.add_argument("--at", type=float, nargs="+", default=[0, 50, 90, 100],
                    help="percentages of the motion (default 0 50 90 100)")
    ap.add_argument("--width", type=int, default=400, help="width of each small frame")
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--target", type=Path)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    index = load_index(args.index)
    paths = source_paths(index)
    goal = resolve_target(args.target, index, paths) if args.target else None
    movie = make_movie(read_image(args.image), index, paths,
                       ZoomOptions(size=(w, h), duration=args.duration, hold=0),
                       PhotoOptions(cols=args.cells), goal)
    n = len(movie)
    picks = {round(p / 100 * (n - 1)): p for p in args.at}
    views = [s[-1].view if len(s) == 1 else s[0].view for s in movie.shots]
    changes, shots, prev = [], [], None
    for i, frame in enumerate(movie.frames()):
        if prev is not None:
            changes.append(residual(prev, frame, views[i - 1], views[i]))
        prev = frame
        if i in picks:
            shots.append(frame)
            if args.full:
                args.full.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(args.full / f"zoom-{picks[i]:03.0f}.png"), frame)
    small = [cv2.resize(f, (args.width, round(args.width * h / w)),
                        interpolation=cv2.INTER_AREA) for f in shots]
    args.out.mkdir(parents=True, exist_ok=True)
    for f, p in zip(small, sorted(picks.values()), strict=True):
        cv2.imwrite(str(args.out / f"zoom-{p:03.0f}.png"), f, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if args.strip:
        gap = np.full((small[0].shape[0], 6, 3), 255, np.uint8)
        strip = np.concatenate([x for f in small for x in (f, gap)][:-1], axis=1)
        cv2.imwrite(str(args.strip), strip, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    c = np.array(changes)
    around = np.array([np.median(np.r_[c[max(0, i - 5):i], c[i + 1:i + 6]]) for i in range(len(c))])
    moving = around > 0.05
    ratio = c / np.maximum(around, 1.0)  # changes under a grey level are not seen
    worst = int(np.argmax(ratio))
    landed = movie.levels[-1].landed
    print(f"{n} frames of {w}x{h}; landed on {paths[landed] if landed < len(paths) else goal}")
    print(f"frames {sorted(picks)} in {args.out}; unexplained "
          f"change per frame: median "
          f"{np.median(c[moving]):.2f}, max {c.max():.2f} grey levels; largest over its "
          f"neighbours: {ratio[worst]:.2f}x at frames {worst}->{worst + 1} (cells "
          f"{views[worst + 1].cell_px:.0f} px wide)")


if __name__ == "__main__":
    main()
