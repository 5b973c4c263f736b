"""``mosaic live --grow DIR``: a face in the live frames is saved to DIR and joins the
tile pool, and a tile made from it is placed in the live mosaic within 5 s of the face's
first appearance. The source is a generated clip of scikit-image's astronaut moving
across a field, appearing after 1 s, played in real time.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from livekit import LiveProcess, StreamFrames, astronaut_clip

from pipeline.corpus import crop_resize
from pipeline.faces import FaceOptions

FPS, APPEAR = 25, 1.0  # the clip's rate, and when the face first shows (seconds)


def cell_error(jpeg: bytes, tile: np.ndarray) -> float:
    """The smallest mean absolute difference between ``tile`` (h, w, 3) uint8 BGR, as
    is or mirrored, and a cell of the mosaic frame ``jpeg``."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
    th, tw = tile.shape[:2]
    rows, cols = img.shape[0] // th, img.shape[1] // tw
    cells = img[:rows * th, :cols * tw].reshape(rows, th, cols, tw, 3).swapaxes(1, 2)
    return min(float(np.abs(cells - t.astype(np.int16)).mean((2, 3, 4)).min())
               for t in (tile, tile[:, ::-1]))


def test_faces_join_the_pool_and_show_within_5_s(tile_index: Path, tmp_path: Path
                                                 ) -> None:
    """Without the source blended over it nor recolouring, the face's tile is in the
    frames the page receives, pixel for pixel (but for the JPEG)."""
    clip = astronaut_clip(tmp_path / "astronaut.mp4", seconds=8.0, appear=APPEAR, fps=FPS)
    faces = tmp_path / "faces"
    with LiveProcess(clip, "--index", tile_index, "--grow", faces, "--set",
                     "render.alpha=0", "--set", "render.recolour=0") as live, \
            StreamFrames(live.port) as stream:
        stats = live.wait_for(lambda s: any(f["placed_frame"] is not None
                                            for f in s["grown"]), timeout=60,
                              what="a grown face placed")
        time.sleep(1)
        code, _, err = live.stop()
    assert code == 130, err
    face = next(f for f in stats["grown"] if f["placed_frame"] is not None)
    appeared = round(APPEAR * FPS)
    assert face["seen_frame"] >= appeared  # not before it was there
    shown_after = (face["placed_frame"] - appeared) / FPS  # clip time: played in real time
    print(f"face {face['file']} (tile {face['tile']}) seen at frame {face['seen_frame']}, "
          f"placed at frame {face['placed_frame']}: {shown_after:.2f} s after it appeared")
    assert shown_after <= 5.0
    # saved to DIR, framed as `mosaic faces` frames its crops, and indexable as any image
    saved = cv2.imread(str(faces / face["file"]))
    assert saved is not None and saved.shape[:2] == FaceOptions().size[::-1]
    assert crop_resize(saved, (32, 32)).shape == (32, 32, 3)
    assert face["tile"] >= 120  # after the index's 120 tiles: grown, in memory only
    assert not list(faces.glob(".*")), "temporary files left in DIR"
    assert sorted(p.name for p in faces.iterdir()) == sorted(f["file"] for f in stats["grown"])
    # the astronaut's face is in the crop: its skin, not the green field
    centre = saved[60:160, 40:140].reshape(-1, 3).mean(0)
    assert centre[2] > centre[1], centre  # more red than green
    # and its tile is in the mosaic the page was sent from the frame it was placed in
    tile = crop_resize(saved, (32, 32))
    before = [cell_error(j, tile) for n, j in stream.frames if n < appeared]
    placed = [cell_error(j, tile) for n, j in stream.frames
              if face["placed_frame"] <= n < face["placed_frame"] + 5]
    print(f"face tile's best cell: {min(placed):.1f} levels off once placed, "
          f"{min(before):.1f} before the face appeared")
    assert before and placed and min(placed) < 10 < 20 < min(before), (placed, before)


def test_grow_reloads_dir_and_skips_known_faces(tile_index: Path, tmp_path: Path) -> None:
    """A second run with the same DIR starts with its faces in the pool and keeps no
    duplicate of them."""
    clip = astronaut_clip(tmp_path / "astronaut.mp4", seconds=3.0, appear=0.2, fps=FPS)
    faces = tmp_path / "faces"
    runs = []
    for _ in range(2):
        with LiveProcess(clip, "--index", tile_index, "--grow", faces) as live:
            live.wait_for(lambda s: s["status"] == "ended", timeout=60, what="the end")
            runs.append((live.stats(), sorted(p.name for p in faces.glob("live-*.jpg"))))
    (first, saved), (second, _) = runs
    assert len(saved) == len(first["grown"]) == 1, first  # one face moving: one track
    reloaded = [f for f in second["grown"] if f["seen_frame"] == -1]
    assert [f["file"] for f in reloaded] == saved and reloaded[0]["tile"] == 120
    new = [f for f in second["grown"] if f["seen_frame"] >= 0]
    assert len(new) <= 1, new  # the same face again: at most one new pose kept
    assert np.all([(faces / f["file"]).is_file() for f in second["grown"]])
