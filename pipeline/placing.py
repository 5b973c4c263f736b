"""Tiles put on a canvas, compiled (numba): turned, recoloured and written in one pass.

:meth:`pipeline.compose.Canvas.place` gathers a frame's tiles from the bank, turns them,
recolours them (``clip(tile + shift, 0, 255)``, :func:`pipeline.tone.recolour`) and
scatters them into the canvas's cells: four passes over every placed pixel, each through
a (k, h, w, 3) temporary. :func:`place_tiles` does it pixel row by pixel row, straight
from the bank into the canvas, and measures each cell's mean absolute change on the way
(the scores' churn) when asked: the same bits as the numpy path (tested).

Tiles 16, 32, 48 or 64 pixels wide are placed by :func:`sat_tile`, which writes LLVM's
16-byte vectors directly: a pixel row is a few of them, recoloured with saturating byte
adds and subtracts, mirrored with byte shuffles, its change summed in 16-bit lanes. On a
busy frame at 2560x1920 (2,400 tiles, half of them mirrored) that is about 2.5 ms, or
3 ms measured, against 6 and 12 for numba's own loops, which widen every byte to 64 bits
(they still place other widths).

It covers what a video's painter places: tiles as they are or mirrored (the default
``render.orientations``), recoloured or not, without a contrast gain; the numpy path
places the rest (flips and quarter turns, ``render.tone``).

Compiled on first use and cached next to this file. Loading numba costs a process about
half a CPU-second, which a painter that also plans has paid for its search
(:mod:`pipeline.scan`); :func:`pipeline.compose.compiled_placing` says when to load it.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from pipeline.features_compiled import add_blocks, fma

VECTOR_WIDTHS = (16, 32, 48, 64)  # tile widths (pixels) that sat_tile places: 3w % 16 == 0
_I1, _I8, _I16, _I32, _I64 = (ir.IntType(b) for b in (1, 8, 16, 32, 64))
_V = ir.VectorType(_I8, 16)  # 16 bytes of a pixel row
_W = ir.VectorType(_I16, 16)  # their changes, summed
_MASK = ir.VectorType(_I32, 16)


def _uint8_array(arg) -> bool:
    return isinstance(arg, types.Array) and arg.dtype == types.uint8 and arg.ndim == 1 \
        and arg.layout == "C"


def _mirrored(builder: ir.IRBuilder, chunks: list, width: int) -> list:
    """The 16-byte chunks of a row of ``width`` pixels (3 bytes each), pixels reversed:
    each chunk shuffled from the (at most three) chunks its bytes come from."""
    n = 3 * width
    source = [3 * (width - 1 - j // 3) + j % 3 for j in range(n)]
    out = []
    for k in range(n // 16):
        want = source[16 * k:16 * k + 16]
        needed = sorted({i // 16 for i in want})
        result = None
        for a in range(0, len(needed), 2):
            pair = needed[a:a + 2]
            second = chunks[pair[1]] if len(pair) > 1 else ir.Constant(_V, ir.Undefined)
            mask = [i % 16 if i // 16 == pair[0] else 16 + i % 16 if i // 16 in pair else 0
                    for i in want]
            part = builder.shuffle_vector(chunks[pair[0]], second, ir.Constant(_MASK, mask))
            if result is None:
                result = part
            else:
                lanes = [int(i // 16 in pair) for i in want]
                result = builder.select(ir.Constant(ir.VectorType(_I1, 16), lanes), part,
                                        result)
        out.append(result)
    return out


def _tile_rows(builder: ir.IRBuilder, a: dict, width: int, flip: bool) -> None:
    """The row loop of :func:`sat_tile` for tiles ``width`` pixels wide, mirrored or not
    (``a``: its values and arrays, as :func:`sat_tile`'s codegen names them)."""
    intp, n = a["intp"], 3 * width
    ones, zeros = ir.Constant(_V, [255] * 16), ir.Constant(_V, [0] * 16)
    with cgutils.for_range(builder, a["h"]) as loop:
        y = loop.index
        src = builder.bitcast(builder.gep(a["bank"], [builder.add(
            a["s0"], builder.mul(y, intp(n)))]), _V.as_pointer())
        row = [builder.load(builder.gep(src, [intp(k)]), align=1) for k in range(n // 16)]
        if flip:
            row = _mirrored(builder, row, width)
        dst = builder.bitcast(builder.gep(a["image"], [builder.add(
            a["d0"], builder.mul(y, a["stride"]))]), _V.as_pointer())
        out = []
        for v, up, room, down in zip(row, a["up"], a["room"], a["down"], strict=True):
            added = builder.select(builder.icmp_unsigned(">", v, room), ones,
                                   builder.add(v, up))  # (up: 0 where down is not)
            out.append(builder.select(builder.icmp_unsigned(">", added, down),
                                      builder.sub(added, down), zeros))
        with builder.if_then(a["measure"]):
            total = builder.load(a["acc"])
            for k, r in enumerate(out):
                old = builder.load(builder.gep(dst, [intp(k)]), align=1)
                diff = builder.select(builder.icmp_unsigned(">", old, r),
                                      builder.sub(old, r), builder.sub(r, old))
                total = builder.add(total, builder.zext(diff, _W))
            builder.store(total, a["acc"])
        for k, r in enumerate(out):
            builder.store(r, builder.gep(dst, [intp(k)]), align=1)


@intrinsic
def sat_tile(typingctx, image, d0, stride, bank, s0, h, w, up, down, mirror, measure
             ):  # pragma: no cover - compiled
    """Put a tile ``w`` pixels wide (one of :data:`VECTOR_WIDTHS`; any other: nothing),
    ``h`` rows, into ``image``: row ``y`` is ``bank[s0 + 3wy : s0 + 3w(y + 1)]``, pixels
    reversed where ``mirror``, plus ``up`` minus ``down`` (each (>= 3w,) uint8, one of the
    two 0 in each byte; saturating), written at ``image[d0 + y * stride:]``. ``image``,
    ``bank``: flat uint8 arrays. Returns the sum of the absolute byte changes when
    ``measure`` (int64), else 0."""
    if not all(_uint8_array(x) for x in (image, bank, up, down)):
        return None  # (a typing error)
    sig = types.int64(image, types.intp, types.intp, bank, types.intp, types.intp,
                      types.intp, up, down, types.boolean, types.boolean)

    def codegen(context, builder, signature, args):
        arrays = [context.make_array(signature.args[i])(context, builder, args[i]).data
                  for i in (0, 3, 7, 8)]
        intp = context.get_value_type(types.intp)
        a = {"intp": intp, "image": arrays[0], "bank": arrays[1], "d0": args[1],
             "stride": args[2], "s0": args[4], "h": args[5],
             "measure": builder.icmp_unsigned("!=", args[10], ir.Constant(args[10].type, 0)),
             "acc": cgutils.alloca_once_value(builder, ir.Constant(_W, [0] * 16))}
        flip = builder.icmp_unsigned("!=", args[9], ir.Constant(args[9].type, 0))
        result = cgutils.alloca_once_value(builder, _I64(0))
        for width in VECTOR_WIDTHS:
            with builder.if_then(builder.icmp_signed("==", args[6], intp(width))):
                for name, data in (("up", arrays[2]), ("down", arrays[3])):
                    at = builder.bitcast(data, _V.as_pointer())
                    a[name] = [builder.load(builder.gep(at, [intp(k)]), align=1)
                               for k in range(3 * width // 16)]
                a["room"] = [builder.xor(u, ir.Constant(_V, [255] * 16)) for u in a["up"]]
                with builder.if_else(flip) as (mirrored, plain):
                    with mirrored:
                        _tile_rows(builder, a, width, True)
                    with plain:
                        _tile_rows(builder, a, width, False)
                with builder.if_then(a["measure"]):
                    total = builder.load(a["acc"])
                    builder.store(_sum_lanes(builder, total), result)
        return builder.load(result)

    return sig, codegen


def _sum_lanes(builder: ir.IRBuilder, total: ir.Value) -> ir.Value:
    """The 16 lanes of ``total`` (16-bit) added up as an int64."""
    s = _I64(0)
    for j in range(16):
        s = builder.add(s, builder.zext(builder.extract_element(total, _I32(j)), _I64))
    return s


@numba.njit(cache=True, nogil=True)
def place_tiles(cells, rows, mirrored, shift, bank, image, cols, measure, change
                ):  # pragma: no cover - compiled
    """Put tile ``bank[rows[i]]``, mirrored where ``mirrored[i]``, plus ``shift[i]``
    (saturating at 0 and 255), into flat cell ``cells[i]`` of ``image``.

    Parameters
    ----------
    cells : ndarray (k,), int64, row-major cell indices (each at most once).
    rows : ndarray (k,), int64, rows of ``bank``.
    mirrored : ndarray (k,), bool.
    shift : ndarray (k, 3), int16, added to each tile's pixels (BGR).
    bank : ndarray (M, h, w, 3), uint8, C-contiguous.
    image : ndarray (rows * h, cols * w, 3), uint8, C-contiguous: written in place.
    cols : cells per row of the canvas.
    measure : whether to fill ``change``.
    change : ndarray (k,), float32: each cell's mean absolute pixel change (written when
        ``measure``).
    """
    h, w = bank.shape[1], bank.shape[2]
    w3 = w * 3
    stride = image.shape[1] * 3
    flat, bank1 = image.reshape(-1), bank.reshape(-1)
    up, down = np.empty(w3, np.uint8), np.empty(w3, np.uint8)
    vector = w in VECTOR_WIDTHS
    for i in range(cells.shape[0]):
        r, c = cells[i] // cols, cells[i] % cols
        for ch in range(3):  # the shift as a saturating add and subtract along a row
            s = np.int64(shift[i, ch])
            u, d = np.uint8(min(max(s, 0), 255)), np.uint8(min(max(-s, 0), 255))
            for x in range(w):
                up[3 * x + ch], down[3 * x + ch] = u, d
        if vector:
            total = sat_tile(flat, r * h * stride + c * w3, stride, bank1, rows[i] * h * w3,
                             h, w, up, down, mirrored[i], measure)
        else:
            total = _place_loops(flat, r * h * stride + c * w3, stride, bank1,
                                 rows[i] * h * w3, h, w, up, down, mirrored[i], measure)
        if measure:  # exact: the sum is an integer, as numpy's float32 sum of it is
            change[i] = np.float32(total) / np.float32(h * w3)


@numba.njit(cache=True, nogil=True)
def _place_loops(flat, d0, stride, bank1, s0, h, w, up, down, mirror, measure
                 ):  # pragma: no cover - compiled
    """:func:`sat_tile` for any width, in numba's own loops."""
    total = 0
    w3 = 3 * w
    for y in range(h):
        for j in range(w3):
            x = j // 3
            src = s0 + y * w3 + (3 * (w - 1 - x) + j % 3 if mirror else j)
            v = min(max(np.int64(bank1[src]) + np.int64(up[j]) - np.int64(down[j]), 0), 255)
            at = d0 + y * stride + j
            if measure:
                total += abs(np.int64(flat[at]) - v)
            flat[at] = v
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def measure_cells(image, cells, cols, h, w, g, weights, sums, luma_sum, luma_squares
                  ):  # pragma: no cover - compiled
    """What the scores measure of each cell ``cells[t]`` of the canvas ``image`` (rows * h,
    cols * w, 3) uint8, read in place: ``sums[t]`` (g, g, 3) int32, each channel's sum over
    each block of its ``g x g`` sub-grid (``h`` and ``w`` multiples of ``g``), and
    ``luma_sum[t]``, ``luma_squares[t]`` (int64), the sums of its pixels' luma levels and
    their squares. A luma level is ``weights`` (B, G, R float32) applied as OpenCV's
    vectorised transform applies them (R times its weight added to B's added to G's,
    each by a fused multiply-add; rounded to even, saturated): its bits where
    :func:`pipeline.compose.compiled_measure` has checked them."""
    bh, bw = h // g, w // g
    w3 = w * 3
    flat = image.reshape(image.shape[0], image.shape[1] * 3)
    # a line's levels and their sums in 32 bits (at most w * 255^2: exact for tiles under
    # 33,000 pixels wide), added to the cell's 64-bit sums line by line
    columns, levels = np.empty(w3, np.int32), np.empty(w, np.int32)
    wb, wg, wr = weights[0], weights[1], weights[2]
    for t in range(cells.shape[0]):
        r, c = cells[t] // cols, cells[t] % cols
        total = squares = 0
        for i in range(g):
            columns[:] = 0
            for y in range(r * h + i * bh, r * h + (i + 1) * bh):
                line = flat[y, c * w3:(c + 1) * w3]
                for x in range(w3):
                    columns[x] += np.int32(line[x])
                for x in range(w):
                    v = fma(np.float32(line[3 * x + 2]), wr, fma(
                        np.float32(line[3 * x]), wb, np.float32(line[3 * x + 1]) * wg))
                    levels[x] = np.int32(min(max(np.rint(v), np.float32(0)), np.float32(255)))
                line_total = line_squares = np.int32(0)
                for x in range(w):
                    line_total += levels[x]
                    line_squares += levels[x] * levels[x]
                total += np.int64(line_total)
                squares += np.int64(line_squares)
            add_blocks(columns, bw, sums[t, i])
        luma_sum[t], luma_squares[t] = total, squares


def warm() -> None:
    """Load the kernel's machine code now (from the cache; compiled on the first run
    after an install or a change)."""
    one = np.zeros(1, np.int64)
    place_tiles(one, one, np.zeros(1, np.bool_), np.zeros((1, 3), np.int16),
                np.zeros((1, 1, 1, 3), np.uint8), np.zeros((1, 1, 3), np.uint8), 1, True,
                np.zeros(1, np.float32))
