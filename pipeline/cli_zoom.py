"""The ``zoom`` subcommand of ``mosaic`` (registered by :mod:`pipeline.cli`): its parser
and handler only. Errors are :class:`~pipeline.errors.MosaicError` and become one line.
"""

from __future__ import annotations

import argparse
import logging
import time
from fractions import Fraction
from pathlib import Path

from pipeline.cli_args import POSITIVE, SECONDS, default_cache, number
from pipeline.errors import ConfigError

log = logging.getLogger("pipeline")

_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
            "slower", "veryslow")


def add_zoom_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic zoom`` to the subcommands ``sub``."""
    from pipeline.config import PhotoOptions
    from pipeline.zoom import FITS, MAX_SIDE, ZoomOptions

    d, z = PhotoOptions(), ZoomOptions()
    p = sub.add_parser("zoom", help="a video zooming from the mosaic of an image into one "
                       "of its photos (or out of it)",
                       description="Make the mosaic of IMAGE with the still matcher and its "
                       "rules (as `mosaic photo`), then a video that starts on the whole "
                       "mosaic and zooms into one cell near the centre until that cell's "
                       "source photo, at its own resolution, fills the frame. The zoom is "
                       "geometric (constant perceived speed), eased in and out, and about "
                       "the landing point, which stays put on screen; each frame draws only "
                       "the visible cells, from the tile bank while they are small and "
                       "from their source photos (cross-faded in) as they grow, while the "
                       "recolouring fades out. Needs an index that records its source "
                       "photos (`mosaic index` does).")
    p.add_argument("image", metavar="IMAGE", help="the picture to make the mosaic of")
    p.add_argument("--index", metavar="DIR", help="tile index (default: $MOSAIC_CACHE/index)")
    p.add_argument("--out", metavar="FILE", help="output .mp4, .mov or .mkv (default: "
                   "$MOSAIC_CACHE/renders/<name>-<digest>-mosaic-zoom.mp4)")
    p.add_argument("--reverse", action="store_true", help="zoom out instead: from the photo "
                   "to the whole mosaic")
    p.add_argument("--target", metavar="PHOTO", help="land on this photo: a file of the "
                   "indexed corpus, or any other image (it is added as one more tile); it "
                   "goes in a cell near the centre where it fits well, the rest of the "
                   "mosaic is planned around it. With --chain, the last zoom lands on it")
    p.add_argument("--chain", type=number(int, low=0, high=20), default=z.chain, metavar="N",
                   help="then make the landed photo the next mosaic and zoom into it, N "
                   "times: an endless zoom (default 0)")
    p.add_argument("--size", default=f"{z.size[0]}x{z.size[1]}", metavar="WxH",
                   help=f"frame size, even sides up to {MAX_SIDE} (default "
                   f"{z.size[0]}x{z.size[1]})")
    p.add_argument("--duration", type=POSITIVE, default=z.duration, metavar="SECONDS",
                   help=f"length of the whole video, holds included (default {z.duration:g})")
    p.add_argument("--fps", default=str(z.fps), metavar="RATE", help="frames per second, "
                   f"e.g. 25 or 30000/1001 (default {z.fps})")
    p.add_argument("--hold", type=SECONDS, metavar="SECONDS", help="seconds held still "
                   f"at each end (default {z.hold:g}, or a tenth of --duration if less)")
    p.add_argument("--audio", metavar="FILE", help="sound track (any audio or video file): "
                   "muxed in, cut to the video's length")
    p.add_argument("--fit", choices=FITS, default=z.fit, help="cover: crop IMAGE to the "
                   "frame's aspect, so the mosaic fills the first frame (default); contain: "
                   "the whole image, with bars")
    _add_look_options(p, d, z)


def _add_look_options(p: argparse.ArgumentParser, d, z) -> None:
    """The still matcher's options (``d``: their defaults) and the encoder's (``z``)."""
    p.add_argument("--cells", type=number(int, low=2), default=d.cols, metavar="N",
                   help=f"cells across; rows follow the aspect (default {d.cols})")
    p.add_argument("--radius", type=number(int, low=0), default=d.radius, metavar="R",
                   help=f"no tile (nor a near-duplicate) twice within R cells (default "
                   f"{d.radius}; 0 = off)")
    p.add_argument("--max-uses", type=number(int, low=0), default=d.max_uses, metavar="N",
                   help="use each tile at most N times in a mosaic (default 0 = no cap)")
    p.add_argument("--recolour", type=number(float, low=0, high=1), default=d.recolour,
                   metavar="S", help="move each tile's mean colour this share of the way "
                   f"to its cell's, 0..1, while the cells are small (default {d.recolour})")
    p.add_argument("--tone", type=number(float, low=0, high=1), default=d.tone, metavar="T",
                   help=f"contrast matching strength, 0..1 (default {d.tone})")
    p.add_argument("--crf", type=number(int, low=0, high=51), default=z.crf, metavar="Q",
                   help=f"x264 quality, lower is better (default {z.crf})")
    p.add_argument("--preset", choices=_PRESETS, default=z.preset, metavar="NAME",
                   help=f"x264 speed preset (default {z.preset})")
    p.add_argument("--force", action="store_true", help="replace an existing OUT even when "
                   "it is not a video (never an input, never a folder)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info lines")


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (width, height); :class:`ConfigError` in one line otherwise."""
    parts = text.lower().strip().split("x")
    try:
        w, h = (int(v) for v in parts)
    except ValueError:
        raise ConfigError(f"--size: expected WIDTHxHEIGHT such as 1920x1080, got {text!r}") \
            from None
    return w, h


def parse_rate(text: str) -> Fraction:
    """``"30"``, ``"29.97"`` or ``"30000/1001"`` -> an exact rate; one line otherwise."""
    try:
        rate = Fraction(text.strip()).limit_denominator(1001)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--fps: expected a rate such as 30 or 30000/1001, got {text!r}") \
            from None
    if not 0 < rate <= 240:
        raise ConfigError(f"--fps: must be more than 0 and at most 240, got {text!r}")
    return rate


def cmd_zoom(args: argparse.Namespace) -> int:
    """Run ``mosaic zoom``; the exit code."""
    from pipeline.config import PhotoOptions
    from pipeline.stages.zoom import run_zoom
    from pipeline.zoom import ZoomOptions

    hold = args.hold if args.hold is not None else min(ZoomOptions.hold, args.duration / 10)
    opts = ZoomOptions(size=parse_size(args.size), duration=args.duration,
                       fps=parse_rate(args.fps), hold=hold, reverse=args.reverse,
                       chain=args.chain, fit=args.fit, crf=args.crf, preset=args.preset)
    photo = PhotoOptions(cols=args.cells, radius=args.radius, max_uses=args.max_uses,
                         recolour=args.recolour, tone=args.tone)
    index_dir = Path(args.index) if args.index else default_cache() / "index"
    start = time.perf_counter()
    r = run_zoom(args.image, index_dir, args.out, opts, photo, default_cache(),
                 target=args.target, audio_path=args.audio, progress=not args.quiet,
                 force=args.force)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items())
    landed = r.mosaics[-1][2]
    log.info("zoom of %d frames at %dx%d%s, landing on %s -> %s in %.1f s (%s)", r.frames,
             *r.size, " with audio" if r.audio else "", landed, r.out,
             time.perf_counter() - start, steps)
    return 0

