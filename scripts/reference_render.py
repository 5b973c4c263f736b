#!/usr/bin/env python3
"""The reference notebook's video mosaic, re-implemented as written: the speed baseline.

A line-by-line port of ``main()`` in /work/shared/reference/videoMosaic-notebook.txt
(vishnu-chand/videoMosaic) and the pixUtils helpers it calls (pinned commit 410e006:
``imResize`` is ``cv2.resize`` with ``INTER_LINEAR``, ``videoPlayer`` reads with
``cv2.VideoCapture``, ``VideoWriter`` is ``cv2.VideoWriter`` with the mp4v codec at the
source's rate and the first written frame's size, ``TPool`` is a thread pool). The
notebook's steps, kept:

* per frame: OpenCV decode; the activity mask by frame differencing (the Euclidean
  distance of each pixel's BGR to the last value kept for it, > 16; the first frame is
  all active); the frame and the mask resized to ``scale`` times, cut into 32x32 cells
  by a Python loop; each cell whose resized mask averages > 0.5 gets a 5x5x5
  ``cv2.calcHist`` colour histogram;
* per batch of 256 frames: ``MiniBatchKMeans(150).partial_fit`` over all the batch's
  histograms (a new model when a batch has more than half as many as the first one:
  the notebook's scene reset); each cell cluster is matched to the tile cluster of
  least cosine distance (scipy's ``cdist_cosine_double_wrap``), and its cells take
  that cluster's tiles in turn, each **read from disk** with ``cv2.imread`` (and
  flipped at random), on a thread pool of ``os.cpu_count()`` threads;
* the cells pasted over the running mosaic, blended 50/50 with the upscaled frame
  (``cv2.addWeighted``), written with ``cv2.VideoWriter`` (mp4v);
* the source's audio muxed back by ffmpeg (``-c:v copy -shortest``).

What differs, and why:

* The tiles and tile clusters are the project's index (the same tiles our render
  uses): the notebook's ``createTiles`` (a one-time job it caches in a pickle) is
  replaced by :func:`prepare_tiles`, which writes each tile of the index's
  ``tiles.npy`` (32x32, BGR) as a PNG named after its corpus file (the index's
  manifest lists the corpus paths in ``sources.paths``, one per tile row), once, into
  ``--tiles-dir``; the clusters are the index's k-means clusters (``clusters.npz``:
  ``centers`` over the same 125-bin histograms, ``labels`` per tile). This one-time
  step is not part of the timed render.
* ``--frames N`` stops after N frames (the notebook renders the whole video).
* ffmpeg is the project's (:func:`pipeline.video.ffmpeg_exe`; the notebook calls
  ``ffmpeg`` on the PATH), and the audio map is ``1:a?``, so that a source without
  audio is copied as video only (the notebook's ``-map 1:a`` fails there and leaves
  no output).
* ``random`` is seeded (``--seed``) so that two runs place the same tiles.

    python scripts/reference_render.py VIDEO --index DIR --out OUT.mp4 [--frames 120]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from functools import partial
from itertools import product
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial._distance_wrap import cdist_cosine_double_wrap
from sklearn.cluster import MiniBatchKMeans

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.video import ffmpeg_exe

TILE_H = TILE_W = 32
N_FEATURE = 5  # bins per channel: 125-bin histograms
N_IM_CLUSTERS = 150
BATCH = 256
ALPHA = 0.5


class TileClusters:
    """The notebook's ``tileCluster``: cluster centres (k, 125) float32 and, per
    cluster, the paths of its tiles' PNG files."""

    def __init__(self, centers: np.ndarray, paths: list[list[str]]) -> None:
        self.cluster_centers_ = centers
        self.paths = paths


