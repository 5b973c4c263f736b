"""Tone: recolouring and contrast, shared by the video's plan and painters and by stills.

A placed tile is corrected towards its cell in two ways:

* **recolouring**: the plan stores each placed tile's *colour difference*, cell mean
  minus tile mean (BGR), in 1/:data:`DIFF_SCALE` levels (:func:`colour_diffs`); a painter
  adds ``recolour`` times it to the tile's pixels (:func:`shifts`, :func:`recolour`);
* **contrast**: the plan stores each placed tile's *contrast ratio*, the spread the cell
  wants over the tile's own, in 1/:data:`RATIO_SCALE` (:func:`contrast_ratios`); a painter
  scales the tile's contrast by it to the power ``tone`` (:func:`gains`, :func:`retone`),
  kept within :data:`GAIN_RANGE`.

:func:`adjust` applies both to a batch of tiles in place.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.features import block_means, luma
from pipeline.visibility import orient_grids

DIFF_SCALE = 16  # recolour differences are stored in 1/16 of a colour level, int16
RATIO_SCALE = 64  # contrast ratios (cell over tile) are stored in 1/64, uint8 (0..3.98)
# contrast gains are kept within these: a photo keeps (nearly) its own contrast (a gain
# under 1 fades it towards a flat patch, which raises SSIM and hides the photo)
GAIN_RANGE = (0.8, 1.25)
GAIN_STEP = 64  # gains are quantised to 1/64
_SSIM_C2 = (0.03 * 255) ** 2  # SSIM's contrast constant, in squared levels


def mean_colours(tiles_bgr: np.ndarray) -> np.ndarray:
    """Mean BGR colour (0..255) of tiles or cells (k, h, w, 3) uint8: (k, 3) float32 (area
    means, as the plan measures them)."""
    return block_means(tiles_bgr, 1).reshape(-1, 3) * 255


def colour_diffs(cells_bgr: np.ndarray, tile_means: np.ndarray) -> np.ndarray:
    """Recolour differences, cell mean minus tile mean, (k, 3) int16 in 1/:data:`DIFF_SCALE`
    levels: ``cells_bgr`` (k, h, w, 3) uint8, ``tile_means`` (k, 3) as
    :func:`mean_colours` gives them."""
    return diffs_of_means(exact_means(cells_bgr), tile_means)


def diffs_of_means(cell_means: np.ndarray, tile_means: np.ndarray) -> np.ndarray:
    """:func:`colour_diffs` from the cells' exact means (k, 3) float64
    (:func:`exact_means`) and the tiles' (k, 3)."""
    diffs = np.rint((cell_means - tile_means) * DIFF_SCALE)
    return np.clip(diffs, -255 * DIFF_SCALE, 255 * DIFF_SCALE).astype(np.int16)


def luma_grid(cells_bgr: np.ndarray) -> np.ndarray:
    """Each cell's or tile's 4x4 sub-grid of luma (0..255), as the eye sees it from a
    distance: ``cells_bgr`` (k, h, w, 3) uint8 -> (k, 16) float32."""
    if len(cells_bgr) == 0:
        return np.zeros((0, 16), np.float32)
    return luma(block_means(cells_bgr, 4).reshape(len(cells_bgr), 16, 3))


def contrast_ratios(cell_grid: np.ndarray, tile_grid: np.ndarray, orients: np.ndarray
                    ) -> np.ndarray:
    """The contrast gain that makes each placed tile look most like its cell from a
    distance, (k,) uint8 in 1/:data:`RATIO_SCALE` (0..3.98).

    With the cell's 4x4 luma spread a and its correlation rho with the tile's (in its
    orientation ``orients``, (k,) codes or bools), the tile's spread x that maximises
    SSIM's contrast-structure term ``(2 a x rho + C2) / (a^2 + x^2 + C2)`` is the positive
    root of ``a rho x^2 + C2 x - a rho (a^2 + C2) = 0`` (x = a when the two correlate
    perfectly, smaller as they correlate less, 0 when they do not); the gain is x over the
    tile's spread. ``cell_grid``, ``tile_grid`` (k, 16) float32 luma (:func:`luma_grid`).
    """
    t = orient_grids(tile_grid.reshape(-1, 4, 4), orients).reshape(-1, 16)
    q = cell_grid - cell_grid.mean(1, keepdims=True)
    t = t - t.mean(1, keepdims=True)
    a = np.sqrt((q * q).mean(1))
    b = np.sqrt((t * t).mean(1))
    rho = (q * t).mean(1) / np.maximum(a * b, 1e-6)
    ar = a * np.maximum(rho, 0)
    disc = _SSIM_C2 ** 2 + 4 * ar * ar * (a * a + _SSIM_C2)
    x = np.where(ar > 1e-6, (np.sqrt(disc) - _SSIM_C2) / np.maximum(2 * ar, 1e-6), 0)
    ratio = x / np.maximum(b, 0.5)
    return np.clip(np.rint(ratio * RATIO_SCALE), 0, 255).astype(np.uint8)


def step_diffs(old: np.ndarray, new: np.ndarray, levels: float, strength: float
               ) -> np.ndarray:
    """Recolour differences (k, 3) int16 moved from ``old`` towards ``new`` (both (k, 3)
    int16, 1/:data:`DIFF_SCALE` levels) by at most ``levels`` a channel once painted at
    ``strength`` (> 0; a whole ``levels`` bounds the painted change, :func:`shifts`'
    rounding included)."""
    limit = int(levels * DIFF_SCALE / strength)
    old = old.astype(np.int32)
    return (old + np.clip(new.astype(np.int32) - old, -limit, limit)).astype(np.int16)


