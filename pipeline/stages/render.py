"""The ``render`` stage: video (+ tile index) -> mosaic video with the source's audio.

The frame range is cut into fixed-length segments. Each segment is independent: it
starts with every cell active and its own seeded state, is encoded to its own file
(``seg-NNNNN.mp4``, renamed into place when complete) and is then listed in
``segments.json``. The last step joins the segments with the concat demuxer (stream
copy), adds the audio, and renames the result over the output path; ``done.json``
records it. The work directory is keyed by the input's content digest, the index's
digest, every render parameter and the frame range, so a rerun of the same command
reuses everything and a changed parameter starts a new job.

Three workers overlap: a reader thread (ffmpeg decoding into a bounded queue), the
compute loop (activity, features, matching, composing, blending) and a writer thread
feeding ffmpeg's encoder (its own process). Memory is bounded by the queues and one
clustering batch, not by the video's length.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.cache import digest_file, digest_text, write_json, write_npz
from pipeline.compose import Canvas, blend
from pipeline.config import RenderConfig
from pipeline.errors import ConfigError, VideoError
from pipeline.features import block_means, colour_histogram, lab_grid_means
from pipeline.grid import ActivityTracker, Grid, cell_views, make_grid
from pipeline.index import TileIndex, load_index, map_tiles
from pipeline.matching import (
    ClusterMatcher,
    TileAssigner,
    TileClusters,
    cluster_centroids,
    search_features,
    search_lists,
    top_clusters_by_l2,
)
from pipeline.metrics import SUB, FrameScorer, Scores
from pipeline.video import (
    AudioInfo,
    FrameReader,
    FrameWriter,
    VideoInfo,
    concat_and_mux,
    download,
    encoder_args,
    is_url,
    output_size_ok,
    probe,
)

log = logging.getLogger(__name__)

RENDER_VERSION = "1"  # bump when rendering changes: invalidates cached segments
SEGMENTS = "segments.json"
DONE = "done.json"
_QUEUE_FRAMES = 6  # decoded frames waiting for compute
_OUT_BUFFERS = 3  # rendered frames waiting for the encoder


@dataclass
class RenderReport:
    """What one run did."""

    out: Path
    frames: int = 0
    rendered: int = 0
    seconds: float = 0.0
    render_seconds: float = 0.0
    active_share: float = 0.0
    segments_cached: int = 0
    up_to_date: bool = False
    size: int = 0
    audio: bool = False
    grid: tuple[int, int] = (0, 0)
    out_size: tuple[int, int] = (0, 0)
    scores: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, start + count)`` of the source, rendered as segment ``number``."""

    number: int
    start: int
    count: int


def frame_range(info: VideoInfo, start_s: float = 0.0, duration_s: float | None = None,
                max_frames: int | None = None) -> tuple[int, int]:
    """First frame and number of frames to render, from seconds and/or a frame cap."""
    if start_s < 0 or (duration_s is not None and duration_s <= 0) or (
            max_frames is not None and max_frames < 1):
        raise ConfigError("--start must be >= 0, --duration > 0 and --frames >= 1")
    first = round(start_s * info.rate)
    if first >= info.frames:
        raise VideoError(f"{info.path}: --start {start_s} is past the end "
                         f"({info.frames / info.rate:.2f} s)")
    count = info.frames - first
    if duration_s is not None:
        count = min(count, max(1, round(duration_s * info.rate)))
    if max_frames is not None:
        count = min(count, max_frames)
    return first, count


def plan_segments(first: int, count: int, size: int) -> list[Segment]:
    """Cut ``count`` frames from ``first`` into segments of ``size`` frames."""
    return [Segment(k, first + k * size, min(size, count - k * size))
            for k in range(math.ceil(count / size))]


def segment_seed(seed: int, number: int) -> int:
    """The seed of one segment, derived from the job's seed and its number."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _pick_audio(info: VideoInfo, wanted: int) -> AudioInfo | None:
    if not info.audio:
        log.info("notice: %s has no audio track; the output will be video only", info.path)
        return None
    if wanted >= len(info.audio):
        raise ConfigError(f"render.audio_stream: {wanted} asked, but {info.path} has "
                          f"{len(info.audio)} audio stream(s) (numbered from 0)")
    return info.audio[wanted]


class _Worker(threading.Thread):
    """A daemon thread that remembers the exception that ended it."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(daemon=True, name=name)
        self._fn, self.error = target, None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # handed to the main thread
            self.error = exc


