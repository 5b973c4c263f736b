"""The source frames a plan task hands to its segment's painter on the same machine
(:mod:`pipeline.stash`): the same output as decoding them again, the stash left empty,
and every way it can fail falling back to the decoder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import make_shots

from pipeline import stash
from pipeline.config import RenderConfig
from pipeline.output import scores_path
from pipeline.stages.render import run_render
from pipeline.stash import STASH_ENV, Tee, job_stash, take
from pipeline.tasklog import TASKS, read_tasks
from pipeline.video import ffmpeg_exe

SHAPE = (4, 6, 3)
PLAN = ("/some/plan", "k" * 32)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(STASH_ENV, str(tmp_path / "stash"))
    return tmp_path / "stash"


def test_a_segment_passes_through_and_is_taken_once(root: Path) -> None:
    src = frames(5)
    with job_stash(*PLAN) as folder:
        assert folder is not None and folder.parent == root
        tee = Tee(*PLAN, 3, 40, 5, SHAPE).over(iter(src))
        passed = list(tee)
        assert all(a is b for a, b in zip(passed, src, strict=True))  # passed on as they are
        assert tee.stored == 5 * int(np.prod(SHAPE))
        assert take(*PLAN, 3, 41, 5, SHAPE) is None  # another range: not this one
        got = list(take(*PLAN, 3, 40, 5, SHAPE))
        assert all(np.array_equal(a, b) for a, b in zip(got, src, strict=True))
        assert take(*PLAN, 3, 40, 5, SHAPE) is None  # gone once taken
        assert [p.name for p in folder.iterdir()] == ["owner"]
    assert not folder.exists()  # the client's folder goes with the job


def test_nothing_is_kept_without_a_folder_or_room_or_every_frame(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = frames(4)
    # no job folder made (a worker on another machine)
    tee = Tee(*PLAN, 0, 0, 4, SHAPE).over(iter(src))
    assert len(list(tee)) == 4 and tee.stored == 0
    with job_stash(*PLAN) as folder:
        monkeypatch.setattr(stash, "BUDGET", 3 * int(np.prod(SHAPE)))
        tee = Tee(*PLAN, 0, 0, 4, SHAPE).over(iter(src))  # over the budget
        assert len(list(tee)) == 4 and tee.stored == 0
        monkeypatch.setattr(stash, "BUDGET", 1 << 20)
        # a plan stopped after two frames
        tee = Tee(*PLAN, 1, 0, 4, SHAPE).over(iter(src))
        it = iter(tee)
        next(it), next(it)
        it.close()
        # fewer frames than the segment
        tee = Tee(*PLAN, 2, 0, 4, SHAPE).over(iter(src[:3]))
        assert len(list(tee)) == 3 and tee.stored == 0
        tee = Tee(*PLAN, 3, 0, 2, SHAPE).over(iter([src[0], np.zeros((2, 2, 3), np.uint8)]))
        assert len(list(tee)) == 2 and tee.stored == 0  # a frame of another size
        assert [p.name for p in folder.iterdir()] == ["owner"]  # no file, no temporary
        (folder / "00004-0-4.bgr").write_bytes(b"x" * 10)  # damaged: not whole
        assert take(*PLAN, 4, 0, 4, SHAPE) is None


def test_a_decoders_error_is_not_swallowed(root: Path) -> None:
    def failing():
        yield frames(1)[0]
        raise OSError("decoder died")

    with job_stash(*PLAN) as folder:
        tee = Tee(*PLAN, 0, 0, 2, SHAPE).over(failing())
        with pytest.raises(OSError, match="decoder died"):
            list(tee)
        assert [p.name for p in folder.iterdir()] == ["owner"]


def test_a_killed_clients_folder_goes_and_a_live_ones_stays(root: Path) -> None:
    gone = root / ("0" * 24)
    gone.mkdir(parents=True)
    (root / "not-ours").mkdir()  # (anything else in the folder is left alone)
    (root / ("1" * 24)).mkdir()  # (a job's folder being made: no owner yet)
    (gone / "owner").write_text('{"pid": 1}')  # its owner lock, held by nobody now
    (gone / "00000-0-1.bgr").write_bytes(b"x")
    with job_stash(*PLAN) as folder:
        assert folder is not None and not gone.exists()
        # the same plan in a second job at once (its folder held by a live client): that
        # job decodes, and leaves this one's folder alone
        with job_stash(*PLAN) as second:
            assert second is None
        assert folder.is_dir()
    with job_stash(*PLAN, enabled=False) as off:
        assert off is None
    assert sorted(os.listdir(root)) == ["1" * 24, "not-ours"]


def test_off_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STASH_ENV, "off")
    with job_stash(*PLAN) as folder:
        assert folder is None


def _framemd5(path: Path) -> list[str]:
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v",
                          "-f", "framemd5", "-"], capture_output=True, text=True, check=True)
    return [line.rsplit(",", 1)[1].strip() for line in out.stdout.splitlines()
            if line and not line.startswith("#")]


def test_stashed_frames_paint_what_decoded_ones_do(tile_index: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_shots(tmp_path / "shots.mp4", seconds=0.6)
    config = RenderConfig(scale=2, preset="ultrafast", segment_frames=10, encoder_threads=1,
                          shot_frames=12, workers=2, alpha=0.3)
    outs, records = {}, {}
    for mode in ("on", "off"):
        monkeypatch.setenv(STASH_ENV, str(tmp_path / "stash") if mode == "on" else "off")
        outs[mode] = tmp_path / f"{mode}.mp4"
        run_render(str(clip), tile_index, outs[mode], config, tmp_path / f"cache-{mode}",
                   progress=False)
        work = next((tmp_path / f"cache-{mode}" / "render").iterdir())
        records[mode] = [r for r in read_tasks(work / TASKS) if r["kind"] == "paint"]
    assert _framemd5(outs["on"]) == _framemd5(outs["off"])
    assert json.loads(scores_path(outs["on"]).read_text())["scores"] == \
        json.loads(scores_path(outs["off"]).read_text())["scores"]
    assert len(records["on"]) == len(records["off"]) >= 4
    assert all("stash" in r["read"] and "source" not in r["read"] for r in records["on"])
    assert all("source" in r["read"] and "stash" not in r["read"] for r in records["off"])
    assert os.listdir(tmp_path / "stash") == []  # nothing left in memory


def test_a_root_that_is_a_link_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    monkeypatch.setenv(STASH_ENV, str(tmp_path / "link"))
    with job_stash(*PLAN) as folder:
        assert folder is None
    assert os.listdir(elsewhere) == []


def test_a_full_shared_memory_stashes_nothing(small_disk, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    disk = small_disk(64 << 10)  # 64 KiB: room for the folder, not for a segment
    monkeypatch.setenv(STASH_ENV, str(disk.path))
    src = [np.zeros((64, 64, 3), np.uint8)] * 8  # 96 KiB
    with job_stash(*PLAN) as folder:
        assert folder is not None
        tee = Tee(*PLAN, 0, 0, 8, (64, 64, 3)).over(iter(src))
        assert len(list(tee)) == 8 and tee.stored == 0  # the frames all passed on
        assert [p.name for p in folder.iterdir()] == ["owner"]
        assert take(*PLAN, 0, 0, 8, (64, 64, 3)) is None
