"""The ``mosaic`` command: help texts, inspect, and the sample generators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from pipeline.cli import build_parser


@pytest.mark.parametrize("command", [[], ["index"], ["inspect"], ["sample"], ["render"],
                                     ["sample-clip"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: mosaic" in capsys.readouterr().out


def test_python_dash_m_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "pipeline", "--version"], check=True,
                         capture_output=True, text=True).stdout
    assert out.startswith("mosaic ")


def test_index_then_inspect_contact_sheet(run_cli, corpus: Path, tmp_path: Path) -> None:
    index = tmp_path / "ix"
    code, _, err = run_cli("index", "--corpus", corpus, "--index", index, "--clusters", "8",
                           "--jobs", "1")
    assert code == 0, err
    assert "120 tiles -> 8 clusters: kept" in err
    code, _, err = run_cli("inspect", index, "--out", tmp_path / "sheet.png")
    assert code == 0, err
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    kept = int(err.split("contact sheet of ")[1].split()[0])
    assert "near-duplicate groups: 120 tiles in" in err
    assert sheet.shape == (kept * 32, 150 + 16 * 32, 3)
    code, _, err = run_cli("index", "--corpus", corpus, "--index", index, "--clusters", "8")
    assert code == 0 and "is up to date" in err


def test_inspect_without_index_is_an_error(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("inspect", tmp_path, "--out", tmp_path / "x.png")
    assert code == 1 and err.startswith("error: ") and "missing manifest.json" in err
    assert not (tmp_path / "x.png").exists()


def test_sample_corpus_is_generated(run_cli, tmp_path: Path) -> None:
    code, _, _ = run_cli("sample", "--out", tmp_path / "s", "--count", "30")
    assert code == 0
    files = sorted((tmp_path / "s").iterdir())
    assert len(files) == 30 and {f.suffix for f in files} == {".jpg", ".png"}


def test_sample_clip_and_render_help(run_cli, tmp_path: Path) -> None:
    code, _, _ = run_cli("sample-clip", "--out", tmp_path / "c.mp4", "--seconds", "1")
    assert code == 0 and (tmp_path / "c.mp4").stat().st_size > 0
    code, _, err = run_cli("render", tmp_path / "c.mp4", "--index", tmp_path / "none")
    assert code == 1 and err.startswith("error: ")


@pytest.mark.parametrize(("argv", "local"), [
    (["render", "clip.mp4"], True),
    (["render", "clip.mp4", "--workers", "2", "-q"], True),
    (["render", "--out", "x.mp4", "--", "--help"], True),  # after "--": a file name
    (["render", "clip.mp4", "--help"], False),
    (["render", "-h"], False),
    (["render", "--hel"], False),
    (["render", "clip.mp4", "--scheduler", "tcp://h:8786"], False),
    (["render", "clip.mp4", "--scheduler=tcp://h:8786"], False),
    (["render", "clip.mp4", "--sched", "tcp://h:8786"], False),
    (["index", "--corpus", "c"], False),
    ([], False),
    (["--version"], False),
])
def test_the_server_starts_first_only_for_a_local_render(argv: list[str], local: bool,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from pipeline.launch import local_render
    from pipeline.server import SCHEDULER_ENV

    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    assert local_render(argv) is local
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://h:8786")
    assert local_render(argv) is False


def _marked(mark: str) -> list[int]:
    """The processes whose environment holds ``mark``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_render_that_fails_early_leaves_no_server(tmp_path: Path) -> None:
    # the server starts before the arguments are checked; a bad input still ends in one
    # line and exit 1, and the server (still loading when the command ends) goes too
    import os
    import time
    import uuid

    mark = f"MOSAIC_TEST_MARK={uuid.uuid4().hex}"
    env = dict(os.environ, MOSAIC_TEST_MARK=mark.split("=")[1], MOSAIC_CACHE=str(tmp_path))
    env.pop("MOSAIC_SCHEDULER", None)
    done = subprocess.run([sys.executable, "-m", "pipeline", "render",
                           str(tmp_path / "missing.mp4"), "--index", str(tmp_path / "none")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error:"), done.stderr
    deadline = time.monotonic() + 20
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _marked(mark)
