"""Features on tiny hand-made tiles with exactly known values."""

from __future__ import annotations

import ctypes
import ctypes.util

import cv2
import numpy as np
import pytest
from helpers import reference_lab as srgb_to_lab

from pipeline.features import block_means, colour_histogram, lab_grid_means


def test_histogram_known_bins() -> None:
    # 2x2 BGR tile: black, white, pure red, and (100, 200, 50).
    tile = np.array([[[0, 0, 0], [255, 255, 255]], [[0, 0, 255], [100, 200, 50]]], np.uint8)
    hist = colour_histogram(tile[None], bins=5)[0]
    expected = np.zeros(125, np.float32)
    # bin(v) = floor(v * 5 / 256): 0->0, 255->4, 100->1, 200->3, 50->0; index b*25+g*5+r.
    for index in (0, 124, 4, 1 * 25 + 3 * 5 + 0):
        expected[index] = 0.25
    np.testing.assert_array_equal(hist, expected)


def test_histogram_equals_reference_calchist() -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (5, 32, 24, 3), dtype=np.uint8)
    ours = colour_histogram(tiles, bins=5)
    for tile, row in zip(tiles, ours, strict=True):
        ref = cv2.calcHist([tile], [0, 1, 2], None, [5, 5, 5], [0, 256] * 3).ravel()
        np.testing.assert_allclose(row, ref / (32 * 24), rtol=0, atol=1e-7)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-6)


def test_histogram_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8 of shape"):
        colour_histogram(np.zeros((2, 4, 4), np.uint8))


@pytest.mark.parametrize(("bgr", "lab"), [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((0, 0, 255), (53.24, 80.09, 67.20)),   # sRGB red
    ((255, 0, 0), (32.30, 79.19, -107.86)),  # sRGB blue
])
def test_lab_of_solid_tiles(bgr: tuple[int, int, int], lab: tuple[float, float, float]) -> None:
    tile = np.zeros((1, 8, 8, 3), np.uint8)
    tile[:] = bgr
    feature = lab_grid_means(tile, grid=4).reshape(16, 3)
    np.testing.assert_allclose(feature, np.tile(lab, (16, 1)), atol=0.01)


def test_lab_grid_layout_and_means() -> None:
    # 4x4 tile, grid 2: top-left cell white, top-right black, bottom-left red, and the
    # bottom-right cell a checkerboard of black and white (mean colour 127.5 grey).
    tile = np.zeros((4, 4, 3), np.uint8)
    tile[:2, :2] = 255
    tile[2:, :2] = (0, 0, 255)
    tile[2, 2] = tile[3, 3] = 255
    feature = lab_grid_means(tile[None], grid=2).reshape(2, 2, 3)
    means = np.array([[[1, 1, 1], [0, 0, 0]], [[0, 0, 1], [0.5, 0.5, 0.5]]])
    np.testing.assert_allclose(feature, srgb_to_lab(means), atol=0.02)
    np.testing.assert_allclose(feature[1, 1], (53.389, 0, 0), atol=0.01)


def test_block_means_uneven_grid() -> None:
    tile = np.zeros((1, 5, 7, 3), np.uint8)
    tile[..., 1] = 200
    means = block_means(tile, grid=2)
    assert means.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(means[..., 1], 200 / 255, atol=1e-4)
    np.testing.assert_allclose(means[..., 0], 0)


def test_lab_rejects_tile_smaller_than_grid() -> None:
    with pytest.raises(ValueError, match="smaller than the 4x4 grid"):
        lab_grid_means(np.zeros((1, 3, 3, 3), np.uint8), grid=4)


