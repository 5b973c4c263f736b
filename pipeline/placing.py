"""Tiles put on a canvas, compiled (numba): turned, recoloured and written in one pass.

:meth:`pipeline.compose.Canvas.place` gathers a frame's tiles from the bank, turns them,
recolours them (``clip(tile + shift, 0, 255)``, :func:`pipeline.tone.recolour`) and
scatters them into the canvas's cells: four passes over every placed pixel, each through
a (k, h, w, 3) temporary. :func:`place_tiles` does it pixel row by pixel row, straight
from the bank into the canvas, and measures each cell's mean absolute change on the way
(the scores' churn) when asked: the same bits as the numpy path (tested), in about
half its CPU on a busy frame at 2560x1920.

It covers what a video's painter places: tiles as they are or mirrored (the default
``render.orientations``), recoloured or not, without a contrast gain; the numpy path
places the rest (flips and quarter turns, ``render.tone``).

Compiled on first use and cached next to this file. Loading numba costs a process about
half a CPU-second, which a painter that also plans has paid for its search
(:mod:`pipeline.scan`); :func:`pipeline.compose.compiled_placing` says when to load it.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def place_tiles(cells, rows, mirrored, shift, bank, image, cols, measure, change
                ):  # pragma: no cover - compiled
    """Put tile ``bank[rows[i]]``, mirrored where ``mirrored[i]``, plus ``shift[i]``
    (saturating at 0 and 255), into flat cell ``cells[i]`` of ``image``.

    Parameters
    ----------
    cells : ndarray (k,), int64, row-major cell indices (each at most once).
    rows : ndarray (k,), int64, rows of ``bank``.
    mirrored : ndarray (k,), bool.
    shift : ndarray (k, 3), int16, added to each tile's pixels (BGR).
    bank : ndarray (M, h, w, 3), uint8.
    image : ndarray (rows * h, cols * w, 3), uint8, C-contiguous: written in place.
    cols : cells per row of the canvas.
    measure : whether to fill ``change``.
    change : ndarray (k,), float32: each cell's mean absolute pixel change (written when
        ``measure``).
    """
    h, w = bank.shape[1], bank.shape[2]
    w3 = w * 3
    flat = image.reshape(image.shape[0], image.shape[1] * 3)
    add = np.empty(w3, np.int32)  # the shift along a pixel row
    line = np.empty(w3, np.uint8)  # a mirrored pixel row
    for i in range(cells.shape[0]):
        r, c = cells[i] // cols, cells[i] % cols
        tile = bank[rows[i]].reshape(h, w3)
        for x in range(w):
            add[3 * x], add[3 * x + 1], add[3 * x + 2] = shift[i, 0], shift[i, 1], shift[i, 2]
        total = 0
        for y in range(h):
            src = tile[y]
            if mirrored[i]:
                for x in range(w):
                    s = 3 * (w - 1 - x)
                    line[3 * x], line[3 * x + 1], line[3 * x + 2] = src[s], src[s + 1], \
                        src[s + 2]
                src = line
            dst = flat[r * h + y, c * w3:(c + 1) * w3]
            if measure:
                for j in range(w3):
                    v = min(max(np.int32(src[j]) + add[j], 0), 255)
                    total += abs(np.int32(dst[j]) - v)
                    dst[j] = v
            else:
                for j in range(w3):
                    dst[j] = min(max(np.int32(src[j]) + add[j], 0), 255)
        if measure:  # exact: the sum is an integer, as numpy's float32 sum of it is
            change[i] = np.float32(total) / np.float32(h * w3)


def warm() -> None:
    """Load the kernel's machine code now (from the cache; compiled on the first run
    after an install or a change)."""
    one = np.zeros(1, np.int64)
    place_tiles(one, one, np.zeros(1, np.bool_), np.zeros((1, 3), np.int16),
                np.zeros((1, 1, 1, 3), np.uint8), np.zeros((1, 1, 3), np.uint8), 1, True,
                np.zeros(1, np.float32))
