"""Where a cell's pixels come from: the index's tile bank, or the tile's source photo.

* :class:`TileBank`: the index's tiles (memory-mapped) plus tiles made for photos that
  are not in the index (a ``--target`` image), under the ids that follow the bank's.
* :func:`source_paths`: each tile's source photo, from the index manifest
  (``sources.paths``, relative to ``corpus``); :class:`~pipeline.errors.TileIndexError`
  for an index that did not record them.
* :class:`Originals`: source photos decoded on demand, once per tile at the largest size
  the video will show it (JPEGs at a DCT reduction, centre-cropped to the tile's aspect
  exactly as the index cropped the tile), then resized to what a frame needs. Both are
  kept in least-recently-used caches bounded in bytes. A photo that has moved, vanished
  or no longer decodes is counted in :attr:`Originals.missing`; the caller draws the bank
  tile instead.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from pipeline.corpus import centre_crop, decode_covering
from pipeline.errors import TileIndexError
from pipeline.index import MANIFEST, TileIndex

log = logging.getLogger(__name__)

DECODE_THREADS = 4  # photos decoded at once (OpenCV releases the GIL while decoding)


class TileBank:
    """Tiles by id: the index's bank ``(N, h, w, 3)`` uint8 BGR, then ``extra`` tiles
    ``(E, h, w, 3)`` under ids ``N .. N + E - 1``."""

    def __init__(self, bank: np.ndarray, extra: np.ndarray | None = None) -> None:
        self.bank = bank
        self.n = len(bank)
        self.extra = extra if extra is not None else np.zeros((0, *bank.shape[1:]), np.uint8)

    @property
    def tile_hw(self) -> tuple[int, int]:
        """Tile height and width in pixels."""
        return int(self.bank.shape[1]), int(self.bank.shape[2])

    def take(self, ids: np.ndarray) -> np.ndarray:
        """The tiles of ``ids`` (n,) int: a new (n, h, w, 3) uint8 array."""
        ids = np.asarray(ids, np.int64)
        if not len(self.extra) or (ids < self.n).all():
            return np.ascontiguousarray(self.bank[ids])
        out = np.empty((len(ids), *self.bank.shape[1:]), np.uint8)
        inside = ids < self.n
        out[inside] = self.bank[ids[inside]]
        out[~inside] = self.extra[ids[~inside] - self.n]
        return out


def source_paths(index: TileIndex) -> list[str]:
    """The source photo of every tile of ``index``, (N,) absolute paths.

    Raises :class:`TileIndexError` when the manifest records no source paths.
    """
    sources = index.manifest.get("sources") or {}
    paths, root = sources.get("paths"), index.manifest.get("corpus")
    n = len(index.tiles)
    if not isinstance(root, str) or not root or not isinstance(paths, list) or \
            len(paths) != n or not all(isinstance(q, str) and q for q in paths):
        raise TileIndexError(f"{index.path / MANIFEST}: the index records no source photo "
                             f"paths for its {n} tiles (made by an older version or "
                             "edited); rebuild it with `mosaic index --corpus DIR`")
    return [os.path.join(root, p) for p in paths]


class _Lru:
    """A least-recently-used map of arrays, bounded by their total bytes."""

    def __init__(self, budget: int) -> None:
        self.budget, self.bytes = budget, 0
        self.items: OrderedDict[object, np.ndarray] = OrderedDict()

    def get(self, key: object) -> np.ndarray | None:
        item = self.items.get(key)
        if item is not None:
            self.items.move_to_end(key)
        return item

    def put(self, key: object, value: np.ndarray) -> None:
        old = self.items.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self.items[key] = value
        self.bytes += value.nbytes
        while self.bytes > self.budget and len(self.items) > 1:
            _, dropped = self.items.popitem(last=False)
            self.bytes -= dropped.nbytes


class Originals:
    """Source photos of tiles, decoded once at the size needed and cached.

    Parameters
    ----------
    paths : source photo per tile id (None: none known).
    tile_hw : the tiles' (height, width): photos are centre-cropped to this aspect.
    budget : bytes kept of decoded photos (and as much again of resized ones).
    """

    def __init__(self, paths: list[str | None], tile_hw: tuple[int, int], budget: int) -> None:
        self.paths, self.tile_hw = paths, tile_hw
        self._masters = _Lru(budget)  # id -> (h, w, 3) crop at its largest needed size
        self._sized = _Lru(budget)  # (id, h, w) -> (h, w, 3)
        self._native: set[int] = set()  # ids whose master is the photo's full crop
        self.missing: set[int] = set()
        self.decoded = 0

    def fetch(self, ids: np.ndarray, hw: tuple[int, int], peak: np.ndarray
              ) -> list[np.ndarray | None]:
        """The photos of ``ids`` (n,) resized to ``hw`` (height, width), uint8 BGR, or
        None for a photo that is missing; ``peak`` (n, 2) int: the largest (height,
        width) each will be asked for (the size it is decoded at, at most its own)."""
        todo = [(int(i), tuple(int(v) for v in p)) for i, p in zip(ids, peak, strict=True)
                if int(i) not in self.missing and not self._has(int(i), hw)]
        if todo:
            with ThreadPoolExecutor(DECODE_THREADS) as pool:
                for i, master in zip([t[0] for t in todo], pool.map(self._decode, todo),
                                     strict=True):
                    if master is None:
                        self.missing.add(i)
                    else:
                        self._masters.put(i, master)
        return [self._sized_of(int(i), hw) for i in ids]

    def _has(self, i: int, hw: tuple[int, int]) -> bool:
        """Whether the master of ``i`` is cached and big enough for ``hw``."""
        master = self._masters.get(i)
        return master is not None and (i in self._native or (
            master.shape[0] >= hw[0] and master.shape[1] >= hw[1]))

    def _decode(self, job: tuple[int, tuple[int, int]]) -> np.ndarray | None:
        """The photo of tile ``i`` cropped to the tile aspect, at most ``need`` in size."""
        i, need = job
        path = self.paths[i] if i < len(self.paths) else None
        if path is None:
            return None
        try:
            data = Path(path).read_bytes()
            img = decode_covering(data, os.path.splitext(path)[1].lower(), need)
        except (OSError, ValueError, cv2.error):
            return None
        crop = centre_crop(img, self.tile_hw)
        self.decoded += 1
        if crop.shape[0] > need[0] and crop.shape[1] > need[1]:
            return cv2.resize(crop, (need[1], need[0]), interpolation=cv2.INTER_AREA)
        self._native.add(i)
        return np.ascontiguousarray(crop)

    def _sized_of(self, i: int, hw: tuple[int, int]) -> np.ndarray | None:
        """The master of ``i`` resized to ``hw`` (area down, bicubic up), cached."""
        if i in self.missing:
            return None
        key = (i, *hw)
        out = self._sized.get(key)
        if out is None:
            master = self._masters.get(i)
            if master is None:  # evicted between decode and use: decode again
                master = self._decode((i, hw))
                if master is None:
                    self.missing.add(i)
                    return None
            if master.shape[:2] == hw:
                out = master
            else:
                down = master.shape[0] >= hw[0] and master.shape[1] >= hw[1]
                out = cv2.resize(master, (hw[1], hw[0]), interpolation=cv2.INTER_AREA
                                 if down else cv2.INTER_CUBIC)
            self._sized.put(key, out)
        return out
