"""Frames and cells: the mosaic grid, its size limits, each cell's view of a frame, and
the windows of cells within a radius.

A source frame of H x W pixels, scaled up by ``scale``, is cut into cells of the tile
size; the output is rounded up to whole cells, as in the reference:
``rows = ceil(H * scale / tile_h)``, ``cols = ceil(W * scale / tile_w)``.
Each cell covers the source area ``[r * H / rows, (r + 1) * H / rows) x [c * W / cols,
(c + 1) * W / cols)`` (the activity mask, :mod:`pipeline.activity`, measures there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.errors import ConfigError

CELL_SAMPLE = 8  # cell features are computed on a CELL_SAMPLE x CELL_SAMPLE view of each cell
# the largest output frame: H.264's largest (level 6.2, 139,264 macroblocks, such as
# 8192x4352); a painter and its encoder hold several gigabytes at that size already
MAX_FRAME_PIXELS = 139_264 * 256
MIN_SOURCE_SIDE = 16  # pixels: smaller sources make no mosaic (and confuse OpenCV's ops)


@dataclass(frozen=True)
class Grid:
    """The cell layout of one video: ``rows x cols`` cells of ``tile_h x tile_w`` pixels."""

    src_h: int
    src_w: int
    rows: int
    cols: int
    tile_h: int
    tile_w: int

    @property
    def out_h(self) -> int:
        """Output frame height in pixels."""
        return self.rows * self.tile_h

    @property
    def out_w(self) -> int:
        """Output frame width in pixels."""
        return self.cols * self.tile_w

    @property
    def cells(self) -> int:
        """Number of cells per frame."""
        return self.rows * self.cols


def make_grid(src_h: int, src_w: int, tile_hw: tuple[int, int], scale: float,
              max_w: int = 0, max_h: int = 0) -> Grid:
    """Lay out the cells for a ``src_h x src_w`` source at ``scale``.

    ``max_w``/``max_h`` (0 = no cap) lower the scale so that the output fits, keeping
    whole cells; the cap must leave at least one cell.
    """
    th, tw = tile_hw
    rows, cols = math.ceil(src_h * scale / th), math.ceil(src_w * scale / tw)
    if max_w and cols * tw > max_w:
        cols = max_w // tw
        rows = max(1, round(cols * tw * src_h / src_w / th))
    if max_h and rows * th > max_h:
        rows = max_h // th
        cols = max(1, round(rows * th * src_w / src_h / tw))
    if rows < 1 or cols < 1:
        raise ConfigError(f"render.max_width/max_height: too small for {tw}x{th} tiles")
    return Grid(src_h, src_w, rows, cols, th, tw)


def check_frame_size(grid: Grid) -> None:
    """Refuse frames over :data:`MAX_FRAME_PIXELS` before any work, in one line."""
    if grid.out_w * grid.out_h > MAX_FRAME_PIXELS:
        raise ConfigError(f"render: {grid.out_w}x{grid.out_h} output frames are over the "
                          f"largest H.264 frame ({MAX_FRAME_PIXELS / 1e6:.1f} megapixels, "
                          "level 6.2); lower --scale or set render.max_width")


def check_source_size(width: int, height: int, name: str) -> None:
    """Refuse a source of under :data:`MIN_SOURCE_SIDE` pixels a side, in one line."""
    if width < MIN_SOURCE_SIDE or height < MIN_SOURCE_SIDE:
        raise ConfigError(f"{name}: {width}x{height} frames are too small to make a mosaic "
                          f"of (at least {MIN_SOURCE_SIDE}x{MIN_SOURCE_SIDE} pixels)")


def cell_views(frame_bgr: np.ndarray, grid: Grid, sample: int = CELL_SAMPLE) -> np.ndarray:
    """Each cell's source area resampled to ``sample x sample`` pixels (INTER_AREA).

    Returns
    -------
    ndarray of shape (rows * cols, sample, sample, 3), uint8, cells in row-major order.
    """
    small = cv2.resize(frame_bgr, (grid.cols * sample, grid.rows * sample),
                       interpolation=cv2.INTER_AREA)
    blocks = small.reshape(grid.rows, sample, grid.cols, sample, 3).swapaxes(1, 2)
    return blocks.reshape(grid.cells, sample, sample, 3)


def pair_windows(rows: int, cols: int, radius: int) -> list[tuple]:
    """Every offset within ``radius`` (Chebyshev), once: pairs of (slice, slice) windows
    of a (rows, cols) grid, the second shifted against the first (its cell comes later
    in row-major order)."""
    out = []
    for dy in range(radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy == 0 and dx <= 0) or dy >= rows or abs(dx) >= cols:
                continue
            out.append(((slice(0, rows - dy), slice(max(0, -dx), cols - max(0, dx))),
                        (slice(dy, rows), slice(max(0, dx), cols - max(0, -dx)))))
    return out
