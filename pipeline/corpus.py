"""The image corpus: scanning a directory tree and decoding images into tiles.

``scan_corpus`` lists image files (jpg, jpeg, png, webp, bmp, tif, tiff in any letter
case, hidden files and directories skipped) with their size and mtime; directories it
cannot or will not enter (unreadable, or symbolic links, which may loop) are skipped and
reported with a reason by ``scan_corpus_report``.
``decode_files`` turns a batch of files into content digests, tiles and features; it is
the unit of work that the index stage hands to joblib worker processes.
"""

from __future__ import annotations

import errno
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.cache import digest_bytes
from pipeline.errors import CorpusError
from pipeline.features import colour_histogram, lab_grid_means
from pipeline.imagesize import MAX_IMAGE_BYTES, jpeg_size, pixel_problem

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
_JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}
ALPHA_BACKGROUND = 255  # transparent pixels are flattened onto white


@dataclass(frozen=True)
class FileEntry:
    """One candidate image: absolute path, size in bytes, modification time in ns."""

    path: str
    size: int
    mtime_ns: int


def scan_corpus(root: str | Path) -> list[FileEntry]:
    """List the image files under ``root`` recursively, sorted by path (see
    :func:`scan_corpus_report`, which also says which directories were skipped)."""
    return scan_corpus_report(root)[0]


