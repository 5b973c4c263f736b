"""The tile index: clustering tiles by colour, pruning small clusters, and loading it.

An index directory holds (names in :data:`ARTIFACTS`):

* ``tiles.npy``: the tile bank, (N, h, w, 3) uint8 BGR, memory-mapped when loaded;
* ``features_hist.npy`` (N, bins**3) and ``features_lab.npy`` (N, grid*grid*3), float32;
* ``clusters.npz``: ``centers`` (K_kept, bins**3) float32, ``labels`` (N,) int32 with
  the kept cluster of each tile or -1 when its cluster was pruned, ``populations``
  (K_kept,) int64, plus the unpruned ``all_centers`` and ``all_labels``;
* ``groups.npz``: ``phash`` (N,) uint64 perceptual hash and ``groups`` (N,) int64
  near-duplicate group of each tile (see :mod:`pipeline.groups`), and ``spread`` (N,)
  float32 luma spread of each tile (:func:`pipeline.visibility.luma_spread`: every render
  needs it, and measuring 200,000 tiles takes a worker 2-3 s);
* ``bad_files.tsv``: the corpus files that were skipped, and why;
* ``manifest.json``: written last; sources, digests, parameters, versions, counts, and
  each artifact's size and digests (:func:`pipeline.cache.record_artifact`);
* ``last_run.json``: what the latest run did and how long each step took;
* ``shards/``: the decode checkpoint (per-file records), reused by later runs;
* ``.lock``: the lock a run holds while it writes (see :func:`pipeline.locks.file_lock`).

Every load checks each artifact cheaply against its record (size, sampled digest, row
counts) and that every source path stays inside the corpus; ``mosaic verify`` compares
whole digests and recomputes the sources' digest from the manifest (:func:`verify_index`).

Reading the tile bank, and pinning the index a render planned with, are
:mod:`pipeline.bank`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cache import READ_ERRORS, artifact_problem, digest_text
from pipeline.errors import TileIndexError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TILES = "tiles.npy"
HIST = "features_hist.npy"
LAB = "features_lab.npy"
CLUSTERS = "clusters.npz"
GROUPS = "groups.npz"  # perceptual hashes and near-duplicate groups
BAD_FILES = "bad_files.tsv"
SHARDS_DIR = "shards"
LAST_RUN = "last_run.json"  # counts and step timings of the latest run (informational)
ARTIFACTS = (TILES, HIST, LAB, CLUSTERS, GROUPS, BAD_FILES, MANIFEST)
RECORDED = ARTIFACTS[:-1]  # the artifacts whose size and digests the manifest records
ARRAYS = (TILES, HIST, LAB)  # one row per tile each
LOCK = ".lock"


def fit_clusters(features: np.ndarray, clusters: int, seed: int, batch_size: int,
                 max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit MiniBatchKMeans over the whole set (many mini-batch steps, not one).

    Parameters
    ----------
    features : ndarray (N, D), float32.

    Returns
    -------
    centers : ndarray (clusters, D), float32.
    labels : ndarray (N,), int32.
    """
    if features.shape[0] < clusters:
        raise ValueError(f"{features.shape[0]} samples are fewer than {clusters} clusters")
    from sklearn.cluster import MiniBatchKMeans  # heavy: imported where it is used

    km = MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=1,
                         batch_size=min(batch_size, features.shape[0]), max_iter=max_iter)
    km.fit(features)
    return km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int32)


def prune_clusters(labels: np.ndarray, clusters: int, percentile: float) -> np.ndarray:
    """Decide which clusters survive: those whose population is not under the percentile.

    The percentile (0..100, numpy's linear interpolation, as the reference) is taken over
    the populations of the non-empty clusters. Empty clusters are always pruned.

    Parameters
    ----------
    labels : ndarray (N,), int, cluster of each tile in ``0..clusters-1``.

    Returns
    -------
    ndarray (clusters,), bool: True for kept clusters.
    """
    populations = np.bincount(labels, minlength=clusters)
    nonempty = populations[populations > 0]
    threshold = np.percentile(nonempty, percentile) if nonempty.size else 0
    return (populations > 0) & (populations >= threshold)


