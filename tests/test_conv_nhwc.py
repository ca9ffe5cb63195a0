"""The channels-last direct convolution (cnnfast/_nhwc.py, conv_nhwc.h).

Checked through the public channels-last calls, which the plan sends to it
(explain_conv says so), against cnnfast.reference on the channels-first
arrays: odd sizes, strides, asymmetric and "same" padding, dilation, groups,
rectangular kernels, 1-D/2-D/3-D, batch 0 and 1, both dtypes, the
full-window view, partial vectors of output channels, chunked input
channels; the fused epilogue (residual, clamp); memory layouts; thread counts
(bit-identical); NaN/inf; fused models that run channels-last inside.
"""
import numpy as np
import pytest

import cnnfast
from cnnfast import _nhwc, _plan
from cnnfast import reference as R
from cnnfast._ops.conv import _conv_forward_fused_last
from cnnfast._ops.conv_validation import conv_geometry
from layouts import LAYOUTS, relayout

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}
FORWARD = {1: cnnfast.conv1d, 2: cnnfast.conv2d, 3: cnnfast.conv3d}
REFERENCE = {1: R.conv1d, 2: R.conv2d, 3: R.conv3d}

# (x shape channels-first, weight shape, conv arguments)
CASES = {
    "3x3": ((2, 5, 9, 11), (17, 5, 3, 3), dict(padding=1)),
    "3x3_k40_c70": ((1, 70, 6, 7), (40, 70, 3, 3), dict(padding=1)),
    "stride2_odd": ((2, 6, 13, 10), (33, 6, 3, 3), dict(stride=2, padding=1)),
    "rect_dilated": ((1, 4, 12, 15), (20, 4, 3, 2), dict(stride=(2, 1), padding=(2, 0),
                                                           dilation=(2, 3))),
    "asymmetric": ((2, 3, 10, 9), (16, 3, 4, 4), dict(padding=((1, 2), (0, 3)))),
    "same_stride3": ((1, 8, 11, 13), (24, 8, 5, 5), dict(stride=3, padding="same")),
    "groups": ((2, 12, 7, 8), (54, 4, 3, 3), dict(padding=1, groups=3)),
    "stem7x7": ((1, 3, 23, 21), (64, 3, 7, 7), dict(stride=2, padding=3)),
    "1x1": ((3, 32, 5, 6), (48, 32, 1, 1), dict()),
    "1x1_stride2": ((1, 16, 9, 7), (20, 16, 1, 1), dict(stride=2)),
    "11x11_s4": ((1, 3, 35, 37), (16, 3, 11, 11), dict(stride=4, padding=2)),
    "full_window": ((5, 16, 5, 5), (120, 16, 5, 5), dict()),
    "batch1_7x7": ((1, 64, 7, 7), (130, 64, 3, 3), dict(padding=1)),
    "chunked_channels": ((1, 600, 4, 5), (20, 600, 3, 3), dict(padding=1)),
    # small planes at batch > 1: spans of output pixels run across images
    # (_nhwc.batch_folded), with chunked channels and several weight blocks
    "batch3_4x4_chunked": ((3, 200, 4, 4), (130, 200, 3, 3), dict(padding=1)),
    "batch4_stride2_1d": ((4, 16, 9), (20, 16, 3), dict(stride=2, padding=1)),
    "empty_batch": ((0, 8, 6, 6), (16, 8, 3, 3), dict(padding=1)),
    "1d": ((2, 9, 31), (18, 9, 5), dict(stride=2, padding=2, dilation=2)),
    "3d": ((1, 4, 5, 6, 7), (16, 4, 3, 2, 3), dict(stride=(1, 2, 1), padding=1)),
}


def _last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _first(a):
    return np.moveaxis(a, -1, 1)


def _inputs(case, dtype, seed=0):
    xs, ws, kw = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return x, w, b, kw


def _expected(x, w, b, kw):
    nd = x.ndim - 2
    return REFERENCE[nd](x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)


