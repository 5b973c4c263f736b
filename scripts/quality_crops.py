#!/usr/bin/env python3
"""The README's quality crops: one frame of a clip, a region at full resolution, shown 2x.

Renders the first ``--frames`` frames of VIDEO three ways (the pure mosaic, the default
output as written, the reference's look: cluster matching, its activity rule, blend
0.5), takes frame ``--frame`` of each, cuts the region ``--crop X,Y`` (``--size WxH``
output pixels) and writes a 2x2 grid, each panel scaled 2x with nearest-neighbour
(every tile pixel a 2x2 block: a 32-pixel cell shows at 64), labelled.

    python scripts/quality_crops.py .cache/media/megamind-640x480.mp4 \\
        --index .cache/media/photo-index-40k --crop 960,704 --out docs/img/quality-calm.png
    python scripts/quality_crops.py .cache/media/bikes3x-640x480.mp4 \\
        --index .cache/media/photo-index-40k --crop 480,576 --out docs/img/quality-busy.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import load_config
from pipeline.stages.render import run_render
from pipeline.video import iter_frames

LOOKS = [("pure mosaic (--alpha 0)", ["render.alpha=0"]),
         ("as written (default, blend 0.2)", []),
         ("the reference's look (cluster, blend 0.5)",
          ["render.alpha=0.5", "render.matching=cluster", "render.activity_threshold=16",
           "render.settle=0"])]


def frame_at(path: str | Path, k: int) -> np.ndarray:
    return next(f for i, f in enumerate(iter_frames(path)) if i == k)


def label(img: np.ndarray, text: str) -> np.ndarray:
    cv2.rectangle(img, (0, 0), (len(text) * 11 + 12, 26), (0, 0, 0), -1)
    cv2.putText(img, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                cv2.LINE_AA)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--index", required=True)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--frame", type=int, default=30)
    ap.add_argument("--crop", required=True, help="X,Y of the region, output pixels")
    ap.add_argument("--size", default="320x256", help="WxH of the region, output pixels")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    x, y = (int(v) for v in args.crop.split(","))
    w, h = (int(v) for v in args.size.split("x"))
    panels = []
    with tempfile.TemporaryDirectory(dir=".cache") as tmp:
        for name, sets in LOOKS:
            config = load_config(None, ["render.preset=ultrafast", *sets]).render
            out = Path(tmp) / f"{len(panels)}.mp4"
            run_render(args.video, args.index, out, config, Path(tmp) / "cache",
                       max_frames=args.frames, progress=False)
            panels.append((name, frame_at(out, args.frame)))
    height, width = panels[0][1].shape[:2]
    source = cv2.resize(frame_at(args.video, args.frame), (width, height),
                        interpolation=cv2.INTER_LINEAR)
    panels.insert(0, ("source (upscaled)", source))
    tiles = [label(cv2.resize(img[y:y + h, x:x + w], (2 * w, 2 * h),
                              interpolation=cv2.INTER_NEAREST), name) for name, img in panels]
    grid = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{args.out}: frame {args.frame} of {args.video}, region {w}x{h} at {x},{y}, 2x")


if __name__ == "__main__":
    main()
