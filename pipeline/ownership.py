"""Which folders are the tool's: marked ones (:data:`pipeline.cache.MARKER`), and those
made before markers existed, proved to be the tool's by their records and then adopted
(marked). ``mosaic clean`` only ever touches these, and refuses an empty path, ``/`` and
the home folder outright (:func:`refuse_unsafe`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from pipeline.cache import CACHE_ENTRIES, MARKER, digest_text, mark_owned, owned_kind
from pipeline.errors import CleanError
from pipeline.planfile import chunk_key

log = logging.getLogger(__name__)

_KEY = re.compile(r"[0-9a-f]{32}")


def refuse_unsafe(folder: str | Path, what: str) -> Path:
    """Refuse an empty path, ``/`` and the home folder (also through a link); the path."""
    if str(folder).strip() == "":
        raise CleanError(f"{what}: an empty path (the current folder?) is never cleaned; "
                         "name the cache folder")
    real = Path(os.path.realpath(folder))
    if real == Path("/") or real == Path(os.path.realpath(Path.home())):
        raise CleanError(f"{folder}: is {'/' if real == Path('/') else 'your home folder'}"
                         f", never a cache; name the cache folder (e.g. .cache)")
    return Path(folder)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def proves(folder: Path, kind: str) -> bool:
    """Whether an unmarked ``folder`` is the tool's ``kind`` folder, made before markers
    existed: its records name the key its folder is named by (or it is an index)."""
    if kind == "index":
        return (folder / "tiles.npy").is_file() and \
            "index_digest" in read_json(folder / "manifest.json")
    if kind == "download":
        url = read_json(folder / "done.json").get("url")
        return isinstance(url, str) and digest_text(url) == folder.name
    if not _KEY.fullmatch(folder.name):
        return False
    if kind == "plan":
        return read_json(folder / "manifest.json").get("key") == folder.name or any(
            chunk_key(c) == folder.name for c in sorted(folder.glob("chunk-*.npz"))[:1])
    return any(read_json(r).get("key") == folder.name
               for r in sorted(folder.glob("seg-[0-9][0-9][0-9][0-9][0-9].json"))[:3])


def owned(folder: Path, kind: str, dry_run: bool) -> bool:
    """Whether ``folder`` is the tool's ``kind`` folder: marked, or proved and adopted."""
    found = owned_kind(folder)
    if found is not None:
        return found == kind
    if not proves(folder, kind):
        log.info("left %s alone: not marked as this tool's %s folder", folder, kind)
        return False
    log.info("%s %s (a %s folder made before markers existed)",
             "would adopt" if dry_run else "adopting", folder, kind)
    if not dry_run:
        mark_owned(folder, kind)
    return True


def open_for_cleaning(cache: Path, dry_run: bool) -> bool:
    """Check that ``cache`` may be cleaned; False when there is none. Raises
    :class:`CleanError` in one line for a folder that is not a cache of this tool."""
    refuse_unsafe(cache, "--cache")
    if not cache.exists():
        log.info("%s: no cache directory here, nothing to clean in it", cache)
        return False
    if not cache.is_dir():
        raise CleanError(f"{cache}: not a directory, so not a cache")
    kind = owned_kind(cache)
    if kind not in (None, "cache"):
        raise CleanError(f"{cache}: is a {kind} folder of this tool, not a cache"
                         + ("; clean it with --index" if kind == "index" else ""))
    if kind is None:
        names = {p.name for p in cache.iterdir() if not p.name.startswith(".")}
        if not names or not names <= CACHE_ENTRIES:
            raise CleanError(f"{cache}: not a mosaic cache (no {MARKER} marker, and it holds "
                             "files a cache does not); nothing removed")
        log.info("%s %s (a cache made before markers existed)",
                 "would adopt" if dry_run else "adopting", cache)
        if not dry_run:
            mark_owned(cache, "cache")
    return True
