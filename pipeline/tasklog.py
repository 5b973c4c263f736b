"""Task records: what every plan, paint and mux task of a render cost, one JSON line each
in the job's ``tasks.jsonl`` (``scripts/project_scale.py`` replays them).

A record (:meth:`TaskClock.record`) holds:

* ``run``: the render run it belongs to (a rerun that resumes appends a new run);
  ``id`` (``plan-00003``, ``paint-00003``, ``mux``), ``kind`` and ``deps``: the ids of the
  tasks whose outputs it reads (a plan chunk carries on from the previous one's end;
  a segment is painted from its chunk; the mux joins every segment);
* ``segment`` and ``frames``: the video frames ``[first, end)`` it covers;
* ``start`` (seconds since the epoch), ``wall_s``: its wall time; ``cpu_s``: the CPU
  time of the process that ran it, all its threads, over the task; ``child_cpu_s``:
  that of the processes it started and waited for (ffmpeg decoders and encoders);
* ``read`` and ``written``: bytes by kind. ``bank``: tile rows of the index's
  ``tiles.npy`` read (rows x row bytes); ``chunk``: the plan chunk file; ``segment``:
  the encoded segment files; ``output``: the joined output; ``source``: the input video,
  an estimate (its size x the task's share of its frames; ffmpeg reads it).

A plan task runs on a thread of the coordinating process, so its ``cpu_s`` includes the
coordinator's other threads (the loop that polls the painters, the pool's client) over
that time: a little more than the plan's own. A paint task runs alone in its worker.

The records are appended by the coordinating process only (painters return theirs with
their result), each as one ``write`` of a whole line to a file opened for appending,
under a lock: lines never interleave.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import threading
import time
import uuid
from pathlib import Path

TASKS = "tasks.jsonl"


def process_cpu() -> tuple[float, float]:
    """CPU seconds so far of this process (all threads) and of its waited-for children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime


def source_bytes(path: str | Path, frames: int, total: int) -> int:
    """The estimated bytes of video ``path`` holding ``frames`` of its ``total`` frames."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return 0
    return int(size * frames / max(total, 1))


def file_bytes(*paths: str | Path) -> int:
    """The summed size of the files that exist among ``paths``."""
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.stat(path).st_size
    return total


class TaskClock:
    """Started at a task's start; :meth:`record` makes its record at its end."""

    def __init__(self) -> None:
        self.start = time.time()
        self._wall = time.perf_counter()
        self._cpu, self._child = process_cpu()

    def record(self, kind: str, number: int | None, frames: tuple[int, int],
               deps: list[str], read: dict[str, int], written: dict[str, int],
               **extra: object) -> dict:
        """The task's record (see the module's description); ``number`` is the segment
        (None for a task of the whole job)."""
        cpu, child = process_cpu()
        ident = kind if number is None else f"{kind}-{number:05d}"
        return {"id": ident, "kind": kind, "segment": number,
                "frames": [int(frames[0]), int(frames[1])], "deps": deps,
                "start": round(self.start, 3),
                "wall_s": round(time.perf_counter() - self._wall, 4),
                "cpu_s": round(cpu - self._cpu, 4), "child_cpu_s": round(child - self._child, 4),
                "read": {k: int(v) for k, v in read.items()},
                "written": {k: int(v) for k, v in written.items()},
                "pid": os.getpid(), "host": socket.gethostname(), **extra}


class TaskLog:
    """Appends records of one run to ``DIR/tasks.jsonl`` (thread-safe, whole lines)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / TASKS
        self.run = uuid.uuid4().hex[:8]
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        """Append ``record``, tagged with this run, as one line."""
        line = (json.dumps({"run": self.run, **record}, sort_keys=False) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)


def read_tasks(path: str | Path) -> list[dict]:
    """The records of a ``tasks.jsonl`` (a torn last line, from a kill, is skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records