def shifts(diffs: np.ndarray, strength: float) -> np.ndarray | None:
    """Recolour shifts (int16) from plan differences (1/16 levels) at ``strength``; None
    for 0."""
    if strength <= 0:
        return None
    return np.rint(diffs * np.float32(strength / DIFF_SCALE)).astype(np.int16)


def gains(ratios: np.ndarray, tone: float) -> np.ndarray | None:
    """Contrast gains, float32 like ``ratios``, from the plan's contrast ratios (uint8 in
    1/:data:`RATIO_SCALE`) at strength ``tone`` (0: none, 1: the cell's contrast), kept
    within :data:`GAIN_RANGE`; None when ``tone`` is 0."""
    if tone <= 0:
        return None
    g = np.power(ratios.astype(np.float32) / RATIO_SCALE, np.float32(tone))
    g = np.rint(g * GAIN_STEP) / GAIN_STEP
    return np.clip(g, *GAIN_RANGE).astype(np.float32)


def exact_means(tiles: np.ndarray) -> np.ndarray:
    """Exact mean colour of each tile or cell (k, h, w, 3) uint8: (k, 3) float64, the
    same values as numpy's mean (OpenCV's integer sums, 8-17x faster than numpy's
    widening sum)."""
    k, h, w = tiles.shape[:3]
    if k == 0:
        return np.zeros((0, 3), np.float64)
    flat = np.ascontiguousarray(tiles).reshape(k, h * w, 3)
    sums = cv2.reduce(flat, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).reshape(k, 3)
    return sums / np.float64(h * w)


def tile_means(tiles: np.ndarray) -> np.ndarray:
    """Exact mean colour of each tile (k, h, w, 3) uint8: (k, 3) float32
    (:func:`exact_means`)."""
    return exact_means(tiles).astype(np.float32)


def adjust(tiles: np.ndarray, shift: np.ndarray | None, gain: np.ndarray | None,
           means: np.ndarray | None = None) -> None:
    """Recolour tiles (k, h, w, 3) uint8 in place: contrast ``gain`` (k,) float32 where it
    is not 1 (:func:`retone`), then ``shift`` (k, 3) int16 (:func:`recolour`). ``means``
    (k, 3) float32: the tiles' mean colours if known (else measured)."""
    if gain is None or not (scaled := gain != 1).any():
        if shift is not None:
            recolour(tiles, shift)
        return
    if scaled.all():
        retone(tiles, gain, shift, means)
        return
    plain = ~scaled
    if shift is not None:
        part = tiles[plain]
        tiles[plain] = recolour(part, shift[plain])
    part = tiles[scaled]
    tiles[scaled] = retone(part, gain[scaled], None if shift is None else shift[scaled],
                           None if means is None else means[scaled])


def retone(tiles: np.ndarray, gain: np.ndarray, shift: np.ndarray | None,
           means: np.ndarray | None = None) -> np.ndarray:
    """Scale each tile's contrast around its mean colour, then shift it, in place.

    ``p' = round(g (p - m) + m + s)``, clipped to 0..255, per tile: ``tiles`` (k, h, w,
    3) uint8, ``gain`` g (k,) float32, tile means m exact from integer sums, ``shift`` s
    (k, 3) int16 or None; ``means`` (k, 3) float32 as :func:`tile_means` gives them, if
    known. Exactly :func:`recolour` where g is 1.
    """
    k = len(tiles)
    flat = tiles.reshape(k, -1, 3)
    if means is None:
        means = tile_means(tiles)
    g = gain.astype(np.float32)[:, None]
    offset = means * (1 - g) + np.float32(0.5)
    if shift is not None:
        offset += shift.astype(np.float32)
    work = flat.astype(np.float32)
    work *= g[:, :, None]
    for c in range(3):  # channel by channel: 3x faster than broadcasting (k, 1, 3)
        work[:, :, c] += offset[:, c, None]
    np.clip(work, 0, 255, out=work)
    flat[:] = work  # truncation after + 0.5: rounding
    return tiles


def recolour(tiles: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Add ``shift`` (k, 3) int to tiles (k, h, w, 3) uint8 in place, clipped to 0..255.

    OpenCV's saturating uint8 add (of the positive part) and subtract (of the negative
    part) give exactly ``clip(tile + shift, 0, 255)`` without widening the pixels; each
    tile's shift is spread over its pixels by a nearest-neighbour resize (3x faster than
    ``np.tile``).
    """
    k, h, w, _ = tiles.shape
    if k == 0:
        return tiles
    flat = tiles.reshape(k, h * w, 3)
    shift = shift.astype(np.int16)

    def spread(part: np.ndarray) -> np.ndarray:  # (k, 3) -> (k, h * w, 3) uint8
        return cv2.resize(np.clip(part, 0, 255).astype(np.uint8)[:, None, :], (h * w, k),
                          interpolation=cv2.INTER_NEAREST)

    cv2.add(flat, spread(shift), dst=flat)
    cv2.subtract(flat, spread(-shift), dst=flat)
    return tiles
