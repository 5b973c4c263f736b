"""The live loop's pace: frames made per second, end-to-end latency, and the cell count
that holds the frame rate.

:class:`Pace` keeps rolling figures: when each frame was made and how long the engine
worked on it, and the latency of each frame sent (from the moment its last byte was
read from ffmpeg to the moment its JPEG was written to a client).

:class:`CellGovernor` picks the cells across in auto mode. The engine's work grows
with the cells (about with their number, the square of the cells across), so when the
work of recent frames takes more than :data:`HIGH` of the frame's time, the cells
across shrink by the square root of the excess; when it takes less than :data:`LOW`,
they grow back (by at most :data:`GROW` at a time), up to the starting count. A
change restarts the canvas (a cold frame), so decisions wait :data:`SETTLE_S` seconds
after each.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np

HIGH = 0.8  # work over this share of the frame period: fewer cells
LOW = 0.45  # under this share: more cells (up to the start)
TARGET = 0.65  # the share a shrink aims for
SETTLE_S = 3.0  # seconds between decisions (and after a restart) of the governor
MIN_AUTO_COLS = 16  # auto mode goes no lower
GROW = 1.25  # cells across grow by at most this factor at a time


class Pace:
    """Rolling figures of the live loop (times from ``time.monotonic()``): written by the
    engine thread and the server's, read by both (under one lock)."""

    def __init__(self, window: float = 2.0, samples: int = 300) -> None:
        self.window = window
        self._made: deque[tuple[float, float]] = deque()  # (made at, work seconds)
        self._latency: deque[float] = deque(maxlen=samples)
        self.frames = 0  # made in all
        self.sent = 0  # JPEGs written to clients in all
        self._lock = threading.Lock()

    def made(self, work: float, at: float | None = None) -> None:
        """A frame was made after ``work`` seconds of engine time."""
        at = time.monotonic() if at is None else at
        with self._lock:
            self._made.append((at, work))
            self.frames += 1
            while self._made and self._made[0][0] < at - self.window:
                self._made.popleft()

    def delivered(self, latency: float) -> None:
        """A frame reached a client ``latency`` seconds after it was read."""
        with self._lock:
            self._latency.append(latency)
            self.sent += 1

    def fps(self, now: float | None = None) -> float:
        """Frames made per second over the last window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t, _ in self._made if t >= now - self.window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def work(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of recent frames' engine seconds (0 if none)."""
        with self._lock:
            work = [w for _, w in self._made]
        return float(np.percentile(work, q)) if work else 0.0

    def latency_ms(self) -> tuple[float, float]:
        """Median and 95th percentile of recent latencies, milliseconds (0 if none)."""
        with self._lock:
            latency = np.asarray(self._latency)
        if not len(latency):
            return 0.0, 0.0
        p50, p95 = np.percentile(latency, [50, 95])
        return round(float(p50) * 1000, 1), round(float(p95) * 1000, 1)

    @property
    def recent(self) -> int:
        """Frames made within the window."""
        return len(self._made)

    def reset_work(self) -> None:
        """Forget the work times (the cells changed: they no longer tell)."""
        with self._lock:
            self._made.clear()


class CellGovernor:
    """Cells across for auto mode (see the module doc): between :data:`MIN_AUTO_COLS`
    and ``start``, for frames every ``period`` seconds."""

    def __init__(self, start: int, period: float) -> None:
        self.start, self.period = start, period
        self.low = min(MIN_AUTO_COLS, start)
        self._since = time.monotonic()

    def restarted(self, now: float | None = None) -> None:
        """The canvas restarted: wait before the next decision."""
        self._since = time.monotonic() if now is None else now

    def suggest(self, cols: int, pace: Pace, now: float | None = None) -> int | None:
        """The cells across to change to, or None to keep ``cols``."""
        now = time.monotonic() if now is None else now
        if now - self._since < SETTLE_S or pace.recent < 10:
            return None
        busy = pace.work(75) / self.period
        if busy > HIGH and cols > self.low:
            new = max(self.low, min(cols - 2, math.floor(cols * math.sqrt(TARGET / busy))))
        elif (calm := pace.work(90) / self.period) < LOW and cols < self.start:
            grow = min(GROW, math.sqrt(TARGET / max(calm, 1e-3)))
            new = min(self.start, max(cols + 2, math.floor(cols * grow)))
        else:
            return None
        self._since = now
        return new
