"""Source frames handed from a segment's plan task to its paint task on one machine.

Both tasks of a segment decode the same frames, ``[start, start + count)`` exactly
(:func:`pipeline.video.prefetch_frames`: the same bits on any number of threads). Where
the render's client made the job's stash folder (:func:`job_stash`, in shared memory:
``/dev/shm``), a plan task writes the frames it decodes there, BGR as decoded
(:class:`Tee`), and the segment's paint task, in any worker of that machine, reads them
back (:func:`take`) instead of starting a second decoder that seeks back to a keyframe
again; the file goes as it is opened. On a 1,000-frame busy 640x480 job on 2 cores the
job's tasks take about 4.5% less CPU, and the output is the same file (BENCHMARKS.md).

Nothing depends on it: a segment not stashed is decoded as before, to the same bits. A
segment is stashed only while the job's folder, with it, stays within :func:`budget`
(the client lets the plan run at most two segments a worker ahead of the painters, so
a short job's segments fit; a 720p segment of 256 frames, 700 MB, does not); a worker on
another machine (Dask) finds no folder and decodes. The client removes the folder when
the job ends, however it ends; one left by a killed client goes when the next job finds
its owner gone. ``MOSAIC_STASH``: another folder for the stashes, or ``off``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.cache import digest_text
from pipeline.errors import LockedError
from pipeline.locks import file_lock

log = logging.getLogger(__name__)

STASH_ENV = "MOSAIC_STASH"
BUDGET = 512 << 20  # bytes of frames a job's folder may hold (and at most 1/8 of free memory)
_OWNER = "owner"  # the client's lock on its job's folder (pipeline.locks.file_lock)
_SHARED = Path("/dev/shm")
_NAME = re.compile(r"[0-9a-f]{24}")  # a job's folder (a digest of its plan's folder and key)


def stash_root() -> Path | None:
    """The folder of every job's stash: ``$MOSAIC_STASH`` (``off``: none), else this
    user's folder in ``/dev/shm`` where there is one; None: no stash."""
    chosen = os.environ.get(STASH_ENV, "")
    if chosen.lower() in ("off", "0", "no", "false"):
        return None
    if chosen:
        return Path(chosen)
    if not _SHARED.is_dir() or not os.access(_SHARED, os.W_OK):
        return None
    return _SHARED / f"mosaic-stash-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _job_folder(plan_dir: str | Path, plan_key: str) -> Path | None:
    root = stash_root()
    # (the path as pathlib writes it: the client, planners and painters pass it as str or
    # Path, with or without a trailing slash)
    return None if root is None else root / digest_text(str(Path(plan_dir)), plan_key)[:24]


def _ours(root: Path) -> bool:
    """Whether ``root`` is a real folder (not a link) of this user's: in a shared
    ``/dev/shm`` another user could have made it first."""
    st = os.lstat(root)
    return stat.S_ISDIR(st.st_mode) and (not hasattr(os, "getuid") or st.st_uid == os.getuid())


def _sweep(root: Path) -> None:
    """Remove the job folders in ``root`` whose client is gone (killed before it could):
    only folders named as :func:`_job_folder` names them, whose owner lock no live client
    holds (nothing else in ``root`` is touched: ``$MOSAIC_STASH`` may hold other things)."""
    with contextlib.suppress(OSError):
        for folder in root.iterdir():
            if _NAME.fullmatch(folder.name) and (folder / _OWNER).is_file():
                with contextlib.suppress(LockedError, OSError), \
                        file_lock(folder / _OWNER, f"the source stash {folder}", timeout=0):
                    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def job_stash(plan_dir: str | Path, plan_key: str, enabled: bool = True) -> Iterator[Path | None]:
    """The client's side: the stash folder of the job planning ``plan_key`` in
    ``plan_dir`` made for the block and held (its owner lock, :func:`pipeline.locks.
    file_lock`, which the kernel drops if the client is killed), and removed after it
    with whatever it holds. None: no stash (disabled, no shared memory, or another live
    job holds it)."""
    folder = _job_folder(plan_dir, plan_key) if enabled else None
    if folder is None:
        yield None
        return
    held = contextlib.ExitStack()
    try:
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _ours(folder.parent):
            raise OSError("not this user's own folder")
        _sweep(folder.parent)
        folder.mkdir(mode=0o700)
        held.callback(shutil.rmtree, folder, ignore_errors=True)
        held.enter_context(file_lock(folder / _OWNER, f"the source stash {folder}", timeout=0))
    except (OSError, LockedError) as exc:  # (held by a live job, or no room: decode)
        held.close()
        log.debug("no source stash in %s: %s", folder, exc)
        yield None
        return
    with held:
        yield folder


