"""Painting: one segment's plan + its source frames -> one encoded segment file.

:func:`paint_segment` is a pure function of (input, index, plan, options, segment
number): it reads the plan chunk, loads only the tiles the segment shows, and has a
:class:`Painter` rebuild the canvas the segment starts from, apply each frame's changes
(recolouring them by the paint-time strength) and score the pure mosaic; it blends with
the source and encodes (:class:`pipeline.encode.SegmentEncoder`).
It runs in any process on any machine that sees the same paths, in any order, and
gives the same frames. Its outputs, in the job's work directory:

* ``seg-NNNNN.mp4``: the encoded frames (written to a unique temporary name, renamed);
* ``seg-NNNNN.json``: written last: the job key, the frame count, statistics, scores
  and the video file's size and digests. A segment counts as done only with it, and
  only while its file still matches them;
* ``seg-NNNNN.progress``: frames painted so far, while it runs (for the progress bar).

A rerun of a done segment returns its statistics without painting it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.bank import IndexPin, pinned_bank
from pipeline.cache import artifact_problem, record_artifact, write_json
from pipeline.compose import Canvas, blend_i420
from pipeline.encode import SegmentEncoder
from pipeline.errors import PlanError
from pipeline.execute import task_threads
from pipeline.grid import Grid
from pipeline.heap import steady_heap, trim_heap
from pipeline.metrics import SUB, FrameScorer, source_cells, tile_keys
from pipeline.planfile import PlanChunk, Segment, chunk_path, read_chunk
from pipeline.stash import take
from pipeline.tasklog import TaskClock, file_bytes, source_bytes
from pipeline.tone import gains, shifts
from pipeline.video import VideoInfo, prefetch_frames
from pipeline.visibility import y_plane_spread

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 8  # frames between progress-file updates


@dataclass(frozen=True)
class PaintJob:
    """Everything a painter needs, by value or by path (picklable; paths must be valid
    where the painter runs: the shared-storage contract).

    ``key`` names the render job (plan + paint options), ``plan_key`` its plan.
    ``recolour`` is the paint-time recolour strength (0 in cluster mode), ``tone`` the
    contrast-matching strength (:func:`pipeline.tone.gains`); ``codec`` the encoder's
    ffmpeg output options (:func:`pipeline.encode.codec_args`).
    """

    key: str
    plan_key: str
    info: VideoInfo
    grid: Grid
    index_dir: str
    plan_dir: str
    work: str
    alpha: float
    recolour: float
    report: bool
    codec: tuple[str, ...]
    tone: float = 0.0
    index_pin: IndexPin | None = None  # the index planned with; painters refuse another
    score_every: int = 1  # frames scored: those whose number is a multiple of it
    threads: int = 0  # the painter's share of the cores (OpenCV, its decoder; 0: theirs)


def segment_path(work: str | Path, number: int) -> Path:
    """The encoded frames of segment ``number``."""
    return Path(work) / f"seg-{number:05d}.mp4"


def stats_path(work: str | Path, number: int) -> Path:
    """The record of a finished segment (written last)."""
    return Path(work) / f"seg-{number:05d}.json"


def progress_path(work: str | Path, number: int) -> Path:
    """Frames painted so far by the segment's painter, while it runs."""
    return Path(work) / f"seg-{number:05d}.progress"


def finished(job: PaintJob, number: int, full: bool = False) -> dict | None:
    """The statistics of segment ``number`` if it is done and its file is intact (size
    and a sample digest; the whole digest with ``full``); None if it must be painted."""
    try:
        stats = json.loads(stats_path(job.work, number).read_text())
    except (OSError, ValueError):
        return None
    if stats.get("key") != job.key:
        return None
    problem = artifact_problem(segment_path(job.work, number), stats.get("video"), full)
    if problem is not None:
        log.warning("segment %d of %s: %s; it will be painted again", number, job.work, problem)
        return None
    return stats


def paint_segment(job: PaintJob, seg: Segment) -> dict:
    """Paint and encode segment ``seg`` of ``job``; returns its statistics.

    Idempotent: a segment already done is not painted again, and two painters of the
    same segment (a retried task) each write their own temporary file.
    """
    return _paint_segment(job, seg, {})


