"""Depthwise convolution (groups == C_in, any channel multiplier): the
kernels of cnnfast/_ext/_depthwise.pyx, for every pass, padding form and
mode, 1-D/2-D/3-D, both dtypes and both data formats, against
cnnfast.reference, finite differences and each other (thread counts)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnfast
from cnnfast import _plan, reference
from cnnfast._ext import _depthwise, _workspace
from cnnfast._ops.conv import _conv_forward_fused
from helpers import numeric_gradient, tolerance
from layouts import native_copy, relayout

OPS = {nd: (getattr(cnnfast, f"conv{nd}d"), getattr(cnnfast, f"conv{nd}d_backward"),
            getattr(reference, f"conv{nd}d"), getattr(reference, f"conv{nd}d_backward"))
       for nd in (1, 2, 3)}

# (x shape channels-first, channel multiplier, kernel size, conv args). Rows
# of 37..140 reach the four-vector and overlapping-last-vector paths of both
# dtypes (16 and 8 lanes), 20 and 70 channels the channels-last ones.
CASES = {
    "3x3": ((2, 5, 13, 11), 1, (3, 3), dict(padding=1)),
    "wide_s1": ((1, 3, 4, 70), 1, (3, 3), dict(padding=1)),
    "wide_s2": ((1, 2, 5, 140), 2, (3, 3), dict(stride=2, padding=1)),
    "asym_s2": ((1, 4, 9, 37), 2, (3, 3), dict(stride=2, padding=((0, 2), (1, 0)))),
    "s3_dilated": ((2, 3, 10, 41), 3, (3, 5), dict(stride=(3, 2), dilation=(2, 1), padding=2)),
    "same_dilated": ((1, 6, 8, 37), 1, (3, 3), dict(padding="same", dilation=2)),
    "rect_s3": ((2, 3, 7, 40), 1, (5, 3), dict(stride=(1, 3), padding=(2, 1))),
    "valid": ((2, 4, 6, 9), 2, (2, 3), dict(padding="valid")),
    "k7": ((1, 18, 12, 40), 1, (7, 7), dict(padding=3)),
    "channels_20": ((1, 20, 5, 6), 1, (3, 3), dict(stride=2, padding=1)),
    "channels_70": ((1, 70, 4, 5), 1, (3, 3), dict(padding=1)),
    "1d": ((2, 5, 41), 1, (3,), dict(padding=1)),
    "1d_s2_m2": ((1, 3, 23), 2, (5,), dict(stride=2, padding=(3,))),
    "1d_causal": ((1, 4, 30), 1, (3,), dict(padding="causal", dilation=2)),
    "3d": ((1, 3, 5, 6, 7), 1, (3, 3, 3), dict(padding=1)),
    "3d_s2_m2": ((2, 2, 4, 5, 9), 2, (2, 3, 3), dict(stride=(1, 2, 2), padding=(1, 0, 1))),
}
MODES = ("zeros", "reflect", "replicate", "circular")
FORMATS = ("channels_first", "channels_last")


def _last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _first(a):
    return np.moveaxis(a, -1, 1)


def _arrays(rng, case, dtype):
    x_shape, mult, kernel, args = CASES[case]
    C = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((C * mult, 1) + kernel).astype(dtype)
    b = rng.standard_normal(C * mult).astype(dtype)
    return x, w, b, dict(args, groups=C)


def _run(nd, x, w, b, go, args, data_format, need=("x", "weight", "bias")):
    """forward and backward in data_format, results channels-first."""
    fwd, bwd = OPS[nd][:2]
    if data_format == "channels_first":
        y = fwd(x, w, b, **args)
        return (y,) + tuple(bwd(go, x, w, **args, need=need))
    y = _first(fwd(_last(x), w, b, **args, data_format="channels_last"))
    gx, gw, gb = bwd(_last(go), _last(x), w, **args, need=need, data_format="channels_last")
    return y, None if gx is None else _first(gx), gw, gb


def _modes(case):
    """The padding modes a case can take: reflect needs padding below the size."""
    args = CASES[case][3]
    pad = args.get("padding", 0)
    if pad in ("valid",) or pad == 0:
        return ("zeros",)
    return MODES


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case,mode", [(c, m) for c in CASES for m in _modes(c)], ids=str)
def test_every_pass_matches_the_reference(rng, case, mode, dtype, data_format):
    x, w, b, args = _arrays(rng, case, dtype)
    args["padding_mode"] = mode
    nd = x.ndim - 2
    ref_fwd, ref_bwd = OPS[nd][2:]
    y_ref = ref_fwd(x, w, b, **args)
    go = rng.standard_normal(y_ref.shape).astype(dtype)
    with cnnfast.num_threads(2):
        y, gx, gw, gb = _run(nd, x, w, b, go, args, data_format)
    gx_ref, gw_ref, gb_ref = ref_bwd(go, x, w, **args)
    taps = int(np.prod(w.shape[2:]))
    np.testing.assert_allclose(y, y_ref, atol=tolerance(dtype, taps), rtol=0)
    np.testing.assert_allclose(gx, gx_ref, atol=tolerance(dtype, taps * 3), rtol=0)
    np.testing.assert_allclose(gw, gw_ref, atol=tolerance(dtype, go[:, :1].size), rtol=0)
    np.testing.assert_allclose(gb, gb_ref, atol=tolerance(dtype, go[:, :1].size), rtol=0)
    plan = cnnfast.explain_conv(x.shape, w.shape, **args, dtype=dtype)
    assert {p.kernel for n, p in plan.passes.items() if n != "bias"} == {"depthwise"}


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", ["3x3", "s3_dilated", "1d_s2_m2", "3d_s2_m2"])
def test_gradients_match_finite_differences(rng, case, data_format):
    x, w, b, args = _arrays(rng, case, np.float64)
    x, args["padding_mode"] = x[:1, :, :6, :7] if x.ndim == 4 else x[:1], "reflect"
    if case == "s3_dilated":
        args["padding_mode"] = "zeros"
    nd = x.ndim - 2
    fwd = OPS[nd][0]
    r = rng.standard_normal(fwd(x, w, b, **args).shape)

    def loss():
        return float(np.sum(fwd(x, w, b, **args) * r))

    _, gx, gw, _ = _run(nd, x, w, b, r, args, data_format, need=("x", "weight"))
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), atol=1e-6)
    np.testing.assert_allclose(gw, numeric_gradient(loss, w), atol=1e-6)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_an_empty_batch_gives_empty_results_and_zero_weight_gradients(nd, data_format):
    x = np.zeros((0, 4) + (6,) * nd, np.float32)
    w = np.ones((8, 1) + (3,) * nd, np.float32)
    go = np.zeros((0, 8) + (4,) * nd, np.float32)
    y, gx, gw, gb = _run(nd, x, w, np.ones(8, np.float32), go, dict(groups=4), data_format)
    assert y.shape == (0, 8) + (4,) * nd and gx.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, np.zeros(8, np.float32))


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_propagate_as_in_the_reference(rng, dtype, data_format):
    """Zero padding is multiplied as the reference's columns hold it (an
    infinite weight gives NaN at the border in the forward); the input
    gradient forms no products with the padding; NaN/inf inputs spread."""
    x, w, b, args = _arrays(rng, "asym_s2", dtype)
    x[0, 1, 3, 5], x[0, 2, 0, 0], x[0, 3, 8, 36] = np.nan, np.inf, -np.inf
    w[1, 0, 0, 0], w[6, 0, 2, 1] = np.inf, np.nan
    go = rng.standard_normal(reference.conv2d(x, w, b, **args).shape).astype(dtype)
    go[0, 5, 0, 0] = np.inf
    got = _run(2, x, w, b, go, args, data_format)
    want = (reference.conv2d(x, w, b, **args),) + reference.conv2d_backward(go, x, w, **args)
    for g, r in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(r))
        finite = np.isfinite(r)
        np.testing.assert_allclose(g[finite], r[finite], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("data_format", FORMATS)
def test_results_are_bit_identical_across_runs_and_thread_counts(rng, data_format):
    """Every output is computed by one item in a fixed order, and the weight
    gradient's blocks depend on the shape alone: 1, 2 and 3 threads agree to
    the bit, and so do two runs on 2 threads."""
    x, w, b, args = _arrays(rng, "s3_dilated", np.float32)
    go = rng.standard_normal(reference.conv2d(x, w, b, **args).shape).astype(np.float32)
    results = []
    for threads in (2, 2, 1, 3):
        with cnnfast.num_threads(threads):
            results.append(_run(2, x, w, b, go, args, data_format))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("layout", ["fortran", "strided", "negative", "byteswapped",
                                    "misaligned", "readonly"])
@pytest.mark.parametrize("data_format", FORMATS)
def test_inputs_in_any_memory_layout_give_the_contiguous_result(rng, layout, data_format,
                                                                 files):
    x, w, b, args = _arrays(rng, "asym_s2", np.float64)
    go = rng.standard_normal(reference.conv2d(x, w, b, **args).shape)
    x_l, go_l = (x, go) if data_format == "channels_first" else (_last(x), _last(go))
    fwd, bwd = OPS[2][:2]
    kw = dict(args, data_format=data_format)
    want = (fwd(x_l, w, b, **kw),) + bwd(go_l, x_l, w, **kw)
    keep = [relayout(a, layout, files()) for a in (x_l, w, go_l)]
    copies = [native_copy(a) for a in keep]
    got = (fwd(keep[0], keep[1], b, **kw),) + bwd(keep[2], keep[0], keep[1], **kw)
    for g, r in zip(got, want):
        np.testing.assert_array_equal(g, r)
    for a, c in zip(keep, copies):   # inputs untouched
        np.testing.assert_array_equal(native_copy(a), c)


def test_channels_not_divisible_by_groups_is_a_value_error_naming_both():
    x = np.zeros((1, 6, 8, 8), np.float32)
    w = np.zeros((4, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"in channels\) = 6 .*groups = 4"):
        cnnfast.conv2d(x, w, groups=4)
    with pytest.raises(ValueError, match=r"in channels\) = 6 .*groups = 4"):
        cnnfast.conv2d(np.moveaxis(x, 1, -1), w, groups=4, data_format="channels_last")


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
def test_forced_algorithms_agree_with_auto(rng, algorithm):
    x, w, b, args = _arrays(rng, "rect_s3", np.float64)
    go = rng.standard_normal(reference.conv2d(x, w, b, **args).shape)
    auto = _run(2, x, w, b, go, args, "channels_first")
    forced = (cnnfast.conv2d(x, w, b, **args, algorithm=algorithm),) + cnnfast.conv2d_backward(
        go, x, w, **args, algorithm=algorithm)
    for a, f in zip(auto, forced):
        np.testing.assert_allclose(a, f, atol=1e-12)


@pytest.mark.parametrize("data_format", FORMATS)
def test_the_plan_sizes_the_work_arrays_the_driver_asks_for(rng, monkeypatch, data_format):
    x, w, b, args = _arrays(rng, "3d_s2_m2", np.float32)
    calls = {}

    def record(name, size, dtype):
        kind = "i" if np.dtype(dtype) == np.intp else "f"
        calls[name] = (max(int(size), 1), kind)
        return _workspace.work_array(name, size, dtype)

    monkeypatch.setattr(_depthwise, "work_array", record)
    last = data_format == "channels_last"
    geom = cnnfast._ops.conv_validation.conv_geometry(3, x, w, None, **args)
    x_in = _last(x) if last else x
    with cnnfast.num_threads(2):
        plan = _plan.plan_conv(geom, "auto", ("forward", "x", "weight"), channels_last=last)
        go = np.ones(cnnfast.conv3d(x_in, w, **args, data_format=data_format).shape, np.float32)
        for name, p in plan.passes.items():
            calls.clear()
            if name == "forward":
                cnnfast.conv3d(x_in, w, b, **args, data_format=data_format)
            else:
                cnnfast.conv3d_backward(go, x_in, w, **args, need=(name,),
                                        data_format=data_format)
            assert calls == {k: (max(n, 1), kind) for k, (n, kind) in p.arrays}, name
            assert p.kernel == "depthwise" and p.split


def test_explain_conv_names_the_depthwise_kernel():
    plan = cnnfast.explain_conv((1, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32,
                                threads=2)
    assert "depthwise" in str(plan) and "depthwise" in _plan.KERNELS
    assert plan.passes["forward"].threads == 2 and plan.passes["forward"].workspace_bytes > 0


@pytest.mark.parametrize("data_format", FORMATS)
def test_a_fused_layer_adds_the_residual_and_applies_relu(rng, data_format):
    x, w, b, args = _arrays(rng, "3x3", np.float32)   # multiplier 1: residual shaped as x
    res = rng.standard_normal(x.shape).astype(np.float32)
    want = np.maximum(reference.conv2d(x, w, b, **args) + res, 0)
    if data_format == "channels_first":
        got = _conv_forward_fused(2, x, w, b, 1, 1, 1, 5, clamp=True, residual=res)
    else:   # the NHWC epilogue, through the driver
        geom = cnnfast._ops.conv_validation.conv_geometry(2, x, w, b, **args)
        plan = _plan.plan_conv(geom, "auto", ("forward",), channels_last=True)
        got = _first(cnnfast._ops.depthwise._depthwise_forward(
            geom, plan.passes["forward"], _last(x), w, b, (0.0, np.inf), _last(res), last=True))
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("width", [9, 40])   # narrow rows: the channels-last route
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_depthwise_transposed_convolution_runs_the_input_gradient_kernel(rng, dtype, width):
    x = rng.standard_normal((2, 6, 7, width)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)   # (C_in, C_out / groups, k, k)
    b = rng.standard_normal(12).astype(dtype)
    kw = dict(stride=2, padding=1, output_padding=1, groups=6)
    atol = tolerance(dtype, 100)
    np.testing.assert_allclose(cnnfast.conv_transpose2d(x, w, b, **kw),
                               reference.conv_transpose2d(x, w, b, **kw), atol=atol)
    go = rng.standard_normal(reference.conv_transpose2d(x, w, b, **kw).shape).astype(dtype)
    for got, want in zip(cnnfast.conv_transpose2d_backward(go, x, w, **kw),
                         reference.conv_transpose2d_backward(go, x, w, **kw)):
        np.testing.assert_allclose(got, want, atol=atol)


@pytest.mark.parametrize("isa", ["3", "0"])
def test_the_avx2_and_baseline_variants_agree_with_the_reference(isa, tmp_path):
    """The kernel table of each ISA level (CNNFAST_ISA caps it per process)."""
    code = (
        "import numpy as np, cnnfast\n"
        "from cnnfast import reference as R\n"
        "rng = np.random.default_rng(0)\n"
        "for dt in (np.float32, np.float64):\n"
        "    x = rng.standard_normal((1, 20, 9, 70)).astype(dt)\n"
        "    w = rng.standard_normal((40, 1, 3, 3)).astype(dt)\n"
        "    for s in (1, 2, 3):\n"
        "        kw = dict(stride=s, padding=1, groups=20)\n"
        "        go = rng.standard_normal(R.conv2d(x, w, **kw).shape).astype(dt)\n"
        "        for fmt in ('channels_first', 'channels_last'):\n"
        "            xl, gl = (x, go) if fmt == 'channels_first' else (\n"
        "                np.moveaxis(x, 1, -1).copy(), np.moveaxis(go, 1, -1).copy())\n"
        "            y = cnnfast.conv2d(xl, w, **kw, data_format=fmt)\n"
        "            gx, gw, _ = cnnfast.conv2d_backward(gl, xl, w, **kw, data_format=fmt)\n"
        "            if fmt == 'channels_last':\n"
        "                y, gx = np.moveaxis(y, -1, 1), np.moveaxis(gx, -1, 1)\n"
        "            rx, rw, _ = R.conv2d_backward(go, x, w, **kw)\n"
        "            tol = 1e-3 if dt == np.float32 else 1e-10\n"
        "            assert np.abs(y - R.conv2d(x, w, **kw)).max() < tol\n"
        "            assert np.abs(gx - rx).max() < tol and np.abs(gw - rw).max() < 10 * tol\n"
        "print('ok')\n")
    env = dict(os.environ, CNNFAST_ISA=isa)
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnnfast.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # cwd: not the repository root, whose unbuilt source tree would shadow the tested cnnfast
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_plan_splits_batch_one_over_threads_and_routes_narrow_rows():
    """Batch 1 on 2 threads: enough items for both (blocks of rows when the
    channels are few); rows shorter than DEPTHWISE_ROW_VECTORS vectors run
    on the channels-last kernels between layout copies."""
    vw = _depthwise.kernel_info(np.float32)["vector_width"]
    wide = cnnfast.explain_conv((1, 3, 40, 4 * vw), (3, 1, 3, 3), padding=1, groups=3,
                                threads=2)
    p = wide.passes["forward"]
    assert p.layout == "images" and 3 * p.split[0] >= 2 * _plan.DEPTHWISE_ITEMS_PER_THREAD
    narrow = cnnfast.explain_conv((8, 96, 7, 7), (96, 1, 3, 3), padding=1, groups=96,
                                  threads=2)
    assert {p.layout for n, p in narrow.passes.items() if n != "bias"} == {"channels_last"}
    weight = cnnfast.explain_conv((1, 2, 9, 70), (2, 1, 3, 3), padding=1, groups=2,
                                  need=("weight",), threads=1).passes["weight"]
    assert 2 * weight.split[0] >= _plan.DEPTHWISE_WEIGHT_ITEMS   # any thread count


def _buffer_at(a, offset):
    """A C-contiguous copy of a starting `offset` elements into a fresh buffer
    (the kernels' vector loads then meet every 64-byte alignment phase)."""
    buf = np.empty(a.size + 16, a.dtype)
    view = buf[offset:offset + a.size].reshape(a.shape)
    view[...] = a
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [3, 20, 48, 50, 64])
@pytest.mark.parametrize("stride", [1, 2])
def test_the_channels_last_forward_tiles_match_the_reference(rng, dtype, channels, stride):
    """The NHWC forward kernel's tile edges: rows of 1..27 outputs (edge
    pairs, interior tiles of 6, 4, 2 and 1 pixels, rows with no interior),
    channel counts that are part of a vector, end in an overlapping vector
    or take the aligned-vector phase (48, 64), inputs at every alignment,
    the fused residual and ReLU6 (NaN kept), bias; 1 and 3 threads agree to
    the bit (channel blocks)."""
    for width, offset in zip((1, 2, 3, 4, 5, 7, 8, 13, 14, 27), range(99)):
        x = rng.standard_normal((2, channels, 3, width)).astype(dtype)
        x[0, 0, 1, 0] = np.nan
        w = rng.standard_normal((channels, 1, 3, 3)).astype(dtype)
        b = rng.standard_normal(channels).astype(dtype)
        args = dict(stride=stride, padding=1, groups=channels)
        y = reference.conv2d(x, w, b, **args)
        res = rng.standard_normal(y.shape).astype(dtype)
        want = np.clip(y + res, 0, 6)
        geom = cnnfast._ops.conv_validation.conv_geometry(2, x, w, b, **args)
        got = []
        for threads in (1, 3):
            with cnnfast.num_threads(threads):
                plan = _plan.plan_conv(geom, "auto", ("forward",), channels_last=True)
                got.append(_first(cnnfast._ops.depthwise._depthwise_forward(
                    geom, plan.passes["forward"], _buffer_at(_last(x), offset % 8), w, b,
                    (0.0, 6.0), _buffer_at(_last(res), offset % 5), last=True)))
        np.testing.assert_allclose(got[0], want, atol=tolerance(dtype, 9), rtol=0)
        assert np.isnan(got[0][0, 0, 0, 0]) and np.isnan(want[0, 0, 0, 0])
        np.testing.assert_array_equal(got[0], got[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_channels_last_forward_takes_any_tap_rows_and_wide_padding(rng, dtype):
    """Three tap rows from two dims (a 3x1x3 kernel: the 3x3 tile), and
    padding wider than the row (no output's window inside it)."""
    x = rng.standard_normal((1, 20, 4, 5, 9)).astype(dtype)
    w = rng.standard_normal((20, 1, 3, 1, 3)).astype(dtype)
    for args in (dict(padding=1), dict(padding=(1, 0, 1), stride=(1, 1, 2))):
        y = _first(cnnfast.conv3d(_last(x), w, **args, groups=20, data_format="channels_last"))
        np.testing.assert_allclose(y, reference.conv3d(x, w, **args, groups=20),
                                   atol=tolerance(dtype, 9), rtol=0)
    x = rng.standard_normal((2, 18, 3, 1)).astype(dtype)
    w = rng.standard_normal((18, 1, 3, 3)).astype(dtype)
    args = dict(padding=((1, 1), (4, 0)), groups=18)
    y = _first(cnnfast.conv2d(_last(x), w, **args, data_format="channels_last"))
    np.testing.assert_allclose(y, reference.conv2d(x, w, **args), atol=tolerance(dtype, 9),
                               rtol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [3, 20, 48])
@pytest.mark.parametrize("stride", [1, 2])
def test_the_channels_last_weight_gradient_tiles_match_the_reference(rng, dtype, channels,
                                                                     stride):
    """The NHWC weight gradient's row tiles (pixels side by side, the rest
    one by one, padded rows read as zeros) and its edge pixels, for rows of
    1..14 outputs and channel counts that are part of a vector or end in
    one; 1 and 3 threads agree to the bit (blocks of rows by shape)."""
    for width in (1, 2, 3, 5, 7, 8, 13, 14):
        x = rng.standard_normal((2, channels, 4, width)).astype(dtype)
        w = rng.standard_normal((channels, 1, 3, 3)).astype(dtype)
        args = dict(stride=stride, padding=1, groups=channels)
        go = rng.standard_normal(reference.conv2d(x, w, **args).shape).astype(dtype)
        want = reference.conv2d_backward(go, x, w, **args)[1]
        got = []
        for threads in (1, 3):
            with cnnfast.num_threads(threads):
                got.append(cnnfast.conv2d_backward(_last(go), _last(x), w, **args,
                                                   need=("weight",),
                                                   data_format="channels_last")[1])
        np.testing.assert_allclose(got[0], want, atol=tolerance(dtype, go[:, :1].size), rtol=0)
        np.testing.assert_array_equal(got[0], got[1])


# The input gradient's cases: stride, padding, dilation, channel multiplier,
# batch. 19 channels are a float32 vector and an overlapping one (float64:
# two and an overlap); rows of 23 pixels hold interior tiles of every width
# and peeled edges at both ends; NHWC and NCHW (narrow rows: the NHWC kernel).
INPUT_GRAD_CASES = [(s, p, d, m, n) for s in (1, 2) for p in (0, 1, 2) for d in (1, 2)
                    for m in (1, 2) for n in (0, 1, 3)]


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,pad,dilation,mult,batch", INPUT_GRAD_CASES, ids=str)
def test_the_input_gradient_matches_the_reference(rng, stride, pad, dilation, mult, batch,
                                                  dtype, data_format):
    C, kernel = 19, (3, 3) if dilation == 1 else (3, 5)
    x = rng.standard_normal((batch, C, 9, 23)).astype(dtype)
    w = rng.standard_normal((C * mult, 1) + kernel).astype(dtype)
    args = dict(stride=stride, padding=pad, dilation=dilation, groups=C)
    go = rng.standard_normal(reference.conv2d(x, w, **args).shape).astype(dtype)
    want = reference.conv2d_backward(go, x, w, **args)[0]
    got = _run(2, x, w, None, go, args, data_format, need=("x",))[1]
    assert got.shape == x.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, atol=tolerance(dtype, 3 * mult * w[0].size), rtol=0)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("stride,pad,dilation", [(s, p, d) for s in (1, 2) for p in (0, 1, 2)
                                                 for d in (1, 2)], ids=str)
def test_the_input_gradient_matches_finite_differences(rng, stride, pad, dilation,
                                                       data_format):
    x = rng.standard_normal((1, 17, 5, 15))
    w = rng.standard_normal((17, 1, 3, 3))
    args = dict(stride=stride, padding=pad, dilation=dilation, groups=17)
    r = rng.standard_normal(cnnfast.conv2d(x, w, **args).shape)

    def loss():
        return float(np.sum(cnnfast.conv2d(x, w, **args) * r))

    gx = _run(2, x, w, None, r, args, data_format, need=("x",))[1]
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [3, 20, 48, 64])
@pytest.mark.parametrize("stride", [1, 2])
def test_the_channels_last_input_gradient_tiles_match_the_reference(rng, dtype, channels,
                                                                    stride):
    """The NHWC input gradient's interior tiles (6, 4, 2, 1 pixels, both
    parities at stride 2) and peeled edges, for rows of 1..27 pixels, at
    every alignment; a NaN weight stays out of the pixels its taps reach
    only through padding; 1 and 3 threads agree to the bit."""
    for width, offset in zip((1, 2, 3, 4, 5, 7, 8, 13, 14, 27), range(99)):
        x = rng.standard_normal((2, channels, 5, width)).astype(dtype)
        w = rng.standard_normal((channels, 1, 3, 3)).astype(dtype)
        w[0, 0, 0, 0] = np.nan
        args = dict(stride=stride, padding=1, groups=channels)
        go = rng.standard_normal(reference.conv2d(x, w, **args).shape).astype(dtype)
        want = reference.conv2d_backward(go, x, w, **args)[0]
        got = []
        for threads in (1, 3):
            with cnnfast.num_threads(threads):
                got.append(_first(cnnfast.conv2d_backward(
                    _buffer_at(_last(go), offset % 8), _last(x), w, **args, need=("x",),
                    data_format="channels_last")[0]))
        np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want))
        np.testing.assert_allclose(got[0], want, atol=tolerance(dtype, 9), rtol=0)
        np.testing.assert_array_equal(got[0], got[1])


