"""Content digests, atomic writes, artifact checks, free space and folder markers: the
rules that keep cached work trustworthy.

Every artifact is written to a temporary file with a unique name in the same directory,
flushed, fsynced and renamed over its final name, so a reader sees either the old file or
the new one, never half of one. A full disk becomes :class:`DiskFullError` naming the
final path, and the temporary file is removed. Digests are BLAKE2b with 128-bit output.

Artifacts are recorded in their stage's manifest as :func:`record_artifact` records
(size, full digest, digest of a fixed sample of blocks); :func:`check_artifact` checks a
file against its record cheaply (size and sample) or fully (whole digest).

Locks are :mod:`pipeline.locks`.

Every folder the tool creates carries a marker file, :data:`MARKER`, naming the tool and
the folder's kind (:func:`mark_owned`); clean-up only ever deletes inside marked folders
(:func:`owned_kind`), and outputs are never written into one (:func:`owned_ancestor`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline.errors import DiskFullError

log = logging.getLogger(__name__)

DIGEST_BYTES = 16  # 128 bits: collisions stay negligible far beyond any corpus size
MARKER = ".mosaic-owned"  # in every folder the tool creates: {"tool", "kind", "created"}
TOOL = "videomosaic"
# cache subfolders the tool manages (their contents are never outputs)
CACHE_WORK = ("render", "plans", "downloads", "locks", "tmp")
# every name the tool creates at the top of a cache (a cache made before markers existed
# is recognised by holding nothing else)
CACHE_ENTRIES = frozenset({*CACHE_WORK, "index", "renders", "sample", "faces"})
# What reading a damaged .npy/.npz can raise (zipfile's CRC and directory errors, zlib,
# numpy's format checks): the one list every reader of a cached array catches
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def digest_bytes(data: bytes) -> str:
    """Return the 32-hex-digit BLAKE2b-128 digest of ``data``."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest()


