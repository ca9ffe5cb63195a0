"""cnnfast.relu6 / hardtanh (+ backward) and tanh C kernels against cnnfast.reference,
torch (optional oracle) and float64 finite differences, NaN/inf and the bounds,
threads, bad input; the layers ReLU6, Hardtanh, LeakyReLU, BatchNorm1d and
BatchNorm3d against torch (both data formats); fuse() running ReLU6/Hardtanh
in the convolution's store pass."""
import numpy as np
import pytest

import cnnfast
import cnnfast.nn as nn
from cnnfast import reference
from cnnfast._ops.conv import _conv_forward_fused
from helpers import numeric_gradient
from layouts import LAYOUTS, check_unmodified, relayout, snapshot

DTYPES = [np.float32, np.float64]
# (function, backward, bounds): every clamp through the public names
CLAMPS = [("relu6", (0.0, 6.0)), ("hardtanh", (-1.0, 1.0)), ("hardtanh", (-0.5, 2.25)),
          ("hardtanh", (0.25, 0.25)), ("hardtanh", (-np.inf, 0.5))]


def _call(name, bounds, x):
    return getattr(cnnfast, name)(x) if name == "relu6" else cnnfast.hardtanh(x, *bounds)


def _call_backward(name, bounds, g, x, module=cnnfast):
    if name == "relu6":
        return module.relu6_backward(g, x)
    return module.hardtanh_backward(g, x, *bounds)


def _with_specials(x, bounds):
    """x holding NaN, +-inf, both bounds exactly and -0.0."""
    if x.size >= 8:
        lo, hi = bounds
        x.flat[:7] = [np.nan, np.inf, -np.inf, -0.0, 0.0, lo if np.isfinite(lo) else -3.0, hi]
        x.flat[-1] = np.nan
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, bounds", CLAMPS, ids=str)
@pytest.mark.parametrize("shape", [(0,), (9,), (3, 4, 5), (2, 70001), (0, 3, 4)], ids=str)
def test_matches_reference(rng, name, bounds, shape, dtype):
    x = _with_specials((rng.standard_normal(shape) * 4).astype(dtype), bounds)
    ref = reference.relu6 if name == "relu6" else (lambda a: reference.hardtanh(a, *bounds))
    y = _call(name, bounds, x)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_array_equal(y, ref(x))        # NaN compares equal
    g = rng.standard_normal(shape).astype(dtype)
    gx = _call_backward(name, bounds, g, x)
    np.testing.assert_array_equal(gx, _call_backward(name, bounds, g, x, reference))
    if x.size >= 8:
        assert np.isnan(y.flat[0]) and np.isnan(y.flat[-1])       # NaN propagates
        lo, hi = bounds
        assert y.flat[1] == hi and y.flat[2] == lo                  # inf clamped
        assert (gx.flat[:3] == 0).all() and gx.flat[-1] == 0        # NaN, +-inf: no gradient
        assert gx.flat[6] == 0 and (gx.flat[5] == 0 or not np.isfinite(lo))   # at the bounds


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = (rng.standard_normal((4, 5, 6)) * 4).astype(dtype)
    x.flat[:4] = [0.0, 6.0, -1.0, 1.0]    # torch's gradient at the bounds is 0 too
    x.flat[4:6] = [np.inf, -np.inf]
    g = rng.standard_normal(x.shape).astype(dtype)
    for ours, ours_back, theirs in [
            (cnnfast.relu6, cnnfast.relu6_backward, F.relu6),
            (cnnfast.hardtanh, cnnfast.hardtanh_backward, F.hardtanh),
            (lambda a: cnnfast.hardtanh(a, -2.5, 0.75),
             lambda go, a: cnnfast.hardtanh_backward(go, a, -2.5, 0.75),
             lambda t: F.hardtanh(t, -2.5, 0.75))]:
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx)
        ty.backward(torch.tensor(g))
        np.testing.assert_array_equal(ours(x), ty.detach().numpy())
        np.testing.assert_array_equal(ours_back(g, x), tx.grad.numpy())
    tnan = torch.tensor(np.full(3, np.nan, dtype))
    np.testing.assert_array_equal(cnnfast.relu6(tnan.numpy()), F.relu6(tnan).numpy())


