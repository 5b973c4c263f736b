"""The ``index`` stage: corpus directory -> tile index directory.

Steps: scan the corpus; decode new or changed files in parallel into checkpoint shards
(``shards/decode-<key>/shard-*.npz``, each written atomically, keyed per file on
(path, size, mtime)); assemble the unique tiles in path order into the tile bank and
feature arrays; cluster and prune; write the bad-file report; write the manifest last.
A rerun reuses every shard, and skips assembly and clustering when their inputs and
parameters are unchanged. See :mod:`pipeline.index` for the artifacts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import joblib
import numpy as np
import sklearn
from tqdm import tqdm

from pipeline import __version__
from pipeline import index as ix
from pipeline.cache import atomic_memmap, atomic_output, digest_text, write_json, write_npz
from pipeline.config import IndexConfig
from pipeline.corpus import DecodedBatch, FileEntry, decode_files_worker, scan_corpus
from pipeline.errors import CorpusError, TileIndexError

log = logging.getLogger(__name__)

DECODER_VERSION = "2"  # bump when decoding or features change: invalidates shards
CHUNK = 256  # files per worker task
_MAX_WARNINGS = 20

Key = tuple[str, int, int]


@dataclass
class IndexReport:
    """What one run of the stage did: counts, and seconds per step."""

    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    up_to_date: bool = False


@dataclass
class _Shards:
    """The decode checkpoint: shard files and where each file's record lives."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    where: dict[Key, tuple[int, int]] = field(default_factory=dict)
    digests: list[np.ndarray] = field(default_factory=list)
    ok: list[np.ndarray] = field(default_factory=list)
    reasons: list[np.ndarray] = field(default_factory=list)

    def add(self, path: Path, keys: list[Key], digests: np.ndarray, ok: np.ndarray,
            reasons: np.ndarray) -> None:
        s = len(self.files)
        self.files.append(path)
        self.digests.append(digests)
        self.ok.append(ok)
        self.reasons.append(reasons)
        for row, key in enumerate(keys):
            self.where[key] = (s, row)


def _decode_key(config: IndexConfig) -> str:
    h, w = config.tile_hw
    return digest_text(DECODER_VERSION, f"{h}x{w}", str(config.hist_bins), str(config.lab_grid))


