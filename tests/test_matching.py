"""The reference's cluster mode on a tiny hand-checkable case."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.assign import rank_within_groups
from pipeline.compose import Canvas
from pipeline.features import colour_histogram
from pipeline.grid import make_grid
from pipeline.matching import ClusterMatcher
from pipeline.search import TileClusters


def solid(colour: tuple[int, int, int], n: int, size: int = 4) -> np.ndarray:
    tiles = np.zeros((n, size, size, 3), np.uint8)
    tiles[:] = colour
    return tiles


RED, BLUE = (0, 0, 255), (255, 0, 0)


def two_cluster_index() -> tuple[np.ndarray, TileClusters]:
    # tiles 0, 2, 4 red, 1, 3 blue; tile cluster 0 = red, 1 = blue
    bank = np.concatenate([solid(RED, 1), solid(BLUE, 1), solid(RED, 1), solid(BLUE, 1),
                           solid(RED, 1)])
    labels = np.array([0, 1, 0, 1, 0])
    centers = np.stack([colour_histogram(solid(RED, 1))[0], colour_histogram(solid(BLUE, 1))[0]])
    return bank, TileClusters.from_labels(centers, labels)


def test_tile_clusters_layout() -> None:
    _, tiles = two_cluster_index()
    assert tiles.members.tolist() == [0, 2, 4, 1, 3]
    assert tiles.offsets.tolist() == [0, 3] and tiles.sizes.tolist() == [3, 2]


def test_rank_within_groups() -> None:
    assert rank_within_groups(np.array([5, 1, 5, 5, 1])).tolist() == [0, 0, 1, 2, 1]


def test_cells_get_their_colour_cluster_in_turn() -> None:
    _, tiles = two_cluster_index()
    # seven cells: red, blue, red, red, blue, red, red
    colours = [RED, BLUE, RED, RED, BLUE, RED, RED]
    hists = colour_histogram(np.concatenate([solid(c, 1) for c in colours]))
    ids, flips = ClusterMatcher(tiles, n_clusters=2, seed=1).match(hists)
    # red cells cycle through 0, 2, 4, 0, ...; blue cells through 1, 3
    assert ids.tolist() == [0, 1, 2, 4, 3, 0, 2]
    assert flips.dtype == bool and flips.shape == (7,)
    again, flips2 = ClusterMatcher(tiles, n_clusters=2, seed=1).match(hists)
    assert again.tolist() == ids.tolist() and flips2.tolist() == flips.tolist()


def test_canvas_places_tiles_and_flips() -> None:
    bank = np.zeros((2, 2, 2, 3), np.uint8)
    bank[0, :, 0] = 10  # left column 10, right column 0
    bank[1] = 99
    grid = make_grid(2, 4, (2, 2), 1)  # 1 row x 2 cols
    canvas = Canvas(grid, bank)
    canvas.place(np.array([0, 1]), np.array([0, 0]), np.array([False, True]))
    assert canvas.image[:, :, 0].tolist() == [[10, 0, 0, 10], [10, 0, 0, 10]]
    canvas.place(np.array([1]), np.array([1]), np.array([False]))
    assert canvas.image[0, :, 0].tolist() == [10, 0, 99, 99]
    assert canvas.ids.tolist() == [[0, 1]]


def assigner_case(rows: int = 3, cols: int = 4):
    """A grid where every cell's candidates are tiles 7, 8, 9, 10, 11 (7 nearest)."""
    from pipeline.assign import TileAssigner

    features = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    assigner = TileAssigner(rows, cols, features, margin=0.9)
    n = rows * cols
    cells = np.arange(n)
    cand = np.tile(np.arange(7, 12), (n, 1))
    queries = np.full((n, 2), 7.0, np.float32)
    dist = ((features[cand] - queries[:, None]) ** 2).sum(-1)
    return assigner, cells, queries, cand, dist


