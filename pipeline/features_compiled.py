"""The features' compiled halves (numba): cube roots, block sums and the search
features' recolouring, numpy's bits.

:func:`cbrt_into` is glibc 2.36's ``cbrtf`` written out (a quadratic first guess on the
mantissa, one Halley step in double precision, the exponent's third). Its loop over
normal values has no branch (the exponent's third by a multiply and a shift, its
remainder's factor by selects), so the compiler vectorises it: about 4 ns a value
against the C library's 20. The rare special values (zeros, subnormals, infinities, nan)
are done after, one by one.

:func:`block_sums` adds up each block of a tile's sub-grid in integers: what OpenCV's
area resize of the values times 256 gives (:func:`pipeline.features.area_means`) where
a block has a power-of-two number of pixels, in a quarter of its time.

:func:`recoloured_rows` is :func:`pipeline.matching.search_features`' arithmetic, row
by row in one pass where numpy makes five over the whole block (about a tenth of its time).

:mod:`pipeline.features` uses each where numba is loaded and it gives numpy's or OpenCV's
bits (numpy's own AVX-512 cube roots are not glibc's: there numpy's run).
Compiled on first use and cached next to this file. :func:`add_blocks` and :func:`fma` are
inlined into :func:`pipeline.placing.measure_cells` too, whose cache is keyed by its own
file: after a change to either, touch that file so that it compiles again.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

CBRT2 = 1.2599210498948731648  # 2 ** (1 / 3)
SQR_CBRT2 = 1.5874010519681994748  # 2 ** (2 / 3)


@intrinsic
def _as_float(typingctx, bits):  # pragma: no cover - compiled
    """The float32 whose bits are ``bits`` (int32)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _as_bits(typingctx, value):  # pragma: no cover - compiled
    """The bits (int32) of ``value`` (float32)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _root(bits):  # pragma: no cover - compiled
    """glibc's ``cbrtf`` of the normal float32 with bits ``bits``: its bits (int32)."""
    magnitude = bits & np.int32(0x7FFFFFFF)
    xe = (magnitude >> np.int32(23)) - np.int32(126)
    xd = np.float64(_as_float((magnitude & np.int32(0x007FFFFF)) | np.int32(0x3F000000)))
    u = np.float32(0.492659620528969547 + (0.697570460207922770 - 0.191502161678719066 * xd)
                   * xd)
    t2 = np.float64((u * u) * u)
    floor = (((xe + np.int32(129)) * np.int32(43691)) >> np.int32(17)) - np.int32(43)
    rest = xe - np.int32(3) * floor  # (xe + 129 > 0: floor(xe / 3) by a multiply, exact)
    toward_zero = np.int32((xe < 0) & (rest != 0))  # C's xe / 3 and xe % 3
    q = floor + toward_zero
    r = rest - np.int32(3) * toward_zero
    f = (1.0 / SQR_CBRT2) if r == -2 else ((1.0 / CBRT2) if r == -1 else (
        CBRT2 if r == 1 else (SQR_CBRT2 if r == 2 else 1.0)))
    ud = np.float64(u)
    ym = np.float32(ud * (t2 + 2.0 * xd) / (2.0 * t2 + xd) * f)
    return (_as_bits(ym) + (q << np.int32(23))) | (bits & np.int32(-2147483648))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def cbrt_into(x, out):  # pragma: no cover - compiled
    """``out[i]`` = the cube root of ``x[i]`` (both (n,) float32, C-contiguous)."""
    bits, roots = x.view(np.int32), out.view(np.int32)
    special = 0
    for i in range(x.shape[0]):
        e = (bits[i] >> np.int32(23)) & np.int32(0xFF)
        special += (e == 0) | (e == 255)
        roots[i] = _root(bits[i])
    if special:
        for i in range(x.shape[0]):
            e = (bits[i] >> 23) & 0xFF
            if e == 255 or x[i] == 0:
                out[i] = x[i] + x[i]
            elif e == 0:  # subnormal: the root of it times 2^24, over 2^8
                scaled = _as_bits(abs(x[i]) * np.float32(2.0**24))
                roots[i] = (_root(scaled) - np.int32(8 << 23)) | (bits[i] & np.int32(-2147483648))


@numba.njit(cache=True, nogil=True)
def block_sums(tiles, g, out):  # pragma: no cover - compiled
    """``out[n, i, j, c]`` = the sum of channel ``c`` over block ``(i, j)`` of the
    ``g x g`` partition of tile ``n``: ``tiles`` (N, h, w, 3) uint8, C-contiguous, ``h``
    and ``w`` multiples of ``g``; ``out`` (N, g, g, 3) int32. Each block's pixel rows are
    added up column by column (one vector add a row), then the columns."""
    n, h, w, _ = tiles.shape
    bh, bw = h // g, w // g
    w3 = w * 3
    columns = np.empty(w3, np.int32)
    flat = tiles.reshape(n, h, w3)
    for t in range(n):
        for i in range(g):
            columns[:] = 0
            for y in range(i * bh, (i + 1) * bh):
                line = flat[t, y]
                for x in range(w3):
                    columns[x] += np.int32(line[x])
            add_blocks(columns, bw, out[t, i])


