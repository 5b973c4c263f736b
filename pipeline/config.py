"""Configuration: each option declared once, a frozen dataclass per section, from TOML.

Each option is a dataclass field made by :func:`option`: its default, range or choices,
whether it changes the plan, the painted frames, both or neither (:data:`AFFECTS`), and
a one-line description. Everything else is derived from that declaration: the checks of
:func:`load_config`, the options that name a plan (:func:`plan_options`) and a render
job (:func:`paint_options`), the index's parameters (:func:`index_options`), and, in
:mod:`pipeline.config_docs`, ``configs/default.toml``'s values and the README's
configuration table (a test keeps both in step).

Precedence, highest first: a CLI flag (``--jobs``), ``--set section.key=value``, a
``--config FILE``, then the defaults below (``configs/default.toml``, with comments).
Unknown sections or keys and wrong types or ranges raise a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.sizes import crop_size, parse_tile_size, show_size

# what an option changes: the render's plan (tile choices: a new plan), its painting (the
# same plan, painted again), both; the index's artifacts; a still's or the face tiles'
# pixels; or nothing in any output (``run``: workers, threads, checkpoint sizes...)
AFFECTS = ("plan", "paint", "plan+paint", "index", "output", "run")


def option(default: Any, doc: str, *, low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] | None = None, affects: str = "run",
           parse: Callable[[Any, str], Any] | None = None,
           show: Callable[[Any], Any] | None = None) -> Any:
    """Declare one option: its ``default``, a one-line ``doc``, its inclusive range
    (``low``, ``high``; None: unbounded) or ``choices``, what it ``affects``
    (:data:`AFFECTS`), and for options whose value is not a plain TOML type, ``parse``
    (TOML or ``--set`` value, key -> value) and ``show`` (value -> TOML value)."""
    if affects not in AFFECTS:
        raise ValueError(f"affects must be one of {AFFECTS}, got {affects!r}")
    return field(default=default, metadata={
        "doc": doc, "low": low, "high": high, "choices": choices, "affects": affects,
        "parse": parse, "show": show})


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
MATCHING_MODES = ("cluster", "refined", "nearest")
ORIENTATIONS = ("none", "mirror", "all")


@dataclass(frozen=True)
class IndexConfig:
    """Options of the ``index`` stage (tile size, features, clustering, checkpointing)."""

    tile_size: str = option("32x32", "tile size, WIDTHxHEIGHT; non-square allowed",
                            affects="index")
    hist_bins: int = option(5, "bins per channel of the colour histogram", low=2, high=6,
                            affects="index")
    lab_grid: int = option(4, "g of the g x g sub-grid of the Lab feature", low=1, high=16,
                           affects="index")
    clusters: int = option(500, "MiniBatchKMeans clusters", low=2, affects="index")
    prune_percentile: float = option(35.0, "clusters with a population under this "
                                     "percentile are pruned", low=0.0, high=100.0,
                                     affects="index")
    seed: int = option(0, "clustering seed; same inputs and seed give identical artifacts",
                       low=0, high=2**32 - 1, affects="index")
    kmeans_batch_size: int = option(4096, "MiniBatchKMeans mini-batch size", low=64,
                                    affects="index")
    kmeans_max_iter: int = option(100, "maximum passes over the data (stops early on "
                                  "convergence)", low=1, affects="index")
    shard_size: int = option(10000, "files per checkpoint shard", low=16)
    jobs: int = option(0, "decode processes; 0 = all cores", low=0)

    @property
    def tile_hw(self) -> tuple[int, int]:
        """The tile size as ``(height, width)`` in pixels."""
        return parse_tile_size(self.tile_size, "index.tile_size")


@dataclass(frozen=True)
class RenderConfig:
    """Options of the ``render`` stage (grid, matching, activity, encoding, audio)."""

    scale: float = option(4.0, "upscaling before cutting cells", low=0.25, high=16.0,
                          affects="plan")
    alpha: float = option(0.2, "weight of the upscaled source blended over the mosaic "
                          "(0 = pure mosaic)", low=0.0, high=1.0, affects="paint")
    matching: str = option("nearest", "how cells get tiles: `cluster` (the reference's), "
                           "`refined`, `nearest`", choices=MATCHING_MODES, affects="plan")
    cell_clusters: int = option(150, "cell clusters per batch (cluster and refined modes)",
                                low=2, affects="plan")
    cluster_batch_frames: int = option(32, "frames per clustering and matching batch (the "
                                       "reference used 256; memory grows with it)",
                                       low=1, high=256, affects="plan")
    refine_clusters: int = option(3, "refined: tile clusters searched per cell cluster",
                                  low=1, affects="plan")
    nprobe: int = option(8, "nearest: tile clusters probed per cell", low=1, affects="plan")
    plan_threads: int = option(0, "threads of each worker's candidate search and of its "
                               "OpenCV calls (0 = the usable cores shared among the local "
                               "workers; the plan is the same on any number)", low=0)
    candidates: int = option(32, "candidates per cell for the variety rules and the joint "
                             "assignment", low=5, high=256, affects="plan")
    mean_weight: float = option(0.0, "weight of the mean colour next to the 4x4 Lab grid "
                                "in distances", low=0.0, high=100.0, affects="plan")
    orientations: str = option("mirror", "orientations a tile may take: `none`, `mirror`, "
                               "`all` (also flips and, square tiles, quarter turns)",
                               choices=ORIENTATIONS, affects="plan")
    hysteresis: float = option(0.9, "keep a tile unless the best is closer than this "
                               "times its distance", low=0.0, high=1.0, affects="plan")
    max_uses: int = option(0, "hard cap on uses of one tile per frame (0 = none; "
                           "`use_cap` applies)", low=0, affects="plan")
    repeat_radius: int = option(2, "no tile (nor a near-duplicate) again within this many "
                                "cells", low=0, high=8, affects="plan")
    use_cap: float = option(1.0, "per-frame cap of ceil(use_cap x cells / groups) uses of "
                            "one group (0 = off)", low=0.0, high=1000.0, affects="plan")
    flat_spread: float = option(4.0, "tiles with a luma spread under this are blank and "
                                "exempt from the use cap (0 = none)", low=0.0, high=255.0,
                                affects="plan")
    unseen: float = option(0.1, "prefer tiles not on screen: distances x (1 + unseen x "
                           "uses on the canvas)", low=0.0, high=100.0, affects="plan")
    joint: bool = option(False, "min-cost assignment of a frame chosen afresh (first "
                         "frame, scene cut); off: the greedy passes alone", affects="plan")
    scene_cut: float = option(0.6, "share of the cells whose colour jumps (ΔE 6) that "
                              "makes a frame a scene cut", low=0.0, high=1.0, affects="plan")
    settle: int = option(4, "a marked cell waits this many still frames for its source to "
                         "move (0 = decided at once)", low=0, high=10000, affects="plan")
    recolour: float = option(0.9, "move each tile's mean colour this far towards its "
                             "cell's (not in cluster mode)", low=0.0, high=1.0,
                             affects="plan+paint")
    tone: float = option(0.0, "contrast matching strength (0 = off; with recolouring "
                         "only)", low=0.0, high=1.0, affects="paint")
    carry_tiles: bool = option(True, "start each segment from the previous one's last "
                               "tiles", affects="plan")
    shot_frames: int = option(32, "shortest shot planned on its own (at least 8): from a "
                              "blank canvas, in parallel with the others (shorter ones stay "
                              "in the shot before; 0 = one plan over the whole job)", low=0,
                              affects="plan")
    report: bool = option(True, "write `OUT.scores.json` (e.g. `clip.mp4.scores.json`)",
                          affects="paint")
    score_every: int = option(4, "score a sample: frames 0, N, 2N... (1 = every frame)",
                              low=1, high=1000, affects="paint")
    activity_threshold: float = option(10.0, "a pixel changed when its BGR L2 difference "
                                       "exceeds this (the reference's 16)", low=0.0,
                                       high=442.0, affects="plan")
    active_fraction: float = option(0.5, "a cell is marked when more than this share of "
                                    "it changed", low=0.0, high=1.0, affects="plan")
    segment_frames: int = option(0, "frames per cached segment, at least 8 (0 = sized to the "
                                 "job: 8 in whole batches, 64 to 256; fewer left over join "
                                 "the last)", low=0, affects="plan")
    seed: int = option(0, "matching seed; segments derive theirs from it", low=0,
                       high=2**32 - 1, affects="plan")
    workers: int = option(0, "worker processes at once, each planning or painting a "
                          "segment (0 = fit the cores and the memory)", low=0, high=1024)
    encoder: str = option("libx264", "ffmpeg encoder (`libx265`, `h264_nvenc`, "
                          "`hevc_nvenc`, ...)", affects="paint")
    crf: int = option(20, "constant quality (crf; cq for nvenc)", low=0, high=63,
                      affects="paint")
    preset: str = option("slow", "x264 preset: overnight, smaller files beat speed; "
                         "`ultrafast` for previews", affects="paint")
    encoder_options: str = option("", "extra ffmpeg output options for the encoder",
                                  affects="paint")
    encoder_tuning: str = option("mosaic", "x264 from preset `fast` down: `mosaic` = options "
                                 "for mosaic frames (at `slow` 60% less CPU, same PSNR), "
                                 "`preset` = its own", choices=("mosaic", "preset"),
                                 affects="paint")
    encoder_threads: int = option(0, "x264 threads per painter, and its OpenCV threads "
                                  "(0 = chosen with the workers)", low=0, high=256)
    max_width: int = option(0, "cap on the output width (0 = none; 4096 for H.264 level "
                            "5.2)", low=0, affects="plan")
    max_height: int = option(0, "cap on the output height (0 = none)", low=0,
                             affects="plan")
    audio_stream: int = option(0, "which audio stream to keep", low=0)
    ytdlp_format: str = option("bestvideo[height<=?480]+bestaudio/best[height<=?480]/best",
                               "yt-dlp format for URLs")

    @property
    def recolours(self) -> bool:
        """Whether tiles get recoloured (never in cluster mode, the reference's look)."""
        return self.recolour > 0 and self.matching != "cluster"


@dataclass(frozen=True)
class PhotoOptions:
    """Options of ``mosaic photo`` (defaults as the video's ``nearest`` mode)."""

    cols: int = option(100, "cells across (with `cell_size` 0); rows follow the aspect",
                       low=1, affects="output")
    cell_size: int = option(0, "source pixels per cell across (0 = from `cols`)", low=0,
                            affects="output")
    tile_px: int = option(0, "output pixels per cell across (0 = the index's tile width)",
                          low=0, affects="output")
    radius: int = option(3, "no tile (nor a near-duplicate) twice within this many cells "
                         "(0 = off)", low=0, affects="output")
    max_uses: int = option(0, "uses of one tile group in the whole picture at most "
                           "(0 = no cap)", low=0, affects="output")
    alpha: float = option(0.0, "weight of the source blended over the mosaic", low=0.0,
                          high=1.0, affects="output")
    recolour: float = option(0.9, "share of the way each tile's mean colour moves to its "
                             "cell's", low=0.0, high=1.0, affects="output")
    tone: float = option(0.0, "contrast matching strength (with recolouring only)",
                         low=0.0, high=1.0, affects="output")
    nprobe: int = option(4, "tile clusters probed per cell", low=1, affects="output")
    candidates: int = option(48, "candidates per cell for the hard rules", low=5, high=256,
                             affects="output")
    unseen: float = option(0.1, "prefer tiles not yet used: distances x (1 + unseen x "
                           "uses)", low=0.0, high=100.0, affects="output")
    quality: int = option(90, "JPEG quality", low=1, high=100, affects="output")


@dataclass(frozen=True)
class FaceOptions:
    """Options of ``mosaic faces`` (see :mod:`pipeline.faces`)."""

    size: tuple[int, int] = option((178, 218), "crop size WIDTHxHEIGHT (CelebA's)",
                                   affects="output", parse=crop_size, show=show_size)
    min_size: int = option(48, "smallest face box side kept, in source pixels", low=1,
                           affects="output")
    margin: float = option(0.4, "share of the face box's width added on each side",
                           low=0.0, high=5.0, affects="output")
    eyes: bool = option(True, "the false-positive filter (the frontal-face cascade's "
                        "second opinion)", affects="output")
    quality: int = option(95, "JPEG quality of the crops", low=1, high=100,
                          affects="output")


@dataclass(frozen=True)
class Config:
    """The whole configuration, one attribute per section."""

    index: IndexConfig = field(default_factory=IndexConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    photo: PhotoOptions = field(default_factory=PhotoOptions)
    faces: FaceOptions = field(default_factory=FaceOptions)


SECTIONS: dict[str, type] = {"index": IndexConfig, "render": RenderConfig,
                              "photo": PhotoOptions, "faces": FaceOptions}
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _declared(section: str) -> dict[str, dataclasses.Field]:
    """The fields of ``section``, by name."""
    return {f.name: f for f in fields(SECTIONS[section])}


def _values(config: Any, wanted: Callable[[str], bool]) -> dict[str, Any]:
    """``{name: value}`` of the options of ``config`` whose ``affects`` is ``wanted``."""
    return {f.name: getattr(config, f.name) for f in fields(config)
            if wanted(f.metadata["affects"])}


def plan_options(config: RenderConfig) -> dict[str, Any]:
    """The options that change a render's plan (its tile choices): they name the plan."""
    return _values(config, lambda a: a.startswith("plan"))


def paint_options(config: RenderConfig) -> dict[str, Any]:
    """The options that change a render's painted frames or their encoding: with the plan,
    they name the render job. Recolouring and contrast count only where tiles are
    recoloured (:attr:`RenderConfig.recolours`)."""
    paint = _values(config, lambda a: a.endswith("paint"))
    if not config.recolours:
        paint.update(recolour=0, tone=0)
    return paint


def index_options(config: IndexConfig) -> dict[str, Any]:
    """The options that change an index's artifacts (not its jobs or checkpoint size)."""
    return _values(config, lambda a: a == "index")


def _check_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    """``value`` converted to the type of option ``f`` (named ``key``) and checked against
    its declaration; :class:`ConfigError` naming ``key`` otherwise."""
    meta = f.metadata
    if meta["parse"] is not None:
        return meta["parse"](value, key)
    expected = _TYPES[f.type]
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
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{key}: must be one of {', '.join(meta['choices'])}, got {value!r}")
    low, high = meta["low"], meta["high"]
    if low is not None and (value < low or (high is not None and value > high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{key}: must be {bound}, got {value!r}")
    return value


def check_options(section: str, options: Any) -> Any:
    """Check every value of ``options`` (a section's dataclass, e.g. built from command-line
    flags) against its declaration; returns it, or raises :class:`ConfigError`."""
    for name, f in _declared(section).items():
        _check_value(f"{section}.{name}", f, getattr(options, name))
    return options


def _merge(base: dict[str, dict[str, Any]], overrides: dict[str, Any], origin: str) -> None:
    """Merge ``{section: {key: value}}`` into ``base`` in place, rejecting unknown names."""
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        known = _declared(section)
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            prefix = f"{origin}: " if origin.endswith(".toml") else ""
            try:
                base[section][key] = _check_value(f"{section}.{key}", known[key], value)
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
    known = _declared(section) if section in SECTIONS else {}
    if key in known and (known[key].type == "str" or known[key].metadata["parse"]) and \
            not isinstance(value, str):
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
        name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()
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
    config = Config(**{name: SECTIONS[name](**vals) for name, vals in merged.items()})
    _check_render(config)
    return config


def _check_render(config: Config) -> None:
    """The checks across options: the tile size string, the preset for x264, the encoder
    options' quoting, even output caps."""
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
