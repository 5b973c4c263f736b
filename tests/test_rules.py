"""The compiled variety rules (pipeline/rules.py) against the numpy rules they replaced.

``NumpyAssigner`` below is the vectorised choice the planner used until the rules were
compiled (each of a pass's steps one numpy operation over every (cell, candidate) pair):
kept here as the oracle. On random frames (tiles sharing groups, half-filled canvases,
quiet cells with their own margins, scene cuts for some cells, flat tiles, the joint
matching) and every combination of the rules, both must pick the same tiles.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.assign import _JOINT_MAX_CAP, TileAssigner, rank_within_groups

_RADIUS_PENALTY = np.float32(1e12)
_CAP_PENALTY = np.float32(1e9)


def in_window(cand_g: np.ndarray, window: np.ndarray) -> np.ndarray:
    out = np.zeros(cand_g.shape, bool)
    for j in range(window.shape[1]):
        out |= cand_g == window[:, j:j + 1]
    return out


class NumpyAssigner(TileAssigner):
    """The rules as numpy passes (the oracle); the set-up and the joint matching are
    the real assigner's."""

    def assign(self, cells, queries, cand_ids, cand_d, current, free=False, margin=None):
        cells = np.asarray(cells, np.int64)
        free = np.broadcast_to(np.asarray(free, bool), cells.shape)
        chosen = np.full(len(cells), -1, np.int64)
        undecided = np.ones(len(cells), bool)
        cur = current[cells]
        cand_g = np.where(cand_ids >= 0, self.groups[np.maximum(cand_ids, 0)], np.int32(-2))
        cost = np.where(cand_ids >= 0, cand_d, np.float32(np.inf)).astype(np.float32)
        if not free.all():
            keep = self._np_keep(cells, queries, cost, cand_g, current, margin) & ~free
            chosen[keep] = cur[keep]
            undecided &= ~keep
        now = current.copy()
        now[cells[undecided]] = -1
        gpad, usage = self._context(now)
        prefer = None
        joint = undecided & free
        if self.joint and 0 < self.cap <= _JOINT_MAX_CAP and joint.sum() > 1:
            prefer = np.full(len(cells), -1, np.int64)
            prefer[joint] = self._joint(cost[joint], cand_g[joint], usage)
        for p in range((self.radius + 1) ** 2):
            sel = np.flatnonzero(undecided & (self._pass[cells] == p))
            if len(sel):
                col = self._np_pick(cells[sel], cost[sel], cand_g[sel], gpad, usage,
                                    None if prefer is None else prefer[sel])
                picks = cand_ids[sel, col]
                chosen[sel] = picks
                gpad[self._pad_index[cells[sel]]] = self.groups[picks]
                np.add.at(usage, self.groups[picks], 1)
        return chosen

    def _np_keep(self, cells, queries, cost, cand_g, current, margin):
        cur = current[cells]
        has = cur >= 0
        cur_cost = np.full(len(cells), np.inf, np.float32)
        diff = queries[has] - self.features[cur[has]]
        cur_cost[has] = (diff * diff).sum(1)
        if not has.any():
            return has
        gpad, usage = self._context(current)
        own = np.where(has, self.groups[np.maximum(cur, 0)], -3)
        if self.unseen:
            cur_cost *= 1 + np.float32(self.unseen) * (usage[np.maximum(own, 0)] - 1)
        ratio = np.float32(self.margin) if margin is None else np.asarray(margin, np.float32)
        with np.errstate(invalid="ignore"):
            limit = ratio**2 * cur_cost
        keep = has.copy()
        rows = np.flatnonzero(has & (cost.min(1) < limit))
        if not len(rows):
            return keep
        cost, cand_g, own = cost[rows], cand_g[rows], own[rows]
        mine = cand_g == own[:, None]
        gc = np.maximum(cand_g, 0)
        others = usage[gc] - mine
        alt = cost
        if self.unseen:
            alt = np.multiply(cost, 1 + np.float32(self.unseen) * others,
                              out=np.empty_like(cost), casting="same_kind")
        better = (alt < limit[rows][:, None]) & ~mine
        if self.cap:
            better &= others < self.caps[gc]
        sub = np.flatnonzero(better.any(1))
        if self.radius and len(sub):
            window = gpad[self._pad_index[cells[rows[sub]]][:, None] + self._window[None, :]]
            better[sub] &= ~in_window(cand_g[sub], window)
        keep[rows[sub]] = ~better[sub].any(1)
        return keep

    def _np_pick(self, cells, cost, cand_g, gpad, usage, prefer):
        n, k = cost.shape
        cost = cost.copy()
        gc = np.maximum(cand_g, 0)
        uses = usage[gc]
        if self.unseen:
            cost *= 1 + np.float32(self.unseen) * uses
        if self.radius:
            window = gpad[self._pad_index[cells][:, None] + self._window[None, :]]
            np.add(cost, _RADIUS_PENALTY, out=cost, where=in_window(cand_g, window))
        rows = np.arange(n)
        if prefer is not None:
            ok = (prefer >= 0) & (cost[rows, np.maximum(prefer, 0)] < _CAP_PENALTY)
            cost[rows[ok], prefer[ok]] = -1.0
        if self.cap:
            full = (cand_g >= 0) & (uses >= self.caps[gc])
            np.add(cost, _CAP_PENALTY, out=cost, where=full & (cost < _CAP_PENALTY))
        col = cost.argmin(1)
        for _ in range(k - 1):
            if not self.cap:
                break
            g = cand_g[rows, col]
            room = self.caps[g] - usage[g]
            over = room <= 0
            sub = np.flatnonzero(~over & (g >= 0))
            over[sub] = rank_within_groups(g[sub]) >= room[sub]
            over &= cost[rows, col] < _CAP_PENALTY
            if not over.any():
                break
            redo = rows[over]
            cost[redo, col[redo]] += _CAP_PENALTY
            col[redo] = cost[redo].argmin(1)
        return col


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
            got = TileAssigner(rows, cols, features, **kw).assign(
                cells, queries, ids, dist, current, *args)
            want = NumpyAssigner(rows, cols, features, **kw).assign(
                cells, queries, ids, dist, current, *args)
            assert got.tolist() == want.tolist(), (frame, len(args))


def test_the_oracle_is_not_vacuous() -> None:
    """The comparison sees a difference: another margin picks other tiles."""
    rng = np.random.default_rng(7)
    features, groups, _flat, cells, queries, ids, dist, current = random_frame(
        rng, 9, 13, 240, 10)
    kw = dict(groups=groups, radius=1, use_cap=1.0, unseen=0.1)
    a = TileAssigner(9, 13, features, margin=0.9, **kw).assign(cells, queries, ids, dist,
                                                              current)
    b = NumpyAssigner(9, 13, features, margin=0.5, **kw).assign(cells, queries, ids, dist,
                                                               current)
    assert a.tolist() != b.tolist()
