"""Padding forms and padding modes (issue 17): convolution padding as
(before, after) pairs, "causal", padding_mode="reflect"/"replicate"/"circular"
(forward, backward, layers), and pooling padding "valid"/"same"/pairs.

Oracles: cnnfast.reference; torch (optional) through F.pad + an unpadded op;
finite differences in float64; TensorFlow's "same" rule written out here
independently of cnnfast._validation."""
import itertools

import numpy as np
import pytest

import cnnfast
from cnnfast import functional as F, nn, reference as R
from cnnfast._ops.conv_validation import conv_geometry
from helpers import numeric_gradient, tolerance

MODES = ["zeros", "reflect", "replicate", "circular"]
NP_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
SPATIAL = {1: (9,), 2: (7, 8), 3: (5, 6, 7)}


def _paddings(nd):
    forms = [1, tuple((2, 1) if i % 2 else (0, 2) for i in range(nd)), "same", "valid"]
    return forms + (["causal"] if nd == 1 else [])


def _arrays(nd, n, c, k, groups, dtype, seed=0, kernel=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c) + SPATIAL[nd]).astype(dtype)
    w = rng.standard_normal((k, c // groups) + (kernel,) * nd).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    return x, w, b


def _pads(nd, x, w, stride, padding, dilation=1):
    geom = conv_geometry(nd, x, w, None, stride, padding, dilation)
    return geom.pad_before, geom.pad_after


# -------------------------------------------------------------- convolution

CONV_CASES = [
    # (n, c, k, groups): few channels (pixels in lanes), many (channels in
    # lanes / GEMM), grouped
    (2, 3, 4, 1), (3, 8, 40, 1), (2, 4, 6, 2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_padding_matches_reference(nd, mode, algorithm, dtype):
    for (n, c, k, groups), padding, stride in itertools.product(CONV_CASES, _paddings(nd),
                                                               (1, 2)):
        x, w, b = _arrays(nd, n, c, k, groups, dtype)
        conv = getattr(F, f"conv{nd}d")
        args = (stride, padding, 1, groups)
        y = conv(x, w, b, *args, algorithm=algorithm, padding_mode=mode)
        want = getattr(R, f"conv{nd}d")(x, w, b, *args, padding_mode=mode)
        tol = tolerance(dtype, c // groups * 3 ** nd)
        assert y.dtype == dtype and y.shape == want.shape
        np.testing.assert_allclose(y, want, atol=tol, rtol=0,
                                   err_msg=f"{padding=} {stride=} {n, c, k, groups}")
        go = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
        got = getattr(F, f"conv{nd}d_backward")(go, x, w, *args, algorithm=algorithm,
                                                padding_mode=mode)
        ref = getattr(R, f"conv{nd}d_backward")(go, x, w, *args, padding_mode=mode)
        for name, g, r in zip(("x", "weight", "bias"), got, ref):
            red = k * 3 ** nd * 4 if name == "x" else go.size // k + 1
            np.testing.assert_allclose(g, r, atol=tolerance(dtype, red), rtol=0,
                                       err_msg=f"grad {name} {padding=} {stride=}")


@pytest.mark.parametrize("mode", MODES)
def test_conv_padding_batch_paths(mode):
    """Many small images (where auto tiles images or stacks the batch) and a
    kernel covering the padded input: the same results as the reference."""
    for n, c, k, size, kernel in ((16, 6, 16, (6, 6), 3), (20, 2, 12, (4, 5), 3),
                                  (8, 3, 5, (3, 3), 3)):
        rng = np.random.default_rng(3)
        x = rng.standard_normal((n, c) + size)
        w = rng.standard_normal((k, c, kernel, kernel))
        for padding in (1, ((1, 0), (0, 1)), "same"):
            y = F.conv2d(x, w, None, 1, padding, padding_mode=mode)
            np.testing.assert_allclose(y, R.conv2d(x, w, None, 1, padding, padding_mode=mode),
                                       atol=1e-12, rtol=0)
            go = rng.standard_normal(y.shape)
            for g, r in zip(F.conv2d_backward(go, x, w, 1, padding, padding_mode=mode),
                            R.conv2d_backward(go, x, w, 1, padding, padding_mode=mode)):
                np.testing.assert_allclose(g, r, atol=1e-11, rtol=0)


def test_plan_routes_non_zero_modes_through_padded_copies():
    """The images-in-the-tile forward pads with zeros only: a non-zero mode
    runs the position-tiled kernel; its input gradient is planned on the
    padded input (folded back afterwards)."""
    x_shape, w_shape = (64, 6, 10, 10), (16, 6, 5, 5)
    zeros = F.explain_conv(x_shape, w_shape, padding=2, threads=1)
    assert zeros.passes["forward"].kernel == "direct_lanes_batch"
    plan = F.explain_conv(x_shape, w_shape, padding=2, padding_mode="reflect", threads=1)
    assert plan.passes["forward"].kernel != "direct_lanes_batch"
    assert plan.out_shape == zeros.out_shape == (64, 16, 10, 10)
    # no padding at all: every mode is zero padding
    assert conv_geometry(2, np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), None, 1, 0, 1,
                         padding_mode="circular").pad_mode == "zeros"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_padding_matches_torch(nd, mode):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    for padding, stride, dilation in itertools.product(_paddings(nd), (1, 2), (1, 2)):
        x, w, b = _arrays(nd, 2, 4, 5, 1, np.float64, seed=5)
        before, after = _pads(nd, x, w, stride, padding, dilation)
        pads = [p for ba in reversed(list(zip(before, after))) for p in ba]
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        xp = tF.pad(xt, pads) if mode == "zeros" else tF.pad(xt, pads, mode=mode)
        yt = getattr(tF, f"conv{nd}d")(xp, wt, bt, stride, 0, dilation)
        go = np.random.default_rng(2).standard_normal(tuple(yt.shape))
        yt.backward(torch.tensor(go))
        y = getattr(F, f"conv{nd}d")(x, w, b, stride, padding, dilation, padding_mode=mode)
        np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-11, rtol=0,
                                   err_msg=f"{padding=} {stride=} {dilation=}")
        gx, gw, gb = getattr(F, f"conv{nd}d_backward")(go, x, w, stride, padding, dilation,
                                                       padding_mode=mode)
        np.testing.assert_allclose(gx, xt.grad.numpy(), atol=1e-11, rtol=0)
        np.testing.assert_allclose(gw, wt.grad.numpy(), atol=1e-10, rtol=0)
        np.testing.assert_allclose(gb, bt.grad.numpy(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_padding_mode_gradient_finite_differences(mode):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 4, 5))
    w = rng.standard_normal((3, 2, 3, 2))
    padding = ((2, 1), (1, 1))
    go = rng.standard_normal(F.conv2d(x, w, None, 2, padding, padding_mode=mode).shape)

    def loss():
        return float((F.conv2d(x, w, None, 2, padding, padding_mode=mode) * go).sum())

    gx, gw, _ = F.conv2d_backward(go, x, w, 2, padding, padding_mode=mode)
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), atol=1e-7, rtol=0)
    np.testing.assert_allclose(gw, numeric_gradient(loss, w), atol=1e-7, rtol=0)


def test_causal_conv1d():
    """Keras' causal convolution: output t sees inputs <= t only, length kept."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 12))
    w = rng.standard_normal((4, 3, 3))
    y = F.conv1d(x, w, None, 1, "causal", 2)
    assert y.shape == (2, 4, 12)
    np.testing.assert_allclose(y, F.conv1d(x, w, None, 1, ((4, 0),), 2), atol=1e-12)
    x2 = x.copy()
    x2[..., 7:] += 1.0                      # the future changes ...
    np.testing.assert_array_equal(F.conv1d(x2, w, None, 1, "causal", 2)[..., :7], y[..., :7])
    np.testing.assert_allclose(F.conv1d(x, w, None, 1, "causal", padding_mode="replicate"),
                               R.conv1d(x, w, None, 1, "causal", padding_mode="replicate"),
                               atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_conv_padding_edge_sizes(mode):
    """Padding as large as each mode allows, N == 0, input width 1."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal((2, 1, 3, 3))
    limit = {"reflect": 3, "circular": 4}.get(mode, 6)      # input is 4 x 5
    x = rng.standard_normal((1, 1, 4, 5))
    y = F.conv2d(x, w, None, 1, ((limit, limit), (0, 1)), padding_mode=mode)
    np.testing.assert_allclose(y, R.conv2d(x, w, None, 1, ((limit, limit), (0, 1)),
                                           padding_mode=mode), atol=1e-12)
    empty = np.zeros((0, 1, 4, 5))
    assert F.conv2d(empty, w, None, 1, 1, padding_mode=mode).shape == (0, 2, 4, 5)
    gx, gw, gb = F.conv2d_backward(np.zeros((0, 2, 4, 5)), empty, w, 1, 1, padding_mode=mode)
    assert gx.shape == (0, 1, 4, 5) and not gw.any() and not gb.any()
    if mode != "reflect":
        x1 = rng.standard_normal((2, 1, 1, 1))
        np.testing.assert_allclose(F.conv2d(x1, w, None, 1, 1, padding_mode=mode),
                                   R.conv2d(x1, w, None, 1, 1, padding_mode=mode), atol=1e-12)


def test_conv_padding_mode_any_input_layout():
    rng = np.random.default_rng(11)
    base = rng.standard_normal((3, 4, 9, 10)).astype(np.float32)
    w = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    want = F.conv2d(np.ascontiguousarray(base), w, None, 1, 2, padding_mode="reflect")
    for x in (np.asfortranarray(base), base[:, :, ::-1][:, :, ::-1],
              base.astype(">f4"), np.require(base, requirements="W")):
        np.testing.assert_array_equal(F.conv2d(x, w, None, 1, 2, padding_mode="reflect"), want)


@pytest.mark.parametrize("mode", MODES)
def test_conv_layer_padding_mode_matches_torch(mode):
    torch = pytest.importorskip("torch")
    for padding in (1, "same", ((1, 2), (0, 1))):
        layer = nn.Conv2d(3, 5, 3, padding=padding, padding_mode=mode, dtype=np.float64)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 6, 7))
        y = layer(x)
        before, after = _pads(2, x, layer.weight.data, 1, padding)
        pads = [p for ba in reversed(list(zip(before, after))) for p in ba]
        xt = torch.tensor(x, requires_grad=True)
        xp = (torch.nn.functional.pad(xt, pads) if mode == "zeros"
              else torch.nn.functional.pad(xt, pads, mode=mode))
        yt = torch.nn.functional.conv2d(xp, torch.tensor(layer.weight.data),
                                        torch.tensor(layer.bias.data))
        np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
        go = rng.standard_normal(y.shape)
        gx = layer.backward(go)
        yt.backward(torch.tensor(go))
        np.testing.assert_allclose(gx, xt.grad.numpy(), atol=1e-12)
    if mode != "zeros" and isinstance(padding, str):
        # torch's own layer with the same arguments
        t = torch.nn.Conv2d(3, 5, 3, padding="same", padding_mode=mode, dtype=torch.float64)
        ours = nn.Conv2d(3, 5, 3, padding="same", padding_mode=mode, dtype=np.float64)
        ours.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
        np.testing.assert_allclose(ours(x), t(torch.tensor(x)).detach().numpy(), atol=1e-12)
    assert (f"padding_mode={mode!r}" in repr(layer)) == (mode != "zeros")


