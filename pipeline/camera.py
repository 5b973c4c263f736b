"""The zoom's camera: which part of a mosaic each frame of a zoom shows.

Coordinates. A mosaic of ``cols x rows`` cells is measured in cell widths: cell
``(r, c)`` covers ``x`` in ``[c, c + 1)`` and ``y`` in ``[r a, (r + 1) a)``, where ``a``
is the cell's height over its width. A :class:`View` is the frame's top-left corner
``(x, y)`` and its scale ``unit``, in cell widths per screen pixel: screen column ``j``
covers ``[x + j unit, x + (j + 1) unit)``.

One zoom (:class:`Zoom`) goes from a start view (the whole mosaic) to an end view (the
landing cell filling the frame, :func:`landing_view`) by a homothety: the scale changes
geometrically (constant perceived speed) about the one point that has the same screen
position in both views, so the pan is tied to the zoom and the target does not drift.
The end view keeps the landing cell's centre where it starts on screen as far as it
can, so that point is the photo's centre (:func:`centre_drift`: how far it still moves).
A chain (:class:`ZoomPath`) joins zooms: the landing cell of mosaic ``k`` holds mosaic
``k + 1``, whose start view is the previous end view; around each seam the two mosaics
are cross-faded.

Time. :func:`ease` turns the motion's linear time into log-scale progress, with a
smooth start and stop; :class:`Timeline` holds the still frames at each end and reverses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SEAM = math.log(2.0)  # log-scale half width of the cross-fade between chained mosaics


@dataclass(frozen=True)
class View:
    """The frame's top-left corner ``(x, y)`` in cell widths, ``unit`` cell widths per
    screen pixel (see the module doc)."""

    x: float
    y: float
    unit: float

    @property
    def cell_px(self) -> float:
        """On-screen width of one cell, in pixels."""
        return 1.0 / self.unit

    def rect(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region shown by a ``width x height`` frame: ``(x0, y0, x1, y1)``."""
        return self.x, self.y, self.x + width * self.unit, self.y + height * self.unit

    def to_screen(self, mx: float, my: float) -> tuple[float, float]:
        """Screen position (pixels) of the mosaic point ``(mx, my)``."""
        return (mx - self.x) / self.unit, (my - self.y) / self.unit


def fit_view(extent: tuple[float, float], frame: tuple[int, int], cover: bool,
             origin: tuple[float, float] = (0.0, 0.0)) -> View:
    """The view that centres the rectangle ``extent`` (width, height, at ``origin``) in a
    ``frame`` (width, height): the whole of it (``cover`` False, bars on two sides) or
    filling the frame (``cover`` True, two sides cropped)."""
    (w, h), (fw, fh) = extent, frame
    unit = min(w / fw, h / fh) if cover else max(w / fw, h / fh)
    return View(origin[0] + (w - fw * unit) / 2, origin[1] + (h - fh * unit) / 2, unit)


def landing_view(start: View, row: int, col: int, aspect: float, frame: tuple[int, int]
                 ) -> View:
    """The view in which cell ``(row, col)`` covers the frame, placed so that the cell's
    centre stays where ``start`` shows it, as far as covering the frame allows (a square
    cell in a wide frame fills its width: it can only end centred across)."""
    w, h = frame
    unit = min(1.0 / w, aspect / h)
    cx, cy = col + 0.5, (row + 0.5) * aspect
    px, py = start.to_screen(cx, cy)
    x = min(max(cx - px * unit, float(col)), col + 1 - w * unit)
    y = min(max(cy - py * unit, row * aspect), (row + 1) * aspect - h * unit)
    return View(x, y, unit)


def centre_drift(start: View, rows: int, cols: int, aspect: float, frame: tuple[int, int]
                 ) -> np.ndarray:
    """For a zoom from ``start`` into each cell of a ``rows x cols`` mosaic, how far the
    cell's centre moves on screen (pixels), (rows * cols,) float64; infinite for a cell
    whose landing view is not inside ``start`` (no zoom can reach it)."""
    w, h = frame
    unit = min(1.0 / w, aspect / h)
    y, x = np.divmod(np.arange(rows * cols), cols)
    cx, cy = x + 0.5, (y + 0.5) * aspect
    px, py = (cx - start.x) / start.unit, (cy - start.y) / start.unit
    x1 = np.clip(cx - px * unit, x, x + 1 - w * unit)
    y1 = np.clip(cy - py * unit, y * aspect, (y + 1) * aspect - h * unit)
    drift = np.hypot((cx - x1) / unit - px, (cy - y1) / unit - py)
    x0, y0, xe, ye = start.rect(w, h)
    inside = (x1 >= x0 - 1e-9) & (y1 >= y0 - 1e-9) & (x1 + w * unit <= xe + 1e-9) & (
        y1 + h * unit <= ye + 1e-9)
    return np.where(inside, drift, np.inf)


@dataclass(frozen=True)
class Zoom:
    """One zoom, ``start`` to ``end`` (same frame size): a homothety about its fixed point.

    ``end`` must show less than ``start``; the fixed point then lies inside ``end``.
    """

    start: View
    end: View

    def __post_init__(self) -> None:
        if not self.end.unit < self.start.unit:
            raise ValueError("a zoom must end closer than it starts")

    @property
    def span(self) -> float:
        """The zoom's length in natural-log units of scale."""
        return math.log(self.start.unit / self.end.unit)

    @property
    def fixed_screen(self) -> tuple[float, float]:
        """Screen position (pixels) that shows the same mosaic point all along."""
        du = self.start.unit - self.end.unit
        return (self.end.x - self.start.x) / du, (self.end.y - self.start.y) / du

    @property
    def fixed_point(self) -> tuple[float, float]:
        """The mosaic point at :attr:`fixed_screen` (cell widths)."""
        sx, sy = self.fixed_screen
        return self.start.x + sx * self.start.unit, self.start.y + sy * self.start.unit

    def at(self, z: float) -> View:
        """The view ``z`` log units into the zoom (0: ``start``, :attr:`span`: ``end``;
        values outside continue the same motion)."""
        (sx, sy), (mx, my) = self.fixed_screen, self.fixed_point
        unit = self.start.unit * math.exp(-z)
        return View(mx - sx * unit, my - sy * unit, unit)


