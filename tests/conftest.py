"""Shared fixtures: small generated corpora and a helper to run the CLI in-process."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.sample import make_sample_corpus


@pytest.fixture(autouse=True)
def _fail_on_logged_error(caplog: pytest.LogCaptureFixture):
    """Any test that logs an ERROR fails: errors must surface as exceptions or exit codes."""
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, f"logged errors: {[r.getMessage() for r in errors]}"


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
