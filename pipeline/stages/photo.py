"""The ``photo`` stage: one image + a tile index -> a still mosaic (and a zoom page).

Steps: check the outputs (never an input, never inside an index or the cache's working
folders, the extension's format, nothing of another kind replaced without ``force``,
and with ``dzi`` the pyramid's folder and page: :func:`pipeline.dzi.check_dzi_targets`);
read the image (one line if missing, corrupt, a special file or over the pixel limit);
lay out the cells and refuse an output over the size limit, or a grid whose matching
would not fit in memory; check that the index has enough tiles for the hard rules;
match (:class:`pipeline.photo.PhotoMatcher`); paint row by row into a raw file in the
cache's ``tmp/`` (locked while in use; one a killed run left is removed by the next run
and by ``mosaic clean``); save it with libvips as JPEG, PNG or TIFF (atomically); with
``dzi``, cut the Deep Zoom pyramid from the same raw file and write the page.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import photo as ph
from pipeline.cache import mark_owned, open_cache
from pipeline.clean import remove_stale_raws
from pipeline.dzi import check_dzi_targets, load_raw, save_dzi, save_image
from pipeline.errors import OutputError
from pipeline.execute import available_memory
from pipeline.grid import cell_views
from pipeline.index import load_index
from pipeline.output import check_output, default_output
from pipeline.video import local_path

log = logging.getLogger(__name__)


@dataclass
class PhotoReport:
    """What a run made: the output, its size, the grid and seconds per step."""

    out: Path
    width: int
    height: int
    rows: int
    cols: int
    distinct: int
    dzi: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def output_format(out: Path) -> str:
    """libvips saver for ``out``'s extension; :class:`OutputError` for others."""
    fmt = ph.FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise OutputError(f"{out}: unknown image type {out.suffix or '(none)'!r}; use "
                          ".jpg, .png or .tif")
    return fmt


def run_photo(image_path: str | Path, index_dir: str | Path, out: str | Path | None,
              opts: ph.PhotoOptions, cache_dir: str | Path, dzi: bool = False,
              progress: bool = False, force: bool = False) -> PhotoReport:
    """Make the still mosaic of ``image_path`` (see the module doc); returns the report.
    ``force`` replaces an existing OUT (or zoom page) that is not of the kind written."""
    t0 = time.perf_counter()
    image_path, index_dir = Path(local_path(str(image_path))), Path(index_dir)
    cache = open_cache(cache_dir)
    given = out is not None
    if not given:
        mark_owned(cache / "renders", "renders")
    out = Path(out) if out else default_output(str(image_path), cache, ".jpg")
    reads = [image_path, *(p for p in index_dir.glob("*") if p.is_file())]
    check_output(out, reads, create_parent=not given, kind="image", force=force,
                 cache_dir=cache)
    fmt = output_format(out)
    if dzi:
        check_dzi_targets(out.with_suffix(""), [image_path, index_dir], force)
    tmp_dir = mark_owned(cache / "tmp", "tmp")
    remove_stale_raws(tmp_dir)  # left by a killed run
    image = ph.read_image(image_path)
    index = load_index(index_dir)
    grid = ph.photo_grid(*image.shape[:2], index.tiles.shape[1:3], opts)
    kept = np.asarray(index.labels) >= 0  # only the kept (unpruned) tiles are candidates
    ph.check_memory(grid, int(kept.sum()), opts, available_memory())
    ph.check_feasible(grid, index.groups[kept], opts)
    timings = {"load": time.perf_counter() - t0}
    log.info("%s: %dx%d px -> %dx%d cells of %dx%d px = %dx%d px", image_path,
             image.shape[1], image.shape[0], grid.cols, grid.rows, grid.tile_w, grid.tile_h,
             grid.out_w, grid.out_h)
    t = time.perf_counter()
    ids = ph.PhotoMatcher(index, grid, opts).match(cell_views(image, grid))
    timings["match"] = time.perf_counter() - t
    report = PhotoReport(out, grid.out_w, grid.out_h, grid.rows, grid.cols,
                         len(set(ids.ravel().tolist())), timings=timings)
    with ph.raw_canvas(out, grid, tmp_dir) as (raw, raw_path):
        t = time.perf_counter()
        ph.paint_photo(image, ids, index, grid, opts, raw, progress)
        raw.flush()
        timings["paint"] = time.perf_counter() - t
        t = time.perf_counter()
        save_image(load_raw(raw_path, grid.out_w, grid.out_h), out, fmt, opts.quality)
        timings["save"] = time.perf_counter() - t
        if dzi:
            t = time.perf_counter()
            save_dzi(load_raw(raw_path, grid.out_w, grid.out_h), out.with_suffix(""))
            report.dzi = out.with_suffix(".html")
            timings["dzi"] = time.perf_counter() - t
    return report
