"""The ``live`` subcommand of ``mosaic`` (registered by :mod:`pipeline.cli`): its parser
and handler only. Errors are :class:`~pipeline.errors.MosaicError` and become one line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from pathlib import Path

from pipeline.cli_args import POSITIVE, default_cache, number
from pipeline.errors import Interrupted, MosaicError

log = logging.getLogger("pipeline")

DEFAULT_PORT = 8090


def add_live_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic live`` to the subcommands ``sub``."""
    p = sub.add_parser(
        "live", help="turn a camera, a video or a stream into a photomosaic in the browser, "
        "in real time",
        description="Read SOURCE with ffmpeg (newest frame only), plan each frame with the "
        "render's matching, variety rules, hysteresis and recolouring, paint it and serve "
        "it as MJPEG on a local web page with its figures (fps, latency, dropped frames, "
        "cells), live controls (blend, recolour, contrast, cells, matching), a snapshot "
        "button and the `mosaic render` line that reproduces the look. The cells across "
        "are picked to hold the frame rate unless --cells fixes them. Ctrl-C stops "
        "everything (a --record file is finished first).")
    p.add_argument("source", metavar="SOURCE", help="a camera (/dev/video0, or just 0), a "
                   "video file (played in real time), or a stream URL ffmpeg reads "
                   "(rtsp://, http://, udp://, ...)")
    p.add_argument("--index", metavar="DIR", help="tile index (default: $MOSAIC_CACHE/index)")
    p.add_argument("--loop", action="store_true", help="play a video file again and again")
    p.add_argument("--fps", type=number(float, above=0, high=120), metavar="N",
                   help="take N frames a second from the source (default: its own rate)")
    p.add_argument("--cells", type=number(int, low=8, high=160), metavar="N",
                   help="cells across, fixed (default: picked to hold the frame rate, at "
                   "most 40)")
    p.add_argument("--port", type=number(int, low=0, high=65535), default=DEFAULT_PORT,
                   help=f"port of the page (default {DEFAULT_PORT}; 0 = any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default "
                   "127.0.0.1, this machine only; e.g. 0.0.0.0 shows the page, and its "
                   "controls, to the whole network)")
    p.add_argument("--max-clients", type=number(int, low=1, high=1000), default=10,
                   metavar="N", help="viewers of the stream at once (default 10)")
    p.add_argument("--grow", metavar="DIR", help="faces found in the frames are saved to "
                   "DIR (made if missing; nothing there is removed) and join the live tiles; "
                   "`mosaic index --corpus DIR` indexes them later")
    p.add_argument("--record", metavar="FILE", help="write what is shown to FILE (.mp4, "
                   ".mov or .mkv; H.264 at the real frame rate, with a video file's sound)")
    p.add_argument("--force", action="store_true", help="replace an existing --record FILE "
                   "even when it is not a video (never an input, never a folder)")
    p.add_argument("--quality", type=number(int, low=10, high=100), default=80, metavar="Q",
                   help="JPEG quality of the stream (default 80)")
    p.add_argument("--stall", type=POSITIVE, default=10.0, metavar="SECONDS",
                   help="give up on a source that sends no frame for this long (default 10)")
    p.add_argument("--config", metavar="FILE", help="TOML file of render options (see "
                   "configs/default.toml): the live mosaic uses the [render] section")
    p.add_argument("--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append",
                   default=[], help="override one option, e.g. --set render.alpha=0 "
                   "(repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no info lines (the page's "
                   "address is still printed)")


def _prepare(args: argparse.Namespace):
    """Every check before any work; the session's options and the tile pool."""
    from pipeline.config import load_config
    from pipeline.index import load_index
    from pipeline.live_engine import TilePool, warm_up
    from pipeline.live_grow import check_grow_dir
    from pipeline.live_reader import open_source
    from pipeline.live_session import LiveOptions
    from pipeline.output import check_output, container_for

    config = load_config(args.config, args.overrides).render
    index_dir = Path(args.index) if args.index else default_cache() / "index"
    index = load_index(index_dir)
    source = open_source(args.source, args.loop)
    record = None
    if args.record:
        reads = [source.target] if source.is_file else []
        record = check_output(args.record, [*reads, *index_dir.glob("*")], kind="video",
                              force=args.force, cache_dir=default_cache())
        container_for(record)
    grow = check_grow_dir(Path(args.grow), index_dir) if args.grow else None
    render_args = tuple(a for s in args.overrides for a in ("--set", s))
    if args.config:
        render_args = ("--config", args.config, *render_args)
    opts = LiveOptions(source, args.index or str(index_dir), config, args.cells, args.fps,
                       args.loop, args.quality, args.stall, grow, record, render_args)
    started = time.perf_counter()
    pool = TilePool(index)
    warm_up()
    log.info("%d tiles of %s in memory (%.1f s)", pool.n, index_dir,
             time.perf_counter() - started)
    return opts, pool


def cmd_live(args: argparse.Namespace) -> int:
    """Run ``mosaic live``; the exit code."""
    from pipeline.live_server import is_loopback, serve
    from pipeline.live_session import LiveSession

    opts, pool = _prepare(args)
    session = LiveSession(opts, pool)
    if not is_loopback(args.host):
        log.warning("serving on %s: anyone who can reach this machine on that port sees "
                    "the mosaic and can change its settings", args.host)

    def ready(url: str) -> None:
        src = opts.source
        print(f"live: {url} ({src.kind} {src.text}, {session.grid.cols}x"
              f"{session.grid.rows} cells; Ctrl-C to stop)", flush=True)

    started = time.monotonic()
    stopped: int | None = None
    try:
        asyncio.run(serve(session, args.host, args.port, args.max_clients, ready))
    except KeyboardInterrupt as exc:
        stopped = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    finally:
        record = session.stop()
    _summary(session, time.monotonic() - started, record)
    if stopped is not None:
        print(f"stopped ({signal.Signals(stopped).name})", flush=True)
        return 128 + stopped
    outcome = session.outcome
    if outcome is not None and outcome.error is not None:
        raise outcome.error
    if outcome is not None and outcome.code:
        raise MosaicError(outcome.line)
    if outcome is not None:
        log.info("%s", outcome.line)
    return 0


def _summary(session, seconds: float, record: Path | None) -> None:
    pace, reader = session.pace, session.reader
    log.info("live: %d frames shown in %.1f s (%.1f a second), %d of %d source frames "
             "dropped", pace.frames, seconds, pace.frames / max(seconds, 1e-9),
             reader.dropped, reader.read)
    if record is not None:
        log.info("recorded %s (%.1f s)", record, session.recorder.seconds)
    if session.grower is not None:
        log.info("--grow: %d new faces saved to %s", session.grower.kept, session.opts.grow)
