"""Measure ``mosaic live`` in real time: frames shown per second, end-to-end latency,
dropped frames, CPU and memory, for each clip fed at ``--fps`` (30 by default).

A clip whose own rate is not ``--fps`` is first re-timed to it (ffmpeg's ``fps`` filter,
x264 at CRF 12, into a temporary file: frames repeated or dropped, evenly spaced), so
that it is fed at an even 30 frames a second: fed to ``mosaic live --fps 30`` as it is,
a 10 fps clip's repeated frames would come out of ffmpeg three at a time. The share of
repeated frames is printed (a repeated frame is a still frame: little work).

For each clip the script starts ``mosaic live CLIP --index DIR --loop --fps 30 --port 0``
as a user does (default live settings otherwise), connects one viewer to its MJPEG
stream that takes every frame as fast as it can, lets it warm up (the first frame
builds a whole canvas, and the cell count settles), then measures for ``--seconds``:

* frames shown: MJPEG frames the viewer received per second;
* latency: from the moment a frame's last byte was read from ffmpeg to the moment its
  JPEG was sent (the server's own figure, over its last 300 frames) and to the moment
  the viewer had received all of it (each part carries its read time, on the same
  monotonic clock: every frame of the window);
* dropped: source frames never shown (the reader keeps only the newest);
* CPU: seconds of CPU per second of the whole process tree (ffmpeg included), and
  its peak resident memory;
* the cells across the governor picked, and the load average of the machine.

    python scripts/bench_live.py CLIP [CLIP ...] --index DIR [--seconds 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import TreeRss, mib

from pipeline.video import ffmpeg_exe, probe


class Viewer(threading.Thread):
    """A fast MJPEG client: records (received at, read at, frame number) per frame."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.frames, self.stop = port, [], threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/stream.mjpg")
        with conn.getresponse() as f:  # chunked: http.client takes the chunks apart
            while not self.stop.is_set():
                head = {}
                while (line := f.readline().strip()) != b"":
                    if b":" in line:
                        k, v = line.split(b":", 1)
                        head[k.strip().lower()] = v.strip()
                    elif not line.startswith(b"--"):
                        return
                if b"content-length" not in head:
                    return
                f.read(int(head[b"content-length"]) + 2)
                self.frames.append((time.monotonic(), float(head[b"x-read-at"]),
                                    int(head[b"x-frame"])))


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return json.loads(r.read())


def bench(clip: str, index: str, fps: float, warmup: float, seconds: float,
          extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "pipeline", "live", clip, "--index", index, "--loop",
           "--fps", f"{fps:g}", "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = TreeRss(proc.pid, interval=0.2)
    try:
        line = proc.stdout.readline()
        if not line.startswith("live: http"):
            raise SystemExit(f"mosaic live did not start: {line}{proc.stderr.read()}")
        port = int(line.split()[1].rstrip("/").rsplit(":", 1)[1])
        viewer = Viewer(port)
        viewer.start()
        time.sleep(warmup)
        load0, s0, cpu0, t0 = os.getloadavg(), stats(port), rss.cpu_own + rss.cpu_encoder, \
            time.monotonic()
        cols = []
        while time.monotonic() < t0 + seconds:
            time.sleep(1)
            cols.append(stats(port)["cells"]["cols"])
        s1, cpu1, t1 = stats(port), rss.cpu_own + rss.cpu_encoder, time.monotonic()
        load1 = os.getloadavg()
        viewer.stop.set()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        peak = rss.stop()
    window = [f for f in viewer.frames if t0 <= f[0] <= t1]
    lat = sorted(r - a for r, a, _ in window)
    read = s1["read"] - s0["read"]
    return {
        "clip": Path(clip).name, "seconds": round(t1 - t0, 1),
        "shown_fps": round(len(window) / (t1 - t0), 2), "engine_fps": s1["fps"],
        "received_ms": {"p50": round(1000 * statistics.median(lat), 1) if lat else None,
                        "p95": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1) if lat
                        else None},
        "sent_ms": s1["latency_ms"], "work_ms": s1["work_ms"],
        "dropped": s1["dropped"] - s0["dropped"], "read": read,
        "cols": {"min": min(cols), "median": statistics.median(cols), "max": max(cols)},
        "rows_at_end": s1["cells"]["rows"], "size_at_end": s1["size"],
        "cpu_per_s": round((cpu1 - cpu0) / (t1 - t0), 2), "peak_rss": mib(peak),
        "load": [round(load0[0], 2), round(load1[0], 2)],
    }


def retimed(clip: str, fps: float, folder: str) -> tuple[str, float]:
    """``clip`` at ``fps`` frames a second (itself when it already is); the share of its
    frames that repeat the one before."""
    rate = float(probe(clip).rate or 0)
    if abs(rate - fps) < 0.01:
        return clip, 0.0
    out = str(Path(folder) / f"{Path(clip).stem}-{fps:g}fps.mp4")
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", clip,
                    "-vf", f"fps={fps:g}", "-c:v", "libx264", "-crf", "12", "-preset",
                    "veryfast", "-pix_fmt", "yuv420p", "-an", out], check=True)
    return out, max(0.0, 1 - rate / fps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clips", nargs="+")
    p.add_argument("--index", required=True)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--live-args", default="", help="more options for mosaic live")
    args = p.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        for clip in args.clips:
            fed, repeated = retimed(clip, args.fps, tmp)
            r = bench(fed, args.index, args.fps, args.warmup, args.seconds,
                      args.live_args.split())
            r["clip"], r["repeated_frames"] = Path(clip).name, round(repeated, 3)
            report(r)


def report(r: dict) -> None:
    print(f"{r['clip']} ({r['repeated_frames']:.0%} repeated frames): "
          f"{r['shown_fps']} frames shown/s (engine {r['engine_fps']}), "
          f"latency read->sent p50 {r['sent_ms']['p50']} ms p95 {r['sent_ms']['p95']} ms"
          f", read->received p50 {r['received_ms']['p50']} ms p95 "
          f"{r['received_ms']['p95']} ms; dropped {r['dropped']} of {r['read']}; cells "
          f"{r['cols']['min']}..{r['cols']['max']} (median {r['cols']['median']}); "
          f"work {r['work_ms']} ms/frame; CPU {r['cpu_per_s']} s/s; peak RSS "
          f"{r['peak_rss']}; load {r['load'][0]} -> {r['load'][1]}", flush=True)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