def test_neighbour_rule_no_identical_8_neighbours() -> None:
    assigner, cells, queries, cand, dist = assigner_case()  # radius 1 by default
    ids = assigner.assign(cells, queries, cand, dist, np.full(12, -1), free=True)
    grid = ids.reshape(3, 4)
    assert not (grid[:, 1:] == grid[:, :-1]).any() and not (grid[1:] == grid[:-1]).any()
    assert not (grid[1:, 1:] == grid[:-1, :-1]).any() and not (grid[1:, :-1] == grid[:-1, 1:]).any()
    # 2x2 blocks of distinct tiles: the nearest four, 7 in every other row and column
    assert set(ids.tolist()) == {7, 8, 9, 10} and (ids == 7).sum() == 4


def test_hysteresis_keeps_a_good_enough_tile() -> None:
    assigner, cells, queries, cand, dist = assigner_case(1, 1)
    # current tile 8 is at distance 2 (squared); the best, 7, at 0 -> switch
    assert assigner.assign(cells, queries, cand, dist, np.array([8])).tolist() == [7]
    # best only slightly better than the current one: keep it
    close = dist.copy()
    close[0, 0] = 0.9 * 2.0  # above 0.9**2 * 2: not clearly better
    assert assigner.assign(cells, queries, cand, close, np.array([8])).tolist() == [8]
    close[0, 0] = 0.5 * 2.0  # clearly better
    assert assigner.assign(cells, queries, cand, close, np.array([8])).tolist() == [7]
    # at a scene cut (free) the current tile has no say
    assert assigner.assign(cells, queries, cand, dist * 0 + 1.9, np.array([8]),
                           free=True).tolist() == [7]


def test_usage_cap_spreads_tiles() -> None:
    from pipeline.assign import TileAssigner

    assigner, cells, queries, cand, dist = assigner_case()
    capped = TileAssigner(3, 4, assigner.features, max_uses=3)  # 5 tiles x 3 >= 12 cells
    ids = capped.assign(cells, queries, cand, dist, np.full(12, -1), free=True)
    assert np.bincount(ids).max() <= 3


def test_smallest_sorted_is_a_stable_partial_sort() -> None:
    from pipeline.search import smallest_sorted

    rng = np.random.default_rng(2)
    d = rng.integers(0, 20, (300, 50)).astype(np.float32)  # many ties
    for m in (1, 3, 8, 12, 60):
        want = np.argsort(d, axis=1, kind="stable")[:, :min(m, 50)]
        got = smallest_sorted(d, m)
        # the same values in the same order; the same columns where no tie straddles the
        # cut (a partition may keep any of the values tied at its edge)
        np.testing.assert_array_equal(np.take_along_axis(d, got, 1),
                                      np.take_along_axis(d, want, 1))
        if m <= 8:
            np.testing.assert_array_equal(got, want)


def test_unturn_is_the_grid_turned_back() -> None:
    """A cell's features turned back from orientation c are those of the cell's image seen
    in orientation c's inverse: each code, one code for all rows or a code per row, with
    the extra columns left in place."""
    from pipeline.search import Orientations
    from pipeline.visibility import orient

    g = 4
    rng = np.random.default_rng(0)
    grids = rng.random((24, g, g, 3)).astype(np.float32)  # (n, g, g, 3) sub-cell values
    extra = rng.random((24, 2)).astype(np.float32)
    queries = np.concatenate([grids.reshape(24, -1), extra], 1)
    turns = Orientations(tuple(range(8)), g)
    codes = np.arange(24) % 8
    per_row = turns.unturn(queries, codes)
    for c in range(8):
        one = turns.unturn(queries, c)
        # turning the result by c gives the cell back
        back = orient(one[:, :3 * g * g].reshape(24, g, g, 3), c).reshape(24, -1)
        np.testing.assert_array_equal(back, queries[:, :3 * g * g])
        np.testing.assert_array_equal(one[:, 3 * g * g:], extra)
        np.testing.assert_array_equal(per_row[codes == c], one[codes == c])
    assert turns.unturn(queries, 0) is queries


def _clusters(rng: np.random.Generator, n: int, k: int, dim: int):
    """Tile features with exact duplicates (ties) in ``k`` random clusters."""
    features = rng.integers(0, 6, (n, dim)).astype(np.float32)  # many equal distances
    labels = rng.integers(0, k, n)
    labels[:k] = np.arange(k)  # every cluster has members
    centers = np.stack([features[labels == c].mean(0) for c in range(k)])
    return features, TileClusters.from_labels(centers, labels)


