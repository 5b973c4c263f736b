"""Issue 8, render side: each defect reproduced as a user meets it, through the real
command (``python -m pipeline``), real ffmpeg and real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from helpers import make_clip, mosaic, no_temporaries

from pipeline.cache import digest_file

FAST = ("--scale", "1", "--preset", "ultrafast", "--set", "render.segment_frames=10")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MOSAIC_CACHE": str(tmp_path / "cache")}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.2 s, 160x120 at 25 fps with a tone: 30 frames, 3 segments."""
    return make_clip(tmp_path_factory.mktemp("safety") / "src.mp4", seconds=1.2)


def frames_and_audio(path: Path) -> tuple[int, int, str]:
    """Decoded frame count (decoding every packet), audio streams and container name."""
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(c.streams.video[0]))
        return frames, len(c.streams.audio), c.format.name


@pytest.mark.parametrize("how", ["absolute", "relative", "symlink"])
def test_out_naming_the_input_is_refused(how: str, clip: Path, tile_index: Path,
                                         tmp_path: Path, env) -> None:
    src = tmp_path / "src.mp4"
    shutil.copy(clip, src)
    before = digest_file(src)
    out = {"absolute": src, "relative": Path("./src.mp4"), "symlink": tmp_path / "link.mp4"}[how]
    if how == "symlink":
        out.symlink_to(src)
    run = mosaic("render", src, "--index", tile_index, "--out", out, *FAST, cwd=tmp_path,
                 env=env)
    assert run.returncode == 1 and "would overwrite" in run.stderr
    assert digest_file(src) == before
    assert not (tmp_path / "cache" / "render").exists()  # refused before any work


@pytest.mark.parametrize(("name", "message"), [
    ("outdir", "is a directory"),
    ("o.webm", "webm"),
    ("o.avi", ".avi"),
    ("missing/o.mp4", "does not exist"),
])
def test_bad_out_fails_before_any_work(name: str, message: str, clip: Path, tile_index: Path,
                                       tmp_path: Path, env) -> None:
    (tmp_path / "outdir").mkdir()
    run = mosaic("render", clip, "--index", tile_index, "--out", tmp_path / name, *FAST,
                 env=env)
    assert run.returncode == 1 and message in run.stderr, run.stderr
    assert not (tmp_path / "cache" / "render").exists()


def test_container_follows_the_extension_and_scores_files_are_distinct(
        clip: Path, tile_index: Path, tmp_path: Path, env) -> None:
    for name, muxer in (("o.mkv", "matroska"), ("o.mov", "mov"), ("o.mp4", "mp4")):
        run = mosaic("render", clip, "--index", tile_index, "--out", tmp_path / name, *FAST,
                     "-q", env=env)
        assert run.returncode == 0, run.stderr
        frames, audio, container = frames_and_audio(tmp_path / name)
        assert frames == 30 and audio == 1 and muxer in container
        mask = os.umask(0)
        os.umask(mask)
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask  # ordinary mode
        assert (tmp_path / f"{name}.scores.json").is_file()


def test_same_named_inputs_get_distinct_default_outputs(tile_index: Path, tmp_path: Path,
                                                        env) -> None:
    outs = []
    for folder, size in (("a", "160x120"), ("b", "96x64")):
        (tmp_path / folder).mkdir()
        src = make_clip(tmp_path / folder / "clip.mp4", size=size, seconds=0.4, audio=False)
        run = mosaic("render", src, "--index", tile_index, *FAST, env=env)
        assert run.returncode == 0, run.stderr
        outs.append(sorted((tmp_path / "cache" / "renders").glob("clip-*-mosaic.mp4")))
    assert len(outs[1]) == 2 and len(set(outs[1])) == 2
    sizes = set()
    for out in outs[1]:
        with av.open(str(out)) as c:
            sizes.add(c.streams.video[0].codec_context.width)
    assert sizes == {160, 96}


