"""Resampling a painted region onto the screen at any scale and sub-pixel position.

A zoom's frames show a canvas (cells painted at some whole size per cell) scaled by a
factor that changes every frame, at a position that is rarely a whole pixel. Downscaling
averages areas, so fine detail does not shimmer: the canvas is first filtered with a box
exactly as wide as one screen pixel's footprint (per axis, fractional edge weights), so
that each filtered sample is the mean of the footprint centred on it, then sampled at the
screen pixels' centres by a bilinear affine warp. (Against the exact footprint average
this is closer than OpenCV's INTER_AREA followed by a sub-pixel warp, and several times
faster at fractional ratios.) Upscaling is the bilinear warp alone. Everything outside
the canvas is black.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_MARGIN = 2  # canvas pixels kept around the footprint (and the filter's reach)


def area_warp(canvas: np.ndarray, x0: float, y0: float, rx: float, ry: float,
              size: tuple[int, int]) -> np.ndarray:
    """Resample ``canvas`` onto a ``size`` (width, height) screen.

    Screen column ``j`` covers canvas ``x`` in ``[x0 + j rx, x0 + (j + 1) rx)`` (canvas
    pixel ``k`` covers ``[k, k + 1)``), rows likewise with ``y0``, ``ry``.

    Parameters
    ----------
    canvas : ndarray (h, w, 3) uint8 (or float32), BGR.
    x0, y0 : canvas position of the screen's top-left corner, in canvas pixels.
    rx, ry : canvas pixels per screen pixel (above 1: downscaling, area-averaged).

    Returns
    -------
    ndarray (height, width, 3), the canvas's dtype.
    """
    width, height = size
    ch, cw = canvas.shape[:2]
    margin = _MARGIN + math.ceil(max(rx, ry) / 2)
    cx0 = max(0, math.floor(x0) - margin)
    cy0 = max(0, math.floor(y0) - margin)
    cx1 = min(cw, math.ceil(x0 + width * rx) + margin)
    cy1 = min(ch, math.ceil(y0 + height * ry) + margin)
    if cx1 <= cx0 or cy1 <= cy0:
        return np.zeros((height, width, 3), canvas.dtype)
    crop = canvas[cy0:cy1, cx0:cx1]
    if rx > 1 or ry > 1:
        crop = cv2.sepFilter2D(crop, -1, box_kernel(rx), box_kernel(ry),
                               borderType=cv2.BORDER_REPLICATE)
    # destination pixel centre j + 0.5 -> canvas x0 + (j + 0.5) rx -> crop pixel index
    m = np.array([[rx, 0.0, x0 + 0.5 * rx - cx0 - 0.5],
                  [0.0, ry, y0 + 0.5 * ry - cy0 - 0.5]])
    return cv2.warpAffine(crop, m, (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def box_kernel(width: float) -> np.ndarray:
    """Taps of a box ``width`` pixels wide centred on a pixel (the end taps get the
    share of their pixel it covers), summing to 1: (2k + 1,) float32. 1 or less: [1]."""
    if width <= 1:
        return np.ones(1, np.float32)
    half = width / 2
    k = math.ceil(half - 0.5)
    offsets = np.arange(-k, k + 1, dtype=np.float64)
    taps = np.clip(np.minimum(offsets + 0.5, half) - np.maximum(offsets - 0.5, -half), 0, 1)
    return (taps / taps.sum()).astype(np.float32)


def coverage(start: float, step: float, count: int, lo: float, hi: float) -> np.ndarray:
    """Share of each of ``count`` screen pixels (pixel ``j`` covers ``[start + j step,
    start + (j + 1) step)``) that lies inside ``[lo, hi)``: (count,) float32 in 0..1."""
    left = start + np.arange(count) * step
    inside = np.minimum(left + step, hi) - np.maximum(left, lo)
    return np.clip(inside / step, 0.0, 1.0).astype(np.float32)


def lay_over(base: np.ndarray, top: np.ndarray, weight: float,
             mask: np.ndarray | None = None) -> np.ndarray:
    """``base`` with ``top`` laid over it at ``weight`` (times ``mask`` (H, W) float32 in
    0..1 where given): (H, W, 3) uint8, rounded."""
    if mask is None:
        return cv2.addWeighted(base, 1.0 - weight, top, weight, 0.0)
    w = (mask * np.float32(weight))[:, :, None]
    out = base.astype(np.float32)
    out += (top.astype(np.float32) - out) * w
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
