#!/usr/bin/env python3
"""Shot boundaries (issue 18): where today's plan resets, against a state-free pass and
PySceneDetect, on the multi-shot clip and on controls, with what each costs.

For each clip, at the render's default grid (``render.scale``, the index's tile size):

* **plan**: the frames a default render's plan marks as scene cuts (``FrameChange.cut``),
  from the plan stage itself (:class:`pipeline.stages.planner.Planner` over the render's
  segments, into a temporary folder) with the index ``--index``;
* **ours**: :func:`pipeline.shots.find_cuts` (the plan's cut test on its own), one
  sequential pass, and :func:`~pipeline.shots.find_cuts_parallel` over ``--ranges``
  time ranges on 1 and 2 joblib workers (wall time);
* **content**, **adaptive**: PySceneDetect's ContentDetector and AdaptiveDetector at
  their defaults (OpenCV backend), run by the Python of ``--scenedetect-python`` (its
  own venv: it is no dependency of the project).

Frame 0 is left out everywhere (the plan marks it because its canvas starts blank). A
found cut matches a boundary within ±1 frame, one to one. The multi-shot clip's true
boundaries are its joins (``scripts/fetch_media.py``: ``multishot_cuts``); the looped
controls' are their loop seams (``--loop-seams``: the clip's own known joins). CPU is
user + system time of this process and its waited-for children (ffmpeg decoders), or of
the PySceneDetect process, around the detection only; single process.

    python scripts/bench_shots.py [--media .cache/media] [--index DIR] [--ranges 4]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from fetch_media import multishot_cuts  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.grid import make_grid  # noqa: E402
from pipeline.index import load_index  # noqa: E402
from pipeline.planfile import plan_key, plan_segments  # noqa: E402
from pipeline.shots import find_cuts, find_cuts_parallel, split_even  # noqa: E402
from pipeline.stages.planner import Planner  # noqa: E402
from pipeline.video import probe  # noqa: E402

CLIPS = ("multishot-640x480.mp4", "bikes3x-640x480.mp4", "megamind-1280x720.mp4")
# the controls are loops of one source (scripts/fetch_media.py make_clip): megamind's 270
# frames 4 times over at its own rate; bikes' 250 frames 12 times, every third kept
LOOP_SEAMS = {"bikes3x-640x480.mp4": [math.ceil(250 * k / 3) for k in range(1, 12)],
              "megamind-1280x720.mp4": [270, 540, 810]}
SCENEDETECT = """
import json, sys, time
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video
video = open_video(sys.argv[1])
manager = SceneManager()
manager.add_detector(ContentDetector() if sys.argv[2] == "content" else AdaptiveDetector())
cpu, wall = time.process_time(), time.perf_counter()
frames = manager.detect_scenes(video)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
cuts = [s[0].frame_num for s in manager.get_scene_list()][1:]
print(json.dumps({"cuts": cuts, "frames": frames, "cpu": cpu, "wall": wall}))
"""


def cpu_split() -> tuple[float, float]:
    """User + system seconds so far of this process, and of its waited-for children."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def cpu_seconds() -> float:
    """User + system seconds of this process and its waited-for children so far."""
    return sum(cpu_split())


def matched(found: list[int], truth: list[int], tol: int = 1) -> int:
    """How many of ``found`` match a distinct ``truth`` frame within ``tol`` frames."""
    free, hits = sorted(truth), 0
    for f in sorted(found):
        near = [t for t in free if abs(t - f) <= tol]
        if near:
            free.remove(min(near, key=lambda t: abs(t - f)))
            hits += 1
    return hits


def pr(found: list[int], truth: list[int]) -> str:
    """Precision/recall of ``found`` against ``truth`` (±1 frame), as ``P/R``."""
    hits = matched(found, truth)
    p = hits / len(found) if found else float(not truth)
    r = hits / len(truth) if truth else float(not found)
    return f"{p:.2f}/{r:.2f}"


def plan_resets(video: Path, index, work: Path) -> tuple[list[int], float, float]:
    """The frames a default render's plan marks as cuts (frame 0 left out), and the
    plan's CPU and wall seconds (the whole plan: the cut flag is a by-product)."""
    config = load_config().render
    info = probe(video)
    grid = make_grid(info.height, info.width, index.tiles.shape[1:3], config.scale)
    segments = plan_segments(0, info.frames, config.segment_frames)
    planner = Planner(info, grid, index, config, work / f"plan-{video.stem}",
                      plan_key("bench-shots", index.digest, config, 0, info.frames))
    cuts: list[int] = []
    seen = [0]
    plan = planner.engine.plan

    def plan_and_note(state, frames):
        changes, state = plan(state, frames)
        cuts.extend(seen[0] + i for i, c in enumerate(changes) if c.cut)
        seen[0] += len(changes)
        return changes, state

    planner.engine.plan = plan_and_note
    cpu, wall = cpu_seconds(), time.perf_counter()
    planner.run(segments, lambda seg: None)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    assert seen[0] == info.frames, (seen[0], info.frames)
    return [f for f in cuts if f > 0], cpu, wall


