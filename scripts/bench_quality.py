#!/usr/bin/env python3
"""What each matching option buys, and what each blend shows: quality on several clips.

1. **Variants** (``--variants``): each clip rendered as a pure mosaic (``render.alpha``
   0) once per variant, ``name:key=value,key=value`` (``default`` is the defaults), and
   every score of the render's own report printed side by side: photo visibility,
   fidelity (cell ΔE, viewing-scale SSIM), stability (churn, flicker), variety, with
   the render's fps (provisional on a shared machine).
2. **Blends** (``--blends 0,0.1,...``): the default render at each blend weight (the
   plan is made once and reused: only the paint differs), with the photo visibility of
   the output as written (the render's report) and the fidelity of the output as written
   (``mosaic score`` of the output against the source: what a viewer sees from afar).
3. ``--crops DIR``: full-resolution PNG crops of one frame (``--crop-frame``) of each
   clip, source and every variant side by side, to look at.

    python scripts/bench_quality.py .cache/media/megamind-640x480.mp4 \\
        .cache/media/bikes3x-640x480.mp4 --index .cache/media/photo-index-40k --frames 60 \\
        --variants default orientations:render.orientations=none \\
        --blends 0,0.1,0.2,0.3,0.5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import load_config
from pipeline.index import load_index
from pipeline.stages.render import run_render
from pipeline.stages.score import score_videos
from pipeline.video import iter_frames, probe

COLUMNS = [("visibility_median", "vis med", "{:.2f}"), ("visibility_p10", "vis p10", "{:.2f}"),
           ("visibility_below_half", "vis<.5", "{:.3f}"),
           ("visible_share", "visible", "{:.2f}"), ("textured_share", "textured", "{:.2f}"),
           ("ssim_view", "SSIM", "{:.3f}"), ("delta_e_cell", "cell dE", "{:.2f}"),
           ("churn", "churn", "{:.4f}"), ("flicker", "flicker", "{:.3f}"),
           ("repeats_r2", "rep r2", "{:.3f}"), ("repeats_r2_group", "grp r2", "{:.3f}"),
           ("distinct_share", "distinct", "{:.3f}")]


def render(video: str, index: str, work: Path, name: str, sets: list[str], args
           ) -> tuple[Path, object]:
    """One render of ``args.frames`` frames with ``sets``; (output, report)."""
    config = load_config(None, sets, {"render.scale": args.scale,
                                      "render.preset": args.preset}).render
    out = work / f"{name}.mp4"
    report = run_render(video, index, out, config, work / "cache", max_frames=args.frames,
                        progress=False)
    return out, report


def variants(video: str, work: Path, args) -> dict[str, Path]:
    """Every variant as a pure mosaic: one table; the outputs by name."""
    outs = {}
    print(f"{'variant':34s}" + "".join(f"{c[1]:>10s}" for c in COLUMNS) + f"{'fps':>7s}"
          + f"{'active':>8s}")
    for spec in args.variants:
        name, _, extra = spec.partition(":")
        sets = ["render.alpha=0"] + [kv if kv.startswith("render.") else f"render.{kv}"
                                     for kv in extra.split(",") if kv]
        out, r = render(video, args.index, work, name, sets, args)
        sc = r.scores
        cells = "".join(f"{fmt.format(sc[key]) if key in sc else '-':>10s}"
                        for key, _, fmt in COLUMNS)
        print(f"{spec[:34]:34s}{cells}{r.rendered / r.render_seconds:7.2f}"
              f"{r.active_share:8.3f}", flush=True)
        outs[name] = out
    return outs


def blends(video: str, work: Path, args) -> None:
    """The default at each blend weight: visibility and fidelity of the output as written."""
    tile_hw = tuple(load_index(args.index).tiles.shape[1:3])
    print(f"{'blend':>6s}{'out vis med':>12s}{'out vis p10':>12s}{'out vis<.5':>11s}"
          f"{'out SSIM':>10s}{'out cell dE':>12s}")
    for alpha in (float(a) for a in args.blends.split(",")):
        out, r = render(video, args.index, work, f"blend-{alpha:g}", [f"render.alpha={alpha}"],
                        args)
        seen = score_videos(video, str(out), args.scale, tile_hw, max_frames=args.frames)
        sc = r.scores
        print(f"{alpha:6.2f}{sc['visibility_output_median']:12.2f}"
              f"{sc['visibility_output_p10']:12.2f}{sc['visibility_output_below_half']:11.3f}"
              f"{seen['ssim_view']:10.3f}{seen['delta_e_cell']:12.2f}", flush=True)


def crops(video: str, outs: dict[str, Path], dest: Path, args) -> None:
    """Full-resolution crops of frame ``--crop-frame``: the source, then each variant."""
    x, y, w, h = (int(v) for v in args.crop.split(","))
    dest.mkdir(parents=True, exist_ok=True)
    src = next(f for i, f in enumerate(iter_frames(video)) if i == args.crop_frame)
    gw, gh = next(iter_frames(next(iter(outs.values())))).shape[1::-1]
    up = cv2.resize(src, (gw, gh), interpolation=cv2.INTER_LINEAR)
    panels = [("source", up[y:y + h, x:x + w])]
    for name, out in outs.items():
        frame = next(f for i, f in enumerate(iter_frames(out)) if i == args.crop_frame)
        panels.append((name, frame[y:y + h, x:x + w]))
    stem = Path(video).stem
    for name, panel in panels:
        cv2.imwrite(str(dest / f"{stem}-{name}.png"), panel)
    cv2.imwrite(str(dest / f"{stem}-side_by_side.png"),
                np.concatenate([p for _, p in panels], axis=1))
    print(f"crops of frame {args.crop_frame} written to {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", metavar="VIDEO")
    ap.add_argument("--index", required=True)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--variants", nargs="*", default=["default"],
                    help="name:key=value,key=value (keys of [render])")
    ap.add_argument("--blends", help="comma-separated blend weights for the default")
    ap.add_argument("--crops", type=Path, help="write full-resolution crops here")
    ap.add_argument("--crop-frame", type=int, default=30)
    ap.add_argument("--crop", default="640,480,640,480", help="x,y,w,h in output pixels")
    args = ap.parse_args()
    for video in args.videos:
        info = probe(video)
        print(f"\nmachine: {os.cpu_count()} cores; {video} {info.width}x{info.height}, "
              f"{args.frames} frames, scale {args.scale}, preset {args.preset}, "
              f"index {args.index}")
        with tempfile.TemporaryDirectory(dir=".cache") as tmp:
            outs = variants(video, Path(tmp), args) if args.variants else {}
            if args.blends:
                blends(video, Path(tmp), args)
            if args.crops and outs:
                crops(video, outs, args.crops, args)


if __name__ == "__main__":
    main()
