"""The planning module (cnnfast._plan) and its dry run, cnnfast.explain_conv:
the plan names what the drivers then run, its work-array sizes are the ones
the drivers ask for, and explaining a call runs nothing."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _plan, reference
from cnnfast._ext import _conv, _workspace
from cnnfast._ops.conv import _conv_forward_fused

# (x shape, weight shape, conv args): one case per driver kernel and layout
CASES = {
    "lanes": ((2, 16, 9, 10), (24, 16, 3, 3), dict(padding=1)),
    "lanes_unpadded": ((2, 16, 9, 10), (24, 16, 3, 3), {}),
    "lanes_batch": ((32, 6, 7, 7), (16, 6, 3, 3), {}),
    "lanes_batch_stride": ((16, 8, 9, 9), (16, 8, 3, 3), dict(stride=2)),
    "rows": ((2, 3, 11, 13), (6, 3, 3, 2), dict(stride=(2, 1), padding=(1, 0))),
    "gemm": ((2, 5, 9, 9), (7, 5, 3, 3), dict(padding=1, dilation=(1, 2))),
    "gemm_groups": ((2, 8, 6, 7), (8, 4, 3, 3), dict(groups=2)),
    "pointwise": ((2, 20, 6, 6), (9, 20, 1, 1), {}),
    "stacked": ((4, 32, 4, 4), (40, 32, 3, 3), dict(padding=1)),
    # batch 1 on several threads: the input gradient's GEMM cut into channel chunks
    "gemm_batch1": ((1, 10, 9, 9), (7, 10, 3, 3), dict(stride=2, padding=1)),
    "gemm_batch1_groups": ((1, 8, 6, 7), (8, 4, 3, 3), dict(groups=2)),
    "full_window": ((5, 4, 5, 5), (10, 4, 5, 5), {}),
    "polyphase": ((2, 6, 9, 8), (5, 6, 3, 3), dict(stride=2, padding=1)),
    "conv1d": ((3, 4, 17), (6, 4, 5), dict(stride=2, padding=2)),
    "conv3d": ((2, 3, 5, 6, 7), (4, 3, 3, 3, 2), dict(padding=1)),
    # non-zero padding modes: no images-in-the-tile forward; the input
    # gradient planned on the padded input
    "reflect_lanes": ((2, 16, 9, 10), (24, 16, 3, 3), dict(padding=1, padding_mode="reflect")),
    "replicate_batch": ((32, 6, 7, 7), (16, 6, 3, 3),
                        dict(padding=1, padding_mode="replicate")),
    "circular_rows": ((2, 3, 11, 13), (6, 3, 3, 2),
                      dict(stride=(2, 1), padding=((1, 0), (0, 1)), padding_mode="circular")),
}
# 3x3 stride-1 cases that algorithm="winograd" runs; auto picks it for the last
WINOGRAD_CASES = {
    "winograd": ((2, 16, 9, 10), (24, 16, 3, 3), dict(padding=1)),
    "winograd_groups": ((3, 8, 13, 7), (6, 4, 3, 3), dict(padding=2, groups=2)),
    "winograd_auto": ((8, 32, 28, 28), (32, 32, 3, 3), dict(padding=1)),
}
CASES.update(WINOGRAD_CASES)
ALGORITHMS = ["auto", "direct", "im2col"]


def _conv_fns(nd):
    return {1: (cnnfast.conv1d, cnnfast.conv1d_backward),
            2: (cnnfast.conv2d, cnnfast.conv2d_backward),
            3: (cnnfast.conv3d, cnnfast.conv3d_backward)}[nd]


class _Recorder:
    """Stands in for the drivers' work_array and notes each (name, elements, kind)."""

    def __init__(self):
        self.calls = {}

    def __call__(self, name, size, dtype):
        kind = "i" if np.dtype(dtype) == np.intp else "f"
        self.calls[name] = (max(int(size), 1, self.calls.get(name, (0,))[0]), kind)
        return _workspace.work_array(name, size, dtype)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_work_arrays_are_the_ones_the_drivers_ask_for(monkeypatch, rng, case, dtype, algorithm,
                                                       threads):
    x_shape, w_shape, args = CASES[case]
    nd = len(x_shape) - 2
    forward, backward = _conv_fns(nd)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    with cnnfast.num_threads(threads):
        plan = cnnfast.explain_conv(x_shape, w_shape, **args, algorithm=algorithm,
                                    dtype=dtype)
        geom = cnnfast._ops.conv_validation.conv_geometry(nd, x, w, None, **args)
        tiles = _conv.kernel_tiles(dtype)
        grad_out = np.ones_like(forward(x, w, **args))
        for gradient, p in plan.passes.items():
            recorder = _Recorder()
            with monkeypatch.context() as patch:
                patch.setattr(_conv, "work_array", recorder)
                if gradient == "forward":
                    forward(x, w, **args, algorithm=algorithm)
                else:
                    backward(grad_out, x, w, **args, need=(gradient,), algorithm=algorithm)
            g = geom.padded_input if gradient == "x" and geom.pad_mode != "zeros" else geom
            shape = _plan._driver_shape(g, p.layout)
            expected = _plan.work_arrays(p.kernel, shape, p.threads, p.tile,
                                         p.weights_in_place, tiles, gradient)
            expected = {k: (max(n, 1), kind) for k, (n, kind) in expected.items()}
            assert recorder.calls == expected, (gradient, p)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(WINOGRAD_CASES), ids=str)