def test_a_fused_channels_last_layer_packs_its_weights_once(rng, monkeypatch):
    """A fused depthwise layer (channels-last) packs weight and bias on its
    first call and reuses them; a replaced weight (load_state_dict) packs
    anew; the result equals the unfused layer's."""
    conv = cnnfast.nn.Conv2d(20, 20, 3, padding=1, groups=20, data_format="channels_last")
    layer = cnnfast.nn.fuse.FusedConv2d(conv, None, clamp=(0.0, 6.0))
    x = rng.standard_normal((2, 9, 11, 20)).astype(np.float32)
    packs = []
    pack = cnnfast._ops.conv._depthwise_pack
    monkeypatch.setattr(cnnfast._ops.conv, "_depthwise_pack",
                        lambda *a: packs.append(1) or pack(*a))
    want = np.clip(conv(x), 0, 6)
    for _ in range(3):
        np.testing.assert_allclose(layer(x), want, atol=1e-5)
    assert len(packs) == 1 and [k[0] for k in layer._packed] == ["depthwise"]
    w = rng.standard_normal(layer.weight.shape).astype(np.float32)
    w.flags.writeable = False
    layer.weight.data = w
    conv.weight.data = w.copy()
    np.testing.assert_allclose(layer(x), np.clip(conv(x), 0, 6), atol=1e-5)
    assert len(packs) == 2