def test_search_lists_is_the_exact_nearest_by_distance_then_id() -> None:
    from pipeline.search import search_lists

    rng = np.random.default_rng(7)
    features, tiles = _clusters(rng, 300, 9, 6)
    queries = rng.integers(0, 6, (50, 6)).astype(np.float32)
    probes = np.stack([rng.choice(9, 3, replace=False) for _ in queries])
    ids, dist = search_lists(queries, probes, tiles, features, 12)
    for q, p, got_i, got_d in zip(queries, probes, ids, dist, strict=True):
        pool = np.flatnonzero(np.isin(tiles_labels(tiles, len(features)), p))
        d = ((features[pool] - q) ** 2).sum(1)
        best = pool[np.lexsort((pool, d))][:12]
        assert got_i.tolist() == best.tolist()
        assert np.array_equal(got_d, ((features[best] - q) ** 2).sum(1))


def tiles_labels(tiles: TileClusters, n: int) -> np.ndarray:
    """Each tile's list (-1: in none)."""
    labels = np.full(n, -1)
    for c, (lo, size) in enumerate(zip(tiles.offsets, tiles.sizes, strict=True)):
        labels[tiles.members[lo:lo + size]] = c
    return labels


def test_search_lists_pads_with_none_where_the_lists_are_short() -> None:
    from pipeline.search import search_lists

    rng = np.random.default_rng(3)
    features, tiles = _clusters(rng, 20, 4, 4)
    ids, dist = search_lists(features[:2], np.array([[0], [1]]), tiles, features, 30)
    for row, c in zip(range(2), (0, 1), strict=True):
        size = int(tiles.sizes[c])
        assert (ids[row, :size] >= 0).all() and (ids[row, size:] == -1).all()
        assert np.isinf(dist[row, size:]).all() and np.isfinite(dist[row, :size]).all()


def test_the_compiled_scan_is_the_exact_nearest_by_distance_then_id() -> None:
    """Integer features: many exact ties (duplicates, equal distances), which the scan's
    window must keep and order by id, as the matrix products do; real-valued ones: the
    scan measures few of the pairs and still finds the exact nearest."""
    from pipeline.search import TileSearch

    rng = np.random.default_rng(11)
    for n, lists, dim, k, spread in ((300, 9, 6, 12, 6), (4000, 40, 48, 32, 0)):
        if spread:
            features, tiles = _clusters(rng, n, lists, dim)
            queries = rng.integers(0, spread, (60, dim)).astype(np.float32)
        else:  # clustered real values, as colour features are
            centres = rng.normal(0, 30, (lists, dim))
            labels = rng.integers(0, lists, n)
            labels[:lists] = np.arange(lists)
            features = (centres[labels] + rng.normal(0, 6, (n, dim))).astype(np.float32)
            tiles = TileClusters.from_labels(centres, labels)
            queries = (centres[rng.integers(0, lists, 60)]
                       + rng.normal(0, 8, (60, dim))).astype(np.float32)
        search = TileSearch(tiles, features, 64)
        probes = np.stack([rng.choice(lists, 4, replace=False) for _ in queries])
        ids, dist = search.block_search(queries, k, 4, probes, compiled=True)
        plain = search.block_search(queries, k, 4, probes, compiled=False)
        labels_of = tiles_labels(tiles, len(features))
        for q, p, got_i, got_d in zip(queries, probes, ids, dist, strict=True):
            pool = np.flatnonzero(np.isin(labels_of, p))
            d = ((features[pool] - q) ** 2).sum(1)
            best = pool[np.lexsort((pool, d))][:k]
            assert got_i.tolist() == best.tolist()
            np.testing.assert_allclose(got_d, ((features[best] - q) ** 2).sum(1), rtol=1e-5)
        np.testing.assert_array_equal(ids, plain[0])
        np.testing.assert_array_equal(dist, plain[1])  # re-measured alike: the same bits


