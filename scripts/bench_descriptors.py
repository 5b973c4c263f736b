#!/usr/bin/env python3
"""What a richer search buys, before the variety rules: orientations and an 8x8 luma grid.

For a few frames of each clip, every cell takes its single nearest tile (exhaustive
search over the whole index: no probing, no variety rules, no hysteresis), recoloured as
the render does (90% of the way to the cell's mean colour) at full contrast, and the
mosaic's viewing-scale SSIM against the source is printed for each search:

* the render's search features (the recolour-aware 4x4 Lab grid) with orientation codes
  ``none`` (as is), ``mirror`` (and mirrored), ``all`` (the 8 symmetries of the square);
* the same with a mean-removed 8x8 luma grid appended (weights 0.5 and 1, in L units):
  a finer structural descriptor.

It is the ceiling each descriptor sets: the render's rules then spend some of it on
variety. Exhaustive search: slow (minutes per clip), run it on a quiet machine.

    python scripts/bench_descriptors.py .cache/media/bikes3x-640x480.mp4 \\
        --index .cache/media/photo-index-40k --frames 10 40
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.features import block_means, lab_grid_means, luma
from pipeline.grid import cell_views, make_grid
from pipeline.index import load_index
from pipeline.matching import search_features
from pipeline.metrics import ssim, sub_means
from pipeline.tone import recolour
from pipeline.video import iter_frames
from pipeline.visibility import orient, orientations

LUMA = np.array([0.114, 0.587, 0.299], np.float32)


def luma8(tiles: np.ndarray) -> np.ndarray:
    """Mean-removed 8x8 luma grid in L-like units (0..100): (k, 64) float32."""
    y = (block_means(tiles, 8) @ LUMA).reshape(len(tiles), 64) * 100
    return y - y.mean(1, keepdims=True)


def back(grid: int, code: int) -> np.ndarray:
    """The permutation that turns a grid seen in orientation ``code`` back."""
    return np.argsort(orient(np.arange(grid * grid).reshape(1, grid, grid), code).reshape(-1))


def nearest(queries: np.ndarray, feats: np.ndarray, norms: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive nearest row of ``feats`` for each query, in blocks: (ids, distances)."""
    ids, dist = [], []
    for lo in range(0, len(queries), 512):
        q = queries[lo:lo + 512]
        d = (q * q).sum(1)[:, None] - 2 * q @ feats.T + norms[None]
        j = d.argmin(1)
        ids.append(j)
        dist.append(d[np.arange(len(q)), j])
    return np.concatenate(ids), np.concatenate(dist)


def mosaic_ssim(frame: np.ndarray, bank: np.ndarray, tile_lab: np.ndarray,
                tile_l8: np.ndarray, kind: str, weight: float) -> float:
    grid = make_grid(frame.shape[0], frame.shape[1], bank.shape[1:3], 4.0)
    views = cell_views(frame, grid)
    q = search_features(lab_grid_means(views, 4), 0.0, 0.9)
    feats = tile_lab if weight == 0 else np.concatenate([tile_lab, weight * tile_l8], 1)
    norms = (feats * feats).sum(1)
    q8 = luma8(views)
    best = np.full(len(q), np.inf)
    ids = np.zeros(len(q), np.int64)
    codes = np.zeros(len(q), np.int64)
    for code in orientations(kind, bank.shape[1] == bank.shape[2]):
        qc = q.reshape(-1, 16, 3)[:, back(4, code)].reshape(len(q), -1)
        if weight:
            qc = np.concatenate([qc, weight * q8[:, back(8, code)]], 1)
        j, d = nearest(qc.astype(np.float32), feats, norms)
        better = d < best
        best[better], ids[better], codes[better] = d[better], j[better], code
    tiles = np.stack([orient(bank[j][None], int(c))[0] for j, c in zip(ids, codes, strict=True)])
    cell_mean = views.reshape(len(q), -1, 3).mean(1)
    shift = np.rint(0.9 * (cell_mean - tiles.reshape(len(q), -1, 3).mean(1))).astype(np.int16)
    tiles = recolour(np.ascontiguousarray(tiles), shift)
    th, tw = bank.shape[1:3]
    img = tiles.reshape(grid.rows, grid.cols, th, tw, 3).swapaxes(1, 2).reshape(
        grid.out_h, grid.out_w, 3)
    return ssim(luma(sub_means(frame, grid)), luma(sub_means(img, grid)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", metavar="VIDEO")
    ap.add_argument("--index", required=True)
    ap.add_argument("--frames", type=int, nargs="+", default=[10, 40])
    args = ap.parse_args()
    index = load_index(args.index)
    bank = np.asarray(index.tiles)
    tile_lab = search_features(np.asarray(index.lab, np.float32), 0.0, 0.9)
    tile_l8 = luma8(bank)
    searches = [("none", 0.0), ("mirror", 0.0), ("all", 0.0), ("none", 0.5), ("mirror", 0.5),
                ("none", 1.0)]
    print(f"index {args.index}: {len(bank)} tiles; frames {args.frames}; nearest tile, no rules")
    for video in args.videos:
        frames = [f for i, f in enumerate(iter_frames(video)) if i in set(args.frames)]
        for kind, weight in searches:
            t = time.perf_counter()
            s = np.mean([mosaic_ssim(f, bank, tile_lab, tile_l8, kind, weight) for f in frames])
            print(f"{Path(video).name:28s} orientations {kind:6s} 8x8 luma weight {weight:3.1f}: "
                  f"SSIM {s:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