def scan_corpus_report(root: str | Path) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """List the image files under ``root`` and the directories skipped, with reasons.

    Symbolic links to directories are not followed (a link can loop back to an ancestor
    or leave the corpus); unreadable directories are skipped. Symbolic links to files are
    followed. Raises :class:`CorpusError` only when ``root`` itself is missing, not a
    directory, or unreadable.

    Returns
    -------
    entries : the image files, sorted by path.
    skipped : ``(directory path, reason)`` pairs, sorted by path.
    """
    root = Path(root)
    if not root.exists():
        raise CorpusError(f"{root}: corpus directory does not exist")
    if not root.is_dir():
        raise CorpusError(f"{root}: corpus path is not a directory")
    found: list[FileEntry] = []
    skipped: list[tuple[str, str]] = []
    top = os.path.abspath(root)
    stack = [top]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            if current == top:
                raise CorpusError(f"{current}: cannot list directory: {exc.strerror}") from None
            skipped.append((current, f"directory skipped: cannot list it ({exc.strerror})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            is_dir = _is_dir(entry)
            if is_dir is None:
                skipped.append((entry.path, "skipped: symbolic link that loops"))
            elif is_dir:
                if entry.is_symlink():
                    skipped.append((entry.path, "directory skipped: symbolic link to a "
                                    "directory (not followed)"))
                else:
                    stack.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError:
                    st = None  # a dangling link: reported as unreadable at decode
                size, mtime = (st.st_size, st.st_mtime_ns) if st else (-1, 0)
                found.append(FileEntry(entry.path, size, mtime))
    found.sort(key=lambda e: e.path)
    skipped.sort()
    return found, skipped


def _is_dir(entry: os.DirEntry) -> bool | None:
    """Whether ``entry`` is a directory or a link to one; None for a link that loops."""
    if entry.is_symlink():
        try:
            return stat.S_ISDIR(os.stat(entry.path).st_mode)
        except OSError as exc:  # dangling (reported at decode if an image) or looping
            return None if exc.errno == errno.ELOOP else False
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def reduction_for(height: int, width: int, tile_hw: tuple[int, int]) -> int:
    """The largest JPEG DCT reduction (1, 2, 4, 8) whose centre crop still covers a tile."""
    th, tw = tile_hw
    for factor in (8, 4, 2):
        if min((height // factor) / th, (width // factor) / tw) >= 1.0:
            return factor
    return 1


def _to_bgr8(img: np.ndarray) -> np.ndarray:
    """Convert any decoded image (gray, gray+alpha, BGR, BGRA; 8/16-bit, float) to BGR uint8."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"unsupported sample type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha
        img = np.dstack([img[:, :, 0]] * 3 + [img[:, :, 1]])
        channels = 4
    if channels == 4:
        alpha = img[:, :, 3:4].astype(np.uint16)
        colour = img[:, :, :3].astype(np.uint16)
        flat = (colour * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127) // 255
        return flat.astype(np.uint8)
    if channels == 3:
        return img
    raise ValueError(f"unsupported channel count {channels}")


def decode_covering(data: bytes, suffix: str, hw: tuple[int, int]) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 (H, W, 3), at full size except for JPEGs,
    which are decoded at the largest DCT reduction (1/2, 1/4, 1/8) still covering ``hw``
    (height, width). Raises ValueError if undecodable."""
    buf = np.frombuffer(data, dtype=np.uint8)
    img = None
    if suffix in _JPEG_SUFFIXES and (size := jpeg_size(data)) is not None:
        factor = reduction_for(*size, hw)
        img = cv2.imdecode(buf, _REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR))
    if img is None:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError("not a decodable image")
    return _to_bgr8(img)


def decode_image(data: bytes, suffix: str, tile_hw: tuple[int, int]) -> np.ndarray:
    """Decode encoded image bytes into one tile.

    The image is decoded (at a reduced size for JPEG when a reduction still covers the
    tile, :func:`decode_covering`), centre-cropped to the tile's aspect ratio and resized
    with INTER_AREA.

    Returns
    -------
    ndarray of shape (h, w, 3), uint8, BGR. Raises ValueError if undecodable.
    """
    return crop_resize(decode_covering(data, suffix, tile_hw), tile_hw)


def centre_crop(img_bgr: np.ndarray, tile_hw: tuple[int, int]) -> np.ndarray:
    """The centre of ``img_bgr`` (H, W, 3) at the aspect ratio of ``tile_hw``: a view."""
    th, tw = tile_hw
    h, w = img_bgr.shape[:2]
    if h * tw > w * th:  # too tall
        ch, cw = max(1, round(w * th / tw)), w
    else:
        ch, cw = h, max(1, round(h * tw / th))
    top, left = (h - ch) // 2, (w - cw) // 2
    return img_bgr[top:top + ch, left:left + cw]


def crop_resize(img_bgr: np.ndarray, tile_hw: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``img_bgr`` (H, W, 3) to the tile aspect ratio and resize to ``tile_hw``."""
    th, tw = tile_hw
    crop = centre_crop(img_bgr, tile_hw)
    if crop.shape[:2] == (th, tw):
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (tw, th), interpolation=cv2.INTER_AREA)


@dataclass
class DecodedBatch:
    """The result of decoding a batch of files, row ``i`` for input file ``i``.

    Attributes
    ----------
    digests : ndarray (n,), '<U32' hex content digests ('' where unreadable).
    ok : ndarray (n,), bool, whether the file became a tile.
    reasons : ndarray (n,), str, why a file was skipped ('' when ok).
    tiles : ndarray (n, h, w, 3), uint8 BGR (zeros where not ok).
    hist : ndarray (n, bins**3), float32.
    lab : ndarray (n, grid*grid*3), float32.
    """

    digests: np.ndarray
    ok: np.ndarray
    reasons: np.ndarray
    tiles: np.ndarray
    hist: np.ndarray
    lab: np.ndarray


READ_THREADS = 8  # concurrent file reads per worker: keeps a cold disk's queue busy


def read_image_bytes(path: str) -> bytes | str:
    """An image file's bytes, or the reason it cannot be used: unreadable, not a regular
    file (a FIFO would block forever; it is opened without waiting for a writer), or over
    :data:`~pipeline.imagesize.MAX_IMAGE_BYTES`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file (a FIFO, device or socket)"
        if st.st_size > MAX_IMAGE_BYTES:
            return (f"{st.st_size / 2**30:.1f} GiB is over the limit of "
                    f"{MAX_IMAGE_BYTES / 2**30:.0f} GiB for an image file")
        try:
            return f.read()
        except OSError as exc:
            return f"cannot read: {exc.strerror or exc}"



def _decode_one(path: str, data: bytes | str, tile_hw: tuple[int, int]
                ) -> tuple[str, np.ndarray | None, str]:
    """Digest and decode one file's bytes; returns (digest, tile or None, reason)."""
    if isinstance(data, str):
        return "", None, data
    if not data:
        return "", None, "empty file (0 bytes)"
    digest = digest_bytes(data)
    if (problem := pixel_problem(data)) is not None:
        return digest, None, problem
    try:
        return digest, decode_image(data, os.path.splitext(path)[1].lower(), tile_hw), ""
    except (ValueError, cv2.error) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "not a decodable image"
        return digest, None, reason


def decode_files(paths: list[str], tile_hw: tuple[int, int], bins: int, grid: int) -> DecodedBatch:
    """Digest and decode ``paths`` into tiles and both features (see :class:`DecodedBatch`).

    Files are read a few at a time on threads (the reads overlap on a cold disk) and
    decoded in order. Unreadable or undecodable files do not raise; they come back with
    ``ok`` False and a reason.
    """
    n = len(paths)
    th, tw = tile_hw
    tiles = np.zeros((n, th, tw, 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    digests, reasons = [], []
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for start in range(0, n, READ_THREADS * 2):
            group = paths[start:start + READ_THREADS * 2]
            for i, (path, data) in enumerate(zip(group, pool.map(read_image_bytes, group),
                                                 strict=True), start):
                digest, tile, reason = _decode_one(path, data, tile_hw)
                digests.append(digest)
                reasons.append(reason)
                if tile is not None:
                    tiles[i] = tile
                    ok[i] = True
    hist = colour_histogram(tiles, bins)
    lab = lab_grid_means(tiles, grid)
    return DecodedBatch(np.array(digests, dtype="<U32"), ok, np.array(reasons, dtype=str),
                        tiles, hist, lab)


def decode_files_worker(paths: list[str], tile_hw: tuple[int, int], bins: int, grid: int
                        ) -> DecodedBatch:
    """:func:`decode_files` for a worker process: one OpenCV thread, as the worker pool
    already spreads files over the cores."""
    cv2.setNumThreads(1)
    return decode_files(paths, tile_hw, bins, grid)
