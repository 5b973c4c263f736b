#!/usr/bin/env python3
"""Side by side with the best public video-photomosaic tool, on the same inputs and clips.

1. Installs ``photomosaic-video`` (PyPI, 0.1.0) into its own virtual environment
   (``.cache/peer/venv``) and copies its package to ``.cache/peer/patched`` with its
   blend amounts set to 0 (:data:`PATCH`; the diff is printed), so that it writes a
   pure mosaic like ours at ``--alpha 0``.
2. Cuts the first ``--frames`` frames of CLIP to a lossless file that every tool reads.
3. Renders them with the patched peer (``--cells`` = our cell count, ``--height`` = our
   output height: the same 32 px grid), with our default as a pure mosaic, with the
   reference's activity rule (threshold 16, no settling; our matching otherwise), with
   our ``cluster`` mode (the reference's look), and, given ``--today DIR`` (an export of
   an earlier commit), with that code's default; then our default output as written
   (its default blend), for the photo visibility of what a viewer gets.
4. Scores every pure mosaic with ``mosaic score --index`` (pixels only: tile identity,
   repeats, churn, and each cell's photo identified in the index for its visibility,
   for every tool alike) and prints one table per clip; our renders' own reports add
   the figures by tile id: repeats by id and by group, churn by id, and the visibility
   of the output as written.

    python scripts/bench_peers.py .cache/media/megamind-640x480.mp4 \\
        .cache/media/bikes3x-640x480.mp4 .cache/media/vtest-640x480.mp4 \\
        --corpus .cache/media/photo-corpus-40k --index .cache/media/photo-index-40k \\
        --frames 60 [--today /tmp/today] [--skip-peer]

Each clip works in its own folder under ``--work`` (the peer's output and its row are
kept there: ``--skip-peer`` reuses them). The fps column is wall-clock frames per second
of each whole command on this machine (shared: provisional). Scores are deterministic.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.video import probe, run_ffmpeg  # noqa: E402

PEER = "photomosaic-video==0.1.0"
PEER_DIR = ROOT / ".cache" / "peer"
# its blend amounts: the share of the source image blended into each cell
PATCH = {"BLEND_MIN = 0.05": "BLEND_MIN = 0.0", "BLEND_MAX = 0.14": "BLEND_MAX = 0.0",
         "BLEND_DARK_FLOOR = 0.30": "BLEND_DARK_FLOOR = 0.0"}
COLUMNS = [("visibility_median", "vis med", "{:.2f}"), ("visibility_p10", "vis p10", "{:.2f}"),
           ("visibility_below_half", "vis<.5", "{:.3f}"),
           ("visible_share", "visible", "{:.2f}"), ("identified_share", "ident", "{:.2f}"),
           ("textured_share", "textured", "{:.2f}"), ("ssim_view", "SSIM", "{:.3f}"),
           ("delta_e_cell", "cell dE", "{:.2f}"), ("delta_e_subgrid", "sub dE", "{:.2f}"),
           ("churn", "churn", "{:.4f}"), ("flicker", "flicker", "{:.3f}"),
           ("repeats_r2", "repeat r2", "{:.3f}"), ("distinct_share", "distinct", "{:.3f}")]
# our own reports, by tile id
OWN = [("churn", "id churn", "{:.4f}"), ("repeats_r2_id", "id r2", "{:.3f}"),
       ("repeats_r2_group", "group r2", "{:.3f}"),
       ("visibility_output_median", "out vis", "{:.2f}"),
       ("visibility_output_below_half", "out<.5", "{:.3f}")]
# the reference notebook's activity rule: a cell changes when more than half of its pixels
# moved by 16 (L2, BGR), at once (our matching, variety and recolouring otherwise)
REFERENCE_ACTIVITY = ["render.activity_threshold=16", "render.settle=0"]


def install_peer() -> tuple[Path, Path, str]:
    """The peer's venv python, the patched package's parent dir, and the patch diff."""
    venv = PEER_DIR / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", PEER], check=True)
    site = subprocess.run([str(python), "-c", "import photomosaic_video, os; "
                           "print(os.path.dirname(photomosaic_video.__file__))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    patched = PEER_DIR / "patched"
    shutil.rmtree(patched, ignore_errors=True)
    shutil.copytree(site, patched / "photomosaic_video")
    target = patched / "photomosaic_video" / "mosaic.py"
    before = target.read_text()
    after = before
    for old, new in PATCH.items():
        if old not in after:
            raise SystemExit(f"{target}: '{old}' not found; the peer changed")
        after = after.replace(old, new)
    target.write_text(after)
    diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        "a/photomosaic_video/mosaic.py",
                                        "b/photomosaic_video/mosaic.py", n=0))
    return python, patched, diff


SHIM = """#!{python}
# ffprobe stand-in for the peer (this machine has only the project's bundled ffmpeg):
# answers its one query, `-show_streams -show_format -print_format json FILE`, from the
# project's own probe.
import json, sys
sys.path.insert(0, {root!r})
from pipeline.video import probe
i = probe(sys.argv[-1])
rate = f"{{i.rate.numerator}}/{{i.rate.denominator}}"
streams = [dict(codec_type="video", width=i.width, height=i.height, avg_frame_rate=rate,
                r_frame_rate=rate, nb_frames=str(i.frames))]
