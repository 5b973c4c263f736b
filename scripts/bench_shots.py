#!/usr/bin/env python3
"""Shot boundaries (issue 18): where today's plan resets, against a state-free pass and
PySceneDetect, on the multi-shot clip and on two looped clips, with what each costs.

For each clip, at the render's default grid (``render.scale``, the index's tile size):

* **plan**: the frames a default render's plan marks as scene cuts (``FrameChange.cut``),
  from the plan stage itself (:class:`pipeline.stages.planner.Planner` over the render's
  segments, into a temporary folder) with the index ``--index``;
* **ours**: :func:`pipeline.shots.find_cuts` (the plan's cut test on its own), one
  sequential pass; then :func:`~pipeline.shots.find_cuts_parallel` over ``--ranges``
  time ranges on 1 and 2 joblib workers (wall time, the workers' start included);
* **content**, **adaptive**: PySceneDetect's ContentDetector and AdaptiveDetector at
  their defaults (OpenCV backend), run by ``--scenedetect-python`` (its own venv: it is
  no dependency of the project). Its frame numbers are mapped onto ours by matching its
  first decoded frames with ours (our decoder pads the frame-rate grid's first slot where
  the video starts after the audio: then its frame n is our n + 1).

Frame 0 is left out everywhere. A found cut matches a true one within ±1 frame, one to
one. Truth: the multi-shot clip's joins (``scripts/fetch_media.py``), and every cut a
viewer sees: the joins, the cuts inside the sources' pieces and the loop seams, from the
sources' own cuts labelled by eye (:data:`BIKES_CUTS`, :data:`MEGAMIND_CUTS`; a seam of
Megamind counts at its one black frame). CPU is user + system time around the detection
only, of this process and its waited-for children (ffmpeg decoders), or of the
PySceneDetect process (its decoding threads included); single process.

    python scripts/bench_shots.py [--media .cache/media] [--index DIR] [--ranges 4]
        [--repeats 3] [--parallel-only]
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

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from fetch_media import multishot_cuts  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.grid import make_grid  # noqa: E402
from pipeline.index import load_index  # noqa: E402
from pipeline.planfile import job_segments, plan_key  # noqa: E402
from pipeline.shots import find_cuts, find_cuts_parallel, split_even  # noqa: E402
from pipeline.stages.planner import Planner  # noqa: E402
from pipeline.video import FrameReader, probe  # noqa: E402

CLIPS = ("multishot-640x480.mp4", "bikes3x-640x480.mp4", "megamind-1280x720.mp4")
# the sources' own cuts, labelled by eye on frame pairs: bikes.mp4 (250 frames, a montage;
# bikes3x keeps every third frame of it looped 12 times) and Megamind.avi (270 frames,
# looped 4 times; in our numbering of megamind-1280x720: black frames 0-1, the picture from
# 2, film cuts at 99, 155 and 201; each seam one black frame, at 271 + 270 (k - 1))
BIKES_CUTS = (30, 76, 137, 187, 242)
MEGAMIND_CUTS = (99, 155, 201)
# cuts inside the multi-shot clip's Megamind pieces (re-timed to 25 fps), labelled by eye:
# its opening black frame, three film cuts and a loop seam's black frame
MULTISHOT_MEGAMIND = (1, 276, 334, 555, 800)
SCENEDETECT = """
import json, sys, time
import cv2
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video
video = open_video(sys.argv[1])
manager = SceneManager()
manager.add_detector(ContentDetector() if sys.argv[2] == "content" else AdaptiveDetector())
cpu, wall = time.process_time(), time.perf_counter()
frames = manager.detect_scenes(video)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
cuts = [s[0].frame_num for s in manager.get_scene_list()][1:]
cap, thumbs = cv2.VideoCapture(sys.argv[1]), []
for _ in range(48):
    thumbs.append(cv2.resize(cap.read()[1], (16, 12), interpolation=cv2.INTER_AREA).tolist())
print(json.dumps({"cuts": cuts, "frames": frames, "cpu": cpu, "wall": wall,
                  "thumbs": thumbs}))