def inner_to_outer(view: View, cell: tuple[float, float], n: float) -> View:
    """A view of an inner mosaic (``n`` cell widths across) as a view of the outer
    mosaic, whose cell at top-left ``cell`` (x, y) it fills."""
    return View(cell[0] + view.x / n, cell[1] + view.y / n, view.unit / n)


def outer_to_inner(view: View, cell: tuple[float, float], n: float) -> View:
    """The inverse of :func:`inner_to_outer`."""
    return View((view.x - cell[0]) * n, (view.y - cell[1]) * n, view.unit * n)


@dataclass(frozen=True)
class Link:
    """How mosaic ``k + 1`` sits in mosaic ``k``: the landing cell's top-left corner
    (cell widths of mosaic ``k``) and mosaic ``k + 1``'s width in its own cell widths."""

    cell: tuple[float, float]
    n: float


@dataclass(frozen=True)
class Shot:
    """One layer of a frame: mosaic ``level`` seen through ``view``, at ``weight``
    (the inner mosaic of a seam is laid over the outer one inside its own extent)."""

    level: int
    view: View
    weight: float


class ZoomPath:
    """A chain of zooms (one per mosaic) as one continuous move in log scale.

    ``zooms[k]`` is in mosaic ``k``'s coordinates; ``links[k]`` places mosaic ``k + 1``
    in the landing cell of mosaic ``k``. :meth:`shots` gives the layers at a position.
    """

    def __init__(self, zooms: list[Zoom], links: list[Link]) -> None:
        if len(links) != len(zooms) - 1:
            raise ValueError("one link between each two zooms")
        self.zooms, self.links = zooms, links
        self.bounds = [0.0]
        for z in zooms:
            self.bounds.append(self.bounds[-1] + z.span)
        spans = [z.span for z in zooms]
        self.seams = [min(SEAM, 0.3 * spans[k], 0.3 * spans[k + 1]) for k in range(len(links))]

    @property
    def total(self) -> float:
        """Length of the whole move, natural-log units of scale."""
        return self.bounds[-1]

    def level_at(self, g: float) -> int:
        """The mosaic whose own zoom holds log position ``g``."""
        for k in range(len(self.zooms) - 1):
            if g < self.bounds[k + 1]:
                return k
        return len(self.zooms) - 1

    def shots(self, progress: float) -> list[Shot]:
        """The layers of the frame at ``progress`` (0..1 of :attr:`total`): one, or two
        around a seam (outer first; the inner one's weight is its cross-fade)."""
        g = min(max(progress, 0.0), 1.0) * self.total
        k = self.level_at(g)
        view = self.zooms[k].at(g - self.bounds[k])
        for seam in (k - 1, k):  # the seam before and after this mosaic's zoom
            if not 0 <= seam < len(self.links):
                continue
            half = self.seams[seam]
            at = self.bounds[seam + 1]
            if abs(g - at) >= half:
                continue
            alpha = smoothstep((g - at + half) / (2 * half))
            link = self.links[seam]
            if seam == k:  # still in the outer mosaic's zoom
                inner = outer_to_inner(view, link.cell, link.n)
                return [Shot(k, view, 1.0 - alpha), Shot(k + 1, inner, alpha)]
            outer = inner_to_outer(view, link.cell, link.n)
            return [Shot(k - 1, outer, 1.0 - alpha), Shot(k, view, alpha)]
        return [Shot(k, view, 1.0)]


def smoothstep(t: float) -> float:
    """``3t^2 - 2t^3`` on ``t`` clipped to 0..1: 0 to 1 with zero slope at both ends."""
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def ease(t: float, ramp: float = 0.5) -> float:
    """Eased progress for linear time ``t`` in 0..1: the speed rises from 0 over the
    first ``ramp`` of the time (a raised-cosine ramp), holds, and falls back to 0 over
    the last ``ramp``. ``ramp`` 0.5 gives ``t - sin(2 pi t) / (2 pi)``."""
    t = min(max(t, 0.0), 1.0)
    q = min(max(ramp, 1e-6), 0.5)

    def rise(u: float) -> float:  # the integral of sin^2(pi u / 2q) from 0 to u <= q
        return u / 2 - q / (2 * math.pi) * math.sin(math.pi * u / q)

    total = 1.0 - q
    if t < q:
        return rise(t) / total
    if t <= 1.0 - q:
        return (q / 2 + t - q) / total
    return (total - rise(1.0 - t)) / total


@dataclass(frozen=True)
class Timeline:
    """Frame numbers to motion time: ``hold`` still frames at each end, the motion
    between, played backwards with ``reverse``."""

    frames: int
    hold: int
    reverse: bool = False

    def __post_init__(self) -> None:
        if self.frames - 2 * self.hold < 2:
            raise ValueError("the motion needs at least two frames between the holds")

    def time(self, i: int) -> float:
        """Linear motion time of frame ``i``, 0..1 (0: the whole mosaic)."""
        j = self.frames - 1 - i if self.reverse else i
        moving = self.frames - 2 * self.hold
        return min(max((j - self.hold) / (moving - 1), 0.0), 1.0)