def paint_task(job: PaintJob, seg: Segment) -> tuple[dict, dict]:
    """:func:`paint_segment` as a measured task: its statistics and its task record
    (:mod:`pipeline.tasklog`; ``cached`` when the segment was already done)."""
    clock = TaskClock()
    read: dict[str, int] = {}
    stats = _paint_segment(job, seg, read)
    written = {} if not read else {"segment": file_bytes(segment_path(job.work, seg.number))}
    return stats, clock.record("paint", seg.number, (seg.start, seg.start + seg.count),
                               [f"plan-{seg.number:05d}"], read, written, cached=not read)


def _paint_segment(job: PaintJob, seg: Segment, read: dict[str, int]) -> dict:
    """:func:`paint_segment`; fills ``read`` with the bytes read by kind (left empty
    when the segment was already done)."""
    if (done := finished(job, seg.number)) is not None:
        return done
    steady_heap()  # a long-lived worker paints many segments: keep its memory flat
    chunk = read_chunk(chunk_path(job.plan_dir, seg.number), job.plan_key)
    if chunk is None:
        raise PlanError(f"plan chunk {seg.number} of {job.plan_dir} is missing or damaged; "
                        "rerun to plan it again")
    read["chunk"] = file_bytes(chunk_path(job.plan_dir, seg.number))
    with task_threads(job.threads):
        stats = _paint(job, seg, chunk, read)
    stats.update({"key": job.key, "video": record_artifact(segment_path(job.work, seg.number))})
    write_json(stats_path(job.work, seg.number), stats)
    progress_path(job.work, seg.number).unlink(missing_ok=True)
    trim_heap()
    return stats


class Painter:
    """The frames of one segment, painted from its plan chunk: no encoder, no files
    written (a zoom video or a preview takes these frames as they are).

    It rebuilds the canvas the segment starts from, applies each frame's changes
    (recolouring them by the paint-time strength), scores the pure mosaic when the job
    reports, and yields the pure mosaic frames; :attr:`source` is the source frame of the
    latest one (when the blend or the scores need it), :attr:`scored` whether it was
    scored: every ``job.score_every``-th frame of the video (frames 0, N, 2N, ...: the
    same sample however the job is cut), each against the frame before it (churn and
    flicker); the canvas measures a cell for the scores only when a scored frame shows it.
    """

    def __init__(self, job: PaintJob, seg: Segment, chunk: PlanChunk) -> None:
        self.job, self.seg, self.chunk, self.grid = job, seg, chunk, job.grid
        bank_ids = chunk.tile_ids()
        bank, groups, spread = pinned_bank(job.index_dir, job.index_pin, scores=job.report)
        self.canvas = Canvas(self.grid, np.ascontiguousarray(bank[bank_ids]),
                             track=SUB if job.report else 0, bank_ids=bank_ids,
                             spread=None if spread is None else spread[bank_ids])
        self.bank_bytes = len(bank_ids) * int(np.prod(bank.shape[1:])) * bank.itemsize
        del bank
        start = chunk.start_state
        self.canvas.reset(start.ids, start.orients, shifts(start.diffs, job.recolour),
                          gains(start.ratios, job.tone))
        self.scorer = FrameScorer(self.grid, groups) if job.report else None
        if self.scorer is not None:
            self.scorer.scores.every = job.score_every
        if self.scorer is not None and chunk.start_src_lab is not None:
            self.scorer.restore({"prev_src_lab": chunk.start_src_lab,
                                 "prev_key": tile_keys(start.ids, start.orients)})
        self.source: np.ndarray | None = None
        self.scored = False
        self.stashed = 0  # bytes of source frames taken from the stash, not decoded
        self._since = np.zeros(self.grid.cells, bool)  # placed since the last scored frame

    def frames(self) -> Iterator[np.ndarray]:
        """The pure mosaic of each frame of the segment, (out_h, out_w, 3) uint8 BGR (the
        canvas's own image: valid until the next frame)."""
        job, canvas = self.job, self.canvas
        source = self._source() if job.alpha > 0 or job.report else None
        try:
            for i in range(self.seg.count):
                self.source = next(source) if source is not None else None
                number = self.seg.start + i
                self.scored = self.scorer is not None and number % job.score_every == 0
                cells, ids, orients, diffs, ratios = self.chunk.frame(i)
                change = canvas.place(cells, ids, orients, shifts(diffs, job.recolour),
                                      measure=self.scored, gain=gains(ratios, job.tone))
                if self.scorer is not None:
                    self._since[cells] = True
                    if self.scored:
                        self._score(cells, change)
                    elif (number + 1) % job.score_every == 0:  # the next one's previous
                        self.scorer.restore({
                            "prev_src_lab": source_cells(self.source, self.grid)[1],
                            "prev_key": tile_keys(canvas.ids, canvas.orients)})
                yield canvas.image
        finally:
            if source is not None:
                source.close()

    def _source(self) -> Iterator[np.ndarray]:
        """The segment's source frames: those its plan task stashed on this machine
        (:mod:`pipeline.stash`; :attr:`stashed` their bytes), else decoded (the same
        bits)."""
        job, seg = self.job, self.seg
        shape = (job.info.height, job.info.width, 3)
        stashed = take(job.plan_dir, job.plan_key, seg.number, seg.start, seg.count, shape)
        if stashed is not None:
            self.stashed = seg.count * int(np.prod(shape))
            return stashed
        return prefetch_frames(job.info, seg.start, seg.count, exact=True,
                               threads=job.threads)

    def _score(self, cells: np.ndarray, change: np.ndarray) -> None:
        grid, canvas = self.grid, self.canvas
        per_cell = np.zeros(grid.cells, np.float32)
        per_cell[cells] = change
        self.scorer.update_ids(self.source, canvas.ids, canvas.orients,
                               per_cell.reshape(grid.rows, grid.cols), canvas.sub,
                               canvas.sub_lab, self._since.reshape(grid.rows, grid.cols))
        self._since[:] = False

    def stats(self) -> dict:
        """The segment's statistics (and scores, when the job reports)."""
        grid, seg = self.grid, self.seg
        stats = {"frames": seg.count, "active_cells": int(self.chunk.active.sum()),
                 "cells": seg.count * grid.cells}
        if self.scorer is not None:
            stats["scores"] = self.scorer.scores.to_json()
        return stats


