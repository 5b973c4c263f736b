#!/usr/bin/env python3
"""Benchmark the render stage against the encoder alone, in one run.

1. Renders the first N frames of VIDEO with the given index and settings (in a fresh
   cache, so nothing is reused) and measures render fps and the peak RSS of the whole
   process tree (this process, its threads and the ffmpeg decoder/encoder processes).
2. Measures the encode-only floor: the same N rendered frames, decoded and converted to
   I420 into a raw file beforehand, encoded by the same ffmpeg command (same size,
   rate, encoder, preset, crf) with nothing else to do.

It prints both fps figures and their ratio.

    python scripts/bench_render.py VIDEO --index DIR --scale 4 --frames 200 [--preset ultrafast]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchutil import TreeRss, mib

from pipeline.config import load_config
from pipeline.encode import bgr_to_i420, encode_command, encoder_args
from pipeline.stages.render import run_render
from pipeline.video import iter_frames, probe


def encode_floor(rendered: Path, work: Path, config) -> tuple[float, int]:
    """Encode-only fps of the rendered frames, and the frame count."""
    info = probe(rendered)
    raw = work / "frames.yuv"  # what the renderer pipes: I420 from the same conversion
    with open(raw, "wb") as f:
        count = 0
        for frame in iter_frames(rendered):
            f.write(bgr_to_i420(frame).tobytes())
            count += 1
    cmd = encode_command(work / "floor.mp4", info.width, info.height, info.rate,
                         encoder_args(config.encoder, config.crf, config.preset,
                                      config.encoder_options), str(raw))
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    elapsed = time.perf_counter() - t
    raw.unlink()
    return count / elapsed, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", help="source video file")
    ap.add_argument("--index", required=True, help="tile index directory")
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--preset", help="encoder preset (default: the config's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override, e.g. render.alpha=0")
    ap.add_argument("--no-floor", action="store_true", help="skip the encode-only run")
    args = ap.parse_args()

    flags = {"render.scale": args.scale, "render.preset": args.preset}
    config = load_config(None, args.overrides, flags).render
    info = probe(args.video)
    print(f"machine: {os.cpu_count()} cores; source {info.width}x{info.height} "
          f"@ {float(info.rate):.3f} fps; encoder {config.encoder} preset {config.preset} "
          f"crf {config.crf}; scale {config.scale}; matching {config.matching}")
    with tempfile.TemporaryDirectory(dir=".cache") as tmp:
        work = Path(tmp)
        out = work / "render.mp4"
        sampler = TreeRss(os.getpid())
        report = run_render(args.video, args.index, out, config, work / "cache",
                            max_frames=args.frames, progress=False)
        peak = sampler.stop()
        fps = report.rendered / report.render_seconds
        w, h = report.out_size
        print(f"render: {report.rendered} frames at {w}x{h} in {report.render_seconds:.1f} s "
              f"= {fps:.2f} fps (whole command {report.seconds:.1f} s); "
              f"{100 * report.active_share:.0f}% cells active")
        print(f"peak RSS: pipeline process {mib(sampler.peak_root)}; ffmpeg decoder+encoder "
              f"{mib(sampler.peak_children)}; whole tree {mib(peak)}")
        if not args.no_floor:
            floor, count = encode_floor(out, work, config)
            print(f"encode-only floor: {count} frames = {floor:.2f} fps")
            print(f"render / floor = {fps / floor:.2f}")


if __name__ == "__main__":
    main()