streams += [dict(codec_type="audio") for _ in i.audio]
print(json.dumps(dict(streams=streams, format=dict(duration=str(i.duration)))))
"""


def tool_dir() -> Path:
    """A PATH entry with ``ffmpeg`` (the project's) and an ``ffprobe`` stand-in, unless
    the system has both."""
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return Path(shutil.which("ffprobe")).parent
    from pipeline.video import ffmpeg_exe

    bin_dir = PEER_DIR / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "ffmpeg"
    link.unlink(missing_ok=True)
    link.symlink_to(ffmpeg_exe())
    shim = bin_dir / "ffprobe"
    shim.write_text(SHIM.format(python=sys.executable, root=str(ROOT)))
    shim.chmod(0o755)
    return bin_dir


def cut_clip(video: str, frames: int, out: Path) -> Path:
    """The first ``frames`` frames, lossless (x264 qp 0, 4:4:4), no audio."""
    if not out.is_file():
        run_ffmpeg(["-i", video, "-frames:v", str(frames), "-an", "-c:v", "libx264", "-qp",
                    "0", "-preset", "ultrafast", "-pix_fmt", "yuv444p", str(out)], "cut")
    return out


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, env=env)
    return time.perf_counter() - t


def score(clip: Path, out: Path, dest: Path, index: str) -> dict:
    subprocess.run([str(ROOT / ".venv" / "bin" / "mosaic"), "score", str(clip), str(out),
                    "--scale", "4", "--tile", "32x32", "--index", index, "--out", str(dest),
                    "-q"], check=True, stdout=subprocess.DEVNULL)
    return json.loads(dest.read_text())["scores"]


def ours(name: str, clip: Path, index: str, work: Path, frames: int, preset: str,
         sets: list[str], src: Path = ROOT, pure: bool = True) -> tuple[Path, float, dict]:
    out = work / f"{name}.mp4"
    cache = work / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)  # a cached job would make the fps meaningless
    env = dict(os.environ, MOSAIC_CACHE=str(cache), PYTHONPATH=str(src))
    cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "pipeline", "render", str(clip),
           "--index", index, "--out", str(out), "--frames", str(frames), "--preset", preset,
           "-q"] + (["--alpha", "0"] if pure else []) + [a for s in sets for a in ("--set", s)]
    seconds = timed(cmd, cwd=src, env=env)
    report = out.with_name(out.name + ".scores.json")  # OUT.scores.json
    if not report.is_file():
        report = out.with_name(out.stem + ".scores.json")  # older revisions ("today")
    own = json.loads(report.read_text())["scores"] if report.is_file() else {}
    return out, seconds, own


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", metavar="VIDEO")
    ap.add_argument("--corpus", required=True, help="the photos (the peer reads these)")
    ap.add_argument("--index", required=True, help="our index of the same photos")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--preset", default="ultrafast", help="our x264 preset")
    ap.add_argument("--today", type=Path, help="an export of an earlier commit to compare")
    ap.add_argument("--skip-peer", action="store_true",
                    help="do not run the peer (its row from an earlier run is shown if saved)")
    ap.add_argument("--skip-ours", action="store_true", help="the peer only")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-peers")
    args = ap.parse_args()
    index = str(Path(args.index).resolve())
    for video in args.videos:
        work = args.work / Path(video).stem
        work.mkdir(parents=True, exist_ok=True)
        compare(video, work, index, args)


def compare(video: str, work: Path, index: str, args: argparse.Namespace) -> None:
    """Every tool on the first ``args.frames`` frames of ``video``: one table."""
    clip = cut_clip(video, args.frames, work / f"clip-{args.frames}.mkv")
    info = probe(clip)
    rows = []
    if not args.skip_peer:
        python, patched, diff = install_peer()
        print("patch applied to the peer:\n" + diff)
        out = work / "peer.mp4"
        env = dict(os.environ, PYTHONPATH=str(patched),
                   PATH=f"{tool_dir()}{os.pathsep}{os.environ['PATH']}")
        cells = (info.width * 4 // 32) * (info.height * 4 // 32)
        secs = timed([str(python), "-m", "photomosaic_video", str(clip), "-t", args.corpus,
                      "-o", str(out), "--cells", str(cells), "--height",
                      str(info.height * 4)], env=env)
        (work / f"peer-run-{args.frames}.json").write_text(json.dumps(
            {"seconds": secs, "frames": args.frames}))
    saved = work / f"peer-run-{args.frames}.json"
    if saved.is_file() and (work / "peer.mp4").is_file():  # scored again: scores may grow
        run = json.loads(saved.read_text())
        rows.append(("photomosaic-video (blend 0)",
                     score(clip, work / "peer.mp4", work / "peer.json", index),
                     args.frames / run["seconds"], {}))
    runs = [("ours: default", [], args.today and ROOT),
            ("ours: reference activity", REFERENCE_ACTIVITY, ROOT),
            ("ours: cluster (reference)", ["render.matching=cluster", *REFERENCE_ACTIVITY],
             ROOT)]
    if args.today:
        runs.append(("today's default", [], args.today))
    for name, sets, src in [] if args.skip_ours else runs:
        tag = name.split(": ")[-1].split()[0].replace("'s", "")
        out, secs, own = ours(tag, clip, index, work, args.frames, args.preset, sets,
                              src=src or ROOT)
        rows.append((name, score(clip, out, work / f"{out.stem}.json", index),
                     args.frames / secs, own))
    if not args.skip_ours:  # what a viewer gets: the default blend
        _, secs, own = ours("blended", clip, index, work, args.frames, args.preset, [],
                            pure=False)
        rows.append(("ours: default, as written", {}, args.frames / secs, own))
    print(f"\n{clip}: {info.width}x{info.height}, {args.frames} frames, x4, 32x32 tiles; "
          f"corpus {args.corpus}; our preset {args.preset}; {os.cpu_count()} cores")
    print(f"{'':30s}" + "".join(f"{c[1]:>10s}" for c in COLUMNS) + f"{'fps':>7s}"
          + "".join(f"{c[1]:>9s}" for c in OWN))
    for name, sc, fps, own in rows:
        cells = "".join(f"{fmt.format(sc[key]) if key in sc else '-':>10s}"
                        for key, _, fmt in COLUMNS)
        extra = "".join(f"{fmt.format(own[k]) if k in own else '-':>9s}" for k, _, fmt in OWN)
        print(f"{name:30s}{cells}{fps:7.2f}{extra}", flush=True)


if __name__ == "__main__":
    main()
