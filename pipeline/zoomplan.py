"""Planning a zoom: the mosaic of each image and the cell the zoom lands on.

Each mosaic is planned by the still matcher and its rules
(:class:`~pipeline.photo.PhotoMatcher`: no repeat within ``radius`` cells, at most
``max_uses`` of a tile), with the recolouring shifts of ``mosaic photo``
(:func:`~pipeline.photo.cell_shifts`). The landing cell is chosen in a central window of
the mosaic (a box of :data:`WINDOW` of the mosaic's size on each side of its centre),
among the cells whose centre moves less than :data:`DRIFT` of the frame's width over the
zoom (:func:`~pipeline.camera.centre_drift`; the nearest there is, if none does), where
the match cost times ``1 + 2 distance^2`` (distance from the centre, 1 at the window's
edge) is least:

* with a target photo, the cost is the target's distance to the cell; the target is then
  fixed in that cell and the other cells are planned around it (it appears once);
* without one, the cost is the planned tile's distance to its cell, among the cells of
  the window whose tile has more detail (grey-level spread) than the window's median,
  whose source photo is on disk and at least as wide as the landing shows it (or, if
  none is, 0.8 of the widest there): the landing is shown at full resolution.

A target in the index is found by content digest (or path); another image becomes an
extra tile (features from the same tile crop the index makes), after the bank's ids.
With a chain, the landed photo, cropped to the tile's aspect, is the next image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from pipeline import photo as ph
from pipeline.cache import digest_file
from pipeline.camera import View, centre_drift, fit_view, landing_view, outer_to_inner
from pipeline.config import PhotoOptions
from pipeline.corpus import centre_crop, decode_image, jpeg_size
from pipeline.errors import ImageError
from pipeline.features import lab_grid_means
from pipeline.grid import Grid, cell_views
from pipeline.index import TileIndex
from pipeline.originals import TileBank

log = logging.getLogger(__name__)

WINDOW = 0.1  # the landing window's half size, as a share of the mosaic's rows and cols
DRIFT = 0.015  # the landed photo's centre moves at most this share of the frame's width


@dataclass(frozen=True)
class Aim:
    """What the camera asks of a landing: the ``frame`` (width, height), the view the
    zoom starts from given the mosaic's grid (``start``), tiles not to land on."""

    frame: tuple[int, int]
    start: Callable[[Grid], View]
    avoid: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Target:
    """A photo to land on: a tile of the index (``tile_id``), or an image outside it
    (``tile``, (h, w, 3) uint8 BGR, the index's crop of it); ``path`` its file."""

    path: str
    tile_id: int | None = None
    tile: np.ndarray | None = None


@dataclass
class Level:
    """One planned mosaic of a zoom.

    grid : the cells (``tile_h / tile_w`` is the cell aspect).
    ids : ndarray (rows, cols) int64, tile per cell (ids past the bank: extra tiles).
    shifts : ndarray (rows * cols, 3) int16 recolouring at full strength, or None.
    gains : ndarray (rows * cols,) float32 contrast gains, or None.
    landing : (row, col) of the cell the zoom lands on.
    start, end : the zoom's first view (the whole mosaic, or the previous landing) and
        last (the landing cell filling the frame).
    """

    grid: Grid
    ids: np.ndarray
    shifts: np.ndarray | None
    gains: np.ndarray | None
    landing: tuple[int, int]
    start: View
    end: View

    @property
    def aspect(self) -> float:
        """Cell height over width."""
        return self.grid.tile_h / self.grid.tile_w

    @property
    def extent(self) -> tuple[float, float]:
        """The mosaic's width and height in cell widths."""
        return float(self.grid.cols), self.grid.rows * self.aspect

    @property
    def landed(self) -> int:
        """Tile id of the landing cell."""
        return int(self.ids[self.landing])


