"""The plan artifact: what the planner engine decided, stored per segment of frames.

Artifacts, in ``<cache>/plans/<plan key>/`` (names: :func:`chunk_path`, :data:`MANIFEST`,
all of them :data:`PLAN_FILES`):

* ``chunk-NNNNN.npz``: the plan of segment N (compressed, written atomically). It holds
  the canvas at the segment's start (``start_*``: what the previous segment ended on,
  so a still scene does not reshuffle at a boundary), the per-frame changes (``cells``,
  ``ids``, ``orients``, ``diffs``, ``ratios``, sliced by ``offsets``), each frame's
  active-cell count, and the state at its end (``end_*``), from which a killed plan resumes.
* ``shots.json``: the job's shot starts (:func:`write_shots`), found before planning
  (:mod:`pipeline.shots`): a shot of at least ``render.shot_frames`` frames is planned
  from a blank canvas, on its own, so shots are planned in parallel;
* ``manifest.json``: written last, once every chunk is there: the key, the frame range,
  the shot starts and each chunk's size and digest.

The plan key (:func:`plan_key`) covers the input, the index, the frame range and every
option declared as affecting the plan (:func:`pipeline.config.plan_options`: the recolour
strength among them, the search measures the error left after recolouring); paint-only
options (blend, encoder, crf, preset, scores, contrast) do not enter it, so a re-render
that changes only those reuses the plan.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.activity import Tracking
from pipeline.cache import (
    READ_ERRORS,
    artifact_problem,
    atomic_output,
    digest_text,
    record_artifact,
    write_json,
)
from pipeline.config import RenderConfig, plan_options
from pipeline.tone import RATIO_SCALE

log = logging.getLogger(__name__)

PLAN_VERSION = "9"  # bump when planning changes: invalidates cached plans
MANIFEST = "manifest.json"
SHOTS = "shots.json"
PLAN_FILES = re.compile(r"chunk-\d{5}\.npz|manifest\.json|shots\.json")  # all a plan folder holds
_CHUNK_ZLIB_LEVEL = 1  # a third of the default level's time, for a few percent in size


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, start + count)`` of the source, planned and painted as ``number``.

    ``fresh``: planned from a blank canvas (a job's first segment, a shot's first, or
    every segment without ``render.carry_tiles``), so it needs no other segment's plan;
    the others continue from the previous segment's end.
    """

    number: int
    start: int
    count: int
    fresh: bool = False


def plan_segments(first: int, count: int, size: int) -> list[Segment]:
    """Cut ``count`` frames from ``first`` into segments of ``size`` frames."""
    return [Segment(k, first + k * size, min(size, count - k * size))
            for k in range(math.ceil(count / size))]


JOB_SEGMENTS = 8  # a job is cut into about this many segments, where they can be short
MAX_SEGMENT_FRAMES = 256  # and none is longer (a kill redoes at most one)
# nor shorter, where the job is longer: a segment's own costs (a plan task and a paint
# task, each starting a decoder at a seek, the encoder's start and an intra frame, about
# 0.3 CPU-s) against what it paints; on 2 cores a busy 120-frame job ran 6.6% faster in
# segments of up to 64 frames than of up to 32, 250 frames 7%, a calm 120 frames 6%
MIN_SEGMENT_FRAMES = 64


