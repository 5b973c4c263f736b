"""Locks: a second run of the same job waits for the first; a folder in use is left alone.

:func:`file_lock` is an advisory ``fcntl.flock`` lock on a lock file: a second run of the
same job waits for the first, saying once which process holds it (or, with a timeout,
gives up with :class:`~pipeline.errors.LockedError`). The kernel drops the lock when its
holder exits or is killed, so a lock can never go stale. :func:`hold` is the shared lock
that every user of a cached folder (a render reading a plan or a download) keeps while it
runs, so that ``mosaic clean`` (which takes the exclusive lock) leaves the folder alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import LockedError

log = logging.getLogger(__name__)

HOLD = ".hold"  # shared lock of a folder's users (see hold())


def _holder(lock_path: Path) -> str:
    """Who holds a lock, as its holder wrote it into the lock file."""
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not info:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (f"pid {info.get('pid')} on {info.get('host')} since {started} "
            f"({info.get('command', '?')})")


@contextlib.contextmanager
def file_lock(lock_path: str | Path, what: str, timeout: float | None = None,
              shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path`` (created if needed) for the ``with`` block.

    ``what`` names the locked job in messages ("index /x/ix"). If another process holds
    it, this logs one line naming the holder and waits: forever when ``timeout`` is None,
    else up to ``timeout`` seconds (0: not at all), then raises :class:`LockedError`.
    ``shared`` locks (readers such as ``mosaic verify``) exclude only exclusive holders;
    where the folder is read-only they are taken on the existing lock file opened for
    reading, or, with no lock file there, skipped (nobody can write there either).
    The holder's pid, host, start time and command are written into the lock file. A
    lock file removed (by ``mosaic clean``) while this waited for it is made again.
    """
    lock_path = Path(lock_path)
    while True:
        fd = _open_lock(lock_path, shared)
        if fd is None:
            yield
            return
        try:
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(lock_path)
                if timeout is not None and timeout <= 0:
                    raise LockedError(f"{what} is in use by {holder}; wait for it to finish "
                                      "or stop it, then rerun") from None
                log.info("%s is in use by %s; waiting for it to finish", what, holder)
                _wait_lock(fd, mode, timeout, what, holder)
            if not _still_there(fd, lock_path):
                continue  # removed while we waited: lock the new one
            if not shared:
                os.ftruncate(fd, 0)
                note = {"pid": os.getpid(), "host": socket.gethostname(),
                        "started": time.time(),
                        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}
                os.pwrite(fd, json.dumps(note).encode(), 0)
            yield
            return
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def _open_lock(lock_path: Path, shared: bool) -> int | None:
    """A descriptor of the lock file (made if needed); None for a shared lock where the
    folder is read-only and has no lock file."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if not shared or exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
    try:
        return os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        log.debug("%s: read-only and no lock file; reading without a lock", lock_path.parent)
        return None


def _still_there(fd: int, lock_path: Path) -> bool:
    """Whether ``lock_path`` still names the file open as ``fd``."""
    try:
        st = os.stat(lock_path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


@contextlib.contextmanager
def hold(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder`` in use (a shared lock on its :data:`HOLD` file) for the block:
    ``mosaic clean`` leaves a held folder alone."""
    with file_lock(Path(folder) / HOLD, what, shared=True):
        yield


def _wait_lock(fd: int, mode: int, timeout: float | None, what: str, holder: str) -> None:
    """Block on ``flock`` (forever, or polling until ``timeout`` seconds have passed)."""
    if timeout is None:
        fcntl.flock(fd, mode)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockedError(f"{what} is still in use by {holder} after {timeout:g} s; "
                                  "wait for it to finish or stop it, then rerun") from None
            time.sleep(0.1)
