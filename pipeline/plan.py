"""The plan: the render's stateful pass, from source frames to per-frame tile choices.

Everything that carries state from frame to frame happens here, sequentially: the
activity mask, scene cuts, matching (cluster, refined or nearest), hysteresis, the
neighbour rule, the usage cap and the recolour differences. The result is compact: for
each frame, which cells change and to what (tile id, mirror flag, recolour difference,
contrast ratio).
Painting the frames from it is then a pure function of a chunk (:mod:`pipeline.paint`)
and runs anywhere, in any order.

Artifacts, in ``<cache>/plans/<plan key>/``:

* ``chunk-NNNNN.npz``: the plan of segment N (compressed, written atomically). It holds
  the canvas at the segment's start (``start_*``: what the previous segment ended on,
  so a still scene does not reshuffle at a boundary), the per-frame changes (``cells``,
  ``ids``, ``orients``, ``diffs``, ``ratios``, sliced by ``offsets``), each frame's
  active-cell count, and the state at its end (``end_*``), from which a killed plan resumes.
* ``manifest.json``: written last, once every chunk is there: the key, the frame range
  and each chunk's size and digest.

The plan key covers the input, the index, the frame range and every option that
changes a tile choice (the recolour strength among them: the search measures the error
left after recolouring); paint-only options (blend, encoder, crf, preset, scores) do not
enter it, so a re-render that changes only those reuses the plan.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.activity import QUIET_COLOUR, QUIET_GAIN, QUIET_SHARE, Decision, Settler
from pipeline.cache import (
    artifact_problem,
    atomic_output,
    digest_text,
    file_lock,
    record_artifact,
    write_json,
)
from pipeline.config import RenderConfig
from pipeline.execute import trim_heap
from pipeline.features import (
    area_means,
    block_means,
    colour_histogram,
    lab_grid_means,
    srgb_to_lab,
)
from pipeline.grid import ActivityTracker, Grid, cell_views
from pipeline.index import TILES, TileIndex
from pipeline.matching import (
    ClusterMatcher,
    TileAssigner,
    TileClusters,
    cluster_centroids,
    search_features,
    search_lists,
    top_clusters_by_l2,
)
from pipeline.metrics import luma, source_cells
from pipeline.video import VideoInfo, prefetch_frames
from pipeline.visibility import bank_spread, orient, orient_grids, orientations

log = logging.getLogger(__name__)

PLAN_VERSION = "4"  # bump when planning changes: invalidates cached plans
MANIFEST = "manifest.json"
DIFF_SCALE = 16  # recolour differences are stored in 1/16 of a colour level, int16
RATIO_SCALE = 64  # contrast ratios (cell over tile) are stored in 1/64, uint8 (0..3.98)
# options that act only when painting: changing them reuses the plan (not the recolour
# strength: the search chooses tiles by the error left after recolouring)
PAINT_ONLY = frozenset({"alpha", "report", "encoder", "crf", "preset",
                        "encoder_options", "encoder_threads", "workers", "audio_stream",
                        "ytdlp_format", "tone"})


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, start + count)`` of the source, planned and painted as ``number``."""

    number: int
    start: int
    count: int


def plan_segments(first: int, count: int, size: int) -> list[Segment]:
    """Cut ``count`` frames from ``first`` into segments of ``size`` frames."""
    return [Segment(k, first + k * size, min(size, count - k * size))
            for k in range(math.ceil(count / size))]


