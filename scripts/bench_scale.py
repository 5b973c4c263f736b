#!/usr/bin/env python3
"""Scaling benchmark of the render, in one run: plan alone, painting on 1 worker pinned
to one core and on 2 workers, today's single stream, and whole jobs against the encoder
alone, at preset ultrafast and at the default preset.

Every render is a fresh job (its own cache: nothing reused) started the way users start
it, ``python -m pipeline render ...``, as a subprocess whose whole process tree is
sampled from /proc: peak RSS, and CPU time split into the encoders' (ffmpeg reading
frames from a pipe) and the pipeline's own (plan, paint, decoders, mux). "Today" is the
render of ``--baseline-rev`` (default: the last commit before the plan/paint split),
unpacked from git into a temporary directory and run the same way.

    python scripts/bench_scale.py VIDEO --index DIR [--frames 300] [--frames-default 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_render import encode_floor  # noqa: E402
from benchutil import TreeRss, mib  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.grid import make_grid  # noqa: E402
from pipeline.index import load_index  # noqa: E402
from pipeline.planfile import job_segments, plan_key  # noqa: E402
from pipeline.stages.planner import Planner  # noqa: E402
from pipeline.stages.render import frame_range  # noqa: E402
from pipeline.video import probe  # noqa: E402

BASELINE_REV = "64333b3"  # today's single stream: the render before plan/paint
# today's matching and activity settings (64333b3's defaults): no variety rules, no
# contrast matching, no waiting for motion; isolates the cost of the quality work done
# since then from that of the plan/paint architecture
TODAYS_SETTINGS = ["render.nprobe=4", "render.candidates=6", "render.recolour=0.6",
                   "render.activity_threshold=16", "render.settle=0", "render.tone=0",
                   "render.repeat_radius=0", "render.use_cap=0", "render.unseen=0",
                   "render.joint=false"]


@dataclass
class Run:
    """One measured render."""

    name: str
    frames: int
    wall: float
    own_cpu: float
    encoder_cpu: float
    peak: int
    out: Path

    @property
    def fps(self) -> float:
        return self.frames / self.wall

    def line(self) -> str:
        own, enc = (1000 * t / self.frames for t in (self.own_cpu, self.encoder_cpu))
        return (f"{self.name:34s} {self.fps:7.2f} fps  own CPU {own:6.1f} ms/frame  "
                f"encoder CPU {enc:6.1f} ms/frame  peak RSS {mib(self.peak)}")


def render(name: str, code: Path, video: str, index: str, work: Path, frames: int,
           args: list[str], cpus: str | None = None) -> Run:
    """Run one render as users do and sample its process tree."""
    out = work / f"{name.replace(' ', '_').replace(',', '')}.mp4"
    cmd = [sys.executable, "-m", "pipeline", "render", video, "--index", index,
           "--out", str(out), "--frames", str(frames), "--quiet", *args]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    env = {**os.environ, "MOSAIC_CACHE": str(work / f"cache-{out.stem}"),
           "PYTHONPATH": str(code)}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=code, env=env)
    sampler = TreeRss(proc.pid, interval=0.02)
    if proc.wait() != 0:
        sampler.stop()
        raise SystemExit(f"{name}: render failed ({' '.join(cmd)})")
    wall = time.perf_counter() - t
    peak = sampler.stop()
    return Run(name, frames, wall, sampler.cpu_own, sampler.cpu_encoder, peak, out)


def plan_alone(video: str, index_dir: str, work: Path, frames: int, overrides: list[str]
               ) -> tuple[float, int, int]:
    """Plan fps on its own (no painting), and the plan's size in bytes and chunks."""
    config = load_config(None, overrides).render
    index = load_index(index_dir)
    info = probe(video)
    grid = make_grid(info.height, info.width, index.tiles.shape[1:3], config.scale)
    first, count = frame_range(info, 0.0, None, frames)
    segments = job_segments(first, count, config)
    plan_dir = work / "plan-alone"
    planner = Planner(info, grid, index, config, plan_dir,
                      plan_key("bench", index.digest, config, first, count))
    t = time.perf_counter()
    planner.run(segments, lambda seg: None)
    elapsed = time.perf_counter() - t
    size = sum(p.stat().st_size for p in plan_dir.glob("chunk-*.npz"))
    return count / elapsed, size, len(segments)


