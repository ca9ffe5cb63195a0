"""Transposed convolution (conv_transpose1d/2d/3d, their backward and the
nn.ConvTranspose layers) against the NumPy reference, finite differences, the
adjoint identity with conv, and (when installed) torch, for every algorithm
and both dtypes."""
import numpy as np
import pytest
from helpers import numeric_gradient, tolerance

import cnnfast
from cnnfast import nn, reference

FORWARD = {1: cnnfast.conv_transpose1d, 2: cnnfast.conv_transpose2d,
           3: cnnfast.conv_transpose3d}
BACKWARD = {1: cnnfast.conv_transpose1d_backward, 2: cnnfast.conv_transpose2d_backward,
            3: cnnfast.conv_transpose3d_backward}
REF_FORWARD = {1: reference.conv_transpose1d, 2: reference.conv_transpose2d,
               3: reference.conv_transpose3d}
REF_BACKWARD = {1: reference.conv_transpose1d_backward, 2: reference.conv_transpose2d_backward,
                3: reference.conv_transpose3d_backward}
DTYPES = [np.float32, np.float64]
ALGORITHMS = ["auto", "direct", "im2col"]

# (N, C_in, spatial, C_out, kernel, stride, padding, output_padding, groups, dilation)
CASES = [
    (2, 4, (5, 7), 6, (3, 3), 2, 1, 1, 1, 1),              # odd sizes, output_padding
    (1, 6, (4, 4), 4, (4, 4), 2, 1, 0, 2, 1),              # DCGAN-like k4 s2 p1, groups
    (3, 4, (5, 5), 4, (3, 3), 1, 0, 0, 1, 2),              # dilation
    (2, 4, (3, 3), 2, (3, 3), 1, 0, 1, 1, 2),              # output_padding >= stride (< dilation)
    (2, 8, (1, 1), 8, (4, 4), 1, 0, 0, 1, 1),              # DCGAN first layer: 1x1 -> 4x4
    (0, 4, (3, 3), 4, (3, 3), 2, 0, 0, 1, 1),              # empty batch
    (1, 3, (6, 5), 5, (2, 3), (2, 1), (0, 1), (1, 0), 1, 1),  # rectangular
    (2, 16, (6, 6), 24, (3, 3), 1, 1, 0, 1, 1),            # channels in lanes
    (2, 12, (7, 7), 16, (2, 2), 2, 0, 0, 1, 1),            # U-Net k2 s2
    (2, 8, (5, 6), 8, (3, 3), 2, 1, 1, 8, 1),              # depthwise
    (2, 5, (4, 5), 7, (1, 1), 2, 0, 1, 1, 1),              # 1x1 strided
    (2, 5, (4, 5), 7, (1, 1), 1, 0, 0, 1, 1),              # 1x1
    (2, 3, (5, 6), 4, (3, 3), 3, ((0, 2), (1, 0)), (2, 1), 1, 1),   # (before, after) pairs
    (1, 2, (4, 9), 3, (3, 5), (1, 3), (2, 1), (0, 2), 1, (2, 1)),
    (17, 6, (4, 4), 16, (3, 3), 2, 1, 1, 1, 1),            # many small images
]
CASES_1D = [
    (2, 3, (9,), 5, (3,), 2, 1, 1, 1, 1),
    (3, 4, (7,), 6, (4,), 3, ((1, 2),), 2, 2, 1),
    (0, 2, (5,), 3, (2,), 1, 0, 0, 1, 1),
    (2, 12, (10,), 16, (5,), 1, 2, 0, 1, 2),
]
CASES_3D = [
    (2, 3, (3, 4, 3), 4, (3, 3, 2), (2, 1, 2), 1, (1, 0, 0), 1, 1),
    (1, 4, (2, 3, 3), 4, (2, 2, 2), 2, 0, 0, 2, (1, 1, 1)),
    (2, 12, (3, 3, 3), 16, (3, 3, 3), 1, 1, 0, 1, 1),
]
ALL = ([(2,) + c for c in CASES] + [(1,) + c for c in CASES_1D]
       + [(3,) + c for c in CASES_3D])


