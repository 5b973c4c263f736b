"""The ``mosaic`` command line: the only place that sets up logging and exit codes.

Each command's parser and handler live in a module of their own (:mod:`pipeline.cli_index`,
:mod:`pipeline.cli_render`, :mod:`pipeline.cli_stills`, :mod:`pipeline.cli_zoom`,
:mod:`pipeline.cli_live`, :mod:`pipeline.cli_cache`), all
built from the shared helpers of :mod:`pipeline.cli_args`; this module puts them
together and runs one.

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

from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline import __version__
from pipeline.cli_args import Parser, one_line
from pipeline.cli_cache import add_clean_parser, add_verify_parser, cmd_clean, cmd_verify
from pipeline.cli_index import (
    add_index_parser,
    add_inspect_parser,
    add_sample_parser,
    cmd_index,
    cmd_inspect,
    cmd_sample,
)
from pipeline.cli_live import add_live_parser, cmd_live
from pipeline.cli_render import (
    add_render_parser,
    add_sample_clip_parser,
    add_score_parser,
    cmd_render,
    cmd_sample_clip,
    cmd_score,
)
from pipeline.cli_stills import add_faces_parser, add_photo_parser, cmd_faces, cmd_photo
from pipeline.cli_zoom import add_zoom_parser, cmd_zoom
from pipeline.errors import Interrupted, MosaicError
from pipeline.execute import quiet_tracker

log = logging.getLogger("pipeline")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


# every command, in the order of ``mosaic --help``: its parser and its handler
_COMMANDS = {"index": (add_index_parser, cmd_index),
             "inspect": (add_inspect_parser, cmd_inspect),
             "sample": (add_sample_parser, cmd_sample),
             "render": (add_render_parser, cmd_render),
             "photo": (add_photo_parser, cmd_photo),
             "faces": (add_faces_parser, cmd_faces),
             "zoom": (add_zoom_parser, cmd_zoom),
             "live": (add_live_parser, cmd_live),
             "score": (add_score_parser, cmd_score),
             "sample-clip": (add_sample_clip_parser, cmd_sample_clip),
             "verify": (add_verify_parser, cmd_verify),
             "clean": (add_clean_parser, cmd_clean)}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mosaic`` and its subcommands."""
    parser = Parser(
        prog="mosaic", description="Video photomosaics: build a tile index from an image "
        "corpus, then render videos out of its tiles.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in _COMMANDS.values():
        add(sub)
    return parser


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
    quiet_tracker()  # a failure is one line, with nothing printed after it
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    saved = (log.handlers[:], log.level, log.propagate)
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    log.propagate = False
    try:
        with logging_redirect_tqdm(loggers=[log]), _signals_interrupt():
            return _COMMANDS[args.command][1](args)
    except (MosaicError, OSError) as exc:
        if os.environ.get("MOSAIC_DEBUG"):
            raise
        print(one_line(f"error: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        from pipeline.processes import stop_children

        stop_children()  # workers and ffmpeg: nothing left running
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"interrupted ({signal.Signals(signum).name}); rerun the same command to "
              "resume", file=sys.stderr)
        return 128 + signum
    finally:  # leave the logger as it was (main() may run in-process, e.g. in tests)
        log.handlers[:], log.level, log.propagate = saved
