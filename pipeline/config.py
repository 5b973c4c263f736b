"""Configuration: one frozen dataclass per stage, loaded from TOML plus overrides.

Precedence, highest first: a dedicated CLI flag (``--jobs``), ``--set section.key=value``,
a ``--config FILE``, then the defaults below (mirrored, with comments, in
``configs/default.toml``). Unknown sections or keys and values of the wrong type or range
raise :class:`~pipeline.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class IndexConfig:
    """Options of the ``index`` stage (tile size, features, clustering, checkpointing)."""

    tile_size: str = "32x32"
    hist_bins: int = 5
    lab_grid: int = 4
    clusters: int = 500
    prune_percentile: float = 35.0
    seed: int = 0
    kmeans_batch_size: int = 4096
    kmeans_max_iter: int = 100
    shard_size: int = 10000
    jobs: int = 0

    @property
    def tile_hw(self) -> tuple[int, int]:
        """The tile size as ``(height, width)`` in pixels."""
        return parse_tile_size(self.tile_size, "index.tile_size")


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
MATCHING_MODES = ("cluster", "refined", "nearest")
ORIENTATIONS = ("none", "mirror", "all")


@dataclass(frozen=True)
class RenderConfig:
    """Options of the ``render`` stage (grid, matching, activity, encoding, audio)."""

    scale: float = 4.0
    alpha: float = 0.2
    matching: str = "nearest"
    cell_clusters: int = 150
    cluster_batch_frames: int = 32
    refine_clusters: int = 3
    nprobe: int = 3
    candidates: int = 32
    mean_weight: float = 0.0
    orientations: str = "mirror"
    hysteresis: float = 0.9
    max_uses: int = 0
    repeat_radius: int = 2
    use_cap: float = 1.0
    flat_spread: float = 4.0
    unseen: float = 0.1
    joint: bool = True
    scene_cut: float = 0.6
    settle: int = 4
    recolour: float = 0.9
    tone: float = 0.0
    carry_tiles: bool = True
    report: bool = True
    activity_threshold: float = 10.0
    active_fraction: float = 0.5
    segment_frames: int = 256
    seed: int = 0
    workers: int = 0
    encoder: str = "libx264"
    crf: int = 20
    preset: str = "slow"
    encoder_options: str = ""
    encoder_threads: int = 0
    max_width: int = 0
    max_height: int = 0
    audio_stream: int = 0
    ytdlp_format: str = "bestvideo[height<=?480]+bestaudio/best[height<=?480]/best"


@dataclass(frozen=True)
class Config:
    """The whole configuration, one attribute per section."""

    index: IndexConfig = field(default_factory=IndexConfig)
    render: RenderConfig = field(default_factory=RenderConfig)



_SECTIONS: dict[str, type] = {"index": IndexConfig, "render": RenderConfig}

# (key) -> (minimum, maximum or None); inclusive bounds checked after type checks.
_RANGES: dict[str, tuple[float, float | None]] = {
    "index.hist_bins": (2, 6),
    "index.lab_grid": (1, 16),
    "index.clusters": (2, None),
    "index.prune_percentile": (0.0, 100.0),
    "index.seed": (0, 2**32 - 1),
    "index.kmeans_batch_size": (64, None),
    "index.kmeans_max_iter": (1, None),
    "index.shard_size": (16, None),
    "index.jobs": (0, None),
    "render.scale": (0.25, 16.0),
    "render.alpha": (0.0, 1.0),
    "render.cell_clusters": (2, None),
    "render.cluster_batch_frames": (1, 256),
    "render.activity_threshold": (0.0, 442.0),
    "render.active_fraction": (0.0, 1.0),
    "render.segment_frames": (1, None),
    "render.refine_clusters": (1, None),
    "render.nprobe": (1, None),
    "render.candidates": (5, 256),
    "render.repeat_radius": (0, 8),
    "render.use_cap": (0.0, 1000.0),
    "render.flat_spread": (0.0, 255.0),
    "render.unseen": (0.0, 100.0),
    "render.mean_weight": (0.0, 100.0),
    "render.hysteresis": (0.0, 1.0),
    "render.max_uses": (0, None),
    "render.scene_cut": (0.0, 1.0),
    "render.settle": (0, 10000),
    "render.recolour": (0.0, 1.0),
    "render.tone": (0.0, 1.0),
    "render.seed": (0, 2**32 - 1),
    "render.crf": (0, 63),
    "render.workers": (0, 1024),
    "render.encoder_threads": (0, 256),
    "render.max_width": (0, None),
    "render.max_height": (0, None),
    "render.audio_stream": (0, None),
}
_CHOICES: dict[str, tuple[str, ...]] = {"render.matching": MATCHING_MODES,
                                        "render.orientations": ORIENTATIONS}


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


def _check_value(key: str, expected: type, value: Any) -> Any:
    """Return ``value`` converted to ``expected`` or raise a ConfigError naming ``key``."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is str and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(
            f"{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{key}: must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key in _RANGES:
        low, high = _RANGES[key]
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"{key}: must be {bound}, got {value!r}")
    return value


