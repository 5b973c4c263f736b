"""Fuzzing (hypothesis, bounded): hostile config values and the values of every flag of
every subcommand give one-line errors, never a traceback; corrupted image bytes in a
corpus never crash or hang the index, and every file that did not become a tile is
listed in bad_files.tsv."""

from __future__ import annotations

import contextlib
import signal
import tempfile
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.config import IndexConfig, RenderConfig, load_config
from pipeline.errors import ConfigError, CorpusError
from pipeline.stages.index import run_index

KEYS = [f"index.{f.name}" for f in fields(IndexConfig)] + [
    f"render.{f.name}" for f in fields(RenderConfig)]
NUMBER_FLAGS = [("render", "V", "--start"), ("render", "V", "--duration"),
                ("render", "V", "--frames"), ("render", "V", "--scale"),
                ("render", "V", "--alpha"), ("index", "--corpus", "--jobs"),
                ("index", "--corpus", "--clusters"), ("score", "A B", "--scale"),
                ("score", "A B", "--frames"), ("inspect", "I --out", "--zoom"),
                ("zoom", "I", "--duration"), ("zoom", "I", "--fps"), ("zoom", "I", "--hold"),
                ("zoom", "I", "--size"), ("zoom", "I", "--cells"), ("zoom", "I", "--chain"),
                ("live", "S", "--fps"), ("live", "S", "--cells"), ("live", "S", "--port"),
                ("live", "S", "--quality"), ("live", "S", "--stall"),
                ("live", "S", "--max-clients")]
# (sample and sample-clip take the same number types; a fuzzed good value there would
# really generate millions of images or hours of video)
VALUES = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "+inf", "NaN", "1e309", "-0", "0", "-1", "1e-320",
                     "'", '"', "'a", '"a b', "x'y", "0x10", "1_000", "", " ", "true", "[1]",
                     "{a=1}", "7x7", "33x32", "3x3", "512x512", "9" * 40]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-2**70, 2**70).map(str),
    st.text(max_size=12))

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error"), err
    assert "Traceback" not in err


@FUZZ
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_config_values_load_or_fail_in_one_line(key: str, value: str) -> None:
    try:
        load_config(None, [f"{key}={value}"])
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)


