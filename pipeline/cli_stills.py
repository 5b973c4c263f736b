"""The ``photo`` and ``faces`` subcommands of ``mosaic`` (registered by :mod:`pipeline.cli`).

Kept apart from the video commands: their parsers and handlers only. As everywhere in
the command line, errors are :class:`~pipeline.errors.MosaicError` and become one line.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.cli_args import COUNT, default_cache, number
from pipeline.config import FaceOptions, PhotoOptions, check_options
from pipeline.sizes import crop_size

log = logging.getLogger("pipeline")


def add_photo_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic photo`` to the subcommands ``sub``."""
    from pipeline.photo import MAX_MEGAPIXELS, MAX_SIDE

    d = PhotoOptions()
    p = sub.add_parser("photo", help="turn a still image into a poster-size photomosaic",
                       description="Rebuild IMAGE out of the index's tiles with the video's "
                       "matching (nearest tiles on a 4x4 CIELAB grid, recoloured), no tile "
                       "twice within --radius cells and, with --max-uses, no tile more than "
                       "that often. Writes JPEG, PNG or TIFF by the extension, in strips "
                       f"(bounded memory); at most {MAX_SIDE} px per side and "
                       f"{MAX_MEGAPIXELS} megapixels.")
    p.add_argument("image", metavar="IMAGE", help="the photo (any format OpenCV reads)")
    p.add_argument("--index", metavar="DIR", help="tile index (default: $MOSAIC_CACHE/index)")
    p.add_argument("--out", metavar="FILE", help="output .jpg, .png or .tif (default: "
                   "$MOSAIC_CACHE/renders/<name>-<digest>-mosaic.jpg)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--cells", type=COUNT, default=d.cols, metavar="N",
                      help=f"cells across; rows follow the aspect (default {d.cols})")
    size.add_argument("--cell-size", type=COUNT, metavar="PX", help="instead, one cell "
                      "per PX source pixels across")
    p.add_argument("--tile-px", type=COUNT, metavar="PX", help="output pixels per cell "
                   "across (default: the index's tile width; larger sizes are upscaled "
                   "from the index's tile bank)")
    p.add_argument("--radius", type=number(int, low=0), default=d.radius, metavar="R",
                   help=f"no tile (nor a near-duplicate) twice within R cells (default "
                   f"{d.radius}; 0 = off)")
    p.add_argument("--max-uses", type=number(int, low=0), default=d.max_uses, metavar="N",
                   help="use each tile at most N times in the picture (default 0 = no cap)")
    p.add_argument("--alpha", type=number(float, low=0), default=d.alpha, metavar="A",
                   help="weight of the source blended over the mosaic, 0..1 (default "
                   f"{d.alpha}: pure mosaic; 1 = the source)")
    p.add_argument("--recolour", type=number(float, low=0), default=d.recolour,
                   metavar="S", help=f"move each tile's mean colour this share of the way "
                   f"to its cell's, 0..1 (default {d.recolour})")
    p.add_argument("--tone", type=number(float, low=0), default=d.tone, metavar="T",
                   help="scale each tile's contrast towards the gain that makes it look "
                   f"most like its cell from a distance, 0..1 (default {d.tone}: every "
                   "photo at its own contrast; gains stay within 0.8..1.25; with "
                   "--recolour above 0 only)")
    p.add_argument("--quality", type=number(int, low=1), default=d.quality, metavar="Q",
                   help=f"JPEG quality 1..100 (default {d.quality})")
    p.add_argument("--dzi", action="store_true", help="also write a Deep Zoom pyramid "
                   "(<out>.dzi, <out>_files/) and a zoom page <out>.html that opens from "
                   "the filesystem, no server needed (an existing <out>_files/ must be "
                   "one this tool made)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT, "
                   "<out>.html or <out>.dzi even when it is not of the kind written (never "
                   "an input, never a folder)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info lines")