def _close(got, expected, dtype):
    scale = max(1.0, float(np.abs(expected).max(initial=0)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference(case, dtype):
    x, w, b, kw = _inputs(case, dtype)
    nd = x.ndim - 2
    plan = cnnfast.explain_conv(_last(x).shape, w.shape, **kw, dtype=dtype, need="forward",
                                data_format="channels_last")
    assert plan.passes["forward"].kernel == "nhwc_direct"
    assert plan.passes["forward"].layout == "channels_last"
    got = FORWARD[nd](_last(x), w, b, **kw, data_format="channels_last")
    assert got.flags.c_contiguous and got.dtype == dtype
    _close(_first(got), _expected(x, w, b, kw), dtype)
    # and without bias
    got = FORWARD[nd](_last(x), w, None, **kw, data_format="channels_last")
    _close(_first(got), _expected(x, w, np.zeros_like(b), kw), dtype)


@pytest.mark.parametrize("case", ["3x3", "stride2_odd", "groups", "full_window",
                                  "chunked_channels"])
def test_threads_bit_identical(case):
    x, w, b, kw = _inputs(case, np.float32, seed=1)
    xl = _last(x)
    with cnnfast.num_threads(1):
        one = cnnfast.conv2d(xl, w, b, **kw, data_format="channels_last")
    for threads in (2, 3):
        with cnnfast.num_threads(threads):
            for _ in range(2):
                got = cnnfast.conv2d(xl, w, b, **kw, data_format="channels_last")
                np.testing.assert_array_equal(got, one)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_input_layouts(layout, tmp_path):
    x, w, b, kw = _inputs("stride2_odd", np.float64, seed=2)
    xl = _last(x)
    expected = cnnfast.conv2d(xl, w, b, **kw, data_format="channels_last")
    for target in ("x", "w", "b"):
        args = dict(x=xl, w=w, b=b)
        args[target] = relayout(args[target], layout, str(tmp_path / f"{target}.bin"))
        if layout == "broadcast":   # other values: compare with a native copy of them
            expected_here = cnnfast.conv2d(np.array(args["x"]), np.array(args["w"]),
                                           np.array(args["b"]), **kw,
                                           data_format="channels_last")
        else:
            expected_here = expected
        got = cnnfast.conv2d(args["x"], args["w"], args["b"], **kw,
                             data_format="channels_last")
        np.testing.assert_array_equal(got, expected_here)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clamp", [None, (0.0, np.inf), (0.0, 6.0), (-1.0, 1.0)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_fused_epilogue(dtype, clamp, with_residual):
    x, w, b, kw = _inputs("3x3_k40_c70", dtype, seed=3)
    expected = _expected(x, w, b, kw)
    residual = None
    if with_residual:
        r = np.random.default_rng(4).standard_normal(expected.shape).astype(dtype)
        expected = expected + r
        residual = _last(r)
    if clamp is not None:
        expected = np.clip(expected, *clamp)
    cache = {}
    for _ in range(2):   # the second call reuses the packed weights
        got = _conv_forward_fused_last(2, _last(x), w, b, 1, kw["padding"], 1, 1, clamp,
                                       residual, packed=cache)
        _close(_first(got), expected, dtype)
    assert len(cache) == 1
    # a new weight array is packed anew, not served from the cache
    w2 = w * 2
    got = _conv_forward_fused_last(2, _last(x), w2, b, 1, kw["padding"], 1, 1, None, None,
                                   packed=cache)
    _close(_first(got), _expected(x, w2, b, kw), dtype)


def test_nan_and_inf_propagate():
    x, w, b, kw = _inputs("3x3", np.float32, seed=5)
    x[0, 1, 4, 5] = np.nan
    x[1, 2, 0, 0] = np.inf
    got = _first(cnnfast.conv2d(_last(x), w, b, **kw, data_format="channels_last"))
    expected = _expected(x, w, b, kw)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    _close(got[finite], expected[finite], np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clamp", [(0.0, 6.0), (-1.0, 1.0), (0.0, np.inf)])
def test_fused_clamp_keeps_nan_and_signed_zero(dtype, clamp):
    """The epilogue's clamp (one max and one min at AVX-512) is np.clip's:
    NaN stays NaN, inf is clamped, an output of -0.0 inside [lo, hi] keeps
    its sign, as the compares it replaced did."""
    x, w, b, kw = _inputs("3x3_k40_c70", dtype, seed=6)
    x[0, 3, 2, 4] = np.nan
    x[0, 5, 5, 1] = np.inf
    b = np.zeros_like(b)
    x_last = _last(x)
    got = _first(_conv_forward_fused_last(2, x_last, w, b, 1, kw["padding"], 1, 1, clamp,
                                          None))
    expected = np.clip(_expected(x, w, b, kw), *clamp)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).any()
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~np.isnan(expected)] == np.inf,
                                  expected[~np.isnan(expected)] == np.inf)
    _close(got[finite], expected[finite], dtype)
    # an exact -0.0 sum: a bias of -0.0 plus products of negative zeros
    xz = np.full((1, 70, 3, 3), -0.0, dtype)
    wz = np.zeros((40, 70, 1, 1), dtype)
    wz[:, 0] = 1.0
    out = _conv_forward_fused_last(2, _last(xz), wz, np.full(40, -0.0, dtype), 1, 0, 1, 1,
                                   (-1.0, 1.0), None)
    want = np.clip(np.full((1, 3, 3, 40), -0.0, dtype), -1.0, 1.0)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(want))


