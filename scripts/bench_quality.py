#!/usr/bin/env python3
"""Compare matching modes on the same clip, index and frames: quality and speed.

Renders VIDEO once per mode (``cluster``, the reference's, first) and prints the
scores each render writes for its pure mosaic (before the blend: fidelity, stability,
variety; see ``pipeline/metrics.py``) and the render fps, side by side, with each
mode's cell-mean ΔE and fps as ratios of cluster mode's. With --crops it also writes
side-by-side PNG crops of one frame per mode.

    python scripts/bench_quality.py VIDEO --index DIR --frames 150 [--preset ultrafast]
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
from pipeline.stages.render import iter_frames, run_render
from pipeline.video import probe

MODES = {
    "cluster": [],
    "refined": [],
    "nearest": [],
}
COLUMNS = [("delta_e_cell", "cell dE", "{:.2f}"), ("delta_e_subgrid", "sub dE", "{:.2f}"),
           ("ssim_view", "SSIM", "{:.3f}"), ("churn", "churn", "{:.4f}"),
           ("flicker", "flicker", "{:.3f}"), ("distinct_tiles", "tiles/frame", "{:.0f}"),
           ("identical_neighbours", "same nbr", "{:.4f}"), ("repeats_r2_id", "rep r2", "{:.3f}"),
           ("repeats_r2_group", "grp r2", "{:.3f}"), ("distinct_share", "distinct", "{:.3f}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--index", required=True)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--modes", nargs="*", default=list(MODES),
                    help="modes, or mode:key=value,key=value variants")
    ap.add_argument("--crops", type=Path, help="write crops of frame --crop-frame here")
    ap.add_argument("--crop-frame", type=int, default=60)
    ap.add_argument("--crop", default="0,0,640,400", help="x,y,w,h in output pixels")
    args = ap.parse_args()

    info = probe(args.video)
    print(f"machine: {os.cpu_count()} cores; {args.video} {info.width}x{info.height}, "
          f"{args.frames} frames, scale {args.scale}, preset {args.preset}, index {args.index}")
    rows, outs = [], {}
    with tempfile.TemporaryDirectory(dir=".cache") as tmp:
        for spec in args.modes:
            mode, _, extra = spec.partition(":")
            sets = [f"render.matching={mode}", "render.alpha=0"] + [
                f"render.{kv}" for kv in extra.split(",") if kv]
            config = load_config(None, sets, {"render.scale": args.scale,
                                              "render.preset": args.preset}).render
            out = Path(tmp) / f"{spec.replace(':', '_').replace(',', '_')}.mp4"
            r = run_render(args.video, args.index, out, config, Path(tmp) / "cache",
                           max_frames=args.frames, progress=False)
            rows.append((spec, r.scores, r.rendered / r.render_seconds))
            outs[spec] = out
        base_de, base_fps = rows[0][1]["delta_e_cell"], rows[0][2]
        header = f"{'mode':28s}" + "".join(f"{c[1]:>12s}" for c in COLUMNS)
        print(header + f"{'fps':>8s}{'dE/cluster':>12s}{'fps/cluster':>12s}")
        for spec, sc, fps in rows:
            cells = "".join(f"{fmt.format(sc[key]):>12s}" for key, _, fmt in COLUMNS)
            print(f"{spec:28s}{cells}{fps:8.2f}{sc['delta_e_cell'] / base_de:12.2f}"
                  f"{fps / base_fps:12.2f}")
        if args.crops:
            x, y, w, h = (int(v) for v in args.crop.split(","))
            args.crops.mkdir(parents=True, exist_ok=True)
            src = next(f for i, f in enumerate(iter_frames(args.video)) if i == args.crop_frame)
            gw, gh = next(iter_frames(next(iter(outs.values())))).shape[1::-1]
            up = cv2.resize(src, (gw, gh), interpolation=cv2.INTER_LINEAR)
            panels = [("source", up[y:y + h, x:x + w])]
            for spec, out in outs.items():
                frame = next(f for i, f in enumerate(iter_frames(out)) if i == args.crop_frame)
                panels.append((spec, frame[y:y + h, x:x + w]))
            for name, panel in panels:
                cv2.imwrite(str(args.crops / f"{name.split(':')[0]}.png"), panel)
            strip = np.concatenate([p for _, p in panels], axis=1)
            cv2.imwrite(str(args.crops / "side_by_side.png"), strip)
            print(f"crops of frame {args.crop_frame} written to {args.crops}")


if __name__ == "__main__":
    main()