def test_winograd_work_arrays_are_the_ones_the_drivers_ask_for(monkeypatch, rng, case, dtype,
                                                                threads):
    test_work_arrays_are_the_ones_the_drivers_ask_for(monkeypatch, rng, case, dtype, "winograd",
                                                      threads)


def test_auto_plans_winograd_where_it_wins():
    """The forward on the NHWC Winograd between layout copies up to 56x56
    planes (_plan.NHWC_COPIES_WINOGRAD_PLANE), the channels-first Winograd
    from 112x112; the input gradient on the channels-first Winograd."""
    x_shape, w_shape, args = WINOGRAD_CASES["winograd_auto"]
    plan = cnnfast.explain_conv(x_shape, w_shape, **args)
    assert [plan.passes[p].kernel for p in ("forward", "x", "weight")] == [
        "nhwc_winograd", "winograd", "nhwc_weight"]
    assert plan.passes["forward"].layout == "channels_last_copies"
    assert plan.passes["weight"].layout == "channels_last_copies"
    large = cnnfast.explain_conv((2, 32, 112, 112), w_shape, **args)
    assert large.passes["forward"].kernel == "winograd"


@pytest.mark.parametrize("x_shape,w_shape,args,copies", [
    ((64, 6, 14, 14), (16, 6, 5, 5), {}, True),                 # LeNet's c2
    ((8, 128, 28, 28), (128, 128, 3, 3), dict(padding=1), True),
    ((64, 1, 32, 32), (6, 1, 5, 5), {}, False),                 # LeNet's c1: 1 channel
    ((8, 3, 64, 64), (64, 3, 3, 3), dict(padding=1), False),    # RGB
    ((8, 64, 56, 56), (128, 64, 3, 3), dict(stride=2, padding=1), False),
    ((8, 192, 28, 28), (64, 192, 1, 1), {}, False),             # 1x1
    ((8, 16, 5, 5), (120, 16, 5, 5), {}, False),                # full window
    ((8, 32, 16, 16), (8, 32, 3, 3), dict(padding=1), False),   # 8 outputs: no NHWC kernel
    ((8, 32, 16, 16), (32, 32, 3, 3), dict(padding=1, padding_mode="reflect"), False),
])
def test_channels_first_weight_gradient_on_nhwc_between_copies(x_shape, w_shape, args, copies,
                                                               rng):
    """Where im2col + BLAS lost to the NHWC kernels (stride 1, a window, 6+
    input channels), a channels-first weight gradient runs on them between
    layout copies; the result matches the reference either way."""
    plan = cnnfast.explain_conv(x_shape, w_shape, **args, need=("weight",))
    assert (plan.passes["weight"].layout == "channels_last_copies") == copies
    if copies:
        assert plan.passes["weight"].kernel in ("nhwc_weight", "nhwc_winograd_weight")
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    go = rng.standard_normal(reference.conv2d(x, w, None, **args).shape).astype(np.float32)
    gw = cnnfast.conv2d_backward(go, x, w, **args, need=("weight",))[1]
    want = reference.conv2d_backward(go.astype(np.float64), x.astype(np.float64),
                             w.astype(np.float64), **args, need=("weight",))[1]
    np.testing.assert_allclose(gw, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_explain_conv_names_output_shape_passes_and_flops():
    plan = cnnfast.explain_conv((8, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1)
    assert plan.out_shape == (8, 128, 28, 28)
    assert set(plan.passes) == {"forward", "x", "weight", "bias"}
    macs = 8 * 128 * 28 * 28 * 64 * 9
    for gradient in ("forward", "x", "weight"):
        assert plan.passes[gradient].flops == 2 * macs
        assert plan.passes[gradient].algorithm in ("direct", "im2col", "1x1")
        assert plan.passes[gradient].kernel in _plan.KERNELS
    assert plan.flops == 6 * macs + 8 * 128 * 28 * 28
    assert plan.workspace_bytes == max(p.workspace_bytes for p in plan.passes.values())
    text = str(plan)
    assert "forward" in text and "weight" in text and "(8, 128, 28, 28)" in text


def test_explain_conv_follows_threads_and_the_grain_rule(monkeypatch):
    monkeypatch.setattr(_plan, "CONV_GRAIN", 1 << 21)
    big = cnnfast.explain_conv((8, 64, 56, 56), (64, 64, 3, 3), padding=1, threads=2)
    small = cnnfast.explain_conv((1, 1, 8, 8), (1, 1, 3, 3), threads=2)
    assert all(p.threads == 2 for p in big.passes.values())
    assert all(p.threads == 1 for p in small.passes.values())
    one = cnnfast.explain_conv((8, 64, 56, 56), (64, 64, 3, 3), padding=1, threads=1)
    assert all(p.threads == 1 for p in one.passes.values())


def test_explain_conv_runs_nothing_and_allocates_nothing_big(monkeypatch):
    calls = []
    for name in ("conv_forward", "conv_backward_input", "conv_backward_weight",
                 "conv_backward_bias"):
        monkeypatch.setattr(_conv, name, lambda *a, _n=name: calls.append(_n))
    # 4 GB of input and output: a dry run must not touch them
    plan = cnnfast.explain_conv((64, 256, 256, 256), (256, 256, 3, 3), padding=1)
    assert calls == []
    assert plan.out_shape == (64, 256, 256, 256)


@pytest.mark.parametrize("bad, match", [
    (dict(x_shape=(1, 3, 8)), "weight must be a 3-D"),
    (dict(x_shape=(1, 3)), "x_shape"),
    (dict(dtype="int32"), "dtype"),
    (dict(padding="full"), "padding"),
    (dict(algorithm="fft"), "algorithm"),
    (dict(need=("forward", "input")), "need"),
    (dict(groups=2), "groups"),
])
def test_explain_conv_validates_like_the_op(bad, match):
    kw = dict(x_shape=(1, 3, 8, 8), weight_shape=(4, 3, 3, 3))
    kw.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        cnnfast.explain_conv(**kw)


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_the_plan_is_what_auto_runs(rng, case):
    """Forcing each pass's planned algorithm gives auto's result bit for bit
    where the layout is per image (the same kernel runs), and the reference's
    to rounding everywhere."""
    x_shape, w_shape, args = CASES[case]
    nd = len(x_shape) - 2
    forward, backward = _conv_fns(nd)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    plan = cnnfast.explain_conv(x_shape, w_shape, **args, dtype=np.float64)
    y = forward(x, w, **args)
    fwd = plan.passes["forward"]
    if fwd.layout == "images":
        np.testing.assert_array_equal(y, forward(x, w, **args, algorithm=fwd.algorithm))
    ref = getattr(reference, f"conv{nd}d")(x, w, **args)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    go = rng.standard_normal(y.shape)
    for gradient, index in (("x", 0), ("weight", 1)):
        got = backward(go, x, w, **args, need=(gradient,))[index]
        p = plan.passes[gradient]
        if p.layout == "images":
            forced = backward(go, x, w, **args, need=(gradient,), algorithm=p.algorithm)[index]
            np.testing.assert_array_equal(got, forced)
        ref_g = getattr(reference, f"conv{nd}d_backward")(go, x, w, **args)[index]
        np.testing.assert_allclose(got, ref_g, rtol=1e-9, atol=1e-9)


def test_auto_thresholds_live_in_the_plan_module():
    """The auto rule and every threshold it uses are in cnnfast._plan; the
    drivers keep none (they would choose a second time)."""
    for name in ("CONV_GRAIN", "POOL_GRAIN", "CHANNELS_IN_LANES_MIN", "SMALL_PLANE",
                 "STACK_PLANE", "STACK_PLANE_WEIGHT_THREADS", "TINY_PLANE", "IN_PLACE_TILES",
                 "PANEL_BUDGET", "PANEL_MIN_PANELS", "PANEL_BUDGET_MAX", "COLUMN_BUDGET",
                 "REDUCTION_CHUNK", "BATCH_IN_TILE_MIN"):
        assert isinstance(getattr(_plan, name), int)
        assert not hasattr(_conv, name)


@pytest.mark.parametrize("w_shape, padding, kernel", [
    ((32, 32, 3, 3), 1, "nhwc_winograd"),   # small planes: NHWC Winograd beats NCHW's
    ((32, 32, 5, 5), 2, "nhwc_direct"),
])
def test_channels_first_forward_on_the_nhwc_kernel_between_copies(w_shape, padding, kernel):
    plan = cnnfast.explain_conv((8, 32, 16, 16), w_shape, padding=padding, need="forward")
    p = plan.passes["forward"]
    assert (p.kernel, p.layout) == (kernel, "channels_last_copies")
    assert p.workspace_bytes >= (8 * 32 * 16 * 16 * 2) * 4   # the two copies
    # the call gives the reference's result, also with a NaN (Winograd: the
    # direct kernel's exact result then)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    for nan in (False, True):
        if nan:
            x[3, 5, 7, 2] = np.nan
        ref = cnnfast.reference.conv2d(x.astype(np.float64), w.astype(np.float64),
                                       b.astype(np.float64), padding=padding)
        got = cnnfast.conv2d(x, w, b, padding=padding)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        # float32 sums of 288-800 products of magnitude up to ~90
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
        # a fused layer's epilogue on the same route: residual, then ReLU6
        r = rng.standard_normal(ref.shape).astype(np.float32)
        fused = _conv_forward_fused(2, x, w, b, 1, padding, 1, 1, (0.0, 6.0), r)
        np.testing.assert_allclose(fused, np.clip(ref + r, 0, 6), rtol=1e-5, atol=1e-4)
    # an explicit algorithm, 1x1 kernels, few channels and large Winograd planes keep theirs
    for xs, ws, kw in [((8, 32, 16, 16), (32, 32, 3, 3), dict(padding=1, algorithm="direct")),
                       ((8, 64, 16, 16), (64, 64, 1, 1), {}),
                       ((64, 6, 14, 14), (16, 6, 5, 5), {}),
                       ((2, 64, 112, 112), (64, 64, 3, 3), dict(padding=1))]:
        p = cnnfast.explain_conv(xs, ws, need="forward", **kw).passes["forward"]
        assert p.layout != "channels_last_copies", (xs, ws, kw)


def test_depthwise_threads_from_its_traffic(monkeypatch):
    """A depthwise pass is bound by the elements it reads and writes: a
    stride-2 layer under CONV_GRAIN multiply-adds but past POOL_GRAIN
    elements takes the threads; a small one stays on one."""
    monkeypatch.setattr(_plan, "CONV_GRAIN", 1 << 21)   # the library's grains
    monkeypatch.setattr(_plan, "POOL_GRAIN", 1 << 17)
    cnnfast._cache.clear()
    geom_args = dict(stride=2, padding=1, groups=192, data_format="channels_last", threads=2)
    plan = cnnfast.explain_conv((16, 14, 14, 192), (192, 1, 3, 3), **geom_args)
    assert all(p.kernel == "depthwise" and p.threads == 2
               for name, p in plan.passes.items() if name != "bias")
    assert 16 * 7 * 7 * 192 * 9 < _plan.CONV_GRAIN
    plan = cnnfast.explain_conv((1, 14, 14, 192), (192, 1, 3, 3), **geom_args)
    assert all(p.threads == 1 for name, p in plan.passes.items() if name != "bias")
    cnnfast._cache.clear()   # plans made under these grains