def prepare_tiles(index_dir: Path, tiles_dir: Path) -> TileClusters:
    """Write the index's tiles as 32x32 PNGs (once; a marker file says it is complete)
    and return its clusters with their tiles' paths (the notebook's ``createTiles``)."""
    manifest = json.loads((index_dir / "manifest.json").read_text())
    names = [Path(p).stem for p in manifest["sources"]["paths"]]
    clusters = np.load(index_dir / "clusters.npz")
    centers, labels = clusters["centers"], clusters["labels"]
    dest = tiles_dir / str(manifest["index_digest"])
    paths = [str(dest / "tiles" / f"{i:06d}-{name}.png") for i, name in enumerate(names)]
    if not (dest / "complete").is_file():
        tiles = np.load(index_dir / "tiles.npy", mmap_mode="r")
        if len(tiles) != len(names) or len(labels) != len(names):
            raise SystemExit(f"{index_dir}: tiles, labels and sources disagree in length")
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "tiles").mkdir(parents=True)
        for i, path in enumerate(paths):
            cv2.imwrite(str(tmp / "tiles" / Path(path).name), np.asarray(tiles[i]))
        (tmp / "complete").write_text("ok\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    members: list[list[str]] = [[] for _ in range(len(centers))]
    for label, path in zip(labels.tolist(), paths, strict=True):
        members[label].append(path)
    return TileClusters(centers.astype(np.float32), members)


def im_resize(img: np.ndarray, size_rc: list[int]) -> np.ndarray:
    """pixUtils ``imResize(img, [r, c])``: ``cv2.resize`` with ``INTER_LINEAR``."""
    r, c = size_rc[:2]
    return cv2.resize(img, (int(c), int(r)), interpolation=cv2.INTER_LINEAR)


def sub_img_to_img(i_locs, s_imgs, imgs, photo_mosaic, sr, sc):
    """The notebook's ``subImg2img``: paste each frame's cells over the running mosaic."""
    batch_sz = len(imgs)
    if not len(photo_mosaic):
        photo_mosaic = np.empty_like(imgs[0])
    if s_imgs is None:
        for img in imgs:  # the notebook zips imgs with [photoMosaic] * batchSz
            yield img, photo_mosaic
    else:
        batch_ixs = [[] for _ in range(batch_sz)]
        for batch_ix, i, j, img_ix in i_locs:
            batch_ixs[batch_ix].append([i, j, img_ix])
        for img, locs in zip(imgs, batch_ixs, strict=True):
            for i, j, img_ix in locs:
                si, sj = i * sr, j * sc
                photo_mosaic[si:si + sr, sj:sj + sc] = s_imgs[img_ix]
            yield img, photo_mosaic


def img_to_sub_img(imgs, img, active, i_locs, hists, scale_up, sr, sc, hist_size):
    """The notebook's ``img2subImg``: upscale, and a histogram of every active cell."""
    r, c = img.shape[:2]
    n_row, n_col = math.ceil(r * scale_up / sr), math.ceil(c * scale_up / sc)
    img = im_resize(img, [n_row * sr, n_col * sc])
    active = im_resize(active, [n_row * sr, n_col * sc])
    for i, j in product(range(n_row), range(n_col)):
        si, sj = i * sr, j * sc
        a = active[si:si + sr, sj:sj + sc].mean() > .5
        if a:
            s = img[si:si + sr, sj:sj + sc]
            hist = cv2.calcHist([s], [0, 1, 2], None, hist_size,
                                [0, 256, 0, 256, 0, 256]).ravel().astype("f4") / s.size
            i_locs.append([len(imgs), i, j, len(hists)])
            hists.append(hist)
    imgs.append(img)
    return i_locs, hists


def img_to_photo_mosaic_with_thread(im_clusters, tile_cluster, i_locs, tile_h, tile_w):
    """The notebook's ``img2photoMosaicWithThread``: tiles for every cell, per cluster."""
    label_to_cells = defaultdict(list)
    for label, (_batch_ix, _i, _j, img_ix) in zip(im_clusters.labels_, i_locs, strict=True):
        label_to_cells[label].append(img_ix)
    photo_mosaic = np.empty([len(i_locs), tile_h, tile_w, 3], dtype="u1")
    fn = partial(fast_img_to_tile, im_clusters, tile_cluster, photo_mosaic)
    with ThreadPool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(fn, label_to_cells.items()):
            pass
    return photo_mosaic


def fast_img_to_tile(im_clusters, tile_cluster, photo_mosaic, label_cells) -> None:
    """The notebook's ``fastImg2tile``: the nearest tile cluster by cosine distance, its
    tiles read from disk in turn (flipped at random) for the cluster's cells."""
    label, cells = label_cells
    center = im_clusters.cluster_centers_[label][None]
    tile_centers = tile_cluster.cluster_centers_.astype(np.double)
    errs = np.empty([1, len(tile_centers)], dtype=np.double)
    cdist_cosine_double_wrap(center.astype(np.double), tile_centers, errs)
    i_best = np.argmin(errs.ravel())
    cluster_paths = tile_cluster.paths[i_best]
    n_paths = len(cluster_paths)
    for ix, img_ix in enumerate(cells):
        img = cv2.imread(cluster_paths[ix % n_paths])
        img = img if random.random() < .5 else img[:, ::-1]
        photo_mosaic[img_ix] = img


def get_active_locs(img, p_img):
    """The notebook's ``getActiveLocs``: pixels whose BGR moved more than 16 from the
    last value kept for them (all pixels on the first frame)."""
    if not len(p_img):
        actives = np.ones_like(img, dtype=bool)
        p_img = img.copy()
    else:
        actives = np.linalg.norm(img.astype("f4") - p_img.astype("f4"), axis=-1) > 16
        p_img[actives] = img[actives].copy()
    return np.uint8(actives), p_img


class ImCluster:
    """The notebook's ``ImCluster``: MiniBatchKMeans over each batch's cell histograms,
    a new model at a scene change (a batch with over half the first batch's cells)."""

    def __init__(self, n_im_clusters: int) -> None:
        self.reset_clusters = None
        self.n_im_clusters = n_im_clusters
        self.im_clusters = MiniBatchKMeans(n_im_clusters)

    def prcs(self, hists):
        if self.reset_clusters is None:
            self.reset_clusters = len(hists) * .5
        if len(hists) > self.reset_clusters:  # reset cluster for scene transition
            self.im_clusters = MiniBatchKMeans(self.n_im_clusters)
        self.im_clusters.partial_fit(hists)
        return self.im_clusters


class MosaicWriter:
    """pixUtils ``VideoWriter``: mp4v at the source's rate, opened at the first
    frame's size."""

    def __init__(self, path: Path, cam: cv2.VideoCapture) -> None:
        self.path, self.fps, self.writer = path, cam.get(cv2.CAP_PROP_FPS), None

    def write(self, img: np.ndarray) -> None:
        if self.writer is None:
            h, w = img.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (w, h))
        self.writer.write(img)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def render(video: str, tile_cluster: TileClusters, out: Path, scale: float = 4,
           frames: int | None = None) -> int:
    """The notebook's ``main`` after its tiles: render (up to ``frames`` frames of)
    ``video`` into ``out`` (mp4v, the source's audio muxed); the frames written."""
    hist_size = np.array([N_FEATURE] * 3, dtype=int)
    p_img, mosaic_img = np.array([]), np.array([])
    cam = cv2.VideoCapture(video)
    if not cam.isOpened():
        raise SystemExit(f"{video}: OpenCV cannot open it")
    im_clusters = ImCluster(N_IM_CLUSTERS)
    imgs, i_locs, hists = [], [], []
    without_audio = out.with_name(out.stem + ".withoutAudio.mp4")
    writer = MosaicWriter(without_audio, cam)
    written = 0

    def prcs(mosaic_img):
        nonlocal written
        s_imgs = None
        if len(hists):
            clusters = im_clusters.prcs(hists)
            s_imgs = img_to_photo_mosaic_with_thread(clusters, tile_cluster, i_locs,
                                                     TILE_H, TILE_W)
        for img, mosaic in sub_img_to_img(i_locs, s_imgs, imgs, mosaic_img, TILE_H, TILE_W):
            disp = cv2.addWeighted(mosaic, ALPHA, img, 1 - ALPHA, 0)
            writer.write(disp)
            written += 1
            mosaic_img = mosaic
        return mosaic_img

    try:
        fno = 0
        while frames is None or fno < frames:
            ok, img = cam.read()
            if not ok or img is None:
                break
            active, p_img = get_active_locs(img, p_img)
            i_locs, hists = img_to_sub_img(imgs, img, active, i_locs, hists, scale,
                                           TILE_H, TILE_W, hist_size)
            if len(imgs) == BATCH:
                mosaic_img = prcs(mosaic_img)
                imgs, i_locs, hists = [], [], []
            fno += 1
        if len(imgs):
            mosaic_img = prcs(mosaic_img)
    finally:
        writer.close()
        cam.release()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(without_audio), "-i", video,
                    "-map", "0:v", "-map", "1:a?", "-c:v", "copy", "-shortest", "-y",
                    str(out)], check=True)
    without_audio.unlink()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", help="source video file")
    ap.add_argument("--index", type=Path, required=True, help="tile index directory")
    ap.add_argument("--out", type=Path, required=True, help="output .mp4 (mp4v + audio)")
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--frames", type=int, help="stop after N frames (default: all)")
    ap.add_argument("--tiles-dir", type=Path, default=Path(".cache/reference-tiles"),
                    help="where the tiles are written as PNG files, once per index")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prepare-only", action="store_true",
                    help="write the tile PNGs and stop (the untimed one-time step)")
    args = ap.parse_args()
    if not Path(args.video).is_file():
        raise SystemExit(f"{args.video}: no such file")
    if not (args.index / "manifest.json").is_file():
        raise SystemExit(f"{args.index}: not a tile index (no manifest.json)")
    if args.out.resolve() == Path(args.video).resolve():
        raise SystemExit(f"{args.out}: is the input video")
    t = time.perf_counter()
    tiles = prepare_tiles(args.index, args.tiles_dir)
    prepared = time.perf_counter() - t
    if args.prepare_only:
        print(f"tiles ready in {args.tiles_dir} ({prepared:.1f} s)")
        return
    random.seed(args.seed)
    t = time.perf_counter()
    written = render(args.video, tiles, args.out, args.scale, args.frames)
    elapsed = time.perf_counter() - t
    print(f"reference: {written} frames in {elapsed:.1f} s = {written / elapsed:.2f} fps "
          f"(tiles loaded in {prepared:.1f} s, not counted)")


if __name__ == "__main__":
    main()
