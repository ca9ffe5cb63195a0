"""Pooling kernels against the NumPy reference, finite differences and (when
installed) torch.nn.functional: max, average, adaptive and global pooling,
forward and backward, both dtypes, 1-D/2-D/3-D."""

import numpy as np
import pytest
from helpers import numeric_gradient, tolerance

import cnnfast
from cnnfast import _plan, reference

DTYPES = [np.float32, np.float64]
MAX = {1: cnnfast.max_pool1d, 2: cnnfast.max_pool2d, 3: cnnfast.max_pool3d}
MAX_BACKWARD = {1: cnnfast.max_pool1d_backward, 2: cnnfast.max_pool2d_backward,
                3: cnnfast.max_pool3d_backward}
AVG = {1: cnnfast.avg_pool1d, 2: cnnfast.avg_pool2d, 3: cnnfast.avg_pool3d}
AVG_BACKWARD = {1: cnnfast.avg_pool1d_backward, 2: cnnfast.avg_pool2d_backward,
                3: cnnfast.avg_pool3d_backward}
REF = {name: getattr(reference, name) for name in dir(reference) if "pool" in name}

# (N, C, spatial, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    (2, 3, (8, 8), 2, None, 0, 1, False),                   # LeNet/VGG 2x2/2
    (2, 3, (11, 13), 3, 2, 1, 1, False),                    # ResNet stem 3x3/2 p1, odd sizes
    (1, 4, (13, 13), 3, 2, 0, 1, False),                    # AlexNet 3x3/2 overlapping
    (2, 2, (11, 13), 3, 2, 1, 1, True),                     # ceil_mode
    (2, 2, (10, 9), (3, 2), (2, 1), (1, 1), (2, 1), True),  # non-square all, dilation
    (3, 2, (7, 40), (2, 3), (1, 3), (1, 1), 1, False),      # wide rows (several vectors)
    (1, 1, (6, 50), 3, (1, 2), 1, 2, True),                 # dilation 2, stride 2 on W
    (2, 3, (9, 9), 4, 3, 2, 1, True),                       # stride 3, ceil overhang
    (0, 3, (8, 8), 2, None, 0, 1, False),                   # empty batch
    (1, 2, (5, 5), 5, 1, 2, 1, False),                      # kernel = input, padding k//2
    (2, 2, (4, 70), (1, 5), (1, 4), (0, 2), (1, 3), True),
]
MAX_CASES_1D = [
    (2, 3, (17,), 3, 2, 1, 1, True),
    (1, 2, (40,), 4, 3, 2, 2, False),
    (0, 2, (9,), 2, None, 0, 1, False),
]
MAX_CASES_3D = [
    (2, 2, (5, 6, 7), 2, None, 0, 1, False),
    (1, 3, (6, 7, 9), (3, 2, 3), (2, 1, 2), (1, 1, 1), (1, 2, 1), True),
    (0, 2, (3, 4, 5), 2, 1, 0, 1, False),
]

# (N, C, spatial, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    (2, 3, (8, 8), 2, None, 0, False, True, None),
    (2, 3, (11, 13), 3, 2, 1, False, True, None),
    (2, 3, (11, 13), 3, 2, 1, False, False, None),          # exclude padding
    (2, 2, (11, 13), 3, 2, 1, True, True, None),            # ceil: overhang never counts
    (2, 2, (11, 13), 3, 2, 1, True, False, None),
    (1, 2, (10, 9), (3, 2), (2, 3), (1, 1), True, True, 5),  # divisor_override
    (3, 2, (7, 40), (2, 3), (1, 3), (1, 1), False, False, None),
    (2, 3, (9, 9), 4, 3, 2, True, True, None),
    (0, 3, (8, 8), 2, None, 0, False, True, None),
    (64, 6, (28, 28), 2, 2, 0, False, True, None),          # LeNet s2
    # rows narrower than a vector, no padding: read in place an output at a time
    (3, 4, (10, 10), 2, 2, 0, False, True, None),           # LeNet's second pool
    (2, 3, (9, 11), 2, 2, 0, True, True, None),             # ceil overhang: padded copy
    (2, 3, (9, 11), 2, 2, 0, True, False, None),
    (2, 2, (7, 12), (3, 2), (2, 3), 0, False, True, 5),
]
AVG_CASES_1D = [
    (2, 3, (17,), 3, 2, 1, True, False, None),
    (2, 3, (13,), 3, 2, 0, False, True, None),
    (1, 2, (40,), 4, 3, 2, False, True, 3),
]
AVG_CASES_3D = [
    (2, 2, (5, 6, 7), 2, None, 0, False, True, None),
    (2, 2, (4, 6, 8), 2, 2, 0, False, True, None),
    (1, 3, (6, 7, 9), (3, 2, 3), (2, 1, 2), (1, 1, 1), True, False, None),
]


