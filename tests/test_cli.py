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
