"""The index stage end to end: artifacts, reruns, duplicates, bad input, determinism."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_same_index

from pipeline.config import IndexConfig
from pipeline.index import load_index, prune_clusters, relabel
from pipeline.stages.index import run_index

SMALL = IndexConfig(clusters=8, jobs=1, shard_size=40)


def test_index_writes_all_artifacts(corpus: Path, tmp_path: Path) -> None:
    report = run_index(corpus, tmp_path / "ix", SMALL, progress=False)
    index = load_index(tmp_path / "ix")
    n = 120
    assert index.tiles.shape == (n, 32, 32, 3) and index.tiles.dtype == np.uint8
    assert isinstance(index.tiles, np.memmap)
    assert index.hist.shape == (n, 125) and index.lab.shape == (n, 48)
    assert index.centers.shape == (report.counts["clusters_kept"], 125)
    kept = index.labels >= 0
    assert kept.sum() == report.counts["tiles_kept"] == index.populations.sum()
    m = index.manifest
    assert m["counts"]["tiles"] == n and len(m["sources"]["paths"]) == n
    assert all(len(d) == 32 for d in m["sources"]["digests"])
    assert {"numpy", "opencv", "scikit-learn"} <= m["versions"].keys()
    assert m["params"]["clusters"] == 8
    assert not list((tmp_path / "ix").glob("*.pkl"))
    # the tile bank holds the images themselves: compare one with a direct decode
    first = cv2.imread(str(corpus / m["sources"]["paths"][0]))
    expected = cv2.resize(first, (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(index.tiles[0].astype(int), expected.astype(int), atol=40)


def test_unchanged_rerun_is_a_no_op_and_new_images_decode_alone(corpus: Path,
                                                                 tmp_path: Path) -> None:
    run_index(corpus, tmp_path / "ix", SMALL, progress=False)
    before = (tmp_path / "ix" / "manifest.json").stat().st_mtime_ns
    again = run_index(corpus, tmp_path / "ix", SMALL, progress=False)
    assert again.up_to_date and again.counts["decoded"] == 0
    assert (tmp_path / "ix" / "manifest.json").stat().st_mtime_ns == before
    for i in range(3):
        cv2.imwrite(str(corpus / f"new_{i}.png"), np.full((40, 40, 3), 60 * i, np.uint8))
    grown = run_index(corpus, tmp_path / "ix", SMALL, progress=False)
    assert grown.counts["decoded"] == 3 and grown.counts["tiles"] == 123
    # ... and the result equals a fresh build of the grown corpus
    run_index(corpus, tmp_path / "fresh", SMALL, progress=False)
    assert_same_index(tmp_path / "ix", tmp_path / "fresh")


def test_changed_cluster_params_recluster_without_decoding(corpus: Path, tmp_path: Path) -> None:
    run_index(corpus, tmp_path / "ix", SMALL, progress=False)
    other = IndexConfig(clusters=6, jobs=1, shard_size=40)
    report = run_index(corpus, tmp_path / "ix", other, progress=False)
    assert report.counts["decoded"] == 0 and not report.up_to_date
    assert load_index(tmp_path / "ix").manifest["params"]["clusters"] == 6


def test_determinism_same_inputs_same_artifacts(corpus: Path, tmp_path: Path) -> None:
    run_index(corpus, tmp_path / "a", SMALL, progress=False)
    run_index(corpus, tmp_path / "b", IndexConfig(clusters=8, jobs=2, shard_size=16),
              progress=False)
    assert_same_index(tmp_path / "a", tmp_path / "b")
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ma["index_digest"] == mb["index_digest"]


def test_duplicates_are_indexed_once(corpus: Path, tmp_path: Path) -> None:
    first = sorted(corpus.iterdir())[0]
    (corpus / "copies").mkdir()
    shutil.copy(first, corpus / "copies" / "dup1.jpg")
    shutil.copy(first, corpus / "zz_dup2.png")  # same bytes, other name and suffix
    report = run_index(corpus, tmp_path / "ix", SMALL, progress=False)
    assert report.counts["duplicates"] == 2 and report.counts["tiles"] == 120
    manifest = load_index(tmp_path / "ix").manifest
    assert len(set(manifest["sources"]["digests"])) == 120
    assert "zz_dup2.png" not in manifest["sources"]["paths"]


def test_bad_files_are_skipped_counted_and_listed(corpus: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (corpus / "empty.jpg").write_bytes(b"")
    (corpus / "garbage.png").write_bytes(os.urandom(500))
    (corpus / "notes.jpg").write_text("not an image")
    (corpus / "link.jpg").symlink_to(corpus / "gone.jpg")
    report = run_index(corpus, tmp_path / "ix", SMALL, progress=False)
    assert report.counts["bad"] == 4 and report.counts["tiles"] == 120
    lines = (tmp_path / "ix" / "bad_files.tsv").read_text().splitlines()
    assert lines[0] == "path\treason"
    listed = {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in lines[1:]}
    assert listed == {"empty.jpg": "empty file (0 bytes)", "garbage.png": "not a decodable image",
                      "notes.jpg": "not a decodable image",
                      "link.jpg": "cannot read: No such file or directory"}
    assert sum(r.getMessage().startswith("skipped") for r in caplog.records) == 4


def test_prune_at_percentile() -> None:
    # populations 1, 2, 3, 4, 10 and one empty cluster; 35th percentile of the non-empty
    # populations is 2.4 (linear interpolation), so clusters of 1 and 2 go.
    labels = np.repeat(np.arange(5), [1, 2, 3, 4, 10])
    keep = prune_clusters(labels, clusters=6, percentile=35)
    assert keep.tolist() == [False, False, True, True, True, False]
    assert prune_clusters(labels, 6, 0).tolist() == [True] * 5 + [False]
    # a population equal to the threshold is not under it: kept
    assert prune_clusters(np.repeat(np.arange(3), [5, 5, 5]), 3, 35).all()
    kept_labels, centers, pops = relabel(labels, keep, np.arange(6.0)[:, None])
    assert pops.tolist() == [3, 4, 10] and centers.ravel().tolist() == [2, 3, 4]
    assert (kept_labels == -1).sum() == 3 and kept_labels.max() == 2


def test_pruning_in_the_stage_matches_percentile(corpus: Path, tmp_path: Path) -> None:
    run_index(corpus, tmp_path / "ix", SMALL, progress=False)
    with np.load(tmp_path / "ix" / "clusters.npz") as z:
        all_labels, labels = z["all_labels"], z["labels"]
    pops = np.bincount(all_labels, minlength=8)
    threshold = np.percentile(pops[pops > 0], 35)
    pruned_tiles = np.isin(all_labels, np.flatnonzero(pops < threshold))
    assert ((labels == -1) == pruned_tiles).all()


@pytest.mark.parametrize("case", ["missing", "empty", "too_few", "not_images"])
def test_unusable_corpus_is_a_one_line_error(case: str, tmp_path: Path, run_cli) -> None:
    root = tmp_path / "corpus"
    if case != "missing":
        root.mkdir()
    if case == "too_few":
        for i in range(5):
            cv2.imwrite(str(root / f"{i}.png"), np.full((20, 20, 3), 40 * i, np.uint8))
    if case == "not_images":
        for i in range(3):
            (root / f"{i}.jpg").write_bytes(b"nope")
    code, _, err = run_cli("index", "--corpus", root, "--index", tmp_path / "ix",
                           "--clusters", "8", "--jobs", "1")
    assert code == 1
    lines = err.strip().splitlines()
    last = lines[-1]
    assert last.startswith("error: ") and "Traceback" not in err
    assert [line for line in lines if line.startswith("error")] == [last]
    expected = {"missing": "corpus directory does not exist", "empty": "no image files found",
                "too_few": "5 usable images are fewer than index.clusters=8",
                "not_images": "0 usable images are fewer than index.clusters=8"}[case]
    assert expected in last
    assert not (tmp_path / "ix" / "manifest.json").exists()


def _slow_corpus(root: Path, count: int) -> None:
    """Large noisy PNGs: slow enough to decode that a kill lands mid-decode."""
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        img = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
        img[:150] //= 1 + i % 7
        cv2.imwrite(str(root / f"img_{i:04d}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def test_sigkill_mid_decode_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _slow_corpus(corpus, 600)
    index = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline", "index", "--corpus", str(corpus), "--index",
           str(index), "--jobs", "1", "--clusters", "8", "--set", "index.shard_size=50",
           "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(index.glob("shards/*/shard-*.npz")):
        assert proc.poll() is None, "index finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (index / "manifest.json").exists()
    shards_before = len(list(index.glob("shards/*/shard-*.npz")))
    assert 1 <= shards_before < 12

    subprocess.run(cmd, check=True, timeout=300)
    last = json.loads((index / "last_run.json").read_text())
    assert last["counts"]["decoded"] == 600 - 50 * shards_before  # resumed, not restarted

    run_index(corpus, tmp_path / "clean", IndexConfig(clusters=8, jobs=1), progress=False)
    assert_same_index(index, tmp_path / "clean")


@pytest.mark.parametrize(("bad", "named"), [
    ("/etc/passwd", True), ("../x.jpg", True), ("a/../../b.jpg", True), (7, True),
    ("a/../b.jpg", False), ("dots..in/name.jpg", False), ("x\n/y.jpg", False)])
def test_source_paths_leaving_the_corpus_are_found_among_many(bad: object, named: bool
                                                              ) -> None:
    """The manifest's source list is checked at once when every path is plainly inside
    the corpus, and path by path otherwise: the same verdicts either way."""
    from pipeline.index import sources_problem

    paths = [f"d{i % 7}/img{i}.jpg" for i in range(5000)]
    manifest = {"corpus": "/data/corpus", "sources": {"paths": paths, "digests": paths}}
    assert sources_problem(manifest) is None
    paths[2500] = bad
    problem = sources_problem(manifest)
    assert (problem is not None) == named, problem
    if named:
        assert repr(bad) in problem and "leaves the corpus" in problem