def _max_cases():
    return ([(2,) + c for c in MAX_CASES] + [(1,) + c for c in MAX_CASES_1D]
            + [(3,) + c for c in MAX_CASES_3D])


def _avg_cases():
    return ([(2,) + c for c in AVG_CASES] + [(1,) + c for c in AVG_CASES_1D]
            + [(3,) + c for c in AVG_CASES_3D])


def _ties_input(rng, shape, dtype):
    """Small integers: windows hold ties, so the index rule is exercised."""
    return rng.integers(-3, 4, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", _max_cases(), ids=str)
def test_max_pool_matches_reference(case, dtype, rng):
    nd, N, C, size, kernel, stride, padding, dilation, ceil_mode = case
    for x in (rng.standard_normal((N, C) + size).astype(dtype),
              _ties_input(rng, (N, C) + size, dtype)):
        kw = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                  ceil_mode=ceil_mode)
        y, idx = MAX[nd](x, return_indices=True, **kw)
        y_ref, idx_ref = REF[f"max_pool{nd}d"](x, return_indices=True, **kw)
        assert y.dtype == dtype and idx.dtype == np.int64
        assert y.shape == y_ref.shape and y.flags.c_contiguous
        np.testing.assert_array_equal(y, y_ref)        # max is exact
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_array_equal(MAX[nd](x, **kw), y)  # without indices, same values
        if N:
            # each index points at the value it reports
            flat = x.reshape(N, C, -1)
            picked = np.take_along_axis(flat, idx.reshape(N, C, -1), axis=-1)
            np.testing.assert_array_equal(picked.reshape(y.shape), y)
        g = rng.standard_normal(y.shape).astype(dtype)
        gx = MAX_BACKWARD[nd](g, idx, x.shape)
        gx_ref = REF[f"max_pool{nd}d_backward"](g, idx_ref, x.shape)
        assert gx.shape == x.shape and gx.dtype == dtype
        np.testing.assert_allclose(gx, gx_ref, rtol=0, atol=tolerance(dtype, 8))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", _avg_cases(), ids=str)
def test_avg_pool_matches_reference(case, dtype, rng):
    nd, N, C, size, kernel, stride, padding, ceil_mode, include_pad, divisor = case
    x = rng.standard_normal((N, C) + size).astype(dtype)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
              count_include_pad=include_pad, divisor_override=divisor)
    y = AVG[nd](x, **kw)
    y_ref = REF[f"avg_pool{nd}d"](x, **kw)
    assert y.dtype == dtype and y.shape == y_ref.shape and y.flags.c_contiguous
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=tolerance(dtype, 16))
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = AVG_BACKWARD[nd](g, x.shape, **kw)
    gx_ref = REF[f"avg_pool{nd}d_backward"](g, x.shape, **kw)
    assert gx.shape == x.shape and gx.dtype == dtype
    np.testing.assert_allclose(gx, gx_ref, rtol=0, atol=tolerance(dtype, 16))


