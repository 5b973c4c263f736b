"""What a local render worker has loaded before its first task.

Imported once, by the process the local workers are forked from
(:func:`pipeline.server.start_server`), while the client sets the job up: the plan and
paint tasks' modules, and the compiled search, variety rules, tile placement and
measure, cube roots, block sums, Lab and search features (numba's load, about 0.7 CPU-s; on
a fresh install their compile). Each worker forked from it then starts its first task
at once, where a fresh interpreter spent 1-1.5 CPU-s on this.
Where a kernel cannot load, the task falls back to numpy as it would in a fresh worker.
"""

import contextlib
import importlib.abc
import sys
from collections.abc import Iterator

import numpy as np

import pipeline.paint
import pipeline.stages.planner  # noqa: F401
from pipeline.assign import load_compiled
from pipeline.compose import compiled_measure, compiled_placing
from pipeline.features import block_means, cbrt, srgb_to_lab
from pipeline.matching import search_features
from pipeline.search import compiled_scan


class _NotNow(importlib.abc.MetaPathFinder):
    """Refuses ``scipy.linalg`` (and what is below it) while it is on the import path."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "scipy.linalg" or name.startswith("scipy.linalg."):
            raise ImportError(f"{name} is not loaded with the kernels")
        return None


@contextlib.contextmanager
def without_scipy_linalg() -> Iterator[None]:
    """numba looks for scipy's BLAS as it loads its array functions, which imports
    ``scipy.linalg`` (0.12 s of this process's start, on the job's path to its first
    task); no kernel of this package calls BLAS. Within this block that import fails,
    numba notes "no BLAS" (its ``np.dot`` in compiled code would then refuse to compile),
    and ``scipy.linalg`` is imported as usual by whoever needs it later."""
    finder = _NotNow()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


with without_scipy_linalg():
    compiled_scan()
load_compiled()
compiled_placing(0)
compiled_measure(16, 16, 4)  # (loaded and checked once, whatever the tile size)
cbrt(np.ones(1, np.float32))
srgb_to_lab(np.zeros((1, 16, 3), np.float32))  # (the Lab passes, checked)
block_means(np.zeros((1, 4, 4, 3), np.uint8), 4)  # (the block sums, checked)
search_features(np.zeros((1, 48), np.float32), 0.0, 0.5)  # (the recolouring kernel)