def segment_seed(seed: int, number: int) -> int:
    """The seed of one segment, derived from the job's seed and its number."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def recolours(config: RenderConfig) -> bool:
    """Whether tiles get recoloured (never in cluster mode, the reference's look)."""
    return config.recolour > 0 and config.matching != "cluster"


def plan_key(input_digest: str, index_digest: str, config: RenderConfig, first: int,
             count: int) -> str:
    """The digest naming a plan: input, index, frame range and the planning options."""
    params = {k: v for k, v in dataclasses.asdict(config).items() if k not in PAINT_ONLY}
    return digest_text(PLAN_VERSION, input_digest, index_digest,
                       json.dumps(params, sort_keys=True), str(first), str(count))


def chunk_path(plan_dir: Path, number: int) -> Path:
    """Where the plan of segment ``number`` lives."""
    return Path(plan_dir) / f"chunk-{number:05d}.npz"


@dataclass
class CanvasState:
    """What every cell shows: tile id (-1 = none), mirror flag, recolour difference,
    contrast ratio.

    Attributes
    ----------
    ids : ndarray (rows, cols), int64.
    orients : ndarray (rows, cols), uint8, orientation codes
        (:func:`pipeline.visibility.orient`: 0 as is, 1 mirrored, ...).
    diffs : ndarray (rows, cols, 3), int16, cell mean minus tile mean (BGR) in
        1/:data:`DIFF_SCALE` levels; a painter adds ``recolour`` times it to the tile.
    ratios : ndarray (rows, cols), uint8, the cell's contrast over the tile's (spread of
        the 4x4 luma sub-grid) in 1/:data:`RATIO_SCALE`; a painter scales the tile's
        contrast by it to the power ``tone`` (:func:`pipeline.paint.gains`).
    """

    ids: np.ndarray
    orients: np.ndarray
    diffs: np.ndarray
    ratios: np.ndarray

    @classmethod
    def empty(cls, grid: Grid) -> CanvasState:
        """A blank canvas: no tile anywhere."""
        return cls(np.full((grid.rows, grid.cols), -1, np.int64),
                   np.zeros((grid.rows, grid.cols), np.uint8),
                   np.zeros((grid.rows, grid.cols, 3), np.int16),
                   np.full((grid.rows, grid.cols), RATIO_SCALE, np.uint8))

    def copy(self) -> CanvasState:
        return CanvasState(self.ids.copy(), self.orients.copy(), self.diffs.copy(),
                           self.ratios.copy())

    @property
    def placed(self) -> bool:
        """Whether any cell has a tile."""
        return bool((self.ids >= 0).any())


@dataclass
class Tracking:
    """Where the activity mask and the settling stand after a frame, so that the next
    segment continues them (its first frame is then not all active).

    Attributes
    ----------
    reference : ndarray (H, W, 3), uint8, the activity mask's reference image.
    pending, waited : ndarrays (cells,), bool and int32: cells marked and waiting for
        motion, and for how many frames.
    lab : ndarray (cells, 3), float32, Lab cell colours of the last frame.
    """

    reference: np.ndarray
    pending: np.ndarray
    waited: np.ndarray
    lab: np.ndarray


@dataclass
class PlanChunk:
    """One segment's plan, as read back from ``chunk-NNNNN.npz`` (see the module doc).

    ``start_src_lab`` (rows, cols, 3) float32 is the Lab cell colour of the source frame
    just before the segment (stability scores continue across the boundary), or None.
    """

    number: int
    start: int
    count: int
    offsets: np.ndarray
    cells: np.ndarray
    ids: np.ndarray
    orients: np.ndarray
    diffs: np.ndarray
    ratios: np.ndarray
    active: np.ndarray
    start_state: CanvasState
    end_state: CanvasState
    start_src_lab: np.ndarray | None
    end_src_lab: np.ndarray
    end_tracking: Tracking | None = None

    def frame(self, i: int) -> tuple[np.ndarray, ...]:
        """Frame ``i``'s changes: cells (k,) int64, ids (k,) int64, orients (k,) uint8,
        diffs (k, 3) int16, ratios (k,) uint8."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return (self.cells[lo:hi].astype(np.int64), self.ids[lo:hi].astype(np.int64),
                self.orients[lo:hi], self.diffs[lo:hi], self.ratios[lo:hi])

    def tile_ids(self) -> np.ndarray:
        """Every tile id the segment shows, sorted and unique: (m,) int64."""
        start = self.start_state.ids[self.start_state.ids >= 0]
        return np.unique(np.concatenate([start, self.ids]).astype(np.int64))


def write_chunk(path: Path, key: str, seg: Segment, frames: list[tuple], active: list[int],
                start: CanvasState, end: CanvasState, start_src_lab: np.ndarray | None,
                end_src_lab: np.ndarray, tracking: Tracking) -> None:
    """Write one segment's plan atomically (``frames``: per frame (cells, ids, orients, diffs,
    ratios))."""
    sizes = [len(f[0]) for f in frames]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def cat(i: int, dtype: type, shape: tuple[int, ...] = ()) -> np.ndarray:
        parts = [np.asarray(f[i], dtype).reshape(-1, *shape) for f in frames]
        return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype)

    arrays = {
        "key": np.array(key), "meta": np.array([seg.number, seg.start, seg.count], np.int64),
        "offsets": offsets, "cells": cat(0, np.int32), "ids": cat(1, np.int32),
        "orients": cat(2, np.uint8), "diffs": cat(3, np.int16, (3,)), "ratios": cat(4, np.uint8),
        "active": np.asarray(active, np.int32),
        "start_ids": start.ids.astype(np.int32), "start_orients": start.orients,
        "start_diffs": start.diffs, "start_ratios": start.ratios,
        "end_ids": end.ids.astype(np.int32), "end_orients": end.orients, "end_diffs": end.diffs,
        "end_ratios": end.ratios, "end_src_lab": end_src_lab,
        "end_reference": tracking.reference, "end_pending": tracking.pending,
        "end_waited": tracking.waited, "end_cell_lab": tracking.lab,
        "start_src_lab": (start_src_lab if start_src_lab is not None
                          else np.zeros((0,), np.float32)),
    }
    with atomic_output(path) as f:
        _savez_fast(f, arrays)


_CHUNK_ZLIB_LEVEL = 1  # a third of the default level's time, for a few percent in size


def _savez_fast(f, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` at a fast zlib level: the same ``.npz`` format."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=_CHUNK_ZLIB_LEVEL, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


def read_chunk(path: Path, key: str | None = None) -> PlanChunk | None:
    """Read a chunk; None when it is missing, unreadable or (with ``key``) another plan's."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if key is not None and str(z["key"]) != key:
                return None
            number, start, count = (int(v) for v in z["meta"])
            lab = z["start_src_lab"]
            return PlanChunk(
                number, start, count, z["offsets"], z["cells"], z["ids"], z["orients"],
                z["diffs"], z["ratios"], z["active"],
                CanvasState(z["start_ids"].astype(np.int64), z["start_orients"],
                            z["start_diffs"], z["start_ratios"]),
                CanvasState(z["end_ids"].astype(np.int64), z["end_orients"], z["end_diffs"],
                            z["end_ratios"]),
                lab if lab.size else None, z["end_src_lab"],
                Tracking(z["end_reference"], z["end_pending"], z["end_waited"],
                         z["end_cell_lab"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        log.debug("plan chunk %s unusable: %s", path, exc)
        return None


def read_manifest(plan_dir: Path, key: str, full: bool = False) -> dict | None:
    """The plan's manifest when the plan is complete and its chunks intact: sizes and
    sample digests every time, whole digests with ``full``. A damaged chunk is said in
    one line and removed, so that it is planned again."""
    try:
        manifest = json.loads((Path(plan_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key:
        return None
    for number, record in enumerate(manifest.get("chunks", [])):
        path = chunk_path(plan_dir, number)
        if (problem := artifact_problem(path, record, full)) is not None:
            log.warning("plan chunk %s: %s; it will be planned again", path, problem)
            path.unlink(missing_ok=True)
            (Path(plan_dir) / MANIFEST).unlink(missing_ok=True)
            return None
    return manifest


def luma_grid(cells_bgr: np.ndarray) -> np.ndarray:
    """Each cell's or tile's 4x4 sub-grid of luma (0..255), as the eye sees it from a
    distance: ``cells_bgr`` (k, h, w, 3) uint8 -> (k, 16) float32."""
    if len(cells_bgr) == 0:
        return np.zeros((0, 16), np.float32)
    return luma(block_means(cells_bgr, 4).reshape(len(cells_bgr), 16, 3))


_SSIM_C2 = (0.03 * 255) ** 2  # SSIM's contrast constant, in squared levels


def contrast_ratios(cell_grid: np.ndarray, tile_grid: np.ndarray, orients: np.ndarray
                    ) -> np.ndarray:
    """The contrast gain that makes each placed tile look most like its cell from a
    distance, (k,) uint8 in 1/:data:`RATIO_SCALE` (0..3.98).

    With the cell's 4x4 luma spread a and its correlation rho with the tile's (in its
    orientation ``orients``, (k,) codes or bools), the tile's spread x that maximises
    SSIM's contrast-structure term ``(2 a x rho + C2) / (a^2 + x^2 + C2)`` is the positive root of
    ``a rho x^2 + C2 x - a rho (a^2 + C2) = 0`` (x = a when the two correlate perfectly,
    smaller as they correlate less, 0 when they do not); the gain is x over the tile's
    spread. ``cell_grid``, ``tile_grid`` (k, 16) float32 luma.
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


def cell_lab(frame_bgr: np.ndarray, grid: Grid) -> np.ndarray:
    """CIELAB of each cell's mean colour, (rows * cols, 3) float32, row-major."""
    return srgb_to_lab(area_means(frame_bgr, grid.cols, grid.rows)).reshape(-1, 3)


class Orientations:
    """The orientations a cell may take its tile in (:func:`pipeline.visibility.
    orientations`), on the search features (a ``g x g`` grid of 3 values per sub-cell,
    then any extra values, which no orientation moves)."""

    def __init__(self, codes: tuple[int, ...], grid: int) -> None:
        self.codes, self.grid = codes, grid
        perms = [orient(np.arange(grid * grid).reshape(1, grid, grid), c).reshape(-1)
                 for c in range(8)]
        # the grid seen in orientation c, turned back: its inverse permutation
        self._back = np.stack([np.argsort(p) for p in perms])

    def unturn(self, queries: np.ndarray, code: int | np.ndarray) -> np.ndarray:
        """Cell features (n, D) float32 turned back from orientation ``code`` (one code, or
        (n,) codes): a tile in that orientation is as far from the cell as the tile
        itself is from the result."""
        if np.isscalar(code) and code == 0:
            return queries
        n, g2 = len(queries), self.grid * self.grid
        cells = queries[:, :3 * g2].reshape(n, g2, 3)
        back = self._back[np.broadcast_to(np.asarray(code), (n,))]
        out = np.take_along_axis(cells, back[:, :, None], 1).reshape(n, 3 * g2)
        return np.concatenate([out, queries[:, 3 * g2:]], 1) if queries.shape[1] > 3 * g2 \
            else out

    def merge(self, found: list[tuple[np.ndarray, np.ndarray]], k: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each orientation's candidates (ids, squared distances), (n, k) each, in the
        order of :attr:`codes`, merged: every tile once, in its best orientation, the
        ``k`` nearest by distance, then id: (ids, distances, codes), (n, k)."""
        if len(found) == 1:
            ids, dist = found[0]
            return ids, dist, np.full(ids.shape, self.codes[0], np.uint8)
        ids = np.concatenate([f[0] for f in found], 1)
        dist = np.concatenate([f[1] for f in found], 1)
        codes = np.repeat(np.asarray(self.codes, np.uint8), found[0][0].shape[1])
        codes = np.broadcast_to(codes, ids.shape)
        order = np.lexsort((dist, ids), axis=1)  # by tile, nearest orientation first
        ids, dist, codes = (np.take_along_axis(a, order, 1) for a in (ids, dist, codes))
        again = np.zeros(ids.shape, bool)
        again[:, 1:] = ids[:, 1:] == ids[:, :-1]
        dist = np.where(again | (ids < 0), np.inf, dist)
        order = np.lexsort((ids, dist), axis=1)[:, :k]
        ids, dist, codes = (np.take_along_axis(a, order, 1) for a in (ids, dist, codes))
        return np.where(np.isfinite(dist), ids, -1), dist, codes


def flat_tiles(index: TileIndex, spread: float) -> np.ndarray | None:
    """Blank tiles, (N,) bool: a luma spread under ``spread`` (``render.flat_spread``:
    nothing to see in them, nothing to repeat; the use cap spares them,
    :class:`pipeline.assign.TileAssigner`); None for 0. Read from the bank in blocks
    (about 0.5 s for 42,000 tiles)."""
    return bank_spread(index.tiles) < spread if spread > 0 else None


_SEARCH_BLOCK = 8192  # queries searched at once (about 10 MB of scratch)


class Planner:
    """Plans the segments of one render job, one after the other.

    Parameters
    ----------
    info, grid : the source and its cell layout.
    index : the tile index (features and clusters; the tile bank only for tile means).
    config : the render options (paint-only ones are ignored).
    plan_dir : where the chunks go; ``key`` names the plan.
    """

    def __init__(self, info: VideoInfo, grid: Grid, index: TileIndex, config: RenderConfig,
                 plan_dir: Path, key: str) -> None:
        self.info, self.grid, self.config = info, grid, config
        self.plan_dir, self.key = Path(plan_dir), key
        self.tiles = TileClusters.from_labels(index.centers, np.asarray(index.labels))
        self.bins = int(index.manifest["params"]["hist_bins"])
        self.lab_grid = int(index.manifest["params"]["lab_grid"])
        self.cluster = ClusterMatcher(self.tiles, config.cell_clusters)
        th, tw = index.tiles.shape[1:3]
        self.orients = Orientations(orientations(config.orientations, th == tw),
                                    self.lab_grid)
        if config.matching != "cluster":
            # the search measures the error left after recolouring (by structure)
            self.lab = search_features(np.asarray(index.lab, dtype=np.float32),
                                       config.mean_weight, config.recolour)
            self.lab_centroids = cluster_centroids(self.tiles, self.lab)
            # variety rules per near-duplicate group
            self.assigner = TileAssigner(grid.rows, grid.cols, self.lab, config.hysteresis,
                                         config.max_uses, groups=index.groups,
                                         radius=config.repeat_radius, use_cap=config.use_cap,
                                         unseen=config.unseen, joint=config.joint,
                                         flat=flat_tiles(index, config.flat_spread))
        self.bank_path = Path(index.path) / TILES  # tiles are read only for their means
        self.recolour = recolours(config)
        self._tile_means = np.full((len(index.tiles), 3), np.nan, np.float32)
        self._tile_grids = np.zeros((len(index.tiles), 16), np.float32)

    # -- resuming -------------------------------------------------------------------
    def missing(self, segments: list[Segment]) -> list[Segment]:
        """The segments still to plan: from the first one without a valid chunk on.

        Each chunk starts from the previous one's end, so everything after a missing
        chunk is planned again.
        """
        for i, seg in enumerate(segments):
            if read_chunk(chunk_path(self.plan_dir, seg.number), self.key) is None:
                return segments[i:]
        return []

    def run(self, segments: list[Segment], on_chunk: Callable[[Segment], None],
            stop: threading.Event | None = None) -> None:
        """Plan what is missing of ``segments`` in order, then write the manifest.

        Holds the plan directory's lock (another job planning the same frames is waited
        for, then its chunks are used). ``on_chunk`` is called for every segment whose
        chunk exists, as it lands; ``stop`` ends the pass early (without a manifest).
        """
        # the search is many small matrix products: BLAS threads only add overhead there,
        # and the plan shares the cores with the painters
        with file_lock(self.plan_dir / ".lock", f"the plan {self.key[:12]}"), \
                threadpool_limits(1, user_api="blas"):
            todo = self.missing(segments)
            for seg in segments[:len(segments) - len(todo)]:
                on_chunk(seg)
            state, src_lab, tracking = CanvasState.empty(self.grid), None, None
            if todo and todo[0].number > 0 and self.config.carry_tiles:
                prev = read_chunk(chunk_path(self.plan_dir, todo[0].number - 1), self.key)
                if prev is None:
                    raise RuntimeError(f"plan chunk {todo[0].number - 1} vanished")
                state, src_lab, tracking = prev.end_state, prev.end_src_lab, prev.end_tracking
            for seg in todo:
                if stop is not None and stop.is_set():
                    return
                if not self.config.carry_tiles:
                    state, src_lab, tracking = CanvasState.empty(self.grid), None, None
                state, src_lab, tracking = self.plan_segment(seg, state, src_lab, tracking)
                trim_heap()  # between segments: fragmentation must not add up
                on_chunk(seg)
            self.finish(segments)

    def finish(self, segments: list[Segment]) -> dict:
        """Write the manifest (last): the key, the range and each chunk's size and digest."""
        chunks = [record_artifact(chunk_path(self.plan_dir, seg.number)) for seg in segments]
        manifest = {"key": self.key, "version": PLAN_VERSION, "first": segments[0].start,
                    "frames": sum(s.count for s in segments),
                    "grid": [self.grid.rows, self.grid.cols], "chunks": chunks}
        write_json(self.plan_dir / MANIFEST, manifest)
        return manifest

    # -- one segment ----------------------------------------------------------------
    def plan_segment(self, seg: Segment, start: CanvasState, start_src_lab: np.ndarray | None,
                     tracking: Tracking | None = None
                     ) -> tuple[CanvasState, np.ndarray, Tracking]:
        """Plan one segment from ``start`` (and, carried over, the activity mask and the
        settling where ``tracking`` left them); writes its chunk and returns its end
        state, the Lab cell colours of its last source frame and its tracking."""
        cfg, grid = self.config, self.grid
        tracker = ActivityTracker(grid, cfg.activity_threshold, cfg.active_fraction)
        carried = start.placed
        if not carried:
            tracking = None
        if tracking is not None:  # the mask goes on: the first frame is not all active
            tracker.restore(tracking.reference)
        self.cluster.reset(segment_seed(cfg.seed, seg.number))
        state = start.copy()
        changes: list[tuple] = []
        active_counts: list[int] = []
        last_frame = None
        frames_iter = prefetch_frames(self.info, seg.start, seg.count)
        try:
            settle = Settler(grid.cells, cfg.settle, tracking, cfg.scene_cut)
            for b0 in range(0, seg.count, cfg.cluster_batch_frames):
                frames, decisions = [], []
                for _ in range(min(cfg.cluster_batch_frames, seg.count - b0)):
                    frame = next(frames_iter)
                    frames.append(frame)
                    changed = tracker.update(frame).ravel()
                    first = b0 == 0 and len(frames) == 1
                    # a new mask (first frame of all, or after a reset) decides at once;
                    # a canvas with no tile yet is chosen afresh
                    decision = settle.decide(changed, cell_lab(frame, grid),
                                             first and tracking is None)
                    decisions.append(self._gate(decision, first and not carried))
                active = [d.cells for d in decisions]
                views = [cell_views(f, grid)[a] for f, a in zip(frames, active, strict=True)]
                plans = self._plan_batch(views, active)
                for i, cells in enumerate(active):
                    placed, ids, orients = self._choose(cells, plans[i], state, decisions[i],
                                                        views[i])
                    diffs = np.zeros((len(placed), 3), np.int16)
                    ratios = np.full(len(placed), RATIO_SCALE, np.uint8)
                    if self.recolour and len(placed):  # every active cell is re-placed
                        means, grids = self._tile_stats(ids)
                        seen = views[i][np.searchsorted(cells, placed)]
                        cell_mean = seen.reshape(len(placed), -1, 3).mean(1)
                        diffs = np.rint((cell_mean - means) * DIFF_SCALE)
                        diffs = np.clip(diffs, -255 * DIFF_SCALE, 255 * DIFF_SCALE)
                        diffs = diffs.astype(np.int16)
                        ratios = contrast_ratios(luma_grid(seen), grids, orients)
                    r, c = np.divmod(placed, grid.cols)
                    state.ids[r, c], state.orients[r, c], state.diffs[r, c] = ids, orients, diffs
                    state.ratios[r, c] = ratios
                    changes.append((placed, ids, orients, diffs, ratios))
                    active_counts.append(len(cells))
                last_frame = frames[-1]
        finally:
            frames_iter.close()
        end_src_lab = source_cells(last_frame, grid)[1]
        end_tracking = Tracking(tracker.reference.copy(), settle.pending.copy(),
                                settle.waited.copy(), settle.prev.copy())
        write_chunk(chunk_path(self.plan_dir, seg.number), self.key, seg, changes,
                    active_counts, start, state, start_src_lab if carried else None,
                    end_src_lab, end_tracking)
        return state, end_src_lab, end_tracking

    def _tile_stats(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean BGR colour (0..255), (k, 3) float32, and 4x4 luma grid (:func:`luma_grid`),
        (k, 16) float32, of tiles ``ids`` (computed on first use)."""
        missing = np.unique(ids[np.isnan(self._tile_means[ids, 0])])
        if len(missing):
            # a map that lives for this read only: the pages of the tiles read do not stay
            # resident, so the plan's memory does not grow with the tiles it has used
            bank = np.load(self.bank_path, mmap_mode="r", allow_pickle=False)
            tiles = np.asarray(bank[missing])
            del bank
            self._tile_means[missing] = block_means(tiles, 1).reshape(-1, 3) * 255
            self._tile_grids[missing] = luma_grid(tiles)
        return self._tile_means[ids], self._tile_grids[ids]

    def _plan_batch(self, views: list[np.ndarray], active: list[np.ndarray]) -> list:
        """Batch-level matching, all frames of a batch at once: cluster mode's tiles, or
        the other modes' queries and candidate tiles (the per-frame choice comes later)."""
        cfg = self.config
        if not any(len(a) for a in active):  # a still stretch: nothing to match
            none = np.zeros(0, np.int64)
            return [(none, np.zeros(0, np.uint8)) if cfg.matching == "cluster" else
                    (None, none, none, none) for _ in active]
        split = np.cumsum([len(a) for a in active])[:-1]
        if cfg.matching != "nearest":
            hists = np.concatenate([colour_histogram(v, self.bins) for v in views])
        if cfg.matching == "cluster":
            ids, flips = self.cluster.match(hists)  # mirrored or not: codes 1 and 0
            return list(zip(np.split(ids, split), np.split(flips.astype(np.uint8), split),
                            strict=True))
        queries = search_features(lab_grid_means(np.concatenate(views), self.lab_grid),
                                  cfg.mean_weight, cfg.recolour)
        coarse = (self.cluster.coarse(hists, cfg.refine_clusters)
                  if cfg.matching == "refined" else None)

        def search(lo: int, code: int) -> tuple[np.ndarray, np.ndarray]:
            # a tile in orientation ``code`` against the cell is the tile as it is against
            # the cell turned back: the same distance, searched in the tiles' own features
            q = self.orients.unturn(queries[lo:lo + _SEARCH_BLOCK], code)
            probes = (coarse[lo:lo + _SEARCH_BLOCK] if coarse is not None else
                      top_clusters_by_l2(q, self.lab_centroids, cfg.nprobe))
            return search_lists(q, probes, self.tiles, self.lab, cfg.candidates)

        # in blocks of queries: the distances to the centroids and the search's scratch (a
        # slot per query, probe and candidate) stay bounded however many cells a batch of
        # frames has active (a scene cut at 5120x2880 is 14,400 of them per frame)
        parts = [self.orients.merge([search(lo, c) for c in self.orients.codes],
                                    cfg.candidates)
                 for lo in range(0, len(queries), _SEARCH_BLOCK)]
        cand = [np.concatenate([p[i] for p in parts]) for i in range(3)]
        return list(zip(np.split(queries, split), *(np.split(c, split) for c in cand),
                        strict=True))

    def _gate(self, decision: Decision, cold: bool) -> Decision:
        """The decision as this matching mode can carry it out: on a ``cold`` canvas (no
        tile yet) every cell is chosen afresh; cluster mode, which cannot tell a clearly
        better tile, leaves quiet cells as they are."""
        if cold:
            return Decision(decision.cells, np.zeros(len(decision.cells), bool), True)
        if self.config.matching == "cluster" and decision.quiet.any():
            loud = ~decision.quiet
            return Decision(decision.cells[loud], decision.quiet[loud], decision.cut)
        return decision

    def _stalest(self, cells: np.ndarray, quiet: np.ndarray, seen: np.ndarray,
                 cand_ids: np.ndarray, cand_d: np.ndarray, current: np.ndarray
                 ) -> np.ndarray:
        """Which quiet cells may switch tiles this frame, (j,) positions into ``cells``:
        those whose tile has gone clearly stale (a candidate past the hysteresis margin,
        with at least :data:`QUIET_GAIN` less error per sub-cell), at most
        :data:`QUIET_SHARE` of the grid's cells a frame, the largest gains first. The others only
        get their colour refreshed: a still cell never flickers, however long it waits,
        and a slowly changing one catches up."""
        pos = np.flatnonzero(quiet & (current[cells] >= 0))
        cur = current[cells[pos]]
        diff = seen[pos] - self.lab[cur]
        own = (diff * diff).sum(1)
        other = np.where(cand_ids[pos] == cur[:, None], np.inf, cand_d[pos]).min(1)
        per_sub = np.float32(self.lab_grid * self.lab_grid)
        gain = np.sqrt(own / per_sub) - np.sqrt(np.minimum(other, own) / per_sub)
        ok = (other < np.float32(self.config.hysteresis) ** 2 * own) & (gain >= QUIET_GAIN)
        budget = max(1, int(QUIET_SHARE * self.grid.cells))
        return pos[ok][np.argsort(-gain[ok], kind="stable")[:budget]]

    def _choose(self, cells: np.ndarray, plan, state: CanvasState, decision: Decision,
                views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tiles for one frame's active cells; returns the cells to (re)place with them."""
        if self.config.matching == "cluster":
            return cells, plan[0], plan[1]
        if len(cells) == 0:
            return cells, np.zeros(0, np.int64), np.zeros(0, np.uint8)
        queries, cand_ids, cand_d, cand_codes = plan
        current = state.ids.ravel()
        held = state.orients.ravel()[cells]
        # the cells as their current tiles see them (hysteresis weighs those tiles' costs)
        seen = self.orients.unturn(queries, held)
        quiet = decision.quiet
        margin = None
        if quiet.any():
            margin = np.where(quiet, np.float32(0), np.float32(self.config.hysteresis))
            margin[self._stalest(cells, quiet, seen, cand_ids, cand_d, current)] = \
                self.config.hysteresis
        ids = self.assigner.assign(cells, seen, cand_ids, cand_d, current,
                                   decision.cut & ~quiet, margin)
        # a kept tile keeps its orientation; a new one takes its candidate's
        hit = cand_ids == ids[:, None]
        codes = np.where(ids == current[cells], held,
                         cand_codes[np.arange(len(ids)), hit.argmax(1)]).astype(np.uint8)
        moved = (ids != current[cells]) | (codes != held)
        if self.recolour:  # re-placed: recoloured again (quietly only where it pays)
            moved |= ~quiet
            if quiet.any():
                moved[self._recolours(cells, quiet & ~moved, views, state,
                                      int(quiet[moved].sum()))] = True
        return cells[moved], ids[moved], codes[moved]

    def _recolours(self, cells: np.ndarray, kept: np.ndarray, views: np.ndarray,
                   state: CanvasState, switched: int) -> np.ndarray:
        """Quiet cells that keep their tile but get its colour refreshed, (j,) positions
        into ``cells``: those whose colour has drifted by :data:`QUIET_COLOUR` levels or
        more that a refresh would correct, largest first, within what the frame's quiet
        budget (:data:`QUIET_SHARE` of the cells) leaves after ``switched`` quiet switches.
        A colour change in a still cell is seen; one step now beats many small ones."""
        pos = np.flatnonzero(kept)
        budget = max(1, int(QUIET_SHARE * self.grid.cells)) - switched
        if budget <= 0 or not len(pos):
            return pos[:0]
        r, c = np.divmod(cells[pos], self.grid.cols)
        tile_mean, _ = self._tile_stats(state.ids[r, c])
        now = views[pos].reshape(len(pos), -1, 3).mean(1)
        shown = tile_mean + np.rint(state.diffs[r, c] * np.float32(
            self.config.recolour / DIFF_SCALE))
        after = (1 - np.float32(self.config.recolour)) * (now - tile_mean)
        gain = np.abs(now - shown).max(1) - np.abs(after).max(1)
        ok = gain >= QUIET_COLOUR
        return pos[ok][np.argsort(-gain[ok], kind="stable")[:budget]]
