"""data_format="channels_last" (issue 17): every conv, conv_transpose and pooling op
and its backward, the layers and the models give the channels-first results on
transposed arrays -- checked against cnnfast.reference, against the channels-first
call, and (backward, float64) against finite differences."""
import numpy as np
import pytest

import cnnfast as cf
from cnnfast import models, nn
from cnnfast import reference as ref
from helpers import numeric_gradient, tolerance
from layouts import LAYOUTS, relayout

DTYPES = [np.float32, np.float64]
LAST = {"data_format": "channels_last"}


def last(a):
    """Channels-first (N, C, *spatial) -> C-contiguous channels-last (N, *spatial, C)."""
    return None if a is None else np.ascontiguousarray(np.moveaxis(a, 1, -1))


def first(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def shape_last(shape):
    return (shape[0],) + tuple(shape[2:]) + (shape[1],)


def check_last(got, want_first, dtype, reduction=1):
    """got (channels-last) equals want_first (channels-first) transposed; a new
    C-contiguous array."""
    assert isinstance(got, np.ndarray) and got.flags.c_contiguous and got.flags.writeable
    assert got.dtype == dtype
    want = last(want_first) if want_first.ndim >= 3 else want_first
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tolerance(dtype, reduction),
                               atol=tolerance(dtype, reduction))


# ------------------------------------------------------------ convolution

# (nd, N, C, K, spatial, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 2, 3, 5, (7, 6), 3, 1, 1, 1, 1),
    (2, 3, 4, 6, (9, 8), (3, 2), (2, 1), (1, 0), 1, 2),
    (2, 1, 6, 12, (11, 10), 3, 1, 2, 2, 3),          # dilation, groups, channels-in-lanes
    (2, 2, 5, 14, (15, 16), 3, 1, 1, 1, 1),          # direct (lanes) under auto
    (2, 2, 4, 4, (6, 5), 3, 1, 1, 1, 4),             # depthwise
    (2, 3, 7, 9, (5, 6), 1, 1, 0, 1, 1),             # pointwise: native NHWC GEMM
    (2, 0, 7, 9, (5, 6), 1, 1, 0, 1, 1),             # pointwise, empty batch
    (2, 1, 7, 9, (5, 5), 1, 2, 0, 1, 1),             # 1x1 with stride: native, strided rows
    (2, 2, 6, 8, (8, 7), 1, (2, 3), 0, 1, 1),
    (1, 2, 5, 3, (10,), 1, 3, 0, 1, 1),
    (2, 2, 6, 4, (5, 4), 1, 1, 1, 1, 1),             # 1x1 with padding: transposed
    (2, 2, 6, 4, (5, 4), 1, 1, 0, 1, 2),             # 1x1 grouped: transposed
    (2, 0, 3, 4, (6, 6), 3, 1, 1, 1, 1),             # empty batch
    (1, 2, 3, 4, (11,), 3, 2, 1, 1, 1),
    (1, 2, 5, 3, (9,), 1, 1, 0, 1, 1),               # 1-D pointwise
    (3, 2, 2, 3, (4, 5, 3), 2, 1, (1, 0, 1), 1, 1),
    (3, 1, 4, 4, (3, 4, 5), 1, 1, 0, 1, 1),          # 3-D pointwise
]


