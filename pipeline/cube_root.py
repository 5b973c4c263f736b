"""Cube roots of float32 values, compiled where that gives numpy's bits.

CIELAB (:func:`pipeline.features.srgb_to_lab`) takes a cube root of every colour
channel the tool measures: a tile's and a cell's sub-grid colours, every frame's cells,
about 130,000 values a frame at 2560x1920 on a busy clip. numpy's ``cbrt`` is the C
library's ``cbrtf`` one value at a time, about 20 ns a value here.

:mod:`pipeline.cube_root_compiled` writes out glibc's ``cbrtf`` (glibc 2.36: a
quadratic first guess on the mantissa, one Halley step in double precision, the
exponent's third) in a loop the compiler vectorises: about 4 ns a value, and numpy's bits
on this machine (tested on every 7th float32 from 1e-30 to 8 and on every special
value). :func:`cbrt` uses it in a process that has loaded numba (a render worker) once
it has checked it against numpy's ``cbrt`` on a spread of values; where the C library
differs (another libc or glibc version), or elsewhere, numpy's ``cbrt`` runs, so that
every process of a job takes the same roots.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_compiled: Any = None  # the compiled kernel: not tried yet (None), not used (False), loaded
# the check: 2^16 float32 spread over every exponent, both signs, and the special values
_CHECK = np.concatenate([np.arange(0, 2**31, 2**15 + 1, dtype=np.int64).astype(np.int32),
                         np.array([np.float32(v).view(np.int32) for v in
                                   (0.0, -0.0, 1e-45, -1e-40, np.inf, -np.inf, np.nan)])])


def cbrt(x: np.ndarray) -> np.ndarray:
    """Cube root of each value of ``x`` (any shape, float32): float32 like ``x``, the bits
    of numpy's ``cbrt``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if (kernel := _kernel()) is None:
        return np.cbrt(x)
    out = np.empty_like(x)
    kernel(x.reshape(-1), out.reshape(-1))
    return out


def _kernel() -> Any:
    """:func:`pipeline.cube_root_compiled.cbrt_into` where numba is already loaded in this
    process and the kernel gives numpy's bits, else None."""
    global _compiled
    if _compiled is None:
        if "numba" not in sys.modules:
            return None
        _compiled = False
        try:
            from pipeline.cube_root_compiled import cbrt_into

            values = np.concatenate([_CHECK, -_CHECK]).view(np.float32)
            got = np.empty_like(values)
            cbrt_into(values, got)
            with np.errstate(all="ignore"):
                want = np.cbrt(values)
            if np.array_equal(got.view(np.int32), want.view(np.int32)) or \
                    np.array_equal(got, want, equal_nan=True):
                _compiled = cbrt_into
            else:
                log.debug("this C library's cbrtf is not glibc 2.36's: numpy's cbrt is used")
        except Exception as e:  # any failure of the compiler: numpy goes on
            log.warning("the compiled cube root could not be loaded (%s: %s); using numpy",
                        type(e).__name__, e)
    return _compiled or None
