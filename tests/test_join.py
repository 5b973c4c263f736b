"""pipeline/join.py: the streamed join takes segments in any order and writes what the
concat demuxer's join writes (the same decoded frames, timestamps and audio), cleans up
after itself, and fails in one line."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_clip

from pipeline.errors import DiskFullError, OutputError
from pipeline.join import EndJoin, StreamJoin, open_join, remove_stale_joins
from pipeline.output import CONTAINERS
from pipeline.planfile import Segment
from pipeline.tasklog import TaskLog, read_tasks
from pipeline.video import ffmpeg_exe, probe

RATE = "30000/1001"


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[Segment]]:
    """A source with audio (60 frames) and its frames as three H.264 segments with
    B-frames (20, 25, 15 frames), as the painters write them."""
    root = tmp_path_factory.mktemp("join")
    source = make_clip(root / "source.mp4", rate=RATE, seconds=60 * 1001 / 30000)
    return (source, *cut(source, root, (20, 25, 15)))


def cut(source: Path, root: Path, counts: tuple[int, ...], bframes: int = 2
        ) -> tuple[list[Path], list[Segment]]:
    """``source``'s frames as H.264 segments of ``counts`` frames with B-frames."""
    paths, segments, start = [], [], 0
    for n, count in enumerate(counts):
        path = root / f"seg-{n:05d}.mp4"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), "-map", "0:v",
                        "-vf", f"trim=start_frame={start}:end_frame={start + count},"
                        "setpts=PTS-STARTPTS", "-c:v", "libx264", "-preset", "ultrafast",
                        "-x264-params", f"bframes={bframes}:b-adapt=0", "-pix_fmt", "yuv420p",
                        str(path)], check=True)
        paths.append(path)
        segments.append(Segment(n, 100 + start, count, n == 0))
        start += count
    return paths, segments


def frames_of(path: Path, stream: str = "v") -> list[str]:
    """framemd5 lines of ``path``'s decoded video (or copied audio), header dropped."""
    copy = ["-c", "copy"] if stream == "a" else []
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", f"0:{stream}",
                          *copy, "-f", "framemd5", "-"], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if not line.startswith("#")]


def joined(parts, out: Path, order: list[int], tasks: TaskLog | None = None) -> Path:
    source, paths, segments = parts
    info = probe(source)
    frames = sum(seg.count for seg in segments)
    join = open_join(segments, paths, out, info, info.audio[0], (0, frames), out.parent,
                     CONTAINERS[out.suffix], "h264", "job", tasks)
    assert isinstance(join, StreamJoin)
    for i in order:
        join.add(segments[i].number)
    join.finish()
    return out


def test_segments_in_any_order_give_the_end_joins_file(parts, tmp_path: Path) -> None:
    source, paths, segments = parts
    log = TaskLog(tmp_path)
    first = joined(parts, tmp_path / "in-order.mp4", [0, 1, 2], log)
    second = joined(parts, tmp_path / "backwards.mp4", [2, 1, 0])
    assert first.read_bytes() == second.read_bytes()
    info = probe(source)
    ended = open_join(segments, paths, tmp_path / "ended.mp4", info, info.audio[0], (0, 60),
                      tmp_path, CONTAINERS[".mp4"], "mpeg4", "job", None)  # (not streamed)
    assert isinstance(ended, EndJoin)
    ended.finish()
    assert frames_of(first) == frames_of(tmp_path / "ended.mp4")  # frames and timestamps
    assert frames_of(first, "a") == frames_of(tmp_path / "ended.mp4", "a")
    got = probe(first)
    assert (got.frames, len(got.audio), got.rate) == (60, 1, info.rate)
    records = read_tasks(tmp_path / "tasks.jsonl")
    assert [r["id"] for r in records] == ["join-00000", "join-00001", "join-00002", "mux"]
    assert records[1]["deps"] == ["paint-00001", "join-00000"]
    assert records[0]["read"]["segment"] == paths[0].stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # (the end join's listing)
        "backwards.mp4", "concat.txt", "ended.mp4", "in-order.mp4", "tasks.jsonl"]


def test_a_two_frame_segment_between_longer_ones(parts, tmp_path: Path) -> None:
    # a two-frame segment decodes from its first frame, the next one a frame or two early:
    # the streamed join gives way to the end join (ffmpeg evens the decode steps out)
    source = parts[0]
    short = cut(source, tmp_path, (10, 2, 10), bframes=3)
    streamed = joined((source, *short), tmp_path / "streamed.mp4", [2, 1, 0])
    info = probe(source)
    ended = open_join(short[1], short[0], tmp_path / "ended.mp4", info, info.audio[0],
                      (0, 22), tmp_path, CONTAINERS[".mp4"], "mpeg4", "job", None)
    ended.finish()
    assert streamed.read_bytes() == (tmp_path / "ended.mp4").read_bytes()
    assert probe(streamed).frames == 22
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


