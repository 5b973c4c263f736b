"""The variety rules as numpy passes: what :class:`pipeline.assign.TileAssigner` runs
until a process has decided enough cells to load the compiled ones (:mod:`pipeline.rules`,
the same picks; ``tests/test_rules.py`` holds them to it).

Each step is one numpy operation over every (cell, candidate) pair of a pass. The two
entry points mirror the kernels': :func:`keep_cells` (hysteresis) and
:func:`choose_in_passes`. Arrays, for ``n`` cells and ``k`` candidates: ``cost`` (n, k)
float32 the candidates' squared distances (inf: none), ``cand_g`` (n, k) int32 their
groups (-2: none), ``cand_ids`` (n, k) int64, ``gpad`` the padded group map (flat,
int32, -1: no tile), ``at`` (n,) int64 each cell's place in it, ``window`` (w,) int64 the
neighbours' offsets, ``usage`` (G,) int32 uses per group on the canvas, ``caps`` (G,)
int32; ``rules``: (unseen weight, unseen on, cap on, radius on).
"""

from __future__ import annotations

import numpy as np

RADIUS_PENALTY = np.float32(1e12)  # a pick that breaks the radius: the last resort
CAP_PENALTY = np.float32(1e9)  # a pick over the cap: before breaking the radius
PAIRWISE_MAX = 128  # feature rows numpy sums in one unrolled pass (the compiled sums')


def rank_within_groups(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group: (n,) int64."""
    n = len(groups)
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    place = np.arange(n)
    first = np.ones(n, bool)  # where a run of one group starts (in sorted order)
    np.not_equal(sorted_groups[1:], sorted_groups[:-1], out=first[1:])
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = place - np.maximum.accumulate(np.where(first, place, 0))
    return ranks


def in_window(cand_g: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Which candidates' groups ``cand_g`` (n, k) are among their cell's neighbours'
    ``window`` (n, w): (n, k) bool."""
    out = np.zeros(cand_g.shape, bool)
    for j in range(window.shape[1]):
        out |= cand_g == window[:, j:j + 1]
    return out


def keep_cells(keep: np.ndarray, at: np.ndarray, cost: np.ndarray, cand_g: np.ndarray,
               own: np.ndarray, limit: np.ndarray, usage: np.ndarray, caps: np.ndarray,
               gpad: np.ndarray, window: np.ndarray, rules: tuple) -> None:
    """Hysteresis: clear ``keep`` (n,) bool for the cells with an alternative the rules
    allow under their ``limit`` (n,) float32 (set where the cell has a tile). ``own``
    (n,) int32: each cell's current group (-3: none)."""
    unseen, use_unseen, use_cap, radius = rules
    # an alternative costs at least its distance (the unseen weighting only adds), so
    # only cells with a candidate under their limit are tested against the rules
    rows = np.flatnonzero(keep & (cost.min(1) < limit))
    if not len(rows):
        return
    cost, cand_g, own = cost[rows], cand_g[rows], own[rows]
    mine = cand_g == own[:, None]  # its own tile is not an alternative
    gc = np.maximum(cand_g, 0)
    others = usage[gc] - mine
    alt = cost
    if use_unseen:  # in float32, as the choice weighs them
        alt = np.multiply(cost, 1 + np.float32(unseen) * others, out=np.empty_like(cost),
                          casting="same_kind")
    better = (alt < limit[rows][:, None]) & ~mine
    if use_cap:
        better &= others < caps[gc]
    sub = np.flatnonzero(better.any(1))  # the radius only where one is under the limit
    if radius and len(sub):
        near = gpad[at[rows[sub]][:, None] + window[None, :]]
        better[sub] &= ~in_window(cand_g[sub], near)
    keep[rows] = ~better.any(1)


def choose_in_passes(passes: np.ndarray, n_passes: int, undecided: np.ndarray,
                     at: np.ndarray, cand_ids: np.ndarray, cost: np.ndarray,
                     cand_g: np.ndarray, groups: np.ndarray, gpad: np.ndarray,
                     usage: np.ndarray, caps: np.ndarray, window: np.ndarray, rules: tuple,
                     prefer: np.ndarray | None, chosen: np.ndarray) -> None:
    """Pick a tile for every ``undecided`` cell, pass by pass (``passes`` (n,) int64),
    into ``chosen`` (n,) int64; each pass's picks go on ``gpad`` and ``usage`` before
    the next. ``prefer``: the joint matching's columns (-1: none), or None."""
    for p in range(n_passes):
        sel = np.flatnonzero(undecided & (passes == p))
        if len(sel):
            col = _pick(at[sel], cost[sel], cand_g[sel], gpad, usage, caps, window, rules,
                        None if prefer is None else prefer[sel])
            picks = cand_ids[sel, col]
            chosen[sel] = picks
            gpad[at[sel]] = groups[picks]
            np.add.at(usage, groups[picks], 1)


def _pick(at: np.ndarray, cost: np.ndarray, cand_g: np.ndarray, gpad: np.ndarray,
          usage: np.ndarray, caps: np.ndarray, window: np.ndarray, rules: tuple,
          prefer: np.ndarray | None) -> np.ndarray:
    """One pass: the column of each cell's pick, (n,) int64 (its cells are > radius
    apart)."""
    unseen, use_unseen, use_cap, radius = rules
    n, k = cost.shape
    cost = cost.copy()
    gc = np.maximum(cand_g, 0)
    uses = usage[gc]
    if use_unseen:
        cost *= 1 + np.float32(unseen) * uses
    if radius:
        near = gpad[at[:, None] + window[None, :]]
        np.add(cost, RADIUS_PENALTY, out=cost, where=in_window(cand_g, near))
    rows = np.arange(n)
    if prefer is not None:  # the joint matching's pick, where the rules allow it
        ok = (prefer >= 0) & (cost[rows, np.maximum(prefer, 0)] < CAP_PENALTY)
        cost[rows[ok], prefer[ok]] = -1.0
    if use_cap:  # groups already at the cap on the canvas: all at once
        full = (cand_g >= 0) & (uses >= caps[gc])
        np.add(cost, CAP_PENALTY, out=cost, where=full & (cost < CAP_PENALTY))
    col = cost.argmin(1)
    for _ in range(k - 1):
        if not use_cap:
            break
        over = _over(cand_g[rows, col], usage, caps) & (cost[rows, col] < CAP_PENALTY)
        if not over.any():
            break
        redo = rows[over]  # only the penalised cells' picks can move
        cost[redo, col[redo]] += CAP_PENALTY
        col[redo] = cost[redo].argmin(1)
    return col


def _over(g: np.ndarray, usage: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Which of a pass's picks, of groups ``g`` (n,) int in order, go over their group's
    cap: its uses on the canvas, then the earlier picks': (n,) bool."""
    room = caps[g] - usage[g]
    over = room <= 0
    pos = g >= 0
    crowded = np.ones(len(g), bool)  # more picks of the group than it has room for
    crowded[pos] = np.bincount(g[pos])[g[pos]] > room[pos]
    sub = np.flatnonzero(crowded & ~over)
    if len(sub):
        over[sub] = rank_within_groups(g[sub]) >= room[sub]
    return over
