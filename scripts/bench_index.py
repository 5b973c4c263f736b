#!/usr/bin/env python3
"""Benchmark the index stage on a CelebA-shaped corpus.

Generates (or takes, with --corpus) N JPEGs of 178x218 at quality 90 with varied
content, runs ``mosaic index`` as a subprocess (the way users run it) and prints:
images/s for the whole stage and for each step, the peak RSS of the process tree,
artifact sizes, and the time of an unchanged rerun. With --baseline it also times the
reference's approach (a process pool doing imread, resize, calcHist and a PNG write per
image, then one partial_fit) on the first --baseline-count images, in the same run.

    python scripts/bench_index.py --count 20000
    python scripts/bench_index.py --count 200000 --baseline
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import joblib
import numpy as np
from benchutil import TreeRss, mib

W, H = 178, 218


def _celeba_like(seed: int) -> bytes:
    """One 178x218 JPEG (quality 90): a lit background, a face-like ellipse, texture."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 235, 3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    light = (xx / W - 0.5) * rng.uniform(-80, 80) + (yy / H - 0.5) * rng.uniform(-80, 80)
    img = np.empty((H, W, 3), np.float32)
    img[:] = base
    img += light[..., None]
    skin = rng.uniform(60, 230) * np.array([0.75, 0.85, 1.0]) + rng.normal(0, 10, 3)
    centre = (int(rng.integers(70, 108)), int(rng.integers(95, 125)))
    cv2.ellipse(img, centre, (int(rng.integers(38, 55)), int(rng.integers(55, 75))), 0, 0, 360,
                skin.tolist(), -1, cv2.LINE_AA)
    hair = rng.uniform(0, 120, 3)
    cv2.ellipse(img, (centre[0], centre[1] - 45), (int(rng.integers(45, 62)), 40), 0, 180, 360,
                hair.tolist(), -1, cv2.LINE_AA)
    noise = cv2.resize(rng.normal(0, 1, (H // 4, W // 4, 3)).astype(np.float32), (W, H))
    img += noise * rng.uniform(4, 14) + rng.normal(0, 3, (H, W, 3)).astype(np.float32)
    img = cv2.GaussianBlur(np.clip(img, 0, 255), (3, 3), 0.8).astype(np.uint8)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _write_range(out: str, start: int, stop: int) -> None:
    cv2.setNumThreads(1)
    for i in range(start, stop):
        path = os.path.join(out, f"{i + 1:06d}.jpg")
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(_celeba_like(i))
            os.replace(path + ".tmp", path)


def make_corpus(out: Path, count: int) -> None:
    """Write ``count`` CelebA-shaped JPEGs named 000001.jpg... into ``out`` (resumable)."""
    out.mkdir(parents=True, exist_ok=True)
    step = 2000
    t = time.perf_counter()
    joblib.Parallel(n_jobs=-1)(joblib.delayed(_write_range)(str(out), s, min(s + step, count))
                               for s in range(0, count, step))
    print(f"corpus: {count} images in {out} ({time.perf_counter() - t:.0f} s to generate)")


def run_index(corpus: Path, index: Path, extra: list[str]) -> tuple[float, int, int]:
    """Run ``mosaic index`` once; returns (seconds, peak tree RSS, main-process maxrss)."""
    cmd = [sys.executable, "-m", "pipeline", "index", "--corpus", str(corpus), "--index",
           str(index), "--quiet", *extra]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    sampler = TreeRss(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    peak = sampler.stop()
    if status != 0:
        sys.exit(f"mosaic index failed with status {status}")
    return elapsed, peak, usage.ru_maxrss * 1024


def _ref_get_data(args: tuple[str, str]) -> np.ndarray:
    """The reference's per-image work: imread, resize, calcHist, PNG write."""
    path, out = args
    img = cv2.resize(cv2.imread(path), (32, 32), interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist([img], [0, 1, 2], None, [5, 5, 5], [0, 256] * 3).ravel() / img.size
    cv2.imwrite(os.path.join(out, os.path.basename(path) + ".png"), img)
    return hist.astype("f4")


def baseline(corpus: Path, count: int) -> float:
    """Images/s of the reference's approach on the first ``count`` images."""
    from sklearn.cluster import MiniBatchKMeans

    paths = sorted(str(p) for p in corpus.glob("*.jpg"))[:count]
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        with multiprocessing.Pool(os.cpu_count()) as pool:
            hists = list(pool.imap_unordered(_ref_get_data, [(p, out) for p in paths]))
        MiniBatchKMeans(500).partial_fit(np.array(hists))
        return len(paths) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000, help="corpus size N (default 20000)")
    ap.add_argument("--corpus", type=Path, help="use this corpus instead of generating one")
    ap.add_argument("--work", type=Path, default=Path(".cache/bench"),
                    help="where generated corpora and indexes go (default .cache/bench)")
    ap.add_argument("--baseline", action="store_true", help="also time the reference approach")
    ap.add_argument("--baseline-count", type=int, default=20000)
    ap.add_argument("--keep", action="store_true", help="keep the index of an earlier run")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache first (root only), so the corpus is read from disk")
    ap.add_argument("extra", nargs="*", help="extra flags for mosaic index (after --)")
    args = ap.parse_args()

    corpus = args.corpus or args.work / f"celeba-like-{args.count}"
    if args.corpus is None:
        make_corpus(corpus, args.count)
    index = args.work / f"index-{corpus.name}"
    if index.exists() and not args.keep:
        shutil.rmtree(index)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    if args.cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        print("page cache dropped: the corpus is read from disk")

    elapsed, peak, main_rss = run_index(corpus, index, args.extra)
    run = json.loads((index / "last_run.json").read_text())
    n = run["counts"]["files"]
    print(f"index: {n} images in {elapsed:.1f} s = {n / elapsed:,.0f} images/s end to end")
    for step, seconds in run["timings"].items():
        rate = f"{n / seconds:,.0f} images/s" if seconds > 0.05 else "-"
        print(f"  {step:16s} {seconds:7.2f} s  {rate}")
    print(f"  counts: {run['counts']}")
    print(f"peak RSS: {mib(peak)} (process tree, sampled), main process {mib(main_rss)}")
    print("artifacts:")
    for path in sorted(index.iterdir()):
        size = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                if path.is_dir() else path.stat().st_size)
        print(f"  {path.name:22s} {mib(size):>14s}")
    rerun, rerun_peak, _ = run_index(corpus, index, args.extra)
    print(f"unchanged rerun: {rerun:.2f} s (peak RSS {mib(rerun_peak)})")
    if args.baseline:
        rate = baseline(corpus, min(args.baseline_count, n))
        print(f"reference approach: {rate:,.0f} images/s on {min(args.baseline_count, n)} "
              f"images; ours / reference = {n / elapsed / rate:.1f}x")


if __name__ == "__main__":
    main()
