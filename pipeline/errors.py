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


class ArtifactCorruptError(MosaicError):
    """An artifact on disk cannot be read back."""
