"""The ``render``, ``score`` and ``sample-clip`` subcommands of ``mosaic`` (registered by
:mod:`pipeline.cli`): making mosaic videos and measuring them. Their parsers and
handlers only; errors are :class:`~pipeline.errors.MosaicError` and become one line.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.cli_args import (
    COUNT,
    FLOAT,
    POSITIVE,
    SECONDS,
    add_config_args,
    add_force_arg,
    add_scheduler_arg,
    default_cache,
)
from pipeline.config import load_config
from pipeline.errors import MosaicError

log = logging.getLogger("pipeline")


def add_render_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic render`` to the subcommands ``sub``."""
    p = sub.add_parser("render", help="turn a video into a photomosaic video with its sound",
                       description="Render VIDEO (a file, or a URL fetched with yt-dlp) as a "
                       "mosaic of the index's tiles, in cached segments (a rerun resumes), "
                       "and mux the source's audio back.")
    p.add_argument("video", metavar="VIDEO", help="video file or URL")
    p.add_argument("--index", metavar="DIR", help="tile index (default: "
                   "$MOSAIC_CACHE/index, what `make index` builds)")
    p.add_argument("--out", metavar="FILE", help="output .mp4, .mov, .mkv or .webm "
                   "(default: $MOSAIC_CACHE/renders/<name>-<digest>-mosaic.mp4)")
    p.add_argument("--start", type=SECONDS, default=0.0, metavar="SECONDS",
                   help="start this far into the video (preview a part)")
    p.add_argument("--duration", type=POSITIVE, metavar="SECONDS", help="render this long")
    p.add_argument("--frames", type=COUNT, metavar="N", help="render at most N frames")
    p.add_argument("--scale", type=FLOAT, help="upscaling before cutting cells "
                   "(render.scale)")
    p.add_argument("--alpha", type=FLOAT, help="weight of the source blended over the "
                   "mosaic: 0 = pure mosaic, 0.5 = the reference's 50/50 look (render.alpha, "
                   "default 0.2)")
    p.add_argument("--preset", help="encoder speed preset (render.preset; default slow, "
                   "with x264 options for mosaic frames: render.encoder_tuning)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes at once, "
                   "each planning or painting a segment (render.workers; 0 = fit the "
                   "cores and the memory; more than the cores, the memory or the "
                   "segments allow are capped)")
    add_force_arg(p, "OUT (or OUT.scores.json)")
    add_scheduler_arg(p, "paint segments")
    add_config_args(p)


def cmd_render(args: argparse.Namespace) -> int:
    """Run ``mosaic render``; the exit code."""
    if not args.scheduler:  # the local workers' server loads their libraries meanwhile
        from pipeline.server import start_server
        from pipeline.stages import WORKER_MODULE

        start_server(WORKER_MODULE)
    from pipeline.stages.render import run_render

    config = load_config(args.config, args.overrides, {
        "render.scale": args.scale, "render.alpha": args.alpha, "render.preset": args.preset,
        "render.workers": args.workers})
    index_dir = Path(args.index) if args.index else default_cache() / "index"
    r = run_render(args.video, index_dir, args.out, config.render, default_cache(),
                   args.start, args.duration, args.frames, progress=not args.quiet,
                   scheduler=args.scheduler, force=args.force)
    size = f"{r.size / 2**20:.1f} MiB"
    if r.up_to_date:
        log.info("%s is up to date (%d frames, %s)", r.out, r.frames, size)
        return 0
    fps = r.rendered / r.render_seconds if r.render_seconds else 0.0
    cached = f", {r.segments_cached} segment(s) cached" if r.segments_cached else ""
    cached += ", plan reused" if r.plan_reused else ""
    log.info("rendered %d frames (%d this run%s) at %.1f fps, %dx%d, %.0f%% cells active "
             "-> %s (%s%s)", r.frames, r.rendered, cached, fps, *r.out_size,
             100 * r.active_share, r.out, size, "" if r.audio else ", no audio")
    if r.scores:
        sc = r.scores
        log.info("scores (pure mosaic): cell dE %.2f, sub-grid dE %.2f, SSIM %.3f, churn %.3f, "
                 "flicker %.2f, %.0f distinct tiles/frame, %.1f%% identical neighbours",
                 sc["delta_e_cell"], sc["delta_e_subgrid"], sc["ssim_view"], sc["churn"],
                 sc["flicker"], sc["distinct_tiles"], 100 * sc["identical_neighbours"])
        log.info("variety (textured cells, %.0f%% of all): %.1f%% repeat within 2 cells "
                 "(by id %.1f%%, by near-duplicate group %.1f%%), distinct share %.2f",
                 100 * sc["textured_share"], 100 * sc["repeats_r2"],
                 100 * sc.get("repeats_r2_id", 0), 100 * sc.get("repeats_r2_group", 0),
                 sc["distinct_share"])
        if "visibility_median" in sc:
            log.info("photo visibility (contrast kept, median / 10th percentile / share "
                     "below half): pure mosaic %.2f / %.2f / %.1f%%, output as written "
                     "%.2f / %.2f / %.1f%%; %.0f%% of the cells show a photo with something "
                     "to see", sc["visibility_median"], sc["visibility_p10"],
                     100 * sc["visibility_below_half"], sc["visibility_output_median"],
                     sc["visibility_output_p10"], 100 * sc["visibility_output_below_half"],
                     100 * sc["visible_share"])
    return 0


