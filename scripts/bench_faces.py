#!/usr/bin/env python3
"""Benchmark ``mosaic faces`` on a folder of real photographs.

The folder is made of OpenCV's sample photos (Debian's opencv-doc package, fetched by
``scripts/fetch_media.py`` into ``.cache/media/opencv``; fetched here if missing) and
scikit-image's bundled photographs, copied ``--repeat`` times under distinct names with
one byte changed (so the content duplicates are real work, not byte-identical skips:
they go through decoding and detection, then their faces are dropped as duplicates).
Runs the command as a subprocess and prints photos/s, the counts it reports and the peak
RSS of its process tree.

    python scripts/bench_faces.py [--repeat 4] [--jobs 0]

``--eval`` measures detection quality instead, on hand-labelled photos (dlib's example
faces, fetched by ``scripts/fetch_faces.py``; fetched here if missing): recall and
precision at IoU >= 0.5 of each candidate detector (``scripts/face_eval.py`` says which
and how they are scored) at ``--min-size`` 24 and 48 (the default), on ``training.xml``
and the held-out ``testing.xml``, false detections on photos without faces, and the
time per photo (one thread, decoding excluded). ``--tune`` prints the grid of YuNet's
score threshold and first-level face size on the training photos only.

    python scripts/bench_faces.py --eval [--sets training,testing,none]
    python scripts/bench_faces.py --tune
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from benchutil import mib, run_sampled

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "hubble_deep_field",
           "immunohistochemistry", "cat", "colorwheel", "page")


def opencv_photos(media: Path) -> list[Path]:
    data = media / "opencv"
    if not data.is_dir():
        sys.path.insert(0, str(ROOT / "scripts"))
        from fetch_media import fetch_opencv_data

        fetch_opencv_data(media)
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def make_folder(dest: Path, media: Path, repeat: int) -> int:
    from skimage import data

    sources: list[tuple[str, np.ndarray]] = []
    for p in opencv_photos(media):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None and min(img.shape[:2]) >= 64:
            sources.append((p.stem, img))
    for name in SKIMAGE:
        with_rgb = np.asarray(getattr(data, name)())
        img = with_rgb if with_rgb.ndim == 2 else np.ascontiguousarray(with_rgb[..., :3][..., ::-1])
        sources.append((f"skimage-{name}", img))
    dest.mkdir(parents=True)
    n = 0
    for r in range(repeat):
        for stem, img in sources:
            copy = img.copy()
            copy.flat[r] ^= 1  # a different file, the same picture
            cv2.imwrite(str(dest / f"{stem}-{r}.png"), copy)
            n += 1
    return n


def labelled_sets(media: Path, names: list[str]) -> dict[str, list]:
    """The photo sets by name: ``training`` and ``testing`` (dlib's XML), ``none``
    (photos without faces)."""
    import face_eval as fe

    if not (media / "faces-labelled" / "dlib" / "testing.xml").is_file():
        from fetch_faces import fetch_dlib_faces

        fetch_dlib_faces(media)
    if "none" in names and not (media / "opencv").is_dir():
        from fetch_media import fetch_opencv_data

        fetch_opencv_data(media)
    sets = {}
    for name in names:
        if name == "none":
            sets[name] = fe.no_face_photos(media)
        else:
            sets[name] = fe.load_imglab(media / "faces-labelled" / "dlib" / f"{name}.xml")
    return sets


def run_eval(media: Path, names: list[str]) -> None:
    """Print the quality table (module doc, ``--eval``)."""
    import face_eval as fe

    cv2.setNumThreads(1)
    sets = labelled_sets(media, names)
    detectors = {"haar": fe.haar, "haar+eyes (before)": fe.haar_eyes,
                 "haar-alt2": fe.haar_alt2, "yunet (no filter)": fe.yunet(),
                 "mosaic faces (yunet+cascade)": fe.mosaic}
    print("| detector | min size | set | photos | faces | found | recall | false | "
          "precision | ms/photo |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for min_size in (24, 48):
        for dname, det in detectors.items():
            for sname, photos in sets.items():
                r = fe.evaluate(det, photos, min_size)
                faces = r.matched + r.missed
                rec = f"{r.recall:.2f}" if faces else "-"
                prec = f"{r.precision:.2f}" if faces else "-"
                print(f"| {dname} | {min_size} | {sname} | {r.photos} | {faces} | "
                      f"{r.matched} | {rec} | {r.false} | {prec} | "
                      f"{1000 * r.seconds / r.photos:.0f} |")


def run_tune(media: Path) -> None:
    """Print YuNet's score threshold x first-level face size grid on training photos."""
    import face_eval as fe

    from pipeline import faces

    cv2.setNumThreads(1)
    sets = labelled_sets(media, ["training", "none"])
    print("| NET_FACE | score | min size | training recall | training precision | "
          "false on no-face photos | ms/photo |")
    print("|---|---|---|---|---|---|---|")
    for net_face in (16, 20, 24, 32):
        faces.NET_FACE = net_face
        for score in (0.5, 0.6, 0.7, 0.8):
            faces.SCORE = score
            for min_size in (24, 48):
                r = fe.evaluate(fe.mosaic, sets["training"], min_size, repeat=1)
                n = fe.evaluate(fe.mosaic, sets["none"], min_size, repeat=1)
                print(f"| {net_face} | {score} | {min_size} | {r.recall:.2f} | "
                      f"{r.precision:.2f} | {n.false} | {1000 * r.seconds / r.photos:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=4, help="copies of each photo (default 4)")
    ap.add_argument("--jobs", type=int, default=0, help="mosaic faces --jobs (0 = all cores)")
    ap.add_argument("--media", type=Path, default=ROOT / ".cache" / "media")
    ap.add_argument("--eval", action="store_true", help="recall/precision on labelled photos")
    ap.add_argument("--sets", default="training,testing,none",
                    help="with --eval: photo sets (training, testing, none)")
    ap.add_argument("--tune", action="store_true", help="YuNet's parameter grid (training)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.eval:
        return run_eval(args.media, args.sets.split(","))
    if args.tune:
        return run_tune(args.media)
    with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
        src, out = Path(tmp) / "photos", Path(tmp) / "faces"
        n = make_folder(src, args.media, args.repeat)
        sizes = [cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_8).size * 64
                 for p in sorted(src.iterdir())[:2000]]
        cmd = [sys.executable, "-m", "pipeline", "faces", str(src), "--out", str(out),
               "--jobs", str(args.jobs)]
        elapsed, peak, err, code = run_sampled(cmd)
        if code != 0:
            sys.exit(f"mosaic faces failed ({code}): {err.strip()[-500:]}")
        print(f"folder: {n} real photos (median {np.median(sizes) / 1e6:.2f} Mpx)")
        print(f"command: mosaic faces PHOTOS --out FACES --jobs {args.jobs}")
        for line in err.splitlines():
            if line.startswith(f"{n} photos (") or "face tiles of" in line:
                print(line)
        print(f"time: {elapsed:.1f} s end to end = {n / elapsed:.1f} photos/s; "
              f"peak RSS of the process tree: {mib(peak)}")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
