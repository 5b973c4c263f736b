"""Variety rules (issue 10): repeat radius, cap, unseen first, near-duplicate groups,
and the variety metrics on synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
from helpers import score_ids

from pipeline.assign import TileAssigner, uses_cap
from pipeline.grid import make_grid
from pipeline.groups import HAMMING, group_near_duplicates, perceptual_hashes, tile_groups
from pipeline.metrics import FrameScorer
from pipeline.repeats import id_repeats, pixel_repeats, shape_keys, textured


def uniform_case(rows: int, cols: int, n_tiles: int, **kw):
    """Every cell wants the same tiles: candidate j is tile j at distance j (squared)."""
    features = np.arange(n_tiles, dtype=np.float32)[:, None]
    assigner = TileAssigner(rows, cols, features, margin=0.9, **kw)
    n = rows * cols
    cand = np.tile(np.arange(n_tiles), (n, 1))
    dist = np.tile(np.arange(n_tiles, dtype=np.float32) ** 2, (n, 1))
    queries = np.zeros((n, 1), np.float32)
    return assigner, np.arange(n), queries, cand, dist


def max_repeat_distance_ok(grid: np.ndarray, labels: np.ndarray, r: int) -> bool:
    """No two cells within Chebyshev distance r share a label (brute force)."""
    rows, cols = grid.shape
    for y in range(rows):
        for x in range(cols):
            for yy in range(max(0, y - r), min(rows, y + r + 1)):
                for xx in range(max(0, x - r), min(cols, x + r + 1)):
                    if (yy, xx) != (y, x) and labels[grid[y, x]] == labels[grid[yy, xx]]:
                        return False
    return True


def test_radius_rule_within_a_frame() -> None:
    assigner, cells, q, cand, dist = uniform_case(7, 9, 40, radius=2)
    ids = assigner.assign(cells, q, cand, dist, np.full(63, -1), free=True)
    grid = ids.reshape(7, 9)
    assert max_repeat_distance_ok(grid, np.arange(40), 2)
    assert set(ids.tolist()) == set(range(9))  # the nearest 9 tiles tile the plane 3x3


def test_radius_rule_against_tiles_already_on_the_canvas() -> None:
    # a hand-made canvas: tile 0 at (2, 2), tile 1 at (0, 4); the rest keep tile 5 or 6
    assigner, _, _, _, _ = uniform_case(5, 5, 30, radius=2)
    current = np.where(np.arange(25) % 2, 5, 6).astype(np.int64)
    current[2 * 5 + 2], current[0 * 5 + 4] = 0, 1
    # decide cell (4, 4) only: tiles 0 (2 away) is forbidden; 1 (4 rows away) is not
    cells = np.array([4 * 5 + 4])
    cand = np.array([[0, 1, 2]])
    dist = np.array([[0.0, 1.0, 4.0]], np.float32)
    q = np.zeros((1, 1), np.float32)
    assert assigner.assign(cells, q, cand, dist, current, free=True).tolist() == [1]
    # cell (1, 3) sees both 0 (one away) and 1 (one away): it takes 2
    cells = np.array([1 * 5 + 3])
    assert assigner.assign(cells, q, cand, dist, current, free=True).tolist() == [2]
    # and cell (1, 3) with tile 0 kept by hysteresis stays (rules apply to placements)
    current[1 * 5 + 3] = 2
    kept = assigner.assign(cells, q, cand, np.array([[0.0, 1.0, 0.0]], np.float32), current)
    assert kept.tolist() == [2]


def test_radius_rule_by_near_duplicate_group() -> None:
    # tiles 0 and 1 are one group (e.g. crops of one photo); 2, 3, ... alone
    groups = np.array([0, 0, *list(range(1, 29))])
    assigner, cells, q, cand, dist = uniform_case(4, 4, 30, radius=1, groups=groups)
    ids = assigner.assign(cells, q, cand, dist, np.full(16, -1), free=True)
    assert max_repeat_distance_ok(ids.reshape(4, 4), groups, 1)
    assert 1 not in ids.tolist()  # its group's member 0 is nearer and takes its places


def test_cap_limits_uses_per_frame_and_scales_with_cells_per_tile() -> None:
    assert uses_cap(4800, 40000, 1.0) == 1 and uses_cap(4800, 1000, 1.0) == 5
    assert uses_cap(100, 10, 0.5) == 5
    # 8 x 8 cells, 32 tiles, cap ceil(64 / 32) = 2, no radius: nearest tiles used twice
    assigner, cells, q, cand, dist = uniform_case(8, 8, 32, radius=0, use_cap=1.0)
    assert assigner.cap == 2
    ids = assigner.assign(cells, q, cand, dist, np.full(64, -1), free=True)
    assert np.bincount(ids, minlength=32).tolist() == [2] * 32
    # the cap counts tiles already on the canvas: one cell to decide, 0..3 already twice
    current = np.repeat(np.arange(32), 2)
    current[63] = -1
    one = assigner.assign(np.array([63]), q[:1], cand[:1], dist[:1], current, free=True)
    assert one.tolist() == [31]  # 0..30 are at the cap, 31 is used once


def test_unseen_tiles_first() -> None:
    assigner, _, q, cand, dist = uniform_case(1, 10, 5, radius=0, unseen=10.0)
    current = np.array([0, 0, 0, -1, 1, 1, 2, 3, 3, 3])  # 4 is not on screen
    dist = np.array([[1.0, 1.2, 1.3, 1.4, 1.5]], np.float32)
    pick = assigner.assign(np.array([3]), q[:1], cand[:1], dist, current, free=True)
    assert pick.tolist() == [4]


def test_joint_assignment_beats_greedy_order() -> None:
    # two cells, two tiles, cap 1: cell 0 is a bit closer to A, cell 1 much closer to A
    features = np.zeros((2, 1), np.float32)
    cand = np.array([[0, 1], [0, 1]])
    dist = np.array([[1.0, 2.0], [0.0, 10.0]], np.float32)
    q = np.zeros((2, 1), np.float32)
    for joint, expected in ((False, [0, 1]), (True, [1, 0])):
        a = TileAssigner(1, 2, features, radius=0, max_uses=1, joint=joint)
        assert a.assign(np.arange(2), q, cand, dist, np.full(2, -1), free=True).tolist() == \
            expected


def test_static_canvas_is_left_alone() -> None:
    """Hysteresis first: cells with a good tile keep it whatever the variety rules say."""
    assigner, cells, q, cand, dist = uniform_case(4, 4, 30, radius=2, use_cap=1.0, unseen=1)
    first = assigner.assign(cells, q, cand, dist, np.full(16, -1), free=True)
    again = assigner.assign(cells, q, cand, dist, first)
    np.testing.assert_array_equal(first, again)


def textured_tile(seed: int, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 216, (size, size, 3), dtype=np.uint8)


def test_near_duplicates_share_a_group() -> None:
    base = np.stack([textured_tile(i, 32) for i in range(6)])
    noisy = np.clip(base[0].astype(int) + np.random.default_rng(9).integers(-3, 4, base[0].shape),
                    0, 255).astype(np.uint8)
    brighter = np.clip(base[1].astype(int) + 20, 0, 255).astype(np.uint8)
    flat = np.full((2, 32, 32, 3), 100, np.uint8)
    flat[1] += 1
    tiles = np.concatenate([base, noisy[None], brighter[None], flat])
    hashes, groups = tile_groups(tiles)
    assert groups[6] == groups[0] and groups[7] == groups[1]  # noise, brightness: same
    assert len(set(groups[:6].tolist())) == 6  # different photos: different groups
    assert groups[8] != groups[9]  # flat tiles are never grouped
    h, flat_mask = perceptual_hashes(tiles)
    assert flat_mask.tolist() == [False] * 8 + [True, True]
    assert (h == hashes).all()
    # grouping is transitive: a~b, b~c -> one group
    step = (1 << HAMMING) - 1  # HAMMING bits set: just close enough
    chain = np.array([0, step, step | (step << HAMMING)], np.uint64)
    assert group_near_duplicates(chain, np.zeros(3, bool)).tolist() == [0, 0, 0]
    assert group_near_duplicates(chain[[0, 2]], np.zeros(2, bool)).tolist() == [0, 1]


def mosaic_of(tiles: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    size = tiles[0].shape[0]
    out = np.zeros((rows * size, cols * size, 3), np.uint8)
    for i, t in enumerate(tiles):
        y, x = divmod(i, cols)
        out[y * size:(y + 1) * size, x * size:(x + 1) * size] = t
    return out


def test_variety_metrics_known_answers() -> None:
    rows, cols, size = 4, 6, 16
    grid = make_grid(rows * size, cols * size, (size, size), 1)
    ids = np.arange(24).reshape(rows, cols)
    tiles = [textured_tile(i) for i in range(24)]
    # tile 3's copy at (1, 4): recoloured (+30 on every channel) and at distance 1
    ids[1, 4] = 3
    tiles[1 * cols + 4] = np.clip(tiles[3].astype(int) + 30, 0, 255).astype(np.uint8)
    # tile 0 again at (3, 5): far away (distance 5), not a repeat within 2
    ids[3, 5] = 0
    tiles[3 * cols + 5] = tiles[0][:, ::-1]  # mirrored, for good measure
    # a flat cell at (3, 0): left out of everything
    tiles[3 * cols + 0] = np.full((size, size, 3), 77, np.uint8)
    mosaic = mosaic_of(tiles, rows, cols)
    scorer = FrameScorer(grid, groups=np.arange(100))
    score_ids(scorer, mosaic, mosaic, ids)
    s = scorer.scores.summary()
    assert s["textured_share"] == 23 / 24
    assert s["repeats_r2_id"] == 2 / 23 and s["repeats_r2"] == 2 / 23  # the recoloured pair
    assert s["distinct_share"] == 21 / 23  # 23 textured cells show 21 tiles
    # from pixels alone (another tool's output): the same repeats
    scorer = FrameScorer(grid)
    scorer.update_pixels(mosaic, mosaic)
    p = scorer.scores.summary()
    assert p["repeats_r2"] == 2 / 23 and "repeats_r2_id" not in p
    assert p["distinct_share"] == 22 / 23  # the mirrored copy is far, and looks new


def test_group_repeats_and_radius_edges() -> None:
    tex = np.ones((3, 7), bool)
    labels = np.arange(21).reshape(3, 7)
    labels[0, 0] = labels[2, 2] = 100  # distance 2: a repeat
    labels[0, 6] = labels[0, 3] = 200  # distance 3: not
    hit = id_repeats(labels, tex)
    assert hit.sum() == 2 and hit[0, 0] and hit[2, 2]
    tex[2, 2] = False  # a flat partner does not count
    assert id_repeats(labels, tex).sum() == 0


def test_pixel_repeats_see_through_recolouring() -> None:
    grid = make_grid(16, 32, (16, 16), 1)
    t = textured_tile(1)
    pair = mosaic_of([t, np.clip(t.astype(int) - 25, 0, 255).astype(np.uint8)], 1, 2)
    from pipeline.metrics import sub_means

    keys = shape_keys(sub_means(pair, grid), grid)
    tex = textured(keys)
    assert tex.all() and pixel_repeats(keys, tex).all()
    other = mosaic_of([t, textured_tile(2)], 1, 2)
    keys = shape_keys(sub_means(other, grid), grid)
    assert not pixel_repeats(keys, textured(keys)).any()


def test_pixel_repeats_kept_up_to_date_equal_a_full_recount() -> None:
    """PixelRepeats, told which cells changed, gives exactly pixel_repeats' answer on
    every frame of a repetitive mosaic that changes a few cells at a time."""
    from pipeline.repeats import PixelRepeats, cell_keys

    rng = np.random.default_rng(3)
    rows, cols, sub = 9, 13, 4
    palette = rng.random((6, sub, sub, 3), dtype=np.float32)  # few tiles: many repeats
    palette[0] = 0.5  # and a flat one
    pick = rng.integers(0, 6, (rows, cols))
    cells = palette[pick] + rng.integers(-20, 21, (rows, cols, 1, 1, 3)) / 255  # recoloured
    cells = cells.astype(np.float32)
    kept = PixelRepeats(rows, cols)
    seen_few = 0
    for frame in range(25):
        changed = None
        if frame:
            # mostly a few cells (kept up to date), now and then many (a full recount)
            changed = rng.random((rows, cols)) < (0.05 if frame % 5 else 0.3)
            n = int(changed.sum())
            new = palette[rng.integers(0, 6, n)]
            cells[changed] = np.where(rng.random((n, 1, 1, 1)) < 0.5, new, new[:, :, ::-1])
        keys, tex, hit = kept.update(cells, changed)
        seen_few += changed is not None and 0 < changed.sum() <= 0.08 * changed.size
        full_keys = cell_keys(cells)
        assert np.array_equal(keys, full_keys)
        assert np.array_equal(tex, textured(full_keys))
        assert np.array_equal(hit, pixel_repeats(full_keys, textured(full_keys)))
    assert hit.any() and not hit.all() and seen_few >= 10


def test_scorer_told_the_changed_cells_scores_as_without() -> None:
    grid = make_grid(48, 64, (8, 8), 1)
    rng = np.random.default_rng(5)
    tiles = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    from pipeline.compose import Canvas

    canvas = Canvas(grid, tiles, track=4)
    canvas.place(np.arange(grid.cells), rng.integers(0, 12, grid.cells),
                 np.zeros(grid.cells, bool))
    a, b = FrameScorer(grid), FrameScorer(grid)
    for _ in range(12):
        source = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        n = 3 if a.scores.frames % 4 else 12  # a few cells (kept up to date) or many
        cells = rng.choice(grid.cells, n, replace=False)
        canvas.place(cells, rng.integers(0, 12, n), rng.random(n) < 0.5)
        changed = np.zeros(grid.cells, bool)
        changed[cells] = True
        change = np.zeros((grid.rows, grid.cols), np.float32)
        for scorer, told in ((a, changed.reshape(grid.rows, grid.cols)), (b, None)):
            scorer.update_ids(source, canvas.ids, canvas.orients, change, canvas.sub,
                              canvas.sub_lab, changed=told)
    assert a.scores.summary() == b.scores.summary()
