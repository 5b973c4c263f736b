"""Composing: tile ids -> mosaic frame, then blending with the upscaled source.

The canvas keeps the tile id and orientation of every cell and the mosaic image itself;
placing tiles touches only the cells that change (inactive cells keep their tile).
Tiles are gathered from the memory-mapped tile bank in one indexing operation.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import cv2
import numpy as np

from pipeline.encode import bgr_to_i420
from pipeline.features import block_means, means_of_sums, srgb_to_lab
from pipeline.grid import Grid
from pipeline.tone import adjust, tile_means
from pipeline.visibility import LUMA, MIRROR, bank_spread, luma_spread, orient, spread_of_sums

_CHUNK = 512  # cells placed at a time: small transient buffers at any grid size
# numpy places this many cells in a process before the compiled placement pays numba's
# load (about 0.5 CPU-s: some 150,000 cells at 2560x1920), unless numba is loaded already
PLACE_COMPILE_AFTER = 150_000

log = logging.getLogger(__name__)
_placing: Any = None  # the compiled placement: not tried yet (None), failed (False), loaded
_numpy_placed = 0  # cells placed by numpy in this process while numba was not loaded


def compiled_placing(cells: int) -> Any:
    """:func:`pipeline.placing.place_tiles` where it runs, else None (numpy places the
    ``cells`` about to be placed): loaded once numba is in the process (a worker that
    plans has loaded it for its search) or once numpy has placed
    :data:`PLACE_COMPILE_AFTER` cells here; where numba does not load, said once, numpy
    places every tile (the same bits)."""
    global _placing, _numpy_placed
    if _placing is None:
        if "numba" not in sys.modules and _numpy_placed < PLACE_COMPILE_AFTER:
            _numpy_placed += cells
            return None
        try:
            from pipeline.placing import place_tiles, warm

            warm()
            _placing = place_tiles
        except Exception as e:  # any failure of the compiler: numpy goes on
            log.warning("the compiled tile placement could not be loaded (%s: %s); "
                        "placing with numpy", type(e).__name__, e)
            _placing = False
    return _placing or None


_measuring: Any = None  # the compiled canvas measure: not tried (None), not used (False)


def compiled_measure(h: int, w: int, g: int) -> Any:
    """:func:`pipeline.placing.measure_cells` where it gives the numpy measures' bits for
    tiles ``h x w`` on a ``g x g`` sub-grid, else None: numba already loaded (with the
    placement), sub-grid cells of a power-of-two number of pixels (block_means' sums,
    exact), tiles of a multiple of 16 pixels (OpenCV's luma transform has no scalar tail
    over whole tiles), and the kernel's luma levels OpenCV's on 2^18 colours (its fused
    multiply-adds where the CPU has them: checked once a process)."""
    global _measuring
    if h % g or w % g or 256 % ((h // g) * (w // g)) or (h * w) % 16 or \
            compiled_placing(0) is None:
        return None
    if _measuring is None:
        _measuring = False
        try:
            from pipeline.placing import measure_cells

            if _luma_agrees(measure_cells):
                _measuring = measure_cells
        except Exception as e:  # any failure of the compiler: numpy measures
            log.warning("the compiled canvas measure could not be loaded (%s: %s)",
                        type(e).__name__, e)
    return _measuring or None


def _luma_agrees(kernel: Any) -> bool:
    """Whether ``kernel``'s luma levels are OpenCV's on 2^18 colours in 16x16 tiles."""
    colours = np.random.default_rng(0).integers(0, 256, (1024, 16, 16, 3), np.uint8)
    image = colours.reshape(32, 32, 16, 16, 3).swapaxes(1, 2).reshape(512, 512, 3)
    sums = np.empty((1024, 1, 1, 3), np.int32)
    total, squares = np.empty(1024, np.int64), np.empty(1024, np.int64)
    kernel(np.ascontiguousarray(image), np.arange(1024, dtype=np.int64), 32, 16, 16, 1,
           LUMA, sums, total, squares)
    levels = cv2.transform(colours.reshape(1024, -1, 3), LUMA[None, :]).reshape(1024, -1)
    return np.array_equal(total, levels.sum(1, dtype=np.int64)) and \
        np.array_equal(squares, (levels.astype(np.int64) ** 2).sum(1))


class Canvas:
    """The mosaic of one video frame, updated in place cell by cell.

    ``bank`` holds the tiles, (M, tile_h, tile_w, 3) uint8. Row ``i`` is tile id ``i``,
    or, with ``bank_ids`` (M,) sorted int64, tile id ``bank_ids[i]``: a painter then
    loads only the tiles its segment shows. ``spread`` (M,) float32: each row's luma
    spread, as the index recorded it (:func:`pipeline.index.load_spread`); measured from
    the bank when not given and first needed.

    Attributes
    ----------
    ids : ndarray (rows, cols), int64, tile id per cell (-1 before the first placement).
    orients : ndarray (rows, cols), uint8, orientation code per cell
        (:func:`pipeline.visibility.orient`: 0 as is, 1 mirrored, ...).
    sub, sub_lab : with ``track`` = S, ndarrays (rows, cols, S, S, 3), float32: each
        cell's S x S sub-grid mean colours (BGR 0..1) and their CIELAB values.
    spread, own : with ``track``, ndarrays (rows, cols), float32: the luma spread of each
        painted cell and that of its tile in the bank (0 where no tile), for the photo
        visibility score (:mod:`pipeline.visibility`).
    image : ndarray (rows * tile_h, cols * tile_w, 3), uint8 BGR.

    The tracked values are measured when they are read, from the canvas's own pixels, for
    the cells placed since the last read: a scorer that reads them every fourth frame
    measures a cell that changed four times once.
    """

    def __init__(self, grid: Grid, bank: np.ndarray, track: int = 0,
                 bank_ids: np.ndarray | None = None, spread: np.ndarray | None = None
                 ) -> None:
        if bank.shape[1:3] != (grid.tile_h, grid.tile_w):
            raise ValueError(f"tile bank of {bank.shape[1:3]} does not fit the grid's tiles "
                             f"{(grid.tile_h, grid.tile_w)}")
        self.grid, self.bank, self.bank_ids = grid, bank, bank_ids
        self.ids = np.full((grid.rows, grid.cols), -1, dtype=np.int64)
        self.orients = np.zeros((grid.rows, grid.cols), dtype=np.uint8)
        self.image = np.zeros((grid.out_h, grid.out_w, 3), dtype=np.uint8)
        self._cells = self.image.reshape(grid.rows, grid.tile_h, grid.cols, grid.tile_w, 3)
        self.track = track
        self._bank_means: np.ndarray | None = None
        self._bank_spread = spread  # (M,) float32 per bank row; measured when first needed
        if track:  # the mosaic's sub-grid mean colours, measured for the metrics
            self._sub = np.zeros((grid.rows, grid.cols, track, track, 3), np.float32)
            self._sub_lab = np.zeros_like(self._sub)
            self._spread = np.zeros((grid.rows, grid.cols), np.float32)
            self._own = np.zeros((grid.rows, grid.cols), np.float32)
        self._dirty = np.zeros(grid.cells, bool)  # placed since the tracked values' last read

    @property
    def sub(self) -> np.ndarray:
        self._measure()
        return self._sub

    @property
    def sub_lab(self) -> np.ndarray:
        self._measure()
        return self._sub_lab

    @property
    def spread(self) -> np.ndarray:
        self._measure()
        return self._spread

    @property
    def own(self) -> np.ndarray:
        self._measure()
        return self._own

    def _measure(self) -> None:
        """Measure the tracked values of the cells placed since the last call, from the
        canvas's pixels (the tiles as placed: turned and recoloured)."""
        cells = np.flatnonzero(self._dirty)
        if not self.track or not len(cells):
            return
        self._dirty[:] = False
        if self._bank_spread is None:
            self._bank_spread = bank_spread(self.bank)
        kernel = compiled_measure(self.grid.tile_h, self.grid.tile_w, self.track)
        for lo in range(0, len(cells), _CHUNK):
            part = cells[lo:lo + _CHUNK]
            r, c = np.divmod(part, self.grid.cols)
            if kernel is not None:  # read in place: the same values
                means, self._spread[r, c] = self._measured(kernel, part)
            else:
                tiles = np.ascontiguousarray(self._cells[r, :, c, :])
                means = block_means(tiles, self.track)
                self._spread[r, c] = luma_spread(tiles)
            self._sub[r, c] = means
            self._sub_lab[r, c] = srgb_to_lab(means)
            ids = self.ids[r, c]
            rows = ids if self.bank_ids is None else np.searchsorted(self.bank_ids, ids)
            self._own[r, c] = np.where(ids >= 0, self._bank_spread[np.maximum(rows, 0)], 0)

    def _measured(self, kernel: Any, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`pipeline.placing.measure_cells` of ``cells``: their sub-grid means
        (k, g, g, 3) and luma spreads (k,) float32, as block_means and luma_spread give
        them from the cells' pixels."""
        g, h, w = self.track, self.grid.tile_h, self.grid.tile_w
        sums = np.empty((len(cells), g, g, 3), np.int32)
        total, squares = np.empty(len(cells), np.int64), np.empty(len(cells), np.int64)
        kernel(self.image, cells.astype(np.int64), self.grid.cols, h, w, g, LUMA, sums,
               total, squares)
        return means_of_sums(sums, (h // g) * (w // g)), spread_of_sums(total, squares, h * w)

    def place(self, cells: np.ndarray, ids: np.ndarray, orients: np.ndarray,
              shift: np.ndarray | None = None, measure: bool = False,
              gain: np.ndarray | None = None) -> np.ndarray | None:
        """Put tile ``ids[i]`` in orientation ``orients[i]`` into flat cell ``cells[i]``.

        Parameters
        ----------
        cells : ndarray (k,), int, row-major cell indices.
        ids : ndarray (k,), int, tile ids.
        orients : ndarray (k,), uint8 orientation codes (bool: mirrored or not).
        shift : optional ndarray (k, 3), int16: added to each tile's pixels, saturating
            at 0 and 255 (recolouring).
        measure : also return each placed cell's mean absolute pixel change.
        gain : optional ndarray (k,), float32: each tile's contrast is scaled by it
            around the tile's mean colour (:func:`pipeline.tone.retone`) before the shift.

        Returns
        -------
        ndarray (k,), float32, the change per cell when ``measure``, else None.
        """
        change = np.zeros(len(cells), np.float32)
        for lo in range(0, len(cells), _CHUNK):  # bounded temporaries at any grid size
            hi = lo + _CHUNK
            part = self._place(cells[lo:hi], ids[lo:hi], orients[lo:hi],
                               None if shift is None else shift[lo:hi], measure,
                               None if gain is None else gain[lo:hi])
            if measure:
                change[lo:hi] = part
        return change if measure else None

    def _place(self, cells: np.ndarray, ids: np.ndarray, orients: np.ndarray,
               shift: np.ndarray | None, measure: bool,
               gain: np.ndarray | None = None) -> np.ndarray | None:
        orients = np.asarray(orients, np.uint8)
        if gain is None and self.bank.flags.c_contiguous and not (orients > MIRROR).any() \
                and (kernel := compiled_placing(len(cells))) is not None:
            return self._place_compiled(kernel, cells, ids, orients, shift, measure)
        order = None
        if orients.any():  # by orientation: each code's tiles side by side, turned at once
            order = np.argsort(orients, kind="stable")
            cells, ids, orients = cells[order], ids[order], orients[order]
            shift = None if shift is None else shift[order]
            gain = None if gain is None else gain[order]
        rows = ids if self.bank_ids is None else np.searchsorted(self.bank_ids, ids)
        tiles = self.bank[rows]
        _turn(tiles, orients)
        adjust(tiles, shift, gain, None if gain is None else self._means()[rows])
        r, c = np.divmod(cells, self.grid.cols)
        change = None
        if measure:
            old = self._cells[r, :, c, :]
            diff = cv2.absdiff(old.reshape(len(cells), -1), tiles.reshape(len(cells), -1))
            change = diff.mean(1, dtype=np.float32)
            if order is not None:
                change[order] = change.copy()
        self._cells[r, :, c, :] = tiles
        self.ids[r, c] = ids
        self.orients[r, c] = orients
        self._dirty[cells] = True
        return change

    def _place_compiled(self, kernel: Any, cells: np.ndarray, ids: np.ndarray,
                        orients: np.ndarray, shift: np.ndarray | None, measure: bool
                        ) -> np.ndarray | None:
        """:meth:`_place` by :func:`pipeline.placing.place_tiles` (tiles as they are or
        mirrored, no contrast gain): the same pixels and changes."""
        cells = np.asarray(cells, np.int64)
        rows = ids if self.bank_ids is None else np.searchsorted(self.bank_ids, ids)
        shift = np.zeros((len(cells), 3), np.int16) if shift is None else \
            np.ascontiguousarray(shift, np.int16)
        change = np.zeros(len(cells), np.float32)
        kernel(cells, np.asarray(rows, np.int64), orients == MIRROR, shift,
               np.asarray(self.bank), self.image, self.grid.cols, measure, change)
        r, c = np.divmod(cells, self.grid.cols)
        self.ids[r, c] = ids
        self.orients[r, c] = orients
        self._dirty[cells] = True
        return change if measure else None

    def _means(self) -> np.ndarray:
        """Mean colour of every tile of the bank, (M, 3) float32 (exact, computed once)."""
        if self._bank_means is None:
            self._bank_means = np.concatenate(
                [tile_means(self.bank[lo:lo + 4096]) for lo in range(0, len(self.bank), 4096)]
            ) if len(self.bank) else np.zeros((0, 3), np.float32)
        return self._bank_means

    def reset(self, ids: np.ndarray | None = None, orients: np.ndarray | None = None,
              shifts: np.ndarray | None = None, gains: np.ndarray | None = None) -> None:
        """Clear the canvas, or rebuild it exactly from per-cell ``ids``, ``orients``
        (rows, cols), recolouring ``shifts`` (rows, cols, 3) int16 and contrast ``gains``
        (rows, cols) float32."""
        self.ids[:] = -1
        self.orients[:] = 0
        self.image[:] = 0
        self._dirty[:] = True
        if ids is not None and orients is not None:
            cells = np.flatnonzero(ids.ravel() >= 0)
            shift = None if shifts is None else shifts.reshape(-1, 3)[cells]
            gain = None if gains is None else gains.ravel()[cells]
            self.place(cells, ids.ravel()[cells], orients.ravel()[cells], shift, gain=gain)


def _turn(tiles: np.ndarray, codes: np.ndarray) -> None:
    """Turn tiles (k, h, w, 3) uint8 in place to their orientation ``codes`` (k,) uint8,
    sorted (each code's tiles side by side): a mirror is one OpenCV flip of the block's
    pixel rows, any other turn a copy."""
    h, w = tiles.shape[1:3]
    bounds = np.searchsorted(codes, np.arange(1, 9))
    for code in range(1, 8):
        lo, hi = bounds[code - 1], bounds[code]
        if lo == hi:
            continue
        if code == MIRROR:
            tiles[lo:hi] = cv2.flip(tiles[lo:hi].reshape((hi - lo) * h, w, 3), 1).reshape(
                hi - lo, h, w, 3)
        else:
            tiles[lo:hi] = np.ascontiguousarray(orient(tiles[lo:hi], code))


def blend(mosaic: np.ndarray, frame_bgr: np.ndarray, alpha: float, out: np.ndarray,
          scratch: np.ndarray | None = None) -> np.ndarray:
    """``out = (1 - alpha) * mosaic + alpha * upscaled frame`` (alpha 0: pure mosaic).

    Parameters
    ----------
    mosaic : ndarray (Ho, Wo, 3), uint8.
    frame_bgr : ndarray (H, W, 3), uint8, upscaled here with INTER_LINEAR.
    out : ndarray like ``mosaic``, written in place and returned.
    scratch : optional buffer like ``mosaic`` for the upscaled frame.
    """
    if alpha <= 0:
        np.copyto(out, mosaic)
        return out
    h, w = mosaic.shape[:2]
    up = cv2.resize(frame_bgr, (w, h), dst=scratch, interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(mosaic, 1.0 - alpha, up, alpha, 0.0, dst=out)


# OpenCV's BGR -> I420 conversion (BT.601, limited range), its 20-bit fixed-point
# coefficients: rows Y, U, V; columns B, G, R, then the offset
_BGR_TO_YUV = np.array([[102760, 528482, 269484, 16 << 20],
                        [460324, -305135, -155188, 128 << 20],
                        [-74448, -385875, 460324, 128 << 20]], np.float64) / 2**20


def i420_planes(buf: np.ndarray, height: int, width: int) -> tuple[np.ndarray, ...]:
    """The Y (H, W), U and V (H / 2, W / 2) planes of an I420 frame of ``height x width``
    (even) held in ``buf`` (at least H * W * 3 / 2 uint8 bytes, C-contiguous): views."""
    flat = buf.reshape(-1)
    y, c = height * width, (height // 2) * (width // 2)
    return (flat[:y].reshape(height, width), flat[y:y + c].reshape(height // 2, width // 2),
            flat[y + c:y + 2 * c].reshape(height // 2, width // 2))


def blend_i420(mosaic: np.ndarray, frame_bgr: np.ndarray, alpha: float, out: np.ndarray,
               scratch: np.ndarray) -> np.ndarray:
    """:func:`blend`, straight to the encoder's I420: ``out`` = the mosaic in I420, then
    ``(1 - alpha) * out + alpha * the frame's Y, U and V planes upscaled`` (the frame's
    own I420, or where its sides are odd its planes by the same coefficients at its own
    size; each upscaled with INTER_LINEAR to its plane's size). The conversion is linear,
    so this is the I420 of :func:`blend`'s picture to within a level or two (tested), from
    half the bytes: the upscale and the blend run on 1.5 bytes a pixel instead of 3.

    Parameters
    ----------
    mosaic : ndarray (Ho, Wo, 3), uint8 BGR, Ho and Wo even.
    frame_bgr : ndarray (H, W, 3), uint8 BGR, any size.
    out : ndarray (Ho * 3 / 2, Wo), uint8: written in place and returned.
    scratch : a buffer of at least Ho * Wo * 3 / 2 bytes (uint8, C-contiguous).
    """
    bgr_to_i420(mosaic, out)
    if alpha <= 0:
        return out
    h, w = mosaic.shape[:2]
    sh, sw = frame_bgr.shape[:2]
    if sh % 2 or sw % 2:  # each plane at the frame's own size
        planes = cv2.split(cv2.transform(frame_bgr, _BGR_TO_YUV))
    else:  # (the fast way: the frame's own I420, its colour at half size)
        planes = i420_planes(bgr_to_i420(frame_bgr), sh, sw)
    up = i420_planes(scratch, h, w)
    for plane, dst in zip(planes, up, strict=True):
        cv2.resize(plane, (dst.shape[1], dst.shape[0]), dst=dst,
                   interpolation=cv2.INTER_LINEAR)
    whole = scratch.reshape(-1)[:out.size].reshape(out.shape)
    return cv2.addWeighted(out, 1.0 - alpha, whole, alpha, 0.0, dst=out)
