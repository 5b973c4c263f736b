"""Faces in photos -> face tiles: detection, false-positive filter, CelebA-like framing.

The recipe of the reference material, with OpenCV's Haar cascades from the opencv wheel
(``cv2.data.haarcascades``):

1. frontal faces with ``haarcascade_frontalface_default.xml`` on the equalised grey
   image, no smaller than ``min_size`` pixels (smaller ones are not searched for);
2. a false-positive filter: a face is kept only if ``haarcascade_eye.xml`` finds at
   least one eye in the upper part of its box (eyes sit in the top 60% of a frontal
   face; textures the face cascade mistakes for one rarely have an eye);
3. the crop: the face box widened by ``margin`` on each side, grown to the tile's
   aspect (178x218 by default, CelebA's) around the face's centre, moved inside the
   picture (or shrunk, keeping the aspect, where the picture is too small), resized.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"
EYE_ZONE = 0.6  # share of the face box, from the top, searched for eyes


@dataclass(frozen=True)
class FaceOptions:
    """Options of ``mosaic faces``.

    size : crop size (width, height) in pixels (CelebA's 178x218 by default).
    min_size : smallest face box side kept, in source pixels.
    margin : share of the face box's width added on each side before the aspect fit.
    eyes : drop detections without an eye (the false-positive filter).
    quality : JPEG quality of the crops.
    """

    size: tuple[int, int] = (178, 218)
    min_size: int = 48
    margin: float = 0.4
    eyes: bool = True
    quality: int = 95


@dataclass(frozen=True)
class Face:
    """One detection: the face box and the crop box, both (x, y, w, h) in source pixels."""

    box: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]


@cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's {name} is missing from the opencv wheel")
    return cascade


def grey(image_bgr: np.ndarray) -> np.ndarray:
    """The equalised grey image the cascades look at, (H, W) uint8."""
    return cv2.equalizeHist(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))


def detect(gray: np.ndarray, min_size: int) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h) at least ``min_size`` pixels, largest first."""
    found = _cascade(FACE_CASCADE).detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                    minSize=(min_size, min_size))
    boxes = [tuple(int(v) for v in b) for b in found]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def has_eye(gray: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether the eye cascade finds an eye in the upper part of face ``box``."""
    x, y, w, h = box
    zone = gray[y:y + max(1, int(h * EYE_ZONE)), x:x + w]
    side = max(6, w // 10)
    eyes = _cascade(EYE_CASCADE).detectMultiScale(zone, scaleFactor=1.1, minNeighbors=3,
                                                  minSize=(side, side))
    return len(eyes) > 0


def crop_box(box: tuple[int, int, int, int], image_hw: tuple[int, int],
             size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The crop (x, y, w, h) around face ``box`` with the aspect of ``size`` (w, h).

    The face plus ``margin`` times its width on each side, grown to the aspect around
    the face's centre, then moved inside the picture; where the picture is smaller than
    that, the crop shrinks (same aspect, same centre as far as possible).
    """
    x, y, w, h = box
    img_h, img_w = image_hw
    aspect = size[0] / size[1]
    cw = w * (1 + 2 * margin)
    ch = max(h * (1 + 2 * margin), cw / aspect)
    cw = ch * aspect
    scale = min(1.0, img_w / cw, img_h / ch)
    cw, ch = cw * scale, ch * scale
    cx, cy = x + w / 2, y + h / 2
    left = min(max(0.0, cx - cw / 2), img_w - cw)
    top = min(max(0.0, cy - ch / 2), img_h - ch)
    return round(left), round(top), max(1, round(cw)), max(1, round(ch))


def find_faces(image_bgr: np.ndarray, opts: FaceOptions) -> tuple[list[Face], dict[str, int]]:
    """Faces kept in one picture, largest first, and the counts: ``found`` (detections
    of at least ``min_size`` pixels: the cascade does not look for smaller faces, which
    also halves its work against looking from 24 pixels up) and ``no_eyes`` (dropped by
    the eye check)."""
    gray = grey(image_bgr)
    found = detect(gray, opts.min_size)
    faces, no_eyes = [], 0
    for box in found:
        if opts.eyes and not has_eye(gray, box):
            no_eyes += 1
        else:
            faces.append(Face(box, crop_box(box, gray.shape, opts.size, opts.margin)))
    return faces, {"found": len(found), "no_eyes": no_eyes}


def cut(image_bgr: np.ndarray, face: Face, size: tuple[int, int]) -> np.ndarray:
    """The face's crop resized to ``size`` (w, h): (h, w, 3) uint8 BGR."""
    x, y, w, h = face.crop
    region = image_bgr[y:y + h, x:x + w]
    interp = cv2.INTER_AREA if w >= size[0] else cv2.INTER_CUBIC
    return cv2.resize(region, size, interpolation=interp)
