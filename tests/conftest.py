"""Shared fixtures: small generated corpora and a helper to run the CLI in-process."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import make_clip

from pipeline.cli import main
from pipeline.sample import make_sample_corpus


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as at a terminal, whatever started the tests: a shell's background job
    (``cmd &`` where job control is off, as in a script) starts with SIGINT ignored, and
    the processes the tests start would inherit that and never see the Ctrl-C the
    signal tests send them."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _fail_on_logged_error(caplog: pytest.LogCaptureFixture):
    """Any test that logs an ERROR fails: errors must surface as exceptions or exit codes."""
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, f"logged errors: {[r.getMessage() for r in errors]}"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point the CLI's cache at a temporary directory: tests never write into the repo."""
    monkeypatch.setenv("MOSAIC_CACHE", str(tmp_path_factory.mktemp("mosaic-cache")))


@pytest.fixture(scope="session")
def sample_corpus_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 generated sample images, made once per session (read-only: copy to modify)."""
    out = tmp_path_factory.mktemp("sample") / "corpus"
    make_sample_corpus(out, count=120, seed=7)
    return out


@pytest.fixture
def corpus(sample_corpus_master: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the sample corpus."""
    dest = tmp_path / "corpus"
    shutil.copytree(sample_corpus_master, dest)
    return dest


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture):
    """Run ``mosaic ARGS...`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def tile_index(sample_corpus_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small tile index (120 sample images, 8 clusters), built once per session."""
    from pipeline.config import IndexConfig
    from pipeline.stages.index import run_index

    out = tmp_path_factory.mktemp("index") / "ix"
    run_index(sample_corpus_master, out, IndexConfig(clusters=8, jobs=1), progress=False)
    return out


@pytest.fixture(scope="session")
def clip_with_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 160x120 testsrc2 at 25 fps with a tone."""
    return make_clip(tmp_path_factory.mktemp("clips") / "av.mp4")


class SmallDisk:
    """A small filesystem that really fills up: a tmpfs where this user may mount one
    (root), else a directory whose writers get an ``RLIMIT_FSIZE`` file-size limit
    (subprocesses started with :meth:`limit` as ``preexec_fn``; in-process writes then
    see no limit, so in-process tests need the tmpfs)."""

    def __init__(self, path: Path, size: int, tmpfs: bool) -> None:
        self.path, self.size, self.tmpfs = path, size, tmpfs

    def grow(self, size: int) -> None:
        """Free space, as a user would: the filesystem becomes ``size`` bytes."""
        self.size = size
        if self.tmpfs:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def limit(self) -> None:
        """preexec_fn of a writer subprocess (a no-op on a tmpfs)."""
        if not self.tmpfs:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, self.size))


def _mount_tmpfs(path: Path, size: int) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return proc.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path):
    """``small_disk(size)`` -> :class:`SmallDisk` of ``size`` bytes; unmounted afterwards."""
    made: list[SmallDisk] = []

    def make(size: int, need_tmpfs: bool = True) -> SmallDisk:
        path = tmp_path / f"disk{len(made)}"
        path.mkdir()
        disk = SmallDisk(path, size, _mount_tmpfs(path, size))
        made.append(disk)
        if need_tmpfs and not disk.tmpfs:
            pytest.skip("cannot mount a tmpfs here (not root?)")
        return disk

    yield make
    for disk in made:
        if disk.tmpfs:
            subprocess.run(["umount", "-l", str(disk.path)], check=False)