def test_plan_choices():
    # too few output channels per group for a vector: the channels-first kernels
    plan = cnnfast.explain_conv((8, 32, 32, 1), (6, 1, 5, 5), need="forward",
                                data_format="channels_last")
    assert plan.passes["forward"].kernel != "nhwc_direct"
    # a padding mode other than zeros: likewise
    plan = cnnfast.explain_conv((1, 8, 8, 4), (16, 4, 3, 3), padding=1, need="forward",
                                padding_mode="reflect", data_format="channels_last")
    assert plan.passes["forward"].kernel != "nhwc_direct"
    # an explicit algorithm other than direct keeps its own kernel
    plan = cnnfast.explain_conv((1, 8, 8, 4), (16, 4, 3, 3), padding=1, need="forward",
                                algorithm="im2col", data_format="channels_last")
    assert plan.passes["forward"].kernel == "gemm"
    # channels-first calls are planned as before
    plan = cnnfast.explain_conv((1, 4, 8, 8), (16, 4, 3, 3), padding=1, need="forward")
    assert plan.passes["forward"].layout != "channels_last"


def test_configuration():
    geom = conv_geometry(2, np.empty((1, 512, 7, 7), np.float32),
                         np.empty((512, 512, 3, 3), np.float32), None, 1, 1, 1, 1)
    for threads in (1, 2, 4):
        cfg = _nhwc.configure(geom, threads)
        assert cfg.span % cfg.tile == 0 and cfg.cchunk <= 512
        # several items per thread (spans are whole tiles, so not always ITEMS_PER_THREAD)
        assert cfg.items >= 2 * threads
        # one block of weights and one chunk of channels fit the cache budget
        assert 9 * cfg.cchunk * cfg.block * 4 <= _nhwc.WEIGHT_CHUNK_BYTES
    assert _plan.nhwc_layer_ok(16, "zeros", np.float32)
    assert not _plan.nhwc_layer_ok(15, "zeros", np.float32)
    assert _plan.nhwc_layer_ok(8, "zeros", np.float64)
    assert not _plan.nhwc_layer_ok(64, "circular", np.float32)


def _with_statistics(model, seed):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if type(m).__name__ == "BatchNorm2d":
            m.running_mean[...] = rng.standard_normal(m.running_mean.shape) * 0.1
            m.running_var[...] = rng.uniform(0.5, 2, m.running_var.shape)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "vgg11"])