ADAPTIVE_CASES = [
    ((2, 3, 13, 11), (6, 6)),      # AlexNet head: uneven windows
    ((2, 3, 7, 7), (7, 7)),        # identity
    ((1, 2, 5, 9), (3, 4)),
    ((2, 2, 4, 4), (6, 5)),        # output larger than input: windows overlap
    ((2, 2, 9, 9), 1),             # global
    ((1, 2, 8, 10), (None, 3)),    # None keeps the input size
    ((0, 3, 6, 6), (2, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, output_size", ADAPTIVE_CASES, ids=str)
def test_adaptive_pool_matches_reference(shape, output_size, dtype, rng):
    for x in (rng.standard_normal(shape).astype(dtype), _ties_input(rng, shape, dtype)):
        y = cnnfast.adaptive_avg_pool2d(x, output_size)
        y_ref = reference.adaptive_avg_pool2d(x, output_size)
        assert y.dtype == dtype and y.shape == y_ref.shape
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=tolerance(dtype, 16))
        g = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_allclose(cnnfast.adaptive_avg_pool2d_backward(g, x.shape),
                                   reference.adaptive_avg_pool2d_backward(g, x.shape),
                                   rtol=0, atol=tolerance(dtype, 16))
        m, idx = cnnfast.adaptive_max_pool2d(x, output_size, return_indices=True)
        m_ref, idx_ref = reference.adaptive_max_pool2d(x, output_size, return_indices=True)
        np.testing.assert_array_equal(m, m_ref)
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_array_equal(cnnfast.adaptive_max_pool2d(x, output_size), m)
        gm = rng.standard_normal(m.shape).astype(dtype)
        np.testing.assert_allclose(cnnfast.adaptive_max_pool2d_backward(gm, idx, x.shape),
                                   reference.adaptive_max_pool2d_backward(gm, idx, x.shape),
                                   rtol=0, atol=tolerance(dtype, 16))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("plane", [(1, 1), (2, 3), (4, 4), (7, 7), (5, 9), (1, 33)], ids=str)
def test_global_avg_over_many_planes_is_split_without_changing_bits(plane, dtype, rng,
                                                                    monkeypatch):
    """Channels-first global averages run a range of planes per kernel call
    (planes shorter than a vector summed without lanes): against the
    reference, and the same bits on 1 and 2 threads (any size takes both
    here) and as the adaptive 1x1 call."""
    monkeypatch.setattr(_plan, "POOL_GRAIN", 1)
    cnnfast._cache.clear()   # plans made with the real grain
    x = rng.standard_normal((9, 300) + plane).astype(dtype)
    x[0, 0] = np.nan
    x[1, 2].flat[-1] = np.inf
    with cnnfast.num_threads(1):
        one = cnnfast.global_avg_pool2d(x)
    with cnnfast.num_threads(2):
        two = cnnfast.global_avg_pool2d(x)
        adaptive = cnnfast.adaptive_avg_pool2d(x, 1)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(adaptive.reshape(one.shape), one)
    assert np.isnan(one[0, 0]) and one[1, 2] == np.inf
    np.testing.assert_allclose(one, reference.global_avg_pool2d(x), rtol=0,
                               atol=tolerance(dtype, 4))
    cnnfast._cache.clear()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 4, 33, 17), (0, 2, 3, 3), (3, 2, 1, 1)],
                         ids=str)
