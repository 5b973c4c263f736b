"""``mosaic zoom``: the ends, the motion, the landing target and bad input, on a small
generated corpus of textured photos (192 px, larger than the 32 px bank tiles, so the
switch from bank tile to photo shows) at 320x180.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import ffmpeg

from pipeline.config import PhotoOptions
from pipeline.corpus import centre_crop
from pipeline.index import load_index
from pipeline.originals import source_paths
from pipeline.photo import violations
from pipeline.video import FrameReader, probe
from pipeline.zoom import ZoomOptions, make_movie
from pipeline.zoomplan import resolve_target, window_cells

SIZE = (320, 180)
MAGENTA = (255, 0, 255)  # BGR: no photo of the corpus comes near it (hues 0..120 only)


def textured_photo(rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """A photo with fine texture (a 6-10 px check) over a gradient between two related
    colours, hue within red..blue, and a disc: (size, size, 3) uint8 BGR."""
    hsv = np.array([[[rng.uniform(0, 120), rng.uniform(90, 255), rng.uniform(70, 235)]]])
    a = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    b = np.clip(a + rng.uniform(-60, 60, 3), 0, 255)
    y, x = np.mgrid[0:size, 0:size]
    p = int(rng.integers(6, 11))
    t = 0.5 * ((x // p + y // p) % 2) + 0.5 * (x + y) / (2 * size)
    img = a * (1 - t[..., None]) + b * t[..., None]
    cv2.circle(img, tuple(int(v) for v in rng.integers(40, size - 40, 2)), size // 6,
               tuple(float(v) for v in (255 - a)), -1, cv2.LINE_AA)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def scene(path: Path, w: int = 320, h: int = 180) -> Path:
    """The picture the mosaics are made of: colour gradients and a disc."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack([x * 200 / w + 30, y * 180 / h + 40, 150 - x * 100 / w])
    cv2.circle(img, (w // 2, h // 2), h // 4, (40, 180, 230), -1)
    cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


def fitted(photo_bgr: np.ndarray, tile_hw: tuple[int, int]) -> np.ndarray:
    """A photo as the landing shows it: its tile crop scaled to cover the frame."""
    crop = centre_crop(photo_bgr, tile_hw)
    scale = max(SIZE[0] / crop.shape[1], SIZE[1] / crop.shape[0])
    w, h = round(crop.shape[1] * scale), round(crop.shape[0] * scale)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    big = cv2.resize(crop, (w, h), interpolation=interp)
    top, left = (h - SIZE[1]) // 2, (w - SIZE[0]) // 2
    return big[top:top + SIZE[1], left:left + SIZE[0]]


def decoded(path: Path) -> list[np.ndarray]:
    info = probe(path)
    return list(FrameReader(info, 0, info.frames))


@pytest.fixture(scope="module")
def zoom_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoom") / "corpus"
    out.mkdir()
    rng = np.random.default_rng(3)
    for i in range(90):
        cv2.imwrite(str(out / f"p{i:03d}.jpg"), textured_photo(rng),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    return out


@pytest.fixture(scope="module")
def zoom_index(zoom_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.config import IndexConfig
    from pipeline.stages.index import run_index

    out = tmp_path_factory.mktemp("zoom-index") / "ix"
    run_index(zoom_corpus, out, IndexConfig(clusters=6, jobs=1), progress=False)
    return out


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scene(tmp_path_factory.mktemp("scene") / "scene.png")


def movie_of(picture: Path, index_dir: Path, target: str | Path | None = None,
             seconds: float = 3.0, cols: int = 16, **photo):
    index = load_index(index_dir)
    paths = source_paths(index)
    goal = resolve_target(target, index, paths) if target is not None else None
    opts = ZoomOptions(size=SIZE, duration=seconds, fps=15, hold=0.2)
    return make_movie(cv2.imread(str(picture)), index, paths, opts,
                      PhotoOptions(cols=cols, **photo), goal), index, paths


def yuv420(bgr: np.ndarray) -> np.ndarray:
    """``bgr`` through the encoder's colour format (I420: chroma at half resolution)."""
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), cv2.COLOR_YUV2BGR_I420)


def test_ends_and_reverse(run_cli, picture, zoom_index, tmp_path):
    """First frame = the still mosaic (``mosaic photo``) downscaled, >= 35 dB; last
    frame = the landed photo fitted to the frame, >= 30 dB; --reverse swaps them. The
    video's frames are compared with the references in the video's colour format
    (4:2:0 chroma alone costs the mosaic's sharp colour edges about 28 dB); the frames
    drawn before encoding, with the references as they are."""
    ref = tmp_path / "still.png"
    assert run_cli("photo", picture, "--index", zoom_index, "--cells", 16, "--out", ref,
                   "-q")[0] == 0
    mosaic = cv2.resize(cv2.imread(str(ref)), SIZE, interpolation=cv2.INTER_AREA)
    common = ["--index", zoom_index, "--cells", 16, "--size", "320x180", "--duration", 2,
              "--fps", 10, "--hold", 0.2, "--crf", 0, "--preset", "ultrafast"]
    code, _, err = run_cli("zoom", picture, "--out", tmp_path / "in.mp4", *common)
    assert code == 0, err
    landed = re.search(r"landing on (\S+) ->", err).group(1)
    photo = fitted(cv2.imread(landed), (32, 32))
    code, _, err = run_cli("zoom", picture, "--out", tmp_path / "out.mp4", "--reverse",
                           *common)
    assert code == 0, err
    fwd, rev = decoded(tmp_path / "in.mp4"), decoded(tmp_path / "out.mp4")
    assert len(fwd) == len(rev) == 20
    assert psnr(fwd[0], yuv420(mosaic)) >= 35 and psnr(rev[-1], yuv420(mosaic)) >= 35
    assert psnr(fwd[-1], yuv420(photo)) >= 30 and psnr(rev[0], yuv420(photo)) >= 30
    assert psnr(fwd[0], yuv420(photo)) < 25  # the two ends do differ
    movie, _, paths = movie_of(picture, zoom_index, seconds=2.0)
    assert paths[movie.levels[0].landed] == landed
    assert psnr(movie.frame(0), mosaic) >= 35
    assert psnr(movie.frame(len(movie) - 1), photo) >= 30


def test_motion_nests_and_keeps_the_target_put(picture, zoom_index, tmp_path):
    """Each frame's region contains the next one's (the camera, and the pixels: the next
    frame is found where the camera puts it); the target photo, found by its colour in
    every frame, keeps its place: the zoom's fixed point in it and its centre move less
    than 2% of the width."""
    target = tmp_path / "magenta.png"
    cv2.imwrite(str(target), np.full((200, 200, 3), MAGENTA, np.uint8))
    movie, _, _ = movie_of(picture, zoom_index, target, cols=15, recolour=0.0)
    views = [s[0].view for s in movie.shots]
    for a, b in pairwise(views):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.rect(*SIZE), b.rect(*SIZE)
        assert ax0 <= bx0 + 1e-9 and ay0 <= by0 + 1e-9 and bx1 <= ax1 + 1e-9 and \
            by1 <= ay1 + 1e-9
    frames = list(movie.frames())
    for i in (3, 12, 20, 28, 36):  # the next frames, shrunk, are where the camera says
        a, b = views[i], views[i + 3]
        k = b.unit / a.unit
        small = cv2.resize(frames[i + 3], (round(SIZE[0] * k), round(SIZE[1] * k)),
                           interpolation=cv2.INTER_AREA)
        found = cv2.minMaxLoc(cv2.matchTemplate(frames[i], small, cv2.TM_SQDIFF))[2]
        assert np.hypot(*np.subtract(found, a.to_screen(b.x, b.y))) <= 1.5
    level, zoom = movie.levels[0], movie.path.zooms[0]
    row, col = level.landing
    u = zoom.fixed_point[0] - col  # where in the landing cell the fixed point is
    v = (zoom.fixed_point[1] - row * level.aspect) / level.aspect
    fixed, centre = [], []
    for f in frames:  # the target's box on screen, from its pixels
        mask = (f[:, :, 0] > 200) & (f[:, :, 2] > 200) & (f[:, :, 1] < 60)
        xs, ys = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
        x0, w, y0, h = xs[0], xs[-1] + 1 - xs[0], ys[0], ys[-1] + 1 - ys[0]
        whole = ys[0] > 0 and ys[-1] < SIZE[1] - 1  # its height is all on screen
        fixed.append((x0 + u * w, y0 + v * h if whole else np.nan))
        centre.append((x0 + w / 2, y0 + h / 2 if whole else np.nan))
    for points in (np.array(fixed), np.array(centre)):
        ys = points[:, 1][~np.isnan(points[:, 1])]
        assert len(ys) > len(frames) / 2
        assert np.ptp(points[:, 0]) < 0.02 * SIZE[0] and np.ptp(ys) < 0.02 * SIZE[0]


def frame_changes(movie, compensate: bool) -> np.ndarray:
    """Mean absolute change from each frame to the next, (n - 1,): raw, or after moving
    the earlier frame to the later one's view (what motion does not explain)."""
    frames = [f.astype(np.float32) for f in movie.frames()]
    views = [s[0].view for s in movie.shots]
    out = []
    for i, (a, b) in enumerate(pairwise(frames)):
        if compensate:
            va, vb = views[i], views[i + 1]
            k, (x0, y0) = vb.unit / va.unit, va.to_screen(vb.x, vb.y)
            m = np.array([[k, 0, x0 + 0.5 * k - 0.5], [0, k, y0 + 0.5 * k - 0.5]])
            a = cv2.warpAffine(a, m, SIZE, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        out.append(np.abs(b - a)[4:-4, 4:-4].mean())
    return np.array(out)


def pop_ratio(movie, compensate: bool = False) -> float:
    """Largest frame-to-frame change while the photos fade in, over the mean of the
    3 changes on each side without a fade."""
    change = frame_changes(movie, compensate)
    looks = movie.drawers[0].looks
    beta = np.array([looks.photo(s[0].view.cell_px) for s in movie.shots])
    switch = np.flatnonzero(beta[1:] != beta[:-1])
    steady = [i for i in range(len(change)) if beta[i] == beta[i + 1] and change[i] > 0]
    before = [i for i in steady if i < switch[0]][-3:]
    after = [i for i in steady if i > switch[-1]][:3]
    assert len(before) == len(after) == 3
    return float(change[switch].max() / change[before + after].mean())


def test_no_pop_at_the_switch_to_photos(picture, zoom_index):
    """The bank-to-photo switch (where the cells pass the bank's tile size, cross-faded
    over one octave) changes no frame more than 1.5x the frames around it: raw, and
    with the motion taken out. The motion-compensated check does see a pop: the same
    switch made in one frame at 4x the tile size (a blurry bank tile replaced by a sharp
    photo) goes over 1.5x."""
    movie, _, _ = movie_of(picture, zoom_index, seconds=4.0)
    assert pop_ratio(movie) <= 1.5
    assert pop_ratio(movie, compensate=True) <= 1.5
    for d in movie.drawers:
        d.looks = replace(d.looks, fade=4 * d.tw, octaves=0.01)
    assert pop_ratio(movie, compensate=True) > 1.5


@pytest.mark.parametrize("outside", [False, True])
def test_target_lands_and_rules_hold(picture, zoom_index, tmp_path, outside):
    """--target: the chosen photo (in the index, or any image) is the landed one, placed
    near the centre, once; the rest keeps the radius and the cap; the last frame is it."""
    if outside:
        rng = np.random.default_rng(9)
        target = tmp_path / "portrait.png"
        cv2.imwrite(str(target), cv2.resize(textured_photo(rng), (480, 360)))
    else:
        target = sorted((Path(load_index(zoom_index).manifest["corpus"])).glob("*.jpg"))[17]
    movie, index, paths = movie_of(picture, zoom_index, target, radius=2, max_uses=3)
    level = movie.levels[0]
    want = len(paths) if outside else 17
    assert level.landed == want
    assert level.landing[0] * 16 + level.landing[1] in window_cells(level.grid)[0]
    groups = np.append(index.groups, index.groups.max() + 1)
    assert len(violations(level.ids, groups, 2, 3)) == 0
    assert (groups[level.ids] == groups[want]).sum() == 1
    assert psnr(movie.frame(len(movie) - 1), fitted(cv2.imread(str(target)), (32, 32))) >= 30


def test_chain_and_audio(run_cli, picture, zoom_index, tmp_path):
    """--chain 1 zooms on into the landed photo's own mosaic; --audio is muxed, cut."""
    tone = tmp_path / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=5", "-c:a", "aac", tone)
    out = tmp_path / "chain.mp4"
    code, _, err = run_cli("zoom", picture, "--index", zoom_index, "--out", out, "--cells",
                           12, "--size", "320x180", "--duration", 3, "--fps", 10,
                           "--chain", 1, "--audio", tone, "--preset", "ultrafast")
    assert code == 0, err
    assert "mosaic 2 of 2: 12x12 cells" in err
    info = probe(out)
    assert info.frames == 30 and len(info.audio) == 1 and info.duration == pytest.approx(3)


def fails_in_one_line(main_args: list, capsys: pytest.CaptureFixture, *words: str) -> None:
    """``mosaic ARGS`` exits non-zero with one line on stderr naming ``words``."""
    from pipeline.cli import main

    try:
        code = main([str(a) for a in main_args])
    except SystemExit as exc:  # a usage error (argparse)
        code = exc.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error"), lines
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_input_one_line(capsys, picture, zoom_index, tmp_path):
    out = tmp_path / "z.mp4"
    base = ["zoom", picture, "--index", zoom_index, "--out", out, "--size", "320x180"]
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    fails_in_one_line([*base, "--target", notes], capsys, str(notes), "not in the index",
                      "not a readable image")
    fails_in_one_line([*base, "--duration", "0"], capsys, "--duration")
    fails_in_one_line([*base[:-1], "9000x1080"], capsys, "--size", "8192")
    # an index without source paths: none recorded (the loader refuses it), no corpus
    # they are relative to (likewise), or empty ones (the zoom refuses it)
    for name, edit, words in (
            ("sources", lambda m: m.pop("sources"), "damaged tile index"),
            ("corpus", lambda m: m.pop("corpus"), "damaged tile index"),
            ("empty", lambda m: m["sources"].update(paths=[""] * len(m["sources"]["paths"])),
             "records no source photo paths")):
        bare = tmp_path / f"no-{name}"
        shutil.copytree(zoom_index, bare)
        manifest = json.loads((bare / "manifest.json").read_text())
        edit(manifest)
        (bare / "manifest.json").write_text(json.dumps(manifest))
        fails_in_one_line(["zoom", picture, "--index", bare, "--out", out], capsys, words)
    tone = tmp_path / "tone.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", tone)
    before = tone.read_bytes()
    fails_in_one_line([*base, "--audio", tone, "--out", tone], capsys, "overwrite")
    assert tone.read_bytes() == before and not out.exists()
    assert not list(tmp_path.glob(".z.mp4*"))  # no temporary left behind


def test_missing_photos_fall_back_with_one_warning(run_cli, picture, zoom_index,
                                                   zoom_corpus, tmp_path):
    """Source photos that vanished are drawn from the bank; one warning counts them."""
    moved = tmp_path / "moved"
    shutil.copytree(zoom_corpus, moved)
    for p in sorted(moved.glob("*.jpg"))[::2]:
        p.unlink()
    index = tmp_path / "ix"
    shutil.copytree(zoom_index, index)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["corpus"] = str(moved)
    (index / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "z.mp4"
    code, _, err = run_cli("zoom", picture, "--index", index, "--out", out, "--cells", 16,
                           "--size", "320x180", "--duration", 2, "--fps", 10, "--hold",
                           0.2, "-q", "--preset", "ultrafast")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and re.search(r"\d+ source photos are missing", warnings[0])
    assert probe(out).frames == 20