def baseline_tree(rev: str, dest: Path) -> Path:
    """The code of ``rev``, unpacked from git (no checkout of the working tree)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pipeline"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--index", required=True)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--frames", type=int, default=300, help="frames at preset ultrafast")
    ap.add_argument("--frames-default", type=int, default=100,
                    help="frames at the default preset (slow)")
    ap.add_argument("--segment-frames", type=int, default=50,
                    help="frames per segment in every run (enough segments to share)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--skip-default", action="store_true", help="only preset ultrafast")
    args = ap.parse_args()
    args.video, args.index = str(Path(args.video).resolve()), str(Path(args.index).resolve())

    info = probe(args.video)
    default_preset = load_config().render.preset
    print(f"machine: {os.cpu_count()} cores; {args.video}: {info.width}x{info.height} "
          f"@ {float(info.rate):.3f} fps, scale {args.scale}; index {args.index}; "
          f"today = {args.baseline_rev}; segments of {args.segment_frames} frames")
    scale = ["--scale", str(args.scale), "--set",
             f"render.segment_frames={args.segment_frames}"]
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        work = Path(tmp)
        today = baseline_tree(args.baseline_rev, Path(tempfile.mkdtemp(dir=work)))
        fps, size, chunks = plan_alone(args.video, args.index, work, args.frames,
                                       [f"render.scale={args.scale}",
                                        f"render.segment_frames={args.segment_frames}"])
        print(f"plan alone: {fps:.1f} fps over {args.frames} frames; plan {size / 2**20:.2f} MiB "
              f"in {chunks} chunks = {size / args.frames / 1024:.1f} KiB/frame")

        fast = [*scale, "--preset", "ultrafast"]
        one = render("ultrafast, 1 worker on core 0", ROOT, args.video, args.index, work,
                     args.frames, [*fast, "--workers", "1", "--set",
                                   "render.encoder_threads=1"], cpus="0")
        two = render("ultrafast, 2 workers x 1 thread", ROOT, args.video, args.index, work,
                     args.frames, [*fast, "--workers", "2", "--set",
                                   "render.encoder_threads=1"])
        auto = render("ultrafast, default workers", ROOT, args.video, args.index, work,
                      args.frames, fast)
        same = render("ultrafast, 2 workers, today's settings", ROOT, args.video, args.index,
                      work, args.frames, [*fast, "--workers", "2", "--set",
                                          "render.encoder_threads=1",
                                          *(x for o in TODAYS_SETTINGS for x in ("--set", o))])
        old = render("ultrafast, today's single stream", today, args.video, args.index, work,
                     args.frames, fast)
        for run in (one, two, auto, same, old):
            print(run.line())
        floor, _ = encode_floor(two.out, work, load_config(None, [], {
            "render.preset": "ultrafast"}).render)
        active = _active_share(two)
        print(f"encode-only floor (ultrafast): {floor:.2f} fps; {100 * active:.0f}% of cells "
              f"active per frame")
        print(f"  2 workers / 1 worker on one core  = {two.fps / one.fps:.2f}x")
        print(f"  own CPU per frame, ours / today's = {two.own_cpu / old.own_cpu:.2f} "
              f"({1000 * two.own_cpu / two.frames:.1f} against "
              f"{1000 * old.own_cpu / old.frames:.1f} ms)")
        print(f"  own CPU per frame with today's settings, ours / today's = "
              f"{same.own_cpu / same.frames / (old.own_cpu / old.frames):.2f}")
        print(f"  whole job / encode-only: ours {auto.fps / floor:.2f}, today's "
              f"{old.fps / floor:.2f}")
        seg_bytes = sum(p.stat().st_size
                        for p in work.glob(f"cache-{two.out.stem}/render/*/seg-*.mp4"))
        print(f"  segment files: {seg_bytes / args.frames / 1024:.1f} KiB/frame; paint CPU "
              f"{1000 * (one.own_cpu / one.frames):.1f} ms/frame on 1 worker incl. plan")
        if args.skip_default:
            return
        ours = render(f"{default_preset}, default workers", ROOT, args.video, args.index, work,
                      args.frames_default, scale)
        old = render(f"{default_preset}, today's single stream", today, args.video, args.index,
                     work, args.frames_default, scale)
        for run in (ours, old):
            print(run.line())
        floor, _ = encode_floor(ours.out, work, load_config().render)
        print(f"encode-only floor ({default_preset}): {floor:.2f} fps")
        print(f"  whole job / encode-only: ours {ours.fps / floor:.2f}, today's "
              f"{old.fps / floor:.2f}; ours / today's = {ours.fps / old.fps:.2f}x")


def _active_share(run: Run) -> float:
    import json

    done = next(Path(run.out.parent).glob(f"cache-{run.out.stem}/render/*/done.json"))
    return json.loads(done.read_text())["active_share"]


if __name__ == "__main__":
    main()
