"""The lists a query probes: the ``m`` of nearest centroid, picked compiled (numba).

:func:`nearest_columns` finishes each query's row of squared distances to the centroids
(``a @ (-2 b).T`` plus the two squared norms, clipped at 0: the bits the numpy search's
``_sq_dist`` gives) and keeps the ``m`` least, ties to the lower column: the columns
:func:`pipeline.search.smallest_sorted` gives. Each value is keyed with its column (the
value's bits, then the column: non-negative floats order as their bits), so the ``m``
least keys are the same whatever order the values are read in.

That lets a row be read chunk by chunk, best first. The centroids are laid out in chunks
of :data:`CHUNK` that lie close together (:func:`centroid_order`, the columns of the
products in that order); each chunk's least value is taken in one vector instruction
(:func:`_chunk_min`), the chunk holding the row's least is read first, and a chunk whose
least is past the ``m``-th key so far is not read at all. On a busy clip's queries the
pick takes about a third less CPU than reading every value in column order, where about
forty of the five hundred values of a row entered the ``m`` best.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

CHUNK = 16  # columns read together: one 512-bit vector of float32
_I32 = ir.IntType(32)
NO_KEY = np.int64(0x7FFFFFFFFFFFFFFF)  # an empty slot's key: after every real one


@intrinsic
def _chunk_min(typingctx, bits, start):  # pragma: no cover - compiled
    """The least of ``bits[start:start + CHUNK]`` (int32, C-contiguous): one vector
    load, then a tree of compares."""
    if not (isinstance(bits, types.Array) and bits.dtype == types.int32 and bits.ndim == 1
            and bits.layout == "C"):
        return None
    sig = types.int32(bits, types.intp)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        vector = ir.VectorType(_I32, CHUNK)
        v = builder.load(builder.bitcast(builder.gep(array.data, [args[1]]),
                                         vector.as_pointer()), align=4)
        width = CHUNK
        while width > 1:
            half = width // 2
            lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, half),
                                                          list(range(half))))
            hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, half),
                                                          list(range(half, width))))
            v = builder.select(builder.icmp_signed("<", lo, hi), lo, hi)
            width = half
        return builder.extract_element(v, _I32(0))

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def insert_key(best, key):  # pragma: no cover - compiled
    """Put ``key`` (a value's bits, then an id), less than the last, into the best so
    far, ``best`` (k,) int64, kept sorted: the last drops out. (Inlined into
    :mod:`pipeline.scan` too, whose cache is keyed by its own file: after a change here,
    touch that file so that it compiles again.)"""
    b = best.shape[0] - 1
    while b > 0 and best[b - 1] > key:
        best[b] = best[b - 1]
        b -= 1
    best[b] = key


@numba.njit(cache=True, nogil=True, inline="always")
def _read_chunk(bits, columns, lo, hi, best):  # pragma: no cover - compiled
    """Put the keys of values ``lo:hi`` (their bits ``bits``, their own ``columns``) that
    come before the last of ``best`` (m,) int64 (kept sorted) into it."""
    m = best.shape[0]
    for c in range(lo, hi):
        key = (np.int64(bits[c]) << 32) | columns[c]
        if key < best[m - 1]:
            insert_key(best, key)


@numba.njit(cache=True, nogil=True)
def nearest_columns(prod, a_norms, b_norms, m, columns):  # pragma: no cover - compiled
    """Columns of the ``m`` smallest squared distances ``prod + a_norms[:, None] +
    b_norms`` (at least 0) of each row, nearest first, ties to the lower column (as
    :func:`pipeline.search.smallest_sorted` gives them), each row finished as
    :func:`pipeline.search._sq_dist` does (the same bits): ``prod`` (n, K) float32, ``a
    @ (-2 b).T`` with ``b``'s rows in any order; ``a_norms`` (n,) and ``b_norms`` (K,)
    float32, the squared norms (``b_norms`` in ``prod``'s order); ``columns`` (K,) int64,
    each of ``prod``'s columns' own (the identity where it is in order). (n, min(m, K))
    int64 own columns."""
    n, width = prod.shape
    m = min(m, width)
    out = np.empty((n, m), np.int64)
    best = np.empty(m, np.int64)
    chunks = -(-width // CHUNK)
    row = np.full(chunks * CHUNK, np.inf, np.float32)  # (the padding: never picked)
    bits = row.view(np.int32)
    least = np.empty(chunks, np.int32)
    for i in range(n):
        for c in range(width):
            v = prod[i, c] + a_norms[i]
            v = v + b_norms[c]
            row[c] = v if v > 0 else np.float32(0)
        first = 0
        for j in range(chunks):
            least[j] = _chunk_min(bits, j * CHUNK)
            if least[j] < least[first]:
                first = j
        best[:] = NO_KEY
        _read_chunk(bits, columns, first * CHUNK, min(first * CHUNK + CHUNK, width), best)
        for j in range(chunks):  # a chunk whose least is past the m-th: none of it enters
            if j != first and (best[m - 1] == NO_KEY
                               or least[j] <= np.int32(best[m - 1] >> 32)):
                _read_chunk(bits, columns, j * CHUNK, min(j * CHUNK + CHUNK, width), best)
        for b in range(m):
            out[i, b] = best[b] & 0xFFFFFFFF
    return out


def centroid_order(centroids: np.ndarray) -> np.ndarray:
    """An order of the centroids (K, D) float32 in which each run of :data:`CHUNK` lies
    close together: halved along the principal axis, again and again, at multiples of
    :data:`CHUNK` (K,) int64. Any order gives the same picks; this one, the least work."""

    def halves(idx: np.ndarray) -> list[np.ndarray]:
        if len(idx) <= CHUNK:
            return [idx]
        spread = centroids[idx].astype(np.float64)
        spread -= spread.mean(0)
        axis = np.linalg.svd(spread, full_matrices=False)[2][0]
        along = idx[np.argsort(spread @ axis, kind="stable")]
        half = min(len(along) - 1, max(CHUNK, round(len(along) / 2 / CHUNK) * CHUNK))
        return halves(along[:half]) + halves(along[half:])

    return np.concatenate(halves(np.arange(len(centroids), dtype=np.int64)))
