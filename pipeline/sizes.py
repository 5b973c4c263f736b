"""Sizes given as ``WIDTHxHEIGHT`` text: tiles (even sides, 4..512) and face crops."""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError


def parse_tile_size(value: str | int, key: str = "tile_size") -> tuple[int, int]:
    """Parse ``"WxH"`` or ``N`` into ``(height, width)``; both sides even, 4..512 pixels.

    Sides must be even: the rendered frame is a whole number of tiles, and H.264 in
    yuv420p needs an even width and height, whatever the number of cells.
    """
    text = str(value).lower().strip()
    parts = text.split("x") if "x" in text else [text, text]
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{key}: expected WIDTHxHEIGHT such as 32x32, got {value!r}") from None
    if not (4 <= width <= 512 and 4 <= height <= 512):
        raise ConfigError(f"{key}: each side must be between 4 and 512 pixels, got {value!r}")
    if width % 2 or height % 2:
        raise ConfigError(f"{key}: each side must be even (the video is encoded as yuv420p, "
                          f"which needs even frame sides), got {value!r}")
    return height, width


def crop_size(value: Any, key: str) -> tuple[int, int]:
    """A face crop size: ``"WxH"`` (or ``[W, H]``) -> ``(width, height)``, at least 8x8."""
    if isinstance(value, list | tuple) and len(value) == 2:
        value = f"{value[0]}x{value[1]}"
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected WIDTHxHEIGHT such as 178x218, got {value!r}")
    h, w = parse_tile_size(value, key)
    if w < 8 or h < 8:
        raise ConfigError(f"{key}: must be at least 8x8, got {value!r}")
    return w, h


def show_size(value: tuple[int, int]) -> str:
    """``(width, height)`` as ``"WxH"``."""
    return f"{value[0]}x{value[1]}"
