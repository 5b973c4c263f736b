"""Where tasks run: local worker processes by default, a Dask cluster on request.

* :class:`LocalPool`: joblib's process executor (loky), ``--workers N``.
* :class:`DaskPool`: a Dask distributed cluster, ``--scheduler tcp://HOST:8786`` or
  ``$MOSAIC_SCHEDULER``. Tasks are retried by Dask when they fail, and rescheduled on
  another worker when theirs dies; the tasks given to it are idempotent.
* :func:`decode_backend`: the same choice for the index stage's joblib decode tasks.

The shared-storage contract: every worker must see the index, the input video and the
cache directory (plans, segment files) at the same paths as the client, and must have
this package installed. Workers write their outputs atomically into the job's work
directory; the client joins them.

:func:`choose_workers` fits the number of local workers, and the encoder threads of
each, to both the cores and the memory (the encoder's model is :mod:`pipeline.encode`): an
x264 encoder at a slow preset holds gigabytes at 5120x2880 whatever its thread count, so
memory, not cores, often sets the limit. A number of workers asked for is capped by the
cores, the memory and the segments.

:func:`pipeline.server.start_server` starts, at once, the process the local workers are
forked from (multiprocessing's forkserver), which imports the tasks' modules and loads their
compiled kernels while the client sets the job up: a worker then starts in milliseconds
with all of it loaded, where a fresh interpreter would spend 1-1.5 CPU-s on it, each.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.encode import encoder_bytes, encoder_threads, x264_lookahead
from pipeline.errors import SchedulerError
from pipeline.processes import stop_trees
from pipeline.server import SCHEDULER_ENV, preloaded, start_server

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = "20s"  # to reach a Dask scheduler
MEMORY_SHARE = 0.6  # the share of the available memory the workers may plan to use

_THREADS_PER_CORE = 1.5
_PAINTER_BYTES_PER_PIXEL = 30  # canvas, frame buffers, scratch, I420 conversion
_PAINTER_BASE = 250 << 20  # interpreter, libraries, the segment's tiles


class Future(Protocol):
    """What the render needs of a submitted task (concurrent.futures and Dask alike)."""

    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> Any: ...

    def cancel(self) -> bool: ...


@dataclass(frozen=True)
class WorkerPlan:
    """How many painters run at once, x264 threads each, and the memory estimate."""

    workers: int
    threads: int
    bytes_per_worker: int
    cores: int
    available: int
    lookahead: int | None = None  # x264's rc-lookahead where shortened, else None
    asked: int = 0  # the workers asked for, where more than this plan runs (capped)

    def describe(self, width: int, height: int, preset: str) -> str:
        """One info line naming the choice and why."""
        return (f"{self.workers} worker(s) x {self.threads} encoder thread(s): "
                f"{self.cores} cores, {self.available / 2**30:.1f} GiB available, about "
                f"{self.bytes_per_worker / 2**30:.1f} GiB per worker at {width}x{height}, "
                f"preset {preset}"
                + (f", x264 lookahead {self.lookahead} frames" if self.lookahead else ""))

    def describe_cap(self, segments: int) -> str:
        """The info line saying that the workers asked for were capped, and by what."""
        return (f"render.workers={self.asked} capped to {self.workers}: {self.cores} cores, "
                f"{self.available / 2**30:.1f} GiB available (about "
                f"{self.bytes_per_worker / 2**30:.1f} GiB per worker), {segments} "
                "segment(s) to paint")


def available_memory() -> int:
    """Bytes of memory available to new work: MemAvailable, capped by a cgroup limit."""
    avail = 8 << 30
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    return max(avail, 256 << 20)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset``)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def opencv_threads(threads: int) -> Iterator[None]:
    """OpenCV's threads in this process set to ``threads`` for the block (0: left as they
    are), then put back. A task that shares the cores with the other workers' tasks keeps
    its OpenCV calls to its own share: threads beyond it only spin and wait (a 5120x2880
    blend took 11.6 CPU-ms on two threads against 8.4 on one). The bits are the same on
    any number (OpenCV splits the rows)."""
    if threads <= 0:
        yield
        return
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@contextlib.contextmanager
def task_threads(threads: int) -> Iterator[None]:
    """A painter's share of the cores for the block: OpenCV's threads
    (:func:`opencv_threads`: its frame-sized conversions, resizes and blends split their
    rows), and one BLAS thread whatever the share. numpy's matrix products in a painter
    are small (the colour transform of a scored frame's 80,000 sub-cells: 1.8 CPU-ms on
    two BLAS threads against 0.5 on one), and BLAS threads spin between them: a
    1,000-frame busy job painted by one worker with two threads took 27.9 CPU-s of the
    painter's own with two BLAS threads against 15.8 with one, and 34.9 s against 29.4 s
    of wall (the same file). 0 leaves both alone."""
    if threads <= 0:
        yield
        return
    from threadpoolctl import threadpool_limits

    with opencv_threads(threads), threadpool_limits(1, user_api="blas"):
        yield


def worker_bytes(pixels: int, encoder: str, preset: str, threads: int,
                 lookahead: int | None = None) -> int:
    """Estimated peak memory of one painter and its encoder for frames of ``pixels``
    (:func:`pipeline.encode.encoder_bytes`)."""
    painter = _PAINTER_BASE + _PAINTER_BYTES_PER_PIXEL * pixels
    return int(painter + encoder_bytes(pixels, encoder, preset, threads, lookahead))


def choose_workers(pixels: int, encoder: str, preset: str, workers: int = 0,
                   threads: int = 0, cores: int | None = None, available: int | None = None,
                   segments: int = 0, tuned: bool = False) -> WorkerPlan:
    """Painters and encoder threads for frames of ``pixels``; 0 means choose. ``tuned``:
    x264 has the options for mosaic frames (:func:`pipeline.encode.encoder_threads`).

    Workers asked for (``workers`` > 0) are capped by the cores, by what fits
    :data:`MEMORY_SHARE` of the available memory at one encoder thread each, and by the
    number of ``segments`` (0: not known); the plan then says how many were asked.

    Threads per encoder follow the preset (1 for the fast ones, up to 4 for the slow
    ones), workers fill the cores with them, then as many are dropped as needed for all
    of them to fit :data:`MEMORY_SHARE` of the available memory (at least one). Cores
    left idle go to the encoders' threads while the memory allows, and at the slow
    presets the encoders get up to 1.5 threads per core, as x264 takes by itself. x264's
    lookahead is shortened where the frames are very large
    (:func:`pipeline.encode.x264_lookahead`).
    """
    cores = cores or usable_cores()
    available = available or available_memory()
    lookahead = x264_lookahead(pixels, preset) if encoder == "libx264" else None
    auto_threads = threads <= 0
    asked = workers
    if workers > 0:
        fits = int(MEMORY_SHARE * available // worker_bytes(pixels, encoder, preset, 1,
                                                             lookahead))
        workers = max(1, min(workers, cores, fits, segments or workers))
    wanted = encoder_threads(encoder, preset, tuned)
    if auto_threads:
        threads = max(1, min(wanted, cores // max(workers, 1) if workers else wanted, cores))

    def size(t: int) -> int:
        return worker_bytes(pixels, encoder, preset, t, lookahead)

    budget = MEMORY_SHARE * available
    if workers <= 0:
        workers = max(1, min(cores // threads, segments or cores))
        while workers > 1 and workers * size(threads) > budget:
            workers -= 1
    if auto_threads:
        # cores left idle by the memory limit go to the encoders, while memory allows
        while workers * (threads + 1) <= cores and workers * size(threads + 1) <= budget:
            threads += 1
        # encoding-bound presets: x264's frame threads wait on each other's rows, so it
        # runs more of them than cores (measured on 2 cores at preset slow: 3 threads
        # render 6% faster than 2)
        while threads < wanted and workers * (threads + 1) <= _THREADS_PER_CORE * cores \
                and workers * size(threads + 1) <= budget:
            threads += 1
    return WorkerPlan(workers, threads, size(threads), cores, available, lookahead,
                      asked if asked > workers else 0)


PAINTER_NICE = 5  # local workers (plan and paint tasks) yield the CPU to the client's scheduling


def _start_painter(environ: dict[str, str] | None = None, cwd: str | None = None
                   ) -> None:
    """A local worker's initialiser: run its plan and paint tasks (and start its encoders
    and decoders) at a lower priority than the client, which hands out the next task as
    soon as one ends and joins the output: it is never kept waiting for a core.

    Ctrl-C at a terminal reaches every process of the job; a painter ignores it (the
    client, which gets it too, stops the painters with :func:`stop_trees`). A worker
    forked from the server takes the client's environment and directory (``environ``,
    ``cwd``: the client's when its executor was made), not the server's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if cwd is not None:
        with contextlib.suppress(OSError):
            os.chdir(cwd)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(PAINTER_NICE)