def test_global_pool_matches_reference(shape, keepdims, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    N, C = shape[:2]
    out_shape = (N, C, 1, 1) if keepdims else (N, C)
    y = cnnfast.global_avg_pool2d(x, keepdims=keepdims)
    assert y.shape == out_shape and y.dtype == dtype
    np.testing.assert_allclose(y, reference.global_avg_pool2d(x, keepdims=keepdims), rtol=0,
                               atol=tolerance(dtype, 4))
    np.testing.assert_allclose(y.reshape(N, C), x.mean(axis=(2, 3)), rtol=0,
                               atol=tolerance(dtype, 4))
    m, idx = cnnfast.global_max_pool2d(x, keepdims=keepdims, return_indices=True)
    m_ref, idx_ref = reference.global_max_pool2d(x, keepdims=keepdims, return_indices=True)
    assert m.shape == out_shape and idx.shape == out_shape and idx.dtype == np.int64
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(m.reshape(N, C), x.max(axis=(2, 3)))
    g = rng.standard_normal(out_shape).astype(dtype)
    np.testing.assert_allclose(cnnfast.global_avg_pool2d_backward(g, shape),
                               reference.global_avg_pool2d_backward(g, shape), rtol=0,
                               atol=tolerance(dtype, 1))
    np.testing.assert_array_equal(cnnfast.global_max_pool2d_backward(g, idx, shape),
                                  reference.global_max_pool2d_backward(g, idx, shape))


# ------------------------------------------------------------ NaN, ties, -inf

def test_max_pool_nan_wins_and_index_points_at_nan():
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    x[0, 0, 0, 1] = np.nan            # first window of plane 0
    x[0, 0, 3, 3] = np.nan            # last window of plane 0
    x[0, 1, 2, 2] = np.nan
    y, idx = cnnfast.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1
    assert np.isnan(y[0, 0, 1, 1]) and idx[0, 0, 1, 1] == 15
    assert np.isnan(y[0, 1, 1, 1]) and idx[0, 1, 1, 1] == 10
    assert y[0, 0, 0, 1] == 7 and idx[0, 0, 0, 1] == 7       # NaN-free windows unaffected
    picked = np.take_along_axis(x.reshape(1, 2, -1), idx.reshape(1, 2, -1), -1)
    np.testing.assert_array_equal(np.isnan(picked), np.isnan(y.reshape(1, 2, -1)))
    g, gidx = cnnfast.global_max_pool2d(x, return_indices=True)
    assert np.isnan(g).all() and gidx[0, 1] == 10


def test_max_pool_nan_after_infinity_and_several_nans():
    # torch's scan: a NaN replaces anything, the last NaN of the window is the index
    x = np.array([[[[np.inf, np.nan, 1.0, np.nan]]]])
    y, idx = cnnfast.max_pool2d(x, (1, 4), return_indices=True)
    assert np.isnan(y).all() and idx.item() == 3
    y, idx = cnnfast.adaptive_max_pool2d(x, 1, return_indices=True)
    assert np.isnan(y).all() and idx.item() == 3


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_pick_first_in_row_major_order(dtype):
    x = np.zeros((1, 1, 4, 4), dtype=dtype)
    x[0, 0, 1, 0] = 5                 # window (0,0): 5 at (1,0) and (0,1)
    x[0, 0, 0, 1] = 5
    y, idx = cnnfast.max_pool2d(x, 2, return_indices=True)
    assert idx[0, 0, 0, 0] == 1       # (0,1) comes first row-major, not (1,0)
    assert idx[0, 0, 1, 1] == 10      # all-zero window: its first element
    _, gidx = cnnfast.global_max_pool2d(x, return_indices=True)
    assert gidx[0, 0] == 1


def test_all_negative_infinity_window_has_valid_first_inside_index():
    x = np.full((1, 1, 5, 5), -np.inf)
    y, idx = cnnfast.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    assert (y == -np.inf).all()
    # first tap inside the input: window (0,0) starts in the padding
    np.testing.assert_array_equal(idx[0, 0], [[0, 1, 3], [5, 6, 8], [15, 16, 18]])
    gx = cnnfast.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert gx.sum() == y.size


def test_avg_pool_window_in_padding_only_gives_zero_not_nan():
    # ceil_mode overhang with count_include_pad=False: divisor never 0
    x = np.ones((1, 1, 5, 5), dtype=np.float32)
    y = cnnfast.avg_pool2d(x, 2, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, reference.avg_pool2d(
        x, 2, stride=2, padding=1, ceil_mode=True, count_include_pad=False))


def test_avg_pool_count_include_pad_counts_padding_not_overhang():
    x = np.ones((1, 1, 4, 4))
    # 3x3 windows, stride 2, pad 1, ceil: last window starts at 3 and reaches 6 > 4+1
    y = cnnfast.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    assert y.shape == (1, 1, 3, 3)
    # window (0,0): rows -1..1 x cols -1..1: 4 inputs of 9 counted cells
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9)
    # window (1,1): rows 1..3 x cols 1..3: all inside
    assert y[0, 0, 1, 1] == pytest.approx(1.0)
    # last window rows 3..5: row 3 inside, row 4 is padding (counted), row 5 overhang (not)
    assert y[0, 0, 2, 2] == pytest.approx(1 / 4)


def test_overlapping_windows_accumulate_gradients():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0                # the maximum of all four 3x3/2 windows
    y, idx = cnnfast.max_pool2d(x, 3, stride=2, return_indices=True)
    assert (idx == 12).all()
    gx = cnnfast.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert gx[0, 0, 2, 2] == 4 and gx.sum() == 4
    ga = cnnfast.avg_pool2d_backward(np.ones((1, 1, 2, 2)), x.shape, 3, stride=2)
    assert ga[0, 0, 2, 2] == pytest.approx(4 / 9) and ga[0, 0, 0, 0] == pytest.approx(1 / 9)