@pytest.mark.parametrize("name, bounds", CLAMPS[:3], ids=str)
def test_finite_differences(rng, name, bounds):
    x = rng.standard_normal((2, 3, 4)) * 4
    lo, hi = bounds
    x[(np.abs(x - lo) < 1e-3) | (np.abs(x - hi) < 1e-3)] = (lo + hi) / 2   # away from the kinks
    w = rng.standard_normal(x.shape)
    gx = _call_backward(name, bounds, w, x)
    num = numeric_gradient(lambda: float(np.sum(_call(name, bounds, x) * w)), x)
    np.testing.assert_allclose(gx, num, rtol=1e-6, atol=1e-8)
    assert (gx == 0).any() and (gx != 0).any()    # both sides of the clamp exercised


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(rng, layout, files):
    x = rng.standard_normal((2, 3, 5, 6)) * 4
    g = rng.standard_normal(x.shape)
    xl, gl = relayout(x, layout, files()), relayout(g, layout, files())
    keep = snapshot([xl, gl])
    np.testing.assert_array_equal(cnnfast.relu6(xl), reference.relu6(xl))
    np.testing.assert_array_equal(cnnfast.hardtanh_backward(gl, xl, -2, 3),
                                  reference.hardtanh_backward(gl, xl, -2, 3))
    check_unmodified(keep)


def test_threads_give_identical_results(rng):
    x = (rng.standard_normal((3, 100003)) * 4).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    outs = []
    for n in (1, 2):
        with cnnfast.num_threads(n):
            outs.append((cnnfast.relu6(x), cnnfast.hardtanh_backward(g, x, -1, 2)))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(outs[0][0], reference.relu6(x))


def test_float32_bounds_round_as_torch():
    # the bounds are rounded to the array's dtype (torch's scalar conversion)
    x = np.array([0.1, 0.2, 0.3], np.float32)
    y = cnnfast.hardtanh(x, 0.1, 0.2)
    np.testing.assert_array_equal(y, np.array([0.1, 0.2, 0.2], np.float32))
    np.testing.assert_array_equal(cnnfast.hardtanh_backward(np.ones(3, np.float32), x, 0.1, 0.3),
                                  [0, 1, 0])


BAD = [
    (lambda x: cnnfast.hardtanh(x, 2.0, 1.0), ValueError, r"min_val must be <= max_val.*2\.0"),
    (lambda x: cnnfast.hardtanh_backward(x, x, 1, -1), ValueError, "min_val=1, max_val=-1"),
    (lambda x: cnnfast.hardtanh(x, np.nan, 1.0), ValueError, "must not be NaN"),
    (lambda x: cnnfast.hardtanh(x, "0", 1.0), TypeError, "min_val must be a real number"),
    (lambda x: cnnfast.hardtanh(x, 0, True), TypeError, "max_val must be a real number"),
    (lambda x: cnnfast.relu6(x.astype(np.int32)), TypeError, "int32"),
    (lambda x: cnnfast.relu6(x.astype(np.float16)), TypeError, "float16"),
    (lambda x: cnnfast.relu6([1.0, 2.0]), TypeError, "x must be a numpy"),
    (lambda x: cnnfast.relu6_backward(x, x.astype(np.float64)), TypeError, "float64"),
    (lambda x: cnnfast.relu6_backward(x[:1], x), ValueError, r"shape \(3,\)"),
    (lambda x: cnnfast.hardtanh_backward(x, x[:2]), ValueError, r"x has shape \(2,\)"),
    (lambda x: nn.Hardtanh(1, 0), ValueError, "min_val must be <= max_val"),
    (lambda x: nn.LeakyReLU("0.1"), TypeError, "negative_slope"),
    (lambda x: nn.BatchNorm1d(3)(np.zeros((2, 3, 4, 5), np.float32)), ValueError,
     "BatchNorm1d expects x with 2 or 3 dims"),
    (lambda x: nn.BatchNorm3d(3)(np.zeros((2, 3, 4, 5), np.float32)), ValueError,
     "BatchNorm3d expects x with 5 dims"),
    (lambda x: nn.BatchNorm1d(4)(np.zeros((2, 3), np.float32)), ValueError, "expects 4 features"),
    (lambda x: nn.BatchNorm3d(3)(np.zeros((1, 3, 2, 2, 2))), TypeError, "float64"),
    (lambda x: _conv_forward_fused(2, np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), None,
                                   1, 0, 1, 1, (1.0, 0.0)), ValueError, "min_val must be <="),
]