@pytest.mark.parametrize("op", ["conv1d", "conv2d", "conv3d"])
@pytest.mark.parametrize("mod", [F, R], ids=["functional", "reference"])
def test_conv_padding_validation(mod, op):
    nd = int(op[4])
    x, w, b = _arrays(nd, 1, 2, 2, 1, np.float64)
    n = SPATIAL[nd][-1]
    last = lambda p: (0,) * (nd - 1) + (p,)   # noqa: E731
    pair_last = lambda p: ((0, 0),) * (nd - 1) + (p,)   # noqa: E731
    conv, back = getattr(mod, op), getattr(mod, op + "_backward")
    go = np.zeros((1, 2) + SPATIAL[nd])
    for call in (lambda **k: conv(x, w, b, **k), lambda **k: back(go, x, w, **k)):
        with pytest.raises(ValueError, match=r"padding_mode must be one of \('zeros', "
                                             r"'reflect', 'replicate', 'circular'\), "
                                             r"got 'mirror'"):
            call(padding=1, padding_mode="mirror")
        with pytest.raises(TypeError, match="padding_mode must be a str, got int 1"):
            call(padding=1, padding_mode=1)
        with pytest.raises(ValueError, match=rf"{op}: padding_mode='reflect' needs each "
                                             rf"padding smaller than the input size"):
            call(padding=pair_last((0, n)), padding_mode="reflect")
        with pytest.raises(ValueError, match=rf"{op}: padding_mode='circular' needs each "
                                             rf"padding at most the input size"):
            call(padding=pair_last((n + 1, 0)), padding_mode="circular")
        with pytest.raises(ValueError, match=r"padding pairs must be \(before, after\)"):
            call(padding=((1, 2, 3),) * nd)
        with pytest.raises(ValueError, match=r"padding must be >= 0"):
            call(padding=pair_last((-1, 0)))
        with pytest.raises(TypeError, match=r"padding must be an int or a tuple"):
            call(padding=pair_last((1.5, 0)))
        if nd > 1:
            with pytest.raises(ValueError, match=r"padding='causal' is for conv1d only"):
                call(padding="causal")
    # the largest valid sizes
    assert conv(x, w, b, padding=pair_last((n - 1, n - 1)), padding_mode="reflect").shape[-1] \
        == 2 * n - 2 + n - 2
    assert conv(x, w, b, padding=last(n), padding_mode="circular").shape[-1] == 3 * n - 2
    assert conv(x, w, b, stride=2, padding="same", padding_mode="reflect").shape[-1] == -(-n // 2)


def test_conv_layer_padding_validation():
    for bad, exc, what in [(dict(padding="causal"), ValueError, "causal"),
                           (dict(padding=((1, 2), (3,))), ValueError, "pairs"),
                           (dict(padding_mode="mirror"), ValueError, "padding_mode"),
                           (dict(padding_mode=None), TypeError, "padding_mode")]:
        with pytest.raises(exc, match=what):
            nn.Conv2d(2, 2, 3, **bad)
    assert nn.Conv2d(2, 2, 3, padding=((1, 1), (2, 2))).padding == (1, 2)
    assert nn.Conv2d(2, 2, 3, padding=((1, 0), (2, 2))).padding == ((1, 0), (2, 2))
    assert nn.Conv1d(2, 2, 3, padding="causal")(np.zeros((1, 2, 5), np.float32)).shape == (
        1, 2, 5)


# ---------------------------------------------------------------- pooling

def tf_same(n, k, s, d):
    """TensorFlow's SAME padding of one dim: (before, after)."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _expected_pool(kind, x, kernel, stride, pads, dilation=None, count_pad=False):
    """Pooling written out with explicit windows: pads are (before, after)
    per dim; avg divides by the input elements of each window (or the
    padded window with count_pad); max fills the padding with -inf."""
    nd = len(kernel)
    dilation = dilation or (1,) * nd
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0)] + list(pads), constant_values=fill)
    ones = np.pad(np.ones(x.shape[2:]), list(pads))
    out_size = [(n + b + a - (k - 1) * d - 1) // s + 1
                for n, (b, a), k, s, d in zip(x.shape[2:], pads, kernel, stride, dilation)]
    out = np.empty(x.shape[:2] + tuple(out_size))
    for o in np.ndindex(*out_size):
        window = tuple(slice(i * s, i * s + (k - 1) * d + 1, d)
                       for i, s, k, d in zip(o, stride, kernel, dilation))
        taps = xp[(Ellipsis,) + window]
        if kind == "max":
            out[(Ellipsis,) + o] = taps.reshape(x.shape[:2] + (-1,)).max(-1)
        else:
            count = taps[0, 0].size if count_pad else ones[window].sum()
            out[(Ellipsis,) + o] = taps.reshape(x.shape[:2] + (-1,)).sum(-1) / count
    return out


POOL_SHAPES = {1: (11,), 2: (7, 10), 3: (5, 6, 7)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_pool_same_is_tensorflows(nd, kind, dtype):
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((2, 3) + POOL_SHAPES[nd]).astype(dtype)
    for k, s, d in itertools.product((1, 2, 3), (1, 2, 3), (1, 2) if kind == "max" else (1,)):
        kernel, stride, dil = (k,) * nd, (s,) * nd, (d,) * nd
        pads = [tf_same(n, k, s, d) for n in x.shape[2:]]
        want = _expected_pool(kind, x.astype(np.float64), kernel, stride, pads, dil)
        assert want.shape[2:] == tuple(-(-n // s) for n in x.shape[2:])
        for mod in (F, R):
            if kind == "max":
                y, idx = getattr(mod, f"max_pool{nd}d")(x, k, s, "same", d, ceil_mode=True,
                                                        return_indices=True)
                np.testing.assert_array_equal(y, want.astype(dtype))
                np.testing.assert_array_equal(
                    np.take_along_axis(x.reshape(2, 3, -1), idx.reshape(2, 3, -1), -1),
                    y.reshape(2, 3, -1))
                go = rng.standard_normal(y.shape).astype(dtype)
                g = getattr(mod, f"max_pool{nd}d_backward")(go, idx, x.shape)
                np.testing.assert_allclose(
                    g, R.max_pool1d_backward.__globals__["_scatter_max"](go, idx, x.shape,
                                                                        dtype), atol=1e-6)
            else:
                # count_include_pad does not count "same" padding (TensorFlow)
                for cip in (True, False):
                    y = getattr(mod, f"avg_pool{nd}d")(x, k, s, "same", count_include_pad=cip)
                    np.testing.assert_allclose(y, want, atol=tolerance(dtype, k ** nd),
                                               rtol=0)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_avg_pool_same_backward_finite_differences(nd):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2) + tuple(n // 2 + 1 for n in POOL_SHAPES[nd]))
    go = rng.standard_normal(getattr(F, f"avg_pool{nd}d")(x, 3, 2, "same").shape)

    def loss():
        return float((getattr(F, f"avg_pool{nd}d")(x, 3, 2, "same") * go).sum())

    for mod in (F, R):
        g = getattr(mod, f"avg_pool{nd}d_backward")(go, x.shape, 3, 2, "same")
        np.testing.assert_allclose(g, numeric_gradient(loss, x), atol=1e-8, rtol=0)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_pool_pairs_match_torch(nd):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3) + POOL_SHAPES[nd])
    pairs = tuple(((0, 2), (2, 1), (1, 0))[:nd])
    pads = [p for ba in reversed(pairs) for p in ba]
    xt = torch.tensor(x)
    # max: padding with -inf, then an unpadded pool
    want = getattr(tF, f"max_pool{nd}d")(tF.pad(xt, pads, value=-float("inf")), 3, 2)
    np.testing.assert_array_equal(F.__dict__[f"max_pool{nd}d"](x, 3, 2, pairs),
                                  want.numpy())
    # avg counting the padding: padding with zeros, then an unpadded pool
    want = getattr(tF, f"avg_pool{nd}d")(tF.pad(xt, pads), 3, 2)
    for mod in (F, R):
        np.testing.assert_allclose(getattr(mod, f"avg_pool{nd}d")(x, 3, 2, pairs),
                                   want.numpy(), atol=1e-12)
        # not counting it: the explicit windows
        np.testing.assert_allclose(
            getattr(mod, f"avg_pool{nd}d")(x, 3, 2, pairs, count_include_pad=False),
            _expected_pool("avg", x, (3,) * nd, (2,) * nd, pairs), atol=1e-12)
    # symmetric pairs are torch's ints, with ceil_mode too
    sym = ((1, 1),) * nd
    for ceil_mode, cip in itertools.product((False, True), (False, True)):
        want = getattr(tF, f"avg_pool{nd}d")(xt, 3, 2, 1, ceil_mode, cip)
        np.testing.assert_allclose(F.__dict__[f"avg_pool{nd}d"](x, 3, 2, sym, ceil_mode, cip),
                                   want.numpy(), atol=1e-12)
        y, idx = F.__dict__[f"max_pool{nd}d"](x, 3, 2, sym, 1, ceil_mode, True)
        ty, tidx = getattr(tF, f"max_pool{nd}d")(xt, 3, 2, 1, 1, ceil_mode, True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_pairs_backward_matches_reference(kind):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 7, 9))
    pairs = ((2, 0), (0, 3))      # more than half the kernel: valid for pairs
    for ceil_mode in (False, True):
        if kind == "max":
            y, idx = F.max_pool2d(x, 3, 2, pairs, 1, ceil_mode, True)
            ry, ridx = R.max_pool2d(x, 3, 2, pairs, 1, ceil_mode, True)
            np.testing.assert_array_equal(y, ry)
            np.testing.assert_array_equal(idx, ridx)
            continue
        for cip in (True, False):
            y = F.avg_pool2d(x, 3, 2, pairs, ceil_mode, cip)
            np.testing.assert_allclose(y, R.avg_pool2d(x, 3, 2, pairs, ceil_mode, cip),
                                       atol=1e-12)
            go = rng.standard_normal(y.shape)
            np.testing.assert_allclose(
                F.avg_pool2d_backward(go, x.shape, 3, 2, pairs, ceil_mode, cip),
                R.avg_pool2d_backward(go, x.shape, 3, 2, pairs, ceil_mode, cip), atol=1e-12)


def test_pool_same_with_dilation_pads_past_half_the_kernel():
    x = np.arange(10.0).reshape(1, 1, 10)
    assert tf_same(10, 2, 1, 3) == (1, 2)             # 2 > kernel_size // 2
    y = F.max_pool1d(x, 2, 1, "same", 3)
    np.testing.assert_array_equal(
        y, _expected_pool("max", x, (2,), (1,), [(1, 2)], (3,)))
    np.testing.assert_array_equal(R.max_pool1d(x, 2, 1, "same", 3), y)


@pytest.mark.parametrize("mod", [F, R], ids=["functional", "reference"])
def test_pool_padding_validation(mod):
    x = np.zeros((1, 1, 6, 6))
    with pytest.raises(ValueError, match=r"max_pool2d: padding=\(\(3, 0\), \(0, 0\)\) makes "
                                         r"window 0 of spatial dim 0 .* consist only of "
                                         r"padding"):
        mod.max_pool2d(x, 3, 1, ((3, 0), (0, 0)))
    with pytest.raises(ValueError, match="consist only of padding"):
        mod.avg_pool2d(x, 2, 2, ((0, 0), (0, 3)), ceil_mode=True)
    with pytest.raises(ValueError, match="consist only of padding"):
        # taps at -1 and 1 of a length-1 input: the dilation steps over it
        mod.max_pool1d(np.zeros((1, 1, 1)), 2, 2, 1, 2)
    with pytest.raises(ValueError, match=r"avg_pool2d: padding must be an int, .* 'valid' or "
                                         r"'same', got 'SAME'"):
        mod.avg_pool2d(x, 2, padding="SAME")
    with pytest.raises(ValueError, match=r"padding must be at most half of kernel_size"):
        mod.max_pool2d(x, 2, padding=2)                 # ints: torch's rule
    with pytest.raises(ValueError, match=r"padding pairs must be \(before, after\)"):
        mod.max_pool2d(x, 2, padding=((1,), (1,)))
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        mod.max_pool2d(x, 2, padding=((1, -1), (0, 0)))
    assert mod.max_pool2d(x, 3, 1, ((2, 0), (0, 2))).shape == (1, 1, 6, 6)
    assert mod.avg_pool2d(x, 3, 2, "valid").shape == (1, 1, 2, 2)
    g = mod.avg_pool2d_backward(np.ones((1, 1, 3, 3)), x.shape, 3, 2, "same")
    assert g.shape == x.shape
    with pytest.raises(ValueError, match="consist only of padding"):
        mod.avg_pool2d_backward(np.ones((1, 1, 3, 3)), x.shape, 2, 1, ((2, 0), (0, 0)))


def test_pool_layers_take_every_padding_form():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    pool = nn.MaxPool2d(2, padding="same")
    y = pool(x)
    assert y.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(y, F.max_pool2d(x, 2, None, "same"))
    g = pool.backward(np.ones_like(y))
    assert g.shape == x.shape and g.sum() == y.size
    avg = nn.AvgPool2d(3, 2, padding=((1, 1), (0, 2)))
    assert avg.padding == ((1, 1), (0, 2))
    y = avg(x)
    want = torch.nn.functional.avg_pool2d(
        torch.nn.functional.pad(torch.tensor(x), [0, 2, 1, 1]), 3, 2)
    np.testing.assert_allclose(y, want.numpy(), atol=1e-6)
    assert avg.backward(np.ones_like(y)).shape == x.shape
    assert nn.AvgPool2d(3, 2, padding=((1, 1), (1, 1))).padding == (1, 1)
    with pytest.raises(ValueError, match="padding"):
        nn.MaxPool2d(2, padding="full")
    with pytest.raises(ValueError, match="at most half"):
        nn.AvgPool2d(2, padding=2)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_padding_mode_pointwise_threads_and_repeats(mode):
    """A 1x1 kernel with padding (the GEMM packs from the padded copy), and
    the same result run to run and for 1 or 2 threads (to rounding)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 16, 9, 11)).astype(np.float32)
    w = rng.standard_normal((24, 16, 1, 1)).astype(np.float32)
    for algorithm in ("1x1", "auto", "im2col"):
        y = F.conv2d(x, w, None, 1, ((2, 1), (0, 3)), algorithm=algorithm, padding_mode=mode)
        np.testing.assert_allclose(y, R.conv2d(x, w, None, 1, ((2, 1), (0, 3)),
                                               padding_mode=mode), atol=1e-4, rtol=0)
    w3 = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    go = rng.standard_normal(F.conv2d(x, w3, None, 1, 2, padding_mode=mode).shape).astype(
        np.float32)
    results = {}
    for threads in (1, 2, 2):
        with cnnfast.num_threads(threads):
            got = (F.conv2d(x, w3, None, 1, 2, padding_mode=mode),) + F.conv2d_backward(
                go, x, w3, 1, 2, padding_mode=mode)
        if threads in results:   # repeat: bit-identical
            for a, b in zip(got, results[threads]):
                np.testing.assert_array_equal(a, b)
        results[threads] = got
    for a, b in zip(results[1], results[2]):
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("nd", [1, 3])
def test_pool_layers_1d_3d_match_torch(nd):
    """nn.MaxPool1d/3d and nn.AvgPool1d/3d: torch's layers, and the padding
    forms of the functional ops."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((2, 3) + POOL_SHAPES[nd])
    xt = torch.tensor(x, requires_grad=True)
    for ours, theirs in (
            (getattr(nn, f"MaxPool{nd}d")(3, 2, 1, ceil_mode=True),
             getattr(torch.nn, f"MaxPool{nd}d")(3, 2, 1, ceil_mode=True)),
            (getattr(nn, f"AvgPool{nd}d")(3, 2, 1, count_include_pad=False),
             getattr(torch.nn, f"AvgPool{nd}d")(3, 2, 1, count_include_pad=False))):
        y, yt = ours(x), theirs(xt)
        np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
        go = rng.standard_normal(y.shape)
        xt.grad = None
        yt.backward(torch.tensor(go))
        np.testing.assert_allclose(ours.backward(go), xt.grad.numpy(), atol=1e-12)
    same = getattr(nn, f"AvgPool{nd}d")(2, 3, padding="same")
    np.testing.assert_allclose(same(x), getattr(F, f"avg_pool{nd}d")(x, 2, 3, "same"))
    assert same.backward(np.ones_like(same(x))).shape == x.shape
    with pytest.raises(ValueError, match="kernel_size"):
        getattr(nn, f"MaxPool{nd}d")((2,) * (nd + 1))


@pytest.mark.parametrize("mode", MODES)
def test_fuse_keeps_padding_mode_and_batchnorm_without_bias(mode):
    """Module.fuse() folds Conv2d(padding_mode=...) -> BatchNorm2d(bias=False)
    -> ReLU into one convolution with the same padding mode."""
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=((1, 2), (2, 0)), padding_mode=mode,
                                    dtype=np.float64),
                          nn.BatchNorm2d(8, bias=False, dtype=np.float64), nn.ReLU())
    bn = model[1]
    bn.running_mean = rng.standard_normal(8)
    bn.running_var = rng.uniform(0.5, 2, 8)
    bn.weight.data[:] = rng.uniform(0.5, 2, 8)
    x = rng.standard_normal((2, 3, 7, 6))
    want = model.eval()(x)
    np.testing.assert_allclose(model.fuse()(x), want, atol=1e-12)
