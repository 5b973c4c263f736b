"""The ``mosaic`` command's entry point: the local workers' server first, then the command.

A render on local workers forks them from a server process that imports their modules
and loads their compiled kernels, about a CPU-second (:mod:`pipeline.server`). Started
here, before the command line's own libraries load (a quarter of a second more), it
works on the other core while this process imports, probes the input and finds its
shots, and the first task starts that much sooner. Then :func:`pipeline.cli.main` runs
the command as given (which starts the server itself where this did not).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pipeline.server import SCHEDULER_ENV, start_server
from pipeline.stages import WORKER_MODULE


def local_render(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (the arguments after ``mosaic``) may be a render on local workers:
    the ``render`` command without ``--help`` or ``--scheduler`` (or an abbreviation of
    either), and no ``$MOSAIC_SCHEDULER``. Bad usage found later only costs the server's
    start."""
    if not argv or argv[0] != "render" or os.environ.get(SCHEDULER_ENV):
        return False
    for arg in argv[1:]:
        name = arg.split("=", 1)[0]
        if arg == "--":
            break
        if name == "-h" or (len(name) > 3 and name.startswith("--") and
                            ("--help".startswith(name) or "--scheduler".startswith(name))):
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mosaic`` with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if local_render(args):
        start_server(WORKER_MODULE)
    from pipeline.cli import main as cli_main

    return cli_main(args)
