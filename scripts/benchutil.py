"""Helpers shared by the benchmark scripts: peak RSS and CPU time of a process tree."""

from __future__ import annotations

import itertools
import os
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK")


def is_encoder(cmdline: list[str]) -> bool:
    """Whether a process is a video encoder fed through a pipe (ffmpeg ... -i - ...)."""
    return bool(cmdline) and "ffmpeg" in os.path.basename(cmdline[0]) and any(
        a == "-i" and b == "-" for a, b in itertools.pairwise(cmdline))


class TreeRss:
    """Sample the summed VmRSS of a process and all its descendants from /proc, and the
    CPU time of each process (user + system), split into encoders and the rest.

    Shared pages count once per process, so the RSS figure is an upper bound. CPU time
    is the last value sampled for each process: a process loses at most one sampling
    interval of its time when it exits.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self.peak_root = 0  # the root process alone
        self.peak_children = 0  # its descendants together (e.g. ffmpeg)
        self._cpu: dict[int, float] = {}  # pid -> seconds
        self._encoder: dict[int, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
        out, stack = [], [self.pid]
        while stack:
            p = stack.pop()
            out.append(p)
            stack.extend(children.get(p, []))
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            total = root = 0
            for p in self._tree():
                try:
                    if not self._encoder.get(p):
                        # read again until it is an encoder: a child caught between fork
                        # and exec still shows its parent's command line
                        with open(f"/proc/{p}/cmdline", "rb") as f:
                            argv = f.read().decode(errors="replace").split("\0")
                        self._encoder[p] = is_encoder(argv)
                    with open(f"/proc/{p}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    self._cpu[p] = (int(fields[11]) + int(fields[12])) / _TICK
                    with open(f"/proc/{p}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                rss = int(line.split()[1]) * 1024
                                total += rss
                                root = rss if p == self.pid else root
                except OSError:
                    pass
            self.peak = max(self.peak, total)
            self.peak_root = max(self.peak_root, root)
            self.peak_children = max(self.peak_children, total - root)
            time.sleep(self.interval)

    def stop(self) -> int:
        """Stop sampling; returns the peak in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak

    @property
    def cpu_encoder(self) -> float:
        """CPU seconds of the encoder processes."""
        return sum(t for p, t in self._cpu.items() if self._encoder.get(p))

    @property
    def cpu_own(self) -> float:
        """CPU seconds of everything else: the pipeline's processes and its decoders."""
        return sum(t for p, t in self._cpu.items() if not self._encoder.get(p))


def mib(n: float) -> str:
    """Format a byte count in MiB."""
    return f"{n / 2**20:,.1f} MiB"


def run_sampled(cmd: list[str], **popen) -> tuple[float, int, str, int]:
    """Run ``cmd`` to completion while sampling its process tree's RSS.

    Returns (seconds, peak RSS in bytes, stderr text, exit code).
    """
    import subprocess

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, **popen)
    rss = TreeRss(proc.pid)
    _, err = proc.communicate()
    elapsed = time.perf_counter() - start
    return elapsed, rss.stop(), err, proc.returncode
