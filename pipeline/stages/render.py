"""The ``render`` stage: video (+ tile index) -> mosaic video with the source's audio.

Data flows one way: video -> frames -> cells -> **plan** (tile choices) -> **paint**
(frames) -> segments -> output.

1. The frame range is cut into segments (256 frames by default).
2. The plan (:mod:`pipeline.plan`) runs on a thread of this process, one segment after
   the other, and writes one chunk per segment. It is keyed by the input, the index,
   the range and the planning options only, so a re-render that changes only the blend,
   the recolour strength or the encoder reuses it.
3. As each chunk lands, its segment is handed to a painter (:mod:`pipeline.paint`): a
   local worker process, or a Dask task with ``--scheduler``. Each writes its own
   encoded file atomically into the job's work directory.
4. The client joins the segments (concat demuxer, stream copy), adds the audio, and
   renames the result over the output path; ``done.json`` records it.

A kill loses at most the chunk and the segments in flight: a rerun of the same command
resumes the plan from its last chunk and paints only the missing segments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.cache import digest_file, digest_text, write_json
from pipeline.config import RenderConfig
from pipeline.errors import ConfigError, MosaicError, VideoError
from pipeline.execute import choose_workers, make_pool
from pipeline.grid import make_grid
from pipeline.index import load_index
from pipeline.metrics import Scores
from pipeline.paint import PaintJob, finished, paint_segment, progress_path, segment_path
from pipeline.plan import Planner, Segment, plan_key, plan_segments, read_manifest, recolours
from pipeline.video import (
    AudioInfo,
    FrameReader,
    VideoInfo,
    concat_and_mux,
    download,
    encoder_args,
    is_url,
    output_size_ok,
    probe,
)

log = logging.getLogger(__name__)

RENDER_VERSION = "2"  # bump when painting changes: invalidates cached segments
DONE = "done.json"
_POLL = 0.2  # seconds between looks at the workers


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
    plan_reused: bool = False
    up_to_date: bool = False
    size: int = 0
    audio: bool = False
    workers: int = 0
    threads: int = 0
    grid: tuple[int, int] = (0, 0)
    out_size: tuple[int, int] = (0, 0)
    scores: dict = field(default_factory=dict)


def frame_range(info: VideoInfo, start_s: float = 0.0, duration_s: float | None = None,
                max_frames: int | None = None) -> tuple[int, int]:
    """First frame and number of frames to render, from seconds and/or a frame cap."""
    if not math.isfinite(start_s) or start_s < 0 or (duration_s is not None and not (
            math.isfinite(duration_s) and duration_s > 0)) or (
            max_frames is not None and max_frames < 1):
        raise ConfigError("--start must be a number >= 0, --duration a number > 0 and "
                          "--frames >= 1")
    first = round(start_s * info.rate)
    if first >= info.frames:
        raise VideoError(f"{info.path}: --start {start_s:g} is at or past the end of the "
                         f"video ({float(info.frames / info.rate):.2f} s)")
    count = info.frames - first
    if duration_s is not None:
        count = min(count, max(1, round(duration_s * info.rate)))
    if max_frames is not None:
        count = min(count, max_frames)
    return first, count


def _pick_audio(info: VideoInfo, wanted: int) -> AudioInfo | None:
    if not info.audio:
        log.info("notice: %s has no audio track; the output will be video only", info.path)
        return None
    if wanted >= len(info.audio):
        raise ConfigError(f"render.audio_stream: {wanted} asked, but {info.path} has "
                          f"{len(info.audio)} audio stream(s) (numbered from 0)")
    return info.audio[wanted]


def report_path(out: Path) -> Path:
    """The quality report written next to an output video."""
    return out.with_name(out.stem + ".scores.json")


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


def job_key(plan: str, config: RenderConfig) -> str:
    """The digest naming a render job: its plan and the options that change the pixels
    or the encoding (not the worker or thread counts)."""
    paint = {"alpha": config.alpha, "recolour": config.recolour if recolours(config) else 0,
             "report": config.report, "encoder": config.encoder, "crf": config.crf,
             "preset": config.preset, "encoder_options": config.encoder_options}
    return digest_text(RENDER_VERSION, plan, json.dumps(paint, sort_keys=True))


class SegmentError(MosaicError):
    """A painter failed: names the segment and the cause."""

    def __init__(self, seg: Segment, cause: BaseException) -> None:
        what = str(cause) or type(cause).__name__
        super().__init__(f"segment {seg.number} (frames {seg.start}-"
                         f"{seg.start + seg.count - 1}): {what}")


@dataclass
class _Job:
    """One run's moving parts: the planner and what it still has to do, the painters."""

    planner: Planner
    paint: PaintJob
    segments: list[Segment]
    to_plan: list[Segment]
    to_paint: list[Segment]


