"""The ``verify`` and ``clean`` subcommands of ``mosaic`` (registered by
:mod:`pipeline.cli`): the commands that look after the cache and the indexes.

Their parsers and handlers only; as everywhere in the command line, errors are
:class:`~pipeline.errors.MosaicError` and become one line.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.cli_args import default_cache
from pipeline.errors import MosaicError

log = logging.getLogger("pipeline")


def add_verify_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic verify`` to the subcommands ``sub``."""
    p = sub.add_parser("verify", help="fully check an index (or, with --renders, the cached "
                       "plans and segments) against their recorded digests",
                       description="Compare every artifact of INDEX and every decode "
                       "checkpoint shard with the size and whole-file digest recorded "
                       "when it was written (each run only checks sizes and samples). "
                       "Exit 1 and name each damaged file; `mosaic index --verify` "
                       "repairs them.")
    p.add_argument("index", nargs="?", metavar="INDEX", help="index directory (default: "
                   "$MOSAIC_CACHE/index)")
    p.add_argument("--renders", action="store_true", help="instead, check every plan chunk "
                   "and painted segment in $MOSAIC_CACHE; damaged ones are dropped, and the "
                   "next run of their render redoes just them")
    p.add_argument("-q", "--quiet", action="store_true", help="no info lines")


def add_clean_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic clean`` to the subcommands ``sub``."""
    p = sub.add_parser("clean", help="remove stale checkpoints, temporary files, old renders",
                       description="Remove what cannot be reused: decode checkpoints of "
                       "other settings or of files no longer in the corpus, temporary files "
                       "left by killed runs, and render jobs, plans and downloads untouched "
                       "for longer than --older-than. Only folders marked as this tool's "
                       "are cleaned, and only the files it writes there; anything a running "
                       "job holds is left alone. An unmarked folder, an empty path, / and "
                       "your home folder are refused. Reports the space freed.")
    p.add_argument("--cache", metavar="DIR", help="cache directory (default: "
                   "$MOSAIC_CACHE, i.e. .cache)")
    p.add_argument("--index", metavar="DIR", action="append", default=[],
                   help="also clean this index directory kept outside the cache "
                   "(repeatable)")
    p.add_argument("--older-than", metavar="DURATION", default="7d", help="remove render "
                   "jobs, plans and downloads untouched for this long: 90m, 12h, 7d, 2w, "
                   "0 = all (default 7d)")
    p.add_argument("--dry-run", action="store_true", help="list what would go; remove "
                   "nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="only the summary line")


def cmd_verify(args: argparse.Namespace) -> int:
    """Run ``mosaic verify``; the exit code. Only reads: works on a read-only index."""
    from pipeline.index import LOCK, verify_index
    from pipeline.locks import file_lock

    if args.renders:
        from pipeline.stages.verify import verify_renders

        problems = verify_renders(default_cache())
        for path, problem in problems.items():
            log.warning("damaged: %s: %s", path, problem)
        if problems:
            raise MosaicError(f"{default_cache()}: {len(problems)} damaged render file(s), "
                              "dropped; rerun their renders to redo them")
        log.info("%s: every plan chunk and painted segment matches its recorded digest",
                 default_cache())
        return 0
    index_dir = Path(args.index) if args.index else default_cache() / "index"
    if not index_dir.is_dir():
        raise MosaicError(f"{index_dir}: no such index directory")
    with file_lock(index_dir / LOCK, f"index {index_dir}", shared=True):
        problems = verify_index(index_dir)
    for path, problem in problems.items():
        log.warning("damaged: %s: %s", path, problem)
    if problems:
        raise MosaicError(f"{index_dir}: {len(problems)} damaged file(s); rerun `mosaic index "
                          "--verify` with the same options to repair them")
    log.info("%s: every artifact and checkpoint shard matches its recorded digest", index_dir)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Run ``mosaic clean``; the exit code (see :mod:`pipeline.clean`)."""
    from pipeline.cache import format_bytes
    from pipeline.clean import clean_cache, parse_duration

    cache = args.cache if args.cache is not None else default_cache()
    report = clean_cache(cache, parse_duration(args.older_than), args.dry_run,
                         tuple(args.index))
    for busy in report.busy:
        log.info("left %s alone: another run is using it", busy)
    for kept in report.kept:
        log.info("kept %s: it also holds files this tool did not write", kept)
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {format_bytes(report.total())}: "
          f"{report.count('stale decode checkpoint')} stale decode checkpoint(s), "
          f"{report.count('orphaned temporary file')} temporary file(s), "
          f"{report.count('old render job')} old render job(s), "
          f"{report.count('old render plan')} old plan(s), "
          f"{report.count('old download')} old download(s), "
          f"{report.count('stale photo raw file')} photo raw file(s)"
          + (" (dry run: nothing removed)" if args.dry_run else ""))
    return 0