def _paint(job: PaintJob, seg: Segment, chunk: PlanChunk, read: dict[str, int]) -> dict:
    """Paint, blend and encode the segment into its file; its statistics. Adds the bytes
    of tiles and of source read to ``read``."""
    grid = job.grid
    painter = Painter(job, seg, chunk)
    read["bank"] = painter.bank_bytes
    encoder = SegmentEncoder(job.work, segment_path(job.work, seg.number).name, grid.out_w,
                             grid.out_h, job.info.rate, list(job.codec))
    try:
        frames = painter.frames()
        for i, mosaic in enumerate(frames):
            # straight to I420 (the buffers queued for the encoder), the blend (if any)
            # on its planes: half the bytes of BGR
            out = blend_i420(mosaic, painter.source, job.alpha, encoder.buffer(),
                             encoder.scratch)
            if painter.scored:  # the photos' contrast, painted and as written
                painter.scorer.scores.add_visibility(
                    painter.canvas.own, painter.canvas.spread, None if job.alpha <= 0
                    else y_plane_spread(out[:grid.out_h], grid.rows, grid.cols))
            encoder.put(out)
            if (i + 1) % _PROGRESS_EVERY == 0:
                _note_progress(job, seg, i + 1)
        encoder.finish(segment_path(job.work, seg.number))
        if painter.stashed:
            read["stash"] = painter.stashed
        elif job.alpha > 0 or job.report:  # the painter decoded the source frames
            read["source"] = source_bytes(job.info.path, seg.count, job.info.frames)
    finally:
        encoder.abort()
        frames.close()  # stops the source's decoder
    return painter.stats()


def _note_progress(job: PaintJob, seg: Segment, frames: int) -> None:
    with contextlib.suppress(OSError):  # advisory only
        progress_path(job.work, seg.number).write_text(str(frames))


def warm_up() -> None:
    """A painter process's first task: importing this module (which unpickling this
    function does) is the warm-up."""
