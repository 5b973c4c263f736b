"""Still photomosaics: one image -> a poster-size mosaic of the index's tiles.

The matching is the video render's ``nearest`` mode, reused as is: each cell's 4x4 CIELAB
grid (:func:`~pipeline.features.lab_grid_means` on :func:`~pipeline.grid.cell_views`),
made recolour-aware (:func:`~pipeline.matching.search_features`), probes the nearest tile
clusters (:class:`~pipeline.search.TileSearch`, the planner's search) and takes the exact nearest
tiles in them (:func:`~pipeline.search.search_lists`); the
:class:`~pipeline.assign.TileAssigner` then picks one per cell with the neighbour rule,
the repeat radius, the unseen-first preference and the per-tile cap, as for a fresh
frame (``free``). Two rules are hard for a still, where a repeat stays on the wall:

* no tile (nor a near-duplicate of it) twice within ``radius`` cells (Chebyshev);
* with ``max_uses``, no tile group more than that many times in the picture.

Cells whose pick breaks one of them (the assigner treats both as last resorts) are
searched again with more candidates until none does. The image is then painted one row
of cells at a time (tiles recoloured as :mod:`pipeline.tone` does for the video, resized from the
index's tile bank when the output cells are larger, optionally blended with the source)
into a raw file, which libvips converts to JPEG, PNG or TIFF: memory stays bounded by a
strip, whatever the poster size.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from pipeline.assign import TileAssigner, rank_within_groups
from pipeline.cache import ensure_free
from pipeline.compose import blend
from pipeline.config import PhotoOptions
from pipeline.corpus import read_image_bytes
from pipeline.errors import ImageError, OutputError, PhotoError
from pipeline.features import lab_grid_means
from pipeline.grid import Grid, cell_views, pair_windows
from pipeline.imagesize import pixel_problem
from pipeline.index import TileIndex
from pipeline.matching import search_features
from pipeline.search import TileClusters, TileSearch
from pipeline.tone import (
    adjust,
    colour_diffs,
    contrast_ratios,
    gains,
    luma_grid,
    mean_colours,
    shifts,
)

log = logging.getLogger(__name__)

MAX_SIDE = 65_535  # pixels per side: JPEG's own limit, and ours for every format
MAX_MEGAPIXELS = 1_000  # pixels in all, in millions (a 1-gigapixel poster)
FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".tif": "tiff", ".tiff": "tiff"}
_SEARCH_ROWS = 4096  # cells searched at once: bounded candidate buffers
_REPAIR_ROUNDS = 6  # times the candidates double for cells that break a hard rule
MATCH_MEMORY_SHARE = 0.5  # of the available memory, for the cells' views and candidates


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as BGR uint8 (H, W, 3); :class:`ImageError` in one line,
    also for a FIFO or other special file, or an image over the pixel limit (checked in
    its header, before decoding: :func:`pipeline.imagesize.pixel_problem`)."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise ImageError(f"{path}: no such image file")
    data = read_image_bytes(str(path))
    if isinstance(data, str):
        raise ImageError(f"{path}: {data}")
    if (problem := pixel_problem(data)) is not None:
        raise ImageError(f"{path}: {problem}; downscale it first")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None  # OpenCV's own limits, for formats whose header is not read here
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a readable image (corrupt, truncated, too large or "
                         "not an image format OpenCV decodes)")
    return image


def photo_grid(src_h: int, src_w: int, tile_hw: tuple[int, int], opts: PhotoOptions) -> Grid:
    """Cells of the output: ``cols`` across (or one per ``cell_size`` source pixels),
    rows from the image's aspect, each ``tile_px`` wide with the tile's aspect."""
    th, tw = tile_hw
    cols = max(1, round(src_w / opts.cell_size)) if opts.cell_size else opts.cols
    out_tw = opts.tile_px or tw
    out_th = max(1, round(out_tw * th / tw))
    rows = max(1, round(cols * out_tw * src_h / src_w / out_th))
    grid = Grid(src_h, src_w, rows, cols, out_th, out_tw)
    check_size(grid)
    return grid


def check_size(grid: Grid) -> None:
    """Refuse outputs over :data:`MAX_SIDE` per side or :data:`MAX_MEGAPIXELS` in all."""
    w, h = grid.out_w, grid.out_h
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_MEGAPIXELS * 1_000_000:
        raise OutputError(f"output of {w}x{h} pixels ({grid.cols}x{grid.rows} cells of "
                          f"{grid.tile_w}x{grid.tile_h}) is over the limit of {MAX_SIDE} "
                          f"pixels per side and {MAX_MEGAPIXELS} megapixels; use fewer "
                          "--cells or a smaller --tile-px")


def check_feasible(grid: Grid, groups: np.ndarray, opts: PhotoOptions) -> None:
    """Refuse an index too small for the hard rules (one line naming what is needed).

    ``groups`` (n,) int: the near-duplicate group of every tile that can be chosen.
    """
    n_groups = len(np.unique(groups))
    # cells closer than the radius in both directions: a (r+1) x (r+1) block (clipped to
    # the grid) must be all different, and that many tiles, repeated in the same pattern
    # block after block, suffice
    rows, cols = min(grid.rows, opts.radius + 1), min(grid.cols, opts.radius + 1)
    if opts.radius and n_groups < rows * cols:
        raise PhotoError(f"the index has {n_groups} distinct tiles (near-duplicates "
                          f"counted once); --radius {opts.radius} needs at least "
                          f"{rows * cols} (no repeat in any block of {cols}x{rows} cells); "
                          "lower --radius or index more images")
    if opts.max_uses and n_groups * opts.max_uses < grid.cells:
        raise PhotoError(f"{grid.cells} cells but {n_groups} distinct tiles used at most "
                          f"{opts.max_uses} times each; raise --max-uses, use fewer "
                          "--cells or index more images")


def check_memory(grid: Grid, kept: int, opts: PhotoOptions, available: int) -> None:
    """Refuse a grid whose cell views and candidate lists would not fit
    :data:`MATCH_MEMORY_SHARE` of ``available`` bytes (in one line, before any of it is
    allocated): per cell, two 8x8 views and the search features, and per candidate an id
    and a distance, twice over."""
    k = min(kept, max(opts.candidates, 2 * (2 * opts.radius + 1) ** 2))
    need = grid.cells * (3 * 192 + 24 * k)
    if need > MATCH_MEMORY_SHARE * available:
        raise PhotoError(f"{grid.cols}x{grid.rows} cells with {k} candidates each need "
                          f"about {need / 2**30:.1f} GiB to match, more than half the "
                          f"{available / 2**30:.1f} GiB available; use fewer --cells (or a "
                          "larger --cell-size) or a smaller --radius")


def violations(ids: np.ndarray, groups: np.ndarray, radius: int, max_uses: int
               ) -> np.ndarray:
    """Cells breaking a hard rule, (m,) int64 flat indices.

    ``ids`` (rows, cols) int64: a cell breaks the radius when a cell before it (row-major)
    within ``radius`` shows the same group; the cap when its group was already shown
    ``max_uses`` times before it.
    """
    g = groups[ids]
    bad = np.zeros(g.shape, bool)
    for a, b in pair_windows(*g.shape, radius):  # each pair once: the later cell breaks it
        bad[b] |= g[a] == g[b]
    if max_uses:
        bad |= (rank_within_groups(g.ravel()) >= max_uses).reshape(g.shape)
    return np.flatnonzero(bad.ravel())


class PhotoMatcher:
    """The video's nearest-mode search and assignment, for the cells of one still."""

    def __init__(self, index: TileIndex, grid: Grid, opts: PhotoOptions) -> None:
        self.grid, self.opts = grid, opts
        self.tiles = TileClusters.from_labels(index.centers, np.asarray(index.labels))
        self.lab_grid = int(index.manifest["params"]["lab_grid"])
        self.lab = search_features(np.asarray(index.lab, np.float32), 0.0, opts.recolour)
        self.search = TileSearch(self.tiles, self.lab, _SEARCH_ROWS)
        self.groups = np.asarray(index.groups, np.int64)
        self.kept = len(self.tiles.members)
        self.k = min(self.kept, max(opts.candidates, 2 * (2 * opts.radius + 1) ** 2))
        self.excluded: int | None = None  # the group of a fixed cell's tile
        self.assigner = TileAssigner(grid.rows, grid.cols, self.lab, groups=self.groups,
                                     radius=opts.radius, max_uses=opts.max_uses,
                                     unseen=opts.unseen, joint=False)

    def queries(self, views: np.ndarray) -> np.ndarray:
        """Search features of cells (n, s, s, 3) uint8: (n, D) float32."""
        return search_features(lab_grid_means(views, self.lab_grid), 0.0, self.opts.recolour)

    def candidates(self, queries: np.ndarray, k: int, nprobe: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` nearest tiles in its ``nprobe`` nearest clusters, (n, k)."""
        ids, dist = self.search.search(queries, k, nprobe)
        if self.excluded is not None:  # a fixed cell's group: not a candidate elsewhere
            out = (ids >= 0) & (self.groups[np.maximum(ids, 0)] == self.excluded)
            ids, dist = np.where(out, -1, ids), np.where(out, np.inf, dist)
            order = np.argsort(dist, axis=1, kind="stable")
            ids, dist = np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)
        return ids, dist

    def match(self, views: np.ndarray, fixed: tuple[int, int] | None = None) -> np.ndarray:
        """Tile id per cell, (rows, cols) int64, with no hard rule broken.

        ``fixed`` (flat cell, tile id): that cell shows that tile, and no other cell
        shows the tile's group (so the fixed cell breaks no rule either).
        """
        with threadpool_limits(1, user_api="blas"):
            queries = self.queries(views)
            cells = np.arange(self.grid.cells)
            current = np.full(self.grid.cells, -1, np.int64)
            if fixed is not None:
                current[fixed[0]] = fixed[1]
                cells = cells[cells != fixed[0]]
                self.excluded = int(self.groups[fixed[1]])
            cand_ids, cand_d = self.candidates(queries, self.k, self.opts.nprobe)
            current[cells] = self.assigner.assign(cells, queries[cells], cand_ids[cells],
                                                  cand_d[cells], current, free=True)
            k, nprobe = self.k, self.opts.nprobe
            for _ in range(_REPAIR_ROUNDS):
                bad = self._violations(current)
                if not len(bad):
                    break
                k, nprobe = min(self.kept, 2 * k), 2 * nprobe
                log.info("%d cells break the repeat radius or the cap; searching them "
                         "again among %d candidates", len(bad), k)
                current[bad] = -1
                ids, dist = self.candidates(queries[bad], k, nprobe)
                current[bad] = self.assigner.assign(bad, queries[bad], ids, dist, current)
            bad = self._violations(current)
            if len(bad):
                raise PhotoError(f"{len(bad)} cells cannot be given a tile without a repeat "
                                  f"within --radius {self.opts.radius} or over --max-uses "
                                  f"{self.opts.max_uses}; relax them or index more images")
        return current.reshape(self.grid.rows, self.grid.cols)

    def _violations(self, current: np.ndarray) -> np.ndarray:
        return violations(current.reshape(self.grid.rows, self.grid.cols), self.groups,
                          self.opts.radius, self.opts.max_uses)


def cell_shifts(views: np.ndarray, ids: np.ndarray, bank: np.ndarray, strength: float,
                tone: float = 0.0) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Recolouring shifts, (n, 3) int16, and contrast gains, (n,) float32, as the video's
    plan and painters compute them (:func:`pipeline.tone.colour_diffs` times ``strength``,
    and the gain of :func:`pipeline.tone.contrast_ratios` at
    ``tone``. Both None with ``strength`` 0; the gains None with ``tone`` 0."""
    if strength <= 0:
        return None, None
    uniq, inverse = np.unique(ids, return_inverse=True)
    tiles = np.ascontiguousarray(bank[uniq])
    diffs = colour_diffs(views, mean_colours(tiles)[inverse])
    gain = None
    if tone > 0:
        ratios = contrast_ratios(luma_grid(views), luma_grid(tiles)[inverse],
                                 np.zeros(len(ids), bool))
        gain = gains(ratios, tone)
    return shifts(diffs, strength), gain


def paint_row(bank: np.ndarray, ids: np.ndarray, shift: np.ndarray | None, grid: Grid,
              gain: np.ndarray | None = None) -> np.ndarray:
    """One row of cells as pixels, (tile_h, cols * tile_w, 3) uint8 BGR.

    ``ids`` (cols,) int64; ``shift`` (cols, 3) int16 or None; ``gain`` (cols,) float32 or
    None. Tiles come from ``bank`` (N, th, tw, 3) and are resized (bilinear; area when
    smaller) to the grid's cells.
    """
    tiles = np.ascontiguousarray(bank[ids])
    adjust(tiles, shift, gain)
    th, tw = tiles.shape[1:3]
    if (th, tw) != (grid.tile_h, grid.tile_w):
        interp = cv2.INTER_AREA if grid.tile_w < tw else cv2.INTER_LINEAR
        tiles = np.stack([cv2.resize(t, (grid.tile_w, grid.tile_h), interpolation=interp)
                          for t in tiles])
    return np.ascontiguousarray(tiles.swapaxes(0, 1).reshape(grid.tile_h, -1, 3))


def source_strip(image: np.ndarray, grid: Grid, row: int) -> np.ndarray:
    """Rows ``row`` of cells of the source scaled to the output size (bilinear, the
    pixel-centre mapping of ``cv2.resize``): (tile_h, out_w, 3) uint8, no full upscale."""
    h, w = image.shape[:2]
    y = np.arange(row * grid.tile_h, (row + 1) * grid.tile_h, dtype=np.float32)
    x = np.arange(grid.out_w, dtype=np.float32)
    map_y = (y + 0.5) * np.float32(h / grid.out_h) - 0.5
    map_x = (x + 0.5) * np.float32(w / grid.out_w) - 0.5
    mx, my = np.meshgrid(np.clip(map_x, 0, w - 1), np.clip(map_y, 0, h - 1))
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@contextlib.contextmanager
def raw_canvas(out: Path, grid: Grid, tmp_dir: Path):
    """A temporary raw RGB file ``photo-XXXXXXXX.raw`` in the cache's ``tmp_dir``, locked
    (``flock``) while this run uses it and removed afterwards, opened for appending rows;
    yields ``(file, path)``. One that a killed run left is unlocked: the next run's
    start and ``mosaic clean`` remove it."""
    raw = grid.out_w * grid.out_h * 3
    here, there = tmp_dir.absolute(), out.absolute().parent
    if os.stat(here).st_dev == os.stat(there).st_dev:
        ensure_free(there, 2 * raw, f"{out}")
    else:
        ensure_free(here, raw, f"the raw canvas of {out}")
        ensure_free(there, raw, f"{out}")
    fd, tmp = tempfile.mkstemp(prefix="photo-", suffix=".raw", dir=here)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(fd, "wb") as f:
            yield f, Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def paint_photo(image: np.ndarray, ids: np.ndarray, index: TileIndex, grid: Grid,
                opts: PhotoOptions, raw, progress: bool = False) -> None:
    """Paint the mosaic row by row into the open raw file ``raw`` (RGB, row-major).

    ``ids`` (rows, cols) int64. Memory: one row of cells and one source strip.
    """
    views = cell_views(image, grid)
    for r in tqdm(range(grid.rows), desc="paint", unit="row", disable=not progress,
                  leave=False):
        row_ids = ids[r]
        cols = slice(r * grid.cols, (r + 1) * grid.cols)
        shift, gain = cell_shifts(views[cols], row_ids, index.tiles, opts.recolour, opts.tone)
        strip = paint_row(index.tiles, row_ids, shift, grid, gain)
        if opts.alpha > 0:
            blend(strip, source_strip(image, grid, r), opts.alpha, out=strip)
        raw.write(cv2.cvtColor(strip, cv2.COLOR_BGR2RGB).tobytes())