def add_score_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic score`` to the subcommands ``sub``."""
    p = sub.add_parser("score", help="score a pure-mosaic video against its source",
                       description="Fidelity (cell and sub-grid CIELAB dE, viewing-scale "
                       "SSIM), stability (churn, flicker in static cells) and variety of "
                       "MOSAIC, a pure mosaic (no blend) of SOURCE made by any tool; with "
                       "--index, also photo visibility (each cell's tile identified from "
                       "its pixels: its contrast as a share of its own).")
    p.add_argument("source", metavar="SOURCE", help="the source video")
    p.add_argument("mosaic", metavar="MOSAIC", help="the pure-mosaic video")
    p.add_argument("--scale", type=POSITIVE, default=4.0, help="upscaling used (default 4)")
    p.add_argument("--tile", default="32x32", metavar="WxH", help="tile size (default 32x32)")
    p.add_argument("--frames", type=COUNT, metavar="N", help="score at most N frames")
    p.add_argument("--index", metavar="DIR", help="the tile index whose photos MOSAIC shows "
                   "(its tiles are identified in each cell for the photo visibility score)")
    p.add_argument("--out", metavar="JSON", help="also write the scores here (.json)")
    add_force_arg(p, "OUT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def cmd_score(args: argparse.Namespace) -> int:
    """Run ``mosaic score``; the exit code."""

    from pipeline.cache import write_json
    from pipeline.sizes import parse_tile_size
    from pipeline.stages.score import score_videos

    if args.scale <= 0 or (args.frames is not None and args.frames < 1):
        raise MosaicError("--scale must be positive and --frames at least 1")
    args.source, args.mosaic = _check_score_args(args)
    tile_hw = parse_tile_size(args.tile, "--tile")
    bank = None
    if args.index:
        from pipeline.index import load_index

        bank = load_index(args.index).tiles
        if bank.shape[1:3] != tile_hw:
            raise MosaicError(f"{args.index}: its tiles are {bank.shape[2]}x{bank.shape[1]}, "
                              f"not the --tile {args.tile} of the mosaic")
    scores = score_videos(args.source, args.mosaic, args.scale, tile_hw, args.frames,
                          progress=not args.quiet, bank=bank)
    print(json.dumps(scores, indent=1))
    if args.out:
        write_json(args.out, {"source": args.source, "mosaic": args.mosaic, "scores": scores})
    return 0


def _check_score_args(args: argparse.Namespace) -> tuple[str, str]:
    """``mosaic score``'s checks before any work: ffmpeg, the inputs (``file://`` URLs
    are paths; regular files only), the frame size the scale gives, and --out (a .json
    that is no input, in no working folder of the tool); the two input paths."""
    from pipeline.grid import check_frame_size, check_source_size, make_grid
    from pipeline.output import check_output
    from pipeline.sizes import parse_tile_size
    from pipeline.video import check_regular, ffmpeg_exe, local_path, probe

    ffmpeg_exe()
    source, mosaic = local_path(args.source), local_path(args.mosaic)
    for path in (source, mosaic):
        check_regular(path, "video")
    if args.out:
        index_files = [p for p in Path(args.index).glob("*")] if args.index else []
        check_output(args.out, [source, mosaic, *index_files], kind="json", force=args.force,
                     cache_dir=default_cache())
        if Path(args.out).suffix.lower() != ".json":
            raise MosaicError(f"{args.out}: the scores are JSON; give a .json name")
    info = probe(source)
    check_source_size(info.width, info.height, source)
    check_frame_size(make_grid(info.height, info.width, parse_tile_size(args.tile, "--tile"),
                               args.scale))
    return source, mosaic


def add_sample_clip_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic sample-clip`` to the subcommands ``sub``."""
    p = sub.add_parser("sample-clip", help="generate the built-in sample clip (no download)")
    p.add_argument("--out", required=True, metavar="FILE", help="mp4 to write")
    p.add_argument("--seconds", type=POSITIVE, default=6.0, help="length (default 6)")
    p.add_argument("--no-audio", action="store_true", help="leave out the audio track")
    p.add_argument("-q", "--quiet", action="store_true", help="no info lines")


def cmd_sample_clip(args: argparse.Namespace) -> int:
    """Run ``mosaic sample-clip``; the exit code."""
    from pipeline.sample import make_sample_clip

    if args.seconds <= 0:
        raise MosaicError(f"--seconds must be positive, got {args.seconds}")
    from pipeline.output import check_output
    from pipeline.video import ffmpeg_exe

    check_output(args.out, create_parent=True, kind="video", cache_dir=default_cache())
    if Path(args.out).suffix.lower() != ".mp4":
        raise MosaicError(f"{args.out}: the sample clip is an mp4; give a .mp4 name")
    ffmpeg_exe()  # missing or broken: said before any work
    path = make_sample_clip(args.out, args.seconds, audio=not args.no_audio)
    log.info("sample clip: %s", path)
    return 0
