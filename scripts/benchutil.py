"""Helpers shared by the benchmark scripts: peak RSS of a process tree."""

from __future__ import annotations

import os
import threading
import time


class TreeRss:
    """Sample the summed VmRSS of a process and all its descendants from /proc.

    Shared pages count once per process, so the figure is an upper bound.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self.peak_root = 0  # the root process alone
        self.peak_children = 0  # its descendants together (e.g. ffmpeg)
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


def mib(n: float) -> str:
    """Format a byte count in MiB."""
    return f"{n / 2**20:,.1f} MiB"
