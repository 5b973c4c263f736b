#!/usr/bin/env python3
"""What x264's speed presets cost and buy on mosaic frames: CPU a frame, size, PSNR, SSIM.

Re-encodes the first ``--frames`` frames of a rendered mosaic (``mosaic render``'s
output, e.g. 5120x2880 frames of a 720p x4 job) with the render's own encoder options
(:func:`pipeline.encode.codec_args`: crf, preset, x264's shortened lookahead) at each
``--presets`` preset (and crf; the preset's own options, or x264 options given, or
``+mosaic``: the render's ``encoder_tuning``), one x264 thread (the CPU seconds are the
same on more threads; the painters run several encoders side by side). For each it
prints the encoder's CPU seconds a frame (the whole command's user + system time less
that of decoding the same frames alone), the file's size, and its PSNR and SSIM against
the frames it was given (ffmpeg's psnr and ssim filters, averages over the frames).

    python scripts/bench_presets.py /tmp/proj720/m.mp4 --frames 40
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import load_config
from pipeline.encode import codec_args, x264_lookahead
from pipeline.video import ffmpeg_exe, probe


def cpu_of(cmd: list[str]) -> tuple[float, str]:
    """Run ``cmd``; its children's user + system CPU seconds and its stderr."""
    before = os.times()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system)
    return cpu, done.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", help="a rendered mosaic (the frames to encode again)")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--presets", nargs="+", metavar="PRESET[:CRF][+X264PARAMS]",
                    default=["slow", "medium", "fast", "faster", "veryfast"],
                    help="x264 presets, each with an optional crf (default: the render's) "
                    "and x264 options over the preset's, as -x264-params takes them "
                    "(e.g. slow:21+me=hex:ref=2), or +mosaic for the render's "
                    "encoder_tuning; plain: the preset's own options")
    args = ap.parse_args()
    ff, info = ffmpeg_exe(), probe(args.video)
    src = ["-threads", "1", "-i", args.video, "-frames:v", str(args.frames)]
    decode, _ = cpu_of([ff, "-v", "error", *src, "-f", "null", "-"])
    print(f"{args.video}: {info.width}x{info.height}, {args.frames} frames; decoding alone "
          f"{decode / args.frames:.3f} CPU-s a frame")
    with tempfile.TemporaryDirectory() as tmp:
        for token in args.presets:
            head, _, params = token.partition("+")
            preset, _, crf = head.partition(":")
            sets = [f"render.preset={preset}"] + ([f"render.crf={crf}"] if crf else [])
            if params == "mosaic":  # the render's tuning for mosaic frames
                sets.append("render.encoder_tuning=mosaic")
            else:
                sets.append("render.encoder_tuning=preset")
                if params:
                    sets.append(f"render.encoder_options=-x264-params {params}")
            cfg = load_config(None, sets).render
            codec = codec_args(cfg, 1, x264_lookahead(info.width * info.height, preset))
            out = Path(tmp) / "encoded.mp4"
            cpu, _ = cpu_of([ff, "-v", "error", "-y", *src, *codec, "-an", str(out)])
            _, log = cpu_of([ff, "-i", str(out), *src, "-lavfi",
                             "[0:v][1:v]psnr;[0:v][1:v]ssim", "-f", "null", "-"])
            psnr = re.search(r"PSNR .* average:([\d.]+|inf)", log)
            ssim = re.search(r"SSIM .* All:([\d.]+)", log)
            per_frame = (cpu - decode) / args.frames
            label = f"{preset:>9} crf {cfg.crf}{' ' + params if params else ''}"
            print(f"{label}: encoder {per_frame:.3f} CPU-s a frame, "
                  f"{out.stat().st_size / 1e6:.2f} MB, PSNR {psnr.group(1) if psnr else '?'}"
                  f" dB, SSIM {ssim.group(1) if ssim else '?'}  ({' '.join(codec)})",
                  flush=True)


if __name__ == "__main__":
    main()
