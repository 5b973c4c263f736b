"""The tile bank of an index, as the render reads it: tiles read on demand
(:func:`read_tiles`), the whole bank mapped resident (:func:`map_tiles`), and the index a
render planned with pinned (:func:`pin_index`): its painters read the bank through
:func:`pinned_bank`, which refuses a bank rebuilt since (:class:`IndexChangedError`).
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import IndexChangedError
from pipeline.index import MANIFEST, TILES, TileIndex, load_groups, load_spread


def read_tiles(path: str | Path, ids: np.ndarray) -> np.ndarray:
    """Tiles ``ids`` (k,) int of the bank of index ``path``, read into memory: (k, h, w, 3)
    uint8, through a map that lives for this read only (the pages read do not stay
    resident)."""
    bank = np.load(Path(path) / TILES, mmap_mode="r", allow_pickle=False)
    tiles = np.asarray(bank[ids])
    del bank
    return tiles


@dataclass(frozen=True)
class IndexPin:
    """What a render pins of the index it planned with: its digest, and the identity
    (inode, size, modification time) of its manifest then."""

    digest: str
    manifest: tuple[int, int, int]


def pin_index(index: TileIndex) -> IndexPin:
    """Pin ``index`` as loaded (see :func:`check_pin`)."""
    st = os.stat(Path(index.path) / MANIFEST)
    return IndexPin(index.digest, (st.st_ino, st.st_size, st.st_mtime_ns))


def check_pin(path: str | Path, pin: IndexPin) -> None:
    """Raise :class:`IndexChangedError` unless the index at ``path`` is still the pinned
    one. A rebuild removes the manifest first and writes it last, so whatever was read
    of the index before a passing check belongs to the pinned index."""
    manifest_path = Path(path) / MANIFEST
    try:
        st = os.stat(manifest_path)
        same = (st.st_ino, st.st_size, st.st_mtime_ns) == pin.manifest
        digest = pin.digest if same else json.loads(manifest_path.read_text()).get(
            "index_digest")
    except (OSError, ValueError, AttributeError):
        digest = None
    if digest != pin.digest:
        raise IndexChangedError(f"{path}: the tile index changed while this render ran "
                                "(rebuilt by `mosaic index`?); nothing painted from the new "
                                "tiles was kept; rerun to render with the new index")


def pinned_bank(path: str | Path, pin: IndexPin | None, scores: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The tile bank (N, h, w, 3) uint8, memory-mapped, and (with ``scores``, what the
    scores need) the near-duplicate groups (N,) int64 and the recorded luma spread (N,)
    float32 (None in an index from before it) of the pinned index at ``path``;
    :class:`IndexChangedError` if it was rebuilt (no check without a ``pin``). All are
    opened before the check, so they are the pinned index's."""
    with open(Path(path) / TILES, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        bank = np.memmap(f, dtype=dtype, mode="r", offset=f.tell(), shape=shape)
    tile_groups = load_groups(path, bank) if scores else None
    spread = load_spread(path, len(bank)) if scores else None
    if pin is not None:
        check_pin(path, pin)
    return bank, tile_groups, spread


def map_tiles(path: str | Path) -> np.ndarray:
    """Map a tile bank into memory with every page resident from the start.

    ``MAP_POPULATE`` maps the whole file at once (milliseconds when it is in the page
    cache): the render's resident memory is then flat over a video, instead of creeping
    up as more tiles get touched, and no tile is ever read from disk mid-render.

    Returns
    -------
    ndarray (N, h, w, 3), uint8, read-only, backed by the file.
    """
    path = Path(path) / TILES if Path(path).is_dir() else Path(path)
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        offset = f.tell()
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapped = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
    return np.frombuffer(mapped, dtype=dtype, count=int(np.prod(shape)),
                         offset=offset).reshape(shape)
