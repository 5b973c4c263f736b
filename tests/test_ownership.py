"""Issue 16's building blocks, as small exact-answer tests: folder markers, temporary
names, locks removed under a waiter, image sizes from headers, the worker cap, the photo
radius bound, one-line error text."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cache import mark_owned, open_cache, owned_ancestor, owned_kind, temp_final_name
from pipeline.clean import clean_cache, refuse_unsafe
from pipeline.cli import one_line
from pipeline.config import PhotoOptions
from pipeline.errors import CleanError, OutputError
from pipeline.execute import choose_workers
from pipeline.grid import Grid
from pipeline.imagesize import image_size, pixel_problem
from pipeline.locks import file_lock
from pipeline.output import check_output, existing_problem, managed_place
from pipeline.photo import check_feasible, violations


def test_markers_name_the_kind_and_are_found_from_below(tmp_path: Path) -> None:
    job = mark_owned(tmp_path / "c" / "render" / "k", "job")
    assert owned_kind(job) == "job" and owned_kind(tmp_path / "c") is None
    assert owned_ancestor(job / "a" / "b.mp4") == (job, "job")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / ".mosaic-owned").write_text('{"tool": "other", "kind": "job"}')
    assert owned_kind(tmp_path / "x") is None  # another program's file of that name
    assert managed_place(job / "o.mp4") and managed_place(tmp_path / "o.mp4") is None


def test_a_cache_is_marked_only_when_new_empty_or_of_the_known_layout(tmp_path: Path) -> None:
    assert owned_kind(open_cache(tmp_path / "new")) == "cache"
    (tmp_path / "old" / "render").mkdir(parents=True)
    assert owned_kind(open_cache(tmp_path / "old")) == "cache"
    (tmp_path / "home" / "Documents").mkdir(parents=True)
    assert owned_kind(open_cache(tmp_path / "home")) is None
    with pytest.raises(CleanError, match="not a mosaic cache"):
        clean_cache(tmp_path / "home", 0)
    for bad in ("", "/"):
        with pytest.raises(CleanError):
            refuse_unsafe(bad, "--cache")
    with pytest.raises(CleanError, match="home folder"):
        refuse_unsafe(Path.home(), "--cache")


@pytest.mark.parametrize(("name", "final"), [
    (".seg-00001.json.k3x9a_b2.tmp", "seg-00001.json"), (".seg-00001.abcdefgh.mp4.tmp",
                                                         "seg-00001.mp4"),
    (".poster.jpg.abcdefgh.tmp.jpg", "poster.jpg"), (".x.tmp", None), ("seg.tmp", None),
    (".draft.md.tmp", None), (".session.abcdefgh.tmp", "session")])
def test_temporary_names_are_recognised(name: str, final: str | None) -> None:
    assert temp_final_name(name) == final


def test_a_lock_file_removed_while_waiting_is_made_again(tmp_path: Path) -> None:
    lock = tmp_path / "job" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time,os\nfrom pipeline.locks "
                               "import file_lock\nwith file_lock(sys.argv[1], 'job'):\n"
                               " print('locked', flush=True); time.sleep(1.0)\n"
                               " os.unlink(sys.argv[1])", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    got = []

    def wait() -> None:
        with file_lock(lock, "job"):
            got.append(lock.exists())

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(30)
    holder.wait()
    assert got == [True]  # it holds the lock file that is there, not the removed one


def _png(w: int, h: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", w, h)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", ".tif", ".ppm"])
def test_image_sizes_come_from_headers(ext: str) -> None:
    img = np.zeros((37, 53, 3), np.uint8)
    data = cv2.imencode(ext, img)[1].tobytes()
    assert image_size(data) == (37, 53)


def test_the_pixel_limit_is_checked_without_decoding() -> None:
    assert image_size(_png(100_000, 10_000) + b"\0" * 16) == (10_000, 100_000)
    assert "over the limit" in pixel_problem(_png(100_000, 10_000) + b"\0" * 16)
    assert pixel_problem(_png(4000, 3000) + b"\0" * 16) is None
    assert image_size(b"GIF89a" + struct.pack("<HH", 640, 480)) == (480, 640)
    assert image_size(b"not an image") is None


def test_workers_asked_for_are_capped_by_cores_memory_and_segments() -> None:
    plan = choose_workers(640 * 480, "libx264", "ultrafast", workers=1000, cores=2,
                          available=64 << 30, segments=50)
    assert plan.workers == 2 and plan.asked == 1000 and "capped to 2" in plan.describe_cap(50)
    assert choose_workers(640 * 480, "libx264", "ultrafast", workers=8, cores=16,
                          available=64 << 30, segments=3).workers == 3
    small = choose_workers(5120 * 2880, "libx264", "slow", workers=8, cores=16,
                           available=4 << 30, segments=99)
    assert small.workers == 1 and small.asked == 8
    assert choose_workers(640 * 480, "libx264", "ultrafast", workers=2, cores=4,
                          available=64 << 30, segments=9).asked == 0  # not capped


def test_the_photo_radius_needs_r_plus_one_squared_tiles_clipped_to_the_grid() -> None:
    grid = Grid(480, 640, 30, 40, 32, 32)
    check_feasible(grid, np.arange(16), PhotoOptions(radius=3))  # (3+1)^2 = 16
    with pytest.raises(Exception, match="needs at least 16"):
        check_feasible(grid, np.arange(15), PhotoOptions(radius=3))
    check_feasible(Grid(48, 64, 2, 3, 32, 32), np.arange(6), PhotoOptions(radius=10))
    # and (r+1)^2 tiles in a repeating pattern do satisfy the radius
    r = 3
    rows, cols = np.indices((12, 17))
    ids = (rows % (r + 1)) * (r + 1) + cols % (r + 1)
    assert len(violations(ids, np.arange(16), r, 0)) == 0
    assert len(violations(ids, np.arange(16), r + 1, 0)) > 0


def test_outputs_of_another_kind_are_refused_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("my notes")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "is not a video" in existing_problem(tmp_path / "notes.mp4", "video")
    assert existing_problem(tmp_path / "empty.mp4", "video") is None
    with pytest.raises(OutputError, match="--force"):
        check_output(tmp_path / "notes.mp4", kind="video")
    assert check_output(tmp_path / "notes.mp4", kind="video", force=True)
    assert (tmp_path / "notes.mp4").read_text() == "my notes"  # checked, not written


def test_error_lines_escape_control_characters() -> None:
    assert one_line("a\nb\x1ec\u2028d\te") == "a\\nb\\x1ec\\u2028d\te"
    assert len(one_line("x\ny").splitlines()) == 1


def test_clean_waits_for_nothing_and_leaves_held_folders(tmp_path: Path) -> None:
    cache = open_cache(tmp_path / "cache")
    plan = mark_owned(cache / "plans" / ("0" * 32), "plan")
    (plan / "chunk-00000.npz").write_bytes(b"x")
    old = time.time() - 30 * 86400
    import os

    os.utime(plan / "chunk-00000.npz", (old, old))
    from pipeline.locks import hold

    with hold(plan, "the plan"):
        report = clean_cache(cache, 0)
    assert report.busy == [plan] and (plan / "chunk-00000.npz").exists()
    report = clean_cache(cache, 0)
    assert report.count("old render plan") == 1 and not plan.exists()


def test_clean_removes_a_killed_runs_join_beside_a_default_output(tmp_path: Path) -> None:
    """A killed render's streamed join beside a default output (as large as what it had
    joined) goes at once; one whose join still runs (its file locked) stays, and so does
    a file of that shape for an output that is not one of the tool's names."""
    import fcntl
    import os

    cache = open_cache(tmp_path / "cache")
    renders = cache / "renders"
    renders.mkdir()
    out = "clip-0123abcd-mosaic.mp4"
    killed = renders / f".{out}.{'a' * 16}.join.tmp"
    running = renders / f".{out}.{'b' * 16}.join.tmp"
    foreign = renders / f".notes.mp4.{'c' * 16}.join.tmp"
    for path in (killed, running, foreign):
        path.write_bytes(b"half a film")
    fd = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        report = clean_cache(cache, 30 * 86400)
    finally:
        os.close(fd)
    assert report.count("killed run's unfinished join") == 1
    assert not killed.exists() and running.exists() and foreign.exists()
