"""The backward passes of channels-last convolutions on the NHWC layout
(cnnfast/_nhwc_backward.py: the input gradient per stride phase on the
forward kernel, the weight gradient on conv_nhwc_backward.h).

Checked through the public channels-last calls, which the plan sends to
them (explain_conv says so), against cnnfast.reference on the channels-first
arrays: odd sizes, strides 1/2/3 (phases without taps included), dilation,
asymmetric and "same" padding, groups, rectangular kernels, 1-D/2-D/3-D,
batch 0 and 1, both dtypes, partial vectors of output channels, `need`
subsets; finite differences in float64; bit-identical reruns at 2 and 3
threads (the weight gradient's private partial sums included); NaN/inf.
"""
import numpy as np
import pytest

import cnnfast
from cnnfast import _plan
from cnnfast import reference as R
from helpers import op_modules, to_first as _first, to_last as _last

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 5e-5, np.float64: 1e-12}
BACKWARD = {1: cnnfast.conv1d_backward, 2: cnnfast.conv2d_backward,
            3: cnnfast.conv3d_backward}
REFERENCE = {1: R.conv1d_backward, 2: R.conv2d_backward, 3: R.conv3d_backward}
FORWARD = {1: cnnfast.conv1d, 2: cnnfast.conv2d, 3: cnnfast.conv3d}
ALL = ("x", "weight", "bias")

# (x shape channels-first, weight shape, conv arguments)
CASES = {
    "3x3_k20": ((2, 16, 9, 11), (20, 16, 3, 3), dict(padding=1)),
    "stride2_odd": ((2, 18, 13, 10), (33, 18, 3, 3), dict(stride=2, padding=1)),
    "same_stride3": ((1, 16, 11, 13), (24, 16, 5, 5), dict(stride=3, padding="same")),
    "rect_dilated": ((1, 16, 12, 15), (20, 16, 3, 2), dict(stride=(2, 1), padding=(2, 0),
                                                            dilation=(2, 3))),
    "asymmetric": ((2, 16, 10, 9), (16, 16, 4, 4), dict(padding=((1, 2), (0, 3)))),
    "groups": ((2, 32, 7, 8), (48, 16, 3, 3), dict(padding=1, groups=2)),
    "stem7x7": ((1, 3, 23, 21), (64, 3, 7, 7), dict(stride=2, padding=3)),
    "11x11_s4": ((1, 3, 35, 37), (16, 3, 11, 11), dict(stride=4, padding=2)),
    "one_channel_5x5": ((2, 1, 12, 11), (16, 1, 5, 5), dict(padding=2)),
    "two_channels_groups": ((1, 4, 9, 10), (32, 2, 3, 4), dict(groups=2, padding=1)),
    "stride3_k2": ((1, 16, 10, 11), (16, 16, 2, 2), dict(stride=3)),   # tapless phases
    "dilation2_stride2": ((1, 16, 15, 14), (16, 16, 3, 3), dict(stride=2, dilation=2,
                                                                 padding=2)),
    "batch1_7x7": ((1, 64, 7, 7), (130, 64, 3, 3), dict(padding=1)),
    # batch > 1 on small planes: images folded into one volume for the input
    # gradient, the padded copy of x walked across rows and images for the
    # weight gradient (4 + 2 + 1 vectors of output channels: 7 x 16 = 112)
    "batch3_4x4": ((3, 96, 4, 4), (112, 96, 3, 3), dict(padding=1)),
    "full_window": ((5, 16, 5, 5), (32, 16, 5, 5), dict()),
    "empty_batch": ((0, 16, 6, 6), (16, 16, 3, 3), dict(padding=1)),
    "1d": ((2, 16, 31), (18, 16, 5), dict(stride=2, padding=2, dilation=2)),
    "3d": ((1, 16, 5, 6, 7), (16, 16, 3, 2, 3), dict(stride=(1, 2, 1), padding=1)),
    "3d_stride2": ((1, 16, 6, 5, 7), (20, 16, 3, 3, 2), dict(stride=2, padding=(1, 0, 1))),
}


def _inputs(case, dtype, seed=0):
    xs, ws, kw = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y = R.conv1d if x.ndim == 3 else R.conv2d if x.ndim == 4 else R.conv3d
    go = rng.standard_normal(y(x, w, None, **kw).shape).astype(dtype)
    return x, w, go, kw


def _reference(x, w, go, kw, need=ALL):
    nd = x.ndim - 2
    return REFERENCE[nd](go.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                         **kw, need=need)


