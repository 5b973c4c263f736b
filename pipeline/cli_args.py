"""Argument helpers shared by the ``mosaic`` subcommands: number types for argparse and
the cache directory. Imports nothing of the command line, so every command module may
import it without a cycle.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from pipeline.errors import MosaicError


def default_cache() -> Path:
    """The project's cache directory: ``$MOSAIC_CACHE`` or ``./.cache``; an empty
    ``$MOSAIC_CACHE`` (which would mean the current folder) is refused."""
    value = os.environ.get("MOSAIC_CACHE", ".cache")
    if not value.strip():
        raise MosaicError("MOSAIC_CACHE is set but empty; unset it (the cache is then "
                          "./.cache) or name a folder")
    return Path(value)


def number(kind: type, low: float | None = None, above: float | None = None,
           high: float | None = None):
    """An argparse type: an int or finite float, at least ``low`` / more than ``above``
    and at most ``high``."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (low is not None and value < low) or (above is not None and value <= above):
            bound = f"at least {low}" if low is not None else f"more than {above}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


FLOAT = number(float)  # any finite number (the config checks its range)
SECONDS = number(float, low=0)
POSITIVE = number(float, above=0)
COUNT = number(int, low=1)