def test_srgb_to_lab_is_the_textbook_formula_to_the_bit() -> None:
    """The in-place form is the same float32 operations as the formulas written out
    (dark colours on the linear segment, out-of-range and float64 input included); the
    colour transform's one product over all colours has the stacked products' bits
    (rows of 80 and of 4, and rows of one, which numpy takes another path for)."""
    from pipeline.features import _BGR_TO_XYZN, _LINEAR, _LUT_STEPS, srgb_to_lab

    rng = np.random.default_rng(4)
    for bgr in (rng.random((300, 4, 4, 3)).astype(np.float32),
                rng.random((6, 80, 3)).astype(np.float32),
                rng.random((40, 1, 3)).astype(np.float32),
                (rng.random((200, 3)).astype(np.float32) ** 8),
                rng.random((50, 3)) * 1.2 - 0.1, np.zeros((2, 3), np.float32)):
        c = np.asarray(bgr, dtype=np.float32)
        xyz = _LINEAR[np.clip((c * _LUT_STEPS + 0.5).astype(np.int32), 0, _LUT_STEPS)] \
            @ _BGR_TO_XYZN
        eps, kappa = np.float32(216 / 24389), np.float32(24389 / 27)
        f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116).astype(np.float32)
        want = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                         200 * (f[..., 1] - f[..., 2])], -1)
        got = srgb_to_lab(bgr)
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((a.view(np.int32) == b.view(np.int32)) | (np.isnan(a) & np.isnan(b))))