def test_the_compiled_probe_choice_is_smallest_sorteds() -> None:
    from pipeline.probes import centroid_order, nearest_columns
    from pipeline.search import smallest_sorted

    def smallest_columns(d: np.ndarray, m: int, order: np.ndarray) -> np.ndarray:
        # d >= 0: nothing to add; its columns read in ``order`` (any gives the same)
        return nearest_columns(np.ascontiguousarray(d[:, order]), np.zeros(len(d), np.float32),
                               np.zeros(d.shape[1], np.float32), m, order)

    rng = np.random.default_rng(4)
    for shape, m in (((200, 30), 8), ((50, 5), 8), ((300, 500), 8), ((10, 1), 1),
                     ((100, 64), 3), ((40, 16), 8), ((40, 33), 8)):
        for d in (rng.integers(0, 7, shape).astype(np.float32),  # ties: the lower column
                  rng.random(shape, dtype=np.float32)):
            for order in (np.arange(shape[1]), rng.permutation(shape[1]),
                          centroid_order(rng.random((shape[1], 4), dtype=np.float32))):
                np.testing.assert_array_equal(
                    smallest_columns(d, m, order.astype(np.int64)), smallest_sorted(d, m))


def test_the_compiled_lists_of_nearest_centroid_are_top_clusters_by_l2s() -> None:
    """The distances to the centroids finished row by row as the probes are picked: the
    numpy search's lists, ties (repeated centroids, integer features) included."""
    from pipeline.scan import SortedLists
    from pipeline.search import TileClusters, top_clusters_by_l2

    rng = np.random.default_rng(5)
    for k, dim, m in ((500, 48, 8), (40, 27, 8), (6, 3, 8), (64, 48, 1)):
        centroids = rng.integers(0, 9, (k, dim)).astype(np.float32)
        centroids[1::7] = centroids[::7][:len(centroids[1::7])]  # equal distances
        features = rng.integers(0, 9, (3 * k, dim)).astype(np.float32)
        tiles = TileClusters.from_labels(np.zeros((k, 1)), np.repeat(np.arange(k), 3))
        lists = SortedLists.build(tiles, features, centroids)
        for queries in (rng.integers(0, 9, (300, dim)).astype(np.float32),
                        rng.random((300, dim), dtype=np.float32) * 50):
            np.testing.assert_array_equal(lists.nearest_lists(queries, m),
                                          top_clusters_by_l2(queries, centroids, m))


@pytest.mark.parametrize("dim", [3, 8, 27, 48, 51])
def test_the_compiled_scan_is_the_exact_nearest_with_numpys_bits(dim: int) -> None:
    """The scan's candidates are each query's k nearest members of its probed lists by
    the numpy search's exact distances (exact_distances' bits, eight tiles at a time in
    blocks of eight, padded lists included), ties (equal tiles) by id, -1 and inf last;
    the distances are those bits."""
    from pipeline.search import TileSearch, exact_distances

    rng = np.random.default_rng(dim)
    features, tiles = _clusters(rng, 403, 7, dim)  # lists of any length, many ties
    features *= np.float32(7.3)  # rounding at every step
    queries = rng.integers(0, 6, (300, dim)).astype(np.float32) * np.float32(7.1)
    probes = np.stack([rng.choice(7, 3, replace=False) for _ in queries])
    k = 180  # more than some probed lists hold: empty slots
    ids, dist = TileSearch(tiles, features, 64).block_search(queries, k, 3, probes,
                                                             compiled=True)
    for q, p, got_i, got_d in zip(queries, probes, ids, dist, strict=True):
        members = np.concatenate([tiles.members[tiles.offsets[c]:tiles.offsets[c]
                                                 + tiles.sizes[c]] for c in p])
        want_i, want_d = exact_distances(q[None], members[None], features)
        n = min(k, len(members))
        np.testing.assert_array_equal(got_i[:n], want_i[0][:n])
        assert got_d[:n].tobytes() == want_d[0][:n].tobytes()
        assert (got_i[n:] == -1).all() and np.isinf(got_d[n:]).all()


