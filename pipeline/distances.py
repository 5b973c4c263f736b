"""Squared distances with numpy's bits, compiled: one row, or eight at once.

The candidate search measures a query against tile after tile (:mod:`pipeline.scan`).
numpy sums a short row's squared differences in eight interleaved partial sums, then
pairs of them, then the rest in order (:func:`row_sq`), and the search's
distances must be those bits (they decide ties between tiles, and the variety rules sum
the same way). Summed that way one tile at a time, a row is a chain of scalar operations
that numba's compiler does not turn into vector instructions.

:func:`block_sq` measures eight tiles at once instead, one tile per lane of an 8-wide
float32 vector: the tiles' features are stored in blocks of eight, feature by feature
((B, D, 8): :class:`pipeline.scan.SortedLists`), so that feature ``j`` of the eight is one
vector load. Each lane then does, in the same order, the same IEEE operations numpy does
for its tile (no reassociation, no fused multiply-adds): the same bits, in about 3 ns a
tile on this machine against 7.5 for a reassociated sum of one tile at a time.

numba's cache of a kernel that uses :func:`block_sq` is keyed by the kernel's own file:
after a change here, touch that file (:mod:`pipeline.scan`) so that it compiles again.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_LANES = 8
_VECTOR = ir.VectorType(ir.FloatType(), _LANES)
_BROADCAST = ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES)


@intrinsic
def block_sq(typingctx, query, blocks, block, out):  # pragma: no cover - compiled
    """``out[:8]`` = the squared distances of ``query`` (D,) float32 (C-contiguous) to the
    eight tiles of block ``block`` of ``blocks`` (B, D, 8) float32 (C-contiguous), each
    summed as numpy sums a row of D squared differences; ``out`` (>= 8,) float32."""
    for arg, ndim in ((query, 1), (blocks, 3), (out, 1)):
        if not (isinstance(arg, types.Array) and arg.dtype == types.float32
                and arg.ndim == ndim and arg.layout == "C"):
            return None  # (a typing error: float32, C-contiguous arrays only)
    sig = types.void(query, blocks, types.intp, out)

    def codegen(context, builder, signature, args):
        q_arg, b_arg, block_index, out_arg = args
        q = context.make_array(signature.args[0])(context, builder, q_arg)
        b = context.make_array(signature.args[1])(context, builder, b_arg)
        o = context.make_array(signature.args[3])(context, builder, out_arg)
        intp = context.get_value_type(types.intp)
        d = builder.extract_value(q.shape, 0)
        lanes = intp(_LANES)
        first = builder.gep(b.data, [builder.mul(builder.mul(block_index, d), lanes)])
        rows = builder.bitcast(first, _VECTOR.as_pointer())  # rows[j]: feature j of eight

        def square(j):  # (q[j] - feature j of the eight) ** 2, lane by lane
            qj = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined),
                                        builder.load(builder.gep(q.data, [j])),
                                        ir.IntType(32)(0))
            qj = builder.shuffle_vector(qj, ir.Constant(_VECTOR, ir.Undefined), _BROADCAST)
            e = builder.fsub(qj, builder.load(builder.gep(rows, [j]), align=4))
            return builder.fmul(e, e)

        total = cgutils.alloca_once_value(builder, ir.Constant(_VECTOR, [0.0] * _LANES))
        with builder.if_else(builder.icmp_signed("<", d, lanes)) as (short, long):
            with short, cgutils.for_range(builder, d) as loop:  # under 8: in order
                builder.store(builder.fadd(builder.load(total), square(loop.index)), total)
            with long:  # eight partial sums, then pairs of them, then the rest in order
                sums = [cgutils.alloca_once_value(builder, square(intp(j)))
                        for j in range(_LANES)]
                whole = builder.sub(d, builder.srem(d, lanes))
                with cgutils.for_range(builder, builder.sdiv(whole, lanes),
                                       start=intp(1)) as loop:
                    at = builder.mul(loop.index, lanes)
                    for j, s in enumerate(sums):
                        builder.store(builder.fadd(builder.load(s),
                                                   square(builder.add(at, intp(j)))), s)
                p = [builder.load(s) for s in sums]
                builder.store(builder.fadd(
                    builder.fadd(builder.fadd(p[0], p[1]), builder.fadd(p[2], p[3])),
                    builder.fadd(builder.fadd(p[4], p[5]), builder.fadd(p[6], p[7]))), total)
                with cgutils.for_range(builder, d, start=whole) as loop:
                    builder.store(builder.fadd(builder.load(total), square(loop.index)),
                                  total)
        builder.store(builder.load(total), builder.bitcast(o.data, _VECTOR.as_pointer()),
                      align=4)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def row_sq(q, f):  # pragma: no cover - compiled
    """Squared distance of two rows (D,) float32, rounded as numpy's ``((q - f) ** 2)
    .sum(-1)`` rounds it for D under :data:`pipeline.rules_numpy.PAIRWISE_MAX`: float32
    squares, summed as numpy sums a short row (eight interleaved partial sums, then
    pairs of them, then the rest in order)."""
    d = q.shape[0]
    if d < 8:
        s = np.float32(0.0)
        for j in range(d):
            e = q[j] - f[j]
            s += e * e
        return s
    r0, r1, r2, r3 = _sq4(q, f, 0)  # (eight scalars: kept in registers)
    r4, r5, r6, r7 = _sq4(q, f, 4)
    whole = d - d % 8
    for b in range(8, whole, 8):
        s0, s1, s2, s3 = _sq4(q, f, b)
        s4, s5, s6, s7 = _sq4(q, f, b + 4)
        r0, r1, r2, r3, r4, r5, r6, r7 = (r0 + s0, r1 + s1, r2 + s2, r3 + s3, r4 + s4,
                                          r5 + s5, r6 + s6, r7 + s7)
    s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for j in range(whole, d):
        e = q[j] - f[j]
        s += e * e
    return s


@numba.njit(cache=True, nogil=True, inline="always")
def _sq4(q, f, b):  # pragma: no cover - compiled
    """The squares of four differences from column ``b``: float32 each."""
    e0, e1, e2, e3 = q[b] - f[b], q[b + 1] - f[b + 1], q[b + 2] - f[b + 2], q[b + 3] - f[b + 3]
    return e0 * e0, e1 * e1, e2 * e2, e3 * e3