def _run(x, w, go, kw, need=ALL):
    """The channels-last gradients, grad_x back in channels-first order."""
    gx, gw, gb = BACKWARD[x.ndim - 2](_last(go), _last(x), w, **kw, need=need,
                                      data_format="channels_last")
    assert gx is None or (gx.flags.c_contiguous and gx.shape == _last(x).shape)
    return _first(gx), gw, gb


def _close(got, expected, dtype):
    assert got.dtype == dtype and got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max(initial=0)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL[dtype] * scale)


def _native(x, w, kw, dtype):
    """The passes the plan should run on the NHWC kernels."""
    groups = kw.get("groups", 1)
    lanes = 16 * 4 // np.dtype(dtype).itemsize
    full = x.shape[0] > 1 and w.shape[2:] == x.shape[2:] and not kw
    return {"x": x.shape[1] // groups >= lanes and not full,
            "weight": w.shape[0] // groups >= lanes, "bias": True}


def _no_layout_copies(monkeypatch):
    """Make any channels-first <-> channels-last copy fail the test."""
    def copy(a):
        raise AssertionError("a layout copy on the native path")
    for module in op_modules():
        for name in ("_to_first", "_to_last"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, copy)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference(case, dtype, monkeypatch):
    x, w, go, kw = _inputs(case, dtype)
    plan = cnnfast.explain_conv(_last(x).shape, w.shape, **kw, dtype=dtype, need=ALL,
                                data_format="channels_last")
    kernels = {"x": "nhwc_direct_x", "weight": "nhwc_weight", "bias": "channel_sum"}
    for name, native in _native(x, w, kw, dtype).items():
        p = plan.passes[name]
        assert (p.layout == "channels_last") == native, (name, p)
        if native:
            assert p.kernel == kernels[name]
    if all(_native(x, w, kw, dtype).values()):
        _no_layout_copies(monkeypatch)
    for got, expected in zip(_run(x, w, go, kw), _reference(x, w, go, kw)):
        _close(got, expected, dtype)


@pytest.mark.parametrize("need", [("x",), ("weight",), ("bias",), ("x", "bias"),
                                  ("weight", "bias")])
def test_need_subsets(need):
    x, w, go, kw = _inputs("stride2_odd", np.float64, seed=1)
    got = _run(x, w, go, kw, need)
    expected = _reference(x, w, go, kw, need)
    for name, g, e in zip(ALL, got, expected):
        if name in need:
            _close(g, e, np.float64)
        else:
            assert g is None


@pytest.mark.parametrize("case", ["stride2_odd", "groups", "dilation2_stride2"])
def test_finite_differences(case):
    """<grad, v> against the central difference of sum(conv(.) * go) along v."""
    x, w, go, kw = _inputs(case, np.float64, seed=2)
    nd = x.ndim - 2
    gx, gw, _ = _run(x, w, go, kw)
    rng = np.random.default_rng(3)

    def loss(xx, ww):
        return float((FORWARD[nd](_last(xx), ww, None, **kw, data_format="channels_last")
                      * _last(go)).sum())

    eps = 1e-6
    vx, vw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    dx = (loss(x + eps * vx, w) - loss(x - eps * vx, w)) / (2 * eps)
    dw = (loss(x, w + eps * vw) - loss(x, w - eps * vw)) / (2 * eps)
    assert abs(dx - (gx * vx).sum()) <= 1e-6 * max(1.0, abs(dx))
    assert abs(dw - (gw * vw).sum()) <= 1e-6 * max(1.0, abs(dw))


def test_threads_bit_identical():
    """Reruns at 2 and 3 threads give the same bits, including the weight
    gradient's row chunks with private partial sums (few output-channel
    vectors: the stem) and the input gradient's phase rows."""
    rng = np.random.default_rng(4)
    cases = [((4, 3, 23, 21), (16, 3, 7, 7), dict(stride=2, padding=3)),
             ((2, 32, 15, 14), (48, 32, 3, 3), dict(stride=2, padding=1))]
    for xs, ws, kw in cases:
        x = _last(rng.standard_normal(xs).astype(np.float32))
        w = rng.standard_normal(ws).astype(np.float32)
        go = _last(rng.standard_normal(R.conv2d(_first(x), w, None, **kw).shape)
                   .astype(np.float32))
        with cnnfast.num_threads(1):
            one = cnnfast.conv2d_backward(go, x, w, **kw, data_format="channels_last")
        for threads in (2, 3):
            with cnnfast.num_threads(threads):
                plan = cnnfast.explain_conv(x.shape, w.shape, **kw, need=ALL,
                                            data_format="channels_last")
                assert plan.passes["weight"].threads == threads
                if ws[0] == 16:   # one vector of output channels: rows in chunks
                    assert plan.passes["weight"].config.chunks > 1
                first = cnnfast.conv2d_backward(go, x, w, **kw, data_format="channels_last")
                again = cnnfast.conv2d_backward(go, x, w, **kw, data_format="channels_last")
            for a, b, c in zip(first, again, one):
                np.testing.assert_array_equal(a, b)
                np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)