"""


def bikes3x_truth(frames: int) -> list[int]:
    """bikes3x's cuts: output frame i shows bikes.mp4's frame 3i of the looped stream, so
    a source cut c of loop k shows at ceil((250 k + c) / 3); seams are c = 0."""
    cuts = {math.ceil((250 * k + c) / 3) for k in range(12) for c in (0, *BIKES_CUTS)}
    return sorted(f for f in cuts if 0 < f < frames)


def megamind_truth(frames: int) -> list[int]:
    """megamind-1280x720's cuts: the picture after the opening black (2), the source's
    cuts in each loop, and each seam (one boundary, at its black frame)."""
    cuts = {2, 271, 541, 811} | {270 * k + c for k in range(4) for c in MEGAMIND_CUTS}
    return sorted(f for f in cuts if 0 < f < frames)


def multishot_truth() -> tuple[list[int], list[int]]:
    """The multi-shot clip's joins, and every cut: the joins, the bikes pieces' cuts
    (piece k shows bikes3x's frames [76 k, 76 k + 76) from frame 90 + 263 k) and the
    Megamind pieces' (labelled)."""
    joins = multishot_cuts()[1:]
    bikes = [90 + 263 * k + t - 76 * k for k in range(4) for t in bikes3x_truth(1000)
             if 76 * k < t < 76 * k + 76]
    return joins, sorted(set(joins) | set(bikes) | set(MULTISHOT_MEGAMIND))


def cpu_split() -> tuple[float, float]:
    """User + system seconds so far of this process, and of its waited-for children."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


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


def plan_resets(video: Path, index, work: Path
                ) -> tuple[list[int], float, float, list[float]]:
    """The frames a default render's plan marks as cuts (frame 0 left out), the plan's
    CPU and wall seconds (the whole plan: the cut flag is a by-product), and the share
    of the cells each of those frames decides (the rest keep their tiles)."""
    config = load_config().render
    info = probe(video)
    grid = make_grid(info.height, info.width, index.tiles.shape[1:3], config.scale)
    planner = Planner(info, grid, index, config, work / f"plan-{video.stem}",
                      plan_key("bench-shots", index.digest, config, 0, info.frames))
    cuts: list[int] = []
    decided: list[float] = []
    seen = [0]
    plan = planner.engine.plan

    def plan_and_note(state, frames):
        changes, state = plan(state, frames)
        for i, c in enumerate(changes):
            if c.cut and seen[0] + i > 0:
                cuts.append(seen[0] + i)
                decided.append(c.active / grid.cells)
        seen[0] += len(changes)
        return changes, state

    planner.engine.plan = plan_and_note
    cpu, wall = sum(cpu_split()), time.perf_counter()
    planner.run(job_segments(0, info.frames, config), lambda seg: None)
    cpu, wall = sum(cpu_split()) - cpu, time.perf_counter() - wall
    assert seen[0] == info.frames, (seen[0], info.frames)
    return cuts, cpu, wall, decided


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


def frame_offset(video: Path, thumbs: list) -> int:
    """Our frame number of OpenCV's frame n is n + this (-2..2): its first 48 frames'
    16x12 thumbnails matched with ours."""
    info = probe(video)
    mine = [cv2.resize(f, (16, 12), interpolation=cv2.INTER_AREA).astype(np.float32)
            for f in FrameReader(info, 0, 52, exact=True)]
    theirs = np.asarray(thumbs, np.float32)
    errors = {d: np.mean([np.abs(theirs[i] - mine[i + d]).mean() for i in range(4, 46)])
              for d in range(-2, 3)}
    return min(errors, key=errors.get)


def scenedetect(python: str, video: Path, detector: str) -> tuple[list[int], float, float]:
    """PySceneDetect's ``detector`` ("content" or "adaptive") at its defaults, in its own
    Python: cuts (its scenes' first frames but the first, in our numbering), CPU and wall
    seconds."""
    out = subprocess.run([python, "-c", SCENEDETECT, str(video), detector],
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    shift = frame_offset(video, got["thumbs"])
    if shift:
        print(f"  {video.name}: PySceneDetect's frame n is our n {shift:+d}")
    return [c + shift for c in got["cuts"]], got["cpu"], got["wall"]


def report(name: str, frames: int, truths: dict[str, list[int]], rows: dict) -> None:
    """Print one clip's table: each method's cuts against each truth and the plan."""
    plan = rows["plan"][0]
    for label, truth in truths.items():
        print(f"  {label} ({len(truth)}): {', '.join(map(str, truth))}")
    heads = "".join(f"{'vs ' + label + ' P/R':>16}" for label in truths)
    print(f"{'method':<9}{'cuts':>5}{heads}{'vs plan P/R':>13}{'CPU ms/frame':>14}"
          f"{'wall s':>8}")
    for method, (cuts, cpu, wall, *_) in rows.items():
        scores = "".join(f"{pr(cuts, truth):>16}" for truth in truths.values())
        print(f"{method:<9}{len(cuts):>5}{scores}{pr(cuts, plan):>13}"
              f"{1000 * cpu / frames:>14.2f}{wall:>8.1f}")
    for method, (cuts, *_) in rows.items():
        print(f"  {method}: {', '.join(map(str, cuts)) or '-'}")
    mine, decode, decided = rows["ours"][0], rows["ours"][3], rows["plan"][3]
    if decided:
        print(f"  at the plan's resets it decides {100 * np.median(decided):.0f}% of the "
              f"cells (median; least {100 * min(decided):.0f}%): the others keep their tiles")
    late = [f for f in plan if f not in mine and f - 1 in mine]
    print(f"  plan and ours: {len(set(plan) & set(mine))} frames the same; the plan one "
          f"frame later at {len(late)} ({', '.join(map(str, late)) or '-'}); other "
          f"differences: {sorted((set(plan) ^ set(mine)) - set(late) - {f - 1 for f in late})}")
    print(f"  ours' CPU: {1000 * decode / frames:.2f} ms/frame in ffmpeg's decoder, "
          f"{1000 * (rows['ours'][1] - decode) / frames:.2f} in Python (cell means, Lab, "
          "the test)")


def truths_of(clip: Path, frames: int) -> dict[str, list[int]]:
    """The true cuts a clip is scored against, by name."""
    if clip.name.startswith("multishot"):
        joins, every = multishot_truth()
        return {"joins": joins, "all cuts": every}
    if clip.name.startswith("bikes3x"):
        return {"all cuts": bikes3x_truth(frames)}
    if clip.name.startswith("megamind"):
        return {"all cuts": megamind_truth(frames)}
    return {}


def parallel(clip: Path, tile_hw: tuple[int, int], ranges: int, sequential: list[int],
             repeats: int) -> None:
    """Print the parallel pass's wall time on 1 and on 2 workers (median of ``repeats``
    alternating runs; the 2 workers started once before) and whether its cuts are the
    sequential pass's."""
    frames = probe(clip).frames
    start = ours_parallel(clip, tile_hw, ranges, 2)[1]  # the workers' start, timed once
    walls: dict[int, list[float]] = {1: [], 2: []}
    same = True
    for _ in range(repeats):
        for workers in (1, 2):
            cuts, wall = ours_parallel(clip, tile_hw, ranges, workers)
            walls[workers].append(wall)
            same &= cuts == sequential
    one, two = (float(np.median(walls[w])) for w in (1, 2))
    print(f"  ours in parallel over {ranges} ranges, median of {repeats}: 1 worker "
          f"{one:.2f} s ({frames / one:.0f} fps), 2 workers {two:.2f} s "
          f"({frames / two:.0f} fps): {one / two:.2f}x; the first call on 2 workers, "
          f"their start included, {start:.2f} s; "
          f"{'the same' if same else 'DIFFERENT'} cuts as the sequential pass every time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", type=Path, default=ROOT / ".cache/media")
    ap.add_argument("--index", type=Path, default=None,
                    help="tile index for the plan (default: MEDIA/photo-index-40k)")
    ap.add_argument("--clips", nargs="+", default=list(CLIPS))
    ap.add_argument("--ranges", type=int, default=4, help="time ranges of the parallel pass")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the parallel pass")
    ap.add_argument("--parallel-only", action="store_true",
                    help="only the state-free pass, sequential and parallel")
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
            results[clip.name] = {"ours": ours(clip, tile_hw)}
            if args.parallel_only:
                continue
            results[clip.name]["plan"] = plan_resets(clip, index, Path(tmp))
            for det in ("content", "adaptive"):
                results[clip.name][det] = scenedetect(args.scenedetect_python, clip, det)
    for clip in clips:  # last: the workers' processes end after every CPU measurement
        rows, frames = results[clip.name], probe(clip).frames
        print(f"\n{clip.name}: {frames} frames")
        if args.parallel_only:
            cpu = rows["ours"][1]
            print(f"  ours: {len(rows['ours'][0])} cuts, {1000 * cpu / frames:.2f} ms CPU "
                  "a frame")
        else:
            report(clip.name, frames, truths_of(clip, frames),
                   {k: rows[k] for k in ("plan", "ours", "content", "adaptive")})
        parallel(clip, tile_hw, args.ranges, rows["ours"][0], args.repeats)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