def test_eight_distances_at_once_are_numpys_sums() -> None:
    import numba

    from pipeline.distances import block_sq

    @numba.njit
    def measure(q, blocks, out):
        for b in range(blocks.shape[0]):
            block_sq(q, blocks, b, out[8 * b:8 * b + 8])

    rng = np.random.default_rng(2)
    for dim in (1, 7, 8, 9, 16, 48, 50):
        rows = rng.normal(0, 40, (64, dim)).astype(np.float32)
        q = rng.normal(0, 40, dim).astype(np.float32)
        out = np.empty(64, np.float32)
        measure(q, np.ascontiguousarray(rows.reshape(8, 8, dim).transpose(0, 2, 1)), out)
        assert out.tobytes() == ((q - rows) ** 2).sum(-1).tobytes(), dim


def test_the_compiled_scan_measures_only_what_can_matter() -> None:
    from pipeline.scan import SortedLists, scan_lists
    from pipeline.search import cluster_centroids

    rng = np.random.default_rng(5)
    centres = rng.normal(0, 30, (40, 48))
    labels = rng.integers(0, 40, 4000)
    features = (centres[labels] + rng.normal(0, 6, (4000, 48))).astype(np.float32)
    tiles = TileClusters.from_labels(centres, labels)
    lists = SortedLists.build(tiles, features, cluster_centroids(tiles, features))
    assert all(np.all(np.diff(lists.radial[lo:lo + n]) >= 0)
               for lo, n in zip(lists.offsets, lists.sizes, strict=True))
    queries = (centres[:20] + rng.normal(0, 8, (20, 48))).astype(np.float32)
    probes = np.stack([np.argsort(((centres - q) ** 2).sum(1))[:8] for q in queries])
    _, _, measured = scan_lists(queries, probes, lists.offsets, lists.sizes,
                                lists.first_block, lists.block_ids, lists.blocks,
                                lists.radial, lists.centroids, 16,
                                np.full(len(queries), np.inf, np.float32))
    assert measured < 0.8 * tiles.sizes[probes].sum()


def test_the_compiled_scan_pads_with_none_where_the_lists_are_short() -> None:
    from pipeline.search import TileSearch

    rng = np.random.default_rng(3)
    features, tiles = _clusters(rng, 20, 4, 4)
    ids, dist = TileSearch(tiles, features, 8).block_search(
        features[:2], 30, 1, np.array([[0], [1]]), compiled=True)
    for row, c in zip(range(2), (0, 1), strict=True):
        size = int(tiles.sizes[c])
        assert (ids[row, :size] >= 0).all() and (ids[row, size:] == -1).all()
        assert np.isinf(dist[row, size:]).all() and np.isfinite(dist[row, :size]).all()


@pytest.mark.parametrize("codes", [(0, 1), (0, 1, 2, 3)])
@pytest.mark.parametrize("ties", [True, False])
def test_each_orientation_bounded_by_those_before_merges_to_the_same(codes, ties) -> None:
    """The planner searches orientation after orientation, each bounded by the k-th
    distance of those before: the merge is the unbounded searches' to the bit, ties
    included (tiles of equal features), and on clustered tiles the bounded scan
    measures fewer tiles."""
    from pipeline.scan import scan_lists
    from pipeline.search import Orientations, TileSearch, top_clusters_by_l2

    rng = np.random.default_rng(11)
    if ties:
        features, tiles = _clusters(rng, 300, 8, 48)
        features[1::7] = features[::7][:len(features[1::7])]  # exact ties in distance
    else:
        centres = rng.normal(0, 30, (12, 48))
        labels = rng.integers(0, 12, 2000)
        features = (centres[labels] + rng.normal(0, 6, (2000, 48))).astype(np.float32)
        tiles = TileClusters.from_labels(centres, labels)
    search, turns = TileSearch(tiles, features, 64), Orientations(codes, 4)
    cells = (features[rng.choice(len(features), 40)] +
             rng.normal(0, 3, (40, 48))).astype(np.float32)
    plain, bounded, bound = [], [], None
    for code in codes:
        queries = turns.unturn(cells, code)
        plain.append(search.block_search(queries, 12, 3, compiled=True))
        bounded.append(search.block_search(queries, 12, 3, compiled=True, bound=bound))
        kth = bounded[-1][1][:, -1]
        bound = kth if bound is None else np.minimum(bound, kth)
    for a, b in zip(turns.merge(plain, 12), turns.merge(bounded, 12), strict=True):
        np.testing.assert_array_equal(a, b)
    if not ties:
        lists, queries = search.sorted, turns.unturn(cells, codes[-1])
        probes = top_clusters_by_l2(queries, search.centroids, 3)
        args = (np.ascontiguousarray(queries), probes, lists.offsets, lists.sizes,
                lists.first_block, lists.block_ids, lists.blocks, lists.radial,
                lists.centroids, 12)
        _, _, everything = scan_lists(*args, np.full(40, np.inf, np.float32))
        _, _, fewer = scan_lists(*args, bound)
        assert fewer < 0.9 * everything