def digest_text(*parts: str) -> str:
    """Digest several strings unambiguously (each is length-prefixed)."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for part in parts:
        raw = part.encode()
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def digest_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Digest a file's content without holding it all in memory."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """A temporary sibling of ``path``, ``(descriptor, name)``: once the block has written
    and fsynced it, it gets an ordinary file's mode and is renamed over ``path``; on any
    exception it is removed (a full disk becomes :class:`DiskFullError` naming ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        yield fd, tmp
        publish(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise_if_disk_full(exc, path)
        raise


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file over ``path`` with an ordinary file's mode
    (mkstemp makes 0600)."""
    os.chmod(tmp, umask_mode())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    with _replacing(Path(path)) as (fd, _), os.fdopen(fd, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


# ".NAME.XXXXXXXX.tmp": atomic_output's temporary of NAME (also ".STEM.XXXXXXXX.EXT.tmp"
# from an encoder and ".NAME.XXXXXXXX.tmp.EXT" from an image saver); X: mkstemp's letters
_TEMP = re.compile(r"\.(?P<stem>.+?)\.[a-z0-9_]{8}(?P<ext>\.[A-Za-z0-9]+)?\.tmp"
                   r"(\.[A-Za-z0-9]+)?")


def temp_final_name(name: str) -> str | None:
    """The final name of a temporary file this tool writes (``.seg-00001.json.k3x9a_b2.tmp``
    -> ``seg-00001.json``), or None when ``name`` is not one."""
    m = _TEMP.fullmatch(name)
    return m.group("stem") + (m.group("ext") or "") if m else None


def umask_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def mark_owned(folder: str | Path, kind: str) -> Path:
    """Create ``folder`` (and its parents) if needed and mark it as this tool's, of
    ``kind`` (``cache``, ``index``, ``job``, ``plan``, ``download``, ``faces``, ``dzi``...),
    unless it carries a marker already. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if owned_kind(folder) is None:
        write_json(folder / MARKER, {"tool": TOOL, "kind": kind, "created": time.time(),
                                     "pid": os.getpid()})
    return folder


def owned_kind(folder: str | Path) -> str | None:
    """The kind this tool marked ``folder`` with, or None (no marker, or not ours)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("tool") != TOOL:
        return None
    kind = marker.get("kind")
    return kind if isinstance(kind, str) else None


def owned_ancestor(path: str | Path, kinds: frozenset[str] | set[str] | None = None
                   ) -> tuple[Path, str] | None:
    """The nearest folder at or above ``path`` marked by this tool (with one of ``kinds``
    when given): ``(folder, kind)``; None if there is none."""
    p = Path(os.path.realpath(path))
    for folder in (p, *p.parents):
        kind = owned_kind(folder)
        if kind is not None and (kinds is None or kind in kinds):
            return folder, kind
    return None


def open_cache(cache_dir: str | Path) -> Path:
    """The cache folder, created and marked if needed; returns it.

    A folder is marked as a cache when this creates it, when it is empty, or when it
    holds only the names a cache of this tool holds (one made before markers existed).
    Any other unmarked folder is used as it is, unmarked: work goes into marked
    subfolders only, and ``mosaic clean`` refuses it.
    """
    cache = Path(cache_dir)
    if owned_kind(cache) is not None:
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in cache.iterdir() if not p.name.startswith(".")}
    if names <= CACHE_ENTRIES:
        mark_owned(cache, "cache")
    else:
        log.debug("%s: not marked as a cache (holds other files)", cache)
    return cache


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    with atomic_output(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Atomically write several arrays as an uncompressed ``.npz`` (never pickled)."""
    with atomic_output(path) as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def atomic_memmap(path: str | Path, shape: tuple[int, ...], dtype: np.dtype | type
                  ) -> Iterator[np.ndarray]:
    """Create a ``.npy`` file of ``shape`` as a writable memory map; rename it into place.

    The caller fills the yielded array; on success it is flushed, fsynced and renamed
    over ``path``; on any exception the temporary file is removed.
    """
    with _replacing(Path(path)) as (fd, tmp):
        os.close(fd)
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        _reserve(tmp)  # a full disk must fail here, not as SIGBUS on a page write
        yield array
        array.flush()
        del array
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def _reserve(path: str) -> None:
    """Allocate every block of a (sparse) file now, so writes through a map cannot fail."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    try:
        if size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError saying the disk (or a quota or file-size limit) is full."""
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def raise_if_disk_full(exc: BaseException, path: str | Path) -> None:
    """Re-raise a disk-full OSError as :class:`DiskFullError` naming ``path``; else return."""
    if is_disk_full(exc):
        raise DiskFullError(disk_full_message(path, exc.strerror or str(exc))) from None


def disk_full_message(path: str | Path, reason: str = "no space left on device") -> str:
    """The one line said when writing ``path`` ran out of space."""
    free = free_bytes(path)
    return (f"{path}: cannot write: {reason.lower()} ({format_bytes(free)} free there); "
            "free some space and rerun the same command")


def free_bytes(path: str | Path) -> int:
    """Bytes available to this user on the filesystem holding ``path`` (or its nearest
    existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def format_bytes(n: int) -> str:
    """``n`` bytes in a short human form: ``812 B``, ``3.4 MiB``, ``1.2 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


FREE_MARGIN = 1 << 20  # bytes kept free beyond an estimate: manifests, reports, logs


def ensure_free(path: str | Path, need_bytes: int, what: str) -> int:
    """Check that ``need_bytes`` (plus a small margin) fit on ``path``'s filesystem.

    Raises :class:`DiskFullError` naming ``path`` and ``what`` otherwise; returns the
    free bytes.
    """
    free = free_bytes(path)
    if free < need_bytes + FREE_MARGIN:
        raise DiskFullError(
            f"{path}: {what} needs about {format_bytes(need_bytes + FREE_MARGIN)} but only "
            f"{format_bytes(free)} is free there; free some space and rerun the same command")
    return free


SAMPLE_BLOCK = 64 << 10  # bytes per sampled block
SAMPLE_BLOCKS = 16  # blocks per cheap check: about 1 MiB read, whatever the file's size


def _sample_offsets(size: int) -> list[int]:
    """Start offsets of the sampled blocks: first, last and evenly spaced between."""
    if size <= SAMPLE_BLOCK * SAMPLE_BLOCKS:
        return [0] if size else []
    last = size - SAMPLE_BLOCK
    return [round(i * last / (SAMPLE_BLOCKS - 1)) for i in range(SAMPLE_BLOCKS)]


def sample_digest(path: str | Path) -> str:
    """Digest of a fixed sample of a file's blocks (the whole file when under 1 MiB)."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        for offset in _sample_offsets(size):
            f.seek(offset)
            h.update(f.read(SAMPLE_BLOCK if size > SAMPLE_BLOCK * SAMPLE_BLOCKS else size))
    return h.hexdigest()


def record_artifact(path: str | Path) -> dict[str, Any]:
    """The manifest record of a finished file: ``{"size", "digest", "sample"}``.

    ``digest`` is the whole file's BLAKE2b-128, ``sample`` that of a fixed ~1 MiB sample
    (see :func:`check_artifact`).
    """
    return {"size": os.path.getsize(path), "digest": digest_file(path),
            "sample": sample_digest(path)}


def artifact_problem(path: str | Path, record: Any, full: bool = False) -> str | None:
    """Why ``path`` does not match its manifest ``record``, or None when it does.

    The cheap check (``full=False``) compares the size and the sample digest (about
    1 MiB read); the full check also compares the whole file's digest.
    """
    if not isinstance(record, dict) or not {"size", "digest", "sample"} <= record.keys():
        return "no size and digest recorded for it"
    try:
        size = os.path.getsize(path)
        if size != record["size"]:
            return f"size {size} bytes, expected {record['size']} (truncated or replaced?)"
        if sample_digest(path) != record["sample"]:
            return "content differs from the recorded digest"
        if full and digest_file(path) != record["digest"]:
            return "content differs from the recorded digest"
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None


def check_artifact(path: str | Path, record: Any, full: bool = False) -> bool:
    """Whether ``path`` matches its :func:`record_artifact` record (see
    :func:`artifact_problem` for what is compared)."""
    return artifact_problem(path, record, full) is None