@pytest.mark.parametrize("call, exc, match", BAD)
def test_bad_input(call, exc, match):
    x = np.array([1.0, -2.0, 7.0], np.float32)
    with pytest.raises(exc, match=match):
        call(x)


# ------------------------------------------------------------------ layers

def _torch_layer_check(torch, ours, theirs, x, data_format="channels_first"):
    """Forward (train) and input/parameter gradients of ours vs a torch layer
    on x (channels-first; ours sees it in data_format)."""
    last = data_format == "channels_last" and x.ndim > 2
    to_ours = (lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1))) if last else (lambda a: a)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    g = np.random.default_rng(3).standard_normal(ty.shape)
    ty.backward(torch.tensor(g))
    y = ours(to_ours(x))
    np.testing.assert_allclose(y, to_ours(ty.detach().numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.backward(to_ours(g)), to_ours(tx.grad.numpy()),
                               rtol=1e-9, atol=1e-11)
    tgrads = {k: p.grad.numpy() for k, p in theirs.named_parameters()}
    for k, grad in ours.named_grads().items():
        np.testing.assert_allclose(grad, tgrads[k], rtol=1e-9, atol=1e-11, err_msg=k)
    assert set(ours.named_grads()) == set(tgrads)


def test_activation_layers_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 4, 5)) * 4
    x.flat[:4] = [0.0, 6.0, -1.0, np.nan]
    cases = [(nn.ReLU6(), torch.nn.ReLU6()),
             (nn.Hardtanh(-2.0, 0.5), torch.nn.Hardtanh(-2.0, 0.5)),
             (nn.LeakyReLU(), torch.nn.LeakyReLU()),
             (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
             (nn.LeakyReLU(-1.5), torch.nn.LeakyReLU(-1.5))]
    for ours, theirs in cases:
        finite = np.nan_to_num(x, nan=0.5)   # torch's NaN gradient differs between its paths
        _torch_layer_check(torch, ours, theirs, finite)
        np.testing.assert_array_equal(ours(x), theirs(torch.tensor(x)).numpy())
        assert repr(ours)


def test_leaky_relu_finite_differences_and_nan(rng):
    layer = nn.LeakyReLU(0.3)
    x = rng.standard_normal((3, 7))
    x[np.abs(x) < 1e-3] = 0.5
    w = rng.standard_normal(x.shape)
    layer(x)
    gx = layer.backward(w)
    np.testing.assert_allclose(gx, numeric_gradient(lambda: float(np.sum(layer(x) * w)), x),
                               rtol=1e-6, atol=1e-8)
    y = layer(np.array([np.nan, np.inf, -np.inf], np.float32))
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf and y.dtype == np.float32


@pytest.mark.parametrize("layer, shape", [("BatchNorm1d", (4, 3)), ("BatchNorm1d", (4, 3, 5)),
                                          ("BatchNorm3d", (2, 3, 3, 4, 2))], ids=str)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_batch_norm_layers_match_torch(rng, layer, shape, data_format):
    torch = pytest.importorskip("torch")
    ours = getattr(nn, layer)(3, momentum=0.3, dtype=np.float64, data_format=data_format)
    theirs = getattr(torch.nn, layer)(3, momentum=0.3).double()
    ours.weight.data = rng.standard_normal(3)
    ours.bias.data = rng.standard_normal(3)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()},
                           strict=False)
    assert set(theirs.state_dict()) - set(ours.state_dict()) == {"num_batches_tracked"}
    x = rng.standard_normal(shape) * 2 + 1
    _torch_layer_check(torch, ours, theirs, x, data_format)
    for k, v in ours.state_dict().items():   # running statistics moved identically
        np.testing.assert_allclose(v, theirs.state_dict()[k].numpy(), rtol=1e-12, err_msg=k)
    ours.eval()
    theirs.eval()
    last = data_format == "channels_last" and x.ndim > 2
    y = ours(np.moveaxis(x, 1, -1) if last else x)
    np.testing.assert_allclose(np.moveaxis(y, -1, 1) if last else y,
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_batch_norm1d_relu_chain_backward(rng):
    """BatchNorm1d -> ReLU in a Sequential takes the fused backward path."""
    model = nn.Sequential(nn.Linear(5, 4, dtype=np.float64), nn.BatchNorm1d(4, dtype=np.float64),
                          nn.ReLU())
    x = rng.standard_normal((6, 5))
    w = rng.standard_normal((6, 4))
    model(x)
    gx = model.backward(w)
    np.testing.assert_allclose(gx, numeric_gradient(lambda: float(np.sum(model(x) * w)), x),
                               rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------------- fuse

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu6", "hardtanh", "relu"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_fuse_runs_the_clamp_in_the_store_pass(rng, dtype, act, data_format):
    make = {"relu6": nn.ReLU6, "hardtanh": lambda: nn.Hardtanh(-0.3, 0.4), "relu": nn.ReLU}[act]
    nn.manual_seed(0)
    kw = dict(dtype=dtype, data_format=data_format)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, **kw), nn.BatchNorm2d(8, **kw), make(),
                          nn.Conv2d(8, 8, 3, groups=8, padding=1, bias=False, **kw), make(),
                          nn.Conv2d(8, 4, 1, **kw), nn.BatchNorm2d(4, **kw))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = rng.standard_normal(m.num_features).astype(dtype)
            m.running_var = (rng.random(m.num_features) + 0.5).astype(dtype)
    x = (rng.standard_normal((2, 9, 10, 3) if data_format == "channels_last"
                             else (2, 3, 9, 10)) * 3).astype(dtype)
    want = model.eval()(x)
    fused = model.fuse()
    kinds = [type(m).__name__ for m in fused.module.children()]
    assert kinds == ["FusedConv2d", "Folded", "Folded", "FusedConv2d", "Folded", "FusedConv2d",
                     "Folded"]
    got = fused(x)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    # the clamp really ran: the activation's bounds are hit inside the fused conv
    mid = nn.Sequential(*list(fused.module.children())[:3])(x)
    lo, hi = (dtype(b) for b in {"relu6": (0, 6), "hardtanh": (-0.3, 0.4),
                                 "relu": (0, np.inf)}[act])
    assert mid.min() == lo and mid.max() <= hi


