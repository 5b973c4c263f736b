"""The process the local render workers are forked from (multiprocessing's forkserver).

:func:`start_server` starts it at once: it imports the tasks' modules and loads their
compiled kernels (about a CPU-second) while the client sets the job up, and a worker
forked from it starts in milliseconds with all of it loaded. This module imports nothing
heavy, so the ``mosaic`` command can start the server before it loads its own libraries
(:mod:`pipeline.launch`); :mod:`pipeline.execute` forks the workers from it.
"""

from __future__ import annotations

import multiprocessing

SCHEDULER_ENV = "MOSAIC_SCHEDULER"  # a Dask cluster's address: no local workers, no server
_PRELOAD: str | None = None  # the module the forkserver imports, once started


def start_server(preload: str) -> None:
    """Start the forkserver the local workers will be forked from, importing the module
    ``preload`` (which loads what the tasks need), if not started yet in this process.
    Where there is no forkserver (not POSIX), the workers start as fresh interpreters."""
    global _PRELOAD
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    from multiprocessing import forkserver

    if _PRELOAD is None:
        multiprocessing.get_context("forkserver").set_forkserver_preload([preload])
        _PRELOAD = preload
    forkserver.ensure_running()  # (restarted if it was stopped)


def preloaded() -> str | None:
    """The module the server imports (None: no server started in this process)."""
    return _PRELOAD
