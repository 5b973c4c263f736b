"""The ``index``, ``inspect`` and ``sample`` subcommands of ``mosaic`` (registered by
:mod:`pipeline.cli`): building and looking at tile indexes. Their parsers and handlers
only; errors are :class:`~pipeline.errors.MosaicError` and become one line.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.cli_args import (
    COUNT,
    add_config_args,
    add_force_arg,
    add_scheduler_arg,
    default_cache,
    number,
)
from pipeline.config import load_config
from pipeline.errors import MosaicError

log = logging.getLogger("pipeline")


def add_index_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic index`` to the subcommands ``sub``."""
    p = sub.add_parser("index", help="build or update a clustered tile index from images",
                       description="Scan CORPUS for images, decode them into tiles and "
                       "features (checkpointed, resumable), cluster and prune.")
    p.add_argument("--corpus", required=True, metavar="DIR", help="directory of images "
                   "(searched recursively)")
    p.add_argument("--index", metavar="DIR", help="index directory (default: "
                   "$MOSAIC_CACHE/index, i.e. .cache/index)")
    p.add_argument("--jobs", type=number(int, low=0), metavar="N", help="decode processes "
                   "(index.jobs; 0 = all cores)")
    p.add_argument("--clusters", type=number(int), metavar="K", help="k-means clusters "
                   "(index.clusters)")
    p.add_argument("--tile-size", metavar="WxH", help="tile size (index.tile_size)")
    add_scheduler_arg(p, "decode shards")
    p.add_argument("--verify", action="store_true", help="check a finished index's whole "
                   "digests, not only sizes and samples, and rebuild what is damaged")
    add_config_args(p)


def cmd_index(args: argparse.Namespace) -> int:
    """Run ``mosaic index``; the exit code."""
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


def add_inspect_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic inspect`` to the subcommands ``sub``."""
    p = sub.add_parser("inspect", help="write a contact sheet of an index's clusters",
                       description="One row per kept cluster, largest first: its "
                       "population and sample tiles.")
    p.add_argument("index", metavar="INDEX", help="index directory")
    p.add_argument("--out", required=True, metavar="PNG", help="contact sheet to write "
                   "(.png, or .jpg for JPEG)")
    add_force_arg(p, "OUT")
    p.add_argument("--samples", type=COUNT, default=16, help="tiles per row (default 16)")
    p.add_argument("--max-rows", type=COUNT, metavar="N", help="only the N largest clusters")
    p.add_argument("--zoom", type=COUNT, default=1, help="integer tile magnification")
    p.add_argument("-q", "--quiet", action="store_true", help="no info lines")


def cmd_inspect(args: argparse.Namespace) -> int:
    """Run ``mosaic inspect``; the exit code."""
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


def add_sample_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic sample`` to the subcommands ``sub``."""
    p = sub.add_parser("sample", help="generate the built-in sample corpus (no download)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    p.add_argument("--count", type=COUNT, default=400, help="number of images (default 400)")
    p.add_argument("-q", "--quiet", action="store_true", help="no info lines")


def cmd_sample(args: argparse.Namespace) -> int:
    """Run ``mosaic sample``; the exit code."""
    from pipeline.sample import make_sample_corpus

    if args.count < 1:
        raise MosaicError(f"--count must be at least 1, got {args.count}")
    from pipeline.output import managed_place

    if (place := managed_place(Path(args.out) / "x", default_cache())) is not None:
        raise MosaicError(f"{args.out}: is inside {place}; choose another --out")
    paths = make_sample_corpus(Path(args.out), args.count)
    log.info("sample corpus: %d images in %s", len(paths), args.out)
    return 0