def _render_segments(job: _Job, pool, bar: tqdm) -> dict[int, dict]:
    """Plan (on a thread) and paint (in the pool) what is missing; each segment's stats.

    A segment is handed to the pool as soon as its chunk exists. The bar counts the
    frames painted by all workers (from their progress files).
    """
    planned: queue.Queue[Segment] = queue.Queue()
    for seg in job.segments:
        if seg not in job.to_plan:
            planned.put(seg)
    stop, failure = threading.Event(), []

    def plan() -> None:
        try:
            if job.to_plan:
                job.planner.run(job.to_plan, job.segments, planned.put, stop)
        except BaseException as exc:  # handed to the main thread
            failure.append(exc)

    thread = threading.Thread(target=plan, daemon=True, name="mosaic-plan")
    thread.start()
    waiting = {s.number: s for s in job.to_paint}
    running: dict = {}
    stats: dict[int, dict] = {}
    try:
        while waiting or running or thread.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    seg = planned.get_nowait()
                    if seg.number in waiting:
                        del waiting[seg.number]
                        running[pool.submit(paint_segment, job.paint, seg,
                                            key=f"paint-{seg.number:05d}")] = seg
            for future, seg in list(running.items()):
                if future.done():
                    try:
                        stats[seg.number] = future.result()
                    except Exception as exc:
                        raise SegmentError(seg, exc) from exc
                    del running[future]
            if failure:
                raise failure[0]
            if not thread.is_alive() and waiting and planned.empty():
                raise RuntimeError(f"the plan ended without segments {sorted(waiting)}")
            _show_progress(bar, job, stats, running.values())
            time.sleep(_POLL)
        _show_progress(bar, job, stats, [])
    finally:
        stop.set()
        for future in running:
            future.cancel()
        thread.join()
    return stats


def _show_progress(bar: tqdm, job: _Job, stats: dict[int, dict], running) -> None:
    frames = sum(s["frames"] for s in stats.values())
    for seg in running:
        with contextlib.suppress(OSError, ValueError):
            frames += int(progress_path(job.paint.work, seg.number).read_text() or 0)
    if frames > bar.n:
        bar.update(frames - bar.n)