def test_other_containers_are_streamed_too(parts, tmp_path: Path) -> None:
    out = joined(parts, tmp_path / "o.mkv", [1, 0, 2])
    assert frames_of(out) == frames_of(joined(parts, tmp_path / "o.mp4", [0, 1, 2]))


def test_an_abort_leaves_nothing_behind(parts, tmp_path: Path) -> None:
    source, paths, segments = parts
    info = probe(source)
    def started() -> StreamJoin:
        join = open_join(segments, paths, tmp_path / "o.mp4", info, None, (0, 60), tmp_path,
                         CONTAINERS[".mp4"], "h264", "job", None)
        join.add(0)  # joined while segment 1 is "painted"
        while join._next < 1:
            time.sleep(0.01)
        return join

    started().abort()
    assert list(tmp_path.iterdir()) == []
    # a run killed mid-join leaves its temporary file: the job's next join replaces it
    (tmp_path / ".o.mp4.job.join.tmp").write_bytes(b"half a film")
    rerun = open_join(segments, paths, tmp_path / "o.mp4", info, None, (0, 60), tmp_path,
                      CONTAINERS[".mp4"], "h264", "job", None)
    assert [(p.name, p.stat().st_size) for p in tmp_path.iterdir()] == [
        (".o.mp4.job.join.tmp", 0)]  # its own, empty, locked while it runs
    for n in (0, 1, 2):
        rerun.add(n)
    rerun.finish()
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]


def test_a_killed_runs_join_is_removed_a_running_one_kept(parts, tmp_path: Path) -> None:
    """The temporary file of a join into OUT that was killed (another job's: other
    options) goes when the next join into OUT starts; one whose join still runs (its
    file locked) stays, and this join's own is locked until it is renamed over OUT."""
    source, paths, segments = parts
    info = probe(source)
    killed, running = tmp_path / ".o.mp4.other.join.tmp", tmp_path / ".o.mp4.live.join.tmp"
    for path in (killed, running):
        path.write_bytes(b"half a film")
    holder = subprocess.Popen(  # a join's process, killed mid-join: its lock goes with it
        [sys.executable, "-c", "import fcntl, os, sys, time; "
         f"fd = os.open({str(killed)!r}, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    fd = os.open(running, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert remove_stale_joins(tmp_path / "o.mp4") == []  # both held
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        join = open_join(segments, paths, tmp_path / "o.mp4", info, None, (0, 60), tmp_path,
                         CONTAINERS[".mp4"], "h264", "job", None)
        assert not killed.exists() and running.exists()
        assert remove_stale_joins(tmp_path / "o.mp4") == []  # this join's own is held
        for n in (0, 1, 2):
            join.add(n)
        join.finish()
        assert sorted(p.name for p in tmp_path.iterdir()) == [".o.mp4.live.join.tmp",
                                                               "o.mp4"]
    finally:
        os.close(fd)
    assert remove_stale_joins(tmp_path / "o.mp4") == [running]
    # only this output's: another's whose name a pattern of this one would match stays
    other = tmp_path / ".o1.mp4.x.join.tmp"
    other.write_bytes(b"")
    assert remove_stale_joins(tmp_path / "o[1].mp4") == [] and other.exists()
    assert frames_of(tmp_path / "o.mp4") == frames_of(joined(parts, tmp_path / "e.mp4",
                                                              [0, 1, 2]))


def failed(join: StreamJoin) -> None:
    """Until the join's relay has failed (a few seconds at most)."""
    for _ in range(500):
        if join._error is not None:
            return
        time.sleep(0.01)
    raise AssertionError("the join did not fail")


def test_a_full_disk_stops_the_join_in_one_line(parts, small_disk) -> None:
    source, paths, segments = parts
    disk = small_disk(1 << 20)  # less than a segment and the margin kept free
    info = probe(source)
    join = open_join(segments, paths, disk.path / "o.mp4", info, info.audio[0], (0, 60),
                     disk.path, CONTAINERS[".mp4"], "h264", "job", None)
    join.add(0)
    failed(join)
    with pytest.raises(DiskFullError, match=rf"{disk.path}: writing .*o\.mp4 needs about"):
        join.add(1)
    join.abort()
    assert list(disk.path.iterdir()) == []


def test_a_broken_segment_is_one_error_and_no_output(parts, tmp_path: Path) -> None:
    source, paths, segments = parts
    broken = tmp_path / "seg-00001.mp4"
    broken.write_bytes(paths[1].read_bytes()[: paths[1].stat().st_size // 3])
    info = probe(source)
    out = tmp_path / "o.mp4"
    join = open_join(segments, [paths[0], broken, paths[2]], out, info, info.audio[0],
                     (0, 60), tmp_path, CONTAINERS[".mp4"], "h264", "job", None)
    join.add(0)
    join.add(1)
    failed(join)  # the job hears of it with the next painted segment: it stops at once
    message = r"seg-00001.mp4: a painted segment is unreadable \(.*\); rerun to paint it again"
    with pytest.raises(OutputError, match=message):
        join.add(2)
    with pytest.raises(OutputError, match=message):
        join.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg-00001.mp4"]
