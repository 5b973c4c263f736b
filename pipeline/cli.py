"""The ``mosaic`` command line: the only place that sets up logging and exit codes.

Exit codes: 0 success, 1 a user-facing error (one line on stderr), 2 bad usage,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP): both signals
are handled as Ctrl-C is, so the workers and ffmpeg processes stop and temporary files
go. Set ``MOSAIC_DEBUG=1`` to get the traceback of an error instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
import unicodedata
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline import __version__
from pipeline.cli_args import COUNT as _COUNT
from pipeline.cli_args import FLOAT as _FLOAT
from pipeline.cli_args import POSITIVE as _POSITIVE
from pipeline.cli_args import SECONDS as _SECONDS
from pipeline.cli_args import default_cache
from pipeline.cli_args import number as _number
from pipeline.cli_cache import add_clean_parser, add_verify_parser, cmd_clean, cmd_verify
from pipeline.cli_live import add_live_parser, cmd_live
from pipeline.cli_stills import add_faces_parser, add_photo_parser, cmd_faces, cmd_photo
from pipeline.cli_zoom import add_zoom_parser, cmd_zoom
from pipeline.config import load_config
from pipeline.errors import Interrupted, MosaicError
from pipeline.execute import SCHEDULER_ENV

log = logging.getLogger("pipeline")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def one_line(text: str) -> str:
    """``text`` with every control and line-breaking character escaped (a file name may
    hold a newline): an error message stays one line."""
    return "".join(c if c == "\t" or unicodedata.category(c) not in ("Cc", "Zl", "Zp")
                   else c.encode("unicode_escape").decode() for c in text)


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (``error: mosaic render: ...``)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, one_line(f"error: {self.prog}: {message} (see {self.prog} --help)") + "\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]):
        # argparse drops a lone "--" given as an option's value (``--out=--``) and hands
        # back an empty list; it is the value
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML file overriding the defaults "
                   "(see configs/default.toml)")
    p.add_argument("--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append",
                   default=[], help="override one option, e.g. --set index.clusters=300 "
                   "(repeatable; beats --config)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")


def _add_force_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace an existing {what} even "
                   "when it is not of the kind written (never an input, never a folder)")


def _add_scheduler_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS", default=os.environ.get(SCHEDULER_ENV),
                   help=f"run the {what} on this Dask cluster, e.g. tcp://HOST:8786 "
                   f"(default: ${SCHEDULER_ENV}; index, input and cache must be on "
                   "storage every worker sees at the same paths)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mosaic`` and its subcommands."""
    parser = _Parser(
        prog="mosaic", description="Video photomosaics: build a tile index from an image "
        "corpus, then render videos out of its tiles.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="build or update a clustered tile index from images",
                       description="Scan CORPUS for images, decode them into tiles and "
                       "features (checkpointed, resumable), cluster and prune.")
    p.add_argument("--corpus", required=True, metavar="DIR", help="directory of images "
                   "(searched recursively)")
    p.add_argument("--index", metavar="DIR", help="index directory (default: "
                   "$MOSAIC_CACHE/index, i.e. .cache/index)")
    p.add_argument("--jobs", type=_number(int, low=0), metavar="N", help="decode processes "
                   "(index.jobs; 0 = all cores)")
    p.add_argument("--clusters", type=_number(int), metavar="K", help="k-means clusters "
                   "(index.clusters)")
    p.add_argument("--tile-size", metavar="WxH", help="tile size (index.tile_size)")
    _add_scheduler_arg(p, "decode shards")
    p.add_argument("--verify", action="store_true", help="check a finished index's whole "
                   "digests, not only sizes and samples, and rebuild what is damaged")
    _add_config_args(p)

    p = sub.add_parser("inspect", help="write a contact sheet of an index's clusters",
                       description="One row per kept cluster, largest first: its "
                       "population and sample tiles.")
    p.add_argument("index", metavar="INDEX", help="index directory")
    p.add_argument("--out", required=True, metavar="PNG", help="contact sheet to write "
                   "(.png, or .jpg for JPEG)")
    _add_force_arg(p, "OUT")
    p.add_argument("--samples", type=_COUNT, default=16, help="tiles per row (default 16)")
    p.add_argument("--max-rows", type=_COUNT, metavar="N", help="only the N largest clusters")
    p.add_argument("--zoom", type=_COUNT, default=1, help="integer tile magnification")
    p.add_argument("-q", "--quiet", action="store_true", help="no info lines")

    p = sub.add_parser("sample", help="generate the built-in sample corpus (no download)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    p.add_argument("--count", type=_COUNT, default=400, help="number of images (default 400)")
    p.add_argument("-q", "--quiet", action="store_true", help="no info lines")

    p = sub.add_parser("render", help="turn a video into a photomosaic video with its sound",
                       description="Render VIDEO (a file, or a URL fetched with yt-dlp) as a "
                       "mosaic of the index's tiles, in cached segments (a rerun resumes), "
                       "and mux the source's audio back.")
    p.add_argument("video", metavar="VIDEO", help="video file or URL")
    p.add_argument("--index", metavar="DIR", help="tile index (default: "
                   "$MOSAIC_CACHE/index, what `make index` builds)")
    p.add_argument("--out", metavar="FILE", help="output .mp4, .mov, .mkv or .webm "
                   "(default: $MOSAIC_CACHE/renders/<name>-<digest>-mosaic.mp4)")
    p.add_argument("--start", type=_SECONDS, default=0.0, metavar="SECONDS",
                   help="start this far into the video (preview a part)")
    p.add_argument("--duration", type=_POSITIVE, metavar="SECONDS", help="render this long")
    p.add_argument("--frames", type=_COUNT, metavar="N", help="render at most N frames")
    p.add_argument("--scale", type=_FLOAT, help="upscaling before cutting cells "
                   "(render.scale)")
    p.add_argument("--alpha", type=_FLOAT, help="weight of the source blended over the "
                   "mosaic: 0 = pure mosaic, 0.5 = the reference's 50/50 look (render.alpha, "
                   "default 0.2)")
    p.add_argument("--preset", help="encoder speed preset (render.preset)")
    p.add_argument("--workers", type=int, metavar="N", help="painters at once, local "
                   "processes (render.workers; 0 = fit the cores and the memory; more than "
                   "the cores, the memory or the segments allow are capped)")
    _add_force_arg(p, "OUT (or OUT.scores.json)")
    _add_scheduler_arg(p, "paint segments")
    _add_config_args(p)

    add_photo_parser(sub)
    add_faces_parser(sub)
    add_zoom_parser(sub)
    add_live_parser(sub)

    p = sub.add_parser("score", help="score a pure-mosaic video against its source",
                       description="Fidelity (cell and sub-grid CIELAB dE, viewing-scale "
                       "SSIM), stability (churn, flicker in static cells) and variety of "
                       "MOSAIC, a pure mosaic (no blend) of SOURCE made by any tool; with "
                       "--index, also photo visibility (each cell's tile identified from "
                       "its pixels: its contrast as a share of its own).")
    p.add_argument("source", metavar="SOURCE", help="the source video")
    p.add_argument("mosaic", metavar="MOSAIC", help="the pure-mosaic video")
    p.add_argument("--scale", type=_POSITIVE, default=4.0, help="upscaling used (default 4)")
    p.add_argument("--tile", default="32x32", metavar="WxH", help="tile size (default 32x32)")
    p.add_argument("--frames", type=_COUNT, metavar="N", help="score at most N frames")
    p.add_argument("--index", metavar="DIR", help="the tile index whose photos MOSAIC shows "
                   "(its tiles are identified in each cell for the photo visibility score)")
    p.add_argument("--out", metavar="JSON", help="also write the scores here (.json)")
    _add_force_arg(p, "OUT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("sample-clip", help="generate the built-in sample clip (no download)")
    p.add_argument("--out", required=True, metavar="FILE", help="mp4 to write")
    p.add_argument("--seconds", type=_POSITIVE, default=6.0, help="length (default 6)")
    p.add_argument("--no-audio", action="store_true", help="leave out the audio track")
    p.add_argument("-q", "--quiet", action="store_true", help="no info lines")

    add_verify_parser(sub)
    add_clean_parser(sub)
    return parser


def _cmd_index(args: argparse.Namespace) -> int:
    from pipeline.stages.index import run_index

    config = load_config(args.config, args.overrides, {
        "index.jobs": args.jobs, "index.clusters": args.clusters,
        "index.tile_size": args.tile_size})
    if args.index:
        index_dir = Path(args.index)
    else:
        from pipeline.cache import open_cache

        index_dir = open_cache(default_cache()) / "index"
    start = time.perf_counter()
    report = run_index(args.corpus, index_dir, config.index, progress=not args.quiet,
                       full_check=args.verify, scheduler=args.scheduler)
    elapsed = time.perf_counter() - start
    c = report.counts
    if report.up_to_date:
        log.info("index %s is up to date (%d tiles, %d clusters kept) [%.1f s]", index_dir,
                 c["tiles"], c.get("clusters_kept", 0), elapsed)
        return 0
    log.info("%d files: %d decoded this run, %d skipped (see bad_files.tsv), %d duplicates",
             c["files"], c["decoded"], c["bad"], c["duplicates"])
    log.info("%d tiles -> %d clusters: kept %d (%d tiles), pruned %d (%d tiles)",
             c["tiles"], c["clusters"], c["clusters_kept"], c["tiles_kept"],
             c["clusters_pruned"], c["tiles_pruned"])
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items())
    log.info("index written to %s in %.1f s (%.0f images/s; %s)", index_dir, elapsed,
             c["files"] / max(elapsed, 1e-9), steps)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pipeline.contact_sheet import write_contact_sheet
    from pipeline.index import load_index

    if args.samples < 1 or args.zoom < 1 or (args.max_rows is not None and args.max_rows < 1):
        raise MosaicError("--samples, --zoom and --max-rows must be at least 1")
    index = load_index(args.index)
    out = write_contact_sheet(index, args.out, args.samples, args.max_rows, args.zoom,
                              force=args.force)
    log.info("contact sheet of %d clusters written to %s", len(index.populations), out)
    from pipeline.groups import group_summary

    g = group_summary(index.groups)
    largest = ", ".join(f"group {gid}: {size}" for gid, size in g["largest"]) or "none"
    log.info("near-duplicate groups: %d tiles in %d groups; %d groups of 2 or more hold %d "
             "tiles (largest: %s)", g["tiles"], g["groups"], g["groups_shared"],
             g["tiles_in_shared"], largest)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from pipeline.sample import make_sample_corpus

    if args.count < 1:
        raise MosaicError(f"--count must be at least 1, got {args.count}")
    from pipeline.output import managed_place

    if (place := managed_place(Path(args.out) / "x", default_cache())) is not None:
        raise MosaicError(f"{args.out}: is inside {place}; choose another --out")
    paths = make_sample_corpus(Path(args.out), args.count)
    log.info("sample corpus: %d images in %s", len(paths), args.out)
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
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


def _cmd_score(args: argparse.Namespace) -> int:
    import json

    from pipeline.cache import write_json
    from pipeline.config import parse_tile_size
    from pipeline.metrics import score_videos

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
    from pipeline.config import parse_tile_size
    from pipeline.grid import check_frame_size, check_source_size, make_grid
    from pipeline.output import check_output
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


def _cmd_sample_clip(args: argparse.Namespace) -> int:
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


_COMMANDS = {"index": _cmd_index, "inspect": _cmd_inspect, "sample": _cmd_sample,
             "render": _cmd_render, "score": _cmd_score, "sample-clip": _cmd_sample_clip,
             "verify": cmd_verify, "clean": cmd_clean, "photo": cmd_photo,
             "faces": cmd_faces, "zoom": cmd_zoom, "live": cmd_live}


@contextlib.contextmanager
def _signals_interrupt():
    """Handle SIGTERM and SIGHUP as Ctrl-C is handled (an :class:`Interrupted` raised in
    the main thread), once: a second signal while stopping is ignored, so the clean-up
    finishes. Only where this runs on the main thread."""
    def interrupt(signum: int, _frame) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    try:
        saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Run ``mosaic`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    saved = (log.handlers[:], log.level, log.propagate)
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    log.propagate = False
    try:
        with logging_redirect_tqdm(loggers=[log]), _signals_interrupt():
            return _COMMANDS[args.command](args)
    except (MosaicError, OSError) as exc:
        if os.environ.get("MOSAIC_DEBUG"):
            raise
        print(one_line(f"error: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        from pipeline.execute import stop_children

        stop_children()  # workers and ffmpeg: nothing left running
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"interrupted ({signal.Signals(signum).name}); rerun the same command to "
              "resume", file=sys.stderr)
        return 128 + signum
    finally:  # leave the logger as it was (main() may run in-process, e.g. in tests)
        log.handlers[:], log.level, log.propagate = saved
