"""The per-frame choice among each cell's candidate tiles, with the variety rules.

Rules, in order of strength:

1. *Hysteresis*: a cell keeps its current tile unless its best candidate's distance is
   under ``margin`` times the current tile's (not at a scene cut or a cold start).
2. *Repeat radius* ``r``: no cell takes a tile whose near-duplicate group is already
   on a cell within Chebyshev distance ``r`` (the (2r+1)^2 window), counting cells
   decided earlier in the frame and every cell already on the canvas.
3. *Cap*: at most ``cap`` cells of the frame show one group (a soft rule: a cell whose
   candidates are all at the cap takes the best of them; only the radius is stronger).
4. *Unseen first*: a candidate's distance is multiplied by ``1 + unseen * uses`` where
   ``uses`` is how many cells of the canvas already show its group.

Cells are decided in (r+1)^2 interleaved passes (cell (y, x) in pass
``(y mod (r+1), x mod (r+1))``): two cells of one pass are more than ``r`` apart, so a
pass's cells are checked against everything decided before it, and its picks of one group
count against the cap in cell order. The rules run either as numpy passes
(:mod:`pipeline.rules_numpy`: each step one operation over every (cell, candidate) pair)
or cell by cell in compiled loops (:mod:`pipeline.rules`, a third of the CPU): the same
picks. A process starts with numpy
and compiles once it has decided enough cells to pay for loading the compiler
(:data:`COMPILE_AFTER`), or at once where the compiled search has loaded it.
At a scene cut or the first frame (``free``) the whole frame is decided afresh and the
passes start from a joint assignment: a min-cost matching of cells to candidate tiles in
which each group is used at most ``cap`` times (``scipy``'s sparse bipartite matching),
which the passes then only repair where the radius forbids a pick.
"""

from __future__ import annotations

import logging
import math
import sys

import numpy as np

from pipeline import rules_numpy
from pipeline.rules_numpy import PAIRWISE_MAX, rank_within_groups

__all__ = ["COMPILE_AFTER", "TileAssigner", "load_compiled", "rank_within_groups",
           "use_compiled", "uses_cap"]
log = logging.getLogger(__name__)

# numba's load (its import and typing registries: 0.4-0.65 CPU-s once per process) pays
# back after about a million cells decided (the compiled rules take about 0.4 us a cell,
# numpy's about 1.3): until then a process decides with numpy, unless the compiled
# search (pipeline.scan, in every process that searches where numba loads) has paid that
# load already. The picks are the same (tests/test_rules.py), so a short job does not pay
# for the compiler it hardly uses.
COMPILE_AFTER = 1_000_000
_numpy_decided = 0  # cells this process has decided with numpy
_JOINT_MAX_CAP = 8  # the joint matching has one column per allowed use of a group
_UNMATCHED = 1e7  # cost of a cell's private fallback column in the joint matching


def use_compiled(cells: int) -> bool:
    """Whether to decide ``cells`` more cells with the compiled rules (see
    :data:`COMPILE_AFTER`): yes once they are loaded in this process, once the compiled
    search has loaded numba in it (:mod:`pipeline.scan`), or once the process has
    decided that many cells with numpy; and they load (:func:`load_compiled`)."""
    global _numpy_decided
    if "pipeline.rules" in sys.modules:
        return True
    if _numpy_decided < 0:  # tried, and failed
        return False
    if "pipeline.scan" in sys.modules:  # numba is loaded (the search's): 0.04 CPU-s more
        return load_compiled()
    _numpy_decided += cells
    if _numpy_decided <= COMPILE_AFTER:
        return False
    log.debug("%d cells decided with numpy: the variety rules compiled from here",
              _numpy_decided - cells)
    return load_compiled()


def load_compiled() -> bool:
    """Load the compiled rules now (about 0.6 CPU-s, once a process); False where they
    cannot load (numba missing or broken, no folder for its cache): numpy's rules then
    go on for the rest of the process, said once."""
    global _numpy_decided
    try:
        from pipeline.rules import warm

        warm()
    except Exception as e:  # any failure of the compiler: numpy goes on
        log.warning("the compiled variety rules could not be loaded (%s: %s); deciding "
                    "with numpy's (the same tiles, about three times the CPU)",
                    type(e).__name__, e)
        _numpy_decided = -1
        return False
    return True