def test_fused_model_runs_channels_last_inside(name):
    model = _with_statistics(getattr(cnnfast.models, name)(num_classes=10), 6)
    x = np.random.default_rng(7).standard_normal((2, 3, 64, 64)).astype(np.float32)
    expected = model(x)
    fused = model.fuse()
    assert fused.layout == "channels_last" and fused.data_format == "channels_first"
    np.testing.assert_allclose(fused(x), expected, rtol=1e-4, atol=1e-4)
    # a channels-last model is already in that layout
    twin = getattr(cnnfast.models, name)(num_classes=10, data_format="channels_last")
    twin.load_state_dict(model.state_dict())
    fused_last = twin.eval().fuse()
    assert fused_last.layout == fused_last.data_format == "channels_last"
    np.testing.assert_allclose(fused_last(_last(x)), expected, rtol=1e-4, atol=1e-4)


def test_fused_model_keeps_channels_first_when_a_conv_cannot():
    model = cnnfast.models.lenet5().eval()   # conv1: 6 output channels
    fused = model.fuse()
    assert fused.layout == "channels_first"
    x = np.random.default_rng(8).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(fused(x), model(x), rtol=1e-5, atol=1e-5)


def test_fused_model_of_user_modules_keeps_its_layout():
    class Mine(cnnfast.nn.Module):   # a user's forward may assume NCHW
        def __init__(self):
            super().__init__()
            self.conv = cnnfast.nn.Conv2d(3, 16, 3, padding=1)

        def forward(self, x):
            return self.conv(x)[:, :4]   # channels 0..3, in NCHW

    model = Mine().eval()
    fused = model.fuse()
    assert fused.layout == "channels_first"
    x = np.random.default_rng(9).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(fused(x), model(x), rtol=1e-5, atol=1e-6)


def test_fused_weights_are_read_only():
    model = _with_statistics(cnnfast.models.resnet18(num_classes=10), 10)
    fused = model.fuse()
    conv = fused.module.conv1
    with pytest.raises(ValueError):
        conv.weight.data *= 2   # a stale packed copy can never be used


# ------------------------------------------------------------------ Winograd
# The NHWC Winograd F(4x4, 3x3) runs for layers that keep their transformed
# weights (fused layers: _conv_forward_fused_last with a cache dict).

WINOGRAD_CASES = [   # (x shape channels-first, K, padding)
    ((2, 32, 9, 11), 48, 1),
    ((1, 64, 7, 7), 80, 1),          # two output-channel blocks, the second partial
    ((3, 32, 13, 6), 32, ((0, 2), (1, 1))),
    ((1, 48, 30, 29), 32, 0),        # several blocks of tiles per image
    ((8, 32, 3, 3), 32, 1),          # 3x3 planes: most patch elements are padding
    ((0, 32, 6, 6), 32, 1),
]


def _fused_last(x, w, b, padding, cache, clamp=None, residual=None):
    return _conv_forward_fused_last(2, _last(x), w, b, 1, padding, 1, 1, clamp, residual,
                                    packed=cache)


def _winograd_plan(x, w, padding):
    geom = conv_geometry(2, x, w, None, 1, padding, 1, 1)
    return _plan.plan_conv(geom, "auto", ("forward",), channels_last=True,
                           kept_weights=True).passes["forward"]


@pytest.fixture(params=[4, 2], ids=["F(4,3)", "F(2,3)"])
def winograd_tile(request, monkeypatch):
    """Each Winograd test for both tiles: F(2,3) forced on every shape (where
    `auto` would give such a layer the direct kernel instead: not here)."""
    if request.param == 2:
        monkeypatch.setattr(_nhwc, "winograd_tile", lambda geom, shared=None: 2)
        monkeypatch.setattr(_plan, "nhwc_winograd_wins", _plan.nhwc_winograd_applies)
    cnnfast._cache.clear()   # plans made under the other tile
    yield request.param
    cnnfast._cache.clear()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
