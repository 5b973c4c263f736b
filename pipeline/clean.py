"""``mosaic clean``: reclaim the space of work that can no longer be reused.

Three kinds of things go:

* stale decode checkpoints of an index: shard directories of other tile sizes or feature
  settings, and shards none of whose files is still in the corpus unchanged;
* orphaned temporary files (``.NAME.XXXX.tmp``) left by killed runs;
* render jobs (``<cache>/render/<key>/``) whose newest file is older than a cut-off.

Nothing is touched in a directory whose lock (``.lock``, see
:func:`pipeline.cache.file_lock`) another run holds; temporary files outside locked
directories are only removed when untouched for an hour.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.cache import file_lock
from pipeline.errors import LockedError, MosaicError
from pipeline.shards import READ_ERRORS

log = logging.getLogger(__name__)

LOCK = ".lock"
TMP_GLOB = ".*.tmp"
UNLOCKED_TMP_AGE = 3600.0  # seconds a temporary file outside a locked directory must idle
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``, ``"90s"`` or ``"0"`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m or (not m.group(2) and float(m.group(1)) != 0):
        raise MosaicError(f"--older-than: expected a duration such as 30m, 12h, 7d or 2w, "
                          f"got {text!r}")
    return float(m.group(1)) * _UNITS.get(m.group(2), 1)


@dataclass
class CleanReport:
    """What was (or, in a dry run, would be) removed: ``(path, bytes, kind)`` rows."""

    removed: list[tuple[Path, int, str]] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)

    def total(self, kind: str | None = None) -> int:
        return sum(b for _, b, k in self.removed if kind in (None, k))

    def count(self, kind: str) -> int:
        return sum(1 for _, _, k in self.removed if k == kind)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _newest(path: Path) -> float:
    times = [f.stat().st_mtime for f in path.rglob("*") if f.is_file() and f.name != LOCK]
    return max(times, default=path.stat().st_mtime)


def _remove(report: CleanReport, path: Path, kind: str, dry_run: bool) -> None:
    size = _size(path)
    report.removed.append((path, size, kind))
    log.info("%s %s: %s (%d bytes)", "would remove" if dry_run else "removing", kind, path, size)
    if not dry_run:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _unlocked(directory: Path, report: CleanReport):
    """Yield True while holding ``directory``'s lock, False if another run holds it."""
    if not (directory / LOCK).exists():
        yield True
        return
    try:
        with file_lock(directory / LOCK, str(directory), timeout=0):
            yield True
    except LockedError:
        report.busy.append(directory)
        yield False


def _stale_shards(index_dir: Path) -> list[Path]:
    """Decode directories of other keys, and shards with no file still unchanged."""
    import json

    try:
        key = json.loads((index_dir / "manifest.json").read_text())["decode_key"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no finished index: cannot tell which checkpoint is current
    stale = [d for d in sorted((index_dir / "shards").glob("decode-*"))
             if d.name != f"decode-{key}"]
    for shard in sorted((index_dir / "shards" / f"decode-{key}").glob("shard-*.npz")):
        try:
            with np.load(shard, allow_pickle=False) as z:
                rows = zip(z["paths"].tolist(), z["sizes"].tolist(), z["mtimes"].tolist(),
                           strict=True)
        except READ_ERRORS:  # a damaged shard: the next `mosaic index` redoes it
            continue
        if not any(_unchanged(*row) for row in rows):
            stale.append(shard)
    return stale


def _unchanged(path: str, size: int, mtime_ns: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_size == size and st.st_mtime_ns == mtime_ns


def clean_cache(cache: str | Path, older_than_s: float, dry_run: bool = False,
                index_dirs: tuple[str | Path, ...] = ()) -> CleanReport:
    """Remove stale shards, orphaned temporary files, old render jobs and plans under ``cache``
    (and in ``index_dirs``, indexes kept elsewhere); see the module docstring."""
    cache = Path(cache)
    report = CleanReport()
    if not cache.is_dir():
        log.info("%s: no cache directory here, nothing to clean in it", cache)
    now = time.time()
    indexes = {p.parent for p in cache.glob("**/shards")} | {Path(d) for d in index_dirs}
    for index_dir in sorted(indexes):
        with _unlocked(index_dir, report) as free:
            if free:
                for stale in _stale_shards(index_dir):
                    _remove(report, stale, "stale decode checkpoint", dry_run)
                for tmp in [*index_dir.glob(TMP_GLOB), *index_dir.glob(f"shards/*/{TMP_GLOB}")]:
                    _remove(report, tmp, "orphaned temporary file", dry_run)
    for job in sorted(p for p in cache.glob("render/*") if p.is_dir()):
        with _unlocked(job, report) as free:
            if free and now - _newest(job) > older_than_s:
                _remove(report, job, "old render job", dry_run)
            elif free:
                for tmp in job.rglob(TMP_GLOB):
                    _remove(report, tmp, "orphaned temporary file", dry_run)
    for plan in sorted(p for p in cache.glob("plans/*") if p.is_dir()):
        with _unlocked(plan, report) as free:
            if free and now - _newest(plan) > older_than_s:
                _remove(report, plan, "old render plan", dry_run)
    locked_dirs = indexes | {p for p in cache.glob("render/*")} | {p for p in cache.glob("plans/*")}
    for tmp in sorted(cache.rglob(TMP_GLOB)) if cache.is_dir() else []:
        if not any(d == tmp.parent or d in tmp.parents for d in locked_dirs) and tmp.exists() \
                and now - tmp.stat().st_mtime > UNLOCKED_TMP_AGE:
            _remove(report, tmp, "orphaned temporary file", dry_run)
    return report
