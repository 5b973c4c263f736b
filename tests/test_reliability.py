"""Issue 8, index and tool side: each defect reproduced as a user meets it, through the
real command (``python -m pipeline``), real ffmpeg and real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_same_index, make_clip, mosaic, no_temporaries

from pipeline.cache import mark_owned
from pipeline.config import IndexConfig
from pipeline.errors import TileIndexError
from pipeline.index import load_index, verify_index
from pipeline.stages.index import run_index

SMALL_ARGS = ("--clusters", "8", "--jobs", "1", "--set", "index.shard_size=40")
SMALL = IndexConfig(clusters=8, jobs=1, shard_size=40)


@pytest.fixture(scope="module")
def built_index(sample_corpus_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished index of the sample corpus (3 decode shards), to copy and damage."""
    out = tmp_path_factory.mktemp("built") / "ix"
    run_index(sample_corpus_master, out, SMALL, progress=False)
    return out


def _truncate(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 + 12345] ^= 0xFF  # between the cheap check's sampled blocks
    path.write_bytes(data)


def _edit_counts(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["counts"]["tiles"] += 5
    path.write_text(json.dumps(manifest))


def _first_shard(ix: Path) -> Path:
    return sorted(ix.glob("shards/*/shard-*.npz"))[0]


DAMAGES = {
    "truncated tiles.npy": ("tiles.npy", _truncate),
    "truncated features_hist.npy": ("features_hist.npy", lambda p: _truncate(p, 0.99)),
    "truncated features_lab.npy": ("features_lab.npy", _truncate),
    "truncated clusters.npz": ("clusters.npz", _truncate),
    "manifest counts disagree": ("manifest.json", _edit_counts),
    "truncated decode shard": (None, _truncate),
    "flipped byte in tiles.npy": ("tiles.npy", _flip_middle),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_index_is_repaired_by_rerunning(damage: str, built_index: Path,
                                                sample_corpus_master: Path,
                                                tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    shutil.copytree(built_index, ix)
    name, spoil = DAMAGES[damage]
    target = ix / name if name else _first_shard(ix)
    spoil(target)
    verify = [] if damage in ("truncated decode shard",) else ["--verify"]
    if name:
        with pytest.raises(TileIndexError, match="rerun `mosaic index --corpus"):
            load_index(ix)  # the render refuses it clearly, never a BadZipFile
    if damage == "flipped byte in tiles.npy":  # (files over 1 MiB: see test_cache.py)
        v = mosaic("verify", ix)
        assert v.returncode == 1 and f"damaged: {target}: content differs" in v.stderr
        assert "rerun `mosaic index --verify`" in v.stderr
    run = mosaic("index", "--corpus", sample_corpus_master, "--index", ix, *SMALL_ARGS,
                 *verify)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and str(target) in warnings[0], run.stderr
    assert ("decoded again" if not name else "rebuilding it") in warnings[0]
    assert verify_index(ix) == {}
    assert_same_index(ix, built_index)
    again = mosaic("index", "--corpus", sample_corpus_master, "--index", ix, *SMALL_ARGS)
    assert "is up to date" in again.stderr and "warning" not in again.stderr


def test_stale_shards_are_removed(corpus: Path, tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    assert mosaic("index", "--corpus", corpus, "--index", ix, *SMALL_ARGS).returncode == 0
    first = {p.name for p in ix.glob("shards/decode-*")}
    for path in sorted(corpus.iterdir())[:40]:  # the whole first shard's files
        path.unlink()
    run = mosaic("index", "--corpus", corpus, "--index", ix, *SMALL_ARGS, "--tile-size", "16x16")
    assert run.returncode == 0
    assert "removed decode checkpoints of other tile sizes" in run.stderr
    assert not first & {p.name for p in ix.glob("shards/decode-*")}
    run = mosaic("index", "--corpus", corpus, "--index", ix, *SMALL_ARGS)
    assert len(list(ix.glob("shards/*/shard-*.npz"))) == 2  # 80 files left: 2 shards of 40
    for path in sorted(corpus.iterdir())[:40]:
        path.unlink()
    run = mosaic("index", "--corpus", corpus, "--index", ix, "--clusters", "8", "--jobs", "1")
    assert "removed 1 stale decode shard(s)" in run.stderr
    assert len(list(ix.glob("shards/*/shard-*.npz"))) == 1


def test_all_duplicates_corpus_says_why(tmp_path: Path) -> None:
    corpus = tmp_path / "dups"
    corpus.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    cv2.imwrite(str(corpus / "a.png"), img)
    for i in range(9):
        shutil.copy(corpus / "a.png", corpus / f"copy{i}.png")
    run = mosaic("index", "--corpus", corpus, "--index", tmp_path / "ix", "--clusters", "8")
    assert run.returncode == 1
    assert "1 usable images are fewer than index.clusters=8 (9 byte-identical duplicates " \
           "of them are indexed once)" in run.stderr


def test_symlinked_and_unreadable_directories_are_skipped_and_listed(corpus: Path,
                                                                      tmp_path: Path) -> None:
    (corpus / "loop").symlink_to(corpus)  # a loop back to the top
    (corpus / "self").symlink_to(corpus / "self")  # a link to itself
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cv2.imwrite(str(elsewhere / "x.png"), np.zeros((20, 20, 3), np.uint8))
    (corpus / "linked").symlink_to(elsewhere)
    locked = corpus / "locked"
    locked.mkdir()
    cv2.imwrite(str(locked / "y.png"), np.zeros((20, 20, 3), np.uint8))
    locked.chmod(0)
    cmd = [sys.executable, "-m", "pipeline", "index", "--corpus", str(corpus), "--index",
           str(tmp_path / "ix"), *SMALL_ARGS]
    if os.geteuid() == 0:  # root reads anything: drop that power, as for an ordinary user
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv cannot meet an unreadable directory")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o755)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    report = (tmp_path / "ix" / "bad_files.tsv").read_text().splitlines()
    listed = dict(line.split("\t") for line in report[1:])
    assert listed[str(corpus / "loop")].startswith("directory skipped: symbolic link")
    assert listed[str(corpus / "linked")].startswith("directory skipped: symbolic link")
    assert "cannot list it (Permission denied)" in listed[str(locked)]
    assert str(corpus / "self") in listed  # a self-link is no directory: unreadable file
    assert load_index(tmp_path / "ix").manifest["counts"]["tiles"] == 120


def _fill_sizes(corpus: Path) -> tuple[int, int]:
    """Bytes of the decode checkpoint of ``corpus`` and of its assembled arrays."""
    n = len(list(corpus.iterdir()))
    arrays = n * (32 * 32 * 3 + 4 * (125 + 48))
    return arrays + n * 400, arrays


@pytest.mark.parametrize("step", ["decode", "assemble"])
def test_full_disk_is_one_line_and_rerun_completes(step: str, corpus: Path, tmp_path: Path,
                                                   small_disk) -> None:
    shards, arrays = _fill_sizes(corpus)
    size = shards // 3 if step == "decode" else shards + arrays // 2
    disk = small_disk(size, need_tmpfs=step == "assemble")  # free-space check: a real fs
    ix = disk.path / "ix"
    args = ("index", "--corpus", corpus, "--index", ix, "--clusters", "8", "--jobs", "2",
            "--set", "index.shard_size=40")
    run = mosaic(*args, preexec_fn=disk.limit)
    assert run.returncode == 1
    line = run.stderr.strip().splitlines()[-1]
    if step == "decode":
        assert "shard-" in line and ("no space left" in line or "too large" in line), line
    else:
        assert f"{ix}: assembling 120 tiles" in line and "free some space" in line, line
    assert "warn" not in run.stderr.lower()  # no joblib worker chatter
    assert no_temporaries(disk.path)
    assert not (ix / "manifest.json").exists()
    disk.grow(64 << 20)
    run = mosaic(*args, preexec_fn=disk.limit)
    assert run.returncode == 0, run.stderr
    assert verify_index(ix) == {} and no_temporaries(disk.path)


def test_two_index_runs_at_once(corpus: Path, tmp_path: Path) -> None:
    """Five trials of two runs of one job started together: each succeeds (the second
    waits for the first, then finds the index up to date) and the index verifies."""
    for extra in sorted(corpus.iterdir())[48:]:  # 48 images: a quicker job, same races
        extra.unlink()
    ix = tmp_path / "ix"
    cmd = [sys.executable, "-m", "pipeline", "index", "--corpus", str(corpus), "--index",
           str(ix), "--clusters", "4", "--jobs", "1", "--set", "index.shard_size=16"]
    small = IndexConfig(clusters=4, jobs=1, shard_size=16)
    run_index(corpus, tmp_path / "reference", small, progress=False)
    waited = 0
    for trial in range(5):
        shutil.rmtree(ix, ignore_errors=True)
        if trial % 2:  # odd trials: a half-built index with a checkpoint to share
            run_index(corpus, ix, small, progress=False)
            (ix / "manifest.json").unlink()
            (ix / "clusters.npz").unlink()
        procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        for code, err in results:
            assert code == 0 and "Traceback" not in err, err
        waited += sum("waiting for it to finish" in err for _, err in results)
        assert sum("is up to date" in err for _, err in results) <= 1
        assert verify_index(ix) == {} and no_temporaries(ix)
        assert_same_index(ix, tmp_path / "reference")
    assert waited >= 1  # the lock was really contended at least once


def _fake_ffmpeg(bin_dir: Path, version: str, listing_extra: str = "") -> Path:
    """A system ``ffmpeg`` on PATH that reports ``version`` and lists only libx264 and
    aac; it leaves a mark if anything ever asks it to process media."""
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "ffmpeg"
    mark = bin_dir / "was-used"
    exe.write_text(f"""#!/bin/sh
case "$*" in
  *-version*) echo "ffmpeg version {version} Copyright (c) 2000-2021 the FFmpeg developers";;
  *-encoders*) printf ' V..... = Video\\n ------\\n V....D libx264  H.264\\n A....D aac  AAC\\n';;
  *-filters*) printf ' ------\\n .. fps  V->V  x\\n{listing_extra}';;
  *" -i "*) touch {mark}; exit 1;;
esac
""")
    exe.chmod(0o755)
    return mark


@pytest.mark.parametrize(("version", "reason"), [
    ("4.4.2-0ubuntu0.22.04.1", "version 4.4 is older than 5.1"),
    ("7.1", "it lacks muxer mp4")])
def test_old_or_incomplete_system_ffmpeg_falls_back_to_bundled(version: str, reason: str,
                                                                tmp_path: Path) -> None:
    mark = _fake_ffmpeg(tmp_path / "bin", version)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MOSAIC_FFMPEG", None)
    clip = tmp_path / "clip.mp4"
    run = mosaic("sample-clip", "--out", clip, "--seconds", "0.5", env=env)
    assert run.returncode == 0, run.stderr
    info = [line for line in run.stderr.splitlines() if "system ffmpeg" in line]
    assert len(info) == 1, run.stderr
    assert info[0].startswith(f"not using the system ffmpeg {tmp_path / 'bin' / 'ffmpeg'}: "
                              f"{reason}")
    assert info[0].endswith("; using the bundled ffmpeg")
    assert not mark.exists()
    from pipeline.video import probe

    assert probe(clip).frames > 0


def test_still_picture_as_video_is_refused(tile_index: Path, tmp_path: Path) -> None:
    from pipeline.errors import VideoError
    from pipeline.video import probe

    for name in ("pic.png", "pic.jpg", "pic.webp", "pic.bmp", "pic.tif"):
        cv2.imwrite(str(tmp_path / name), np.full((64, 64, 3), 90, np.uint8))
        with pytest.raises(VideoError, match=f"{name}: is a still picture"):
            probe(tmp_path / name)
    run = mosaic("render", tmp_path / "pic.png", "--index", tile_index, "--out",
                 tmp_path / "o.mp4")
    assert run.returncode == 1 and "pic.png: is a still picture (png_pipe)" in run.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_start_nan_is_a_one_line_error(clip_with_audio: Path, tmp_path: Path) -> None:
    run = mosaic("render", clip_with_audio, "--start", "nan", "--index", tmp_path / "ix")
    assert run.returncode == 2
    assert "argument --start: expected a finite number, got 'nan'" in run.stderr


@pytest.mark.parametrize("args", [
    ("render", "CLIP", "--start", "inf"), ("render", "CLIP", "--start", "-inf"),
    ("render", "CLIP", "--duration", "-inf"), ("render", "CLIP", "--alpha", "nan"),
    ("render", "CLIP", "--frames", "nan"), ("render", "CLIP", "--scale", "inf"),
    ("render", "CLIP", "--set", "render.alpha=nan"),
    ("render", "CLIP", "--set", "render.encoder_options=-x264-params 'keyint=5"),
    ("index", "--corpus", "C", "--tile-size", "7x7"),
    ("index", "--corpus", "C", "--jobs", "inf"), ("index", "--corpus", "C", "--clusters", "nan"),
    ("index", "--corpus", "C", "--set", "index.prune_percentile=inf"),
])
def test_bad_numbers_and_options_are_one_line_errors(args: tuple[str, ...], tmp_path: Path,
                                                     clip_with_audio: Path, run_cli) -> None:
    """Through the real ``main`` in-process (as fast as it gets); see the test above and
    test_fuzz.py for the same through a subprocess and over many values."""
    argv = [str(clip_with_audio) if a == "CLIP" else str(tmp_path) if a == "C" else a
            for a in args]
    try:
        code, _, err = run_cli(*argv, "--index", tmp_path / "ix")
    except SystemExit as exc:
        code, err = exc.code, ""  # argparse: its one line is checked in test_fuzz.py
    assert code in (1, 2)
    assert not (tmp_path / "ix").exists()  # refused before any work
    if code == 1:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    if "encoder_options" in args[-1]:
        assert "render.encoder_options: no closing quotation" in err
    if "7x7" in args:
        assert "index.tile_size: each side must be even" in err


def test_clean_removes_stale_work_and_reports_space(tmp_path: Path, corpus: Path) -> None:
    cache = tmp_path / "cache"
    ix = cache / "index"
    run_index(corpus, ix, SMALL, progress=False)
    run_index(corpus, ix, IndexConfig(clusters=8, jobs=1, tile_size="16x16"), progress=False)
    run_index(corpus, ix, SMALL, progress=False)  # back: the 16x16 checkpoint is stale...
    # ... unless the run itself already removed it: make one as an older version would
    shutil.copytree(next(ix.glob("shards/decode-*")), ix / "shards" / "decode-old")
    (ix / ".tiles.npy.abc12345.tmp").write_bytes(b"x" * 1000)  # left by a killed run
    old_job, new_job, busy_job = (cache / "render" / k for k in ("old", "new", "busy"))
    for job in (old_job, new_job, busy_job):
        mark_owned(job, "job")  # as a render marks its job folder
        (job / "seg-00000.mp4").write_bytes(b"x" * 5000)
        (job / ".seg-00001.x1y2z3w4.mp4.tmp").write_bytes(b"x" * 10)
    week_ago = time.time() - 8 * 86400
    for job in (old_job, busy_job):
        for f in job.iterdir():
            os.utime(f, (week_ago, week_ago))
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time\nfrom pipeline.locks "
                               "import file_lock\nwith file_lock(sys.argv[1], 'job'):\n"
                               " print('locked', flush=True); time.sleep(60)",
                               str(busy_job / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        dry = mosaic("clean", "--cache", cache, "--older-than", "7d", "--dry-run")
        assert dry.returncode == 0 and dry.stdout.startswith("would free ")
        assert "1 stale decode checkpoint(s), 2 temporary file(s), 1 old render job(s)" \
               in dry.stdout
        assert old_job.exists() and (ix / "shards" / "decode-old").exists()
        run = mosaic("clean", "--cache", cache, "--older-than", "7d")
        assert run.stdout.startswith("freed ") and "1 old render job(s)" in run.stdout
        assert not old_job.exists() and not (ix / "shards" / "decode-old").exists()
        assert (new_job / "seg-00000.mp4").exists() and no_temporaries(new_job)
        assert (busy_job / ".seg-00001.x1y2z3w4.mp4.tmp").exists()  # in use: left alone
        assert f"left {busy_job} alone" in run.stderr
        assert no_temporaries(ix) and verify_index(ix) == {}
        assert mosaic("clean", "--cache", cache, "--older-than", "soon").returncode == 1
    finally:
        holder.kill()
        holder.wait()


def test_render_rejects_a_still_made_clip_too(tmp_path: Path) -> None:
    """A one-frame *video* (not a picture) is still accepted by probe."""
    from pipeline.video import probe

    clip = make_clip(tmp_path / "one.mp4", seconds=0.04, audio=False)
    assert probe(clip).frames == 1
