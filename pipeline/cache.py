"""Content digests and atomic writes: the two rules that keep cached work trustworthy.

Every artifact is written to a temporary file in the same directory, flushed, fsynced
and renamed over its final name, so a reader sees either the old file or the new one,
never half of one. Digests are BLAKE2b with 128-bit output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

DIGEST_BYTES = 16  # 128 bits: collisions stay negligible far beyond any corpus size


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
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600; finished files are ordinary
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield array
        array.flush()
        del array
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