def _conv_arrays(rng, dtype, nd, N, C, K, spatial, kernel, groups):
    kernel = (kernel,) * nd if isinstance(kernel, int) else kernel
    x = rng.standard_normal((N, C) + tuple(spatial)).astype(dtype)
    w = rng.standard_normal((K, C // groups) + tuple(kernel)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def _algorithms(kernel):
    pointwise = all(k == 1 for k in ((kernel,) if isinstance(kernel, int) else kernel))
    return ["auto", "direct", "im2col"] + (["1x1"] if pointwise else [])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_and_backward(rng, dtype, case):
    nd, N, C, K, spatial, kernel, stride, padding, dilation, groups = case
    x, w, b = _conv_arrays(rng, dtype, nd, N, C, K, spatial, kernel, groups)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    conv, conv_bw = getattr(cf, f"conv{nd}d"), getattr(cf, f"conv{nd}d_backward")
    want = getattr(ref, f"conv{nd}d")(x, w, b, **args)
    go = rng.standard_normal(want.shape).astype(dtype)
    want_grads = getattr(ref, f"conv{nd}d_backward")(go, x, w, **args)
    red = C // groups * np.prod(w.shape[2:])
    for algorithm in _algorithms(kernel):
        y = conv(last(x), w, b, **args, algorithm=algorithm, **LAST)
        check_last(y, want, dtype, red)
        # the channels-first call on the same arrays: equal to its rounding
        check_last(y, conv(x, w, b, **args, algorithm=algorithm), dtype, red)
        gx, gw, gb = conv_bw(last(go), last(x), w, **args, algorithm=algorithm, **LAST)
        check_last(gx, want_grads[0], dtype, K * np.prod(w.shape[2:]))
        np.testing.assert_allclose(gw, want_grads[1], rtol=tolerance(dtype, go[:, 0].size),
                                   atol=tolerance(dtype, go[:, 0].size))
        np.testing.assert_allclose(gb, want_grads[2], rtol=tolerance(dtype, go[:, 0].size),
                                   atol=tolerance(dtype, go[:, 0].size))
        assert gw.shape == w.shape and gb.shape == b.shape


@pytest.mark.parametrize("need", [("x",), ("weight",), ("bias",), ("x", "bias")])
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_backward_need(rng, need, kernel):
    x, w, _ = _conv_arrays(rng, np.float64, 2, 2, 4, 5, (6, 7), kernel, 1)
    go = rng.standard_normal((2, 5) + ((6, 7) if kernel == 1 else (4, 5)))
    got = cf.conv2d_backward(last(go), last(x), w, need=need, **LAST)
    want = cf.conv2d_backward(go, x, w, need=need)
    for name, g, wnt in zip(("x", "weight", "bias"), got, want):
        if name not in need:
            assert g is None
        elif name == "x":
            check_last(g, wnt, np.float64, 10)
        else:
            np.testing.assert_allclose(g, wnt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_gradients_match_finite_differences(rng, kernel):
    x, w, b = _conv_arrays(rng, np.float64, 2, 2, 3, 4, (5, 4), kernel, 1)
    xl = last(x)
    go = rng.standard_normal(cf.conv2d(xl, w, b, padding=1, **LAST).shape)
    gx, gw, gb = cf.conv2d_backward(go, xl, w, padding=1, **LAST)

    def loss():
        return float(np.sum(cf.conv2d(xl, w, b, padding=1, **LAST) * go))

    np.testing.assert_allclose(gx, numeric_gradient(loss, xl), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_gradient(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_any_input_layout(rng, files, layout, kernel):
    """Fortran, strided, byte-swapped... channels-last inputs give the same results."""
    x, w, b = _conv_arrays(rng, np.float32, 2, 2, 6, 5, (5, 7), kernel, 1)
    xl = last(x)
    want = cf.conv2d(xl, w, b, **LAST)
    odd = relayout(xl, layout, files())
    if layout == "broadcast":
        xl = np.ascontiguousarray(odd)
        want = cf.conv2d(xl, w, b, **LAST)
    np.testing.assert_array_equal(cf.conv2d(odd, w, b, **LAST), want)
    go = rng.standard_normal(want.shape).astype(np.float32)
    want_grads = cf.conv2d_backward(go, xl, w, **LAST)
    for g, wnt in zip(cf.conv2d_backward(relayout(go, layout, files()), odd, w, **LAST),
                      want_grads if layout != "broadcast" else
                      cf.conv2d_backward(np.ascontiguousarray(relayout(go, layout,
                                                                        files())), xl, w,
                                         **LAST)):
        np.testing.assert_allclose(g, wnt, rtol=1e-6, atol=1e-5)


# (nd, N, C_in, C_out, spatial, kernel, stride, padding, output_padding, groups, dilation)
TRANSPOSE_CASES = [
    (2, 2, 4, 3, (5, 6), 3, 2, 1, 1, 1, 1),
    (2, 1, 4, 6, (4, 3), (2, 3), (1, 2), 0, 0, 2, 1),
    (2, 2, 5, 7, (4, 5), 1, 1, 0, 0, 1, 1),          # pointwise: native
    (2, 0, 5, 7, (4, 5), 1, 1, 0, 0, 1, 1),
    (2, 2, 5, 7, (4, 5), 1, 1, 0, 1, 1, 2),          # 1x1 with output_padding: transposed
    (1, 2, 3, 4, (7,), 3, 2, 1, 1, 1, 2),
    (3, 1, 2, 3, (3, 4, 3), 2, 2, 0, 1, 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose(rng, dtype, case):
    nd, N, C, K, spatial, kernel, stride, padding, output_padding, groups, dilation = case
    kernel = (kernel,) * nd if isinstance(kernel, int) else kernel
    x = rng.standard_normal((N, C) + spatial).astype(dtype)
    w = rng.standard_normal((C, K // groups) + kernel).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    args = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                dilation=dilation)
    op, op_bw = getattr(cf, f"conv_transpose{nd}d"), getattr(cf, f"conv_transpose{nd}d_backward")
    want = getattr(ref, f"conv_transpose{nd}d")(x, w, b, **args)
    go = rng.standard_normal(want.shape).astype(dtype)
    want_grads = getattr(ref, f"conv_transpose{nd}d_backward")(go, x, w, **args)
    red = C * np.prod(kernel)
    for algorithm in _algorithms(kernel):
        check_last(op(last(x), w, b, **args, algorithm=algorithm, **LAST), want, dtype, red)
        gx, gw, gb = op_bw(last(go), last(x), w, **args, algorithm=algorithm, **LAST)
        check_last(gx, want_grads[0], dtype, red)
        np.testing.assert_allclose(gw, want_grads[1], rtol=tolerance(dtype, go.size),
                                   atol=tolerance(dtype, go.size))
        np.testing.assert_allclose(gb, want_grads[2], rtol=tolerance(dtype, go.size),
                                   atol=tolerance(dtype, go.size))


# ---------------------------------------------------------------- pooling

@pytest.fixture(params=["native", "transposed"])
def pool_route(request, monkeypatch):
    """Every pooling case both ways: natively on the plane kernels (whatever the
    channel count) and through the layout copies around the channels-first call."""
    from cnnfast import _plan

    monkeypatch.setattr(_plan, "POOL_CHANNELS_LAST_MIN", 1 if request.param == "native"
                        else 10**9)
    return request.param


# (nd, N, C, spatial, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    (2, 2, 3, (7, 8), 3, 2, 1, 1, False),
    (2, 1, 5, (9, 7), (3, 2), (2, 1), (1, 0), (2, 1), True),
    (2, 0, 3, (6, 6), 2, 2, 0, 1, False),
    (2, 2, 17, (5, 5), 2, 1, 1, 1, True),            # more channels than one vector
    (2, 3, 32, (6, 7), 3, 2, 1, 2, False),
    (1, 2, 16, (9,), 2, 1, 0, 1, False),
    (1, 2, 4, (11,), 3, 2, 1, 2, True),
    (3, 2, 3, (4, 5, 6), 2, (1, 2, 2), (1, 0, 1), 1, False),    # transposed
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool(rng, dtype, case, pool_route):
    nd, N, C, spatial, kernel, stride, padding, dilation, ceil_mode = case
    x = rng.standard_normal((N, C) + spatial).astype(dtype)
    args = (kernel, stride, padding, dilation, ceil_mode)
    y, idx = getattr(ref, f"max_pool{nd}d")(x, *args, return_indices=True)
    op, op_bw = getattr(cf, f"max_pool{nd}d"), getattr(cf, f"max_pool{nd}d_backward")
    yl, il = op(last(x), *args, return_indices=True, **LAST)
    check_last(yl, y, dtype)
    assert il.dtype == np.int64 and il.flags.c_contiguous
    np.testing.assert_array_equal(il, last(idx))
    np.testing.assert_array_equal(op(last(x), *args, **LAST), yl)
    go = rng.standard_normal(y.shape).astype(dtype)
    want = getattr(ref, f"max_pool{nd}d_backward")(go, idx, x.shape)
    check_last(op_bw(last(go), il, shape_last(x.shape), **LAST), want, dtype, 8)


def test_max_pool_ties_nan_and_padding_only_windows(pool_route):
    x = np.zeros((1, 3, 4, 4), np.float32)
    x[0, 1, 1, 1] = np.nan
    x[0, 2] = -np.inf
    for args in ((2, 2, 0), (3, 1, 1)):
        y, idx = cf.max_pool2d(x, *args, return_indices=True)
        yl, il = cf.max_pool2d(last(x), *args, return_indices=True, **LAST)
        np.testing.assert_array_equal(yl, last(y))
        np.testing.assert_array_equal(il, last(idx))


# (nd, N, C, spatial, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    (2, 2, 3, (7, 8), 3, 2, 1, False, True, None),
    (2, 1, 5, (9, 7), (3, 2), (2, 1), (1, 0), True, False, None),
    (2, 2, 4, (6, 6), 2, 2, 1, True, True, 3),
    (2, 0, 3, (6, 6), 2, 2, 0, False, True, None),
    (2, 2, 24, (7, 6), 3, 1, 1, False, False, None),
    (1, 2, 4, (11,), 3, 2, 1, True, False, None),
    (3, 2, 3, (4, 5, 6), 2, (1, 2, 2), (1, 0, 1), True, False, None),  # transposed
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool(rng, dtype, case, pool_route):
    nd, N, C, spatial, *args = case
    x = rng.standard_normal((N, C) + spatial).astype(dtype)
    want = getattr(ref, f"avg_pool{nd}d")(x, *args)
    op, op_bw = getattr(cf, f"avg_pool{nd}d"), getattr(cf, f"avg_pool{nd}d_backward")
    yl = op(last(x), *args, **LAST)
    check_last(yl, want, dtype, 9)
    # the same kernels, the same order of summation: bit-identical
    np.testing.assert_array_equal(yl, last(op(x, *args)))
    go = rng.standard_normal(want.shape).astype(dtype)
    want_gx = getattr(ref, f"avg_pool{nd}d_backward")(go, x.shape, *args)
    check_last(op_bw(last(go), shape_last(x.shape), *args, **LAST), want_gx, dtype, 9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", [(1, 1), (3, 2), (5, 7), (2, None)])
@pytest.mark.parametrize("N", [0, 2])
def test_adaptive_pool(rng, dtype, out, N):
    x = rng.standard_normal((N, 3, 5, 7)).astype(dtype)
    want = ref.adaptive_avg_pool2d(x, out)
    yl = cf.adaptive_avg_pool2d(last(x), out, **LAST)
    check_last(yl, want, dtype, 35)
    go = rng.standard_normal(want.shape).astype(dtype)
    check_last(cf.adaptive_avg_pool2d_backward(last(go), shape_last(x.shape), **LAST),
               ref.adaptive_avg_pool2d_backward(go, x.shape), dtype, 35)
    y, idx = ref.adaptive_max_pool2d(x, out, return_indices=True)
    ym, im = cf.adaptive_max_pool2d(last(x), out, return_indices=True, **LAST)
    check_last(ym, y, dtype)
    np.testing.assert_array_equal(im, last(idx))
    check_last(cf.adaptive_max_pool2d_backward(last(go), im, shape_last(x.shape), **LAST),
               ref.adaptive_max_pool2d_backward(go, idx, x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 20, 4, 4), (0, 3, 2, 2), (3, 1, 1, 1)])
def test_global_pool(rng, dtype, keepdims, shape, pool_route):
    x = rng.standard_normal(shape).astype(dtype)
    x_last = last(x)
    hw = shape[2] * shape[3]
    want = ref.global_avg_pool2d(x, keepdims=keepdims)
    y = cf.global_avg_pool2d(x_last, keepdims, **LAST)
    check_last(y, want, dtype, hw)
    go = rng.standard_normal(want.shape).astype(dtype)
    go_last = last(go) if keepdims else go
    check_last(cf.global_avg_pool2d_backward(go_last, x_last.shape, **LAST),
               ref.global_avg_pool2d_backward(go, x.shape), dtype, hw)
    y, idx = ref.global_max_pool2d(x, keepdims=keepdims, return_indices=True)
    ym, im = cf.global_max_pool2d(x_last, keepdims, return_indices=True, **LAST)
    check_last(ym, y, dtype)
    np.testing.assert_array_equal(im, last(idx) if keepdims else idx)
    np.testing.assert_array_equal(cf.global_max_pool2d(x_last, keepdims, **LAST), ym)
    check_last(cf.global_max_pool2d_backward(go_last, im, x_last.shape, **LAST),
               ref.global_max_pool2d_backward(go, idx, x.shape), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pool_any_input_layout(rng, files, layout, pool_route):
    x = last(rng.standard_normal((2, 5, 6, 7)).astype(np.float32))
    odd = relayout(x, layout, files())
    x = np.ascontiguousarray(odd)   # the values odd holds ("broadcast" changes them)
    for op in (lambda a: cf.max_pool2d(a, 3, 2, 1, return_indices=True, **LAST),
               lambda a: cf.avg_pool2d(a, 2, 1, 1, ceil_mode=True, **LAST),
               lambda a: cf.max_pool3d(a[:, None], (1, 2, 2), **LAST),
               lambda a: cf.adaptive_avg_pool2d(a, 3, **LAST),
               lambda a: cf.global_max_pool2d(a, return_indices=True, **LAST),
               lambda a: cf.global_avg_pool2d(a, **LAST)):
        for g, w in zip(_as_tuple(op(odd)), _as_tuple(op(x))):
            np.testing.assert_array_equal(g, w)
    go = relayout(last(rng.standard_normal((2, 5, 3, 3)).astype(np.float32)), layout,
                  files())
    idx = relayout(cf.max_pool2d(x, 2, return_indices=True, **LAST)[1], layout, files())
    np.testing.assert_array_equal(
        cf.max_pool2d_backward(go, idx, x.shape, **LAST),
        cf.max_pool2d_backward(np.ascontiguousarray(go), np.ascontiguousarray(idx), x.shape,
                               **LAST))
    np.testing.assert_array_equal(
        cf.avg_pool2d_backward(go, x.shape, 2, **LAST),
        cf.avg_pool2d_backward(np.ascontiguousarray(go), x.shape, 2, **LAST))


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("pool", ["max", "avg", "global_max", "global_avg"])
def test_pool_gradients_match_finite_differences(rng, pool, pool_route):
    x = last(rng.standard_normal((2, 3, 5, 6)))
    fwd = {"max": lambda a: cf.max_pool2d(a, 3, 2, 1, **LAST),
           "avg": lambda a: cf.avg_pool2d(a, 3, 2, 1, count_include_pad=False, **LAST),
           "global_max": lambda a: cf.global_max_pool2d(a, **LAST),
           "global_avg": lambda a: cf.global_avg_pool2d(a, **LAST)}[pool]
    go = rng.standard_normal(fwd(x).shape)
    if pool == "max":
        idx = cf.max_pool2d(x, 3, 2, 1, return_indices=True, **LAST)[1]
        gx = cf.max_pool2d_backward(go, idx, x.shape, **LAST)
    elif pool == "avg":
        gx = cf.avg_pool2d_backward(go, x.shape, 3, 2, 1, count_include_pad=False, **LAST)
    elif pool == "global_max":
        idx = cf.global_max_pool2d(x, return_indices=True, **LAST)[1]
        gx = cf.global_max_pool2d_backward(go, idx, x.shape, **LAST)
    else:
        gx = cf.global_avg_pool2d_backward(go, x.shape, **LAST)
    np.testing.assert_allclose(gx, numeric_gradient(lambda: float(np.sum(fwd(x) * go)), x),
                               rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------- validation

ALL_OPS = {
    "conv1d": lambda df: cf.conv1d(np.zeros((1, 4, 2)), np.zeros((1, 2, 1)), data_format=df),
    "conv2d_backward": lambda df: cf.conv2d_backward(np.zeros((1, 4, 4, 1)),
                                                     np.zeros((1, 4, 4, 2)),
                                                     np.zeros((1, 2, 1, 1)), data_format=df),
    "conv_transpose2d": lambda df: cf.conv_transpose2d(np.zeros((1, 3, 3, 2)),
                                                       np.zeros((2, 1, 1, 1)), data_format=df),
    "conv_transpose3d_backward": lambda df: cf.conv_transpose3d_backward(
        np.zeros((1, 2, 2, 2, 1)), np.zeros((1, 2, 2, 2, 2)), np.zeros((2, 1, 1, 1, 1)),
        data_format=df),
    "max_pool1d": lambda df: cf.max_pool1d(np.zeros((1, 4, 2)), 2, data_format=df),
    "max_pool2d_backward": lambda df: cf.max_pool2d_backward(
        np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 2), np.int64), (1, 2, 2, 2), data_format=df),
    "avg_pool3d": lambda df: cf.avg_pool3d(np.zeros((1, 2, 2, 2, 1)), 2, data_format=df),
    "avg_pool2d_backward": lambda df: cf.avg_pool2d_backward(np.zeros((1, 1, 1, 2)),
                                                             (1, 2, 2, 2), 2, data_format=df),
    "adaptive_avg_pool2d": lambda df: cf.adaptive_avg_pool2d(np.zeros((1, 2, 2, 1)), 1,
                                                             data_format=df),
    "adaptive_max_pool2d_backward": lambda df: cf.adaptive_max_pool2d_backward(
        np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 2), np.int64), (1, 2, 2, 2), data_format=df),
    "global_avg_pool2d": lambda df: cf.global_avg_pool2d(np.zeros((1, 2, 2, 1)),
                                                         data_format=df),
    "global_max_pool2d_backward": lambda df: cf.global_max_pool2d_backward(
        np.zeros((1, 2)), np.zeros((1, 2), np.int64), (1, 2, 2, 2), data_format=df),
}


@pytest.mark.parametrize("op", list(ALL_OPS))
@pytest.mark.parametrize("bad, error", [("NHWC", ValueError), ("channels-last", ValueError),
                                        ("", ValueError), (None, TypeError), (1, TypeError)])
def test_bad_data_format(op, bad, error):
    with pytest.raises(error, match="data_format"):
        ALL_OPS[op](bad)


@pytest.mark.parametrize("op", list(ALL_OPS))
def test_every_op_takes_channels_last(op):
    out = ALL_OPS[op]("channels_last")
    for a in out if isinstance(out, tuple) else (out,):
        assert a is None or (isinstance(a, np.ndarray) and a.flags.c_contiguous)


def test_shape_errors_in_channels_last():
    with pytest.raises(ValueError, match="channels"):   # weight wants 3 input channels, x has 2
        cf.conv2d(np.zeros((1, 4, 4, 2)), np.zeros((1, 3, 1, 1)), **LAST)
    with pytest.raises(ValueError, match="grad_out"):
        cf.avg_pool2d_backward(np.zeros((1, 2, 2, 3)), (1, 4, 4, 2), 2, **LAST)
    with pytest.raises(ValueError, match="input_shape"):
        cf.max_pool2d_backward(np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 2), np.int64),
                               (1, 2, 2), **LAST)
    with pytest.raises(TypeError, match="x must be a numpy.ndarray"):
        cf.max_pool2d([[1.0]], 2, **LAST)


@pytest.mark.parametrize("bad", [-1, 4, 2**62, -2**62])
@pytest.mark.parametrize("op", ["max", "global"])
def test_indices_out_of_range_rejected(bad, op, pool_route):
    """An index past the plane, also one whose (*spatial, C) offset would wrap
    around int64, is refused before anything is written."""
    idx = np.zeros((1, 1, 1, 3), np.int64)
    idx[0, 0, 0, 1] = bad
    with pytest.raises(ValueError, match="indices must lie in"):
        if op == "max":
            cf.max_pool2d_backward(np.ones((1, 1, 1, 3)), idx, (1, 2, 2, 3), **LAST)
        else:
            cf.global_max_pool2d_backward(np.ones((1, 1, 1, 3)), idx, (1, 2, 2, 3), **LAST)


def test_explain_conv_unchanged_by_layout():
    """explain_conv describes the channels-first plan; its shapes are channels-first."""
    plan = cf.explain_conv((2, 3, 8, 8), (4, 3, 3, 3), padding=1)
    assert plan.out_shape == (2, 4, 8, 8)


# ------------------------------------------------------------------ layers

def _layer_pair(make):
    nn.manual_seed(0)
    a = make("channels_first")
    nn.manual_seed(0)
    b = make("channels_last")
    b.load_state_dict(a.state_dict())
    return a, b


LAYERS = {
    "Conv2d": (lambda df: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, data_format=df),
               (2, 4, 7, 6)),
    "Conv2d 1x1": (lambda df: nn.Conv2d(4, 6, 1, data_format=df), (2, 4, 5, 5)),
    "Conv1d": (lambda df: nn.Conv1d(3, 5, 3, padding=1, data_format=df), (2, 3, 9)),
    "Conv3d": (lambda df: nn.Conv3d(2, 3, 2, data_format=df), (1, 2, 3, 4, 3)),
    "ConvTranspose2d": (lambda df: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1,
                                                      output_padding=1, data_format=df),
                        (2, 4, 4, 5)),
    "ConvTranspose1d 1x1": (lambda df: nn.ConvTranspose1d(3, 4, 1, data_format=df), (2, 3, 6)),
    "MaxPool2d": (lambda df: nn.MaxPool2d(3, 2, 1, data_format=df), (2, 3, 7, 7)),
    "AvgPool2d": (lambda df: nn.AvgPool2d(2, ceil_mode=True, data_format=df), (2, 3, 5, 7)),
    "AdaptiveAvgPool2d": (lambda df: nn.AdaptiveAvgPool2d((2, None), data_format=df),
                          (2, 3, 5, 4)),
    "AdaptiveMaxPool2d": (lambda df: nn.AdaptiveMaxPool2d(3, data_format=df), (2, 3, 5, 4)),
    "GlobalAvgPool2d": (lambda df: nn.GlobalAvgPool2d(keepdims=True, data_format=df),
                        (2, 3, 5, 4)),
    "GlobalMaxPool2d": (lambda df: nn.GlobalMaxPool2d(data_format=df), (2, 3, 5, 4)),
    "BatchNorm2d": (lambda df: nn.BatchNorm2d(3, data_format=df), (4, 3, 5, 4)),
    "Flatten": (lambda df: nn.Flatten(data_format=df), (2, 3, 2, 4)),
}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layers(rng, name, training):
    make, shape = LAYERS[name]
    a, b = _layer_pair(make)
    a.train(training)
    b.train(training)
    x = rng.standard_normal(shape)
    if name != "Flatten":
        a.to(np.float64)
        b.to(np.float64)
    ya = a(x)
    yb = b(last(x))
    np.testing.assert_allclose(yb, last(ya) if ya.ndim >= 3 else ya, rtol=1e-12, atol=1e-12)
    if name == "ConvTranspose2d":
        np.testing.assert_allclose(b(last(x), output_size=(8, 10)),
                                   last(a(x, output_size=(8, 10))), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b(last(x), output_size=(2, 8, 10, 3)),
                                   last(a(x, output_size=(2, 3, 8, 10))), rtol=1e-12,
                                   atol=1e-12)
        ya, yb = a(x), b(last(x))
    if not training:
        return
    go = rng.standard_normal(ya.shape)
    ga = a.backward(go)
    gb = b.backward(last(go) if go.ndim >= 3 else go)
    np.testing.assert_allclose(gb, last(ga), rtol=1e-10, atol=1e-12)
    for (ka, pa), (kb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert ka == kb
        np.testing.assert_allclose(pb.grad, pa.grad, rtol=1e-10, atol=1e-12)
    if name == "BatchNorm2d":
        np.testing.assert_allclose(b.running_mean, a.running_mean, rtol=1e-12)
        np.testing.assert_allclose(b.running_var, a.running_var, rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(2, 3, 3, data_format="NHWC"),
                                  lambda: nn.ConvTranspose2d(2, 3, 3, data_format="nhwc"),
                                  lambda: nn.MaxPool2d(2, data_format="channels"),
                                  lambda: nn.AvgPool2d(2, data_format=""),
                                  lambda: nn.AdaptiveAvgPool2d(2, data_format="last"),
                                  lambda: nn.GlobalMaxPool2d(data_format="first"),
                                  lambda: nn.BatchNorm2d(3, data_format="NCHW"),
                                  lambda: nn.Flatten(data_format="x"),
                                  lambda: models.resnet18(data_format="NHWC")])
def test_layer_bad_data_format(make):
    with pytest.raises(ValueError, match="data_format"):
        make()


def test_batchnorm_channel_axis_last_is_checked():
    with pytest.raises(ValueError, match="axis 3"):
        nn.BatchNorm2d(3, data_format="channels_last")(np.zeros((2, 3, 4, 4), np.float32))


# ------------------------------------------------------------------ models

MODEL_INPUTS = {"lenet5": (1, 32), "alexnet": (3, 64), "vgg11": (3, 32),
                "googlenet": (3, 32), "resnet18": (3, 32)}


@pytest.mark.parametrize("name", list(MODEL_INPUTS))
def test_models_forward_and_backward(rng, name):
    """The same weights (loaded from the channels-first model's state dict) give
    the same logits and, transposed, the same gradients."""
    channels, size = MODEL_INPUTS[name]
    kwargs = {"init_weights": False} if name in ("vgg11", "googlenet") else {}
    if name == "googlenet":
        kwargs["transform_input"] = True
    nn.manual_seed(0)
    a = models.MODELS[name](num_classes=3, in_channels=channels, dtype=np.float64, **kwargs)
    b = models.MODELS[name](num_classes=3, in_channels=channels, dtype=np.float64,
                            data_format="channels_last", **kwargs)
    b.load_state_dict(a.state_dict())
    x = rng.standard_normal((2, channels, size, size))
    a.eval(), b.eval()
    np.testing.assert_allclose(b(last(x)), a(x), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(b.forward_features(last(x)), a.forward_features(x), rtol=1e-9,
                               atol=1e-10)
    # training mode: dropout off so both see the same function; BatchNorm on batch stats
    for m in a.modules() + b.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    a.train(), b.train()
    ya, yb = a(x), b(last(x))
    np.testing.assert_allclose(yb, ya, rtol=1e-9, atol=1e-10)
    go = rng.standard_normal(ya.shape)
    ga, gb = a.backward(go), b.backward(go)
    scale = np.abs(ga).max()   # deep BatchNorm chains: cancellation relative to the largest
    np.testing.assert_allclose(gb, last(ga), rtol=1e-8, atol=1e-9 * scale)
    grads_a = {k: p.grad for k, p in a.named_parameters()}
    for k, p in b.named_parameters():
        np.testing.assert_allclose(p.grad, grads_a[k], rtol=1e-8,
                                   atol=1e-9 * np.abs(grads_a[k]).max(), err_msg=k)


def test_model_weights_file_loads_in_both_formats(rng, tmp_path):
    nn.manual_seed(0)
    a = models.lenet5(dtype=np.float64)
    path = tmp_path / "lenet.npz"
    np.savez(path, **a.state_dict())
    b = models.lenet5(dtype=np.float64, weights=path, data_format="channels_last")
    x = rng.standard_normal((3, 1, 32, 32))
    np.testing.assert_allclose(b.eval()(last(x)), a.eval()(x), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="32x32"):
        b(x[:, :, :30, :30].transpose(0, 2, 3, 1))


def test_torch_oracle_pointwise_and_pool(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 6, 5, 7))
    w = rng.standard_normal((4, 6, 1, 1))
    b = rng.standard_normal(4)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                      torch.from_numpy(b)).numpy()
    check_last(cf.conv2d(last(x), w, b, **LAST), want, np.float64, 6)
    want, idx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1,
                                               return_indices=True)
    y, il = cf.max_pool2d(last(x), 3, 2, 1, return_indices=True, **LAST)
    check_last(y, want.numpy(), np.float64)
    np.testing.assert_array_equal(il, last(idx.numpy()))


def test_reference_takes_data_format_with_the_same_signatures():
    import inspect

    for name in cf.functional.__all__:
        if name != "explain_conv":
            assert (inspect.signature(getattr(ref, name))
                    == inspect.signature(getattr(cf.functional, name))), name


@pytest.mark.parametrize("case", ["conv", "conv_backward", "convt", "max", "avg_backward",
                                  "global"])
def test_reference_channels_last_matches(rng, case):
    x = last(rng.standard_normal((2, 4, 6, 5)))
    w = rng.standard_normal((3, 4, 3, 3))
    calls = {
        "conv": lambda m: m.conv2d(x, w, padding=1, **LAST),
        "conv_backward": lambda m: m.conv2d_backward(last(np.ones((2, 3, 6, 5))), x, w,
                                                     padding=1, **LAST),
        "convt": lambda m: m.conv_transpose2d(x, w.transpose(1, 0, 2, 3)[:, :4], stride=2,
                                              **LAST),
        "max": lambda m: m.max_pool2d(x, 2, return_indices=True, **LAST),
        "avg_backward": lambda m: m.avg_pool2d_backward(np.ones((2, 3, 2, 4)), x.shape, 2,
                                                        **LAST),
        "global": lambda m: m.global_max_pool2d(x, True, True, **LAST),
    }
    got, want = calls[case](cf), calls[case](ref)
    for g, wnt in zip(got if isinstance(got, tuple) else (got,),
                      want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(g, wnt, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="data_format"):
        ref.conv2d(x, w, data_format="NHWC")


def test_layer_repr_names_channels_last():
    assert "data_format='channels_last'" in repr(nn.Conv2d(2, 3, 3, data_format="channels_last"))
    assert "data_format" not in repr(nn.Conv2d(2, 3, 3))
    assert "channels_last" in repr(models.resnet18(num_classes=2, data_format="channels_last"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,K", [((4, 24, 32, 32), 40),   # 4096 rows, 24 columns: rows split
                                     ((1, 16, 48, 48), 96),   # 2304 rows
                                     ((2, 64, 8, 8), 48)])    # 128 rows: columns split
def test_pointwise_weight_gradient_thread_splits(rng, dtype, shape, K):
    """A channels-last 1x1 weight gradient (pixel rows x GEMM) splits its rows
    (the reduction) over the threads into partial sums added in thread
    order when rows outnumber columns, else its columns: the reference's
    values at 1-3 threads, the same bits on every run at a given count."""
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((K, shape[1], 1, 1)).astype(dtype)
    g = rng.standard_normal((shape[0], K) + shape[2:]).astype(dtype)
    want = ref.conv2d_backward(g, x, w, need=("weight",))[1]
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    gl = np.ascontiguousarray(g.transpose(0, 2, 3, 1))
    for threads in (1, 2, 3):
        with cf.num_threads(threads):
            runs = [cf.conv2d_backward(gl, xl, w, need=("weight",), data_format="channels_last")[1]
                    for _ in range(3)]
        rows = shape[0] * shape[2] * shape[3]
        np.testing.assert_allclose(runs[0], want, rtol=0, atol=tolerance(dtype, rows))
        for again in runs[1:]:
            np.testing.assert_array_equal(again, runs[0])
