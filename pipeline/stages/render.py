"""The ``render`` stage: video (+ tile index) -> mosaic video with the source's audio.

Data flows one way: video -> frames -> cells -> **plan** (tile choices) -> **paint**
(frames) -> segments -> output.

1. The frame range is cut into segments: about 8 a job, in whole plan batches, at most
   256 frames (:func:`pipeline.planfile.segment_size`), or ``render.segment_frames``.
   Each shot of at least ``render.shot_frames`` frames (found by a state-free pass,
   :func:`pipeline.shots.job_shots`, and kept in the plan's folder) starts a segment
   planned from a blank canvas.
2. The plan (:mod:`pipeline.plan`) writes one chunk per segment: a shot's first segment
   at once, the others once the segment they continue is planned. Plan tasks run on the
   same workers as the painters (:mod:`pipeline.stages.painting`): local processes, or
   Dask tasks with ``--scheduler``; so the shots of a job are planned in parallel. The
   plan is keyed by the input, the index, the range and the planning options only, so a
   re-render that changes only the blend, the recolour strength or the encoder reuses it.
3. As each chunk lands, its segment is handed to a painter (:mod:`pipeline.paint`). Each
   writes its own encoded file atomically into the job's work directory.
4. The client joins each segment as soon as it and the ones before it are painted
   (:mod:`pipeline.join`: stream copy, with the audio), then checks the file and renames
   it over the output path; ``done.json`` records it.
5. Every plan, paint and mux task's kind, frames, CPU and wall time and bytes read and
   written are appended to the job's ``tasks.jsonl`` (:mod:`pipeline.tasklog`).

A kill loses at most the chunk and the segments in flight: a rerun of the same command
resumes the plan from its last chunk and paints only the missing segments. An interrupt
(Ctrl-C, SIGTERM, SIGHUP) or a failure stops the painters and their ffmpeg processes at
once and removes their temporary files.

The job's folders are marked as the tool's; the render holds its job's lock, and a
shared hold on its plan and its download, so ``mosaic clean`` leaves them alone. The
index is pinned (:func:`pipeline.bank.pin_index`): a rebuild of it while the render runs
stops the render with one line, and nothing planned or painted from the new tiles is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from pipeline.bank import pin_index
from pipeline.cache import digest_file, digest_text, mark_owned, open_cache, write_json
from pipeline.clean import JOB_FILES, remove_temporaries
from pipeline.config import RenderConfig, paint_options
from pipeline.download import download, download_folder, is_url
from pipeline.encode import ENCODER_CODECS, codec_args, mosaic_tuned, output_size_ok
from pipeline.errors import ConfigError, LockedError, OutputError, VideoError
from pipeline.execute import LocalPool, WorkerPlan, choose_workers, make_pool
from pipeline.grid import check_frame_size, check_source_size, make_grid
from pipeline.heap import steady_heap
from pipeline.index import load_index
from pipeline.join import open_join
from pipeline.locks import file_lock, hold
from pipeline.metrics import Scores
from pipeline.output import (
    Container,
    check_output,
    container_for,
    default_output,
    existing_problem,
    scores_path,
)
from pipeline.ownership import read_json
from pipeline.paint import PaintJob, finished, segment_path, warm_up
from pipeline.planfile import PLAN_FILES, Segment, job_segments, plan_key, read_manifest
from pipeline.server import SCHEDULER_ENV, start_server
from pipeline.stages import WORKER_MODULE
from pipeline.stages.painting import DONE, RenderJob, job_record, render_segments
from pipeline.stages.planner import PlanJob, local_plan_config, plan_shots
from pipeline.tasklog import TaskLog
from pipeline.video import AudioInfo, VideoInfo, check_regular, ffmpeg_exe, local_path, probe

log = logging.getLogger(__name__)

RENDER_VERSION = "5"  # bump when painting changes: invalidates cached segments


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


def resolve_input(video: str, cache_dir: Path, ytdlp_format: str) -> Path:
    """A local path as it is (it must exist and be a regular file; ``file://`` URLs name
    one), or a URL downloaded once into the cache."""
    if is_url(video):
        return download(video, cache_dir / "downloads", ytdlp_format)
    path = Path(local_path(video))
    if not path.exists():
        raise VideoError(f"{video}: no such file")
    check_regular(path, "video")
    return path


def job_key(plan: str, config: RenderConfig) -> str:
    """The digest naming a render job: its plan and the options declared as changing the
    pixels or the encoding (:func:`pipeline.config.paint_options`; not the worker or
    thread counts)."""
    return digest_text(RENDER_VERSION, plan, json.dumps(paint_options(config), sort_keys=True))


@dataclass
class _Target:
    """What a run writes, and how: the output and its container, the audio, the frame
    range, the cache, the options and where the painters run."""

    video: str
    out: Path
    container: Container
    cache_dir: Path
    config: RenderConfig
    scheduler: str | None
    progress: bool
    started: float
    audio: AudioInfo | None = None
    first: int = 0
    count: int = 0

    @property
    def local(self) -> bool:
        """Whether the painters are local processes (not a Dask cluster)."""
        return not (self.scheduler or os.environ.get(SCHEDULER_ENV))


def run_render(video: str, index_dir: str | Path, out: str | Path | None,
               config: RenderConfig, cache_dir: str | Path, start_s: float = 0.0,
               duration_s: float | None = None, max_frames: int | None = None,
               progress: bool = True, scheduler: str | None = None,
               force: bool = False) -> RenderReport:
    """Render ``video`` as a mosaic of the tiles in ``index_dir`` into ``out``.

    Painting runs on ``config.workers`` local processes (0: as many as the cores and
    the memory allow; more than those, or than the segments, are capped), or on the Dask
    cluster of ``scheduler``. ffmpeg, the output path, its directory and its container
    are checked before any work (``force`` replaces an existing OUT or scores file of
    another kind); a second run of the same job waits for the first (the job's lock).
    Raises :class:`VideoError` for a missing, unreadable, truncated or undownloadable
    input, :class:`OutputError` for an unsafe or unwritable output, :class:`TileIndexError`
    for a missing index (:class:`IndexChangedError` when it is rebuilt mid-job) and
    :class:`SegmentError` when a painter fails; the output is written only once it has
    been verified against the plan (frames, streams, duration).
    """
    started = time.perf_counter()
    steady_heap()
    video = video if is_url(video) else local_path(video)
    ffmpeg_exe()  # a missing or broken ffmpeg is said now, before any work
    cache_dir = open_cache(cache_dir)
    default = out is None
    if default:
        mark_owned(cache_dir / "renders", "renders")
    out = default_output(video, cache_dir) if default else Path(out)
    check_output(out, create_parent=default, kind="video", force=force, cache_dir=cache_dir)
    target = _Target(video, out, container_for(out, config.encoder), cache_dir, config,
                     scheduler, progress, started)
    if target.local:  # the local workers' server loads their libraries meanwhile
        start_server(WORKER_MODULE)
    if config.report and not force and (problem := existing_problem(scores_path(out), "json")):
        raise OutputError(f"{scores_path(out)}: exists and {problem}; move it away, or add "
                          "--force to replace it")
    index = load_index(index_dir)
    with contextlib.ExitStack() as held:
        if is_url(video):
            held.enter_context(hold(download_folder(cache_dir / "downloads", video),
                                    f"the download of {video}"))
        source = resolve_input(video, cache_dir, config.ytdlp_format)
        check_output(out, reads=[source, *(p for p in index.path.iterdir() if p.is_file())],
                     kind="video", force=force, cache_dir=cache_dir)
        paint, report, choice = _set_up(target, source, index,
                                        (start_s, duration_s, max_frames))
        held.enter_context(hold(paint.plan_dir, f"the plan {paint.plan_key[:12]}"))
        mark_owned(paint.plan_dir, "plan")
        with file_lock(Path(paint.work) / ".lock",
                       f"the render job {paint.key[:12]} ({video})"):
            mark_owned(paint.work, "job")
            plan = PlanJob(paint.info, paint.grid, paint.index_dir, config, paint.plan_dir,
                           paint.plan_key, paint.index_pin)
            return _run_job(paint, plan, report, choice, target)


def _set_up(target: _Target, source: Path, index, span: tuple
            ) -> tuple[PaintJob, RenderReport, WorkerPlan]:
    """Probe the input, lay out the cells and the range (all checked), name the plan and
    the job, choose the workers for the shot pass (for the segments the job has before
    it is cut at its shots: the fewest it can have; :func:`_fit` chooses again after the
    cut and sets the encoder's options), pin the index; the painters' job."""
    config = target.config
    info = probe(source)
    check_source_size(info.width, info.height, str(source))
    grid = make_grid(info.height, info.width, index.tiles.shape[1:3], config.scale,
                     config.max_width, config.max_height)
    check_frame_size(grid)
    if not output_size_ok(grid.out_w, grid.out_h):
        log.info("note: %dx%d output is beyond H.264 level 5.2; some players will not play "
                 "it (cap it with render.max_width=4096)", grid.out_w, grid.out_h)
    target.audio = _pick_audio(info, config.audio_stream)
    target.first, target.count = frame_range(info, *span)
    segments = job_segments(target.first, target.count, config)
    pkey = plan_key(digest_file(source), index.digest, config, target.first, target.count)
    key = job_key(pkey, config)
    report = RenderReport(out=target.out, frames=target.count, audio=target.audio is not None,
                          grid=(grid.rows, grid.cols), out_size=(grid.out_w, grid.out_h))
    choice = _choose(config, grid.out_w * grid.out_h, len(segments))
    cache = target.cache_dir
    paint = PaintJob(key, pkey, info, grid, str(index.path), str(cache / "plans" / pkey),
                     str(cache / "render" / key), config.alpha,
                     config.recolour if config.recolours else 0.0, config.report,
                     (),  # the encoder's options: set by _fit once the shots are known
                     config.tone if config.recolours else 0.0, pin_index(index),
                     config.score_every)
    return paint, report, choice


def _choose(config: RenderConfig, pixels: int, segments: int) -> WorkerPlan:
    """Workers and encoder threads for a job of ``segments`` segments."""
    return choose_workers(pixels, config.encoder, config.preset, config.workers,
                          config.encoder_threads, segments=segments, tuned=mosaic_tuned(config))


def _fit(target: _Target, paint: PaintJob, plan: PlanJob, segments: int,
         report: RenderReport) -> tuple[PaintJob, PlanJob, WorkerPlan]:
    """The workers and encoder threads fitted to the ``segments`` the job has once cut at
    its shots (the choice before the cut, for the fewest it can have, starts the shot
    pass): a multi-shot job fills the cores with workers, not with encoder threads."""
    config = target.config
    choice = _choose(config, paint.grid.out_w * paint.grid.out_h, segments)
    report.workers, report.threads = choice.workers, choice.threads
    if choice.asked and target.local:
        log.info("%s", choice.describe_cap(segments))
    paint = replace(paint, codec=tuple(codec_args(config, choice.threads, choice.lookahead)),
                    threads=choice.threads if target.local else 0)
    if target.local:  # (a Dask worker's plan searches on its own machine's cores)
        plan = replace(plan, config=local_plan_config(config, choice.workers))
    return paint, plan, choice


def _run_job(paint: PaintJob, plan: PlanJob, report: RenderReport, choice: WorkerPlan,
             target: _Target) -> RenderReport:
    """The job, under its lock: up to date, or plan and paint what is missing, join,
    verify and rename over OUT; a failure or interrupt removes the job's temporaries."""
    work, info, out = Path(paint.work), paint.info, target.out
    remove_temporaries(work, JOB_FILES)  # of killed runs: the job's lock is held
    with contextlib.suppress(LockedError), file_lock(
            Path(paint.plan_dir) / ".lock", f"the plan {paint.plan_key[:12]}", timeout=0):
        remove_temporaries(Path(paint.plan_dir), PLAN_FILES)  # nobody is planning it
    done = read_json(work / DONE)
    if done and out.is_file() and done.get("out") == str(out.resolve()) and \
            done.get("size") == out.stat().st_size:
        report.up_to_date, report.size = True, out.stat().st_size
        report.active_share = done.get("active_share", 0.0)
        return report
    join, held = None, contextlib.ExitStack()
    try:
        segments = job_segments(target.first, target.count, target.config,
                                plan_shots(plan, target.first, target.count,
                                           target.scheduler, choice.workers))
        paint, plan, choice = _fit(target, paint, plan, len(segments), report)
        job = _prepare(paint, plan, segments, report)
        job.painted = (join := open_join(
            segments, [segment_path(work, s.number) for s in segments], out, info,
            target.audio, (target.first, target.count), work, target.container,
            ENCODER_CODECS.get(target.config.encoder, ""), paint.key[:16], job.tasks)).add
        for number in sorted(job.done):  # (painted by an earlier run)
            join.add(number)
        stats = dict(job.done)
        if job.to_paint:
            if target.local:
                log.info("render: %s", choice.describe(*report.out_size,
                                                       target.config.preset))
            stats.update(_paint_missing(job, choice.workers, target.scheduler,
                                        target.progress, report))
        locks = mark_owned(target.cache_dir / "locks", "locks")
        held.enter_context(file_lock(locks / f"{digest_text(str(out.resolve()))}.lock",
                                     f"the output {out}"))  # (may wait for another job)
    except BaseException:
        held.close()
        if join is not None:
            join.abort()  # (the streamed join's muxer and temporary file)
        remove_temporaries(work, JOB_FILES)  # of the painters just stopped
        raise
    with held:  # the output's lock
        join.finish()  # (what is left to join; checked, renamed over OUT, recorded)
        _summarise(report, [stats[s.number] for s in job.segments], target.config,
                   target.video, Path(paint.index_dir))
        report.seconds = time.perf_counter() - target.started
        write_json(work / DONE, {"out": str(out.resolve()), "size": report.size,
                                 "active_share": report.active_share})
    return report


def _paint_missing(job: RenderJob, workers: int, scheduler: str | None, progress: bool,
                   report: RenderReport) -> dict[int, dict]:
    """Plan and paint what is missing on a pool, with one progress bar over all frames."""
    pool = make_pool(min(workers, len(job.to_paint)), scheduler, warm_up)
    job.tasks.append(job_record(job, pool.workers if isinstance(pool, LocalPool) else 0,
                                report.threads, isinstance(pool, LocalPool)))
    bar = tqdm(total=sum(s.count for s in job.to_paint), desc="render", unit="frames",
               disable=None if progress else True, smoothing=0.1)
    t = time.perf_counter()
    try:
        with bar:
            stats = render_segments(job, pool, bar)
    finally:
        pool.close()
    report.render_seconds = time.perf_counter() - t
    report.rendered = sum(s.count for s in job.to_paint)
    return stats


def _prepare(paint: PaintJob, plan: PlanJob, segments: list[Segment],
             report: RenderReport) -> RenderJob:
    """What is left to paint; say when the plan is reused or resumed."""
    done = {s.number: stats for s in segments if (stats := finished(paint, s.number))}
    to_paint = [s for s in segments if s.number not in done]
    report.segments_cached = len(done)
    if read_manifest(Path(paint.plan_dir), paint.plan_key) is not None:
        report.plan_reused = True
        if to_paint:
            log.info("reusing the plan of these frames (%s): only painting",
                     paint.plan_key[:12])
        return RenderJob(plan, paint, segments, True, to_paint, done, TaskLog(paint.work))
    return RenderJob(plan, paint, segments, False, to_paint, done, TaskLog(paint.work))


def _summarise(report: RenderReport, stats: list[dict], config: RenderConfig, video: str,
               index_path: Path) -> None:
    """Active share and scores over all segments; the scores file next to the output
    (:func:`pipeline.output.scores_path`)."""
    out = report.out
    report.active_share = sum(s["active_cells"] for s in stats) / max(1, sum(
        s["cells"] for s in stats))
    report.size = out.stat().st_size
    if config.report and all("scores" in s for s in stats):
        total = Scores()
        for s in stats:
            total.add(Scores(**s["scores"]))
        report.scores = total.summary()
        write_json(scores_path(out), {"source": str(video), "index": str(index_path),
                                      "matching": config.matching, "grid": list(report.grid),
                                      "output": str(out), "scores": report.scores})


