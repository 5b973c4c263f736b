"""Tile and cell descriptors: pure functions from pixels to float32 feature rows.

Two features are computed for every tile (and, at render time, for every cell):

* ``hist``: the reference's joint colour histogram, ``bins**3`` bins over BGR with the
  uniform ranges of ``cv2.calcHist([img], [0, 1, 2], None, [b, b, b], [0, 256] * 3)``,
  normalised to sum to 1 (the reference divides by ``img.size``, i.e. sums to 1/3; the
  scale does not change k-means partitions or cosine distances).
* ``lab``: the CIELAB colour (L in 0..100, a and b in their natural units) of the mean
  colour of each cell of a ``grid x grid`` sub-grid of the tile, flattened row-major as
  ``(row, col, L/a/b)``: a small spatial perceptual descriptor.

In a process that has loaded numba (a render worker), the cube roots of CIELAB and the
sub-grid sums run compiled (:mod:`pipeline.features_compiled`), each once it has given
numpy's or OpenCV's bits on a check: the same values, about a quarter of the time.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

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
    bins : bins per channel, at most 6 (so that a bin index fits in one byte).

    Returns
    -------
    ndarray of shape (N, bins**3), float32; each row sums to 1. Bin ``(b, g, r)`` is at
    index ``b * bins**2 + g * bins + r``, the order of ``calcHist(...).ravel()``.
    """
    _check_batch(tiles_bgr)
    if not 2 <= bins <= 6:
        raise ValueError(f"'bins' must be between 2 and 6, got {bins}")
    n, h, w, _ = tiles_bgr.shape
    if n == 0:
        return np.zeros((0, bins**3), np.float32)
    # calcHist's uniform bin of value v is floor(v * bins / 256); one 3-channel LUT gives
    # each channel's share of the joint index, a channel sum gives the index itself.
    level = (np.arange(256) * bins) // 256
    lut = np.stack([level * bins * bins, level * bins, level], axis=-1).astype(np.uint8)
    shares = cv2.LUT(tiles_bgr.reshape(n * h, w, 3), lut.reshape(1, 256, 3))
    idx = cv2.transform(shares, np.ones((1, 3), np.float32)).reshape(n, h * w)
    flat = idx.astype(np.int64) + (np.arange(n, dtype=np.int64) * bins**3)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n * bins**3).reshape(n, bins**3)
    return (counts / np.float32(h * w)).astype(np.float32)


AREA_SCALE = np.float32(1 / (255 * 256))  # area_means's 16-bit values -> 0..1