def ours(video: Path, tile_hw: tuple[int, int]) -> tuple[list[int], float, float, float]:
    """The state-free pass, one sequential run: cuts, CPU and wall seconds, and the CPU
    seconds of that in the ffmpeg decoder."""
    config = load_config().render
    info = probe(video)
    grid = make_grid(info.height, info.width, tile_hw, config.scale)
    (me, kids), wall = cpu_split(), time.perf_counter()
    cuts = find_cuts(info, grid, 0, info.frames, config.scene_cut)
    me2, kids2 = cpu_split()
    return cuts, me2 + kids2 - me - kids, time.perf_counter() - wall, kids2 - kids


def ours_parallel(video: Path, tile_hw: tuple[int, int], ranges: int, workers: int
                  ) -> tuple[list[int], float]:
    """The pass over ``ranges`` even time ranges on ``workers`` processes: cuts, wall
    seconds (with the workers' start)."""
    config = load_config().render
    info = probe(video)
    grid = make_grid(info.height, info.width, tile_hw, config.scale)
    wall = time.perf_counter()
    cuts = find_cuts_parallel(info, grid, split_even(0, info.frames, ranges),
                              config.scene_cut, workers)
    return cuts, time.perf_counter() - wall


def scenedetect(python: str, video: Path, detector: str) -> tuple[list[int], float, float]:
    """PySceneDetect's ``detector`` ("content" or "adaptive") at its defaults, in its own
    Python: cuts (its scenes' first frames but the first), CPU and wall seconds."""
    out = subprocess.run([python, "-c", SCENEDETECT, str(video), detector],
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return got["cuts"], got["cpu"], got["wall"]


def report(name: str, frames: int, truth: list[int], rows: dict, plan: list[int]) -> None:
    """Print one clip's table."""
    print(f"\n{name}: {frames} frames; true boundaries ({len(truth)}): "
          f"{', '.join(map(str, truth))}")
    print(f"{'method':<10} {'cuts':>5} {'vs true P/R':>12} {'vs plan P/R':>12} "
          f"{'CPU ms/frame':>13} {'wall s':>7}")
    for method, (cuts, cpu, wall, *_) in rows.items():
        print(f"{method:<10} {len(cuts):>5} {pr(cuts, truth):>12} {pr(cuts, plan):>12} "
              f"{1000 * cpu / frames:>13.2f} {wall:>7.1f}")
    for method, (cuts, *_) in rows.items():
        print(f"  {method}: {', '.join(map(str, cuts)) or '-'}")
    decode = rows["ours"][3]
    print(f"  ours' CPU: {1000 * decode / frames:.2f} ms/frame in ffmpeg's decoder, "
          f"{1000 * (rows['ours'][1] - decode) / frames:.2f} in Python (cell means, Lab, "
          "the test)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", type=Path, default=ROOT / ".cache/media")
    ap.add_argument("--index", type=Path, default=None,
                    help="tile index for the plan (default: MEDIA/photo-index-40k)")
    ap.add_argument("--clips", nargs="+", default=list(CLIPS))
    ap.add_argument("--ranges", type=int, default=4, help="time ranges of the parallel pass")
    ap.add_argument("--scenedetect-python", default=str(
        ROOT / ".cache/scenedetect-venv/bin/python"))
    args = ap.parse_args()
    index = load_index(args.index or args.media / "photo-index-40k")
    tile_hw = index.tiles.shape[1:3]
    config = load_config().render
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start "
          f"(other jobs share it: timings are under load); grid: scale {config.scale:g}, "
          f"{tile_hw[1]}x{tile_hw[0]} tiles; scene_cut {config.scene_cut}; plan index "
          f"{index.path} ({len(index.tiles)} tiles)")
    clips = [args.media / c for c in args.clips]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-shots-") as tmp:
        for clip in clips:
            plan, cpu, wall = plan_resets(clip, index, Path(tmp))
            results[clip.name] = {"plan": (plan, cpu, wall), "ours": ours(clip, tile_hw)}
            for det in ("content", "adaptive"):
                results[clip.name][det] = scenedetect(args.scenedetect_python, clip, det)
    for clip in clips:  # last: the workers' processes end after every CPU measurement
        rows = results[clip.name]
        frames = probe(clip).frames
        truth = multishot_cuts()[1:] if clip.name.startswith("multishot") else \
            LOOP_SEAMS.get(clip.name, [])
        report(clip.name, frames, truth, rows, rows["plan"][0])
        for workers in (1, 2):
            cuts, wall = ours_parallel(clip, tile_hw, args.ranges, workers)
            same = "same cuts as" if cuts == rows["ours"][0] else "DIFFERENT cuts from"
            print(f"  ours parallel, {args.ranges} ranges on {workers} worker(s): "
                  f"{wall:.1f} s wall ({frames / wall:.0f} fps), {same} the sequential pass")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
