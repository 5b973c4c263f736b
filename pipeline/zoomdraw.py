"""Drawing a zoom's frames: any view of a planned mosaic, sharp at every scale.

A frame never materialises the mosaic at full resolution. It draws only the visible
cells, each from the best source for its width ``s`` on screen (pixels):

* ``s`` up to the bank's tile width: the index's tile bank, painted at the power-of-two
  reduction of the tile just above ``s`` (a whole-mosaic canvas at that size is kept when
  it is small; otherwise the visible cells are painted each frame);
* larger: each cell's source photo (:class:`~pipeline.originals.Originals`), at the
  power-of-two multiple of the tile just above ``s``;
* between the two, the frame is a cross-fade of both (:class:`Looks`), so the switch
  from bank tile to photo does not pop; a photo that is missing is drawn from its bank
  tile instead.

Either canvas is area-averaged down to the screen (:func:`~pipeline.resample.area_warp`),
at 1 to 2 canvas pixels per screen pixel; where the canvas size doubles, the two sizes
are faded into each other over :data:`LEVEL_BLEND` octave, so sharpness never steps.
Cells are recoloured as ``mosaic photo`` does, with a strength that eases from 1 to 0 as
the cells grow to the landing size, so the landed photo ends in its own colours.
Memory is bounded by the frame size (canvases at most about twice the frame across,
caches bounded in bytes), whatever the mosaic's cell count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.camera import Shot, View
from pipeline.originals import Originals, TileBank
from pipeline.resample import area_warp, coverage, lay_over
from pipeline.tone import adjust, tile_means
from pipeline.zoomplan import Level

LEVEL_FRAMES = 8  # a whole-mosaic bank canvas is kept when at most this many frames' bytes
LEVEL_BLEND = 0.25  # octaves over which one canvas size fades into the next


def _rise(x: float) -> float:
    """Smoothstep of ``x`` clipped to 0..1."""
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class Looks:
    """How a cell is drawn at on-screen width ``s`` (pixels).

    Photos fade in over ``s`` from ``fade`` to ``fade * 2**octaves``; recolouring is full
    up to ``recolour_from`` and gone at ``recolour_to`` (the landing size); both ramps
    are smoothsteps in log scale.
    """

    fade: float
    recolour_from: float
    recolour_to: float
    octaves: float = 1.0

    @classmethod
    def for_zoom(cls, tile_w: int, start_px: float, end_px: float) -> Looks:
        """The ramps of a zoom from cells ``start_px`` wide to ``end_px``: photos from
        the bank's tile width (or a quarter of the landing size, if less), recolouring
        full at the start."""
        fade = min(float(tile_w), end_px / 4)
        full = max(fade, start_px)
        return cls(fade, min(full, end_px / 2), end_px)

    def photo(self, s: float) -> float:
        """Weight of the source photos against the bank tiles, 0..1."""
        return _rise(math.log2(max(s, 1e-9) / self.fade) / self.octaves)

    def recolour(self, s: float) -> float:
        """Share of the recolouring kept, 1..0."""
        span = math.log(self.recolour_to / self.recolour_from)
        return 1.0 - _rise(math.log(max(s, 1e-9) / self.recolour_from) / span)


class MosaicDrawer:
    """Draws views of one planned mosaic at the frame size (see the module doc).

    Parameters
    ----------
    level : the planned mosaic.
    bank : its tiles; ``originals`` their source photos.
    frame : (width, height) in pixels.
    looks : the photo and recolouring ramps.
    peak : ndarray (rows, cols) float32, the widest each cell is shown in the video
        (pixels): photos are decoded once, at that size.
    """

    def __init__(self, level: Level, bank: TileBank, originals: Originals,
                 frame: tuple[int, int], looks: Looks, peak: np.ndarray) -> None:
        self.level, self.bank, self.originals = level, bank, originals
        self.frame, self.looks, self.peak = frame, looks, peak
        self.th, self.tw = bank.tile_hw
        self._levels: dict[int, np.ndarray] = {}
        self._level_bytes = LEVEL_FRAMES * frame[0] * frame[1] * 3
        longest = max(frame) * max(1.0, level.aspect, 1 / level.aspect)
        self._top = max(0, math.ceil(math.log2(longest / self.tw)))  # largest photo level

    def draw(self, view: View) -> np.ndarray:
        """The frame of ``view``: (height, width, 3) uint8 BGR (black off the mosaic)."""
        s = view.cell_px
        beta, gamma = self.looks.photo(s), self.looks.recolour(s)
        if beta <= 0:
            return self._bank_layer(view, gamma)
        photos = self._photo_layer(view, gamma)
        if beta >= 1:
            return photos
        return cv2.addWeighted(self._bank_layer(view, gamma), 1.0 - beta, photos, beta, 0.0)

    def cells_seen(self, view: View, margin: int = 1) -> tuple[int, int, int, int]:
        """Rows ``r0:r1`` and columns ``c0:c1`` of the cells ``view`` shows (with
        ``margin`` more on each side), clipped to the mosaic."""
        x0, y0, x1, y1 = view.rect(*self.frame)
        a, g = self.level.aspect, self.level.grid
        r0 = max(0, math.floor(y0 / a) - margin)
        r1 = min(g.rows, math.ceil(y1 / a) + margin)
        c0 = max(0, math.floor(x0) - margin)
        c1 = min(g.cols, math.ceil(x1) + margin)
        return r0, max(r0, r1), c0, max(c0, c1)

    def _bank_layer(self, view: View, gamma: float) -> np.ndarray:
        """The view drawn from the tile bank, reduced by the power of two ``n`` that keeps
        the canvas at 1 to 2 canvas pixels per screen pixel; over the last
        :data:`LEVEL_BLEND` octave before the next reduction, faded into it (no step in
        sharpness where the reduction changes)."""
        u = max(0.0, math.log2(self.tw / view.cell_px))
        n, frac = math.floor(u), u - math.floor(u)
        img = self._bank_at(view, gamma, n)
        w = (frac - (1 - LEVEL_BLEND)) / LEVEL_BLEND
        if w > 0:
            img = cv2.addWeighted(img, 1 - w, self._bank_at(view, gamma, n + 1), w, 0.0)
        return img

    def _bank_at(self, view: View, gamma: float, n: int) -> np.ndarray:
        """The view from the bank's tiles reduced ``2**n`` times."""
        pw, ph = max(1, round(self.tw / 2 ** n)), max(1, round(self.th / 2 ** n))
        canvas = self._whole_level(n, pw, ph) if gamma >= 1 else None
        if canvas is not None:
            r0 = c0 = 0
        else:
            r0, r1, c0, c1 = self.cells_seen(view)
            canvas = self._paint_bank(r0, r1, c0, c1, (ph, pw), gamma)
        a = self.level.aspect
        return area_warp(canvas, (view.x - c0) * pw, (view.y - r0 * a) * ph / a,
                         view.unit * pw, view.unit * ph / a, self.frame)

    def _whole_level(self, n: int, pw: int, ph: int) -> np.ndarray | None:
        """The whole mosaic at reduction ``n``, fully recoloured, if small enough to keep."""
        g = self.level.grid
        if g.rows * ph * g.cols * pw * 3 > self._level_bytes:
            return None
        if n not in self._levels:
            self._levels[n] = self._paint_bank(0, g.rows, 0, g.cols, (ph, pw), 1.0)
        return self._levels[n]

    def _paint_bank(self, r0: int, r1: int, c0: int, c1: int, size: tuple[int, int],
                    gamma: float) -> np.ndarray:
        """Cells ``r0:r1, c0:c1`` from the bank, recoloured at ``gamma``, each ``size``
        (height, width): ((r1 - r0) * h, (c1 - c0) * w, 3) uint8, one row at a time."""
        ph, pw = size
        cols = self.level.grid.cols
        canvas = np.empty(((r1 - r0) * ph, (c1 - c0) * pw, 3), np.uint8)
        for r in range(r0, r1):
            tiles = self.bank.take(self.level.ids[r, c0:c1])
            self._recolour(tiles, np.arange(r * cols + c0, r * cols + c1), gamma)
            strip = tiles.swapaxes(0, 1).reshape(self.th, -1, 3)
            if (ph, pw) != (self.th, self.tw):
                strip = cv2.resize(strip, ((c1 - c0) * pw, ph), interpolation=cv2.INTER_AREA)
            canvas[(r - r0) * ph:(r - r0 + 1) * ph] = strip
        return canvas

    def _recolour(self, tiles: np.ndarray, cells: np.ndarray, gamma: float,
                  means: np.ndarray | None = None) -> None:
        """Recolour ``tiles`` (n, h, w, 3) of flat ``cells`` (n,) in place at ``gamma``
        (``means`` (n, 3) float32: the whole tiles' mean colours, when ``tiles`` are parts)."""
        lv = self.level
        if gamma <= 0 or (lv.shifts is None and lv.gains is None):
            return
        shift = None if lv.shifts is None else np.rint(
            lv.shifts[cells] * np.float32(gamma)).astype(np.int16)
        gain = None if lv.gains is None else (
            1 + (lv.gains[cells] - 1) * np.float32(gamma)).astype(np.float32)
        adjust(tiles, shift, gain, means)

    def _photo_layer(self, view: View, gamma: float) -> np.ndarray:
        """The view drawn from the source photos (bank tiles where one is missing), at
        the power-of-two multiple of the tile size just above the cells' size on screen;
        over the first :data:`LEVEL_BLEND` octave of each size, faded in from the size
        below."""
        t = math.log2(max(view.cell_px, 1e-9) / self.tw)
        level = min(math.ceil(t), self._top)
        img = self._photos_at(view, gamma, level)
        w = (t - (level - 1)) / LEVEL_BLEND
        if w < 1 and t <= self._top:
            img = cv2.addWeighted(self._photos_at(view, gamma, level - 1), 1 - w, img, w, 0.0)
        return img

    def _photos_at(self, view: View, gamma: float, level: int) -> np.ndarray:
        """The view from the photos at ``2**level`` times the tile size per cell, on a
        canvas of the visible part only."""
        size = max(1, round(self.th * 2.0 ** level)), max(1, round(self.tw * 2.0 ** level))
        box = self._window(view, size)
        if box is None:
            return np.zeros((self.frame[1], self.frame[0], 3), np.uint8)
        canvas = self._paint_photos(view, size, box, gamma)
        (ph, pw), a = size, self.level.aspect
        return area_warp(canvas, view.x * pw - box[2], view.y * ph / a - box[0],
                         view.unit * pw, view.unit * ph / a, self.frame)

    def _window(self, view: View, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """The part of the mosaic at cells of ``size`` (height, width) pixels that
        ``view`` shows, with a margin: ``(y0, y1, x0, x1)`` in those pixels, or None."""
        (ph, pw), a, g = size, self.level.aspect, self.level.grid
        x0, y0, x1, y1 = view.rect(*self.frame)
        gx0, gx1 = max(0, math.floor(x0 * pw) - 4), min(g.cols * pw, math.ceil(x1 * pw) + 4)
        gy0 = max(0, math.floor(y0 * ph / a) - 4)
        gy1 = min(g.rows * ph, math.ceil(y1 * ph / a) + 4)
        return None if gx1 <= gx0 or gy1 <= gy0 else (gy0, gy1, gx0, gx1)

    def _paint_photos(self, view: View, size: tuple[int, int],
                      box: tuple[int, int, int, int], gamma: float) -> np.ndarray:
        """The cells in ``box`` (:meth:`_window`) from their photos, recoloured at
        ``gamma``: (y1 - y0, x1 - x0, 3) uint8."""
        (ph, pw), (gy0, gy1, gx0, gx1), cols = size, box, self.level.grid.cols
        canvas = np.zeros((gy1 - gy0, gx1 - gx0, 3), np.uint8)
        rr, cc = np.mgrid[gy0 // ph:(gy1 - 1) // ph + 1, gx0 // pw:(gx1 - 1) // pw + 1]
        rr, cc = rr.ravel(), cc.ravel()
        ids = self.level.ids[rr, cc]
        peak = np.maximum(self.peak[rr, cc], view.cell_px)
        top = np.exp2(np.minimum(np.ceil(np.log2(peak / self.tw)), self._top))
        need = np.stack([np.rint(self.th * top), np.rint(self.tw * top)], 1).astype(np.int64)
        photos = self.originals.fetch(ids, size, np.maximum(need, [[ph, pw]]))
        for r, c, i, img in zip(rr, cc, ids, photos, strict=True):
            cell = img if img is not None else cv2.resize(
                self.bank.take([i])[0], (pw, ph), interpolation=cv2.INTER_LINEAR)
            y_lo, y_hi = max(gy0, r * ph), min(gy1, (r + 1) * ph)
            x_lo, x_hi = max(gx0, c * pw), min(gx1, (c + 1) * pw)
            part = canvas[y_lo - gy0:y_hi - gy0, x_lo - gx0:x_hi - gx0]
            part[:] = cell[y_lo - r * ph:y_hi - r * ph, x_lo - c * pw:x_hi - c * pw]
            self._recolour_part(part, cell, int(r * cols + c), gamma)
        return canvas

    def _recolour_part(self, part: np.ndarray, cell: np.ndarray, flat: int,
                       gamma: float) -> None:
        """Recolour ``part`` (h, w, 3) uint8, a region of ``cell``'s picture, in place as
        cell ``flat`` at ``gamma`` (saturating scalar adds when there is no gain)."""
        lv = self.level
        if gamma <= 0 or (lv.shifts is None and lv.gains is None):
            return
        if lv.gains is not None and lv.gains[flat] != 1:
            tiles = np.ascontiguousarray(part)[None]
            self._recolour(tiles, np.array([flat]), gamma, tile_means(cell[None]))
            part[:] = tiles[0]
            return
        shift = np.rint(lv.shifts[flat] * gamma).astype(np.int64)
        cv2.add(part, (*np.clip(shift, 0, 255).tolist(), 0), dst=part)
        cv2.subtract(part, (*np.clip(-shift, 0, 255).tolist(), 0), dst=part)


def draw_shots(drawers: list[MosaicDrawer], shots: list[Shot]) -> np.ndarray:
    """A frame from its layers (:meth:`pipeline.camera.ZoomPath.shots`): the outer
    mosaic, with the inner one laid over it inside its extent at its weight."""
    base = drawers[shots[0].level].draw(shots[0].view)
    for shot in shots[1:]:
        if shot.weight <= 0:
            continue
        drawer = drawers[shot.level]
        top = drawer.draw(shot.view)
        (w, h), v = drawer.level.extent, shot.view
        cx = coverage(v.x, v.unit, drawer.frame[0], 0.0, w)
        cy = coverage(v.y, v.unit, drawer.frame[1], 0.0, h)
        mask = None if cx.min() >= 1 and cy.min() >= 1 else np.outer(cy, cx)
        base = lay_over(base, top, shot.weight, mask)
    return base


def peak_sizes(levels: list[Level], frames: list[list[Shot]], frame: tuple[int, int]
               ) -> list[np.ndarray]:
    """For each mosaic, the widest each cell is shown (pixels) over ``frames`` (the
    shots of every frame): (rows, cols) float32 per mosaic, 0 where never seen."""
    peaks = [np.zeros((lv.grid.rows, lv.grid.cols), np.float32) for lv in levels]
    for shots in frames:
        for shot in shots:
            lv, v = levels[shot.level], shot.view
            x0, y0, x1, y1 = v.rect(*frame)
            r0, r1 = max(0, math.floor(y0 / lv.aspect)), math.ceil(y1 / lv.aspect)
            c0, c1 = max(0, math.floor(x0)), math.ceil(x1)
            region = peaks[shot.level][r0:r1, c0:c1]
            np.maximum(region, np.float32(v.cell_px), out=region)
    return peaks