def _merge(base: dict[str, dict[str, Any]], overrides: dict[str, Any], origin: str) -> None:
    """Merge ``{section: {key: value}}`` into ``base`` in place, rejecting unknown names."""
    for section, values in overrides.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        known = {f.name: f.type for f in fields(_SECTIONS[section])}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            expected = {"str": str, "int": int, "float": float, "bool": bool}[known[key]]
            prefix = f"{origin}: " if origin.endswith(".toml") else ""
            try:
                base[section][key] = _check_value(f"{section}.{key}", expected, value)
            except ConfigError as exc:
                raise ConfigError(f"{prefix}{exc}") from None


def parse_override(text: str) -> dict[str, Any]:
    """Parse one ``section.key=value`` string.

    The value is read as TOML (``3``, ``0.5``, ``true``, ``"x"``), except for string
    options, which take the text as it is (so ``tile_size=0x20`` stays a string).
    """
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    known = {f.name: f.type for f in fields(_SECTIONS.get(section, Config))}
    if known.get(key) == "str" and not isinstance(value, str):
        value = raw
    return {section: {key: value}}


def load_config(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> Config:
    """Build a :class:`Config` from defaults, a TOML file, ``--set`` strings and flags.

    ``flags`` maps ``"section.key"`` to a value and wins over everything else; ``None``
    values (flags the user did not give) are ignored.
    """
    merged: dict[str, dict[str, Any]] = {
        name: dataclasses.asdict(cls()) for name, cls in _SECTIONS.items()
    }
    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from None
        _merge(merged, data, str(path))
    for text in overrides or []:
        _merge(merged, parse_override(text), "--set")
    for name, value in (flags or {}).items():
        if value is not None:
            section, _, key = name.partition(".")
            _merge(merged, {section: {key: value}}, "flag")
    config = Config(**{name: _SECTIONS[name](**vals) for name, vals in merged.items()})
    _ = config.index.tile_hw  # validates the tile size string
    r = config.render
    if r.encoder in ("libx264", "libx265") and r.preset not in X264_PRESETS:
        raise ConfigError(f"render.preset: must be one of {', '.join(X264_PRESETS)} for "
                          f"{r.encoder}, got {r.preset!r}")
    try:
        shlex.split(r.encoder_options)
    except ValueError as exc:  # e.g. "No closing quotation"
        raise ConfigError(f"render.encoder_options: {str(exc).lower()} in "
                          f"{r.encoder_options!r}") from None
    for key in ("max_width", "max_height"):
        if getattr(r, key) % 2:
            raise ConfigError(f"render.{key}: must be even (yuv420p), got {getattr(r, key)}")
    return config


def default_toml_values() -> dict[str, dict[str, Any]]:
    """The defaults as nested dicts, as ``configs/default.toml`` should hold them."""
    return {name: dataclasses.asdict(cls()) for name, cls in _SECTIONS.items()}
