"""Exceptions raised by the pipeline.

Every error a user can cause derives from :class:`MosaicError`; the CLI turns it into a
one-line message and a non-zero exit code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MosaicError(Exception):
    """Base class of every expected, user-facing failure."""


class ConfigError(MosaicError):
    """A configuration key is unknown or its value is invalid."""


class CorpusError(MosaicError):
    """The image corpus is missing, empty, or too small to index."""


class TileIndexError(MosaicError):
    """A tile index directory is missing, incomplete, or does not match its manifest."""


class VideoError(MosaicError):
    """An input video is missing, unreadable, truncated, or cannot be downloaded."""


class FFmpegError(MosaicError):
    """An ffmpeg run failed; carries the tail of its stderr."""

    def __init__(self, what: str, stderr: str) -> None:
        lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        tail = " | ".join(lines[-3:])
        super().__init__(f"{what}: ffmpeg failed" + (f": {tail}" if tail else ""))
        self.what, self.stderr = what, stderr

    def __reduce__(self) -> tuple:  # crosses process boundaries (worker -> client) intact
        return (type(self), (self.what, self.stderr))


class ToolError(MosaicError):
    """A program or file the tool runs with is missing or broken (ffmpeg, the face model)."""


class ImageError(MosaicError):
    """An input image is missing, unreadable or not an image."""


class PlanError(MosaicError):
    """A render's plan is missing a chunk it needs (removed or damaged while it ran)."""


class PhotoError(MosaicError):
    """A still mosaic cannot be made with these options: the index has too few distinct
    tiles for the hard rules, or the matching would not fit in memory."""


class SchedulerError(MosaicError):
    """The Dask scheduler given cannot be used (Dask missing, or unreachable)."""


class CleanError(MosaicError):
    """The folder given to ``mosaic clean`` is not one it may clean."""


class DiskFullError(MosaicError):
    """A write failed because its filesystem is full (or a size limit was hit)."""


class LockedError(MosaicError):
    """Another run holds the lock of a job or directory this run needs."""


class OutputError(MosaicError):
    """An output path is unsafe (it is an input), unwritable, or names no known container."""


class IndexChangedError(TileIndexError):
    """The tile index a render planned with was rebuilt while the render ran."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C (the CLI turns it into exit code 128 + N)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
