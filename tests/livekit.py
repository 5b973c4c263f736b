"""Helpers of the ``mosaic live`` tests: a live process started as users start it, its
HTTP answers, and generated clips (standard library, numpy and the bundled ffmpeg)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


class LiveProcess:
    """``mosaic live ARGS --port 0`` in a session of its own (as a terminal runs it); the
    page's address is read from its first line of output."""

    def __init__(self, *args: str | Path, port: bool = True, ready: float = 90) -> None:
        cmd = [sys.executable, "-m", "pipeline", "live", *map(str, args)]
        if port:
            cmd += ["--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True, cwd=REPO)
        self.out, self.err = "", ""
        self.url = self._read_url(ready)

    def _read_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            if not select.select([self.proc.stdout], [], [], 0.2)[0]:
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            self.out += line
            if line.startswith("live: http"):
                return line.split()[1]
            if not line and self.proc.poll() is not None:
                break
        code, out, err = self.stop()
        raise AssertionError(f"mosaic live gave no address (exit {code}): {out} {err}")

    def get(self, path: str, timeout: float = 10, data: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stats(self) -> dict:
        return json.loads(self.get("/stats")[2])

    def control(self, **changes: object) -> tuple[int, dict]:
        code, _, body = self.get("/control", data=json.dumps(changes).encode(),
                                 headers={"Content-Type": "application/json"})
        return code, json.loads(body)

    def wait_for(self, check, timeout: float = 60, what: str = "a condition") -> dict:
        """Poll the stats until ``check(stats)`` holds; the stats."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.stats()
            if check(s):
                return s
            time.sleep(0.2)
        raise AssertionError(f"{what} did not happen in {timeout} s; stats: {s}")

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> tuple[int, str, str]:
        """Send ``sig`` to its process group (as Ctrl-C in a terminal does); its exit
        code and output."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate()
        self.out, self.err = self.out + out, self.err + err
        return self.proc.returncode, self.out, self.err

    def __enter__(self) -> LiveProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StreamFrames:
    """A viewer of ``/stream.mjpg`` on a thread, keeping every part it receives as
    (source frame number, JPEG bytes); use as a context manager."""

    def __init__(self, port: int) -> None:
        import http.client
        import threading

        self.frames: list[tuple[int, bytes]] = []
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._conn.request("GET", "/stream.mjpg")
        with self._conn.getresponse() as f, contextlib.suppress(OSError, ValueError):
            while not self._stop.is_set():
                head = {}
                while (line := f.readline().strip()) != b"":
                    if b":" in line:
                        k, v = line.split(b":", 1)
                        head[k.strip().lower()] = v.strip()
                if b"content-length" not in head:
                    return
                jpeg = f.read(int(head[b"content-length"]))
                f.read(2)
                self.frames.append((int(head[b"x-frame"]), jpeg))

    def __enter__(self) -> StreamFrames:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._conn.sock is not None:
            with contextlib.suppress(OSError):
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)


def ffmpeg_frames(path: Path, frames, size: tuple[int, int], fps: int = 25) -> Path:
    """Encode (H, W, 3) uint8 BGR ``frames`` (an iterable) as H.264 with the bundled
    ffmpeg (test media only)."""
    import imageio_ffmpeg

    w, h = size
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", str(fps),
           "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for frame in frames:
        proc.stdin.write(np.ascontiguousarray(frame).tobytes())
    proc.stdin.close()
    assert proc.wait() == 0
    return path


def astronaut_head() -> np.ndarray:
    """scikit-image's astronaut, cut to her head and shoulders: (203, 180, 3) uint8 BGR."""
    import cv2
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return cv2.resize(img[0:260, 100:330], (180, 203), interpolation=cv2.INTER_AREA)


def astronaut_clip(path: Path, seconds: float = 8.0, appear: float = 1.0, fps: int = 25
                   ) -> Path:
    """640x480: a green field, then from ``appear`` seconds the astronaut's head moving
    across it (a face of about 80 pixels)."""
    head = astronaut_head()
    hh, hw = head.shape[:2]

    def frames():
        for i in range(round(seconds * fps)):
            frame = np.full((480, 640, 3), (40, 90, 30), np.uint8)
            t = i / fps - appear
            if t >= 0:
                x = int(40 + (t * 60) % (640 - hw - 80))
                y = int(120 + 30 * np.sin(t * 2))
                frame[y:y + hh, x:x + hw] = head
            yield frame

    return ffmpeg_frames(path, frames(), (640, 480), fps)


def ffmpeg_processes(marker: str) -> list[str]:
    """Command lines of the running ffmpeg processes that mention ``marker``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and "ffmpeg" in os.path.basename(argv[0]) and any(marker in a for a in argv):
            found.append(" ".join(argv))
    return found
