"""What a local render worker has loaded before its first task.

Imported once, by the process the local workers are forked from
(:func:`pipeline.server.start_server`), while the client sets the job up: the plan and
paint tasks' modules, and the compiled search, variety rules, tile placement and
measure, cube roots and block sums (numba's load, about 0.7 CPU-s; on a fresh install
their compile). Each worker forked from it then starts its first task at once, where a
fresh interpreter spent 1-1.5 CPU-s on this.
Where a kernel cannot load, the task falls back to numpy as it would in a fresh worker.
"""

import numpy as np

import pipeline.paint
import pipeline.stages.planner  # noqa: F401
from pipeline.assign import load_compiled
from pipeline.compose import compiled_measure, compiled_placing
from pipeline.features import cbrt
from pipeline.search import compiled_scan

compiled_scan()
load_compiled()
compiled_placing(0)
compiled_measure(16, 16, 4)  # (loaded and checked once, whatever the tile size)
cbrt(np.ones(1, np.float32))
