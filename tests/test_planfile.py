"""The plan artifact: segments, chunks written and read back, keys, the manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.activity import Tracking
from pipeline.config import RenderConfig, paint_options, plan_options
from pipeline.planfile import (
    MANIFEST,
    PLAN_FILES,
    CanvasState,
    FrameChange,
    Segment,
    chunk_key,
    chunk_path,
    job_segments,
    plan_key,
    plan_segments,
    read_chunk,
    read_manifest,
    segment_seed,
    write_chunk,
    write_manifest,
)


def test_segments_cover_the_range() -> None:
    assert plan_segments(10, 25, 10) == [Segment(0, 10, 10), Segment(1, 20, 10),
                                         Segment(2, 30, 5)]
    assert segment_seed(0, 1) != segment_seed(0, 2) and segment_seed(7, 1) == segment_seed(7, 1)


def test_a_job_is_cut_to_its_length_in_whole_batches() -> None:
    """By default about 8 segments a job, in whole 32-frame batches, 64 to 256 frames:
    a short job is cut too (its first segments are painted while the plan runs on), a
    long one in segments of 256; render.segment_frames asks for a size."""
    config = RenderConfig()  # segment_frames 0, cluster_batch_frames 32
    sizes = {n: [s.count for s in job_segments(5, n, config)]
             for n in (1, 30, 120, 250, 1000, 5000)}
    assert sizes[1] == [1] and sizes[30] == [30]
    assert sizes[120] == [64, 56] and sizes[250] == [64, 64, 64, 58]
    assert sizes[1000] == [128] * 7 + [104]
    assert set(sizes[5000][:-1]) == {256} and sum(sizes[5000]) == 5000
    assert job_segments(5, 120, config)[1].start == 69
    fixed = dataclasses.replace(config, segment_frames=50)  # a size asked for is kept
    assert [s.count for s in job_segments(0, 120, fixed)] == [50, 50, 20]


def test_no_segment_ends_a_range_with_a_frame_or_two() -> None:
    """A last piece under 8 frames joins the one before (a segment of a frame or two
    cannot be joined after a longer one with B-frames): 129 frames are 64 + 65, not 64 +
    64 + 1, by default and with a size asked for; shots are cut the same way."""
    config = RenderConfig()
    assert [s.count for s in job_segments(0, 129, config)] == [64, 65]
    assert [s.count for s in job_segments(0, 199, config)] == [64, 64, 71]
    assert [s.count for s in job_segments(0, 136, config)] == [64, 64, 8]
    fixed = dataclasses.replace(config, segment_frames=10)
    assert [s.count for s in job_segments(0, 21, fixed)] == [10, 11]
    assert [(s.start, s.count) for s in job_segments(0, 45, fixed, [22])] == [
        (0, 10), (10, 12), (22, 10), (32, 13)]
    assert [s.number for s in job_segments(0, 45, fixed, [22])] == [0, 1, 2, 3]
    assert [s.count for s in job_segments(0, 5, fixed)] == [5]
    tiny = dataclasses.replace(config, segment_frames=2)  # at least 8: 2-frame segments
    assert [s.count for s in job_segments(0, 20, tiny)] == [8, 12]  # could not be joined
    batches = dataclasses.replace(config, cluster_batch_frames=1)  # 64 at least there too
    assert [s.count for s in job_segments(0, 130, batches)] == [64, 66]


def test_a_job_is_cut_at_its_shots() -> None:
    """Each shot is cut on its own, in equal pieces of at most the job's size, and its
    first segment is fresh (planned from a blank canvas); shots outside the range are
    ignored; a size asked for is kept; without carry_tiles every segment is fresh."""
    config = RenderConfig()  # 200 frames: segments of up to 64
    segs = job_segments(0, 200, config, [90, 123, 166, 500])
    assert [(s.start, s.count, s.fresh) for s in segs] == [
        (0, 45, True), (45, 45, False), (90, 33, True), (123, 43, True), (166, 34, True)]
    assert [s.number for s in segs] == list(range(5))
    assert [s.fresh for s in job_segments(0, 120, config)] == [True, False]
    fixed = dataclasses.replace(config, segment_frames=50)
    assert [s.count for s in job_segments(0, 120, fixed, [60])] == [50, 10, 50, 10]
    apart = dataclasses.replace(config, carry_tiles=False)
    assert all(s.fresh for s in job_segments(0, 120, apart, [60]))


def test_shots_are_recorded_with_their_plan(tmp_path: Path) -> None:
    """The shot starts come back for their plan only; a damaged record reads as none (the
    shots are found again)."""
    from pipeline.planfile import SHOTS, read_shots, write_shots

    write_shots(tmp_path, "a" * 32, [90, 123])
    assert read_shots(tmp_path, "a" * 32) == [90, 123]
    assert read_shots(tmp_path, "b" * 32) is None
    for damaged in ('{"key": "' + "a" * 32 + '", "starts": [1.5]}', "{not json", "[]", ""):
        (tmp_path / SHOTS).write_text(damaged)
        assert read_shots(tmp_path, "a" * 32) is None
    assert read_shots(tmp_path / "missing", "a" * 32) is None


def _chunk(tmp_path: Path, number: int = 0) -> tuple[Path, list[FrameChange]]:
    rng = np.random.default_rng(number)
    start = CanvasState.empty(2, 3)
    end = CanvasState(rng.integers(0, 9, (2, 3)), np.ones((2, 3), np.uint8),
                      np.full((2, 3, 3), -5, np.int16), np.full((2, 3), 70, np.uint8))
    frames = [FrameChange(np.arange(6), rng.integers(0, 9, 6), np.zeros(6, np.uint8),
                          np.zeros((6, 3), np.int16), np.full(6, 64, np.uint8), 6),
              FrameChange(np.array([4]), np.array([3]), np.array([1], np.uint8),
                          np.array([[1, 2, 3]], np.int16), np.array([65], np.uint8), 2)]
    tracking = Tracking(np.zeros((4, 6, 3), np.uint8), np.zeros(6, bool),
                        np.zeros(6, np.int32), np.zeros((6, 3), np.float32))
    path = chunk_path(tmp_path, number)
    write_chunk(path, "k" * 32, Segment(number, 10 * number, 2), frames, start, end, None,
                np.ones((2, 3, 3), np.float32), tracking)
    return path, frames


def test_a_chunk_reads_back_as_written(tmp_path: Path) -> None:
    path, frames = _chunk(tmp_path)
    assert PLAN_FILES.fullmatch(path.name) and chunk_key(path) == "k" * 32
    chunk = read_chunk(path, "k" * 32)
    assert (chunk.number, chunk.start, chunk.count) == (0, 0, 2)
    for i, frame in enumerate(frames):
        for got, want in zip(chunk.frame(i), frame[:5], strict=True):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(chunk.active, [6, 2])
    assert not chunk.start_state.placed and chunk.start_src_lab is None
    assert chunk.end_state.orients.all() and chunk.end_tracking.reference.shape == (4, 6, 3)
    assert list(chunk.tile_ids()) == sorted(set(frames[0].ids) | {3})


def test_a_chunk_of_another_plan_or_damaged_is_not_read(tmp_path: Path) -> None:
    path, _ = _chunk(tmp_path)
    assert read_chunk(path, "x" * 32) is None
    path.write_bytes(path.read_bytes()[:100])
    assert read_chunk(path) is None and chunk_key(path) is None


def test_manifest_is_checked_and_a_damaged_chunk_is_dropped(tmp_path: Path) -> None:
    segs = [Segment(0, 0, 2), Segment(1, 10, 2)]
    paths = [_chunk(tmp_path, 0)[0], _chunk(tmp_path, 1)[0]]
    manifest = write_manifest(tmp_path, "k" * 32, segs, 2, 3)
    assert manifest["frames"] == 4 and manifest["grid"] == [2, 3]
    assert read_manifest(tmp_path, "k" * 32) == manifest
    assert read_manifest(tmp_path, "other") is None
    paths[1].write_bytes(b"damaged")
    assert read_manifest(tmp_path, "k" * 32) is None
    assert not paths[1].exists() and not (tmp_path / MANIFEST).exists()


def test_the_plan_key_follows_the_options_declared_as_planning_ones() -> None:
    base = RenderConfig()
    key = plan_key("in", "ix", base, 0, 100)
    assert plan_key("in", "ix", base, 0, 99) != key
    for f in dataclasses.fields(RenderConfig):
        other = {bool: lambda v: not v, int: lambda v: v + 2, float: lambda v: v / 2 + 0.01,
                 str: lambda v: v}[type(f.default)](f.default)
        if f.name in ("matching", "orientations"):
            other = "refined" if f.name == "matching" else "all"
        changed = dataclasses.replace(base, **{f.name: other})
        plans = f.metadata["affects"].startswith("plan")
        assert (plan_key("in", "ix", changed, 0, 100) != key) == (
            plans and other != f.default), f.name
        assert (f.name in plan_options(base)) == plans
        assert (f.name in paint_options(base)) == f.metadata["affects"].endswith("paint")