def segment_size(count: int, unit: int) -> int:
    """Frames per segment of a job of ``count`` frames: about ``count /``
    :data:`JOB_SEGMENTS`, but at least :data:`MIN_SEGMENT_FRAMES`, in whole plan batches
    of ``unit`` frames, at most :data:`MAX_SEGMENT_FRAMES`. A short job is cut too, so
    that its first segments are painted while the plan runs on and several painters
    share it; the size depends on the job alone, never on the workers, so every
    executor plans the same segments."""
    want = max(-(-count // JOB_SEGMENTS), MIN_SEGMENT_FRAMES)
    return max(1, min(MAX_SEGMENT_FRAMES, -(-want // unit) * unit))


def job_segments(first: int, count: int, config: RenderConfig,
                 shots: Sequence[int] = ()) -> list[Segment]:
    """The segments of a render job of ``count`` frames from ``first``: of
    ``render.segment_frames`` frames, or, for 0 (the default), of :func:`segment_size`
    (at least :data:`MIN_TAIL` either way, and a shorter last piece joins the one before),
    each shot (from each of ``shots``, the frames where a shot starts, to the next) cut on
    its own (in equal pieces of at most that size, unless ``render.segment_frames`` is
    set). A shot's first segment is fresh (planned from a blank canvas), and so is every
    segment without ``render.carry_tiles``."""
    size = max(MIN_TAIL, config.segment_frames or segment_size(count,
                                                              config.cluster_batch_frames))
    stop = first + count
    bounds = [first, *sorted({s for s in shots if first < s < stop}), stop]
    out: list[Segment] = []
    for a, b in itertools.pairwise(bounds):
        # a shot cut into equal pieces, where the size is the job's own (not a stub of a
        # frame or two after whole segments); a size asked for is kept
        piece = size if config.segment_frames or len(bounds) == 2 else \
            math.ceil((b - a) / math.ceil((b - a) / size))
        for k, seg in enumerate(whole_pieces(a, b - a, piece)):
            out.append(Segment(len(out), seg.start, seg.count,
                               k == 0 or not config.carry_tiles))
    return out


MIN_TAIL = 8  # fewest frames of a range's last segment: a shorter one joins the one before


def whole_pieces(first: int, count: int, size: int) -> list[Segment]:
    """:func:`plan_segments`, but a last piece under :data:`MIN_TAIL` frames is added to
    the one before (``[32, 1]`` is ``[33]``). An encoder with B-frames starts the decode
    of a segment of a frame or two from its first frame, where a longer one starts a
    frame or two earlier: joined after a long one, such a stub leaves a gap in the decode
    steps that the joined file's frame count and duration show (the join refused it)."""
    pieces = plan_segments(first, count, size)
    if len(pieces) > 1 and pieces[-1].count < MIN_TAIL:
        last = pieces.pop()
        pieces[-1] = Segment(last.number - 1, pieces[-1].start,
                             pieces[-1].count + last.count)
    return pieces


def write_shots(plan_dir: str | Path, key: str, starts: Sequence[int]) -> None:
    """Record the shot starts of plan ``key`` (atomically): the segments are cut there."""
    write_json(Path(plan_dir) / SHOTS, {"key": key, "starts": [int(s) for s in starts]})


def read_shots(plan_dir: str | Path, key: str) -> list[int] | None:
    """The shot starts recorded for plan ``key``, or None (none yet, another plan's, or
    unreadable: they are found again)."""
    try:
        data = json.loads((Path(plan_dir) / SHOTS).read_text())
        if data.get("key") == key and all(isinstance(s, int) for s in data["starts"]):
            return list(data["starts"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def planned(plan_dir: str | Path, key: str, segments: Sequence[Segment]) -> set[int]:
    """The numbers of ``segments`` whose chunk of plan ``key`` is there and readable."""
    return {s.number for s in segments if chunk_key(chunk_path(plan_dir, s.number)) == key}


def plan_key(input_digest: str, index_digest: str, config: RenderConfig, first: int,
             count: int) -> str:
    """The digest naming a plan: input, index, frame range and the planning options."""
    return digest_text(PLAN_VERSION, input_digest, index_digest,
                       json.dumps(plan_options(config), sort_keys=True), str(first),
                       str(count))


def segment_seed(seed: int, number: int) -> int:
    """The seed of one segment, derived from the job's seed and its number."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def chunk_path(plan_dir: str | Path, number: int) -> Path:
    """Where the plan of segment ``number`` lives."""
    return Path(plan_dir) / f"chunk-{number:05d}.npz"


@dataclass
class CanvasState:
    """What every cell shows: tile id (-1 = none), orientation, recolour difference,
    contrast ratio.

    Attributes
    ----------
    ids : ndarray (rows, cols), int64.
    orients : ndarray (rows, cols), uint8, orientation codes
        (:func:`pipeline.visibility.orient`: 0 as is, 1 mirrored, ...).
    diffs : ndarray (rows, cols, 3), int16, cell mean minus tile mean (BGR) in
        1/:data:`pipeline.tone.DIFF_SCALE` levels (:func:`pipeline.tone.colour_diffs`).
    ratios : ndarray (rows, cols), uint8, the contrast gain the cell wants in
        1/:data:`pipeline.tone.RATIO_SCALE` (:func:`pipeline.tone.contrast_ratios`).
    """

    ids: np.ndarray
    orients: np.ndarray
    diffs: np.ndarray
    ratios: np.ndarray

    @classmethod
    def empty(cls, rows: int, cols: int) -> CanvasState:
        """A blank canvas of ``rows x cols`` cells: no tile anywhere."""
        return cls(np.full((rows, cols), -1, np.int64), np.zeros((rows, cols), np.uint8),
                   np.zeros((rows, cols, 3), np.int16),
                   np.full((rows, cols), RATIO_SCALE, np.uint8))

    def copy(self) -> CanvasState:
        return CanvasState(self.ids.copy(), self.orients.copy(), self.diffs.copy(),
                           self.ratios.copy())

    @property
    def placed(self) -> bool:
        """Whether any cell has a tile."""
        return bool((self.ids >= 0).any())


class FrameChange(NamedTuple):
    """One frame's changes: the cells (re)placed (k,) int, their tile ids (k,) int,
    orientation codes (k,) uint8, recolour differences (k, 3) int16 and contrast ratios
    (k,) uint8; how many cells the frame decided (``active``), and whether it was a
    scene cut (``cut``: its moving cells chosen afresh; not stored in a chunk)."""

    cells: np.ndarray
    ids: np.ndarray
    orients: np.ndarray
    diffs: np.ndarray
    ratios: np.ndarray
    active: int = 0
    cut: bool = False


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


def write_chunk(path: Path, key: str, seg: Segment, frames: list[FrameChange],
                start: CanvasState, end: CanvasState, start_src_lab: np.ndarray | None,
                end_src_lab: np.ndarray, tracking: Tracking) -> None:
    """Write one segment's plan atomically."""
    sizes = [len(f.cells) for f in frames]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def cat(i: int, dtype: type, shape: tuple[int, ...] = ()) -> np.ndarray:
        parts = [np.asarray(f[i], dtype).reshape(-1, *shape) for f in frames]
        return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype)

    arrays = {
        "key": np.array(key), "meta": np.array([seg.number, seg.start, seg.count], np.int64),
        "offsets": offsets, "cells": cat(0, np.int32), "ids": cat(1, np.int32),
        "orients": cat(2, np.uint8), "diffs": cat(3, np.int16, (3,)), "ratios": cat(4, np.uint8),
        "active": np.asarray([f.active for f in frames], np.int32),
        "start_ids": start.ids.astype(np.int32), "start_orients": start.orients,
        "start_diffs": start.diffs, "start_ratios": start.ratios,
        "end_ids": end.ids.astype(np.int32), "end_orients": end.orients, "end_diffs": end.diffs,
        "end_ratios": end.ratios, "end_src_lab": end_src_lab,
        "end_reference": tracking.reference, "end_pending": tracking.pending,
        "end_waited": tracking.waited, "end_cell_lab": tracking.lab,
        "end_fitted": tracking.fitted if tracking.fitted is not None else tracking.lab,
        "end_masked": tracking.masked if tracking.masked is not None else tracking.pending,
        "start_src_lab": (start_src_lab if start_src_lab is not None
                          else np.zeros((0,), np.float32)),
    }
    with atomic_output(path) as f:
        _savez_fast(f, arrays)


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
                         z["end_cell_lab"], z["end_fitted"], z["end_masked"]))
    except READ_ERRORS as exc:
        log.debug("plan chunk %s unusable: %s", path, exc)
        return None


def chunk_key(path: Path) -> str | None:
    """The plan key a chunk records, or None when it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["key"])
    except READ_ERRORS:
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


def write_manifest(plan_dir: Path, key: str, segments: list[Segment], rows: int,
                   cols: int) -> dict:
    """Write the manifest (last): the key, the range and each chunk's size and digest."""
    chunks = [record_artifact(chunk_path(plan_dir, seg.number)) for seg in segments]
    manifest = {"key": key, "version": PLAN_VERSION, "first": segments[0].start,
                "frames": sum(s.count for s in segments), "grid": [rows, cols],
                "shots": [s.start for s in segments if s.fresh], "chunks": chunks}
    write_json(Path(plan_dir) / MANIFEST, manifest)
    return manifest