def test_the_search_goes_on_by_matrix_products_where_numba_does_not_load(
        monkeypatch, caplog) -> None:
    import sys

    import pipeline.search as search

    monkeypatch.setattr(search, "_compiled", None)
    monkeypatch.setitem(sys.modules, "pipeline.scan", None)  # its import fails
    rng = np.random.default_rng(2)
    features, tiles = _clusters(rng, 200, 6, 6)
    tile_search = search.TileSearch(tiles, features, 16)
    queries = features[:10] + np.float32(0.5)
    with caplog.at_level("WARNING", logger="pipeline.search"):
        got = tile_search.block_search(queries, 8, 3)
    assert search._compiled is False
    assert "could not be loaded" in caplog.text
    want = search.search_lists(queries, search.top_clusters_by_l2(
        queries, tile_search.centroids, 3), tiles, features, 8)
    np.testing.assert_array_equal(got[0], want[0])


def test_orientations_merge_keeps_each_tile_once_in_its_best_orientation() -> None:
    from pipeline.search import Orientations

    turns = Orientations((0, 1), 2)
    ids_a, d_a = np.array([[5, 7, 9, -1]]), np.array([[1.0, 2.0, 4.0, np.inf]], np.float32)
    ids_b, d_b = np.array([[7, 3, 9, 5]]), np.array([[0.5, 4.0, 4.0, 6.0]], np.float32)
    ids, dist, codes = turns.merge([(ids_a, d_a), (ids_b, d_b)], 4)
    # 7 mirrored (0.5) beats 7 as is; 9 ties: the earlier code; 3 and 9 tie: id order
    assert ids.tolist() == [[7, 5, 3, 9]]
    assert dist.tolist() == [[0.5, 1.0, 4.0, 4.0]]
    assert codes.tolist() == [[1, 0, 1, 0]]
    ids, dist, _ = turns.merge([(ids_a[:, 3:], d_a[:, 3:]), (ids_a[:, 3:], d_a[:, 3:])], 1)
    assert ids.tolist() == [[-1]] and np.isinf(dist).all()


def _sorted_candidates(rng: np.random.Generator, n: int, c: int, tiles: int,
                       empty: float) -> tuple[np.ndarray, np.ndarray]:
    """One orientation's candidates as the search gives them: (n, c) distinct ids and
    distances with many ties, sorted by (distance, id), some empty (-1, inf) at the end."""
    ids = np.stack([rng.choice(tiles, c, replace=False) for _ in range(n)]).astype(np.int64)
    dist = rng.integers(0, 6, (n, c)).astype(np.float32)
    cut = rng.random((n, c)) < empty
    ids[cut], dist[cut] = -1, np.inf
    order = np.array([np.lexsort((ids[r], dist[r])) for r in range(n)])
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)


