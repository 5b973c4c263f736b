"""The process heap: glibc's allocator kept from growing over a long render.

Frames and tile batches are megabytes each and are allocated and freed on several
threads; :func:`steady_heap` makes glibc hand large blocks straight back, and
:func:`trim_heap` returns what is freed between segments. Both are no-ops where glibc
is not the C library.
"""

from __future__ import annotations

import contextlib
import ctypes


def trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``); else no-op.

    Called between segments, in the planner and in each painter.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def steady_heap() -> None:
    """Make glibc return large freed blocks to the system at once (this process).

    With glibc's adaptive mmap threshold, frame-sized blocks end up in growing heap
    arenas, and the resident size creeps up with the video's length. A fixed 8 MiB
    threshold and two arenas keep it flat. No-op where glibc's ``mallopt`` is not
    available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD: fixed, no adaptive growth
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