def area_means(image_bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaged colours of ``image_bgr`` (H, W, 3) uint8 resampled to ``height x width``.

    INTER_AREA on 16-bit copies (values x 256) keeps 1/256-level precision.

    Returns
    -------
    ndarray of shape (height, width, 3), float32, in 0..1.
    """
    wide = np.left_shift(image_bgr, 8, dtype=np.uint16)  # one pass (astype, then << is 2)
    small = cv2.resize(wide, (width, height), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) * AREA_SCALE


def means_of_sums(sums: np.ndarray, pixels: int) -> np.ndarray:
    """:func:`area_means`'s values from the exact integer sums (any shape) of blocks of
    ``pixels`` pixels, a power of two up to 256: the mean of 256 x each pixel is then an
    exact integer, 256 / pixels x the sum. float32 like ``sums``."""
    return (sums * (256 // pixels)).astype(np.float32) * AREA_SCALE


def block_means(tiles_bgr: np.ndarray, grid: int) -> np.ndarray:
    """Mean colour of each cell of a ``grid x grid`` partition of every tile.

    Uneven sizes are split with INTER_AREA's fractional pixel weights. Where numba is
    loaded and a cell has a power-of-two number of pixels, the cells' sums are added up
    compiled (:func:`pipeline.features_compiled.block_means_of`): the same bits.

    Parameters
    ----------
    tiles_bgr : ndarray of shape (N, h, w, 3), uint8.

    Returns
    -------
    ndarray of shape (N, grid, grid, 3), float32, in 0..1.
    """
    n, h, w, _ = tiles_bgr.shape
    if h % grid == 0 and w % grid == 0:  # stack the tiles: no cell straddles two tiles
        pixels = (h // grid) * (w // grid)
        if 256 % pixels == 0 and tiles_bgr.dtype == np.uint8 and \
                (kernels := _kernels("sums")) is not None:
            # area_means's values: the mean of 256 x each pixel, exact (256 / pixels an
            # integer), then scaled
            means = np.empty((n, grid, grid, 3), np.float32)
            kernels.block_means_of(np.ascontiguousarray(tiles_bgr), grid,
                                   np.int32(256 // pixels), AREA_SCALE, means)
            return means
        return area_means(tiles_bgr.reshape(n * h, w, 3), grid, n * grid).reshape(
            n, grid, grid, 3)
    return np.stack([area_means(t, grid, grid) for t in tiles_bgr])


@_register("lab")
def lab_grid_means(tiles_bgr: np.ndarray, grid: int = 4) -> np.ndarray:
    """CIELAB colour of the mean colour of each cell of a ``grid x grid`` sub-grid.

    This is what the eye sees of each part of a tile from a distance, and it is the
    quantity the fidelity metrics compare (cell mean colour, in Lab).

    Parameters
    ----------
    tiles_bgr : ndarray of shape (N, h, w, 3), uint8, BGR; ``h, w >= grid``.
    grid : sub-grid size; uneven sizes split the tile into near-equal parts.

    Returns
    -------
    ndarray of shape (N, grid * grid * 3), float32: (L, a, b) per sub-cell, row-major;
    L in 0..100, a and b in their natural units (D65).
    """
    _check_batch(tiles_bgr)
    n, h, w, _ = tiles_bgr.shape
    if h < grid or w < grid:
        raise ValueError(f"tiles of {w}x{h} are smaller than the {grid}x{grid} grid")
    means = block_means(tiles_bgr, grid)
    return srgb_to_lab(means).reshape(n, grid * grid * 3)


def luma(bgr01: np.ndarray) -> np.ndarray:
    """Luma (Rec. 601, 0..255) of BGR colours in 0..1, any leading shape (..., 3): float32."""
    return (bgr01 @ np.array([0.114, 0.587, 0.299], np.float32)) * 255.0


# sRGB (IEC 61966-2-1) linear RGB -> XYZ, rows X, Y, Z; columns R, G, B; D65 white.
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])
# BGR (reversed columns) straight to white-normalised XYZ, transposed for ``colours @ M``
_BGR_TO_XYZN = (_RGB_TO_XYZ / _WHITE[:, None])[:, ::-1].T.astype(np.float32)
_LUT_STEPS = 65535  # sRGB decoding through a table: < 0.01 error in L
_LINEAR = np.where((v := np.arange(_LUT_STEPS + 1) / _LUT_STEPS) <= 0.04045, v / 12.92,
                   ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


_flat_agrees: bool | None = None  # whether one product gives the stacked products' bits


def _to_xyz(linear: np.ndarray) -> np.ndarray:
    """``linear @ _BGR_TO_XYZN`` for linear colours (..., 3) float32, with the bits of
    that stacked product (one small matrix product per row of the next-to-last axis),
    computed as one product over all colours where this process's BLAS gives the same
    bits (checked once): six times faster on (n, 4, 4, 3). A next-to-last axis of 1
    stays stacked (numpy takes another path for it, with other bits)."""
    global _flat_agrees
    if linear.ndim < 3 or linear.shape[-2] < 2:
        return linear @ _BGR_TO_XYZN
    if _flat_agrees is None:
        sample = _LINEAR[np.random.default_rng(0).integers(0, _LUT_STEPS + 1, (
            64, 16, 3))]
        flat = (sample.reshape(-1, 3) @ _BGR_TO_XYZN).reshape(sample.shape)
        _flat_agrees = all(np.array_equal((sample[:, :m] @ _BGR_TO_XYZN).view(np.int32),
                                          flat[:, :m].view(np.int32)) for m in (2, 3, 4, 16))
    if not _flat_agrees:
        return linear @ _BGR_TO_XYZN
    return (linear.reshape(-1, 3) @ _BGR_TO_XYZN).reshape(linear.shape)


_COMPILED_LAB_MIN = 48  # values (16 colours) from which the compiled passes are taken


def srgb_to_lab(bgr01: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours given as BGR in 0..1, any leading shape (..., 3).

    The textbook formulas (OpenCV's own float conversion is about 1% off in L), with the
    sRGB decoding through a 65,536-step table: within 0.01 of the exact values. Where
    numba is loaded and its passes give these bits here (checked once a process: the
    matrix product as this BLAS sums it), in two compiled passes around the cube roots
    (:func:`pipeline.features_compiled.linear_xyz`, :func:`~pipeline.features_compiled.
    lab_of`) where numpy makes about a dozen.

    Returns
    -------
    ndarray like ``bgr01``, float32: L in 0..100, a and b in their natural units.
    """
    c = np.asarray(bgr01, dtype=np.float32)
    if c.ndim >= 3 and c.shape[-2] >= 2 and c.size >= _COMPILED_LAB_MIN and \
            (kernels := _kernels("lab")) is not None:  # (the flat product's bits)
        flat = np.ascontiguousarray(c).reshape(-1, 3)
        xyz = np.empty_like(flat)
        kernels.linear_xyz(flat, _LINEAR, _BGR_TO_XYZN, xyz)
        lab = np.empty_like(flat)
        kernels.lab_of(xyz, cbrt(xyz), lab)
        return lab.reshape(c.shape)
    idx = np.clip((c * _LUT_STEPS + 0.5).astype(np.int32), 0, _LUT_STEPS)
    xyz = _to_xyz(_LINEAR[idx])
    eps, kappa = np.float32(216 / 24389), np.float32(24389 / 27)
    f = cbrt(xyz)  # (numpy's cbrt's bits, compiled in a worker)
    if (low := xyz <= eps).any():  # the linear segment, where it applies
        f[low] = (kappa * xyz[low] + 16) / 116
    lab = np.empty_like(f)  # each channel written in place: the same float32 operations
    np.multiply(f[..., 1], 116, out=lab[..., 0])
    lab[..., 0] -= 16
    np.subtract(f[..., 0], f[..., 1], out=lab[..., 1])
    lab[..., 1] *= 500
    np.subtract(f[..., 1], f[..., 2], out=lab[..., 2])
    lab[..., 2] *= 200
    return lab


# pipeline.features_compiled's kernels, each checked on its own: "roots" (the cube roots)
# and "sums" (the block sums); absent: not tried yet; None: not used here
_compiled: dict[str, Any] = {}
# the check: 2^16 float32 spread over every exponent, both signs, and the special values
_CHECK = np.concatenate([np.arange(0, 2**31, 2**15 + 1, dtype=np.int64).astype(np.int32),
                         np.array([np.float32(v).view(np.int32) for v in
                                   (0.0, -0.0, 1e-45, -1e-40, np.inf, -np.inf, np.nan)])])


def cbrt(x: np.ndarray) -> np.ndarray:
    """Cube root of each value of ``x`` (any shape, float32): float32 like ``x``, numpy's
    ``cbrt``'s bits; compiled where numba is loaded (a render worker: about 4 ns a value
    against the C library's 20) and numpy's roots are the C library's."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if (kernels := _kernels("roots")) is None:
        return np.cbrt(x)
    out = np.empty_like(x)
    kernels.cbrt_into(x.reshape(-1), out.reshape(-1))
    return out


def compiled(which: str, agrees: Callable[[Any], bool]) -> Any:
    """:mod:`pipeline.features_compiled` where numba is already loaded in this process
    and ``agrees(kernels)`` says its kernel ``which`` gives the caller's numpy bits (asked
    once a process), else None (as :func:`_kernels`, for a kernel another module checks)."""
    return _kernels(which, agrees)


def _kernels(which: str, agrees: Callable[[Any], bool] | None = None) -> Any:
    """:mod:`pipeline.features_compiled` where numba is already loaded in this process
    and its kernel ``which`` ("roots": the cube roots; "sums": the block sums; another:
    checked by ``agrees``) gives numpy's or OpenCV's bits on a check, else None: every
    process of a job then takes the same values. Each is checked on its own: glibc
    2.36's ``cbrtf`` written out is not numpy's ``cbrt`` where numpy has its own (its
    AVX-512 roots) or the C library is another, the block sums are exact integers
    anywhere, and the Lab passes' colour matrix is summed as this machine's BLAS sums it
    or not at all."""
    if which not in _compiled:
        if agrees is None and which not in ("roots", "sums", "lab"):
            raise ValueError(f"no check of the compiled {which!r} here: pass one")
        if "numba" not in sys.modules:
            return None
        _compiled[which] = None
        try:
            import pipeline.features_compiled as kernels

            if (agrees or partial(_agrees, which=which))(kernels):
                _compiled[which] = kernels
            else:
                log.debug("the compiled %s differ from numpy's here: numpy runs", which)
        except Exception as e:  # any failure of the compiler: numpy goes on
            log.warning("the compiled features could not be loaded (%s: %s); using numpy",
                        type(e).__name__, e)
    return _compiled[which]


def _agrees(kernels: Any, which: str) -> bool:
    """Whether ``kernels``' cube roots ("roots"), block sums ("sums") or Lab passes
    ("lab") are numpy's or OpenCV's bits here."""
    if which == "lab":
        return _lab_agrees(kernels)
    if which == "sums":
        tiles = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), np.uint8)
        means = np.empty((16, 4, 4, 3), np.float32)
        kernels.block_means_of(tiles, 4, np.int32(256 // 16), AREA_SCALE, means)
        return means.tobytes() == area_means(tiles.reshape(256, 16, 3), 4, 64).tobytes()
    values = np.concatenate([_CHECK, -_CHECK]).view(np.float32)
    roots = np.empty_like(values)
    kernels.cbrt_into(values, roots)
    with np.errstate(all="ignore"):
        want = np.cbrt(values)
    nan = np.isnan(want)
    return np.array_equal(np.isnan(roots), nan) and \
        np.array_equal(roots.view(np.int32)[~nan], want.view(np.int32)[~nan])


def _lab_agrees(kernels: Any) -> bool:
    """Whether the compiled Lab passes give :func:`srgb_to_lab`'s numpy bits here (called
    while ``_compiled["lab"]`` is None, so that numpy's run): random colours, dark ones
    (the linear segment), the table's ends, values past 0 and 1, in shapes whose
    products BLAS cuts differently."""
    rng = np.random.default_rng(1)
    edges = np.array([0, 1e-6, 0.0031, 0.0405, 0.04045, 0.5, 1 - 1e-7, 1, 1.5, -0.2, 3e9,
                      -3e9], np.float32)
    values = np.concatenate([rng.random(3 * 4099, dtype=np.float32),
                             rng.random(3 * 257, dtype=np.float32) * np.float32(0.01),
                             np.repeat(edges, 3)])
    for width in (16, 2, 48):
        c = values[:len(values) // (3 * width) * 3 * width].reshape(-1, width, 3)
        flat = c.reshape(-1, 3)
        xyz, lab = np.empty_like(flat), np.empty_like(flat)
        kernels.linear_xyz(flat, _LINEAR, _BGR_TO_XYZN, xyz)
        kernels.lab_of(xyz, cbrt(xyz), lab)
        with np.errstate(invalid="ignore"):  # (numpy's cast of the values past int32)
            want = srgb_to_lab(c)
        if lab.reshape(c.shape).tobytes() != want.tobytes():
            return False
    return True
