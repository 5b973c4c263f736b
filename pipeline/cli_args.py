"""Argument helpers shared by every ``mosaic`` command's parser (:mod:`pipeline.cli` and
its per-command modules): one-line usage errors, number types with bounds, the common
flags, and the cache folder.
"""

from __future__ import annotations

import argparse
import math
import os
import unicodedata
from pathlib import Path

from pipeline.errors import MosaicError
from pipeline.server import SCHEDULER_ENV


def default_cache() -> Path:
    """The project's cache directory: ``$MOSAIC_CACHE`` or ``./.cache``; an empty
    ``$MOSAIC_CACHE`` (which would mean the current folder) is refused."""
    value = os.environ.get("MOSAIC_CACHE", ".cache")
    if not value.strip():
        raise MosaicError("MOSAIC_CACHE is set but empty; unset it (the cache is then "
                          "./.cache) or name a folder")
    return Path(value)


def one_line(text: str) -> str:
    """``text`` with every control and line-breaking character escaped (a file name may
    hold a newline): an error message stays one line."""
    return "".join(c if c == "\t" or unicodedata.category(c) not in ("Cc", "Zl", "Zp")
                   else c.encode("unicode_escape").decode() for c in text)


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (``error: mosaic render: ...``)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, one_line(f"error: {self.prog}: {message} (see {self.prog} --help)") + "\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]):
        # argparse drops a lone "--" given as an option's value (``--out=--``) and hands
        # back an empty list; it is the value
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


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


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML file overriding the defaults "
                   "(see configs/default.toml)")
    p.add_argument("--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append",
                   default=[], help="override one option, e.g. --set index.clusters=300 "
                   "(repeatable; beats --config)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")


def add_force_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace an existing {what} even "
                   "when it is not of the kind written (never an input, never a folder)")


def add_scheduler_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS", default=os.environ.get(SCHEDULER_ENV),
                   help=f"run the {what} on this Dask cluster, e.g. tcp://HOST:8786 "
                   f"(default: ${SCHEDULER_ENV}; index, input and cache must be on "
                   "storage every worker sees at the same paths)")