_QUIET_TRACKERS = ("ignore::UserWarning:joblib.externals.loky.backend.resource_tracker",
                   "ignore::UserWarning:multiprocessing.resource_tracker")


def quiet_tracker() -> None:
    """Keep the resource trackers (loky's, and multiprocessing's that the forkserver's
    workers register with) quiet about what they clean up.

    A tracker is a process of its own that outlives this one by a moment; after a run
    that failed or was interrupted (and stopped its workers) it may warn, below the
    run's one error line, about the workers' semaphores, which it then removes (or finds
    gone). The processes this one starts from now on ignore those warnings
    (``PYTHONWARNINGS``), and nothing else.
    """
    filters = os.environ.get("PYTHONWARNINGS", "").split(",")
    missing = [f for f in _QUIET_TRACKERS if f not in filters]
    if missing:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [*filters, *missing]))


_PAINTERS: Any = None  # this process's painters, kept for its next render
_CLIENT: tuple = ()  # the environment and directory they were made in


def _painters(workers: int) -> Any:
    """A loky executor of ``workers`` painters: this process's own (not the process-wide
    one that joblib's index decoders share, which it would break), kept between renders
    while this process's environment and directory stay the same; idle painters exit
    after two minutes. Forked from the server (:func:`start_server`) where it runs."""
    global _PAINTERS, _CLIENT
    from joblib.externals.loky import ProcessPoolExecutor

    executor = _PAINTERS
    flags = getattr(executor, "_flags", None)
    try:
        client = (dict(os.environ), os.getcwd())
    except OSError:  # (its directory removed)
        client = (dict(os.environ), None)
    if executor is None or flags is None or flags.broken or flags.shutdown or \
            getattr(executor, "_max_workers", None) != workers or \
            client != _CLIENT:
        if executor is not None:
            with contextlib.suppress(Exception):
                executor.shutdown(wait=False)
        server = None
        if (preload := preloaded()) is not None:
            import multiprocessing

            start_server(preload)
            server = multiprocessing.get_context("forkserver")
        executor = _PAINTERS = ProcessPoolExecutor(
            max_workers=workers, timeout=120, initializer=_start_painter,
            initargs=client if server else (), context=server)
        _CLIENT = client
    return executor


