"""The compiled variety rules (pipeline/rules.py) against numpy's (pipeline/rules_numpy.py).

A process decides its first cells with numpy's rules, each of a pass's steps one numpy
operation over every (cell, candidate) pair, and the rest with the compiled ones
(:data:`pipeline.assign.COMPILE_AFTER`): the two must pick the same tiles, on random
frames (tiles sharing groups, half-filled canvases, quiet cells with their own margins,
scene cuts for some cells, flat tiles, the joint matching) under every combination of
the rules.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.assign import TileAssigner

ROOT = Path(__file__).resolve().parents[1]


def random_frame(rng: np.random.Generator, rows: int, cols: int, n_tiles: int, k: int):
    """Tiles (features, groups, flat), a canvas half full, and a frame's cells with their
    k nearest tiles (some rows short of candidates: id -1, distance inf)."""
    features = rng.random((n_tiles, 6), dtype=np.float32)
    groups = rng.integers(0, n_tiles // 3, n_tiles)
    flat = rng.random(n_tiles) < 0.05
    cells = np.sort(rng.choice(rows * cols, rows * cols * 3 // 4, replace=False))
    queries = rng.random((len(cells), 6), dtype=np.float32)
    d = ((queries[:, None, :] - features[None]) ** 2).sum(-1)
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    dist = np.take_along_axis(d, ids, 1).astype(np.float32)
    short = rng.random(len(cells)) < 0.05
    ids[short, k // 2:], dist[short, k // 2:] = -1, np.inf
    current = np.where(rng.random(rows * cols) < 0.5, rng.integers(0, n_tiles, rows * cols),
                       -1)
    return features, groups, flat, cells, queries, ids, dist, current


RULES = list(itertools.product([0, 1, 2], [0.0, 1.0, 4.0], [0.0, 0.1], [False, True]))


@pytest.mark.parametrize(("radius", "use_cap", "unseen", "joint"), RULES)
def test_compiled_rules_pick_what_the_numpy_rules_picked(radius, use_cap, unseen, joint
                                                        ) -> None:
    rng = np.random.default_rng(radius * 100 + int(use_cap * 10) + int(unseen * 10) + joint)
    rows, cols, n_tiles, k = 9, 13, 240, 10
    for frame in range(4):
        features, groups, flat, cells, queries, ids, dist, current = random_frame(
            rng, rows, cols, n_tiles, k)
        kw = dict(margin=0.9, groups=groups, radius=radius, use_cap=use_cap, unseen=unseen,
                  joint=joint, flat=flat if frame % 2 else None)
        margin = np.where(rng.random(len(cells)) < 0.3, np.float32(0), np.float32(0.9))
        free = rng.random(len(cells)) < 0.2
        for args in ((), (False, margin), (free, margin), (True,)):
            got = TileAssigner(rows, cols, features, compiled=True, **kw).assign(
                cells, queries, ids, dist, current, *args)
            want = TileAssigner(rows, cols, features, compiled=False, **kw).assign(
                cells, queries, ids, dist, current, *args)
            assert got.tolist() == want.tolist(), (frame, len(args))


def test_the_oracle_is_not_vacuous() -> None:
    """The comparison sees a difference: another margin picks other tiles."""
    rng = np.random.default_rng(7)
    features, groups, _flat, cells, queries, ids, dist, current = random_frame(
        rng, 9, 13, 240, 10)
    kw = dict(groups=groups, radius=1, use_cap=1.0, unseen=0.1)
    a = TileAssigner(9, 13, features, margin=0.9, compiled=True, **kw).assign(
        cells, queries, ids, dist, current)
    b = TileAssigner(9, 13, features, margin=0.5, compiled=False, **kw).assign(
        cells, queries, ids, dist, current)
    assert a.tolist() != b.tolist()


def test_a_process_compiles_the_rules_only_after_enough_cells() -> None:
    """A fresh process decides with numpy (numba not even imported) until it has decided
    COMPILE_AFTER cells, then with the compiled rules, for good."""
    script = """
import sys
import numpy as np
import pipeline.assign as A
A.COMPILE_AFTER = 250
a = A.TileAssigner(10, 10, np.random.default_rng(0).random((50, 3), dtype=np.float32),
                   radius=1, use_cap=1.0, unseen=0.1)
ids = np.tile(np.arange(8), (100, 1))
dist = np.tile(np.arange(8, dtype=np.float32), (100, 1))
seen = []
for _ in range(4):
    a.assign(np.arange(100), np.zeros((100, 3), np.float32), ids, dist, np.full(100, -1))
    seen.append("numba" in sys.modules)
print(seen)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[False, False, True, True]"


def test_a_process_whose_search_loaded_numba_compiles_the_rules_at_once() -> None:
    """The compiled search pays numba's load in every process that searches: the rules
    then load for a few hundredths of a CPU-second, from the first cell."""
    script = """
import sys
import numpy as np
import pipeline.assign as A
import pipeline.search as S
assert S.compiled_scan()
a = A.TileAssigner(10, 10, np.random.default_rng(0).random((50, 3), dtype=np.float32),
                   radius=1, use_cap=1.0, unseen=0.1)
ids = np.tile(np.arange(8), (100, 1))
dist = np.tile(np.arange(8, dtype=np.float32), (100, 1))
a.assign(np.arange(100), np.zeros((100, 3), np.float32), ids, dist, np.full(100, -1))
print("pipeline.rules" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "True"


def test_both_rules_weigh_a_broken_rule_alike() -> None:
    """The penalties the numpy rules and the compiled ones add are the same numbers."""
    from pipeline import rules, rules_numpy

    assert rules.RADIUS_PENALTY is rules_numpy.RADIUS_PENALTY
    assert rules.CAP_PENALTY is rules_numpy.CAP_PENALTY


def test_without_numba_the_numpy_rules_go_on() -> None:
    """numba missing (or its cache unwritable): one warning at the switch, numpy's rules
    for the rest of the process, the same picks."""
    script = """
import logging, sys
sys.modules["numba"] = None  # import numba: ImportError
logging.basicConfig(level=logging.WARNING, format="%(message)s")
import numpy as np
import pipeline.assign as A
A.COMPILE_AFTER = 150
rng = np.random.default_rng(0)
a = A.TileAssigner(10, 10, rng.random((50, 3), dtype=np.float32), radius=1, use_cap=1.0)
ids = np.tile(np.arange(8), (100, 1))
dist = np.tile(np.arange(8, dtype=np.float32), (100, 1))
picks = [a.assign(np.arange(100), np.zeros((100, 3), np.float32), ids, dist,
                  np.full(100, -1)).tolist() for _ in range(4)]
print(len({str(p) for p in picks}), "pipeline.rules" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "1 False"
    assert done.stderr.count("could not be loaded (ModuleNotFoundError") == 1


@pytest.mark.parametrize("dim", [3, 7, 8, 27, 48, 51, 127])
def test_compiled_own_distances_are_numpys_bits(dim: int) -> None:
    """The hysteresis's own-tile distances, summed compiled, round as numpy's row sums
    (so the compiled and numpy rules keep the same cells)."""
    from pipeline.rules import own_distances

    rng = np.random.default_rng(dim)
    queries = rng.random((4000, dim), dtype=np.float32) * 100
    features = rng.random((500, dim), dtype=np.float32) * 100
    cur = rng.integers(-1, 500, 4000)
    got = np.empty(4000, np.float32)
    own_distances(queries, features, cur, got)
    diff = queries - features[np.maximum(cur, 0)]
    diff *= diff
    want = np.where(cur >= 0, diff.sum(1), np.float32(np.inf))
    assert got.tobytes() == want.tobytes()
