"""``mosaic live --grow DIR``: the faces in front of the camera become tiles.

A thread looks at the newest live frame every :data:`INTERVAL` seconds with the
detector of ``mosaic faces`` (:func:`pipeline.faces.find_faces`: YuNet and the cascade's
second opinion). A face is new unless it continues a face seen in the last
:data:`TRACK_SECONDS` (near where it was: the same person moving) or its crop's
perceptual hash (:func:`pipeline.groups.perceptual_hashes`) is within
:data:`pipeline.groups.HAMMING` bits of a face already kept. A new face's crop (the
faces command's framing, 178x218) is written to DIR as ``live-<hash>.jpg`` and made into
a tile exactly as ``mosaic index`` will make it from that file; the tile joins the live
pool (:meth:`pipeline.live_engine.LiveEngine.grow`). Nothing in DIR is ever removed or
replaced, and ``mosaic index --corpus DIR`` indexes it later.

At start, the ``live-*.jpg`` already in DIR join the pool too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline import faces as fc
from pipeline.cache import atomic_output, owned_kind
from pipeline.corpus import crop_resize
from pipeline.errors import OutputError
from pipeline.groups import HAMMING, perceptual_hashes

log = logging.getLogger(__name__)

INTERVAL = 0.5  # seconds between looks for faces
TRACK_SECONDS = 2.0  # a face near one seen this recently is the same face, moving
PREFIX = "live-"
QUALITY = 95  # JPEG quality of the saved crops (as mosaic faces)


@dataclass
class GrownFace:
    """One face kept: its file in DIR, its hash, the source frame it was first seen in
    and when (``time.monotonic()``); the engine fills in its tile id and the frame it
    was first placed in."""

    file: str
    phash: int
    seen_frame: int
    seen_at: float
    tile_id: int | None = None
    placed_frame: int | None = None
    placed_at: float | None = None

    def to_json(self) -> dict:
        return {"file": self.file, "tile": self.tile_id, "seen_frame": self.seen_frame,
                "placed_frame": self.placed_frame,
                "placed_after": None if self.placed_at is None else
                round(self.placed_at - self.seen_at, 3)}


def check_grow_dir(folder: Path, index_dir: Path) -> Path:
    """Create DIR if needed; refuse a file, the index or a folder of another kind of
    this tool (one line)."""
    from pipeline.output import managed_place

    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: --grow needs a folder, and this is a file")
    if (place := managed_place(folder / "x")) is not None and owned_kind(folder) != "faces":
        raise OutputError(f"{folder}: is inside {place}; choose another --grow folder")
    if folder.resolve() == index_dir.resolve():
        raise OutputError(f"{folder}: is the tile index; choose another --grow folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create it ({exc.strerror or exc})") from None
    return folder


def _near(h: int, hashes: list[int]) -> bool:
    return any(bin(h ^ k).count("1") <= HAMMING for k in hashes)


class FaceGrower:
    """Finds new faces in offered frames (see the module doc) and hands each, as a tile
    (h, w, 3) uint8 BGR of ``tile_hw``, to ``on_face`` with its :class:`GrownFace`."""

    def __init__(self, folder: Path, tile_hw: tuple[int, int],
                 on_face: Callable[[np.ndarray, GrownFace], None],
                 opts: fc.FaceOptions | None = None) -> None:
        self.folder, self.tile_hw, self.on_face = Path(folder), tile_hw, on_face
        self.opts = opts or fc.FaceOptions()
        self.hashes: list[int] = []
        self.kept = 0
        self._tracks: list[tuple[float, float, float, float]] = []  # x, y, side, seen
        self._offer: tuple[np.ndarray, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-grow")

    def existing(self) -> list[tuple[np.ndarray, GrownFace]]:
        """The faces DIR already holds (``live-*.jpg``), as tiles; their hashes count
        as kept faces."""
        out = []
        for path in sorted(self.folder.glob(f"{PREFIX}*.jpg")):
            crop = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if crop is None:
                log.warning("%s: not a readable image; left out of the live pool", path)
                continue
            h = int(perceptual_hashes(crop[None])[0][0])
            self.hashes.append(h)
            out.append((crop_resize(crop, self.tile_hw), GrownFace(path.name, h, -1, 0.0)))
        return out

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def offer(self, image: np.ndarray, number: int) -> None:
        """The newest frame (H, W, 3) uint8 BGR and its source frame number (not copied:
        the caller hands over a frame it does not change)."""
        with self._lock:
            self._offer = (image, number)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            with self._lock:
                offer, self._offer = self._offer, None
            if offer is not None:
                try:
                    self.look(*offer)
                except OSError as exc:  # DIR unwritable, disk full: say so, go on
                    log.warning("--grow %s: %s; faces are not saved", self.folder, exc)

    def look(self, image: np.ndarray, number: int) -> int:
        """Find the faces of one frame and keep the new ones; how many were kept."""
        found, _ = fc.find_faces(image, self.opts)
        now, kept = time.monotonic(), 0
        self._tracks = [t for t in self._tracks if now - t[3] <= TRACK_SECONDS]
        for face in found:
            x, y, side, _ = face.box
            cx, cy = x + side / 2, y + side / 2
            near = [i for i, t in enumerate(self._tracks)
                    if abs(cx - t[0]) < t[2] and abs(cy - t[1]) < t[2]]
            for i in near:
                self._tracks[i] = (cx, cy, side, now)
            if near:
                continue
            self._tracks.append((cx, cy, side, now))
            crop = fc.cut(image, face, self.opts.size)
            h = int(perceptual_hashes(crop[None])[0][0])
            if _near(h, self.hashes):
                continue
            self.hashes.append(h)
            kept += self._keep(crop, h, number, now)
        return kept

    def _keep(self, crop: np.ndarray, h: int, number: int, now: float) -> int:
        """Write the crop to DIR (never over a file there) and hand its tile over."""
        path = self.folder / f"{PREFIX}{h:016x}.jpg"
        if path.exists():
            return 0
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        if not ok:
            return 0
        with atomic_output(path) as f:
            f.write(buf.tobytes())
        self.kept += 1
        log.info("--grow: a new face, %s", path)
        saved = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # the tile `mosaic index` would make
        self.on_face(crop_resize(saved, self.tile_hw), GrownFace(path.name, h, number, now))
        return 1
