"""Work run ahead of its consumer, in order, on a thread of its own (bounded).

The planner runs each frame's activity mask this way (:meth:`pipeline.plan.PlanEngine.marked`):
the mask is a chain over the frames, but nothing the choice does touches it, so it can
run ahead of the choice's chain instead of inside it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")
_END = object()


def run_ahead(items: Iterable[T], fn: Callable[[T], U], depth: int,
              name: str = "mosaic-ahead") -> Generator[U, None, None]:
    """``fn`` of each of ``items``, in order, computed on a thread of its own at most
    ``depth`` results ahead of the caller. An error there is raised here, in its place
    in the order. Closing the generator (or leaving it early) stops the thread, which
    then closes ``items`` (it is the only thread iterating them)."""
    results: queue.Queue = queue.Queue(max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def pump() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                put(fn(item))
            put(_END)
        except BaseException as exc:  # handed to the consumer
            put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=pump, daemon=True, name=name)
    thread.start()
    try:
        while (item := results.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