def cmd_photo(args: argparse.Namespace) -> int:
    """Run ``mosaic photo``; the exit code."""
    from pipeline.stages.photo import run_photo

    opts = check_options("photo", PhotoOptions(
        cols=args.cells, cell_size=args.cell_size or 0, tile_px=args.tile_px or 0,
        radius=args.radius, max_uses=args.max_uses, alpha=args.alpha,
        recolour=args.recolour, tone=args.tone, quality=args.quality))
    index_dir = Path(args.index) if args.index else default_cache() / "index"
    start = time.perf_counter()
    r = run_photo(args.image, index_dir, args.out, opts, default_cache(), dzi=args.dzi,
                  progress=not args.quiet, force=args.force)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items())
    log.info("mosaic of %dx%d cells, %d distinct tiles -> %s (%dx%d px) in %.1f s (%s)",
             r.cols, r.rows, r.distinct, r.out, r.width, r.height,
             time.perf_counter() - start, steps)
    if r.dzi:
        log.info("zoom page: %s (open it in a browser; no server needed)", r.dzi)
    return 0


def add_faces_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mosaic faces`` to the subcommands ``sub``."""

    d = FaceOptions()
    p = sub.add_parser("faces", help="cut face tiles out of a photo folder (for an index)",
                       description="Find faces in every photo under SRC_DIR with OpenCV's "
                       "YuNet detector, drop small ones and those that OpenCV's frontal-face "
                       "cascade does not confirm (false positives: animal faces, backs of "
                       "heads), crop each with a margin at the tile aspect, drop "
                       "duplicates by content, and write JPEG crops plus manifest.json "
                       "(source and boxes) and bad_files.tsv into --out. Parallel and "
                       "resumable; `mosaic index --corpus OUT` indexes the result.")
    p.add_argument("src", metavar="SRC_DIR", help="folder of photos (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the face tiles "
                   "(not inside SRC_DIR): a new or empty folder, or one this command made")
    p.add_argument("--force", action="store_true", help="use an existing --out folder that "
                   "holds other files (they are left alone: only face tiles this command "
                   "wrote are ever removed)")
    p.add_argument("--size", default=f"{d.size[0]}x{d.size[1]}", metavar="WxH",
                   help="crop size and aspect (default CelebA's 178x218)")
    p.add_argument("--min-size", type=COUNT, default=d.min_size, metavar="PX",
                   help=f"ignore faces smaller than PX source pixels (default {d.min_size}; "
                   "smaller is slower)")
    p.add_argument("--margin", type=number(float, low=0), default=d.margin, metavar="M",
                   help=f"margin around the face box, as a share of its width on each side "
                   f"(default {d.margin})")
    p.add_argument("--no-eye-check", action="store_true", help="keep the detections that "
                   "the frontal-face cascade does not confirm (this false-positive filter, "
                   "once an eye check, is on by default)")
    p.add_argument("--jobs", type=number(int, low=0), default=0, metavar="N",
                   help="processes (default 0 = all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info lines")


def cmd_faces(args: argparse.Namespace) -> int:
    """Run ``mosaic faces``; the exit code."""
    from pipeline.stages.faces import run_faces

    w, h = crop_size(args.size, "--size")
    opts = check_options("faces", FaceOptions(size=(w, h), min_size=args.min_size,
                                              margin=args.margin, eyes=not args.no_eye_check))
    start = time.perf_counter()
    r = run_faces(args.src, args.out, opts, args.jobs, progress=not args.quiet,
                  force=args.force)
    elapsed = time.perf_counter() - start
    c = r.counts
    log.info("%d photos (%d scanned this run, %.1f photos/s): %d faces of %d px or more "
             "detected; dropped %d unconfirmed (false positives), %d in duplicate photos "
             "and %d duplicate faces; %d unreadable (see %s)", c["photos"], r.redone,
             r.redone / max(elapsed, 1e-9), c["detected"], args.min_size, c["no_eyes"],
             c["duplicate_photos"], c["duplicate_faces"], c["bad"],
             Path(args.out) / "bad_files.tsv")
    log.info("%d face tiles of %dx%d in %s (manifest %s); index them with `mosaic index "
             "--corpus %s`", c["faces"], w, h, args.out, r.manifest, args.out)
    return 0