def test_winograd_matches_reference(case, dtype, winograd_tile):
    xs, K, padding = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((K, xs[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    p = _winograd_plan(x, w, padding)
    if xs[0]:   # an empty batch has no outputs to amortise anything: the direct kernel
        assert p.kernel == "nhwc_winograd" and p.config.m == winograd_tile
    expected = _expected(x, w, b, dict(padding=padding))
    cache = {}
    got = _first(_fused_last(x, w, b, padding, cache))
    assert got.shape == expected.shape and got.dtype == dtype
    if not got.size:
        return
    bound = 1e-5 if dtype == np.float32 else 1e-12   # docs/API.md's Winograd bound
    assert np.abs(got - expected).max() <= bound * max(1.0, np.abs(expected).max())
    # the epilogue, with the transformed weights from the cache
    r = rng.standard_normal(expected.shape).astype(dtype)
    got = _first(_fused_last(x, w, b, padding, cache, (0.0, 6.0), _last(r)))
    np.testing.assert_allclose(got, np.clip(expected + r, 0, 6), rtol=0,
                               atol=2 * bound * max(1.0, np.abs(expected).max()))


def test_winograd_threads_bit_identical(winograd_tile):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 64, 14, 15)).astype(np.float32)
    w = rng.standard_normal((96, 64, 3, 3)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    with cnnfast.num_threads(1):
        one = _fused_last(x, w, b, 1, {})
    for threads in (2, 3):
        with cnnfast.num_threads(threads):
            np.testing.assert_array_equal(_fused_last(x, w, b, 1, {}), one)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_blocks_across_images_and_rounds(dtype, threads, winograd_tile, monkeypatch):
    """Tiles numbered image after image, in blocks that straddle images
    (5 tiles per block), rounds of 2 images with a last round of 1."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((5, 32, 3, 27)).astype(dtype)
    w = rng.standard_normal((40, 32, 3, 3)).astype(dtype)
    b = rng.standard_normal(40).astype(dtype)
    r = rng.standard_normal((5, 40, 3, 27)).astype(dtype)
    m = winograd_tile
    per_image = -(-3 // m) * -(-27 // m)
    positions = (m + 2) ** 2
    monkeypatch.setattr(_nhwc, "WINOGRAD_TILES", 5)
    monkeypatch.setattr(_nhwc, "WINOGRAD_ROUND_BYTES",
                        2 * per_image * positions * 32 * np.dtype(dtype).itemsize)
    geom = conv_geometry(2, x, w, None, 1, 1, 1, 1)
    cfg = _nhwc.winograd_configure(geom, threads)
    T = cfg.tiles
    straddle = [t0 // per_image != (min(t0 + T, 2 * per_image) - 1) // per_image
                for t0 in range(0, 2 * per_image, T)]
    assert cfg.images_per_round == 2 and T <= 5 and any(straddle)
    expected = _expected(x, w, b, dict(padding=1))
    bound = 2e-5 if dtype == np.float32 else 1e-12
    with cnnfast.num_threads(threads):
        got = _first(_fused_last(x, w, b, 1, {}, (-1.0, 2.0), _last(r)))
    np.testing.assert_allclose(got, np.clip(expected + r, -1, 2), rtol=0,
                               atol=bound * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("where", ["x", "w"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_winograd_non_finite_gives_the_direct_result(where, value, winograd_tile):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 32, 8, 8)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    (x if where == "x" else w)[0, 3, 2, 2] = value
    got = _fused_last(x, w, b, 1, {})
    direct = cnnfast.conv2d(_last(x), w, b, padding=1, data_format="channels_last")
    np.testing.assert_array_equal(got, direct)


def test_winograd_only_where_planned():
    x = np.empty((1, 32, 8, 8), np.float32)
    w = np.empty((32, 32, 3, 3), np.float32)
    with cnnfast.conv_policy(winograd=False):
        assert _winograd_plan(x, w, 1).kernel == "nhwc_direct"
    geom = conv_geometry(2, x, w, None, 1, 1, 1, 1)
    # a call that does not keep its weights would transform them every time
    plain = _plan.plan_conv(geom, "auto", ("forward",), channels_last=True)
    assert plain.passes["forward"].kernel == "nhwc_direct"
    # shapes it does not take: stride 2, dilation, channels not a whole vector
    for args in (dict(stride=2), dict(dilation=2)):
        g = conv_geometry(2, x, w, None, args.get("stride", 1), 1, args.get("dilation", 1), 1)
        assert not _plan.nhwc_winograd_wins(g, "auto")
    g = conv_geometry(2, np.empty((1, 36, 8, 8), np.float32),
                      np.empty((32, 36, 3, 3), np.float32), None, 1, 1, 1, 1)
    assert not _plan.nhwc_winograd_wins(g, "auto")
    # too few outputs (2x2 at batch 1), or tiles mostly outside the plane (5x5)
    for shape in [(1, 64, 2, 2), (4, 64, 5, 5)]:
        g = conv_geometry(2, np.empty(shape, np.float32),
                          np.empty((64, 64, 3, 3), np.float32), None, 1, 1, 1, 1)
        assert not _plan.nhwc_winograd_wins(g, "auto")
    # F(2,3)'s streamed weights (ResNet-18's 7x7x512 at batch 1): direct under
    # auto, Winograd when asked for; a batch of 8 shares F(4,3)'s weights
    w512 = np.empty((512, 512, 3, 3), np.float32)
    one = conv_geometry(2, np.empty((1, 512, 7, 7), np.float32), w512, None, 1, 1, 1, 1)
    assert _nhwc.winograd_tile(one) == 2 and _plan.nhwc_winograd_applies(one, "auto")
    assert not _plan.nhwc_winograd_wins(one, "auto")
    assert _plan.nhwc_winograd_wins(one, "winograd")
    eight = conv_geometry(2, np.empty((8, 512, 7, 7), np.float32), w512, None, 1, 1, 1, 1)
    assert _nhwc.winograd_tile(eight) == 4 and _plan.nhwc_winograd_wins(eight, "auto")


def test_fused_resnet_uses_winograd_and_matches():
    model = _with_statistics(cnnfast.models.resnet18(num_classes=10), 14)
    x = np.random.default_rng(15).standard_normal((1, 3, 64, 64)).astype(np.float32)
    fused = model.fuse()
    np.testing.assert_allclose(fused(x), model(x), rtol=1e-4, atol=1e-4)
    kinds = {key[0] for m in fused.modules() for key in getattr(m, "_packed", {})}
    assert kinds == {"winograd", "direct"}


# ------------------------------------------------------------------ pooling
# Channels-last max pooling without indices and the global average run on
# pool_nhwc.h: equal to the channels-first ops bit for bit.

POOL_CASES = [   # (x shape channels-first, pooling arguments)
    ((2, 64, 15, 16), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 20, 9, 9), dict(kernel_size=3, stride=1, padding=1, ceil_mode=True)),
    ((3, 5, 11, 7), dict(kernel_size=(2, 3), stride=(2, 1), dilation=(2, 1))),
    ((1, 17, 8, 8), dict(kernel_size=2)),
    ((2, 16, 7, 10), dict(kernel_size=3, stride=2, ceil_mode=True, padding=(1, 0))),
    ((0, 8, 4, 4), dict(kernel_size=2)),
    # the ring of row maxima: dilated rows (5 slots), windows wider than the stride
    ((2, 19, 13, 11), dict(kernel_size=(3, 2), stride=1, dilation=(2, 3), padding=1)),
    ((1, 33, 20, 9), dict(kernel_size=5, stride=3, padding=2, ceil_mode=True)),
    ((1, 5, 6, 5), dict(kernel_size=(6, 1))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool_equals_channels_first(case, dtype):
    xs, kw = case
    x = np.random.default_rng(16).standard_normal(xs).astype(dtype)
    if x.size:   # NaN wins its window, ties keep the first (-0.0 before +0.0)
        x[0, 1, 2, 3] = np.nan
        x[0, 2, :2, :2] = [[-0.0, 0.0], [0.0, -0.0]]
        x[0, 3] = -np.inf
    expected = cnnfast.max_pool2d(x, **kw)
    got = cnnfast.max_pool2d(_last(x), **kw, data_format="channels_last")
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(np.signbit(_first(got)), np.signbit(expected))
    np.testing.assert_array_equal(_first(got), expected)


@pytest.mark.parametrize("case", POOL_CASES[:3] + POOL_CASES[-3:], ids=str)
def test_max_pool_threads_split_rows_alike(case):
    """Items are blocks of output rows, each thread with its own ring of row
    maxima: any thread count gives the same result."""
    xs, kw = case
    x = np.random.default_rng(19).standard_normal((3,) + xs[1:]).astype(np.float32)
    expected = cnnfast.max_pool2d(x, **kw)
    for threads in (1, 2, 3):
        with cnnfast.num_threads(threads):
            got = cnnfast.max_pool2d(_last(x), **kw, data_format="channels_last")
        np.testing.assert_array_equal(_first(got), expected)


def test_max_pool_1d_and_threads():
    x = np.random.default_rng(17).standard_normal((4, 24, 33)).astype(np.float32)
    expected = cnnfast.max_pool1d(x, 3, 2, 1)
    for threads in (1, 2, 3):
        with cnnfast.num_threads(threads):
            got = cnnfast.max_pool1d(_last(x), 3, 2, 1, data_format="channels_last")
            np.testing.assert_array_equal(_first(got), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 7, 7, 512), (1, 3, 5, 20), (3, 1, 1, 70)])
def test_global_average(shape, dtype):
    x = np.random.default_rng(18).standard_normal(shape).astype(dtype)
    got = cnnfast.adaptive_avg_pool2d(x, 1, data_format="channels_last")
    expected = x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    assert got.shape == expected.shape and got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL[dtype])
    with cnnfast.num_threads(2):
        np.testing.assert_array_equal(
            cnnfast.adaptive_avg_pool2d(x, 1, data_format="channels_last"), got)


def test_winograd_tile_choice():
    # ResNet's last stage at batch 1: 512 channels on 7x7, F(4,3) weights of 37.7 MB
    big = conv_geometry(2, np.empty((1, 512, 7, 7), np.float32),
                        np.empty((512, 512, 3, 3), np.float32), None, 1, 1, 1, 1)
    assert _nhwc.winograd_tile(big) == 2   # on one thread too: it waits for memory there
    # larger planes, or weights that stay in cache: F(4,3)
    for shape, k in [((1, 512, 14, 14), 512), ((1, 64, 7, 7), 64)]:
        g = conv_geometry(2, np.empty(shape, np.float32),
                          np.empty((k, shape[1], 3, 3), np.float32), None, 1, 1, 1, 1)
        assert _nhwc.winograd_tile(g) == 4


# (x shape channels-first, weight shape, conv arguments): small padded planes
# in a batch, which run position-major (a tile = one position in consecutive
# images, the taps in the padding skipped)
POSITION_MAJOR_CASES = {
    "4x4": ((13, 32, 4, 4), (40, 32, 3, 3), dict(padding=1)),
    "2x2": ((9, 64, 2, 2), (64, 64, 3, 3), dict(padding=1)),
    "odd_rect": ((7, 24, 5, 3), (20, 24, 3, 2), dict(padding=(1, 2))),
    "asymmetric": ((11, 16, 6, 7), (33, 16, 4, 3), dict(padding=((2, 0), (1, 3)))),
    "stride2": ((10, 16, 9, 9), (48, 16, 3, 3), dict(stride=2, padding=1)),
    "dilated_groups": ((8, 32, 7, 6), (64, 16, 3, 3), dict(padding=2, dilation=2, groups=2)),
    "chunked_channels": ((6, 600, 3, 3), (70, 600, 3, 3), dict(padding=1)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(POSITION_MAJOR_CASES))
def test_position_major_tiles(case, dtype, monkeypatch):
    """Position-major tiles with the padding's taps skipped give the
    reference's result and the row-major order's bits (forward with bias,
    the fused epilogue's residual and clamp, the input gradient), at 1 and
    2 threads; the plan says which order it runs."""
    from cnnfast import _cache
    xs, ws, kw = POSITION_MAJOR_CASES[case]
    rng = np.random.default_rng(11)
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal(ws) / np.sqrt(np.prod(ws[1:]))).astype(dtype)   # sums of ~1
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = R.conv2d(x, w, b, **kw)
    res = rng.standard_normal(y.shape).astype(dtype)
    go = rng.standard_normal(y.shape).astype(dtype)
    runs = {}
    try:
        for plane in (10 ** 6, 0):
            monkeypatch.setattr(_nhwc, "PADDED_PLANE", plane)
            _cache.clear()
            geom = conv_geometry(2, x, w, b, kw.get("stride", 1), kw["padding"],
                                 kw.get("dilation", 1), kw.get("groups", 1))
            cfg = _nhwc.configure(_nhwc.kernel_view(geom), 1)
            assert cfg.position_major == (plane > 0)
            for threads in (1, 2):
                with cnnfast.num_threads(threads):
                    out = cnnfast.conv2d(_last(x), w, b, **kw, algorithm="direct",
                                         data_format="channels_last")
                    fused = _conv_forward_fused_last(
                        2, _last(x), w, b, kw.get("stride", 1), kw["padding"],
                        kw.get("dilation", 1), kw.get("groups", 1), (-1.0, 1.5), _last(res))
                    gx = cnnfast.conv2d_backward(_last(go), _last(x), w, **kw, need=("x",),
                                                 data_format="channels_last")[0]
                runs[plane, threads] = (out, fused, gx)
    finally:
        monkeypatch.undo()
        _cache.clear()
    out, fused, gx = runs[10 ** 6, 1]
    _close(_first(out), y, dtype)
    _close(_first(fused), np.clip(y + res, -1.0, 1.5), dtype)
    _close(_first(gx), R.conv2d_backward(go, x, w, **kw, need=("x",))[0], dtype)
    for key, got in runs.items():
        for a, e in zip(got, runs[10 ** 6, 1]):
            np.testing.assert_array_equal(a, e, err_msg=str(key))


def test_position_major_keeps_nan_from_infinite_weights(monkeypatch):
    """With a weight not finite the padding's taps are not skipped: 0 * inf
    puts NaN where the reference's zero padding does."""
    from cnnfast import _cache
    monkeypatch.setattr(_nhwc, "PADDED_PLANE", 10 ** 6)
    _cache.clear()
    try:
        rng = np.random.default_rng(12)
        x = rng.standard_normal((9, 16, 4, 4)).astype(np.float32)
        w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
        w[3, 2, 0, 0] = np.inf
        got = _first(cnnfast.conv2d(_last(x), w, padding=1, data_format="channels_last"))
        want = R.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1)
        assert np.isnan(want).any()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finally:
        monkeypatch.undo()
        _cache.clear()


def test_position_major_needs_a_folded_batch():
    from cnnfast._ext import _conv_nhwc
    x = np.zeros(2 * 4 * 4 * 16, np.float32)
    packed = np.zeros(16 * 16 * 9, np.float32)
    out = np.zeros(2 * 4 * 4 * 16, np.float32)
    with pytest.raises(ValueError, match="position-major"):
        _conv_nhwc.forward(x, (2, 1, 4, 4, 16), packed, packed.size, np.zeros(0, np.float32),
                           out, (2, 1, 4, 4, 16), (1, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1),
                           1, 16, 16, _conv_nhwc.POSITION_MAJOR, 1)
