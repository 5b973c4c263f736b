"""``mosaic clean``: reclaim the space of work that can no longer be reused, touching
nothing this tool did not write.

What goes:

* stale decode checkpoints of an index: shard directories of other tile sizes or feature
  settings, and shards none of whose files is still in the corpus unchanged;
* temporary files (``.NAME.XXXXXXXX.tmp``) left by killed runs, a killed render's
  unfinished streamed join beside a default output (``.NAME.<job>.join.tmp``, unlocked),
  and the raw canvases a killed ``mosaic photo`` left in ``<cache>/tmp/``;
* render jobs (``<cache>/render/<key>/``), plans (``plans/<key>/``) and downloads
  (``downloads/<digest>/``) whose newest file is older than a cut-off.

What may be touched, and how it is known to be the tool's:

* only a folder carrying the tool's marker (:data:`pipeline.cache.MARKER`): the cache,
  an index, a job, a plan, a download. A folder made before markers existed is adopted
  (marked) once when it proves to be the tool's: a cache holding only the names a cache
  holds, an index with its manifest and tile bank, a job, plan or download whose records
  name the key its folder is named by. Any other folder is refused (the cache) or left
  alone (a subfolder), with one line;
* in such a folder, only the names the tool writes there (:data:`JOB_FILES`, ...), and
  temporary files of those names; a folder left holding anything else is kept;
* nothing that a running job holds: a job's lock, a plan's or a download's hold
  (:func:`pipeline.locks.hold`), an index's lock, a raw canvas's own lock.

``clean`` refuses an empty path, ``/`` and the home folder outright.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.cache import (
    MARKER,
    READ_ERRORS,
    owned_kind,
    temp_final_name,
)
from pipeline.errors import CleanError, LockedError
from pipeline.locks import HOLD, file_lock
from pipeline.ownership import open_for_cleaning, owned, proves, read_json, refuse_unsafe
from pipeline.planfile import PLAN_FILES
from pipeline.shards import SHARD_FILES

log = logging.getLogger(__name__)

LOCK = ".lock"
UNLOCKED_TMP_AGE = 3600.0  # seconds a temporary file outside a locked directory must idle
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_KEY = re.compile(r"[0-9a-f]{32}")
# the files the tool writes in each kind of folder: all it ever deletes there
JOB_FILES = re.compile(r"seg-\d{5}\.(mp4|json|progress)|done\.json|concat\.txt|tasks\.jsonl")
DOWNLOAD_FILES = re.compile(r"video(\..+)?|done\.json")
INDEX_FILES = re.compile(r"tiles\.npy|features_(hist|lab)\.npy|(clusters|groups)\.npz|"
                         r"bad_files\.tsv|(manifest|last_run)\.json")
OUTPUT_FILES = re.compile(r".+-[0-9a-f]{8}-mosaic\.[A-Za-z0-9]+(\.scores\.json)?")
# a streamed join's temporary file beside its output (pipeline.join), locked while it runs
JOIN_TMP = re.compile(r"\.(?P<out>.+)\.[0-9a-f]{16}\.join\.tmp")
RAW_FILE = re.compile(r"photo-[a-z0-9_]+\.raw")
_BOOKKEEPING = (LOCK, HOLD, MARKER)


def parse_duration(text: str) -> float:
    """``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``, ``"90s"`` or ``"0"`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m or (not m.group(2) and float(m.group(1)) != 0):
        raise CleanError(f"--older-than: expected a duration such as 30m, 12h, 7d or 2w, "
                          f"got {text!r}")
    return float(m.group(1)) * _UNITS.get(m.group(2), 1)


@dataclass
class CleanReport:
    """What was (or, in a dry run, would be) removed: ``(path, bytes, kind)`` rows; the
    folders in use, and those kept because they hold files the tool did not write."""

    removed: list[tuple[Path, int, str]] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)

    def total(self, kind: str | None = None) -> int:
        return sum(b for _, b, k in self.removed if kind in (None, k))

    def count(self, kind: str) -> int:
        return sum(1 for _, _, k in self.removed if k == kind)


def remove_temporaries(folder: Path, names: re.Pattern[str]) -> int:
    """Remove the temporary files of ``names`` (:func:`pipeline.cache.temp_final_name`)
    that a killed or stopped run left in ``folder``; the caller holds its lock. Returns
    how many went."""
    gone = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            final = temp_final_name(entry.name)
            if final is not None and names.fullmatch(final) and entry.is_file():
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    gone += 1
    return gone


def _file_size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return path.lstat().st_size
    return 0


def _owned_files(folder: Path, names: re.Pattern[str]) -> list[Path]:
    """The files of ``names`` in ``folder``, and temporary files of those names."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            final = temp_final_name(entry.name) or entry.name
            if names.fullmatch(final) and entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def _remove_files(report: CleanReport, files: list[Path], kind: str, dry_run: bool) -> None:
    for path in files:
        report.removed.append((path, _file_size(path), kind))
        log.info("%s %s: %s", "would remove" if dry_run else "removing", kind, path)
        if not dry_run:
            path.unlink(missing_ok=True)


def _remove_folder(report: CleanReport, folder: Path, names: re.Pattern[str], kind: str,
                   dry_run: bool) -> None:
    """Remove the files of ``names`` in ``folder`` (counted as one ``kind`` row), then its
    bookkeeping and the folder itself when nothing else is left in it."""
    files = _owned_files(folder, names)
    size = sum(_file_size(p) for p in files)
    report.removed.append((folder, size, kind))
    log.info("%s %s: %s (%d bytes)", "would remove" if dry_run else "removing", kind, folder,
             size)
    if dry_run:
        return
    for path in files:
        path.unlink(missing_ok=True)
    others = [p for p in folder.iterdir() if p.name not in _BOOKKEEPING]
    if others:
        report.kept.append(folder)
        return
    for name in _BOOKKEEPING:
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _newest(folder: Path) -> float:
    times = [f.stat().st_mtime for f in folder.rglob("*")
             if f.is_file() and f.name not in _BOOKKEEPING]
    return max(times, default=folder.stat().st_mtime)


@contextlib.contextmanager
def _free(folder: Path, report: CleanReport):
    """Yield True while holding ``folder``'s lock and hold exclusively, False if a
    running job holds either."""
    try:
        with contextlib.ExitStack() as stack:
            for name in (LOCK, HOLD):
                if (folder / name).exists():
                    stack.enter_context(file_lock(folder / name, str(folder), timeout=0))
            yield True
    except LockedError:
        report.busy.append(folder)
        yield False


def _clean_index(index_dir: Path, report: CleanReport, dry_run: bool) -> None:
    with _free(index_dir, report) as free:
        if not free:
            return
        key = read_json(index_dir / "manifest.json").get("decode_key")
        shards = index_dir / "shards"
        for decode in sorted(shards.glob("decode-*")) if key else []:
            if decode.is_dir() and decode.name != f"decode-{key}":
                _remove_folder(report, decode, SHARD_FILES, "stale decode checkpoint",
                               dry_run)
        if key:
            _remove_files(report, _stale_shards(shards / f"decode-{key}"),
                          "stale decode checkpoint", dry_run)
        temps = [p for p in _owned_files(index_dir, INDEX_FILES) if p.name.endswith(".tmp")]
        for decode in shards.glob("decode-*"):
            temps += [p for p in _owned_files(decode, SHARD_FILES) if ".tmp" in p.name]
        _remove_files(report, temps, "orphaned temporary file", dry_run)


def _stale_shards(decode: Path) -> list[Path]:
    """Shards none of whose files is still in the corpus unchanged."""
    stale = []
    for shard in sorted(decode.glob("shard-*.npz")):
        if not SHARD_FILES.fullmatch(shard.name):
            continue
        try:
            with np.load(shard, allow_pickle=False) as z:
                rows = list(zip(z["paths"].tolist(), z["sizes"].tolist(),
                                z["mtimes"].tolist(), strict=True))
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


_WORK = (("render", "job", JOB_FILES, "old render job"),
         ("plans", "plan", PLAN_FILES, "old render plan"),
         ("downloads", "download", DOWNLOAD_FILES, "old download"))


def _clean_work(cache: Path, cutoff: float, report: CleanReport, dry_run: bool) -> None:
    """Old jobs, plans and downloads; the temporaries of the others."""
    for sub, kind, names, what in _WORK:
        for folder in sorted(p for p in (cache / sub).glob("*") if p.is_dir()):
            if not owned(folder, kind, dry_run):
                continue
            with _free(folder, report) as free:
                if free and _newest(folder) < cutoff:
                    _remove_folder(report, folder, names, what, dry_run)
                elif free:
                    temps = [p for p in _owned_files(folder, names) if ".tmp" in p.name]
                    _remove_files(report, temps, "orphaned temporary file", dry_run)


def _stale_raws(folder: Path) -> list[Path]:
    """Raw canvases in the cache's ``tmp/`` of ``mosaic photo`` runs that are gone (a
    live run holds a lock on its own)."""
    if owned_kind(folder) != "tmp":
        return []
    return [raw for raw in sorted(folder.glob("photo-*.raw"))
            if RAW_FILE.fullmatch(raw.name) and not _locked(raw)]


def remove_stale_raws(folder: Path) -> int:
    """Remove the raw canvases killed photo runs left in ``folder``; how many went."""
    stale = _stale_raws(folder)
    for raw in stale:
        raw.unlink(missing_ok=True)
    if stale:
        log.info("removed %d raw file(s) left by killed photo runs in %s", len(stale), folder)
    return len(stale)


def _locked(path: Path) -> bool:
    """Whether another process holds a lock on the file ``path`` itself."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _clean_outputs(cache: Path, now: float, report: CleanReport, dry_run: bool) -> None:
    """Temporaries of default outputs: idle for an hour (the join of a live render
    rewrites its own within seconds), or a streamed join's that no join holds (a
    killed run's: a film's can be as large as the film)."""
    folder = cache / "renders"
    if owned_kind(folder) not in ("renders", None) or not folder.is_dir():
        return
    temps = [p for p in _owned_files(folder, OUTPUT_FILES) if ".tmp" in p.name
             and now - p.stat().st_mtime > UNLOCKED_TMP_AGE]
    _remove_files(report, temps, "orphaned temporary file", dry_run)
    joins = [Path(e.path) for e in os.scandir(folder)
             if (m := JOIN_TMP.fullmatch(e.name)) and OUTPUT_FILES.fullmatch(m["out"])
             and e.is_file(follow_symlinks=False) and not _locked(Path(e.path))]
    _remove_files(report, joins, "killed run's unfinished join", dry_run)


def _indexes(cache: Path, dry_run: bool) -> list[Path]:
    """The indexes in the cache (at most two levels down: ``index/``, ``sample/index/``)."""
    found = []
    for manifest in [*cache.glob("*/manifest.json"), *cache.glob("*/*/manifest.json"),
                     *cache.glob(f"*/{MARKER}"), *cache.glob(f"*/*/{MARKER}")]:
        folder = manifest.parent
        if folder not in found and folder.parent.name not in ("render", "plans",
                                                               "downloads") \
                and (owned_kind(folder) == "index" or proves(folder, "index")) \
                and owned(folder, "index", dry_run):
            found.append(folder)
    return sorted(found)


def clean_cache(cache: str | Path, older_than_s: float, dry_run: bool = False,
                index_dirs: tuple[str | Path, ...] = ()) -> CleanReport:
    """Remove stale shards, orphaned temporary files, old render jobs, plans and downloads
    under ``cache`` (and in ``index_dirs``, indexes kept elsewhere); see the module doc.

    Raises :class:`CleanError` before removing anything when ``cache`` or one of
    ``index_dirs`` is not a folder of this tool.
    """
    refuse_unsafe(cache, "--cache")  # before Path(), which makes "" the current folder
    cache = Path(cache)
    report = CleanReport()
    indexes = []
    for raw in index_dirs:
        index_dir = refuse_unsafe(raw, "--index")
        if owned_kind(index_dir) != "index" and not proves(index_dir, "index"):
            raise CleanError(f"{index_dir}: not a tile index of this tool (no {MARKER} "
                             "marker, no manifest and tile bank); nothing removed")
        indexes.append(index_dir)
    has_cache = open_for_cleaning(cache, dry_run)
    for index_dir in indexes:
        owned(index_dir, "index", dry_run)
    if has_cache:
        indexes += [i for i in _indexes(cache, dry_run) if i not in indexes]
    for index_dir in indexes:
        _clean_index(index_dir, report, dry_run)
    if has_cache:
        now = time.time()
        _clean_work(cache, now - older_than_s, report, dry_run)
        _remove_files(report, _stale_raws(cache / "tmp"), "stale photo raw file", dry_run)
        _clean_outputs(cache, now, report, dry_run)
    return report