def _libm_cbrtf(x: np.ndarray) -> np.ndarray:
    """The C library's ``cbrtf`` of each value of ``x`` (float32), called one by one."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.cbrtf.restype, libm.cbrtf.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.array([libm.cbrtf(float(v)) for v in x], np.float32)


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc"
                    or __import__("platform").libc_ver()[1] != "2.36",
                    reason="the kernel is glibc 2.36's cbrtf; another libc's bits differ")
def test_the_compiled_cube_root_is_glibcs_to_the_bit() -> None:
    """glibc's cbrtf written out gives the C library's bits: every 9973rd float32 of both
    signs (normal and subnormal), every 7th float32 in [0.008856, 0.0089] and [0.99, 1.01]
    (the Lab range's ends), zeros, infinities and nan. The render uses it where numpy's
    roots are the C library's (srgb_to_lab the same either way), and numpy's own where
    they are not (numpy's AVX-512 roots): never other bits than numpy's."""
    import pipeline.features as features
    from pipeline.features_compiled import cbrt_into

    def span(lo: float, hi: float) -> np.ndarray:
        return np.arange(np.float32(lo).view(np.int32), np.float32(hi).view(np.int32), 7,
                         dtype=np.int32)

    bits = np.concatenate([np.arange(0, 0x7F800000, 9973, dtype=np.int32),
                           span(0.008856, 0.0089), span(0.99, 1.01)])
    x = np.concatenate([bits.view(np.float32), -bits[::13].view(np.float32), np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45], np.float32)])
    got = np.empty_like(x)
    cbrt_into(x, got)
    assert _same_bits(got, _libm_cbrtf(x))
    with np.errstate(all="ignore"):
        numpy_is_libm = _same_bits(np.cbrt(x), got)
        kernels = features._kernels("roots")  # (numba is loaded: checked here)
        assert (kernels is not None) == numpy_is_libm
        assert _same_bits(features.cbrt(x), np.cbrt(x))
    colours = np.random.default_rng(5).random((5000, 3)).astype(np.float32)
    compiled = features.srgb_to_lab(colours)
    features._compiled["roots"] = None
    try:
        assert compiled.tobytes() == features.srgb_to_lab(colours).tobytes()
    finally:
        features._compiled.pop("roots", None)


def test_a_cube_root_kernel_with_other_bits_is_not_used(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Where the kernel's roots are not numpy's (another C library, or numpy's own
    AVX-512 roots), numpy's run; the block sums, checked on their own, are still used."""
    import sys
    import types

    import pipeline.features as features
    from pipeline.features_compiled import block_means_of

    def wrong(x: np.ndarray, out: np.ndarray) -> None:
        with np.errstate(all="ignore"):
            out[:] = np.cbrt(x) * np.float32(1.0000001)

    fake = types.ModuleType("pipeline.features_compiled")
    fake.cbrt_into, fake.block_means_of = wrong, block_means_of
    monkeypatch.setitem(sys.modules, "pipeline.features_compiled", fake)
    monkeypatch.setattr(sys.modules["pipeline"], "features_compiled", fake)
    monkeypatch.setattr(features, "_compiled", {})
    x = np.linspace(0.01, 2, 1000, dtype=np.float32)
    assert features._kernels("roots") is None
    assert _same_bits(features.cbrt(x), np.cbrt(x))
    assert features._kernels("sums") is fake


@pytest.mark.parametrize(("tile", "grid"), [((32, 32), 4), ((16, 16), 4), ((64, 64), 4),
                                            ((32, 32), 2), ((32, 32), 8), ((8, 16), 4),
                                            ((24, 24), 4), ((30, 30), 4)])
def test_compiled_block_means_are_opencvs_to_the_bit(tile: tuple[int, int], grid: int
                                                     ) -> None:
    """The compiled sub-grid sums give area_means's values (cells of 4 to 256 pixels,
    powers of two; other sizes go to OpenCV, as before)."""
    import pipeline.features as features

    tiles = np.random.default_rng(6).integers(0, 256, (40, *tile, 3), np.uint8)
    assert features._kernels("sums") is not None
    compiled = block_means(tiles, grid)
    features._compiled["sums"] = None
    try:
        assert compiled.tobytes() == block_means(tiles, grid).tobytes()
    finally:
        features._compiled.pop("sums", None)


def test_compiled_lab_passes_are_numpys_to_the_bit() -> None:
    """Where numba is loaded, srgb_to_lab's two compiled passes (the table and the matrix
    product as BLAS sums it, then the Lab from the cube roots) give numpy's bits: tiles'
    sub-grid means, a frame's cell grid, dark colours in the linear segment, and a
    shape too small to take them (numpy's own path)."""
    import numba  # noqa: F401  (loaded, as in a render worker)

    import pipeline.features as features

    rng = np.random.default_rng(9)
    cases = [block_means(rng.integers(0, 256, (500, 16, 16, 3), np.uint8), 4),
             rng.random((60, 80, 3), dtype=np.float32),
             rng.random((300, 16, 3), dtype=np.float32) * np.float32(0.02),
             rng.random((2, 3), dtype=np.float32)]
    got = [features.srgb_to_lab(c) for c in cases]
    if features._kernels("lab") is None:
        pytest.skip("this BLAS sums the colour matrix otherwise: numpy's passes run here")
    features._compiled["lab"] = None
    try:
        for c, g in zip(cases, got, strict=True):
            assert g.tobytes() == features.srgb_to_lab(c).tobytes()
    finally:
        features._compiled.pop("lab", None)


def test_lab_passes_with_other_bits_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled Lab passes whose product is not this BLAS's (another order of its sums)
    fail the check: numpy's passes run, with numpy's bits."""
    import sys
    import types

    import pipeline.features as features
    from pipeline.features_compiled import lab_of

    def other_order(bgr01, table, matrix, xyz):
        with np.errstate(invalid="ignore"):  # (the check's values past int32)
            at = (bgr01 * np.float32(65535) + np.float32(0.5)).astype(np.int32)
        lin = table[np.clip(at, 0, len(table) - 1)]
        xyz[:] = (lin[:, 2:3] * matrix[2] + lin[:, 1:2] * matrix[1]) + lin[:, 0:1] * matrix[0]

    fake = types.ModuleType("pipeline.features_compiled")
    fake.linear_xyz, fake.lab_of = other_order, lab_of
    monkeypatch.setitem(sys.modules, "pipeline.features_compiled", fake)
    monkeypatch.setattr(sys.modules["pipeline"], "features_compiled", fake)
    monkeypatch.setattr(features, "_compiled", {"roots": None})
    colours = np.random.default_rng(10).random((400, 16, 3), dtype=np.float32)
    got = features.srgb_to_lab(colours)
    assert features._kernels("lab") is None
    features._compiled["lab"] = None
    assert got.tobytes() == features.srgb_to_lab(colours).tobytes()
