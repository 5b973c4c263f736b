"""Issue 16, finding 11 and "Must show" 2: the process tree after SIGTERM (and SIGHUP).

``mosaic render`` and ``mosaic index`` are started as a user starts them (``python -m
pipeline``, their own session), signalled mid-work with ``kill PID`` (the main process
only, as a service manager or a batch scheduler does), and watched: every process they
started (painters, decoders, ffmpeg encoders and decoders) must be gone within 5 s of
the exit, with exit code 128 + the signal, no temporary file left, and the same command
run again must finish with exactly the result of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import FAST, FORKSERVER, assert_same_index, make_clip, snapshot
from helpers import alive as _alive
from helpers import descendants as _descendants
from helpers import framemd5 as _framemd5

from pipeline.config import IndexConfig
from pipeline.stages.index import run_index


class Watched:
    """A command run in its own session, with every process it ever started recorded
    (the tree is polled every 20 ms until the command and all of them are gone)."""

    def __init__(self, args: list, env: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.seen: set[int] = set()
        self.commands: dict[int, bytes] = {}  # the command line of each, as first seen
        self.exited_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.seen |= _descendants(self.proc.pid)
            for pid in list(self.seen):
                self.seen |= _descendants(pid)  # children of orphans too
            for pid in self.seen - self.commands.keys():
                self.commands[pid] = _cmd(pid)
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for the command; its exit code and stderr."""
        _, err = self.proc.communicate(timeout=timeout)
        self.exited_at = time.monotonic()
        return self.proc.returncode, err

    def alive_after(self, seconds: float) -> list[int]:
        """The processes it started that still run ``seconds`` after its exit."""
        assert self.exited_at is not None
        while time.monotonic() < self.exited_at + seconds:
            if not [p for p in self.seen if _alive(p)]:
                break
            time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        return [p for p in self.seen if _alive(p)]


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the command ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _temporaries(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*")
            if p.name.startswith(".") and (".tmp" in p.name or p.suffix == ".raw")]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s, 160x128 at 25 fps with a tone: 100 frames, 10 segments."""
    return make_clip(tmp_path_factory.mktemp("signals") / "long.mp4", size="160x128",
                     seconds=4)


def test_sigterm_to_render_stops_its_whole_tree_and_the_rerun_is_identical(
        tmp_path: Path, long_clip: Path, tile_index: Path) -> None:
    """Finding 11 (render): SIGTERM to a render exited 143 at once, but its workers and
    their ffmpeg went on for about 155 s as orphans. Must show 2: no process it started
    is alive 5 s after SIGTERM, and a rerun finishes identically."""
    cache, out = tmp_path / "cache", tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    before = snapshot(long_clip.parent)
    env = {**os.environ, "MOSAIC_CACHE": str(cache)}
    args = ["render", long_clip, "--index", tile_index, "--out", out, *FAST, "--workers", "2",
            "-q"]
    job = Watched(args, env)
    _wait_for(lambda: list(cache.glob("render/*/seg-*.json")) and
              list(cache.glob("render/*/seg-*.progress")), job.proc,
              "a painted segment and one being painted")
    os.kill(job.proc.pid, signal.SIGTERM)
    code, err = job.finish()
    assert code == 143, err
    assert err.strip().splitlines()[-1] == ("interrupted (SIGTERM); rerun the same command to "
                                            "resume") and "Traceback" not in err, err
    # painters ran: forked from the forkserver (which has the same command line)
    assert sum(FORKSERVER in c for c in job.commands.values()) >= 2, job.commands
    assert any(b"ffmpeg" in c for c in job.commands.values())
    assert job.alive_after(5.0) == []
    assert _temporaries(cache, out.parent) == [] and not out.exists()
    done = len(list(cache.glob("render/*/seg-*.json")))
    assert 1 <= done < 10

    rerun = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    reference = tmp_path / "reference.mp4"
    ref = subprocess.run([sys.executable, "-m", "pipeline", "render", long_clip, "--index",
                          tile_index, "--out", reference, *FAST, "--workers", "2", "-q"],
                         env={**env, "MOSAIC_CACHE": str(tmp_path / "ref-cache")},
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    assert _framemd5(out) == _framemd5(reference) and len(_framemd5(out)) == 100
    assert snapshot(long_clip.parent) == before


def _cmd(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 PNG photos of 320x320 (smooth random colour fields): two decode workers
    (the index starts one per 256 files), seconds of decoding."""
    root = tmp_path_factory.mktemp("bigcorpus") / "corpus"
    root.mkdir()
    rng = np.random.default_rng(9)
    for i in range(300):
        small = rng.integers(0, 256, (4, 4, 3), np.uint8)
        cv2.imwrite(str(root / f"img{i:04d}.png"),
                    cv2.resize(small, (320, 320), interpolation=cv2.INTER_CUBIC))
    return root


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_to_index_stops_its_whole_tree_and_the_rerun_is_identical(
        sig: signal.Signals, tmp_path: Path, big_corpus: Path) -> None:
    """Finding 11 (index): SIGTERM to an index left its decode workers running as orphans.
    Must show 2: SIGTERM (and SIGHUP, handled the same) stops every process it started
    within 5 s, exit code 143 (129), no temporary file left, and the rerun resumes from
    the decoded shards to exactly the index of an uninterrupted run."""
    ix = tmp_path / "ix"
    before = snapshot(big_corpus)
    args = ["index", "--corpus", big_corpus, "--index", ix, "--clusters", "8", "--jobs", "2",
            "--set", "index.shard_size=16", "-q"]
    job = Watched(args, dict(os.environ))
    _wait_for(lambda: len(list(ix.glob("shards/*/shard-*.npz"))) >= 2, job.proc,
              "two decoded shards")
    os.kill(job.proc.pid, sig)
    code, err = job.finish()
    assert code == 128 + sig, err
    assert f"interrupted ({sig.name})" in err and "Traceback" not in err, err
    assert any(b"LokyProcess" in c for c in job.commands.values())  # decoders ran
    assert job.alive_after(5.0) == []
    assert _temporaries(ix) == [] and not (ix / "manifest.json").exists()
    shards = len(list(ix.glob("shards/*/shard-*.npz")))
    assert 2 <= shards < 15
    if sig != signal.SIGTERM:
        return  # the rerun after SIGTERM shows the resume; SIGHUP stops the same way

    rerun = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    reference = tmp_path / "reference"  # uninterrupted, in-process: the same options
    run_index(big_corpus, reference, IndexConfig(clusters=8, jobs=2, shard_size=16),
              progress=False)
    assert_same_index(ix, reference)
    assert snapshot(big_corpus) == before