def uses_cap(cells: int, groups: int, factor: float) -> int:
    """Per-frame uses of one group: ``ceil(factor * cells / groups)``, at least 1."""
    return max(1, math.ceil(factor * cells / max(1, groups)))


class TileAssigner:
    """Choose tiles for a frame's cells among their candidates (see the module doc).

    Parameters
    ----------
    rows, cols : the cell grid.
    features : ndarray (N, D), float32, per-tile features the distances are measured in.
    margin : hysteresis ratio on distances (0.9: switch only for a clearly better tile).
    max_uses : hard per-frame uses of one group (0: from ``use_cap``, or no cap).
    groups : ndarray (N,), int, near-duplicate group per tile (None: each tile alone).
    radius : repeat radius in cells (0: no rule; 1: the 8 neighbours).
    use_cap : cap as a multiple of cells / groups (0 and no ``max_uses``: no cap).
    unseen : distance penalty per use of a group already on the canvas.
    joint : decide free frames by a capacitated min-cost assignment first.
    flat : ndarray (N,), bool, optional: featureless tiles, exempt from the cap (a flat
        patch shown twice is not a repeat to the eye, and flat regions need many of them;
        the radius rule still holds).
    compiled : run the rules compiled (True) or with numpy (False); None: numpy until
        the process has decided :data:`COMPILE_AFTER` cells (:func:`use_compiled`).
    """

    def __init__(self, rows: int, cols: int, features: np.ndarray, margin: float = 0.9,
                 max_uses: int = 0, groups: np.ndarray | None = None, radius: int = 1,
                 use_cap: float = 0.0, unseen: float = 0.0, joint: bool = False,
                 flat: np.ndarray | None = None, compiled: bool | None = None) -> None:
        self.rows, self.cols, self.features = rows, cols, features
        self.margin, self.radius, self.unseen, self.joint = margin, radius, unseen, joint
        n = len(features)
        # int32: the window comparisons move half the bytes of int64 (tile ids < 2**28)
        self.groups = np.arange(n, dtype=np.int32) if groups is None else np.asarray(
            groups, np.int32)
        self.n_groups = int(self.groups.max()) + 1 if n else 0
        self.cap = max_uses or (uses_cap(rows * cols, self.n_groups, use_cap) if use_cap
                                else 0)
        # each group's cap: flat groups (all of whose tiles are flat) take any number
        self.caps = np.full(self.n_groups, self.cap, np.int32)
        if flat is not None and self.cap and n:
            textured = np.bincount(self.groups, weights=~np.asarray(flat, bool),
                                   minlength=self.n_groups)
            self.caps[textured == 0] = rows * cols
        y, x = np.divmod(np.arange(rows * cols), cols)
        self._pass = (y % (radius + 1)) * (radius + 1) + x % (radius + 1)
        width = cols + 2 * radius
        self._pad_index = (y + radius) * width + x + radius
        offsets = [dy * width + dx for dy in range(-radius, radius + 1)
                   for dx in range(-radius, radius + 1) if (dy, dx) != (0, 0)]
        self._window = np.array(offsets, np.int64)
        self._pad_shape = (rows + 2 * radius, width)
        # the rules as the kernels take them (the weight as numpy rounds it: float32)
        self._rules = (float(np.float32(unseen)), bool(unseen), bool(self.cap), bool(radius))
        self._seen = np.zeros(max(self.n_groups, 1), np.int32)  # the kernels' scratch
        self.compiled = compiled

    def assign(self, cells: np.ndarray, queries: np.ndarray, cand_ids: np.ndarray,
               cand_d: np.ndarray, current: np.ndarray, free: bool | np.ndarray = False,
               margin: np.ndarray | None = None) -> np.ndarray:
        """Choose tiles for ``cells`` given the grid's ``current`` tile ids.

        Parameters
        ----------
        cells : ndarray (n,), int, flat cell indices to decide.
        queries : ndarray (n, D), float32, the cells' features.
        cand_ids, cand_d : ndarrays (n, k): candidates by increasing squared distance
            (id -1 and distance inf where a cell has fewer).
        current : ndarray (rows * cols,), int64, tile per cell now (-1 = none).
        free : True (or (n,) bool, per cell) at a scene cut or a cold start: no
            hysteresis, joint assignment.
        margin : optional ndarray (n,), float32: each cell's hysteresis ratio instead of
            the assigner's ``margin`` (a quiet cell switches only for a clearly better tile).

        Returns
        -------
        ndarray (n,), int64, the chosen tile ids.
        """
        cells = np.asarray(cells, np.int64)
        free = np.broadcast_to(np.asarray(free, bool), cells.shape)
        cand_ids = np.ascontiguousarray(cand_ids, np.int64)
        cand_d = np.ascontiguousarray(cand_d, np.float32)
        compiled = self.compiled if self.compiled is not None else use_compiled(len(cells))
        cand_g = cost = None  # numpy's (and the joint matching's) arrays, made if needed
        if not compiled or (self.joint and 0 < self.cap <= _JOINT_MAX_CAP):
            cand_g = np.where(cand_ids >= 0, self.groups[np.maximum(cand_ids, 0)],
                              np.int32(-2))
            cost = np.where(cand_ids >= 0, cand_d, np.float32(np.inf))
        chosen = np.full(len(cells), -1, np.int64)
        undecided = np.ones(len(cells), bool)
        gpad, usage = self._context(current)
        if not free.all():
            numpy = (None, None) if compiled else (cost, cand_g)
            keep = self._keep(cells, queries, cand_ids, cand_d, current, margin, gpad,
                              usage, *numpy) & ~free
            chosen[keep] = current[cells[keep]]
            undecided &= ~keep
        self._release(cells[undecided & (current[cells] >= 0)], current, gpad, usage)
        prefer = np.full(len(cells), -1, np.int64)  # the joint matching's picks
        joint = undecided & free
        matched = self.joint and 0 < self.cap <= _JOINT_MAX_CAP and joint.sum() > 1
        if matched:
            prefer[joint] = self._joint(cost[joint], cand_g[joint], usage)
        if compiled:
            from pipeline.rules import choose_in_passes  # numba: only where it runs

            choose_in_passes(self._pass[cells], (self.radius + 1) ** 2, undecided,
                             self._pad_index[cells], cand_ids, cand_d, self.groups, gpad,
                             usage, self.caps, self._window, self._rules, prefer, chosen,
                             self._seen)
        else:
            rules_numpy.choose_in_passes(
                self._pass[cells], (self.radius + 1) ** 2, undecided, self._pad_index[cells],
                cand_ids, cost, cand_g, self.groups, gpad, usage, self.caps, self._window,
                self._rules, prefer if matched else None, chosen)
        return chosen

    def _release(self, cells: np.ndarray, current: np.ndarray, gpad: np.ndarray,
                 usage: np.ndarray) -> None:
        """Take the tiles of ``cells`` (j,), being decided, off the group map ``gpad`` and
        the counts ``usage`` (:meth:`_context`'s, in place): they block nothing."""
        gpad[self._pad_index[cells]] = -1
        usage -= np.bincount(self.groups[current[cells]], minlength=self.n_groups).astype(
            np.int32)

    def _context(self, now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Padded group map (flat) and per-group uses of the tiles ``now`` on the grid."""
        gpad = np.full(self._pad_shape, -1, np.int32).ravel()
        placed = now >= 0
        gpad[self._pad_index[placed]] = self.groups[now[placed]]
        return gpad, np.bincount(self.groups[now[placed]], minlength=self.n_groups).astype(
            np.int32)

    def _keep(self, cells: np.ndarray, queries: np.ndarray, cand_ids: np.ndarray,
              cand_d: np.ndarray, current: np.ndarray, margin: np.ndarray | None,
              gpad: np.ndarray, usage: np.ndarray, cost: np.ndarray | None,
              cand_g: np.ndarray | None) -> np.ndarray:
        """Hysteresis: cells whose current tile stays, (n,) bool.

        A cell keeps its tile unless the best candidate the rules allow, given every
        other cell's current tile, costs under ``margin**2`` times what its own tile
        costs (distances with the same unseen-first weighting as the choice itself).
        So a still scene stays still: the tiles it shows were the best allowed.
        ``gpad`` and ``usage``: :meth:`_context` of ``current`` (read only). ``cost`` and
        ``cand_g`` (n, k): the candidates' distances (inf: none) and groups (-2: none) for
        numpy's rules; None: the compiled rules.
        """
        cur = current[cells]
        has = cur >= 0
        if not has.any():
            return has
        cur_cost = self._own_costs(queries, cur, has, compiled=cost is None)  # (n,) float32
        own = np.where(has, self.groups[np.maximum(cur, 0)], np.int32(-3))
        if self.unseen:
            cur_cost *= 1 + np.float32(self.unseen) * (usage[np.maximum(own, 0)] - 1)
        ratio = np.float32(self.margin) if margin is None else np.asarray(margin, np.float32)
        with np.errstate(invalid="ignore"):  # 0 x inf where a cell has no tile: unread
            limit = ratio**2 * cur_cost  # (n,) float32, a fresh array
        keep = has.copy()
        if cost is None:
            from pipeline.rules import keep_cells  # numba: only where it runs

            keep_cells(keep, self._pad_index[cells], cand_ids, cand_d, self.groups, own,
                       limit, usage, self.caps, gpad, self._window, *self._rules)
            return keep
        rules_numpy.keep_cells(keep, self._pad_index[cells], cost, cand_g, own, limit, usage,
                               self.caps, gpad, self._window, self._rules)
        return keep

    def _own_costs(self, queries: np.ndarray, cur: np.ndarray, has: np.ndarray,
                   compiled: bool) -> np.ndarray:
        """Squared distances (n,) float32 from the cells' ``queries`` (n, D) float32 to
        their tiles ``cur`` (n,) int64 (``has``: cur >= 0; inf where none): compiled in
        one pass where the rules are (the same bits as numpy's)."""
        if compiled and queries.shape[1] < PAIRWISE_MAX and self.features.dtype == np.float32:
            from pipeline.rules import own_distances  # numba: only where it runs

            out = np.empty(len(cur), np.float32)
            own_distances(np.ascontiguousarray(queries, np.float32), self.features,
                          np.ascontiguousarray(cur, np.int64), out)
            return out
        diff = queries - self.features[np.maximum(cur, 0)]  # every row: no masked copies
        diff *= diff
        return np.where(has, diff.sum(1), np.float32(np.inf))

    def _joint(self, cost: np.ndarray, cand_g: np.ndarray, usage: np.ndarray) -> np.ndarray:
        """Column per cell of a min-cost matching in which each group takes at most
        ``cap - usage`` cells (one matrix column per allowed use), or -1 for a cell the
        matching leaves on its private fallback column (the passes then decide it).

        cost : ndarray (n, k), float32, the candidates' distances (inf: none).
        cand_g : ndarray (n, k), int32, their groups (-2: none).
        """
        from scipy.sparse import csr_matrix  # imported here: painters never need it
        from scipy.sparse.csgraph import min_weight_full_bipartite_matching

        n, _ = cost.shape
        finite = np.isfinite(cost) & (cand_g >= 0)
        rows_i, cols_k = np.nonzero(finite)
        uniq, g_local = np.unique(cand_g[rows_i, cols_k], return_inverse=True)
        cap = np.minimum(self.caps[uniq], _JOINT_MAX_CAP)
        room = np.clip(cap - usage[uniq], 0, cap)
        slot_start = np.concatenate([[0], np.cumsum(room)[:-1]])
        reps = room[g_local]
        r, kk = np.repeat(rows_i, reps), np.repeat(cols_k, reps)
        within = np.arange(len(r)) - np.repeat(np.cumsum(reps) - reps, reps)
        slot = slot_start[np.repeat(g_local, reps)] + within
        # later slots of a group cost a hair more: identical columns, one optimum
        w = cost[r, kk].astype(np.float64) + 1.0 + within * 1e-6
        total = int(room.sum())
        # per (cell, slot) only the cheapest candidate column (a group may come twice)
        order = np.lexsort((w, slot, r))
        key = r[order] * total + slot[order]
        first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, bool)
        key, kk, w = key[first], kk[order][first], w[order][first]
        r, slot = key // max(total, 1), key % max(total, 1)
        fallback = np.arange(n)
        graph = csr_matrix((np.r_[w, np.full(n, _UNMATCHED)],
                            (np.r_[r, fallback], np.r_[slot, total + fallback])),
                           shape=(n, total + n))
        match = min_weight_full_bipartite_matching(graph)[1]
        out = np.full(n, -1, np.int64)
        real = match < total
        at = np.searchsorted(key, np.flatnonzero(real) * total + match[real])
        out[real] = kk[at]
        return out