def _make(rng, case, dtype):
    nd, N, C, spatial, K, kernel, stride, padding, output_padding, groups, dilation = case
    x = rng.standard_normal((N, C) + spatial).astype(dtype)
    w = rng.standard_normal((C, K // groups) + kernel).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    args = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                dilation=dilation)
    return nd, x, w, b, args


def _reduction(case):
    nd, N, C, spatial, K, kernel, *_, groups, _d = case
    return C // groups * int(np.prod(kernel))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL, ids=str)
def test_forward_and_backward_match_reference(rng, case, dtype, algorithm):
    nd, x, w, b, args = _make(rng, case, dtype)
    y = FORWARD[nd](x, w, b, **args, algorithm=algorithm)
    ref = REF_FORWARD[nd](x, w, b, **args)
    assert y.shape == ref.shape and y.dtype == dtype and y.flags.c_contiguous
    tol = tolerance(dtype, _reduction(case))
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    go = rng.standard_normal(y.shape).astype(dtype)
    got = BACKWARD[nd](go, x, w, **args, algorithm=algorithm)
    want = REF_BACKWARD[nd](go, x, w, **args)
    t = tolerance(dtype, case[4] * int(np.prod(case[5])) + max(1, x.shape[0]) * y.size)
    for name, g, r in zip(("x", "weight", "bias"), got, want):
        assert g.shape == r.shape and g.dtype == dtype, name
        np.testing.assert_allclose(g, r, rtol=t, atol=t, err_msg=name)


def _pairs(args):
    p = args["padding"]
    return isinstance(p, tuple) and bool(p) and isinstance(p[0], tuple)


@pytest.mark.parametrize("case", [c for c in ALL if not isinstance(c[7], tuple)
                                  or not isinstance(c[7][0], tuple)], ids=str)
def test_the_transpose_is_the_adjoint_of_conv(rng, case):
    """<conv_transpose(y), x> == <y, conv(x)> for the conv with the same
    stride, padding, dilation, groups and weight, in float64."""
    nd, y, w, _, args = _make(rng, case, np.float64)
    out = FORWARD[nd](y, w, **args)
    x = rng.standard_normal(out.shape)
    conv = getattr(cnnfast, f"conv{nd}d")
    cx = conv(x, w, stride=args["stride"], padding=args["padding"], dilation=args["dilation"],
              groups=args["groups"])
    # output_padding >= stride (allowed below the dilation) adds outputs no
    # input reaches; conv then has more outputs than y has positions
    assert cx.shape[:2] == y.shape[:2] and all(a >= b for a, b in zip(cx.shape, y.shape))
    cx = cx[tuple(slice(n) for n in y.shape)]
    np.testing.assert_allclose(np.vdot(out, x), np.vdot(y, cx), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [ALL[0], ALL[3], ALL[12], ALL[-5], ALL[-1]], ids=str)
def test_gradients_match_finite_differences(rng, case):
    nd, x, w, b, args = _make(rng, case, np.float64)
    x, w, b = x[:1] if x.shape[0] else x, w, b
    go = rng.standard_normal(FORWARD[nd](x, w, b, **args).shape)

    def loss():
        return float(np.vdot(go, FORWARD[nd](x, w, b, **args)))

    gx, gw, gb = BACKWARD[nd](go, x, w, **args)
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_gradient(loss, b), rtol=1e-6, atol=1e-7)


def test_need_selects_gradients(rng):
    nd, x, w, b, args = _make(rng, ALL[0], np.float64)
    go = rng.standard_normal(FORWARD[nd](x, w, b, **args).shape)
    full = BACKWARD[nd](go, x, w, **args)
    for need in (("x",), ("weight",), ("bias",), ("x", "bias")):
        got = BACKWARD[nd](go, x, w, **args, need=need)
        for name, g, f in zip(("x", "weight", "bias"), got, full):
            if name in need:
                np.testing.assert_array_equal(g, f)
            else:
                assert g is None


def test_layouts_give_the_bits_of_contiguous_calls(rng):
    nd, x, w, b, args = _make(rng, ALL[0], np.float32)
    want = FORWARD[nd](x, w, b, **args)
    for xx in (np.asfortranarray(x), x[:, :, ::-1, :][:, :, ::-1, :],
               x.astype(x.dtype.newbyteorder(">")), np.repeat(x, 2, axis=3)[:, :, :, ::2]):
        np.testing.assert_array_equal(FORWARD[nd](xx, w, b, **args), want)
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(FORWARD[nd](ro, w, b, **args), want)


# ------------------------------------------------------------- validation

@pytest.mark.parametrize("bad, error, match", [
    (dict(output_padding=2), ValueError, "output_padding must be smaller"),
    (dict(output_padding=(1, 2), stride=2), ValueError, "output_padding"),
    (dict(output_padding=-1), ValueError, "output_padding"),
    (dict(padding="same"), ValueError, "strings"),
    (dict(padding=((1, 2), (1,))), ValueError, "padding pairs"),
    (dict(padding=10), ValueError, "removes the whole output"),
    (dict(groups=3), ValueError, "divisible by groups"),
    (dict(stride=0), ValueError, "stride"),
    (dict(dilation=(1, 0)), ValueError, "dilation"),
    (dict(algorithm="fft"), ValueError, "algorithm"),
    (dict(algorithm="1x1"), ValueError, "1x1"),
])
def test_bad_arguments_name_the_argument(rng, bad, error, match):
    x = rng.standard_normal((2, 4, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    kw = dict(stride=1, padding=0, output_padding=0, groups=1, dilation=1)
    kw.update(bad)
    with pytest.raises(error, match=match):
        cnnfast.conv_transpose2d(x, w, **kw)
    with pytest.raises(error, match=match):
        reference.conv_transpose2d(x, w, **kw)


def test_channel_and_shape_mismatches(rng):
    x = rng.standard_normal((2, 4, 5, 5))
    with pytest.raises(ValueError, match="weight.shape\\[0\\]"):
        cnnfast.conv_transpose2d(x, rng.standard_normal((3, 3, 3, 3)))
    with pytest.raises(ValueError, match="bias must have shape \\(6,\\)"):
        cnnfast.conv_transpose2d(x, rng.standard_normal((4, 3, 3, 3)),
                                 rng.standard_normal(3), groups=2)
    with pytest.raises(ValueError, match="grad_out"):
        cnnfast.conv_transpose2d_backward(rng.standard_normal((2, 3, 6, 6)), x,
                                          rng.standard_normal((4, 3, 3, 3)))
    with pytest.raises(ValueError, match="4-D"):
        cnnfast.conv_transpose2d(x[0], rng.standard_normal((4, 3, 3, 3)))
    with pytest.raises(TypeError, match="dtype"):
        cnnfast.conv_transpose2d(x.astype(np.int32), rng.standard_normal((4, 3, 3, 3)))


# ---------------------------------------------------------------- layers

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_layer_forward_backward_and_state_dict(rng, nd):
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
    layer = cls(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dtype=np.float64)
    assert layer.weight.data.shape == (4, 3) + (3,) * nd
    assert set(layer.state_dict()) == {"weight", "bias"}
    x = rng.standard_normal((2, 4) + (4,) * nd)
    y = layer(x)
    assert y.shape == (2, 6) + (8,) * nd
    np.testing.assert_allclose(y, REF_FORWARD[nd](x, layer.weight.data, layer.bias.data,
                                                  stride=2, padding=1, output_padding=1,
                                                  groups=2), atol=1e-12)
    go = rng.standard_normal(y.shape)
    gx = layer.backward(go)
    rx, rw, rb = REF_BACKWARD[nd](go, x, layer.weight.data, stride=2, padding=1,
                                  output_padding=1, groups=2)
    np.testing.assert_allclose(gx, rx, atol=1e-10)
    np.testing.assert_allclose(layer.weight.grad, rw, atol=1e-10)
    np.testing.assert_allclose(layer.bias.grad, rb, atol=1e-10)
    other = cls(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dtype=np.float64)
    other.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(other(x), y)


def test_layer_output_size_follows_torchs_rule(rng):
    layer = nn.ConvTranspose2d(3, 2, 3, stride=3, padding=1, dtype=np.float64)
    x = rng.standard_normal((1, 3, 4, 4))
    assert layer(x).shape == (1, 2, 10, 10)
    for size in ((10, 10), (12, 11), (1, 2, 11, 12)):
        y = layer(x, output_size=size)
        assert y.shape[2:] == tuple(size[-2:])
        layer.backward(np.ones_like(y))     # the backward uses the same output padding
    for size in ((9, 10), (13, 10), (10,)):
        with pytest.raises(ValueError, match="output_size"):
            layer(x, output_size=size)
    with pytest.raises(TypeError, match="output_size"):
        layer(x, output_size=10.5)


def test_layer_freeze_and_bad_constructor_arguments():
    layer = nn.ConvTranspose2d(4, 4, 2, stride=2, bias=False)
    assert layer.bias is None and "bias=False" in repr(layer)
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(4, 4, 3, stride=1, output_padding=1)
    with pytest.raises(ValueError, match="groups"):
        nn.ConvTranspose2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.ConvTranspose2d(4, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="strings"):
        nn.ConvTranspose2d(4, 4, 3, padding="same")


def test_layer_trains_in_a_sequential(rng):
    """A two-layer decoder's loss goes down under SGD (the layer's gradients
    are the ones the optimizer needs)."""
    from cnnfast.optim import SGD
    model = nn.Sequential(nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1))
    x = rng.standard_normal((8, 4, 4, 4)).astype(np.float32)
    target = rng.standard_normal((8, 1, 16, 16)).astype(np.float32)
    opt = SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        y = model(x)
        losses.append(float(((y - target) ** 2).mean()))
        model.backward(2 * (y - target) / y.size)
        opt.step()
    assert losses[-1] < 0.9 * losses[0]


# ---------------------------------------------------------------- torch

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL, ids=str)
def test_matches_torch(rng, case, dtype):
    torch = pytest.importorskip("torch")
    nd, x, w, b, args = _make(rng, case, dtype)
    if _pairs(args):
        pytest.skip("torch has no asymmetric padding for transposed convolutions")
    fn = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = fn(xt, wt, bt, **args)
    y = FORWARD[nd](x, w, b, **args)
    tol = tolerance(dtype, _reduction(case))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    go = rng.standard_normal(y.shape).astype(dtype)
    if x.shape[0]:
        yt.backward(torch.tensor(go))
        got = BACKWARD[nd](go, x, w, **args)
        t = tolerance(dtype, case[4] * int(np.prod(case[5])) + x.shape[0] * y.size)
        for g, ref in zip(got, (xt.grad, wt.grad, bt.grad)):
            np.testing.assert_allclose(g, ref.numpy(), rtol=t, atol=t)


def test_layer_matches_torch_layer(rng):
    torch = pytest.importorskip("torch")
    ours = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2,
                              dilation=1, dtype=np.float64)
    theirs = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1,
                                      groups=2).double()
    assert tuple(theirs.weight.shape) == ours.weight.data.shape
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.data))
        theirs.bias.copy_(torch.tensor(ours.bias.data))
    x = rng.standard_normal((2, 6, 5, 5))
    np.testing.assert_allclose(ours(x, output_size=(10, 10)),
                               theirs(torch.tensor(x), output_size=(10, 10)).detach().numpy(),
                               atol=1e-12)