def _load_shards(directory: Path) -> _Shards:
    shards = _Shards(directory)
    for path in sorted(directory.glob("shard-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(zip(z["paths"].tolist(), z["sizes"].tolist(), z["mtimes"].tolist(),
                                strict=True))
                shards.add(path, keys, z["digests"], z["ok"], z["reasons"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: unreadable checkpoint shard, it will be redone (%s)", path, exc)
            path.unlink(missing_ok=True)
    return shards


def _write_shard(shards: _Shards, entries: list[FileEntry], parts: list[DecodedBatch]) -> None:
    batch = DecodedBatch(*(np.concatenate([getattr(p, f.name) for p in parts])
                           for f in dataclasses.fields(DecodedBatch)))
    keys = [(e.path, e.size, e.mtime_ns) for e in entries]
    name = f"shard-{len(shards.files):06d}-{digest_text(*(e.path for e in entries))[:12]}.npz"
    write_npz(shards.directory / name, paths=np.array([e.path for e in entries], dtype=str),
              sizes=np.array([e.size for e in entries], dtype=np.int64),
              mtimes=np.array([e.mtime_ns for e in entries], dtype=np.int64),
              **dataclasses.asdict(batch))
    shards.add(shards.directory / name, keys, batch.digests, batch.ok, batch.reasons)


def _decode_new(todo: list[FileEntry], shards: _Shards, config: IndexConfig, jobs: int,
                progress: bool) -> None:
    """Decode ``todo`` with ``jobs`` processes into shards of exactly ``shard_size`` files.

    Each shard is split into worker tasks of at most :data:`CHUNK` files and written,
    atomically, as soon as all of its tasks are back: a kill loses at most the shard
    in progress.
    """
    size = config.shard_size
    groups = [todo[i:i + size] for i in range(0, len(todo), size)]
    chunks = [(g, group[i:i + CHUNK]) for g, group in enumerate(groups)
              for i in range(0, len(group), CHUNK)]
    args = (config.tile_hw, config.hist_bins, config.lab_grid)
    tasks = (joblib.delayed(decode_files_worker)([e.path for e in c], *args) for _, c in chunks)
    remaining = [len(group) for group in groups]
    parts: list[DecodedBatch] = []
    bar = tqdm(total=len(todo), desc="decode", unit="img", disable=None if progress else True,
               smoothing=0.05)
    with bar, joblib.Parallel(n_jobs=jobs, return_as="generator") as parallel:
        for (g, chunk), result in zip(chunks, parallel(tasks), strict=True):
            parts.append(result)
            bar.update(len(chunk))
            remaining[g] -= len(chunk)
            if remaining[g] == 0:
                _write_shard(shards, groups[g], parts)
                parts = []


@dataclass
class _Selection:
    """The unique tiles in path order, and the files left out."""

    paths: list[str]
    digests: list[str]
    shard_rows: dict[int, tuple[np.ndarray, np.ndarray]]  # shard -> (positions, rows)
    bad: list[tuple[str, str]]
    duplicates: int


def _select(entries: list[FileEntry], shards: _Shards) -> _Selection:
    seen: set[str] = set()
    paths, digests, bad = [], [], []
    by_shard: dict[int, tuple[list[int], list[int]]] = {}
    duplicates = 0
    for e in entries:
        s, row = shards.where[(e.path, e.size, e.mtime_ns)]
        if not shards.ok[s][row]:
            bad.append((e.path, str(shards.reasons[s][row])))
            continue
        digest = str(shards.digests[s][row])
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        positions, rows = by_shard.setdefault(s, ([], []))
        positions.append(len(paths))
        rows.append(row)
        paths.append(e.path)
        digests.append(digest)
    shard_rows = {s: (np.array(p), np.array(r)) for s, (p, r) in by_shard.items()}
    return _Selection(paths, digests, shard_rows, bad, duplicates)


def _assemble(index_dir: Path, sel: _Selection, shards: _Shards, config: IndexConfig) -> None:
    """Gather the selected tiles and features from the shards into the final arrays."""
    n = len(sel.paths)
    h, w = config.tile_hw
    d_hist, d_lab = config.hist_bins**3, config.lab_grid**2 * 3
    with contextlib.ExitStack() as stack:
        tiles = stack.enter_context(atomic_memmap(index_dir / ix.TILES, (n, h, w, 3), np.uint8))
        hist = stack.enter_context(atomic_memmap(index_dir / ix.HIST, (n, d_hist), np.float32))
        lab = stack.enter_context(atomic_memmap(index_dir / ix.LAB, (n, d_lab), np.float32))
        for s, (positions, rows) in sorted(sel.shard_rows.items()):
            with np.load(shards.files[s], allow_pickle=False) as z:
                tiles[positions] = z["tiles"][rows]
                hist[positions] = z["hist"][rows]
                lab[positions] = z["lab"][rows]


def _cluster(index_dir: Path, config: IndexConfig) -> dict[str, int]:
    """Fit, prune and write ``clusters.npz``; returns the cluster and tile counts."""
    features = np.load(index_dir / ix.HIST, allow_pickle=False)
    centers, labels = ix.fit_clusters(features, config.clusters, config.seed,
                                      config.kmeans_batch_size, config.kmeans_max_iter)
    keep = ix.prune_clusters(labels, config.clusters, config.prune_percentile)
    kept_labels, kept_centers, populations = ix.relabel(labels, keep, centers)
    write_npz(index_dir / ix.CLUSTERS, centers=kept_centers, labels=kept_labels,
              populations=populations, all_centers=centers, all_labels=labels)
    kept_tiles = int((kept_labels >= 0).sum())
    return {"clusters": config.clusters, "clusters_kept": int(keep.sum()),
            "clusters_pruned": int(config.clusters - keep.sum()), "tiles_kept": kept_tiles,
            "tiles_pruned": int(labels.shape[0] - kept_tiles)}


def _write_bad_report(index_dir: Path, bad: list[tuple[str, str]]) -> None:
    with atomic_output(index_dir / ix.BAD_FILES, "w") as f:
        f.write("path\treason\n")
        for path, reason in bad:
            f.write(f"{path}\t{reason}\n")


def _warn_bad(bad: list[tuple[str, str]], index_dir: Path) -> None:
    for path, reason in bad[:_MAX_WARNINGS]:
        log.warning("skipped %s: %s", path, reason)
    if len(bad) > _MAX_WARNINGS:
        log.warning("... and %d more skipped files", len(bad) - _MAX_WARNINGS)
    if bad:
        log.warning("%d unusable files listed in %s", len(bad), index_dir / ix.BAD_FILES)


def _write_last_run(index_dir: Path, report: IndexReport) -> None:
    write_json(index_dir / ix.LAST_RUN, dataclasses.asdict(report))


def _result_params(config: IndexConfig) -> dict:
    """The parameters that change the artifacts (not jobs or checkpoint size)."""
    params = dataclasses.asdict(config)
    params.pop("jobs")
    params.pop("shard_size")
    return params


def _versions() -> dict[str, str]:
    return {"videomosaic": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "opencv": cv2.__version__,
            "scikit-learn": sklearn.__version__, "joblib": joblib.__version__}


def _read_manifest(index_dir: Path) -> dict | None:
    try:
        return ix.load_manifest(index_dir)
    except TileIndexError:  # no or unreadable manifest: rebuild
        return None


def run_index(corpus: str | Path, index_dir: str | Path, config: IndexConfig,
              progress: bool = True) -> IndexReport:
    """Build or update the tile index of ``corpus`` in ``index_dir``.

    Raises :class:`CorpusError` for a missing or empty corpus, or fewer usable images
    than clusters. Per-file problems are warned about, counted and reported.
    """
    report = IndexReport()
    index_dir = Path(index_dir)
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.timings[step] = now - clock
        clock = now

    entries = scan_corpus(corpus)
    if not entries:
        raise CorpusError(f"{corpus}: no image files found (looked for "
                          "jpg, jpeg, png, webp, bmp, tif)")
    lap("scan")
    shards = _load_shards(index_dir / ix.SHARDS_DIR / f"decode-{_decode_key(config)}")
    shards.directory.mkdir(parents=True, exist_ok=True)
    todo = [e for e in entries if (e.path, e.size, e.mtime_ns) not in shards.where]
    log.info("%d image files, %d to decode, %d cached", len(entries), len(todo),
             len(entries) - len(todo))
    lap("load_checkpoint")
    if todo:
        jobs = config.jobs or os.cpu_count() or 1
        _decode_new(todo, shards, config, min(jobs, max(1, len(todo) // CHUNK + 1)), progress)
    lap("decode")
    sel = _select(entries, shards)
    _warn_bad(sel.bad, index_dir)
    report.counts = {"files": len(entries), "decoded": len(todo), "bad": len(sel.bad),
                     "duplicates": sel.duplicates, "tiles": len(sel.paths)}
    if len(sel.paths) < config.clusters:
        raise CorpusError(f"{corpus}: {len(sel.paths)} usable images are fewer than "
                          f"index.clusters={config.clusters}; add images or lower it")
    root = os.path.abspath(corpus)
    sources_digest = digest_text(_decode_key(config), *sel.paths, *sel.digests)
    params = _result_params(config)
    old = _read_manifest(index_dir)
    fresh_tiles = old is not None and old.get("sources_digest") == sources_digest and all(
        (index_dir / name).is_file() for name in (ix.TILES, ix.HIST, ix.LAB))
    if fresh_tiles and old.get("params") == params and (index_dir / ix.CLUSTERS).is_file():
        report.counts.update({k: v for k, v in old["counts"].items() if k.startswith(
            ("clusters", "tiles_"))})
        report.up_to_date = True
        lap("check")
        _write_last_run(index_dir, report)
        return report
    (index_dir / ix.MANIFEST).unlink(missing_ok=True)  # the old index is no longer valid
    if not fresh_tiles:
        _assemble(index_dir, sel, shards, config)
    lap("assemble")
    report.counts.update(_cluster(index_dir, config))
    lap("cluster")
    report.counts["near_duplicate_groups"] = ix.write_groups(index_dir)["groups"]
    lap("groups")
    _write_bad_report(index_dir, sel.bad)
    manifest = {
        "format": 1,
        "corpus": root,
        "params": params,
        "decode_key": _decode_key(config),
        "sources_digest": sources_digest,
        "index_digest": digest_text(sources_digest, repr(sorted(params.items()))),
        "versions": _versions(),
        "counts": report.counts,
        "artifacts": {name: (index_dir / name).stat().st_size for name in ix.ARTIFACTS[:-1]},
        "sources": {"paths": [os.path.relpath(p, root) for p in sel.paths],
                    "digests": sel.digests},
    }
    write_json(index_dir / ix.MANIFEST, manifest)
    lap("write")
    _write_last_run(index_dir, report)
    return report