class LocalPool:
    """Worker processes on this machine (a loky executor, :func:`_painters`).

    ``warm_up``, a picklable function of no arguments, is each worker's first task
    (importing what the tasks will need): the workers then spawn and import while the
    client starts its own work (loky starts them on the first task).
    """

    def __init__(self, workers: int, warm_up: Callable[[], Any] | None = None) -> None:
        self.workers = workers
        self._executor = _painters(workers)
        for _ in range(workers if warm_up is not None else 0):
            self._executor.submit(warm_up)

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, priority: int = 0
               ) -> Future:
        """Run ``fn(*args)`` in a worker process (first come, first served: ``key`` and
        ``priority`` are for Dask)."""
        return self._executor.submit(fn, *args)

    def close(self, abort: bool = False) -> None:
        """Nothing to do after a run (the idle workers wait for the next one, or exit);
        after a failure or an interrupt (``abort``), stop the workers and everything they
        started, at once."""
        global _PAINTERS
        if abort:
            stop_trees(list(getattr(self._executor, "_processes", {}) or {}))
            with contextlib.suppress(Exception):
                self._executor.shutdown(wait=False, kill_workers=True)
            if _PAINTERS is self._executor:
                _PAINTERS = None


class DaskPool:
    """Tasks on a Dask distributed cluster, through a client of its scheduler."""

    def __init__(self, address: str, retries: int = 3) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise SchedulerError("--scheduler needs Dask: pip install 'videomosaic[dask]'"
                              ) from None
        try:
            self.client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.retries = retries
        self._run = uuid.uuid4().hex[:8]
        self._submitted: list = []

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, priority: int = 0
               ) -> Future:
        """Run ``fn(*args)`` as a Dask task named ``key`` (retried on failure); of the
        tasks ready, those of higher ``priority`` run first."""
        future = self.client.submit(fn, *args, key=f"{key}-{self._run}",
                                    retries=self.retries, pure=False, priority=priority)
        self._submitted.append(future)
        return future

    def close(self, abort: bool = False) -> None:
        """Disconnect from the scheduler (the cluster keeps running); after a failure
        (``abort``) the job's tasks are cancelled first."""
        if abort:
            with contextlib.suppress(Exception):
                self.client.cancel(self._submitted, force=True)
        self.client.close()


def make_pool(workers: int, scheduler: str | None,
              warm_up: Callable[[], Any] | None = None) -> LocalPool | DaskPool:
    """A Dask pool when a scheduler address is given (or set in the environment), else
    ``workers`` local processes, each running ``warm_up`` first."""
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    return DaskPool(scheduler) if scheduler else LocalPool(workers, warm_up)


@contextlib.contextmanager
def decode_backend(scheduler: str | None) -> Iterator[int | None]:
    """Run joblib's parallel loops (the index's decode shards) on a Dask cluster when a
    scheduler is given; yields the ``n_jobs`` to use there (None: keep the local one)."""
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if not scheduler:
        yield None
        return
    import joblib

    pool = DaskPool(scheduler)
    try:
        with pool.client.as_current(), joblib.parallel_config(backend="dask"):
            yield -1
    finally:
        pool.close()
