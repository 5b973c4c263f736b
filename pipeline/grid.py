"""Frames and cells: the mosaic grid, the activity mask, and per-cell features.

A source frame of H x W pixels, scaled up by ``scale``, is cut into cells of the tile
size; the output is rounded up to whole cells, as in the reference:
``rows = ceil(H * scale / tile_h)``, ``cols = ceil(W * scale / tile_w)``.

Activity follows the reference: a pixel has *changed* when the L2 norm of its BGR
difference from a reference image exceeds a threshold (16); the reference image takes
the new value at changed pixels only. A cell is *active* when more than half of its
area changed. This is computed at source resolution; each cell covers the source area
``[r * H / rows, (r + 1) * H / rows) x [c * W / cols, (c + 1) * W / cols)``, and the
changed fraction is its area average (INTER_AREA), as the reference's upscaled mask is.
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


class ActivityTracker:
    """The reference's frame-difference activity mask, one call per frame.

    The first frame after :meth:`reset` marks every cell active.
    """

    def __init__(self, grid: Grid, threshold: float = 16.0, fraction: float = 0.5) -> None:
        self.grid, self.fraction = grid, fraction
        self._threshold_sq = np.float32(threshold * threshold)
        self._ones = np.ones((1, 3), np.float32)
        self._ref: np.ndarray | None = None
        self._buffers: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        """Forget the reference image: the next frame is all active."""
        self._ref = None

    @property
    def reference(self) -> np.ndarray | None:
        """The reference image (H, W, 3) uint8 the next frame is compared with, or None."""
        return self._ref

    def restore(self, reference: np.ndarray) -> None:
        """Continue from a saved :attr:`reference` (a copy is kept)."""
        self._ref = np.array(reference, dtype=np.uint8, copy=True)
        self._allocate(self._ref)

    def _allocate(self, frame_bgr: np.ndarray) -> None:
        h, w = frame_bgr.shape[:2]
        self._buffers = {"diff": np.empty_like(frame_bgr),
                         "sq": np.empty((h, w, 3), np.float32),
                         "dist": np.empty((h, w), np.float32),
                         "changed": np.empty((h, w), np.uint8),
                         "share": np.empty((h, w), np.float32)}

    def update(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Mark the active cells of ``frame_bgr`` (H, W, 3) uint8.

        Returns
        -------
        ndarray of shape (rows, cols), bool.
        """
        g = self.grid
        if self._ref is None:
            self._ref = frame_bgr.copy()
            self._allocate(frame_bgr)
            return np.ones((g.rows, g.cols), dtype=bool)
        b = self._buffers
        cv2.absdiff(frame_bgr, self._ref, dst=b["diff"])
        cv2.multiply(b["diff"], b["diff"], dst=b["sq"], dtype=cv2.CV_32F)
        cv2.transform(b["sq"], self._ones, dst=b["dist"])
        cv2.compare(b["dist"], float(self._threshold_sq), cv2.CMP_GT, dst=b["changed"])
        cv2.copyTo(frame_bgr, b["changed"], self._ref)  # the reference takes changed pixels
        np.copyto(b["share"], b["changed"])  # 0/255 as float: exact area averages
        share = cv2.resize(b["share"], (g.cols, g.rows), interpolation=cv2.INTER_AREA)
        return share > self.fraction * 255


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
