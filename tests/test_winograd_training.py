"""Winograd while training: a channels-last 3x3 stride-1 convolution's
forward ("nhwc_winograd", its weights transformed at every call), input
gradient ("nhwc_winograd_x": the Winograd forward of grad_out with the
flipped, transposed weights) and weight gradient ("nhwc_winograd_weight":
G^T [sum over tiles of (A dY A^T) .* (B^T x B)] G) once a call has enough
tiles to pay for the transforms (_plan.nhwc_winograd_fresh_wins), as a
layer training at batch 8-16 has.

Checked through the public calls against cnnfast.reference on the
channels-first arrays (both dtypes, paddings 0-2 and asymmetric, odd and
rectangular planes, bias of a transposed convolution), the plan's kernel
names, finite differences in float64, the direct kernels' results when a
value is not finite, and bit-identical reruns at a fixed thread count."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _nhwc, _nhwc_backward, _plan
from cnnfast import reference as R
from cnnfast._ext import _conv_nhwc
from cnnfast._ops.conv_validation import conv_geometry
from helpers import to_first as _first, to_last as _last

TOL = {np.float32: 2e-5, np.float64: 1e-11}

# (x shape channels-first, out channels, padding): every one past the tile threshold
CASES = {
    "b8_64ch_16x16": ((8, 64, 16, 16), 64, 1),
    "odd_rect": ((9, 64, 13, 18), 80, 1),
    "pad0": ((8, 64, 20, 17), 64, 0),
    "pad2": ((8, 96, 14, 14), 64, 2),
    "asymmetric": ((8, 64, 15, 16), 64, ((0, 2), (1, 0))),
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
    assert "nhwc_winograd_x" in str(plan) and "nhwc_winograd_weight" in str(plan)
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
    def kernels(batch, C, H, K=None):
        K = K or C
        geom = conv_geometry(2, np.zeros((batch, C, H, H), np.float32),
                             np.zeros((K, C, 3, 3), np.float32), None, 1, 1)
        plan = _plan.plan_conv(geom, "auto", ("forward", "x", "weight"), channels_last=True)
        return tuple(plan.passes[p].kernel for p in ("forward", "x", "weight"))

    winograd = ("nhwc_winograd", "nhwc_winograd_x", "nhwc_winograd_weight")
    direct = ("nhwc_direct", "nhwc_direct_x", "nhwc_weight")
    assert kernels(16, 64, 28) == winograd
    assert kernels(8, 64, 16) == winograd
    # 64 F(4,3) tiles of 7x7 planes (the batch's blocks share the transformed weights)
    assert kernels(16, 256, 7) == winograd
    # 16 tiles: the weight gradient alone (from 128 output pixels)
    assert kernels(1, 64, 16) == direct[:2] + ("nhwc_winograd_weight",)
    assert kernels(16, 512, 4) == direct[:2] + ("nhwc_winograd_weight",)
    assert kernels(8, 256, 7) == direct[:2] + ("nhwc_winograd_weight",)
    assert kernels(1, 128, 7) == direct     # 49 output pixels
    assert kernels(16, 16, 28) == direct    # too few channels
    # output channels not whole vectors: the weight gradient's grad_out transform needs them
    assert kernels(16, 64, 28, K=80 + 4)[2] == "nhwc_weight"
    # 32 channels: Winograd for the forward and input gradient, not the weight gradient
    assert kernels(64, 32, 28) == winograd[:2] + ("nhwc_weight",)
    # asked for direct: no Winograd
    geom = conv_geometry(2, np.zeros((16, 64, 28, 28), np.float32),
                         np.zeros((64, 64, 3, 3), np.float32), None, 1, 1)
    plan = _plan.plan_conv(geom, "direct", ("forward", "x", "weight"), channels_last=True)
    assert {p.kernel for p in plan.passes.values()} == set(direct)


def test_the_weight_gradient_takes_f43_on_enough_tiles():
    def m(batch, C, H):
        geom = conv_geometry(2, np.zeros((batch, C, H, H), np.float32),
                             np.zeros((C, C, 3, 3), np.float32), None, 1, 1)
        return _nhwc_backward.configure_weight_winograd(geom, 1).m
    assert m(16, 256, 7) == 4 and m(8, 256, 7) == 4     # 64 and 32 tiles
    assert m(16, 512, 4) == 2 and m(4, 512, 7) == 2     # 16 tiles of 37.7 MB of sums
    assert m(8, 128, 8) == 4                              # 2.4 MB


@pytest.mark.parametrize("shape,K", [((8, 64, 4, 4), 64), ((1, 64, 13, 11), 80),
                                     ((2, 96, 8, 8), 64), ((4, 64, 6, 9), 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_alone_on_few_tiles(rng, shape, K, dtype):
    """From WINOGRAD_WEIGHT_MIN_PIXELS output pixels the weight gradient runs
    on Winograd while the forward and input gradient stay direct (few tiles,
    odd planes, planes smaller than a tile): it matches the reference."""
    x, w, _ = _arrays(rng, shape, K, dtype)
    plan = cnnfast.explain_conv(_last(x).shape, w.shape, padding=1, dtype=dtype,
                                data_format="channels_last", need=("x", "weight"))
    assert plan.passes["weight"].kernel == "nhwc_winograd_weight"
    assert plan.passes["x"].kernel == "nhwc_direct_x"
    g = rng.standard_normal((shape[0], K) + shape[2:]).astype(dtype)
    _, gw, _ = cnnfast.conv2d_backward(_last(g), _last(x), w, padding=1, need=("weight",),
                                       data_format="channels_last")
    rw = R.conv2d_backward(g, x, w, padding=1, need=("weight",))[1]
    assert _rel(gw, rw) < TOL[dtype]


def _check_central_differences(loss, a, grad, indices, eps=1e-6):
    """grad (of loss at a) against central differences at indices."""
    for idx in indices:
        ap, am = a.copy(), a.copy()
        ap[idx] += eps
        am[idx] -= eps
        assert abs((loss(ap) - loss(am)) / (2 * eps) - grad[idx]) < 1e-6 * max(1, abs(grad[idx]))


def test_input_gradient_finite_differences_float64(rng):
    x, w, _ = _arrays(rng, (32, 32, 6, 7), 32, np.float64)   # 32 images x 2 x 2 tiles
    x2 = _last(x)
    g2 = rng.standard_normal((32, 6, 7, 32))
    assert _plan.nhwc_winograd_fresh_wins(conv_geometry(2, x, w, None, 1, 1), "auto")
    gx, _, _ = cnnfast.conv2d_backward(g2, x2, w, padding=1, need=("x",),
                                       data_format="channels_last")
    _check_central_differences(
        lambda xx: float(np.sum(cnnfast.conv2d(xx, w, padding=1,
                                               data_format="channels_last") * g2)),
        x2, gx, [(0, 0, 0, 0), (5, 3, 6, 31), (31, 5, 2, 17), (17, 2, 4, 8)])


@pytest.mark.parametrize("m", [4, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,C", [(64, 32), (33, 70), (96, 512), (5, 3)])
def test_the_flipped_transform_reads_the_forward_weights(rng, dtype, K, C, m, monkeypatch):
    """The input gradient's transformed weights, read from the forward's
    (K, C, 3, 3) with the taps reversed: the same bits as transforming an
    explicitly flipped, transposed copy, at one and two threads."""
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    explicit = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    geom = conv_geometry(2, np.zeros((2, K, 8, 8), dtype), explicit, None, 1, 1)
    monkeypatch.setattr(_nhwc, "winograd_tile", lambda g, shared=None: m)
    block, _ = _conv_nhwc.tiles(dtype)
    vw = _conv_nhwc.vector_width(dtype)

    def written(u, cfg):   # each block's [K][lanes] (the last one's lanes cover C only)
        return np.concatenate([
            u[p * cfg.pos_stride + b * K: p * cfg.pos_stride + b * K
              + K * -(-min(block, C - b) // vw) * vw]
            for p in range((m + 2) ** 2) for b in range(0, C, block)])
    for threads in (1, 2):
        cfg = _nhwc.winograd_configure(geom, threads)
        want, finite = _nhwc.winograd_pack(explicit, geom, cfg)
        got, got_finite = _nhwc.winograd_pack(w, geom, cfg, flipped=True)
        assert finite and got_finite
        np.testing.assert_array_equal(written(got, cfg), written(want, cfg))
    w[K - 1, C - 1, 0, 2] = np.inf
    assert not _nhwc.winograd_pack(w, geom, cfg, flipped=True)[1]


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
    x, w, b = _arrays(rng, (8, 64, 16, 16), 64, np.float32)
    if where == "weight":
        w[3, 5, 1, 2] = value
    else:
        x[2, 7, 9, 4] = value
    xl = _last(x)
    g = _last(rng.standard_normal((8, 64, 16, 16)).astype(np.float32))
    y = cnnfast.conv2d(xl, w, b, padding=1, data_format="channels_last")
    yd = cnnfast.conv2d(xl, w, b, padding=1, data_format="channels_last", algorithm="direct")
    np.testing.assert_array_equal(y, yd)
    if where == "input":   # the weight gradient reads x (the input gradient does not)
        gw = cnnfast.conv2d_backward(g, xl, w, padding=1, need=("weight",),
                                     data_format="channels_last")[1]
        gwd = cnnfast.conv2d_backward(g, xl, w, padding=1, need=("weight",),
                                      data_format="channels_last", algorithm="direct")[1]
        np.testing.assert_array_equal(gw, gwd)
        return
    gx = cnnfast.conv2d_backward(g, xl, w, padding=1, need=("x",),
                                 data_format="channels_last")[0]
    gxd = cnnfast.conv2d_backward(g, xl, w, padding=1, need=("x",),
                                  data_format="channels_last", algorithm="direct")[0]
    np.testing.assert_array_equal(gx, gxd)


def test_a_grad_out_not_finite_gives_the_direct_kernels_result(rng):
    x, w, _ = _arrays(rng, (8, 64, 16, 16), 64, np.float32)
    g = rng.standard_normal((8, 64, 16, 16)).astype(np.float32)
    g[1, 3, 0, 15] = np.inf
    g[4, 9, 7, 7] = np.nan
    gx = cnnfast.conv2d_backward(_last(g), _last(x), w, padding=1, need=("x",),
                                 data_format="channels_last")[0]
    gxd = cnnfast.conv2d_backward(_last(g), _last(x), w, padding=1, need=("x",),
                                  data_format="channels_last", algorithm="direct")[0]
    np.testing.assert_array_equal(gx, gxd)
    gw = cnnfast.conv2d_backward(_last(g), _last(x), w, padding=1, need=("weight",),
                                 data_format="channels_last")[1]
    gwd = cnnfast.conv2d_backward(_last(g), _last(x), w, padding=1, need=("weight",),
                                  data_format="channels_last", algorithm="direct")[1]
    np.testing.assert_array_equal(gw, gwd)


def test_weight_gradient_finite_differences_float64(rng):
    x, w, _ = _arrays(rng, (32, 64, 7, 6), 64, np.float64)   # F(4,3): 32 x 2 x 2 tiles
    xl = _last(x)
    g = rng.standard_normal((32, 7, 6, 64))
    plan = cnnfast.explain_conv(xl.shape, w.shape, padding=1, dtype="float64",
                                data_format="channels_last", need=("weight",))
    assert "nhwc_winograd_weight" in str(plan)
    gw = cnnfast.conv2d_backward(g, xl, w, padding=1, need=("weight",),
                                 data_format="channels_last")[1]
    _check_central_differences(
        lambda ww: float(np.sum(cnnfast.conv2d(xl, ww, padding=1,
                                               data_format="channels_last") * g)),
        w, gw, [(0, 0, 0, 0), (63, 63, 2, 2), (7, 33, 1, 0), (49, 12, 0, 2)])


def test_transposed_convolution_weight_gradient(rng):
    """conv_transpose2d's weight gradient is the convolution's (grad_out as
    its input): on Winograd too."""
    x = rng.standard_normal((8, 64, 15, 16)).astype(np.float32)
    w = (rng.standard_normal((64, 80, 3, 3)) / 24).astype(np.float32)
    # its underlying convolution: y (80 channels) -> x (64), weight (64, 80, 3, 3)
    plan = cnnfast.explain_conv((8, 15, 16, 80), w.shape, padding=1,
                                data_format="channels_last", need=("forward", "weight"))
    assert "nhwc_winograd " in str(plan) and "nhwc_winograd_weight" in str(plan)
    y = R.conv_transpose2d(x, w, padding=1)
    g = rng.standard_normal(y.shape).astype(np.float32)
    got = cnnfast.conv_transpose2d_backward(_last(g), _last(x), w, padding=1,
                                            data_format="channels_last")
    want = R.conv_transpose2d_backward(g, x, w, padding=1)
    assert _rel(_first(got[0]), want[0]) < 2e-5
    assert _rel(got[1], want[1]) < 2e-5


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_bit_identical_reruns_at_a_fixed_thread_count(rng, threads):
    x, w, b = _arrays(rng, (16, 64, 14, 14), 64, np.float32)
    g = _last(rng.standard_normal((16, 64, 14, 14)).astype(np.float32))
    xl = _last(x)
    with cnnfast.num_threads(threads):
        runs = [(cnnfast.conv2d(xl, w, b, padding=1, data_format="channels_last"),)
                + cnnfast.conv2d_backward(g, xl, w, padding=1, need=("x", "weight"),
                                          data_format="channels_last")[:2] for _ in range(3)]
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)


def test_weight_gradient_same_bits_on_any_thread_count(rng):
    """No sum is split between threads (one GEMM per position, whole)."""
    x, w, _ = _arrays(rng, (16, 64, 14, 14), 64, np.float32)
    g = _last(rng.standard_normal((16, 64, 14, 14)).astype(np.float32))
    got = []
    for threads in (1, 2, 3):
        with cnnfast.num_threads(threads):
            got.append(cnnfast.conv2d_backward(g, _last(x), w, padding=1, need=("weight",),
                                               data_format="channels_last")[1])
    for gw in got[1:]:
        np.testing.assert_array_equal(gw, got[0])