def resolve_target(path: str | Path, index: TileIndex, paths: list[str]) -> Target:
    """The tile of ``path`` if the index holds it (same content or same file), else the
    image made into a tile; :class:`~pipeline.photo.ImageError` in one line for a file
    that is missing, or neither in the index nor an image."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: --target: no such file")
    digests = (index.manifest.get("sources") or {}).get("digests") or []
    digest = digest_file(p)
    if digest in digests:
        return Target(str(p), tile_id=digests.index(digest))
    real = os.path.realpath(p)
    for i, q in enumerate(paths):
        if os.path.realpath(q) == real:
            return Target(str(p), tile_id=i)
    try:
        tile = decode_image(p.read_bytes(), p.suffix.lower(), tuple(index.tiles.shape[1:3]))
    except (OSError, ValueError):
        raise ImageError(f"{p}: --target is not in the index {index.path} and not a "
                            "readable image") from None
    return Target(str(p), tile=tile)


def with_extra(index: TileIndex, tile: np.ndarray) -> TileIndex:
    """``index`` with one more tile (id ``N``) that is never a candidate (no cluster) and
    alone in its group: for fixing an outside image in a cell."""
    grid = int(index.manifest["params"]["lab_grid"])
    lab = np.vstack([np.asarray(index.lab, np.float32), lab_grid_means(tile[None], grid)])
    groups = np.asarray(index.groups, np.int64)
    return replace(index, lab=lab, labels=np.append(np.asarray(index.labels), -1),
                   groups=np.append(groups, groups.max() + 1 if len(groups) else 0))


def window_cells(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """The landing window: its flat cells (m,) int64 and their squared distance from
    the centre (m,) float64, 1 at the window's edge."""
    hy, hx = max(1.0, WINDOW * grid.rows), max(1.0, WINDOW * grid.cols)
    y, x = np.divmod(np.arange(grid.cells), grid.cols)
    dy = (y + 0.5 - grid.rows / 2) / hy
    dx = (x + 0.5 - grid.cols / 2) / hx
    inside = (np.abs(dy) <= 1) & (np.abs(dx) <= 1)
    if not inside.any():
        inside = np.ones(grid.cells, bool)
    return np.flatnonzero(inside), (dy * dy + dx * dx)[inside]


def pick_landing(cost: np.ndarray, grid: Grid, drift: np.ndarray, limit: float,
                 detail: np.ndarray | None = None, width: np.ndarray | None = None,
                 need: float = 0.0) -> int:
    """The flat cell of the window with the least ``cost`` (per cell, (cells,)) times
    ``1 + 2 distance^2``, among those whose centre ``drift`` (per cell, pixels) stays
    within ``limit`` (or the least drift there is, if none does). Then, if any are left:
    with ``detail`` (per cell), the more detailed half; with ``width`` (per cell: the
    source photo's width, 0 if missing), photos at least ``need`` wide, or 0.8 of the
    widest there is."""
    cells, dist = window_cells(grid)
    d = drift[cells]
    ok = d <= max(limit, d.min() + 1e-6)
    if detail is not None:  # a flat patch of sky is a dull place to land
        rich = ok & (detail[cells] >= np.median(detail[cells][ok]))
        ok = rich if rich.any() else ok
    if width is not None:
        w = np.where(ok, width[cells], 0)
        if (w > 0).any():
            ok &= w >= min(need, 0.8 * w.max())
        else:
            log.warning("no cell near the centre has its source photo on disk; landing on "
                        "a tile from the bank")
    score = np.where(ok, cost[cells] * (1.0 + 2.0 * dist), np.inf)
    return int(cells[np.argmin(score)])


def photo_width(path: str, tile_hw: tuple[int, int]) -> int:
    """Width of the photo at ``path`` once cropped to the tile aspect (0: unreadable),
    from its JPEG header, else from a reduced decode."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 18)
    except OSError:
        return 0
    hw = jpeg_size(head)
    if hw is None:
        img = cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_2)
        hw = None if img is None else (2 * img.shape[0], 2 * img.shape[1])
    if hw is None:
        return 0
    return int(min(hw[1], hw[0] * tile_hw[1] / tile_hw[0]))


def tile_detail(tiles: np.ndarray) -> np.ndarray:
    """Standard deviation of each tile's grey levels: (n,) float32 from (n, h, w, 3)."""
    return tiles.astype(np.float32).mean(3).reshape(len(tiles), -1).std(1)