def relabel(labels: np.ndarray, keep: np.ndarray, centers: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renumber kept clusters 0..K_kept-1 in their original order; pruned tiles get -1.

    Returns
    -------
    kept_labels : ndarray (N,), int32.
    kept_centers : ndarray (K_kept, D), float32.
    populations : ndarray (K_kept,), int64.
    """
    mapping = np.full(keep.shape[0], -1, dtype=np.int32)
    mapping[keep] = np.arange(int(keep.sum()), dtype=np.int32)
    kept_labels = mapping[labels]
    populations = np.bincount(kept_labels[kept_labels >= 0], minlength=int(keep.sum()))
    return kept_labels, centers[keep], populations.astype(np.int64)


@dataclass
class TileIndex:
    """A loaded tile index. Arrays are memory-mapped where large.

    Attributes
    ----------
    path : the index directory.
    tiles : ndarray (N, h, w, 3), uint8 BGR, memory-mapped.
    hist : ndarray (N, bins**3), float32.
    lab : ndarray (N, grid*grid*3), float32.
    centers : ndarray (K, bins**3), float32, kept cluster centres.
    labels : ndarray (N,), int32, kept cluster per tile or -1 (pruned).
    populations : ndarray (K,), int64.
    manifest : the parsed manifest.
    groups : ndarray (N,), int64, near-duplicate group per tile (see :func:`load_groups`).
    spread : ndarray (N,), float32, luma spread per tile (:func:`load_spread`); None in an
        index built before it was recorded.
    """

    path: Path
    tiles: np.ndarray
    hist: np.ndarray
    lab: np.ndarray
    centers: np.ndarray
    labels: np.ndarray
    populations: np.ndarray
    manifest: dict
    groups: np.ndarray | None = None
    spread: np.ndarray | None = None

    @property
    def digest(self) -> str:
        """The index's content digest (changes whenever any artifact would)."""
        return str(self.manifest["index_digest"])

    def members(self, cluster: int) -> np.ndarray:
        """Tile ids of one kept cluster, ascending, shape (population,), int64."""
        return np.flatnonzero(self.labels == cluster)


def load_index(path: str | Path) -> TileIndex:
    """Open an index directory written by the index stage.

    Raises :class:`TileIndexError` when the directory or its manifest is missing (an
    unfinished build) or an artifact does not match the manifest.
    """
    path = Path(path)
    manifest = load_manifest(path)
    rebuild = _rebuild_hint(path, manifest)
    if manifest.get("format", 1) < 2:
        raise TileIndexError(f"{path}: made by an older version of this tool (no digests "
                             f"recorded); {rebuild}")
    problems = artifact_problems(path, manifest)
    if problems:
        name, problem = next(iter(problems.items()))
        raise TileIndexError(f"{path / name}: damaged tile index ({problem}); {rebuild}")
    try:
        tiles = np.load(path / TILES, mmap_mode="r", allow_pickle=False)
        hist = np.load(path / HIST, mmap_mode="r", allow_pickle=False)
        lab = np.load(path / LAB, mmap_mode="r", allow_pickle=False)
        with np.load(path / CLUSTERS, allow_pickle=False) as z:
            centers, labels, populations = z["centers"], z["labels"], z["populations"]
    except READ_ERRORS as exc:
        raise TileIndexError(f"{path}: cannot read tile index ({exc}); {rebuild}") from None
    n = int(manifest["counts"]["tiles"])
    if not (tiles.shape[0] == hist.shape[0] == lab.shape[0] == labels.shape[0] == n):
        raise TileIndexError(f"{path}: artifacts disagree with {MANIFEST} on the tile count; "
                             f"{rebuild}")
    return TileIndex(path, tiles, hist, lab, centers, labels, populations, manifest,
                     load_groups(path, tiles), load_spread(path, n))


def write_groups(path: str | Path) -> dict:
    """Hash the tile bank of index ``path``, group near-duplicates, measure each tile's
    luma spread, write :data:`GROUPS`."""
    from pipeline.cache import write_npz
    from pipeline.groups import group_summary, tile_groups
    from pipeline.visibility import bank_spread

    tiles = np.load(Path(path) / TILES, mmap_mode="r", allow_pickle=False)
    hashes, groups = tile_groups(tiles)
    write_npz(Path(path) / GROUPS, phash=hashes, groups=groups, spread=bank_spread(tiles))
    return group_summary(groups)


def load_spread(path: str | Path, count: int) -> np.ndarray | None:
    """Luma spread per tile, (count,) float32, from :data:`GROUPS`; None where it is not
    recorded there (an index built before it was: the render measures the bank)."""
    try:
        with np.load(Path(path) / GROUPS, allow_pickle=False) as z:
            spread = z["spread"] if "spread" in z.files else None
    except (OSError, ValueError):
        return None
    return spread.astype(np.float32) if spread is not None and len(spread) == count \
        else None


def load_groups(path: str | Path, tiles: np.ndarray) -> np.ndarray:
    """Near-duplicate group per tile, (N,) int64: from :data:`GROUPS`, or computed now
    (an index built before groups existed; nothing is written into it)."""
    try:
        with np.load(Path(path) / GROUPS, allow_pickle=False) as z:
            groups = z["groups"]
        if len(groups) == len(tiles):
            return groups.astype(np.int64)
    except (OSError, ValueError, KeyError):
        pass
    from pipeline.groups import tile_groups

    log.info("%s: no %s; grouping near-duplicate tiles now", path, GROUPS)
    return tile_groups(tiles)[1]


def _rebuild_hint(path: Path, manifest: dict) -> str:
    corpus = manifest.get("corpus", "CORPUS")
    return f"rerun `mosaic index --corpus {corpus} --index {path}` to repair it"


def npy_rows(path: Path) -> int | None:
    """The first dimension recorded in a ``.npy`` header, or None if unreadable."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape = read(f)[0]
    except READ_ERRORS:
        return None
    return int(shape[0]) if shape else None


def artifact_problems(path: str | Path, manifest: dict, full: bool = False) -> dict[str, str]:
    """``{artifact name: problem}`` for every recorded artifact of the index at ``path``
    that does not match the manifest (empty when all do).

    The cheap check (default) compares sizes, sampled digests and the row counts in the
    array headers with the manifest's tile count; ``full`` also compares whole digests.
    """
    path = Path(path)
    records = manifest.get("artifacts") if isinstance(manifest.get("artifacts"), dict) else {}
    problems = {}
    for name in RECORDED:
        if problem := artifact_problem(path / name, records.get(name), full):
            problems[name] = problem
    try:
        n = int(manifest["counts"]["tiles"])
        listed = len(manifest["sources"]["paths"])
    except (KeyError, TypeError, ValueError):
        return {**problems, MANIFEST: "no tile count or source list"}
    if listed != n:  # the manifest contradicts itself: blame it alone
        problems[MANIFEST] = f"lists {listed} sources but counts {n} tiles"
        return problems
    if problem := sources_problem(manifest, full):
        problems[MANIFEST] = problem
        return problems
    for name in ARRAYS:
        rows = npy_rows(path / name)
        if name not in problems and rows != n:
            problems[name] = f"holds {rows} rows but {MANIFEST} counts {n} tiles"
    return problems


def _plainly_inside(paths: list) -> bool:
    """Whether every one of ``paths`` is a string that is plainly relative and stays
    inside its folder: on POSIX, none starts with ``/`` or holds ``..`` (a cheap test
    on their join; False sends them to the exact test, path by path)."""
    if os.sep != "/" or not all(type(rel) is str for rel in paths):
        return False
    joined = "\n" + "\n".join(paths)
    return ".." not in joined and "\n/" not in joined


def sources_problem(manifest: dict, full: bool = False) -> str | None:
    """Why the manifest's corpus and source paths cannot be trusted, or None: a corpus
    that is not an absolute path, a source path that is absolute or leaves the corpus
    (``../..``); with ``full``, sources that no longer give the recorded sources digest
    and index digest (an edited manifest)."""
    corpus, sources = manifest.get("corpus"), manifest.get("sources") or {}
    if not isinstance(corpus, str) or not os.path.isabs(corpus):
        return f"corpus {corpus!r} is not an absolute path"
    paths, digests = sources.get("paths"), sources.get("digests")
    if not isinstance(paths, list) or not isinstance(digests, list) or \
            len(paths) != len(digests):
        return "no list of sources and their digests"
    if not _plainly_inside(paths):  # (the common case at once: 24 ms a 40k list)
        for rel in paths:
            if not isinstance(rel, str) or os.path.isabs(rel) or \
                    os.path.normpath(rel).split(os.sep, 1)[0] == os.pardir:
                return f"source path {rel!r} leaves the corpus {corpus}"
    if full:
        absolute = [os.path.join(corpus, rel) for rel in paths]
        sources_digest = digest_text(str(manifest.get("decode_key", "")), *absolute,
                                     *map(str, digests))
        params = manifest.get("params") if isinstance(manifest.get("params"), dict) else {}
        index_digest = digest_text(sources_digest, repr(sorted(params.items())))
        if (sources_digest, index_digest) != (manifest.get("sources_digest"),
                                              manifest.get("index_digest")):
            return "its corpus, sources or parameters do not give its recorded digests " \
                   "(edited?)"
    return None


def verify_index(path: str | Path) -> dict[str, str]:
    """Fully check an index: every artifact's whole digest, and every decode shard.

    Returns ``{file path: problem}`` (empty when all is well). Raises
    :class:`TileIndexError` when there is no readable manifest.
    """
    from pipeline.shards import RECORDS, _read_records

    path = Path(path)
    manifest = load_manifest(path)
    problems = {str(path / name): p for name, p in
                artifact_problems(path, manifest, full=True).items()}
    shard_dir = path / SHARDS_DIR / f"decode-{manifest.get('decode_key', '')}"
    records = _read_records(shard_dir)
    for shard in sorted(shard_dir.glob("shard-*.npz")):
        if shard.name not in records:
            problems[str(shard)] = f"not listed in {RECORDS}"
        elif problem := artifact_problem(shard, records[shard.name], full=True):
            problems[str(shard)] = problem
    return problems


def load_manifest(path: str | Path) -> dict:
    """Read an index directory's manifest; raises :class:`TileIndexError` if absent."""
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise TileIndexError(f"{path}: no finished tile index here (missing {MANIFEST}); "
                             "run `mosaic index` first") from None
    except (OSError, ValueError) as exc:
        raise TileIndexError(f"{manifest_path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise TileIndexError(f"{manifest_path}: unreadable manifest: not a JSON object")
    return manifest