@FUZZ
@given(flag=st.sampled_from(NUMBER_FLAGS), value=VALUES)
def test_cli_numbers_never_give_a_traceback(flag: tuple[str, str, str], value: str,
                                            capsys: pytest.CaptureFixture,
                                            tmp_path: Path) -> None:
    """Each number flag of each command, through the real ``main``: a bad value is a
    one-line usage error (exit 2); a good one gets as far as the missing input (exit 1)."""
    command, positional, name = flag
    missing = str(tmp_path / "missing")
    argv = [command, *(p if p.startswith("--") else missing for p in positional.split())]
    if argv[-1].startswith("--"):
        argv.append(missing)
    if command == "index":
        argv += ["--index", str(tmp_path / "ix")]
    try:
        code = main([*argv, f"{name}={value}", "-q"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code in (1, 2), err
    _one_line(err)


@FUZZ
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_set_overrides_through_the_cli_fail_in_one_line(key: str, value: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    code = main(["index", "--corpus", str(tmp_path / "missing"), "--index",
                 str(tmp_path / "ix"), "--set", f"{key}={value}", "-q"])
    assert code == 1
    _one_line(capsys.readouterr().err)


# Every flag that takes a value, of every subcommand: (command line before the flag, the
# flag or "POS" for a positional, "path" or "value" strategy). The rest of the line makes
# each command fail fast once the value is accepted (a missing input, or a write under a
# regular file), so a good value never starts real work: sample writes one image,
# sample-clip a 0.04-s clip at most.
M, F = "missing", "file/under"  # a missing path; a path under a regular file
ALL_FLAGS = [
    *[(["index", "--corpus", M], f, "value") for f in ("--jobs", "--clusters", "--tile-size",
                                                       "--set", "--scheduler")],
    (["index", "--corpus", M], "--config", "path"), (["index", "--corpus", M], "--index", "path"),
    (["index", "--index", "file"], "--corpus", "path"),
    (["inspect", "--out", "o.png"], "POS", "path"),
    *[(["inspect", M, "--out", "o.png"], f, "value") for f in ("--samples", "--max-rows",
                                                               "--zoom")],
    (["inspect", M], "--out", "path"),
    (["sample", "--count", "1"], "--out", "path"), (["sample", "--out", F], "--count", "value"),
    *[(["render", M], f, "value") for f in ("--start", "--duration", "--frames", "--scale",
                                            "--alpha", "--preset", "--workers", "--set",
                                            "--scheduler")],
    *[(["render", M], f, "path") for f in ("--index", "--out", "--config")],
    (["render"], "POS", "path"),
    *[(["photo", M], f, "value") for f in ("--cells", "--cell-size", "--tile-px", "--radius",
                                           "--max-uses", "--alpha", "--recolour", "--tone",
                                           "--quality")],
    *[(["photo", M], f, "path") for f in ("--index", "--out")], (["photo"], "POS", "path"),
    *[(["faces", M, "--out", "o"], f, "value") for f in ("--size", "--min-size", "--margin",
                                                        "--jobs")],
    (["faces", M], "--out", "path"), (["faces", "--out", "file"], "POS", "path"),
    *[(["score", M, M], f, "value") for f in ("--scale", "--tile", "--frames")],
    (["score", M, M], "--out", "path"), (["score", M, M], "--index", "path"),
    (["score", M], "POS", "path"),
    (["sample-clip", "--seconds", "0.04"], "--out", "path"),
    (["sample-clip", "--out", F], "--seconds", "value"),
    (["verify"], "POS", "path"),
    (["clean"], "--cache", "path"), (["clean"], "--index", "path"),
    (["clean"], "--older-than", "value"),
    *[(["zoom", M], f, "value") for f in ("--chain", "--size", "--duration", "--fps", "--hold",
                                          "--fit", "--cells", "--radius", "--max-uses",
                                          "--recolour", "--tone", "--crf", "--preset")],
    *[(["zoom", M], f, "path") for f in ("--index", "--out", "--target", "--audio")],
    (["zoom"], "POS", "path"),
    *[(["live", M], f, "value") for f in ("--fps", "--cells", "--port", "--host",
                                          "--max-clients", "--quality", "--stall", "--set")],
    *[(["live", M], f, "path") for f in ("--index", "--grow", "--record", "--config")],
    (["live"], "POS", "path"),
]
PATHS = st.one_of(
    st.sampled_from(["", " ", ".", "..", "-", "--", "~", "a b", "ü", "x.mp4", "x.json",
                     "x.png", "x.jpg", "x.txt", "x.html", "dir/", "file", "file/x",
                     "missing/x.mp4", "-x", "*", "$HOME", "a\\b", "\t", "file:///nowhere",
                     "file://host/x", "http://", "..."]),
    st.text(st.characters(blacklist_characters="\x00/", blacklist_categories=("Cs",)),
            max_size=12))


@settings(max_examples=600, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(ALL_FLAGS), number=VALUES, path=PATHS)
def test_every_flag_of_every_command_never_gives_a_traceback(
        flag: tuple[list[str], str, str], number: str, path: str, tmp_path: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each value-taking flag (and positional) of every subcommand, through the real
    ``main``, in a scratch folder: exit 0, or a one-line error (2 for usage, 1 else)."""
    monkeypatch.chdir(tmp_path)
    Path("file").write_bytes(b"a regular file")
    before, name, kind = flag
    value = path if kind == "path" else number
    argv = [*before, "-q", "--", value] if name == "POS" else [*before, f"{name}={value}",
                                                                 "-q"]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (argv, err)
    if code:
        _one_line(err)
    else:
        assert "Traceback" not in err


def _good_images() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    out = {}
    for i, ext in enumerate([".png", ".jpg", ".png", ".jpg", ".webp", ".bmp"]):
        img = rng.integers(0, 256, (24 + i, 30, 3), np.uint8)
        out[f"good{i}{ext}"] = cv2.imencode(ext, img)[1].tobytes()
    return out


GOOD = _good_images()
MUTATION = st.tuples(st.sampled_from(sorted(GOOD)), st.sampled_from(["truncate", "flip",
                                                                       "splice", "replace"]),
                     st.integers(0, 10**6), st.binary(min_size=1, max_size=64))


def _mutate(data: bytes, how: str, at: int, junk: bytes) -> bytes:
    i = at % max(1, len(data))
    if how == "truncate":
        return data[:i]
    if how == "flip":
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    if how == "splice":
        return data[:i] + junk + data[i:]
    return junk


@contextlib.contextmanager
def _time_limit(seconds: int):
    def hang(*_):
        raise TimeoutError(f"no result in {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_corrupted_images_are_listed_never_fatal(mutations: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for name, data in GOOD.items():
            (corpus / name).write_bytes(data)
        fuzzed = []
        for n, (base, how, at, junk) in enumerate(mutations):
            path = corpus / f"fuzz{n}{Path(base).suffix}"
            path.write_bytes(_mutate(GOOD[base], how, at, junk))
            fuzzed.append(str(path))
        ix = Path(tmp) / "ix"
        with _time_limit(60):
            try:
                report = run_index(corpus, ix, IndexConfig(clusters=2, jobs=1),
                                   progress=False)
            except CorpusError:
                pytest.fail("six distinct good images must be enough for 2 clusters")
        listed = {line.split("\t")[0] for line in
                  (ix / "bad_files.tsv").read_text().splitlines()[1:]}
        import json

        manifest = json.loads((ix / "manifest.json").read_text())
        tiles = {str(corpus / p) for p in manifest["sources"]["paths"]}
        for path in fuzzed:  # a tile, a listed bad file, or a duplicate of a tile
            assert path in tiles or path in listed or report.counts["duplicates"] > 0, path
        assert report.counts["bad"] == len(listed)