# ------------------------------------------------------- finite differences

def _numeric_grad(f, x, g, eps=1e-6):
    """Finite-difference gradient of sum(f(x) * g) wrt x."""
    return numeric_gradient(lambda: np.sum(f(x) * g), x, eps)


@pytest.mark.parametrize("nd, size, kw", [
    (2, (5, 6), dict(kernel_size=3, stride=2, padding=1)),
    (2, (5, 6), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), ceil_mode=True,
                     count_include_pad=False)),
    (2, (4, 5), dict(kernel_size=2, divisor_override=3)),
    (1, (9,), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (3, (3, 4, 4), dict(kernel_size=2, stride=1, padding=1)),
])
def test_avg_pool_backward_finite_differences(nd, size, kw, rng):
    x = rng.standard_normal((2, 2) + size)
    y = AVG[nd](x, **kw)
    g = rng.standard_normal(y.shape)
    numeric = _numeric_grad(lambda a: AVG[nd](a, **kw), x, g)
    np.testing.assert_allclose(AVG_BACKWARD[nd](g, x.shape, **kw), numeric, atol=1e-7)


@pytest.mark.parametrize("nd, size, kw", [
    (2, (5, 7), dict(kernel_size=3, stride=2, padding=1)),
    (2, (6, 6), dict(kernel_size=2, dilation=2, ceil_mode=True, stride=3)),
    (1, (11,), dict(kernel_size=4, stride=3, padding=2)),
    (3, (3, 4, 5), dict(kernel_size=2, stride=(1, 2, 2))),
])
def test_max_pool_backward_finite_differences(nd, size, kw, rng):
    # distinct values keep every maximum away from ties, where the max is not differentiable
    x = rng.permutation(np.prod((2, 2) + size)).reshape((2, 2) + size).astype(np.float64)
    y, idx = MAX[nd](x, return_indices=True, **kw)
    g = rng.standard_normal(y.shape)
    numeric = _numeric_grad(lambda a: MAX[nd](a, **kw), x, g, eps=1e-3)
    np.testing.assert_allclose(MAX_BACKWARD[nd](g, idx, x.shape), numeric, atol=1e-7)


def test_adaptive_and_global_backward_finite_differences(rng):
    x = rng.permutation(2 * 2 * 5 * 7).reshape(2, 2, 5, 7).astype(np.float64)
    for out in [(3, 4), (2, 5), (7, 9)]:
        g = rng.standard_normal((2, 2) + out)
        numeric = _numeric_grad(lambda a: cnnfast.adaptive_avg_pool2d(a, out), x, g, eps=1e-3)
        np.testing.assert_allclose(cnnfast.adaptive_avg_pool2d_backward(g, x.shape), numeric,
                                   atol=1e-7)
        y, idx = cnnfast.adaptive_max_pool2d(x, out, return_indices=True)
        numeric = _numeric_grad(lambda a: cnnfast.adaptive_max_pool2d(a, out), x, g, eps=1e-3)
        np.testing.assert_allclose(cnnfast.adaptive_max_pool2d_backward(g, idx, x.shape),
                                   numeric, atol=1e-7)
    g = rng.standard_normal((2, 2))
    numeric = _numeric_grad(lambda a: cnnfast.global_avg_pool2d(a), x, g, eps=1e-3)
    np.testing.assert_allclose(cnnfast.global_avg_pool2d_backward(g, x.shape), numeric,
                               atol=1e-7)
    _, idx = cnnfast.global_max_pool2d(x, return_indices=True)
    numeric = _numeric_grad(lambda a: cnnfast.global_max_pool2d(a), x, g, eps=1e-3)
    np.testing.assert_allclose(cnnfast.global_max_pool2d_backward(g, idx, x.shape), numeric,
                               atol=1e-7)


# ------------------------------------------------------------------ torch