@numba.njit(cache=True, nogil=True)
def block_means_of(tiles, g, times, scale, out):  # pragma: no cover - compiled
    """:func:`block_sums` turned into means in the same pass over them: ``out`` (N, g, g,
    3) float32 = ``float32(sum * times) * scale``, as :func:`pipeline.features.
    means_of_sums` computes them (``times`` int32, ``scale`` float32)."""
    sums = np.empty(out.shape, np.int32)
    block_sums(tiles, g, sums)
    flat, means = sums.reshape(-1), out.reshape(-1)
    for i in range(flat.shape[0]):
        means[i] = np.float32(flat[i] * times) * scale


@numba.njit(cache=True, nogil=True, inline="always")
def add_blocks(columns, bw, out):  # pragma: no cover - compiled
    """``out[j]`` (g, 3) int32 = the sums of the pixel columns ``columns`` (w * 3,) int32
    of block ``j`` (``bw`` pixels wide), channel by channel: a row of sub-grid blocks
    from its summed pixel rows (:func:`block_sums`, :func:`pipeline.placing.measure_cells`)."""
    for j in range(out.shape[0]):
        s0 = s1 = s2 = 0
        for p in range(j * bw * 3, (j + 1) * bw * 3, 3):
            s0 += columns[p]
            s1 += columns[p + 1]
            s2 += columns[p + 2]
        out[j, 0], out[j, 1], out[j, 2] = s0, s1, s2


@numba.njit(cache=True, nogil=True)
def recoloured_rows(lab, keep, chroma, out, mean):  # pragma: no cover - compiled
    """:func:`pipeline.matching.recolour_aware` of rows ``lab`` (n, g * 3) float32 with
    numpy's operations in numpy's order: each row's mean colour ``mean`` (n, 3) (its
    sub-cells summed in order, over their count), then ``out`` (n, g * 3) = ``(lab -
    mean)``, a* and b* times ``chroma``, plus ``keep * mean`` (``keep`` = 1 - recolour,
    float32)."""
    n, width = lab.shape
    g = width // 3
    count = np.float32(g)
    for i in range(n):
        row = lab[i]
        for c in range(3):
            s = row[c]
            for k in range(1, g):
                s += row[3 * k + c]
            m = s / count
            mean[i, c] = m
            kept = keep * m
            for k in range(g):
                d = row[3 * k + c] - m
                if c > 0:
                    d = d * chroma
                out[i, 3 * k + c] = d + kept


@intrinsic
def fma(typingctx, a, b, c):  # pragma: no cover - compiled
    """``a * b + c`` rounded once (float32): the fused multiply-add that BLAS's kernels
    and OpenCV's luma transform use (:func:`linear_xyz`, :func:`pipeline.placing.
    measure_cells`)."""
    if not all(x == types.float32 for x in (a, b, c)):
        return None
    sig = types.float32(a, b, c)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(f32, [f32, f32, f32]),
                                            "llvm.fma.f32")
        return builder.call(fn, args)

    return sig, codegen


_BIG = np.float32(2.0**31)


@numba.njit(cache=True, nogil=True)
def linear_xyz(bgr01, table, matrix, xyz):  # pragma: no cover - compiled
    """:func:`pipeline.features.srgb_to_lab`'s first half, colour by colour: each value of
    ``bgr01`` (N, 3) float32 decoded through ``table`` (the 65,536-step sRGB table, at
    ``int(v * 65535 + 0.5)`` clipped to it, a value past int32 or nan at 0 as numpy's
    cast gives it), then ``xyz`` (N, 3) float32 = the row times ``matrix`` (3, 3) as
    BLAS's kernel sums it: the first product, then two fused multiply-adds."""
    steps = np.float32(table.shape[0] - 1)
    last = table.shape[0] - 1
    lin = np.empty(3, np.float32)
    for i in range(bgr01.shape[0]):
        for k in range(3):
            v = bgr01[i, k] * steps + np.float32(0.5)
            j = 0
            if -_BIG < v < _BIG:
                j = min(max(np.int64(np.int32(v)), 0), last)
            lin[k] = table[j]
        for c in range(3):
            s = lin[0] * matrix[0, c]
            s = fma(lin[1], matrix[1, c], s)
            xyz[i, c] = fma(lin[2], matrix[2, c], s)


@numba.njit(cache=True, nogil=True)
def lab_of(xyz, f, lab):  # pragma: no cover - compiled
    """:func:`pipeline.features.srgb_to_lab`'s second half: ``lab`` (N, 3) float32 from the
    white-normalised ``xyz`` (N, 3) and their cube roots ``f`` (N, 3), the linear segment
    where ``xyz`` is at most (6/29)^3, with numpy's float32 operations."""
    eps, kappa = np.float32(216 / 24389), np.float32(24389 / 27)
    r = np.empty(3, np.float32)
    for i in range(xyz.shape[0]):
        for c in range(3):
            x = xyz[i, c]
            r[c] = (kappa * x + np.float32(16)) / np.float32(116) if x <= eps else f[i, c]
        lab[i, 0] = r[1] * np.float32(116) - np.float32(16)
        lab[i, 1] = (r[0] - r[1]) * np.float32(500)
        lab[i, 2] = (r[1] - r[2]) * np.float32(200)
