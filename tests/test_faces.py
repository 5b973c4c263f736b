"""``mosaic faces``: face tiles from real photographs shipped in scikit-image.

``skimage.data.astronaut()`` (Eileen Collins' NASA portrait) has one frontal face;
``coffee()`` has none; ``retina()`` fools the face cascade three times, and the eye
check must drop all three.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_reliability import mosaic

from pipeline.faces import FaceOptions, cut, find_faces

data = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) ships "
                           "the photographs")


def bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., :3][..., ::-1])


def test_finds_the_astronauts_face_and_frames_it_like_celeba() -> None:
    image = bgr(data.astronaut())
    faces, counts = find_faces(image, FaceOptions())
    assert len(faces) == 1 and counts["no_eyes"] == 0, (faces, counts)
    x, y, w, h = faces[0].box
    # the face: around (177..270, 67..160) in the 512x512 portrait
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 170 and w >= 60
    cx, cy, cw, ch = faces[0].crop
    assert abs(cw / ch - 178 / 218) < 0.01  # CelebA's aspect
    assert cx <= x and cy <= y and cx + cw >= x + w and cy + ch >= y + h  # face inside
    assert cw >= 1.6 * w  # with a margin on each side
    assert cx >= 0 and cy >= 0 and cx + cw <= 512 and cy + ch <= 512
    tile = cut(image, faces[0], (178, 218))
    assert tile.shape == (218, 178, 3)
    other, _ = find_faces(image, FaceOptions(size=(64, 64), margin=0.2))
    assert abs(other[0].crop[2] - other[0].crop[3]) <= 1  # configurable aspect


def test_no_face_in_faceless_photos_and_false_positives_are_dropped() -> None:
    for name in ("coffee", "rocket", "chelsea"):
        faces, counts = find_faces(bgr(getattr(data, name)()), FaceOptions())
        assert faces == [] and counts["found"] == 0, name
    faces, counts = find_faces(bgr(data.retina()), FaceOptions())
    assert faces == [] and counts["no_eyes"] >= 1, counts  # the cascade's mistakes
    faces, counts = find_faces(bgr(data.retina()), FaceOptions(eyes=False))
    assert len(faces) >= 1  # ... which the eye check is what removes
    faces, counts = find_faces(bgr(data.astronaut()), FaceOptions(min_size=200))
    assert faces == [] and counts["found"] == 0  # the 93-px face is under the minimum


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo folder: the astronaut, a copy, a mirror, a brighter re-encode (same face
    content), coffee, retina and a corrupt file."""
    src = tmp_path_factory.mktemp("faces") / "photos"
    (src / "sub").mkdir(parents=True)
    astronaut = bgr(data.astronaut())
    cv2.imwrite(str(src / "astronaut.png"), astronaut)
    shutil.copy(src / "astronaut.png", src / "sub" / "copy of astronaut.png")
    cv2.imwrite(str(src / "mirror.jpg"), astronaut[:, ::-1])
    cv2.imwrite(str(src / "brighter.jpg"), cv2.convertScaleAbs(astronaut, beta=12))
    cv2.imwrite(str(src / "coffee.jpg"), bgr(data.coffee()))
    cv2.imwrite(str(src / "retina.jpg"), bgr(data.retina()))
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg" * 20)
    return src


def test_faces_command_builds_a_folder_that_indexes(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "face tiles"
    run = mosaic("faces", photos, "--out", out, "--jobs", "2")
    assert run.returncode == 0, run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["photos"] == 7 and c["bad"] == 1 and c["faces"] == 2, c
    assert c["duplicate_photos"] == 1 and c["duplicate_faces"] == 1, c
    assert c["no_eyes"] >= 1 and "without an eye" in run.stderr
    crops = sorted(out.glob("*.jpg"))
    assert [p.name for p in crops] == sorted(f["file"] for f in manifest["faces"])
    sources = {Path(f["source"]).name for f in manifest["faces"]}
    assert sources == {"astronaut.png", "mirror.jpg"}
    for face in manifest["faces"]:
        assert cv2.imread(str(out / face["file"])).shape == (218, 178, 3)
        assert len(face["box"]) == 4 and len(face["crop"]) == 4
    assert "corrupt.jpg\tnot a decodable image" in (out / "bad_files.tsv").read_text()

    again = mosaic("faces", photos, "--out", out)  # resumable: nothing is redone
    assert again.returncode == 0 and "0 to scan" in again.stderr, again.stderr
    assert json.loads((out / "manifest.json").read_text()) == manifest

    # a run killed after a crop was written but before its chunk's record: redone, same
    for record in (out / ".faces").glob("chunk-*.json"):
        record.unlink()
    crops[0].unlink()
    (out / "manifest.json").unlink()
    again = mosaic("faces", photos, "--out", out, "-q")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert sorted(out.glob("*.jpg")) == crops

    run = mosaic("index", "--corpus", out, "--index", tmp_path / "ix", "--clusters", "2")
    assert run.returncode == 0, run.stderr
    assert "2 files" in run.stderr and "0 skipped" in run.stderr, run.stderr


def test_faces_bad_input_is_one_line(photos: Path, tmp_path: Path) -> None:
    run = mosaic("faces", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert run.returncode == 1 and "does not exist" in run.stderr
    run = mosaic("faces", photos, "--out", photos / "tiles")
    assert run.returncode == 1 and "inside the source folder" in run.stderr
    run = mosaic("faces", photos, "--out", tmp_path / "o", "--size", "17x9")
    assert run.returncode == 1 and "--size" in run.stderr