def _torch_cases():
    for nd, N, C, size, kernel, stride, padding, dilation, ceil_mode in _max_cases():
        if N:
            yield ("max", nd, (N, C) + size, dict(kernel_size=kernel, stride=stride,
                                                  padding=padding, dilation=dilation,
                                                  ceil_mode=ceil_mode))
    for nd, N, C, size, kernel, stride, padding, ceil_mode, inc, div in _avg_cases():
        if N and not (nd == 1 and div is not None):   # torch's avg_pool1d has no override
            kw = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                      count_include_pad=inc)
            if nd > 1:
                kw["divisor_override"] = div
            yield ("avg", nd, (N, C) + size, kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, nd, shape, kw", list(_torch_cases()), ids=str)
def test_pool_matches_torch(kind, nd, shape, kw, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _ties_input(rng, shape, dtype) if kind == "max" else rng.standard_normal(shape).astype(
        dtype)
    xt = torch.from_numpy(x).requires_grad_(True)
    if kind == "max":
        yt, it = getattr(F, f"max_pool{nd}d")(xt, return_indices=True, **kw)
        y, idx = MAX[nd](x, return_indices=True, **kw)
        np.testing.assert_array_equal(idx, it.numpy())
    else:
        yt = getattr(F, f"avg_pool{nd}d")(xt, **kw)
        y = AVG[nd](x, **kw)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=tolerance(dtype, 16))
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.from_numpy(g))
    gx = (MAX_BACKWARD[nd](g, idx, shape) if kind == "max"
          else AVG_BACKWARD[nd](g, shape, **kw))
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=0, atol=tolerance(dtype, 16))


@pytest.mark.parametrize("shape, output_size", [c for c in ADAPTIVE_CASES if c[0][0]], ids=str)
def test_adaptive_pool_matches_torch(shape, output_size, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _ties_input(rng, shape, np.float64)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = F.adaptive_avg_pool2d(xt, output_size)
    np.testing.assert_allclose(cnnfast.adaptive_avg_pool2d(x, output_size),
                               yt.detach().numpy(), atol=1e-12)
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(cnnfast.adaptive_avg_pool2d_backward(g, shape),
                               xt.grad.numpy(), atol=1e-12)
    mt, it = F.adaptive_max_pool2d(torch.from_numpy(x), output_size, return_indices=True)
    m, idx = cnnfast.adaptive_max_pool2d(x, output_size, return_indices=True)
    np.testing.assert_array_equal(m, mt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())


def test_nan_index_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    for kw in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2)]:
        yt, it = torch.nn.functional.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
        y, idx = cnnfast.max_pool2d(x, return_indices=True, **kw)
        np.testing.assert_array_equal(y, yt.numpy())     # NaN == NaN for assert_array_equal
        np.testing.assert_array_equal(idx, it.numpy())


# --------------------------------------------------------------- threads

@pytest.mark.parametrize("threads", [1, 2, 5])
def test_thread_counts_give_identical_results(threads, rng):
    x = rng.standard_normal((3, 5, 17, 19)).astype(np.float32)
    with cnnfast.num_threads(1):
        y1, i1 = cnnfast.max_pool2d(x, 3, 2, 1, return_indices=True)
        a1 = cnnfast.avg_pool2d(x, 3, 2, 1)
        ga1 = cnnfast.avg_pool2d_backward(a1, x.shape, 3, 2, 1)
    with cnnfast.num_threads(threads):
        y, i = cnnfast.max_pool2d(x, 3, 2, 1, return_indices=True)
        a = cnnfast.avg_pool2d(x, 3, 2, 1)
        ga = cnnfast.avg_pool2d_backward(a1, x.shape, 3, 2, 1)
    np.testing.assert_array_equal(y, y1)
    np.testing.assert_array_equal(i, i1)
    np.testing.assert_array_equal(a, a1)
    np.testing.assert_array_equal(ga, ga1)


def test_small_calls_run_on_one_thread_by_the_grain_rule(monkeypatch):
    from cnnfast import _plan

    monkeypatch.setattr(_plan, "POOL_GRAIN", 1 << 17)
    monkeypatch.setattr(_plan, "CONV_GRAIN", 1 << 21)
    with cnnfast.num_threads(2):
        assert _plan.pool_threads(1000) == 1 and _plan.pool_threads(1 << 20) == 2
        assert _plan.conv_threads(1000) == 1 and _plan.conv_threads(1 << 22) == 2