def test_two_renders_of_one_job_at_once(clip: Path, tile_index: Path, tmp_path: Path,
                                        env) -> None:
    """Five trials of two identical renders started together: both succeed with a
    verified output (the second waits for the first's lock), never a broken file."""
    out = tmp_path / "o.mp4"
    cmd = [sys.executable, "-m", "pipeline", "render", str(clip), "--index", str(tile_index),
           "--out", str(out), *FAST]
    waited = 0
    for trial in range(5):
        if trial % 2 == 0:
            shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # from scratch
        else:  # cached segments and plan, output gone: both race to the join
            out.unlink()
        procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        for code, err in results:
            assert code == 0 and "Traceback" not in err, err
        waited += sum("waiting for it to finish" in err for _, err in results)
        assert frames_and_audio(out)[:2] == (30, 1)
        assert no_temporaries(tmp_path)
    assert waited >= 1


def test_second_render_started_while_the_first_encodes(clip: Path, tile_index: Path,
                                                       tmp_path: Path, env) -> None:
    """The second run waits for the first's lock instead of writing over its segments;
    both exit 0 and the output holds every frame."""
    out, clip = tmp_path / "o.mp4", make_clip(tmp_path / "long.mp4", seconds=6)  # 150 frames
    cmd = [sys.executable, "-m", "pipeline", "render", str(clip), "--index", str(tile_index),
           "--out", str(out), "--scale", "4", "--preset", "medium",
           "--set", "render.segment_frames=10"]
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache").glob("render/*/.seg-*.tmp")):  # first is encoding
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 0 and "waiting for it to finish" in second.stderr
    assert "is up to date" in second.stderr
    assert frames_and_audio(out)[:2] == (150, 1) and no_temporaries(tmp_path)


def test_a_joined_file_unlike_the_plan_is_never_taken_for_the_output(
        clip: Path, tmp_path: Path) -> None:
    from pipeline.errors import OutputError
    from pipeline.output import check_joined
    from pipeline.video import probe

    info = probe(clip)  # 30 frames with audio
    check_joined(clip, tmp_path / "o.mp4", info, 30, info.audio[0])  # as planned: passes
    short = make_clip(tmp_path / "short.mp4", seconds=0.6)
    with pytest.raises(OutputError, match=r"15 frames, 1 audio stream.*30 frames"):
        check_joined(short, tmp_path / "o.mp4", info, 30, info.audio[0])
    silent = make_clip(tmp_path / "silent.mp4", seconds=1.2, audio=False)
    with pytest.raises(OutputError, match="0 audio stream"):
        check_joined(silent, tmp_path / "o.mp4", info, 30, info.audio[0])


@pytest.mark.parametrize("clip_first", [True, False], ids=["index first", "index last"])
@pytest.mark.parametrize("name, rate, extra", [
    ("b-frames.mp4", "25", ("-x264-params", "bframes=3:b-adapt=0")),
    ("ntsc.mov", "30000/1001", ()),
    ("film.mp4", "24000/1001", ("-x264-params", "bframes=2")),
    ("other.mkv", "25", ()),
])
def test_the_joined_files_check_reads_an_mp4s_index_as_the_full_probe_counts(
        tmp_path: Path, name: str, rate: str, extra: tuple[str, ...], clip_first: bool
) -> None:
    import av

    from pipeline.errors import OutputError
    from pipeline.output import check_joined, indexed_counts
    from pipeline.video import probe

    faststart = ("-movflags", "+faststart") if clip_first else ()
    clip = make_clip(tmp_path / name, rate=rate, seconds=1.3, extra=(*extra, *faststart))
    info = probe(clip)
    got = indexed_counts(clip)
    if clip.suffix == ".mkv":  # no frame count in its index: the check demuxes it
        assert got is None
    else:
        assert got is not None and got[:2] == (info.frames, len(info.audio))
        assert got[2] == pytest.approx(info.duration, abs=1e-6)
    check_joined(clip, tmp_path / "o.mp4", info, info.frames, info.audio[0])
    with pytest.raises(OutputError, match=f"{info.frames} frames.*{info.frames + 1} frames"):
        check_joined(clip, tmp_path / "o.mp4", info, info.frames + 1, info.audio[0])
    with av.open(str(clip)) as container:  # where the last video frame's data starts
        last = max(p.pos for p in container.demux(container.streams.video[0]) if p.size)
    for size in (clip.stat().st_size // 2, last):  # the data's end (index first) or the
        cut = tmp_path / f"cut{clip.suffix}"        # index's (index last) missing
        cut.write_bytes(clip.read_bytes()[:size])
        with pytest.raises(OutputError, match="the joined file"):
            check_joined(cut, tmp_path / "o.mp4", info, info.frames, info.audio[0])


@pytest.mark.parametrize("damage", ["segment", "plan chunk", "plan chunk, manifest kept"])
def test_damaged_render_cache_is_repaired_by_rerunning(damage: str, clip: Path,
                                                       tile_index: Path, tmp_path: Path,
                                                       env) -> None:
    out = tmp_path / "o.mp4"
    args = ("render", clip, "--index", tile_index, "--out", out, *FAST)
    assert mosaic(*args, env=env).returncode == 0
    clean = frames_and_audio(out)
    reference = digest_file(out)
    out.unlink()
    cache = tmp_path / "cache"
    if damage == "segment":
        victim = sorted(cache.glob("render/*/seg-00001.mp4"))[0]
    else:
        victim = sorted(cache.glob("plans/*/chunk-00001.npz"))[0]
        if damage == "plan chunk":
            (victim.parent / "manifest.json").unlink()
            for record in cache.glob("render/*/seg-0000[12].json"):  # must be repainted
                record.unlink()
    os.truncate(victim, victim.stat().st_size // 2)
    run = mosaic(*args, env=env)
    assert run.returncode == 0, run.stderr
    assert frames_and_audio(out) == clean and digest_file(out) == reference
    assert mosaic("verify", "--renders", env=env).returncode == 0


def test_verify_renders_finds_a_flipped_byte_and_the_rerun_repairs_it(
        clip: Path, tile_index: Path, tmp_path: Path, env) -> None:
    out = tmp_path / "o.mp4"
    args = ("render", clip, "--index", tile_index, "--out", out, *FAST)
    assert mosaic(*args, env=env).returncode == 0
    reference = digest_file(out)
    seg = sorted((tmp_path / "cache").glob("render/*/seg-00002.mp4"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(data)
    run = mosaic("verify", "--renders", env=env)
    assert run.returncode == 1 and str(seg) in run.stderr
    run = mosaic(*args, env=env)
    assert run.returncode == 0 and digest_file(out) == reference


def test_full_disk_during_render_is_one_line_and_rerun_completes(
        clip: Path, tile_index: Path, tmp_path: Path, small_disk) -> None:
    disk = small_disk(600 << 10)  # a real filesystem too small for the job
    env = {**os.environ, "MOSAIC_CACHE": str(disk.path / "cache")}
    out = disk.path / "o.mp4"
    args = ("render", clip, "--index", tile_index, "--out", out, "--scale", "2",
            "--preset", "ultrafast", "--set", "render.segment_frames=10",
            "--set", "render.crf=0")
    run = mosaic(*args, env=env)
    assert run.returncode == 1
    line = run.stderr.strip().splitlines()[-1]
    assert str(disk.path) in line and ("no space left" in line.lower() or
                                       "free some space" in line), line
    assert no_temporaries(disk.path) and not out.exists()
    disk.grow(64 << 20)
    run = mosaic(*args, env=env)
    assert run.returncode == 0, run.stderr
    assert frames_and_audio(out)[:2] == (30, 1) and no_temporaries(disk.path)


@pytest.mark.parametrize("start", ["60", "1.2", "nan", "inf", "-1"])
def test_start_past_the_end_or_not_a_number_is_one_line(start: str, clip: Path,
                                                        tile_index: Path, tmp_path: Path,
                                                        env) -> None:
    run = mosaic("render", clip, "--index", tile_index, "--out", tmp_path / "o.mp4",
                 "--start", start, *FAST, env=env)
    assert run.returncode in (1, 2) and not (tmp_path / "o.mp4").exists()
    if start in ("60", "1.2"):
        assert "past the end" in run.stderr
