"""Tile and cell descriptors: pure functions from pixels to float32 feature rows.

Two features are computed for every tile (and, at render time, for every cell):

* ``hist``: the reference's joint colour histogram, ``bins**3`` bins over BGR with the
  uniform ranges of ``cv2.calcHist([img], [0, 1, 2], None, [b, b, b], [0, 256] * 3)``,
  normalised to sum to 1 (the reference divides by ``img.size``, i.e. sums to 1/3; the
  scale does not change k-means partitions or cosine distances).
* ``lab``: the mean CIELAB colour (L in 0..100, a and b in their natural units) of each
  cell of a ``grid x grid`` sub-grid of the tile, flattened row-major as
  ``(row, col, L/a/b)``: a small spatial perceptual descriptor.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

FEATURES: dict[str, Callable[..., np.ndarray]] = {}


def _register(name: str) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        FEATURES[name] = fn
        return fn

    return wrap


def _check_batch(tiles_bgr: np.ndarray) -> None:
    if tiles_bgr.ndim != 4 or tiles_bgr.shape[-1] != 3 or tiles_bgr.dtype != np.uint8:
        raise ValueError(
            f"'tiles_bgr' must be uint8 of shape (N, h, w, 3), got {tiles_bgr.dtype} "
            f"{tiles_bgr.shape}"
        )


@_register("hist")
def colour_histogram(tiles_bgr: np.ndarray, bins: int = 5) -> np.ndarray:
    """Joint BGR histograms of a batch of tiles.

    Parameters
    ----------
    tiles_bgr : ndarray of shape (N, h, w, 3), uint8, BGR.
    bins : bins per channel.

    Returns
    -------
    ndarray of shape (N, bins**3), float32; each row sums to 1. Bin ``(b, g, r)`` is at
    index ``b * bins**2 + g * bins + r``, the order of ``calcHist(...).ravel()``.
    """
    _check_batch(tiles_bgr)
    n = tiles_bgr.shape[0]
    # calcHist's uniform bin of value v is floor(v * bins / 256).
    lut = ((np.arange(256, dtype=np.int32) * bins) // 256).astype(np.int32)
    q = lut[tiles_bgr.reshape(n, -1, 3)]
    idx = q[..., 0] * (bins * bins) + q[..., 1] * bins + q[..., 2]
    idx += (np.arange(n, dtype=np.int32) * bins**3)[:, None]
    counts = np.bincount(idx.ravel(), minlength=n * bins**3).reshape(n, bins**3)
    pixels = tiles_bgr.shape[1] * tiles_bgr.shape[2]
    return (counts / np.float32(pixels)).astype(np.float32)


def grid_edges(length: int, grid: int) -> np.ndarray:
    """Start offsets of ``grid`` near-equal parts of ``length`` pixels, shape (grid,), int."""
    return (np.arange(grid) * length) // grid


@_register("lab")
def lab_grid_means(tiles_bgr: np.ndarray, grid: int = 4) -> np.ndarray:
    """Mean CIELAB colour of each cell of a ``grid x grid`` partition of every tile.

    Parameters
    ----------
    tiles_bgr : ndarray of shape (N, h, w, 3), uint8, BGR; ``h, w >= grid``.
    grid : sub-grid size; uneven sizes split the tile into near-equal parts.

    Returns
    -------
    ndarray of shape (N, grid * grid * 3), float32: (L, a, b) per sub-cell, row-major.
    """
    _check_batch(tiles_bgr)
    n, h, w, _ = tiles_bgr.shape
    if h < grid or w < grid:
        raise ValueError(f"tiles of {w}x{h} are smaller than the {grid}x{grid} grid")
    lab = bgr_to_lab(tiles_bgr)
    rows, cols = grid_edges(h, grid), grid_edges(w, grid)
    sums = np.add.reduceat(np.add.reduceat(lab, rows, axis=1), cols, axis=2)
    counts = np.diff(np.append(rows, h))[:, None] * np.diff(np.append(cols, w))[None, :]
    means = sums / counts[None, :, :, None].astype(np.float32)
    return means.reshape(n, grid * grid * 3).astype(np.float32)


def bgr_to_lab(images_bgr: np.ndarray) -> np.ndarray:
    """Convert uint8 BGR pixels of any leading shape (..., 3) to float32 CIELAB.

    L is in 0..100, a and b in their natural units (OpenCV's float conversion, D65).
    """
    shape = images_bgr.shape
    flat = images_bgr.reshape(-1, 1, 3).astype(np.float32) * np.float32(1 / 255)
    return cv2.cvtColor(flat, cv2.COLOR_BGR2Lab).reshape(shape)
