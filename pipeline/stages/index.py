"""The ``index`` stage: corpus directory -> tile index directory.

Steps: check that the index directory is new, empty or an index already (never a folder
of other files: the index would write over them), take its lock and mark it as the
tool's; scan the corpus; decode new or changed files in
parallel into checkpoint shards (:mod:`pipeline.shards`); assemble the unique tiles in
path order into the tile bank and feature arrays; cluster and prune; write the bad-file
report; write the manifest last, with every artifact's size and digests.

A rerun reuses every shard, and skips assembly and clustering when their inputs and
parameters are unchanged and the artifacts pass their check (size, sampled digest, row
counts; whole digests as soon as one fails); an index from before the tiles' luma spread
was recorded gets it then (the groups step alone). A damaged artifact is rebuilt, with one
warning naming it. A second run on the same index directory waits for the first. A full
disk stops the run with one line naming the file; no temporary file is left behind.
See :mod:`pipeline.index` for the artifacts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import joblib
import numpy as np
import sklearn

from pipeline import __version__
from pipeline import index as ix
from pipeline import shards as sh
from pipeline.cache import (
    MARKER,
    atomic_memmap,
    atomic_output,
    digest_text,
    ensure_free,
    mark_owned,
    owned_kind,
    record_artifact,
    temp_final_name,
    write_json,
    write_npz,
)
from pipeline.config import IndexConfig
from pipeline.corpus import FileEntry, scan_corpus_report
from pipeline.errors import CorpusError, OutputError, TileIndexError
from pipeline.groups import VERSION as GROUPS_VERSION
from pipeline.locks import HOLD, file_lock

log = logging.getLogger(__name__)

DECODER_VERSION = "2"  # bump when decoding or features change: invalidates shards
CHUNK = sh.CHUNK
_MAX_WARNINGS = 20


@dataclass
class IndexReport:
    """What one run of the stage did: counts, and seconds per step."""

    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    up_to_date: bool = False
    repaired: list[str] = field(default_factory=list)


def _decode_key(config: IndexConfig) -> str:
    h, w = config.tile_hw
    return digest_text(DECODER_VERSION, f"{h}x{w}", str(config.hist_bins), str(config.lab_grid))


@dataclass
class _Selection:
    """The unique tiles in path order, and the files left out."""

    paths: list[str]
    digests: list[str]
    shard_rows: dict[int, tuple[np.ndarray, np.ndarray]]  # shard -> (positions, rows)
    bad: list[tuple[str, str]]
    duplicates: int


def _select(entries: list[FileEntry], shards: sh.Shards) -> _Selection:
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


def _assemble(index_dir: Path, sel: _Selection, shards: sh.Shards, config: IndexConfig) -> None:
    """Gather the selected tiles and features from the shards into the final arrays.

    Checks the free space first; raises :class:`~pipeline.shards.DamagedShard` when a
    shard cannot be read in full.
    """
    n = len(sel.paths)
    h, w = config.tile_hw
    d_hist, d_lab = config.hist_bins**3, config.lab_grid**2 * 3
    ensure_free(index_dir, n * (h * w * 3 + 4 * (d_hist + d_lab)),
                f"assembling {n} tiles into {ix.TILES} and the feature arrays")
    with contextlib.ExitStack() as stack:
        tiles = stack.enter_context(atomic_memmap(index_dir / ix.TILES, (n, h, w, 3), np.uint8))
        hist = stack.enter_context(atomic_memmap(index_dir / ix.HIST, (n, d_hist), np.float32))
        lab = stack.enter_context(atomic_memmap(index_dir / ix.LAB, (n, d_lab), np.float32))
        for s, (positions, rows) in sorted(sel.shard_rows.items()):
            try:
                with np.load(shards.files[s], allow_pickle=False) as z:
                    tiles[positions] = z["tiles"][rows]
                    hist[positions] = z["hist"][rows]
                    lab[positions] = z["lab"][rows]
            except sh.READ_ERRORS as exc:
                raise sh.DamagedShard(shards.files[s], str(exc)) from None


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
    params["groups_version"] = GROUPS_VERSION  # a new grouping rule regroups old indexes
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
              progress: bool = True, lock_timeout: float | None = None,
              full_check: bool = False, scheduler: str | None = None) -> IndexReport:
    """Build, update or repair the tile index of ``corpus`` in ``index_dir``.

    Holds ``index_dir/.lock`` throughout: a concurrent run on the same directory waits
    (``lock_timeout`` seconds at most, None: as long as it takes; then
    :class:`~pipeline.errors.LockedError`). Raises :class:`CorpusError` for a missing or
    empty corpus, or fewer usable images than clusters, and
    :class:`~pipeline.errors.DiskFullError` naming the file when the disk fills up.
    ``full_check`` compares whole digests of a finished index's artifacts, not only sizes
    and samples (``mosaic index --verify``). With ``scheduler`` (a Dask address) the decode
    shards run as Dask tasks; their files must then be readable by every worker at the same
    paths. Per-file problems are warned about, counted and reported.
    """
    index_dir = Path(index_dir)
    if not Path(corpus).is_dir():
        scan_corpus_report(corpus)  # raises the one-line CorpusError
    check_index_dir(index_dir)
    with file_lock(index_dir / ix.LOCK, f"index {index_dir}", lock_timeout):
        mark_owned(index_dir, "index")
        _remove_orphans(index_dir)
        for attempt in range(3):
            try:
                return _run_locked(corpus, index_dir, config, progress, full_check, scheduler)
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: no temporary file stays
                _remove_orphans(index_dir)
                raise
            except sh.DamagedShard as exc:
                log.warning("%s: damaged decode checkpoint (%s); its images will be decoded "
                            "again", exc.path, exc.reason)
                shard_dir = exc.path.parent
                sh.drop(sh.Shards(shard_dir, records=sh._read_records(shard_dir)), exc.path)
                if attempt == 2:
                    raise TileIndexError(f"{exc.path}: decode checkpoint keeps failing to "
                                         "read back; is the disk failing?") from None
    raise AssertionError("unreachable")


_INDEX_NAMES = frozenset({*ix.ARTIFACTS, ix.LAST_RUN, ix.SHARDS_DIR, ix.LOCK, HOLD, MARKER})


def check_index_dir(index_dir: Path) -> None:
    """Refuse an index directory that would write over files that are not an index's: an
    existing folder holding other files, a file, another of the tool's folders (the
    cache, a render job...), or a place inside one."""
    from pipeline.output import managed_place

    if (place := managed_place(index_dir)) is not None:
        raise OutputError(f"{index_dir}: is inside {place}; choose another --index")
    if index_dir.exists() and not index_dir.is_dir():
        raise OutputError(f"{index_dir}: is a file, not an index directory")
    kind = owned_kind(index_dir) if index_dir.is_dir() else "index"
    if kind not in (None, "index"):
        raise OutputError(f"{index_dir}: is a {kind} folder of this tool, not an index; "
                          "choose another --index")
    others = [p.name for p in index_dir.iterdir()
              if (temp_final_name(p.name) or p.name) not in _INDEX_NAMES] \
        if kind is None else []  # (temporaries: of a run writing this index right now)
    if others:
        raise OutputError(f"{index_dir}: exists and holds files that are not a tile index's "
                          f"(such as {sorted(others)[0]!r}); choose a new or empty folder for "
                          "--index")


def _remove_orphans(index_dir: Path) -> None:
    """Delete the temporary files of index artifacts and shards left by killed runs
    (safe: we hold the lock)."""
    for folder in (index_dir, *index_dir.glob(f"{ix.SHARDS_DIR}/decode-*")):
        for tmp in folder.glob(".*.tmp"):
            final = temp_final_name(tmp.name) or ""
            if final in (*ix.ARTIFACTS, ix.LAST_RUN) or sh.SHARD_FILES.fullmatch(final):
                tmp.unlink(missing_ok=True)


def _decode_step(corpus: str | Path, index_dir: Path, config: IndexConfig, progress: bool,
                 scheduler: str | None = None
                 ) -> tuple[list[FileEntry], list[tuple[str, str]], sh.Shards, int]:
    """Scan, load the checkpoint, decode what is new; (entries, skipped dirs, shards,
    number decoded)."""
    entries, skipped_dirs = scan_corpus_report(corpus)
    if not entries:
        raise CorpusError(f"{corpus}: no image files found (looked for "
                          "jpg, jpeg, png, webp, bmp, tif)")
    key = _decode_key(config)
    sh.remove_stale_dirs(index_dir / ix.SHARDS_DIR, f"decode-{key}")
    shards = sh.load_shards(index_dir / ix.SHARDS_DIR / f"decode-{key}",
                            {(e.path, e.size, e.mtime_ns) for e in entries})
    todo = [e for e in entries if (e.path, e.size, e.mtime_ns) not in shards.where]
    log.info("%d image files, %d to decode, %d cached", len(entries), len(todo),
             len(entries) - len(todo))
    if todo:
        jobs = config.jobs or os.cpu_count() or 1
        with warnings.catch_warnings():  # joblib's worker-shutdown chatter on errors
            warnings.simplefilter("ignore")
            sh.decode_new(todo, shards, config, min(jobs, max(1, len(todo) // CHUNK + 1)),
                          progress, scheduler)
    return entries, skipped_dirs, shards, len(todo)


def _too_few(corpus: str | Path, sel: _Selection, clusters: int) -> CorpusError:
    """The error for fewer usable images than clusters, saying where the others went."""
    why = []
    if sel.duplicates:
        why.append(f"{sel.duplicates} byte-identical duplicates of them are indexed once")
    if sel.bad:
        why.append(f"{len(sel.bad)} unusable files are listed in bad_files.tsv")
    because = f" ({'; '.join(why)})" if why else ""
    return CorpusError(f"{corpus}: {len(sel.paths)} usable images are fewer than "
                       f"index.clusters={clusters}{because}; add images or lower it")


def _run_locked(corpus: str | Path, index_dir: Path, config: IndexConfig, progress: bool,
                full_check: bool, scheduler: str | None = None) -> IndexReport:
    report = IndexReport()
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.timings[step] = report.timings.get(step, 0.0) + now - clock
        clock = now

    entries, skipped_dirs, shards, decoded = _decode_step(corpus, index_dir, config, progress,
                                                            scheduler)
    lap("decode")
    sel = _select(entries, shards)
    sel.bad = skipped_dirs + sel.bad
    _warn_bad(sel.bad, index_dir)
    report.counts = {"files": len(entries), "decoded": decoded, "bad": len(sel.bad),
                     "duplicates": sel.duplicates, "tiles": len(sel.paths)}
    if len(sel.paths) < config.clusters:
        _write_bad_report(index_dir, sel.bad)
        raise _too_few(corpus, sel, config.clusters)
    sources_digest = digest_text(_decode_key(config), *sel.paths, *sel.digests)
    params = _result_params(config)
    old = _read_manifest(index_dir)
    same_sources = old is not None and old.get("sources_digest") == sources_digest
    damaged = _damaged(index_dir, old, full_check) if same_sources else {}
    report.repaired = sorted(damaged)
    fresh_tiles = same_sources and not damaged.keys() & {*ix.ARRAYS, ix.MANIFEST}
    fresh_clusters = (fresh_tiles and old.get("params") == params
                      and ix.CLUSTERS not in damaged)
    if fresh_clusters and not damaged and \
            ix.load_spread(index_dir, int(old["counts"]["tiles"])) is not None:
        report.counts.update({k: v for k, v in old["counts"].items() if k.startswith(
            ("clusters", "tiles_"))})
        report.up_to_date = True
        lap("check")
        _write_last_run(index_dir, report)
        return report
    lap("check")
    (index_dir / ix.MANIFEST).unlink(missing_ok=True)  # the old index is no longer valid
    if not fresh_tiles:
        _assemble(index_dir, sel, shards, config)
    lap("assemble")
    if fresh_clusters:
        report.counts.update({k: v for k, v in old["counts"].items() if k.startswith(
            ("clusters", "tiles_"))})
    else:
        report.counts.update(_cluster(index_dir, config))
    lap("cluster")
    report.counts["near_duplicate_groups"] = ix.write_groups(index_dir)["groups"]
    lap("groups")
    _write_bad_report(index_dir, sel.bad)
    _write_manifest(index_dir, corpus, config, sel, sources_digest, report)
    lap("write")
    _write_last_run(index_dir, report)
    return report


def _damaged(index_dir: Path, manifest: dict, full: bool) -> dict[str, str]:
    """The artifacts that fail their check, each named in one warning. A cheap check that
    fails anywhere makes every artifact get the full digest check."""
    problems = ix.artifact_problems(index_dir, manifest, full)
    if problems and not full:
        problems = {**ix.artifact_problems(index_dir, manifest, full=True), **problems}
    for name, problem in problems.items():
        log.warning("%s: damaged (%s); rebuilding it", index_dir / name, problem)
    return problems


def _write_manifest(index_dir: Path, corpus: str | Path, config: IndexConfig, sel: _Selection,
                    sources_digest: str, report: IndexReport) -> None:
    root = os.path.abspath(corpus)
    params = _result_params(config)
    manifest = {
        "format": 2,
        "corpus": root,
        "params": params,
        "decode_key": _decode_key(config),
        "sources_digest": sources_digest,
        "index_digest": digest_text(sources_digest, repr(sorted(params.items()))),
        "versions": _versions(),
        "counts": report.counts,
        "artifacts": {name: record_artifact(index_dir / name) for name in ix.RECORDED},
        "sources": {"paths": [os.path.relpath(p, root) for p in sel.paths],
                    "digests": sel.digests},
    }
    write_json(index_dir / ix.MANIFEST, manifest)