def _file(folder: Path, number: int, start: int, count: int) -> Path:
    return folder / f"{number:05d}-{start}-{count}.bgr"


def _used(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                total += entry.stat().st_size
    return total


def budget() -> int:
    """Bytes a job's folder may hold: :data:`BUDGET`, or an eighth of the memory
    available (``/proc/meminfo``) where that is less."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as f:
            line = next(x for x in f if x.startswith("MemAvailable:"))
        return min(BUDGET, int(line.split()[1]) * 1024 // 8)
    return BUDGET


class Tee:
    """A segment's frames passed on as they come and written, the segment whole, into
    the job's stash folder (``plan_dir``, ``plan_key``; segment ``number`` of ``count``
    frames from ``start``, each (H, W, 3) uint8 BGR, ``shape``) where there is one and
    room: :meth:`over` the decoded frames (the decoder's thread iterates it:
    :func:`pipeline.video.prefetch_frames`' ``through``; their source stays its caller's
    to close). The file is renamed into place only when all ``count`` frames are in; any
    failure to write stops the writing, never the frames. :attr:`stored`: the bytes
    stashed (0 until the last frame has passed)."""

    def __init__(self, plan_dir: str | Path, plan_key: str, number: int, start: int, count: int,
                 shape: tuple[int, int, int]) -> None:
        self.frames: Iterable[np.ndarray] = ()
        self.shape, self.count, self.stored = shape, count, 0
        folder = _job_folder(plan_dir, plan_key)
        self.path = None if folder is None or not folder.is_dir() else \
            _file(folder, number, start, count)
        self.need = count * int(np.prod(shape))

    def over(self, frames: Iterable[np.ndarray]) -> Tee:
        """This tee over ``frames`` (iterate it once)."""
        self.frames = frames
        return self

    def _open(self, tmp: Path) -> int | None:
        """The segment's temporary file ``tmp``, its room taken (so that a full memory
        shows now, not half way), or None where there is no folder, budget or room."""
        if self.need <= 0 or _used(tmp.parent) + self.need > budget():
            return None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, self.need)
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            return None
        return fd

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.path is None:  # (no stash folder here: the frames only pass)
            yield from self.frames
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd, written = self._open(tmp), 0
        made = fd is not None
        try:
            for frame in self.frames:
                if fd is not None and not self._write(fd, frame):
                    os.close(fd)
                    fd = None
                written += fd is not None
                yield frame
            if fd is not None and written == self.count:
                os.close(fd)
                fd = None
                with contextlib.suppress(OSError):  # (the job's folder gone: it ended)
                    os.replace(tmp, self.path)
                    self.stored = self.need
        finally:
            if fd is not None:
                os.close(fd)
            if made and not self.stored:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _write(self, fd: int, frame: np.ndarray) -> bool:
        """Write one frame whole; False on a failure or a frame of another shape."""
        if frame.shape != self.shape or frame.dtype != np.uint8:
            return False
        view = memoryview(np.ascontiguousarray(frame)).cast("B")
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            return False
        return True


def take(plan_dir: str | Path, plan_key: str, number: int, start: int, count: int,
         shape: tuple[int, int, int]) -> Iterator[np.ndarray] | None:
    """The stashed frames of a segment (as :class:`Tee` names it), each (H, W, 3) uint8
    BGR of ``shape``, read one by one; the file is removed as it is opened (a second
    painter of the segment decodes). None where there is none whole."""
    folder = _job_folder(plan_dir, plan_key)
    if folder is None:
        return None
    path = _file(folder, number, start, count)
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the generator
    except OSError:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    if os.fstat(f.fileno()).st_size != count * int(np.prod(shape)):
        f.close()
        return None
    return _frames(f, count, shape)


def _frames(f, count: int, shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    with f:
        for _ in range(count):
            frame = np.empty(shape, np.uint8)
            if f.readinto(memoryview(frame).cast("B")) != frame.nbytes:
                raise OSError(f"{f.name}: a stashed segment ended early")
            yield frame