_END = object()


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put into a bounded queue unless ``stop`` is set; returns False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _SegmentRenderer:
    """Render segments to files with overlapped decode, compute and encode."""

    def __init__(self, info: VideoInfo, grid: Grid, index: TileIndex, config: RenderConfig,
                 work: Path, on_done: Callable[[Segment, dict], None], bar: tqdm) -> None:
        self.info, self.grid, self.index, self.config = info, grid, index, config
        self.work, self.on_done, self.bar = work, on_done, bar
        self.tiles = TileClusters.from_labels(index.centers, np.asarray(index.labels))
        self.codec = encoder_args(config.encoder, config.crf, config.preset,
                                  config.encoder_options)
        self.bins = int(index.manifest["params"]["hist_bins"])
        self.lab_grid = int(index.manifest["params"]["lab_grid"])
        self.cluster = ClusterMatcher(self.tiles, config.cell_clusters)
        self._tail: tuple[int, dict] | None = None
        if config.matching != "cluster":
            self.lab = search_features(np.asarray(index.lab, dtype=np.float32),
                                       config.mean_weight, config.recolour)
            self.lab_centroids = cluster_centroids(self.tiles, self.lab)
            # variety rules per near-duplicate group (issue 10)
            self.assigner = TileAssigner(grid.rows, grid.cols, self.lab, config.hysteresis,
                                         config.max_uses, groups=index.groups,
                                         radius=config.repeat_radius, use_cap=config.use_cap,
                                         unseen=config.unseen, joint=config.joint)
        self.bank = map_tiles(index.path)  # all resident from the start: flat memory
        # cluster mode is the reference's look: it never recolours
        self.recolour = config.recolour if config.matching != "cluster" else 0.0
        # mean BGR (0..255) of each tile, computed the first time it is placed
        self._tile_means = np.full((len(self.bank), 3), np.nan, np.float32)
        self._stop = threading.Event()
        self._frames: queue.Queue = queue.Queue(_QUEUE_FRAMES)
        self._out: queue.Queue = queue.Queue(_OUT_BUFFERS)
        self._free: queue.Queue = queue.Queue()
        for _ in range(_OUT_BUFFERS + 1):
            self._free.put(np.empty((grid.out_h, grid.out_w, 3), np.uint8))

    def run(self, segments: list[Segment]) -> None:
        """Render ``segments``; each is reported to ``on_done`` once its file is in place."""
        reader = _Worker(lambda: self._read(segments), "mosaic-reader")
        writer = _Worker(self._write, "mosaic-writer")
        reader.start()
        writer.start()
        try:
            self._compute(segments, reader, writer)
            _put(self._out, _END, self._stop)
            while writer.is_alive():
                writer.join(0.1)
                if writer.error:
                    break
        finally:
            self._stop.set()
            reader.join()
            writer.join()
        for worker in (reader, writer):
            if worker.error is not None:
                raise worker.error

    # -- reader thread -------------------------------------------------------------
    def _read(self, segments: list[Segment]) -> None:
        last = self.info.frames - 1
        for seg in segments:
            slack = 2 if seg.start + seg.count - 1 >= last - 1 else 0
            reader = FrameReader(self.info, seg.start, seg.count, slack=slack)
            try:
                for frame in reader:
                    if not _put(self._frames, frame, self._stop):
                        return
            finally:
                reader.close()
        _put(self._frames, _END, self._stop)

    def _next_frame(self, reader: _Worker) -> np.ndarray:
        while True:
            try:
                item = self._frames.get(timeout=0.1)
            except queue.Empty:
                if reader.error is not None:
                    raise reader.error from None
                if not reader.is_alive():
                    raise VideoError(f"{self.info.path}: the decoder stopped early") from None
                continue
            if item is _END:
                raise VideoError(f"{self.info.path}: the decoder gave fewer frames than planned")
            return item

    # -- compute (main thread) -------------------------------------------------------
    def _compute(self, segments: list[Segment], reader: _Worker, writer: _Worker) -> None:
        cfg, grid = self.config, self.grid
        tracker = ActivityTracker(grid, cfg.activity_threshold, cfg.active_fraction)
        canvas = Canvas(grid, self.bank, track=SUB if cfg.report else 0)
        scratch = np.empty((grid.out_h, grid.out_w, 3), np.uint8)
        for seg in segments:
            tracker.reset()
            self.cluster.reset(segment_seed(cfg.seed, seg.number))
            tail = self._start_state(seg)
            canvas.reset(tail.get("ids"), tail.get("flips"), tail.get("shifts"))
            scorer = FrameScorer(grid, self.index.groups) if cfg.report else None
            if scorer is not None:
                scorer.restore(tail)
            carried = "ids" in tail
            seg_active = 0
            _put(self._out, ("start", seg), self._stop)
            for b0 in range(0, seg.count, cfg.cluster_batch_frames):
                frames, active = [], []
                for _ in range(min(cfg.cluster_batch_frames, seg.count - b0)):
                    frame = self._next_frame(reader)
                    frames.append(frame)
                    active.append(np.flatnonzero(tracker.update(frame).ravel()))
                # the active cells' pixels only: a batch's memory follows its activity
                views = [cell_views(f, grid)[a] for f, a in zip(frames, active, strict=True)]
                plans = self._plan_batch(views, active)
                for i, (frame, cells) in enumerate(zip(frames, active, strict=True)):
                    first = b0 == 0 and i == 0
                    free = (first and not carried) or (
                        not first and len(cells) > cfg.scene_cut * grid.cells)
                    cells, ids, flips = self._choose(cells, plans[i], canvas, free)
                    shift = None
                    if self.recolour > 0 and len(cells):
                        # with recolouring every active cell is (re)placed, in order
                        cell_mean = views[i].reshape(len(cells), -1, 3).mean(1)
                        shift = self.recolour * (cell_mean - self._means_of(ids))
                    change = canvas.place(cells, ids, flips, shift, measure=scorer is not None)
                    if scorer is not None:
                        per_cell = np.zeros(grid.cells, np.float32)
                        per_cell[cells] = change
                        scorer.update(frame, None, canvas.ids, canvas.flips,
                                      per_cell.reshape(grid.rows, grid.cols),
                                      canvas.sub, canvas.sub_lab)
                    out = self._free_buffer(writer)
                    blend(canvas.image, frame, cfg.alpha, out, scratch)
                    if writer.error is not None or not _put(self._out, out, self._stop):
                        raise writer.error or RuntimeError("encoder stopped")
                    seg_active += len(active[i])
                    self.bar.update(1)
            state = {"ids": canvas.ids.copy(), "flips": canvas.flips.copy(),
                     "shifts": canvas.shifts.copy()}
            if scorer is not None:
                state.update(scorer.state())
            write_npz(tail_path(self.work, seg), **state)
            self._tail = (seg.number, state)
            _trim_heap()  # between segments: fragmentation must not add up over a video
            stats = {"frames": seg.count, "active_cells": seg_active,
                     "cells": seg.count * grid.cells}
            if scorer is not None:
                stats["scores"] = scorer.scores.to_json()
            _put(self._out, ("end", seg, stats), self._stop)

    def _means_of(self, ids: np.ndarray) -> np.ndarray:
        """Mean BGR colour (0..255) of tiles ``ids``, (k, 3) float32."""
        missing = np.unique(ids[np.isnan(self._tile_means[ids, 0])])
        if len(missing):
            self._tile_means[missing] = block_means(self.bank[missing], 1).reshape(-1, 3) * 255
        return self._tile_means[ids]

    def _free_buffer(self, writer: _Worker) -> np.ndarray:
        """An output buffer the encoder is done with (raises if the encoder died)."""
        while True:
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                if writer.error is not None:
                    raise writer.error from None
                if not writer.is_alive():
                    raise RuntimeError("the encoder thread stopped") from None

    def _start_state(self, seg: Segment) -> dict[str, np.ndarray]:
        """The previous segment's last tiles (in memory, or stored with it), or nothing."""
        if not self.config.carry_tiles or seg.number == 0:
            return {}
        if self._tail is not None and self._tail[0] == seg.number - 1:
            return self._tail[1]
        with np.load(tail_path(self.work, Segment(seg.number - 1, 0, 0))) as z:
            return {k: z[k] for k in z.files}

    def _plan_batch(self, views: list[np.ndarray], active: list[np.ndarray]) -> list:
        """Batch-level matching, all frames of a batch at once: cluster mode's tiles, or
        the other modes' queries and candidate tiles (the per-frame choice comes later)."""
        cfg = self.config
        split = np.cumsum([len(a) for a in active])[:-1]
        if cfg.matching != "nearest":
            hists = np.concatenate([colour_histogram(v, self.bins)
                                    for v in views])
        if cfg.matching == "cluster":
            ids, flips = self.cluster.match(hists)
            return list(zip(np.split(ids, split), np.split(flips, split), strict=True))
        queries = self._queries(np.concatenate(views))
        if cfg.matching == "refined":
            probes = self.cluster.coarse(hists, cfg.refine_clusters)
        else:
            probes = top_clusters_by_l2(queries, self.lab_centroids, cfg.nprobe)
        cand_ids, cand_d = search_lists(queries, probes, self.tiles, self.lab, cfg.candidates)
        return list(zip(np.split(queries, split), np.split(cand_ids, split),
                        np.split(cand_d, split), strict=True))

    def _queries(self, cell_views_bgr: np.ndarray) -> np.ndarray:
        """Cells' search features: the 4x4 Lab grid as recolouring will leave it, plus the
        weighted mean Lab colour (:func:`search_features`)."""
        return search_features(lab_grid_means(cell_views_bgr, self.lab_grid),
                               self.config.mean_weight, self.config.recolour)

    def _choose(self, cells: np.ndarray, plan, canvas: Canvas,
                free: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tiles for one frame's active cells; returns the cells to (re)place with them."""
        cfg = self.config
        if cfg.matching == "cluster":
            return cells, plan[0], plan[1]
        if len(cells) == 0:
            return cells, np.zeros(0, np.int64), np.zeros(0, bool)
        queries, cand_ids, cand_d = plan
        current = canvas.ids.ravel()
        ids = self.assigner.assign(cells, queries, cand_ids, cand_d, current, free)
        if self.recolour == 0:  # unchanged tiles need no placing
            moved = ids != current[cells]
            cells, ids = cells[moved], ids[moved]
        return cells, ids, np.zeros(len(cells), bool)

    # -- writer thread -------------------------------------------------------------
    def _write(self) -> None:
        encoder: FrameWriter | None = None
        tmp: Path | None = None
        try:
            while True:
                try:
                    item = self._out.get(timeout=0.1)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                if item is _END:
                    return
                if isinstance(item, np.ndarray):
                    assert encoder is not None
                    encoder.write(item)
                    self._free.put(item)
                elif item[0] == "start":
                    seg = item[1]
                    tmp = self.work / f".seg-{seg.number:05d}.mp4.tmp"
                    encoder = FrameWriter(tmp, self.grid.out_w, self.grid.out_h,
                                          self.info.rate, self.codec)
                else:
                    _, seg, stats = item
                    assert encoder is not None and tmp is not None
                    encoder.close()
                    tmp.replace(segment_path(self.work, seg))
                    encoder, tmp = None, None
                    self.on_done(seg, stats)
        finally:
            if encoder is not None:
                encoder.abort()
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def segment_path(work: Path, seg: Segment) -> Path:
    """Where segment ``seg`` of a job lives."""
    return work / f"seg-{seg.number:05d}.mp4"


def report_path(out: Path) -> Path:
    """The quality report written next to an output video."""
    return out.with_name(out.stem + ".scores.json")


def tail_path(work: Path, seg: Segment) -> Path:
    """The last tiles of segment ``seg`` (and scoring state): the next one starts there."""
    return work / f"seg-{seg.number:05d}.tail.npz"


def _job_key(input_digest: str, index: TileIndex, config: RenderConfig, first: int,
             count: int) -> str:
    params = json.dumps(dataclasses.asdict(config), sort_keys=True)
    return digest_text(RENDER_VERSION, input_digest, index.digest, params, str(first),
                       str(count))


def _load_done_segments(work: Path, key: str) -> dict[str, dict]:
    try:
        state = json.loads((work / SEGMENTS).read_text())
    except (OSError, ValueError):
        return {}
    return state.get("segments", {}) if state.get("key") == key else {}


def resolve_input(video: str, cache_dir: Path, ytdlp_format: str) -> Path:
    """A local path as it is (it must exist), or a URL downloaded once into the cache."""
    if is_url(video):
        return download(video, cache_dir / "downloads", ytdlp_format)
    path = Path(video)
    if not path.exists():
        raise VideoError(f"{video}: no such file")
    return path


def default_output(video: str, cache_dir: Path) -> Path:
    """``<cache>/renders/<name>-mosaic.mp4`` for a path or URL."""
    stem = Path(video.split("?")[0].rstrip("/")).stem or "video"
    return cache_dir / "renders" / f"{stem}-mosaic.mp4"


def run_render(video: str, index_dir: str | Path, out: str | Path | None,
               config: RenderConfig, cache_dir: str | Path, start_s: float = 0.0,
               duration_s: float | None = None, max_frames: int | None = None,
               progress: bool = True) -> RenderReport:
    """Render ``video`` as a mosaic of the tiles in ``index_dir`` into ``out``.

    Raises :class:`VideoError` for a missing, unreadable, truncated or undownloadable
    input and :class:`TileIndexError` for a missing index; the output path is written
    only once everything succeeded.
    """
    started = time.perf_counter()
    _steady_heap()
    cache_dir = Path(cache_dir)
    index = load_index(index_dir)
    source = resolve_input(video, cache_dir, config.ytdlp_format)
    info = probe(source)
    out = Path(out) if out else default_output(video, cache_dir)
    grid = make_grid(info.height, info.width, index.tiles.shape[1:3], config.scale,
                     config.max_width, config.max_height)
    if not output_size_ok(grid.out_w, grid.out_h):
        log.info("note: %dx%d output is beyond H.264 level 5.2; some players will not play "
                 "it (cap it with render.max_width=4096)", grid.out_w, grid.out_h)
    audio = _pick_audio(info, config.audio_stream)
    first, count = frame_range(info, start_s, duration_s, max_frames)
    key = _job_key(digest_file(source), index, config, first, count)
    work = cache_dir / "render" / key
    work.mkdir(parents=True, exist_ok=True)
    report = RenderReport(out=out, frames=count, audio=audio is not None,
                          grid=(grid.rows, grid.cols), out_size=(grid.out_w, grid.out_h))
    done = _read_json(work / DONE)
    if done and out.is_file() and done.get("out") == str(out.resolve()) and \
            done.get("size") == out.stat().st_size:
        report.up_to_date, report.size = True, out.stat().st_size
        report.active_share = done.get("active_share", 0.0)
        return report
    segments = plan_segments(first, count, config.segment_frames)
    finished = _load_done_segments(work, key)
    todo = [s for s in segments if str(s.number) not in finished
            or not segment_path(work, s).is_file() or not tail_path(work, s).is_file()]
    if todo:  # segments after a redone one start from its tiles: redo them too
        todo = [s for s in segments if s.number >= todo[0].number]
    report.segments_cached = len(segments) - len(todo)

    def on_done(seg: Segment, stats: dict) -> None:
        finished[str(seg.number)] = stats
        write_json(work / SEGMENTS, {"key": key, "segments": finished})

    if todo:
        bar = tqdm(total=sum(s.count for s in todo), desc="render", unit="frames",
                   disable=None if progress else True, smoothing=0.1)
        t = time.perf_counter()
        with bar:
            _SegmentRenderer(info, grid, index, config, work, on_done, bar).run(todo)
        report.render_seconds = time.perf_counter() - t
        report.rendered = sum(s.count for s in todo)
    concat_and_mux([segment_path(work, s) for s in segments], out, info, audio,
                   float(first / info.rate), float(count / info.rate), work)
    stats = [finished[str(s.number)] for s in segments]
    report.active_share = sum(s["active_cells"] for s in stats) / max(1, sum(
        s["cells"] for s in stats))
    report.size = out.stat().st_size
    if config.report and all("scores" in s for s in stats):
        total = Scores()
        for s in stats:
            total.add(Scores(**s["scores"]))
        report.scores = total.summary()
        write_json(report_path(out), {"source": str(video), "index": str(index.path),
                                      "matching": config.matching, "grid": list(report.grid),
                                      "output": str(out), "scores": report.scores})
    report.seconds = time.perf_counter() - started
    write_json(work / DONE, {"out": str(out.resolve()), "size": report.size,
                             "active_share": report.active_share})
    return report


def _trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``); else no-op."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _steady_heap() -> None:
    """Make glibc return large freed blocks to the system at once.

    Frames and tile batches are megabytes each and are allocated and freed on several
    threads; with glibc's adaptive mmap threshold they end up in growing heap arenas, and
    the resident size creeps up with the video's length. A fixed 8 MiB threshold and two
    arenas keep it flat. No-op where glibc's ``mallopt`` is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD: fixed, no adaptive growth
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode every frame of a video file (for tests and metrics), (H, W, 3) uint8 BGR."""
    info = probe(path)
    yield from FrameReader(info, 0, info.frames, slack=2)