@pytest.mark.parametrize("shape, kernel, groups", [((2, 16, 12, 12), 3, 1), ((1, 8, 30, 30), 3, 8),
                                                   ((64, 8, 1, 1), 1, 1), ((3, 16, 7, 7), 1, 1)])
def test_epilogue_clamp_with_residual(rng, shape, kernel, groups):
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    w = rng.standard_normal((16, shape[1] // groups, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    pad = kernel // 2
    conv = reference.conv2d(x, w, b, 1, pad, 1, groups)
    res = rng.standard_normal(conv.shape).astype(np.float32)
    for clamp in [(0.0, 6.0), (-1.0, 1.0), True]:
        got = _conv_forward_fused(2, x, w, b, 1, pad, 1, groups, clamp, res)
        lo, hi = (0.0, np.inf) if clamp is True else clamp
        want = reference.hardtanh(conv + res, lo, hi)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.nanmax(np.abs(want)))
        # NaN propagates through the clamp (assert_allclose matched the NaN places)
        assert np.isnan(got[0, :, 0, 0]).any()


@pytest.mark.parametrize("nd", [1, 3])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_fuse_folds_batch_norm_1d_and_3d(rng, nd, data_format):
    conv, bn = getattr(nn, f"Conv{nd}d"), getattr(nn, f"BatchNorm{nd}d")
    kw = dict(dtype=np.float64, data_format=data_format)
    model = nn.Sequential(conv(2, 5, 3, padding=1, **kw), bn(5, **kw), nn.ReLU6(),
                          conv(5, 3, 1, **kw), bn(3, **kw), nn.Hardtanh(-0.5, 0.5))
    for m in model.modules():
        if isinstance(m, bn):
            m.running_mean = rng.standard_normal(m.num_features)
            m.running_var = rng.random(m.num_features) + 0.5
            m.weight.data = rng.standard_normal(m.num_features)
    spatial = (7,) * nd
    x = rng.standard_normal((2,) + (spatial + (2,) if data_format == "channels_last"
                                    else (2,) + spatial)) * 3
    want = model.eval()(x)
    fused = model.fuse()
    assert [type(m).__name__ for m in fused.module.children()] == \
        ["FusedConv2d", "Folded", "Folded"] * 2
    np.testing.assert_allclose(fused(x), want, rtol=1e-12, atol=1e-12)
    assert np.abs(want).max() == 0.5   # the clamp is active


# ------------------------------------------------------------------ tanh

TANH_SPECIALS = [0.0, -0.0, 1e-30, -1e-45, 1e-4, 0.6249999, 0.625, 0.6250001, -0.625, 1.0,
                 9.0, 9.01, 9.1, -9.2, 20.0, 88.0, 1e30, np.inf, -np.inf, np.nan]


def _ulps(got, x):
    """|got - tanh(x)| in units of the float32 spacing at the exact value."""
    exact = np.tanh(x.astype(np.float64))
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def test_tanh_kernel_float32_within_3_ulp():
    """The float32 kernel over a dense sweep of [-12, 12] (both sides of the
    0.625 switch between its series and its exp form), random values and
    the special values: within 3 ulp of the exact tanh, -0.0 kept, +-inf to
    +-1, NaN kept."""
    from cnnfast._ops.activation import tanh
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-12, 12, 400_001, dtype=np.float32),
                        (rng.standard_normal(100_000) * 3).astype(np.float32),
                        np.float32(TANH_SPECIALS)])
    y = tanh(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    finite = np.isfinite(x)
    assert _ulps(y[finite], x[finite]).max() <= 3
    assert np.array_equal(y[np.isinf(x)], np.sign(x[np.isinf(x)]))
    assert np.isnan(y[np.isnan(x)]).all()
    assert np.signbit(y[x == 0]).tolist() == np.signbit(x[x == 0]).tolist()
    assert np.all(np.abs(y[~np.isnan(x)]) <= 1)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 33, 100_003])