# The bias is added by the input-gradient driver (per chunk of channels in
# the GEMM's items, after the other kernels): every kernel, stacked small
# planes, batch 1 on several threads, Winograd.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm, x_shape, w_shape, args", [
    ("winograd", (2, 8, 6, 7), (8, 5, 3, 3), dict(padding=1)),
    ("auto", (12, 6, 4, 4), (6, 5, 3, 3), dict(stride=2, padding=1)),      # stacked
    ("im2col", (1, 9, 5, 5), (9, 7, 4, 4), dict(stride=2, padding=1)),      # channel chunks
    ("direct", (1, 16, 6, 6), (16, 24, 3, 3), dict(padding=1)),             # channels in lanes
    ("direct", (2, 6, 5, 5), (6, 4, 3, 3), dict(stride=2)),                 # polyphase
    ("auto", (3, 6, 5, 5), (6, 4, 1, 1), {}),                               # pointwise
])
def test_bias_is_added_by_every_input_gradient_kernel(rng, algorithm, x_shape, w_shape, args,
                                                      dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[1]).astype(dtype)
    for threads in (1, 2, 3):
        with cnnfast.num_threads(threads):
            got = cnnfast.conv_transpose2d(x, w, b, **args, algorithm=algorithm)
        want = reference.conv_transpose2d(x, w, b, **args)
        t = tolerance(dtype, int(np.prod(w_shape)))
        np.testing.assert_allclose(got, want, rtol=t, atol=t)
        with cnnfast.num_threads(threads):
            no_bias = cnnfast.conv_transpose2d(x, w, None, **args, algorithm=algorithm)
        np.testing.assert_allclose(got - no_bias, np.broadcast_to(
            b.reshape(1, -1, 1, 1), got.shape), rtol=t, atol=t)
