"""The live mosaic's look: the settings its page can change, their checks, the cell
layout they give, and the batch command that reproduces them.

A :class:`Look` holds what the live controls set: the blend, the recolour strength, the
contrast matching (``tone``), the cells across and the matching mode. The cells across
fix the grid exactly as a render's ``--scale`` does (:func:`layout`), so the line
:func:`render_command` prints makes a batch render with the same cells and settings.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, replace

from pipeline.config import MATCHING_MODES, RenderConfig
from pipeline.errors import ConfigError
from pipeline.grid import Grid, make_grid

MIN_COLS = 8  # fewer cells make no mosaic worth seeing
MAX_COLS = 160  # more than a live frame can plan and paint in time on a small machine
MIN_CELL_PX = 4  # source pixels per cell at the processing size, at least
_CONTROLS = ("alpha", "recolour", "tone", "matching", "cols", "auto")


@dataclass(frozen=True)
class Look:
    """What the live controls set.

    Attributes
    ----------
    cols : cells across (the rows follow the source's aspect, :func:`layout`).
    alpha : weight of the source blended over the mosaic, 0..1 (``render.alpha``).
    recolour : share of the way each tile's mean colour moves to its cell's, 0..1.
    tone : contrast matching strength, 0..1 (``render.tone``).
    matching : ``cluster``, ``refined`` or ``nearest`` (``render.matching``).
    auto : the cells across are picked to hold the frame rate (and change by themselves).
    """

    cols: int
    alpha: float
    recolour: float
    tone: float
    matching: str
    auto: bool = True

    @classmethod
    def from_config(cls, config: RenderConfig, cols: int, auto: bool) -> Look:
        """The look a render with ``config`` would have, at ``cols`` cells across."""
        return cls(cols, config.alpha, config.recolour, config.tone, config.matching, auto)

    def config(self, base: RenderConfig) -> RenderConfig:
        """``base`` with this look's options."""
        return replace(base, alpha=self.alpha, recolour=self.recolour, tone=self.tone,
                       matching=self.matching)

    def to_json(self) -> dict:
        return {"cols": self.cols, "alpha": self.alpha, "recolour": self.recolour,
                "tone": self.tone, "matching": self.matching, "auto": self.auto}


def _unit(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value) or not 0 <= value <= 1:
        raise ConfigError(f"{name}: expected a number from 0 to 1, got {value!r}")
    return float(value)


def changed_look(look: Look, changes: dict, max_cols: int) -> Look:
    """``look`` with the controls in ``changes`` (``{name: value}``, names as in
    :class:`Look`) applied; :class:`ConfigError` naming the control for a bad one. Setting
    ``cols`` turns ``auto`` off unless ``auto`` is given too."""
    unknown = sorted(set(changes) - set(_CONTROLS))
    if unknown:
        raise ConfigError(f"unknown control {unknown[0]!r} (known: {', '.join(_CONTROLS)})")
    out = {}
    for name in ("alpha", "recolour", "tone"):
        if name in changes:
            out[name] = _unit(name, changes[name])
    if "matching" in changes:
        if changes["matching"] not in MATCHING_MODES:
            raise ConfigError(f"matching: must be one of {', '.join(MATCHING_MODES)}, got "
                              f"{changes['matching']!r}")
        out["matching"] = changes["matching"]
    if "cols" in changes:
        cols = changes["cols"]
        if isinstance(cols, bool) or not isinstance(cols, int) or \
                not MIN_COLS <= cols <= max_cols:
            raise ConfigError(f"cols: expected a whole number from {MIN_COLS} to {max_cols}, "
                              f"got {cols!r}")
        out["cols"], out["auto"] = cols, False
    if "auto" in changes:
        if not isinstance(changes["auto"], bool):
            raise ConfigError(f"auto: expected true or false, got {changes['auto']!r}")
        out["auto"] = changes["auto"]
    return replace(look, **out)


def max_cols(proc_w: int) -> int:
    """The most cells across a ``proc_w``-pixel processing frame takes."""
    return max(MIN_COLS, min(MAX_COLS, proc_w // MIN_CELL_PX))


def scale_for(cols: int, src_w: int, tile_w: int) -> float:
    """The render ``--scale`` (4 decimals) that cuts a ``src_w``-pixel-wide source into
    exactly ``cols`` cells of ``tile_w`` pixels (:func:`pipeline.grid.make_grid` rounds
    the cells up: the scale is rounded down)."""
    return math.floor(cols * tile_w / src_w * 1e4) / 1e4


def layout(src_hw: tuple[int, int], proc_hw: tuple[int, int], tile_hw: tuple[int, int],
           cols: int) -> tuple[Grid, float]:
    """The live grid for ``cols`` cells across and the render scale that gives the same
    cells on the source at its own size ``src_hw`` (height, width): the grid's
    ``src_h``/``src_w`` are the processing size ``proc_hw`` the frames arrive in."""
    scale = scale_for(cols, src_hw[1], tile_hw[1])
    g = make_grid(src_hw[0], src_hw[1], tile_hw, scale)
    return Grid(proc_hw[0], proc_hw[1], g.rows, g.cols, g.tile_h, g.tile_w), scale


def render_command(video: str, index: str, look: Look, scale: float,
                   extra: tuple[str, ...] = ()) -> tuple[str, str]:
    """The ``mosaic render`` line and the ``make render`` line that render ``video`` with
    the current look (``extra``: the live command's own ``--config``/``--set`` options,
    kept before the look's, which win)."""
    args = ["--scale", f"{scale:g}", "--alpha", f"{look.alpha:g}", *extra]
    for s in (f"render.recolour={look.recolour:g}", f"render.tone={look.tone:g}",
              f"render.matching={look.matching}"):
        args += ["--set", s]
    mosaic = shlex.join(["mosaic", "render", video, "--index", index, *args])
    make = shlex.join(["make", "render", f"VIDEO={video}", f"INDEX={index}",
                       f"ARGS={shlex.join(args)}"])
    return mosaic, make