def _same_nonfinite(got, expected):
    for kind in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(kind(got), kind(expected))
    finite = np.isfinite(expected)
    _close(got[finite], expected[finite], got.dtype.type)


@pytest.mark.parametrize("where", ["grad_out", "x", "weight"])
def test_nan_and_inf_match_reference(where):
    """As the channels-first kernels: a NaN/inf reaches what the reference's
    sums reach (zero padding is multiplied, not skipped, in the weight
    gradient); with a NaN/inf weight the input gradient takes the
    channels-first kernels (whose fallback scatters real products only)."""
    x, w, go, kw = _inputs("stride2_odd", np.float64, seed=5)
    arrays = dict(grad_out=go, x=x, weight=w)
    a = arrays[where]
    a.reshape(-1)[[3, a.size // 2]] = (np.nan, np.inf)
    a.reshape(-1)[-1] = -np.inf
    with np.errstate(invalid="ignore"):   # the reference's 0 * inf, on purpose
        expected = _reference(x, w, go, kw)
    for got, e in zip(_run(x, w, go, kw), expected):
        _same_nonfinite(got, e)


def test_plan_keeps_channels_first_where_it_should():
    shape_x, shape_w = (2, 9, 9, 16), (16, 16, 3, 3)
    # an explicit GEMM algorithm, or a padding mode other than zeros: not native
    for kw in (dict(algorithm="im2col"), dict(padding_mode="reflect")):
        plan = cnnfast.explain_conv(shape_x, shape_w, padding=1, need=ALL,
                                    data_format="channels_last", **kw)
        assert plan.passes["x"].layout != "channels_last"
        assert plan.passes["weight"].layout != "channels_last"
    # channels-first calls are planned as before
    plan = cnnfast.explain_conv((2, 16, 9, 9), shape_w, padding=1, need=ALL)
    assert all(p.layout != "channels_last" for p in plan.passes.values())
    assert _plan.KERNELS["nhwc_weight"] and _plan.KERNELS["nhwc_direct_x"]


def test_reflect_padding_falls_back_correctly():
    x, w, go, kw = _inputs("3x3_k20", np.float32, seed=6)
    kw = dict(kw, padding_mode="reflect")
    for got, expected in zip(_run(x, w, go, kw), _reference(x, w, go, kw)):
        _close(got, expected, np.float32)


# Transposed convolutions: forward = the conv's input gradient (with bias),
# backward = the conv's forward and weight gradient, on the same kernels.
# (x shape channels-first, weight (C_in, C_out // groups, *k), arguments)
TRANSPOSED = {
    "dcgan_k4_s2": ((2, 32, 5, 6), (32, 16, 4, 4), dict(stride=2, padding=1)),
    "s3_outpad": ((1, 16, 4, 5), (16, 24, 3, 3), dict(stride=3, padding=1,
                                                      output_padding=2)),
    "s1_groups": ((2, 32, 6, 5), (32, 16, 3, 3), dict(padding=1, groups=2)),
    "1d_dilated": ((2, 16, 9), (16, 16, 3), dict(stride=2, dilation=2)),
}
TRANSPOSE = {1: (cnnfast.conv_transpose1d, R.conv_transpose1d,
                 cnnfast.conv_transpose1d_backward, R.conv_transpose1d_backward),
             2: (cnnfast.conv_transpose2d, R.conv_transpose2d,
                 cnnfast.conv_transpose2d_backward, R.conv_transpose2d_backward)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(TRANSPOSED))
def test_transposed_matches_reference(case, dtype, monkeypatch):
    _no_layout_copies(monkeypatch)   # every pass of these runs on the NHWC kernels
    xs, ws, kw = TRANSPOSED[case]
    forward, forward_ref, backward, backward_ref = TRANSPOSE[len(xs) - 2]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[1] * kw.get("groups", 1)).astype(dtype)
    f64 = [a.astype(np.float64) for a in (x, w, b)]
    y_ref = forward_ref(*f64, **kw)
    _close(_first(forward(_last(x), w, b, **kw, data_format="channels_last")), y_ref, dtype)
    _close(_first(forward(_last(x), w, None, **kw, data_format="channels_last")),
           forward_ref(*f64[:2], None, **kw), dtype)
    go = rng.standard_normal(y_ref.shape).astype(dtype)
    got = backward(_last(go), _last(x), w, **kw, data_format="channels_last")
    expected = backward_ref(go.astype(np.float64), *f64[:2], **kw)
    for g, e, transposed in zip(got, expected, (True, False, False)):
        _close(_first(g) if transposed else g, e, dtype)


@pytest.mark.parametrize("gather_rows", [0, 1000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_phase_rows_and_gathered_phases(gather_rows, dtype, monkeypatch):
    """A strided input gradient runs each stride phase either row by row in
    place or, for short rows, as one forward over the phase into a
    contiguous array copied to its positions (_nhwc_backward.PHASE_ROW_GATHER):
    both match the reference and give the same bits, on narrow and wide rows
    (phases of 20 pixels), odd sizes, tapless phases, bias (a transposed
    convolution's) and batch-folded images."""
    from cnnfast import _cache, _nhwc_backward
    monkeypatch.setattr(_nhwc_backward, "PHASE_ROW_GATHER", gather_rows)
    monkeypatch.setattr(_nhwc_backward, "SWAP_THREADS_ELEMENTS", 0)   # threaded copies
    _cache.clear()
    rng = np.random.default_rng(7)
    cases = [((3, 16, 40, 13), (24, 16, 3, 3), dict(stride=2, padding=1)),
             ((2, 16, 9, 41), (20, 16, 4, 4), dict(stride=2, padding=1)),
             ((1, 16, 10, 11), (16, 16, 2, 2), dict(stride=3)),
             ((2, 16, 7, 7), (32, 16, 3, 3), dict(stride=(2, 3), padding=(1, 0)))]
    try:
        for xs, ws, kw in cases:
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            go = rng.standard_normal(R.conv2d(x, w, None, **kw).shape).astype(dtype)
            gx, _, _ = _run(x, w, go, kw, need=("x",))
            expected = _reference(x, w, go, kw, need=("x",))[0]
            _close(gx, expected, dtype)
            # the same phases as a transposed convolution with a bias
            b = rng.standard_normal(xs[1]).astype(dtype)
            y = cnnfast.conv_transpose2d(_last(go), w, b, **kw, data_format="channels_last",
                                         output_padding=tuple(
                                             (xi + 2 * p - k) % s for xi, p, k, s in zip(
                                                 xs[2:], np.broadcast_to(kw.get("padding", 0), 2),
                                                 ws[2:], np.broadcast_to(kw["stride"], 2))))
            _close(_first(y), expected + b[:, None, None], dtype)
            if dtype == np.float32:
                with cnnfast.num_threads(2):
                    again = _run(x, w, go, kw, need=("x",))[0]
                np.testing.assert_array_equal(again, _run(x, w, go, kw, need=("x",))[0])
    finally:
        monkeypatch.undo()
        _cache.clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_copy_pixels_to_a_strided_view(dtype):
    """_layout.copy_pixels: a contiguous (N, D, H, W, C) block into a view
    whose pixels are strided (a stride phase's positions), at 1-3 threads;
    a view of another shape or with strided channels is refused."""
    from cnnfast._ext import _layout
    rng = np.random.default_rng(8)
    out = np.zeros((3, 2, 11, 9, 5), dtype)
    view = out[:, 1:2, 1::3, 2::2]
    src = (rng.standard_normal(view.shape) * 100).astype(dtype)
    for threads in (1, 2, 3):
        out[...] = 0
        _layout.copy_pixels(src, view, threads)
        np.testing.assert_array_equal(view, src)
        untouched = np.ones(out.shape, bool)
        untouched[:, 1:2, 1::3, 2::2] = False
        assert not out[untouched].any()
    with pytest.raises(ValueError, match="src's shape"):
        _layout.copy_pixels(src[:, :, :-1].copy(), view, 1)
    with pytest.raises(ValueError, match="channels must be contiguous"):
        _layout.copy_pixels(src[..., :3].copy(), out[:, 1:2, 1::3, 2::2, ::2], 1)
