"""The index stage's decode checkpoint: shard files of per-file decode results.

A decode directory ``<index>/shards/decode-<key>/`` holds ``shard-*.npz`` files (paths,
sizes, mtimes, digests, ok flags, reasons, tiles, both features; one row per corpus file)
and ``records.json``, the :func:`pipeline.cache.record_artifact` record of each shard.
Each shard is written atomically, then recorded. On load a recorded shard gets the cheap
check (size and sampled digest); an unrecorded one (written just before a kill) is read
in full once, which checks every member's CRC. A shard that fails is deleted, with one
warning, and its files are decoded again. Directories of other decode keys, and shards
none of whose files is still in the corpus, are stale and removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
from tqdm import tqdm

from pipeline.cache import (
    READ_ERRORS,
    artifact_problem,
    digest_text,
    format_bytes,
    record_artifact,
    write_json,
    write_npz,
)
from pipeline.config import IndexConfig
from pipeline.corpus import DecodedBatch, FileEntry, decode_files_worker
from pipeline.execute import decode_backend

log = logging.getLogger(__name__)

CHUNK = 256  # files per worker task
RECORDS = "records.json"
# the files of a decode directory (and their temporaries): all that is ever deleted there
SHARD_FILES = re.compile(r"shard-\d{6}-[0-9a-f]{12}\.npz|" + re.escape(RECORDS))

Key = tuple[str, int, int]


class DamagedShard(Exception):  # noqa: N818  (internal signal, never reaches the user)
    """A shard passed its cheap check but could not be read in full."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass
class Shards:
    """The decode checkpoint: shard files and where each file's record lives."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    where: dict[Key, tuple[int, int]] = field(default_factory=dict)
    digests: list[np.ndarray] = field(default_factory=list)
    ok: list[np.ndarray] = field(default_factory=list)
    reasons: list[np.ndarray] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)

    def add(self, path: Path, keys: list[Key], digests: np.ndarray, ok: np.ndarray,
            reasons: np.ndarray) -> None:
        s = len(self.files)
        self.files.append(path)
        self.digests.append(digests)
        self.ok.append(ok)
        self.reasons.append(reasons)
        for row, key in enumerate(keys):
            self.where[key] = (s, row)

    def save_records(self) -> None:
        write_json(self.directory / RECORDS, self.records)


def _read_records(directory: Path) -> dict[str, dict]:
    try:
        import json

        data = json.loads((directory / RECORDS).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _shard_problem(path: Path, record: dict | None) -> str | None:
    """Why a shard cannot be trusted (cheap check, or a full read if unrecorded)."""
    if record is not None:
        return artifact_problem(path, record)
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                z[name]  # reads the member in full: zipfile checks its CRC
    except READ_ERRORS as exc:
        return f"unreadable ({exc})"
    return None


def load_shards(directory: Path, current: set[Key]) -> Shards:
    """Load the checkpoint in ``directory``; drop damaged shards and stale ones (no row
    in ``current``, the corpus's file keys), saying so."""
    shards = Shards(directory)
    directory.mkdir(parents=True, exist_ok=True)
    old = _read_records(directory)
    stale, stale_bytes = 0, 0
    for path in sorted(directory.glob("shard-*.npz")):
        problem = _shard_problem(path, old.get(path.name))
        if problem is None:
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys = list(zip(z["paths"].tolist(), z["sizes"].tolist(),
                                    z["mtimes"].tolist(), strict=True))
                    columns = z["digests"], z["ok"], z["reasons"]
            except READ_ERRORS as exc:
                problem = f"unreadable ({exc})"
        if problem is not None:
            log.warning("%s: damaged decode checkpoint (%s); its images will be decoded "
                        "again", path, problem)
            path.unlink(missing_ok=True)
            continue
        if not current.intersection(keys):
            stale, stale_bytes = stale + 1, stale_bytes + path.stat().st_size
            path.unlink()
            continue
        shards.records[path.name] = old.get(path.name) or record_artifact(path)
        shards.add(path, keys, *columns)
    if stale:
        log.info("removed %d stale decode shard(s) of files no longer in the corpus (%s)",
                 stale, format_bytes(stale_bytes))
    if shards.records != old:
        shards.save_records()
    return shards


def remove_stale_dirs(shards_root: Path, keep: str) -> int:
    """Remove decode directories under ``shards_root`` other than ``keep``; bytes freed."""
    from pipeline.cache import temp_final_name

    freed = 0
    for d in sorted(shards_root.glob("decode-*")):
        if d.name != keep and d.is_dir():
            for f in d.iterdir():  # only the files a decode directory holds
                if SHARD_FILES.fullmatch(temp_final_name(f.name) or f.name) and f.is_file():
                    freed += f.stat().st_size
                    f.unlink()
            with contextlib.suppress(OSError):
                d.rmdir()
    if freed:
        log.info("removed decode checkpoints of other tile sizes or feature settings (%s)",
                 format_bytes(freed))
    return freed


def drop(shards: Shards, path: Path) -> None:
    """Forget and delete one shard (found damaged while reading it)."""
    path.unlink(missing_ok=True)
    shards.records.pop(path.name, None)
    shards.save_records()


def _write_shard(shards: Shards, entries: list[FileEntry], parts: list[DecodedBatch]) -> None:
    batch = DecodedBatch(*(np.concatenate([getattr(p, f.name) for p in parts])
                           for f in dataclasses.fields(DecodedBatch)))
    keys = [(e.path, e.size, e.mtime_ns) for e in entries]
    name = (f"shard-{len(shards.files):06d}-{digest_text(*(e.path for e in entries))[:12]}"
            ".npz")
    path = shards.directory / name
    write_npz(path, paths=np.array([e.path for e in entries], dtype=str),
              sizes=np.array([e.size for e in entries], dtype=np.int64),
              mtimes=np.array([e.mtime_ns for e in entries], dtype=np.int64),
              **dataclasses.asdict(batch))
    shards.records[name] = record_artifact(path)
    shards.save_records()
    shards.add(path, keys, batch.digests, batch.ok, batch.reasons)


def decode_new(todo: list[FileEntry], shards: Shards, config: IndexConfig, jobs: int,
               progress: bool, scheduler: str | None = None) -> None:
    """Decode ``todo`` with ``jobs`` processes into shards of exactly ``shard_size`` files.

    Each shard is split into worker tasks of at most :data:`CHUNK` files and written,
    atomically, as soon as all of its tasks are back: a kill loses at most the shard
    in progress. A full disk raises :class:`~pipeline.errors.DiskFullError` naming the
    shard; the workers are stopped quietly. With ``scheduler`` the tasks run on that
    Dask cluster (:func:`pipeline.execute.decode_backend`).
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
    with bar, decode_backend(scheduler) as remote, joblib.Parallel(
            n_jobs=remote or jobs, return_as="generator") as parallel:
        for (g, chunk), result in zip(chunks, parallel(tasks), strict=True):
            parts.append(result)
            bar.update(len(chunk))
            remaining[g] -= len(chunk)
            if remaining[g] == 0:
                _write_shard(shards, groups[g], parts)
                parts = []