def run_render(video: str, index_dir: str | Path, out: str | Path | None,
               config: RenderConfig, cache_dir: str | Path, start_s: float = 0.0,
               duration_s: float | None = None, max_frames: int | None = None,
               progress: bool = True, scheduler: str | None = None) -> RenderReport:
    """Render ``video`` as a mosaic of the tiles in ``index_dir`` into ``out``.

    Painting runs on ``config.workers`` local processes (0: as many as the cores and
    the memory allow), or on the Dask cluster of ``scheduler``. Raises
    :class:`VideoError` for a missing, unreadable, truncated or undownloadable input,
    :class:`TileIndexError` for a missing index and :class:`SegmentError` when a
    painter fails; the output path is written only once everything succeeded.
    """
    started = time.perf_counter()
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
    pkey = plan_key(digest_file(source), index.digest, config, first, count)
    key = job_key(pkey, config)
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
    choice = choose_workers(grid.out_w * grid.out_h, config.encoder, config.preset,
                            config.workers, config.encoder_threads)
    report.workers, report.threads = choice.workers, choice.threads
    paint = PaintJob(key, pkey, info, grid, str(index.path), str(cache_dir / "plans" / pkey),
                     str(work), config.alpha, config.recolour if recolours(config) else 0.0,
                     config.report, tuple(_codec(config, choice.threads)))
    job = _prepare(paint, Planner(info, grid, index, config, Path(paint.plan_dir), pkey),
                   plan_segments(first, count, config.segment_frames), report)
    stats = {s.number: finished(paint, s.number) for s in job.segments}
    if job.to_paint:
        scheduler = scheduler or None
        if scheduler is None:
            log.info("render: %s", choice.describe(grid.out_w, grid.out_h, config.preset))
        pool = make_pool(choice.workers, scheduler)
        bar = tqdm(total=sum(s.count for s in job.to_paint), desc="render", unit="frames",
                   disable=None if progress else True, smoothing=0.1)
        t = time.perf_counter()
        try:
            with bar:
                stats.update(_render_segments(job, pool, bar))
        finally:
            pool.close()
        report.render_seconds = time.perf_counter() - t
        report.rendered = sum(s.count for s in job.to_paint)
    if not report.plan_reused and read_manifest(Path(paint.plan_dir), pkey) is None:
        job.planner.finish(job.segments)  # every chunk was there, only the manifest not
    concat_and_mux([segment_path(work, s.number) for s in job.segments], out, info, audio,
                   float(first / info.rate), float(count / info.rate), work)
    _summarise(report, [stats[s.number] for s in job.segments], config, video, index.path)
    report.seconds = time.perf_counter() - started
    write_json(work / DONE, {"out": str(out.resolve()), "size": report.size,
                             "active_share": report.active_share})
    return report


def _prepare(paint: PaintJob, planner: Planner, segments: list[Segment],
             report: RenderReport) -> _Job:
    """What is left to plan and to paint, and say when a plan is reused or resumed."""
    to_paint = [s for s in segments if finished(paint, s.number) is None]
    report.segments_cached = len(segments) - len(to_paint)
    if read_manifest(Path(paint.plan_dir), paint.plan_key) is not None:
        report.plan_reused = True
        log.info("reusing the plan of these frames (%s): only painting", paint.plan_key[:12])
        return _Job(planner, paint, segments, [], to_paint)
    to_plan = planner.missing(segments) if to_paint else []
    if 0 < len(to_plan) < len(segments):
        log.info("resuming the plan at segment %d of %d", to_plan[0].number, len(segments))
    return _Job(planner, paint, segments, to_plan, to_paint)


def _codec(config: RenderConfig, threads: int) -> list[str]:
    """The encoder's options, with its thread count for x264/x265."""
    args = encoder_args(config.encoder, config.crf, config.preset, config.encoder_options)
    if config.encoder in ("libx264", "libx265") and "-threads" not in args:
        args += ["-threads", str(threads)]
    return args


def _summarise(report: RenderReport, stats: list[dict], config: RenderConfig, video: str,
               index_path: Path) -> None:
    """Active share and scores over all segments; the scores file next to the output."""
    out = report.out
    report.active_share = sum(s["active_cells"] for s in stats) / max(1, sum(
        s["cells"] for s in stats))
    report.size = out.stat().st_size
    if config.report and all("scores" in s for s in stats):
        total = Scores()
        for s in stats:
            total.add(Scores(**s["scores"]))
        report.scores = total.summary()
        write_json(report_path(out), {"source": str(video), "index": str(index_path),
                                      "matching": config.matching, "grid": list(report.grid),
                                      "output": str(out), "scores": report.scores})


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode every frame of a video file (for tests and metrics), (H, W, 3) uint8 BGR."""
    info = probe(path)
    yield from FrameReader(info, 0, info.frames, slack=2)