def plan_level(image: np.ndarray, index: TileIndex, bank: TileBank, opts: PhotoOptions,
               paths: list[str], aim: Aim, target: Target | None = None) -> Level:
    """The mosaic of ``image`` (H, W, 3) uint8 BGR and its landing cell (module doc).

    ``target`` with ``tile`` must be ``bank``'s extra tile ``bank.n``.
    """
    grid = ph.photo_grid(*image.shape[:2], bank.tile_hw, opts)
    ph.check_feasible(grid, index.groups[np.asarray(index.labels) >= 0], opts)
    aspect, start = grid.tile_h / grid.tile_w, aim.start(grid)
    drift = centre_drift(start, grid.rows, grid.cols, aspect, aim.frame)
    limit = DRIFT * aim.frame[0]
    views = cell_views(image, grid)
    planning = index if target is None or target.tile is None else with_extra(
        index, target.tile)
    matcher = ph.PhotoMatcher(planning, grid, opts)
    queries = matcher.queries(views)
    if target is not None:
        tid = bank.n if target.tile is not None else int(target.tile_id)
        cell = pick_landing(((queries - matcher.lab[tid]) ** 2).sum(1), grid, drift, limit)
        ids = matcher.match(views, fixed=(cell, tid))
    else:
        ids = matcher.match(views)
        flat = ids.ravel()
        cost = ((queries - matcher.lab[flat]) ** 2).sum(1)
        near = window_cells(grid)[0]
        detail = np.zeros(grid.cells, np.float32)
        detail[near] = tile_detail(bank.take(flat[near]))
        width = np.zeros(grid.cells)
        for c in near[drift[near] <= max(limit, drift[near].min() + 1e-6)]:
            if int(flat[c]) not in aim.avoid and flat[c] < len(paths):
                width[c] = photo_width(paths[int(flat[c])], bank.tile_hw)
        need = max(aim.frame[0], aim.frame[1] / aspect)  # the landed photo's width at the end
        cell = pick_landing(cost, grid, drift, limit, detail, width, need)
    shifts, gains = _recolouring(views, ids.ravel(), bank, opts)
    landing = divmod(cell, grid.cols)
    return Level(grid, ids, shifts, gains, landing, start,
                 landing_view(start, *landing, aspect, aim.frame))


def _recolouring(views: np.ndarray, ids: np.ndarray, bank: TileBank, opts: PhotoOptions
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``mosaic photo``'s recolour shifts and gains of every cell (bank or extra tiles)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    return ph.cell_shifts(views, inverse.ravel(), bank.take(uniq), opts.recolour, opts.tone)


def plan_chain(image: np.ndarray, index: TileIndex, bank: TileBank, opts: PhotoOptions,
               paths: list[str], frame: tuple[int, int], cover: bool, chain: int = 0,
               target: Target | None = None) -> list[Level]:
    """The mosaics of a zoom: ``image`` (cropped to the ``frame`` (width, height) aspect
    when ``cover``), then ``chain`` times the landed photo's, each filling the landing
    cell of the one before. ``target`` is where the last zoom lands."""
    if cover:
        image = centre_crop(image, (frame[1], frame[0]))

    def whole(g: Grid) -> View:
        return fit_view((g.cols, g.rows * g.tile_h / g.tile_w), frame, cover)

    levels: list[Level] = []
    start = whole
    for k in range(chain + 1):
        last = k == chain
        aim = Aim(frame, start, frozenset(lv.landed for lv in levels))
        level = plan_level(image, index, bank, opts, paths, aim, target if last else None)
        levels.append(level)
        log.info("mosaic %d of %d: %dx%d cells, landing on cell (%d, %d): %s", k + 1,
                 chain + 1, level.grid.cols, level.grid.rows, level.landing[0],
                 level.landing[1], _name(level.landed, paths, target))
        if not last:
            image = centre_crop(ph.read_image(paths[level.landed]), bank.tile_hw)
            start = partial(_inside, level)
    return levels


def landing_cell(level: Level) -> tuple[float, float]:
    """Top-left corner of ``level``'s landing cell, in its cell widths."""
    row, col = level.landing
    return float(col), row * level.aspect


def _inside(outer: Level, grid: Grid) -> View:
    """The view the zoom into the mosaic ``grid`` starts from: the end of ``outer``'s,
    whose landing cell that mosaic fills."""
    return outer_to_inner(outer.end, landing_cell(outer), float(grid.cols))


def _name(tile: int, paths: list[str], target: Target | None) -> str:
    """The file of ``tile`` for a log line."""
    if tile < len(paths):
        return paths[tile]
    return target.path if target is not None else f"tile {tile}"
