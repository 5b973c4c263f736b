"""The variety rules' per-cell loops, compiled (numba): the sequential core of the choice.

:class:`pipeline.assign.TileAssigner` states the rules (hysteresis, repeat radius, cap,
unseen first) and prepares each frame's arrays; the two kernels here run them cell by
cell (:func:`keep_cells`, hysteresis; :func:`choose_in_passes`, the picks), where
:mod:`pipeline.rules_numpy` takes about thirty passes over every (cell, candidate) pair
a frame, and a third sums the current tiles' distances for the hysteresis
(:func:`own_distances`). A cell's radius test (the groups of its window of neighbours)
is run only for a candidate that would otherwise win, the one test that costs per
neighbour; a cell's candidates are read in order, by distance, only as far as they
can matter.

The arithmetic is numpy's, operation for operation, so the choices are the same bits:
a distance weighted for the unseen rule is ``float32(float64(d) * (1 + unseen * uses))``
(numpy promotes a float32 scalar times int32 uses to float64, then stores float32), the
penalties are float32 additions, a row's minimum is its first smallest entry, as
``argmin`` takes it, and a row of squares is summed as numpy sums a short row.
Compiled on first use and cached next to this file (``cache``); a process then pays
0.4-0.65 CPU-s once, to import numba and load the machine code, so
:mod:`pipeline.assign` starts every process on its numpy rules and comes here only once
the process has decided enough cells to pay that back (``COMPILE_AFTER``).

Arrays, for ``n`` cells and ``k`` candidates: ``cand_ids`` (n, k) int64 (-1: none),
``cand_d`` (n, k) float32 squared distances, ``groups`` (N,) int32 per tile, ``gpad`` the
padded group map (flat, int32, -1: no tile), ``at`` (n,) int64 each cell's place in it,
``window`` (w,) int64 the neighbours' offsets, ``usage`` (G,) int32 uses per group on the
canvas, ``caps`` (G,) int32.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.distances import row_sq
from pipeline.rules_numpy import CAP_PENALTY, RADIUS_PENALTY

_UNTESTED, _FREE, _BLOCKED = 0, 1, 2  # a candidate's radius test
_NONE = np.int32(-2)  # the group of "no candidate" (matches no neighbour, -1)
_INF = np.float32(np.inf)


@numba.njit(cache=True, nogil=True)
def _blocked(gpad, at, window, g):  # pragma: no cover - compiled
    """Whether group ``g`` is on a neighbour of the cell at ``at`` in ``gpad``."""
    for w in range(window.shape[0]):  # noqa: SIM110 - a loop, compiled (not a generator)
        if gpad[at + window[w]] == g:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _argmin(row):  # pragma: no cover - compiled
    """The first smallest entry's column, as numpy's ``argmin``."""
    best, col = row[0], 0
    for j in range(1, row.shape[0]):
        if row[j] < best:
            best, col = row[j], j
    return col


@numba.njit(cache=True, nogil=True)
def _weighted(d, uses, unseen):  # pragma: no cover - compiled
    """A distance with the unseen-first weighting, rounded as numpy rounds it."""
    return np.float32(np.float64(d) * (1.0 + unseen * np.float64(uses)))


@numba.njit(cache=True, nogil=True)
def own_distances(queries, features, cur, out):  # pragma: no cover - compiled
    """Squared distances ``out`` (n,) float32 from each cell's features ``queries``
    (n, D) float32, D under :data:`pipeline.rules_numpy.PAIRWISE_MAX`, to those of its
    tile ``cur`` (n,) int64 in ``features`` (N, D) (inf: no tile), rounded as numpy's
    ``((q - f) ** 2).sum(1)``: float32 squares, summed as numpy sums a short row (eight
    interleaved partial sums, then pairs of them, then the rest in order)."""
    for i in range(queries.shape[0]):
        t = cur[i]
        out[i] = _INF if t < 0 else row_sq(queries[i], features[t])


@numba.njit(cache=True, nogil=True)
def keep_cells(keep, at, cand_ids, cand_d, groups, own, limit, usage, caps, gpad, window,
               unseen, use_unseen, use_cap, radius):  # pragma: no cover - compiled
    """Hysteresis: clear ``keep`` (n,) bool for the cells with an alternative the rules
    allow under their ``limit`` (n,) float32 (set where the cell has a tile). ``own``
    (n,) int32: each cell's current group (-3: none). A row's candidates come by
    increasing distance (as :meth:`~pipeline.assign.TileAssigner.assign` takes them), so
    a cell's scan stops at the first one not under the limit, or at the first the rules
    allow."""
    for i in range(keep.shape[0]):
        if not keep[i]:
            continue
        lim = limit[i]
        for j in range(cand_ids.shape[1]):
            t = cand_ids[i, j]
            # an alternative costs at least its distance (the weighting only adds), and
            # the candidates come by increasing distance: none after this one is under
            if t < 0 or not cand_d[i, j] < lim:
                break
            g = groups[t]
            if g == own[i]:
                continue
            c = _weighted(cand_d[i, j], usage[g], unseen) if use_unseen else cand_d[i, j]
            if not c < lim or (use_cap and usage[g] >= caps[g]):
                continue
            # the radius last (the one test that costs per neighbour): the first
            # alternative that passes it decides
            if not radius or not _blocked(gpad, at[i], window, g):
                keep[i] = False
                break


@numba.njit(cache=True, nogil=True, inline='always')  # per cell: no call
def _lazy_argmin(row, base, state, gpad, at, window, g_row, j):  # pragma: no cover - compiled
    """``row``'s argmin (``j``, its argmin now) once every candidate that would win has
    passed the radius test; a blocked one costs its ``base`` (before the cap's penalty)
    plus :data:`RADIUS_PENALTY` (``state`` records the tests)."""
    while True:
        if state[j] != _UNTESTED:
            return j
        if _blocked(gpad, at, window, g_row[j]):
            state[j] = _BLOCKED
            row[j] = base[j] + RADIUS_PENALTY
            j = _argmin(row)
        else:
            state[j] = _FREE
            return j


@numba.njit(cache=True, nogil=True, inline='always')  # per cell: no call
def _costs(i, cost, base, g_row, state, at, cand_ids, cand_d, groups, gpad, usage, caps,
           window, rules, prefer):  # pragma: no cover - compiled
    """Cell ``i``'s candidate costs before its pick, into ``cost``, ``base``, ``g_row``
    and ``state`` (k,): the unseen weighting (``base``), the joint matching's column
    ``prefer[i]`` (-1: none) first where the radius allows it, the cap's penalty on
    groups already full (the radius's instead, if such a candidate wins and is blocked:
    :func:`_lazy_argmin`). Returns the row's argmin (its first smallest cost)."""
    unseen, use_unseen, use_cap, radius = rules
    q = prefer[i]
    least, first = _INF, 0
    for j in range(cand_ids.shape[1]):
        t = cand_ids[i, j]
        g = groups[t] if t >= 0 else _NONE
        c = cand_d[i, j] if t >= 0 else _INF
        if use_unseen:
            c = _weighted(c, usage[max(g, 0)], unseen)
        g_row[j], base[j], state[j] = g, c, _UNTESTED if radius else _FREE
        # a full group's candidate (with a preferred column: after its turn, below)
        if q < 0 and use_cap and g >= 0 and usage[g] >= caps[g] and c < CAP_PENALTY:
            c = c + CAP_PENALTY
        cost[j] = c
        if j == 0 or c < least:
            least, first = c, j
    if q < 0:
        return first
    if state[q] == _UNTESTED:
        state[q] = _BLOCKED if _blocked(gpad, at[i], window, g_row[q]) else _FREE
        if state[q] == _BLOCKED:
            cost[q] = cost[q] + RADIUS_PENALTY
    if cost[q] < CAP_PENALTY:
        cost[q] = np.float32(-1.0)
    if use_cap:
        for j in range(cand_ids.shape[1]):
            g = g_row[j]
            if g >= 0 and usage[g] >= caps[g] and cost[j] < CAP_PENALTY:
                cost[j] = cost[j] + CAP_PENALTY
    return _argmin(cost)


@numba.njit(cache=True, nogil=True)
def _cap_rounds(m, rows, cost, base, g_of, state, col, at, gpad, usage, caps, window, seen
                ):  # pragma: no cover - compiled
    """The cap within one pass: picks past their group's room (its uses on the canvas,
    then the pass's earlier picks of it, in order) take the cap's penalty and pick again,
    until none is over (or each has tried every candidate). ``seen`` (G,) int32 zeros."""
    over = np.zeros(m, np.bool_)
    for _ in range(cost.shape[1] - 1):
        any_over = False
        for r in range(m):
            g, o = g_of[r, col[r]], False
            if g >= 0:
                room = caps[g] - usage[g]
                o = room <= 0 or seen[g] >= room
                seen[g] += 1
            over[r] = o and cost[r, col[r]] < CAP_PENALTY
            any_over |= over[r]
        for r in range(m):
            seen[max(g_of[r, col[r]], 0)] = 0
        if not any_over:
            return
        for r in range(m):
            if over[r]:
                cost[r, col[r]] = cost[r, col[r]] + CAP_PENALTY
                col[r] = _lazy_argmin(cost[r], base[r], state[r], gpad, at[rows[r]], window,
                                      g_of[r], _argmin(cost[r]))


@numba.njit(cache=True, nogil=True)
def choose_in_passes(passes, n_passes, undecided, at, cand_ids, cand_d, groups, gpad,
                     usage, caps, window, rules, prefer, chosen, seen
                     ):  # pragma: no cover - compiled
    """Pick a tile for every ``undecided`` cell, pass by pass (``passes`` (n,) int64: a
    cell's pass; two cells of one pass are beyond the radius), into ``chosen`` (n,)
    int64; each pass's picks go on ``gpad`` and ``usage`` before the next pass.
    ``rules``: (unseen weight, unseen on, cap on, radius on)."""
    n, k = cand_ids.shape
    rows = np.empty(n, np.int64)
    cost, base = np.empty((n, k), np.float32), np.empty((n, k), np.float32)
    g_of, state = np.empty((n, k), np.int32), np.empty((n, k), np.int8)
    col = np.empty(n, np.int64)
    starts = np.zeros(n_passes + 1, np.int64)  # the undecided cells by pass, in order
    for i in range(n):
        if undecided[i]:
            starts[passes[i] + 1] += 1
    for p in range(n_passes):
        starts[p + 1] += starts[p]
    order, fill = np.empty(starts[n_passes], np.int64), starts[:n_passes].copy()
    for i in range(n):
        if undecided[i]:
            order[fill[passes[i]]] = i
            fill[passes[i]] += 1
    for p in range(n_passes):
        m = starts[p + 1] - starts[p]
        rows[:m] = order[starts[p]:starts[p + 1]]
        for r in range(m):
            j = _costs(rows[r], cost[r], base[r], g_of[r], state[r], at, cand_ids, cand_d,
                       groups, gpad, usage, caps, window, rules, prefer)
            col[r] = _lazy_argmin(cost[r], base[r], state[r], gpad, at[rows[r]], window,
                                  g_of[r], j)
        if rules[2]:
            _cap_rounds(m, rows, cost, base, g_of, state, col, at, gpad, usage, caps, window,
                        seen)
        for r in range(m):
            i = rows[r]
            t = cand_ids[i, col[r]]
            chosen[i] = t
            g = groups[t if t >= 0 else t + groups.shape[0]]  # numpy's wrap for "none"
            gpad[at[i]] = g
            usage[g] += 1


def warm() -> None:
    """Load the kernels' machine code now (from the cache; compiled on the first run
    after an install or a change): about 0.3 s once per process, which would otherwise
    fall on the first frame planned."""
    one, none = np.zeros(1, np.int64), np.full(1, -1, np.int64)
    ids, dist = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32)
    small = np.zeros(1, np.int32)
    rules = (0.0, False, False, False)
    own_distances(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32), one,
                  np.zeros(1, np.float32))
    keep_cells(np.zeros(1, bool), one, ids, dist, small, small, np.zeros(1, np.float32),
               small, small, small.copy(), one, *rules)
    choose_in_passes(one, 1, np.zeros(1, bool), one, ids, dist, small, small.copy(),
                     small.copy(), small, one, rules, none, none.copy(), small.copy())