def test_the_compiled_merge_is_numpys_to_the_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ties in distance and between orientations, tiles in both, empty slots (their
    orientation codes too), k above and below what was found, 2 and 4 orientations."""
    import pipeline.search as search

    assert search.compiled_scan()
    rng = np.random.default_rng(7)
    for trial in range(150):
        m = 4 if trial % 3 == 0 else 2
        turns = search.Orientations((0, 1, 2, 3)[:m] if m == 4 else (0, 1), 4)
        n, c = int(rng.integers(1, 30)), int(rng.integers(1, 20))
        found = [_sorted_candidates(rng, n, c, int(rng.integers(20, 60)), rng.random() * 0.6)
                 for _ in range(m)]
        k = int(rng.integers(1, 40))
        monkeypatch.setattr(search, "_compiled", False)
        want = turns.merge(found, k)
        monkeypatch.setattr(search, "_compiled", True)
        got = turns.merge(found, k)
        for a, b in zip(want, got, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_canvas_turns_tiles_to_every_orientation_in_any_order() -> None:
    from pipeline.visibility import orient

    rng = np.random.default_rng(5)
    bank = rng.integers(0, 256, (6, 4, 4, 3), np.uint8)
    grid = make_grid(4, 36, (4, 4), 1)  # 1 row x 9 cols
    ids = rng.integers(0, 6, 9)
    codes = np.array([3, 0, 1, 7, 1, 2, 5, 0, 6], np.uint8)  # unsorted, repeated
    canvas = Canvas(grid, bank, track=2)
    change = canvas.place(np.arange(9)[::-1], ids, codes, measure=True)
    for cell, (tile, code) in enumerate(zip(ids, codes, strict=True)):
        want = orient(bank[tile:tile + 1], int(code))[0]
        assert np.array_equal(canvas.image[:, (8 - cell) * 4:(9 - cell) * 4], want)
        assert change[cell] == np.float32(bank[tile].mean())  # from a black canvas
    assert canvas.orients[0, ::-1].tolist() == codes.tolist()


@pytest.mark.parametrize(("recolour", "weight", "grid"), [(0.9, 0.0, 4), (0.5, 0.3, 4),
                                                          (0.9, 0.0, 3), (1.0, 0.0, 2)])
def test_compiled_search_features_are_numpys_to_the_bit(recolour: float, weight: float,
                                                        grid: int) -> None:
    """The search features of real-looking cells (Lab sub-grid means of random tiles),
    in one compiled pass where numba is loaded, have numpy's bits: the recolouring, the
    chroma weight, the mean colour appended."""
    import numba  # noqa: F401  (loaded, as in a render worker)

    import pipeline.features as features
    from pipeline.features import lab_grid_means
    from pipeline.matching import search_features

    tiles = np.random.default_rng(7).integers(0, 256, (300, 16, 16, 3), np.uint8)
    lab = lab_grid_means(tiles, grid)
    got = search_features(lab, weight, recolour)
    assert features._kernels("recolour") is not None  # (checked on the first call)
    features._compiled["recolour"] = None
    try:
        assert got.tobytes() == search_features(lab, weight, recolour).tobytes()
    finally:
        features._compiled.pop("recolour", None)


def test_a_search_features_kernel_with_other_bits_is_not_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel whose rows are not numpy's (a numpy summing the sub-cells in another
    order) fails the check: numpy's path runs, with numpy's bits."""
    import sys
    import types

    import pipeline.features as features
    from pipeline.matching import recolour_aware, search_features

    def wrong(lab, keep, chroma, out, mean):
        mean[:] = lab.reshape(len(lab), -1, 3).mean(1) * np.float32(1.0000001)
        out[:] = recolour_aware(lab, 1 - float(keep), mean)

    fake = types.ModuleType("pipeline.features_compiled")
    fake.recoloured_rows = wrong
    monkeypatch.setitem(sys.modules, "numba", sys.modules.get("numba", types.ModuleType("numba")))
    monkeypatch.setitem(sys.modules, "pipeline.features_compiled", fake)
    monkeypatch.setattr(sys.modules["pipeline"], "features_compiled", fake, raising=False)
    monkeypatch.setattr(features, "_compiled", {})
    lab = (np.random.default_rng(8).standard_normal((50, 48)) * 30).astype(np.float32)
    got = search_features(lab, 0.0, 0.9)
    assert features._kernels("recolour") is None
    mean = lab.reshape(50, -1, 3).mean(1)
    assert got.tobytes() == recolour_aware(lab, 0.9, mean).tobytes()
