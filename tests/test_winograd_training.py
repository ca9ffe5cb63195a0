"""Winograd with its weights transformed at every call: a channels-last
3x3 stride-1 convolution's forward ("nhwc_winograd") and input gradient
("nhwc_winograd_x": the Winograd forward of grad_out with the flipped,
transposed weights) once a call has enough tiles to pay for the transform
(_plan.nhwc_winograd_fresh_wins), as a layer training at batch 8-16 has.

Checked through the public calls against cnnfast.reference on the
channels-first arrays (both dtypes, paddings 0-2 and asymmetric, odd and
rectangular planes, bias of a transposed convolution), the plan's kernel
names, finite differences in float64, the direct kernels' results when a
value is not finite, and bit-identical reruns at a fixed thread count."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _plan
from cnnfast import reference as R
from cnnfast._ops.conv_validation import conv_geometry
from helpers import to_first as _first, to_last as _last

TOL = {np.float32: 2e-5, np.float64: 1e-11}

# (x shape channels-first, out channels, padding): every one past the tile threshold
CASES = {
    "b8_32ch_16x16": ((8, 32, 16, 16), 32, 1),
    "odd_rect": ((9, 32, 13, 18), 48, 1),
    "pad0": ((8, 32, 20, 17), 32, 0),
    "pad2": ((8, 48, 14, 14), 32, 2),
    "asymmetric": ((8, 32, 15, 16), 32, ((0, 2), (1, 0))),
    "7x7_planes": ((32, 64, 7, 7), 64, 1),
}


def _arrays(rng, shape, K, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal((K, shape[1], 3, 3)) / np.sqrt(9 * shape[1])).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def _rel(got, want):
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_input_gradient_match_the_reference(rng, case, dtype):
    shape, K, padding = CASES[case]
    x, w, b = _arrays(rng, shape, K, dtype)
    plan = cnnfast.explain_conv(_last(x).shape, w.shape, padding=padding,
                                data_format="channels_last", need=("x", "weight"))
    assert "nhwc_winograd_x" in str(plan)
    y = cnnfast.conv2d(_last(x), w, b, padding=padding, data_format="channels_last")
    want = R.conv2d(x, w, b, padding=padding)
    assert _rel(_first(y), want) < TOL[dtype]
    g = rng.standard_normal(want.shape).astype(dtype)
    gx, gw, gb = cnnfast.conv2d_backward(_last(g), _last(x), w, padding=padding,
                                         data_format="channels_last")
    rx, rw, rb = R.conv2d_backward(g, x, w, padding=padding)
    assert _rel(_first(gx), rx) < TOL[dtype]
    assert _rel(gw, rw) < TOL[dtype]
    np.testing.assert_allclose(gb, rb, rtol=TOL[dtype] * 10)


def test_the_plan_takes_winograd_only_past_the_tile_threshold():
    def kernels(batch, C, H):
        geom = conv_geometry(2, np.zeros((batch, C, H, H), np.float32),
                             np.zeros((C, C, 3, 3), np.float32), None, 1, 1)
        plan = _plan.plan_conv(geom, "auto", ("forward", "x"), channels_last=True)
        return plan.passes["forward"].kernel, plan.passes["x"].kernel

    assert kernels(16, 64, 28) == ("nhwc_winograd", "nhwc_winograd_x")
    assert kernels(8, 64, 16) == ("nhwc_winograd", "nhwc_winograd_x")
    assert kernels(1, 64, 16) == ("nhwc_direct", "nhwc_direct_x")     # 16 tiles
    assert kernels(16, 512, 4) == ("nhwc_direct", "nhwc_direct_x")    # 64 tiles of F(2,3)
    assert kernels(16, 16, 28) == ("nhwc_direct", "nhwc_direct_x")    # too few channels
    # asked for direct: no Winograd
    geom = conv_geometry(2, np.zeros((16, 64, 28, 28), np.float32),
                         np.zeros((64, 64, 3, 3), np.float32), None, 1, 1)
    plan = _plan.plan_conv(geom, "direct", ("forward", "x"), channels_last=True)
    assert {p.kernel for p in plan.passes.values()} == {"nhwc_direct", "nhwc_direct_x"}


def test_input_gradient_finite_differences_float64(rng):
    x, w, _ = _arrays(rng, (32, 32, 6, 7), 32, np.float64)   # 32 images x 2 x 2 tiles
    x2 = _last(x)
    g2 = rng.standard_normal((32, 6, 7, 32))
    assert _plan.nhwc_winograd_fresh_wins(conv_geometry(2, x, w, None, 1, 1), "auto")
    gx, _, _ = cnnfast.conv2d_backward(g2, x2, w, padding=1, need=("x",),
                                       data_format="channels_last")
    loss = lambda xx: float(np.sum(cnnfast.conv2d(xx, w, padding=1,
                                                  data_format="channels_last") * g2))
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (5, 3, 6, 31), (31, 5, 2, 17), (17, 2, 4, 8)]:
        xp, xm = x2.copy(), x2.copy()
        xp[idx] += eps
        xm[idx] -= eps
        assert abs((loss(xp) - loss(xm)) / (2 * eps) - gx[idx]) < 1e-6 * max(1, abs(gx[idx]))


def test_transposed_convolution_with_bias(rng):
    """conv_transpose2d stride 1 runs the convolution's input gradient: on
    Winograd with the bias added in its output transform."""
    x = rng.standard_normal((8, 32, 15, 16)).astype(np.float32)
    w = (rng.standard_normal((32, 48, 3, 3)) / 12).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    y = cnnfast.conv_transpose2d(_last(x), w, b, padding=1, data_format="channels_last")
    want = R.conv_transpose2d(x, w, b, padding=1)
    assert _rel(_first(y), want) < 2e-5


@pytest.mark.parametrize("where", ["weight", "input"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_value_not_finite_gives_the_direct_kernels_result(rng, where, value):
    x, w, b = _arrays(rng, (8, 32, 16, 16), 32, np.float32)
    if where == "weight":
        w[3, 5, 1, 2] = value
    else:
        x[2, 7, 9, 4] = value
    xl = _last(x)
    g = _last(rng.standard_normal((8, 32, 16, 16)).astype(np.float32))
    y = cnnfast.conv2d(xl, w, b, padding=1, data_format="channels_last")
    yd = cnnfast.conv2d(xl, w, b, padding=1, data_format="channels_last", algorithm="direct")
    np.testing.assert_array_equal(y, yd)
    if where == "input":   # the input gradient does not read x
        return
    gx = cnnfast.conv2d_backward(g, xl, w, padding=1, need=("x",),
                                 data_format="channels_last")[0]
    gxd = cnnfast.conv2d_backward(g, xl, w, padding=1, need=("x",),
                                  data_format="channels_last", algorithm="direct")[0]
    np.testing.assert_array_equal(gx, gxd)


def test_a_grad_out_not_finite_gives_the_direct_kernels_result(rng):
    x, w, _ = _arrays(rng, (8, 32, 16, 16), 32, np.float32)
    g = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)
    g[1, 3, 0, 15] = np.inf
    g[4, 9, 7, 7] = np.nan
    gx = cnnfast.conv2d_backward(_last(g), _last(x), w, padding=1, need=("x",),
                                 data_format="channels_last")[0]
    gxd = cnnfast.conv2d_backward(_last(g), _last(x), w, padding=1, need=("x",),
                                  data_format="channels_last", algorithm="direct")[0]
    np.testing.assert_array_equal(gx, gxd)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_bit_identical_reruns_at_a_fixed_thread_count(rng, threads):
    x, w, b = _arrays(rng, (16, 64, 14, 14), 64, np.float32)
    g = _last(rng.standard_normal((16, 64, 14, 14)).astype(np.float32))
    xl = _last(x)
    with cnnfast.num_threads(threads):
        runs = [(cnnfast.conv2d(xl, w, b, padding=1, data_format="channels_last"),
                 cnnfast.conv2d_backward(g, xl, w, padding=1, need=("x",),
                                         data_format="channels_last")[0]) for _ in range(3)]
    for y, gx in runs[1:]:
        np.testing.assert_array_equal(y, runs[0][0])
        np.testing.assert_array_equal(gx, runs[0][1])