def test_tanh_kernel_lengths_threads_and_float64(n):
    """Every tail length of the vector loop, one and two threads giving the
    same bits; float64 through libm's tanh, as NumPy to rounding."""
    from cnnfast._ext import _elementwise
    rng = np.random.default_rng(n)
    for dtype in DTYPES:
        x = (rng.standard_normal(n) * 2).astype(dtype)
        ys = []
        for threads in (1, 2):
            y = np.full(n, 7, dtype)
            _elementwise.tanh(x, y, threads)
            ys.append(y)
        assert np.array_equal(ys[0], ys[1])
        tol = 4e-7 if dtype == np.float32 else 1e-15
        np.testing.assert_allclose(ys[0], np.tanh(x), rtol=tol, atol=0)


@pytest.mark.parametrize("layout", ["c", "f", "strided"])
def test_tanh_layer_on_the_kernel_any_layout(layout):
    """nn.Tanh (and its backward) for any input layout; the input unchanged."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, 6, 9, 10)).astype(np.float32) * 2
    x = {"c": base, "f": np.asfortranarray(base), "strided": base[:, ::2, :, ::3]}[layout]
    before = x.copy()
    m = nn.Tanh()
    y = m(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert _ulps(y, x).max() <= 3
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(m.backward(g), g * (1 - y * y), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(x, before)
    # other dtypes keep NumPy's path and dtype
    assert m(base.astype(np.float16)).dtype == np.float16
