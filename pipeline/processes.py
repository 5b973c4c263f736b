"""Processes and everything they started: found through ``/proc``, stopped together.

:func:`stop_trees` stops processes and everything they started (a painter and its
ffmpeg encoder and decoder): a stopped run leaves no process behind. :func:`widen_pipe`
gives a pipe between two processes room for a whole frame.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

try:  # (POSIX only: a pipe is widened where it can be)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _parents() -> dict[int, int]:
    """``{pid: parent pid}`` of every process visible in ``/proc``."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses
                parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    return parents


def descendants(roots: list[int] | tuple[int, ...]) -> list[int]:
    """Every process started by one of ``roots`` (children, their children, ...);
    empty where there is no ``/proc``."""
    if not os.path.isdir("/proc"):
        return []
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pids: list[int] | set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_trees(roots: list[int] | tuple[int, ...], wait: float = 5.0) -> None:
    """Kill processes ``roots`` and all their descendants; wait up to ``wait`` seconds
    for them to be gone.

    Everything is frozen first (SIGSTOP, repeated until no new process appears), so
    that none of them starts a process, or dies and leaves an orphan, while they are
    killed; then all get SIGKILL. Their temporary files are for the caller to remove.
    """
    frozen: set[int] = set()
    for _ in range(20):
        new = set(roots) | set(descendants(list(roots))) | set(descendants(list(frozen)))
        new -= frozen
        if not new:
            break
        _signal(new, signal.SIGSTOP)
        frozen |= new
    _signal(frozen, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while frozen and time.monotonic() < deadline:
        frozen = {pid for pid in frozen if _alive(pid)}
        if frozen:
            time.sleep(0.05)


def stop_children(wait: float = 5.0) -> None:
    """Stop everything this process started (:func:`stop_trees`) but the resource
    trackers of multiprocessing and loky, which ignore interrupts and exit on their own
    as soon as this process does (killing them makes their clients warn)."""
    def tracker(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"resource_tracker" in f.read()
        except OSError:
            return False

    stop_trees([pid for pid in descendants([os.getpid()]) if not tracker(pid)], wait)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] not in (b"Z", b"X")


PIPE_BYTES = 1 << 20  # Linux's limit for a process without privileges (pipe-max-size)


def widen_pipe(stream: object, size: int = PIPE_BYTES) -> None:
    """Make the pipe behind ``stream`` hold ``size`` bytes where the system allows it
    (Linux's ``F_SETPIPE_SZ``; elsewhere, or refused, it stays as it is). A decoder then
    writes a 640x480 frame in one go, not in fifteen 64 KiB turns with the reader: about
    0.17 CPU-ms less a frame, the two processes together."""
    if (setter := getattr(fcntl, "F_SETPIPE_SZ", None)) is not None:  # (None: no fcntl)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fcntl.fcntl(stream.fileno(), setter, size)  # type: ignore[attr-defined]
