"""Argument validation of conv1d/2d/3d and their backward functions.

Every bad input listed in docs/API.md ("Conventions", "Convolution") and
docs/EDGE_CASES.md ("Arguments") raises exactly the documented exception type
(ValueError for values, TypeError for types) with a message that names the
argument and, where practical, the offending value -- before any kernel runs and
without touching the inputs. Also: a zero batch is valid, and `need` subsets.
The array arguments (types, dtypes, ranks, zero sizes, grad_out shapes) of every
op and the thread settings are checked in tests/test_validation.py.
"""
import re

import numpy as np
import pytest

import cnnfast

FORWARD = {1: cnnfast.conv1d, 2: cnnfast.conv2d, 3: cnnfast.conv3d}
BACKWARD = {1: cnnfast.conv1d_backward, 2: cnnfast.conv2d_backward,
            3: cnnfast.conv3d_backward}
DIMS = [1, 2, 3]
KINDS = ["forward", "backward"]

# base geometry: batch, in channels, out channels, groups; odd non-square sizes
N, C, K, G = 2, 4, 6, 2
SPATIAL = {1: (9,), 2: (8, 11), 3: (5, 6, 7)}
KERNEL = {1: (3,), 2: (2, 3), 3: (2, 1, 3)}


def out_size(n, k, s=1, p=0, d=1):
    """The output size formula of docs/API.md (symmetric integer padding)."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def make(nd, *, n=N, c=C, k=K, groups=G, spatial=None, kernel=None, dtype=np.float64,
         seed=0):
    """x, weight, bias of the base geometry (or the given sizes), random values."""
    rng = np.random.default_rng(seed)
    spatial = SPATIAL[nd] if spatial is None else tuple(spatial)
    kernel = KERNEL[nd] if kernel is None else tuple(kernel)
    x = rng.standard_normal((n, c) + spatial).astype(dtype)
    w = rng.standard_normal((k, c // groups) + kernel).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    return x, w, b


def nominal_shape(x, w):
    """The output shape of x, w with stride 1, no padding, dilation 1."""
    if (isinstance(x, np.ndarray) and isinstance(w, np.ndarray) and x.ndim == w.ndim
            and x.ndim >= 3):
        spatial = tuple(max(out_size(n, k), 1) for n, k in zip(x.shape[2:], w.shape[2:]))
        return (x.shape[0], w.shape[0]) + spatial
    return (N, K) + (3,) * 2


def nominal_grad_out(x, w, dtype=np.float64):
    """A zero grad_out of nominal_shape(x, w), of x's dtype if that is a float."""
    dtype = x.dtype if isinstance(x, np.ndarray) and x.dtype.kind == "f" else dtype
    return np.zeros(nominal_shape(x, w), dtype=dtype)


NOMINAL = object()


def run(kind, nd, x, w, b=None, grad_out=NOMINAL, **kwargs):
    """The forward op (with bias b) or the backward op (with grad_out, by
    default a zero array of the nominal output shape)."""
    if kind == "forward":
        return FORWARD[nd](x, w, b, **kwargs)
    if grad_out is NOMINAL:
        grad_out = nominal_grad_out(x, w)
    return BACKWARD[nd](grad_out, x, w, **kwargs)


def esc(value):
    return re.escape(repr(value))


# ------------------------------------------------------------------ ranks

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("other_nd", DIMS)
def test_weight_rank_differs_from_input_rank(kind, nd, other_nd):
    x, _, b = make(nd)
    _, w, _ = make(other_nd)
    if other_nd == nd:  # one extra trailing kernel dim
        w = w[..., None]
    assert w.ndim != x.ndim
    with pytest.raises(ValueError, match=rf"^weight must be a {nd + 2}-D array.*got shape "
                                         rf"{re.escape(str(w.shape))}"):
        run(kind, nd, x, w, b, groups=G)


# ----------------------------------------------------------------- groups

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("groups", [0, -1, -4])
def test_groups_not_positive(kind, nd, groups):
    x, w, b = make(nd, groups=1)
    with pytest.raises(ValueError, match=rf"groups must be a positive int, got {groups}$"):
        run(kind, nd, x, w, b, groups=groups)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("groups", [2.0, "2", None, True, np.float64(2)])
def test_groups_not_an_int(kind, nd, groups):
    x, w, b = make(nd)
    with pytest.raises(TypeError, match=rf"groups must be an int, got .*{esc(groups)}"):
        run(kind, nd, x, w, b, groups=groups)


@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("int_type", [np.int64, np.int32, np.uint8])
def test_numpy_integers_are_ints(nd, int_type):
    x, w, b = make(nd)
    args = dict(stride=2, padding=1, dilation=2, groups=G)
    as_numpy = {name: int_type(v) for name, v in args.items()}
    as_numpy["padding"] = (int_type(1),) * nd
    y = FORWARD[nd](x, w, b, **args)
    np.testing.assert_array_equal(FORWARD[nd](x, w, b, **as_numpy), y)
    grad_out = np.random.default_rng(1).standard_normal(y.shape)
    expected = BACKWARD[nd](grad_out, x, w, **args)
    for g, e in zip(BACKWARD[nd](grad_out, x, w, **as_numpy), expected):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("k, groups", [(6, 4), (2, 4), (5, 2)])  # incl. K < groups
def test_groups_not_dividing_out_channels(kind, nd, k, groups):
    x, w, b = make(nd, c=8, k=k, groups=groups)
    with pytest.raises(ValueError, match=rf"weight\.shape\[0\] \(out channels\) = {k} must be "
                                         rf"divisible by groups = {groups}"):
        run(kind, nd, x, w, b, groups=groups)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("c, groups", [(6, 4), (3, 2), (2, 4)])
def test_groups_not_dividing_in_channels(kind, nd, c, groups):
    x, _, b = make(nd, c=c, k=8, groups=1)
    _, w, b = make(nd, c=4 * groups, k=8, groups=groups)
    with pytest.raises(ValueError, match=rf"x\.shape\[1\] \(in channels\) = {c} must be "
                                         rf"divisible by groups = {groups}"):
        run(kind, nd, x, w, b, groups=groups)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("cg, groups", [(3, 2), (1, 2), (2, 1), (8, 1)])
def test_channels_disagree_with_weight(kind, nd, cg, groups):
    x, _, b = make(nd, c=4, groups=1)
    _, w, _ = make(nd, c=cg * groups, groups=groups)
    assert w.shape[1] == cg
    with pytest.raises(ValueError, match=rf"x has 4 channels but weight expects "
                                         rf"weight\.shape\[1\] \* groups = {cg} \* {groups} = "
                                         rf"{cg * groups}"):
        run(kind, nd, x, w, b, groups=groups)


# ------------------------------------------------------------------- bias

@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("shape", [(5,), (7,), (1,), (6, 1), (1, 6), (), (2, 3)])
def test_bias_wrong_shape(nd, shape):
    x, w, _ = make(nd)
    bias = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^bias must have shape \({K},\).*got "
                                         rf"{re.escape(str(shape))}$"):
        FORWARD[nd](x, w, bias, groups=G)


# ------------------------------------------------ stride, padding, dilation

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("bad", [0, -1, "one_zero", "one_negative"])
def test_stride_and_dilation_not_positive(kind, nd, name, bad):
    if bad == "one_zero":
        bad = (1,) * (nd - 1) + (0,)
    elif bad == "one_negative":
        bad = (-2,) + (1,) * (nd - 1)
    x, w, b = make(nd)
    with pytest.raises(ValueError, match=rf"^{name} must be positive, got {esc(bad)}$"):
        run(kind, nd, x, w, b, groups=G, **{name: bad})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("bad", [-1, "tuple"])
def test_padding_negative(kind, nd, bad):
    if bad == "tuple":
        bad = (0,) * (nd - 1) + (-1,)
    x, w, b = make(nd)
    with pytest.raises(ValueError, match=rf"^padding must be >= 0, got {esc(bad)}$"):
        run(kind, nd, x, w, b, groups=G, padding=bad)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("length", ["shorter", "longer", "empty"])
def test_tuple_of_wrong_length(kind, nd, name, length):
    n = {"shorter": nd - 1, "longer": nd + 1, "empty": 0}[length]
    bad = (1,) * n
    x, w, b = make(nd)
    with pytest.raises(ValueError, match=rf"^{name} must be an int or a tuple of {nd} ints, "
                                         rf"got {esc(bad)}$"):
        run(kind, nd, x, w, b, groups=G, **{name: bad})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("bad", [1.0, None, 1.5, "float_entry", "str_entry", "bool_entry",
                                 "none_entry"])
def test_non_int_entries(kind, nd, name, bad):
    entry = {"float_entry": 1.0, "str_entry": "1", "bool_entry": True,
             "none_entry": None}.get(bad, "scalar")
    if entry != "scalar":
        bad = (1,) * (nd - 1) + (entry,)
    x, w, b = make(nd)
    with pytest.raises(TypeError, match=rf"^{name} must be an int or a tuple of {nd} ints, "
                                        rf"got .*{esc(bad)}$"):
        run(kind, nd, x, w, b, groups=G, **{name: bad})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("name", ["stride", "dilation"])
def test_string_stride_or_dilation(kind, nd, name):
    x, w, b = make(nd)
    with pytest.raises(TypeError, match=rf"^{name} must be an int or a tuple.*'same'"):
        run(kind, nd, x, w, b, groups=G, **{name: "same"})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("padding", ["SAME", "Valid", "full", "", "Causal", " same"])
def test_unknown_padding_string(kind, nd, padding):
    x, w, b = make(nd)
    with pytest.raises(ValueError, match=rf"^padding must be .*'valid' or 'same', "
                                         rf"got {esc(padding)}$"):
        run(kind, nd, x, w, b, groups=G, padding=padding)


@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_padding_strings_accepted(nd, padding):
    x, w, b = make(nd)
    y = FORWARD[nd](x, w, b, groups=G, padding=padding, stride=2)
    expected = (tuple(-(-n // 2) for n in x.shape[2:]) if padding == "same"
                else tuple(out_size(n, k, s=2) for n, k in zip(x.shape[2:], w.shape[2:])))
    assert y.shape == (N, K) + expected


# ------------------------------------------------- window does not fit

def _last_dim_case(nd, n, k):
    """x, w, b whose last spatial dim is n and last kernel dim is k."""
    return make(nd, spatial=SPATIAL[nd][:-1] + (n,), kernel=KERNEL[nd][:-1] + (k,))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("n, k, stride, padding, dilation", [
    (2, 3, 1, 0, 1),   # kernel larger than the input
    (1, 4, 1, 1, 1),   # larger than the padded input too
    (5, 3, 1, 0, 3),   # dilation makes it too big: effective size 7
    (5, 3, 2, 0, 4),   # effective size 9, with a stride
    (3, 4, 2, 0, 1),   # (3 - 4) // 2 + 1 == 0; C's truncating division would give 1
    (4, 3, 3, 0, 2),   # (4 - 5) // 3 + 1 == 0
])
def test_window_does_not_fit(kind, nd, n, k, stride, padding, dilation):
    x, w, b = _last_dim_case(nd, n, k)
    eff = (k - 1) * dilation + 1
    o = out_size(n, k, stride, padding, dilation)
    assert o < 1
    # the bad dim is the last one; the others keep their valid defaults
    args = dict(stride=(1,) * (nd - 1) + (stride,), padding=(0,) * (nd - 1) + (padding,),
                dilation=(1,) * (nd - 1) + (dilation,))
    with pytest.raises(ValueError, match=rf"effective size {eff} \(kernel_size={k}, "
                                         rf"dilation={dilation}\) does not fit input size "
                                         rf"{n} with padding \({padding}, {padding}\) in "
                                         rf"spatial dim {nd - 1}: output size would be {o}$"):
        run(kind, nd, x, w, b, groups=G, **args)


@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("n, k, padding, dilation", [(2, 3, 1, 1), (7, 3, 0, 3), (5, 3, 1, 3)])
def test_window_that_just_fits_is_valid(nd, n, k, padding, dilation):
    x, w, b = _last_dim_case(nd, n, k)
    args = dict(padding=(0,) * (nd - 1) + (padding,), dilation=(1,) * (nd - 1) + (dilation,))
    y = FORWARD[nd](x, w, b, groups=G, **args)
    assert y.shape[-1] == out_size(n, k, 1, padding, dilation) >= 1
    grads = BACKWARD[nd](np.ones_like(y), x, w, groups=G, **args)
    assert [g.shape for g in grads] == [x.shape, w.shape, b.shape]


# ------------------------------------------------------------ zero sizes

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("axis", [0, 1, 2, 3, 4])
def test_zero_size_dim_of_weight(kind, nd, axis):
    if axis >= nd + 2:
        axis = nd + 1
    x, w, _ = make(nd)
    shape = list(w.shape)
    shape[axis] = 0
    w = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^weight has shape {re.escape(str(w.shape))}: "
                                         rf"no dimension may be 0$"):
        run(kind, nd, x, w, None, groups=G)


ALGORITHMS = ["direct", "im2col", "auto"]


@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_zero_batch_forward(nd, algorithm, dtype, with_bias):
    x, w, b = make(nd, n=0, dtype=dtype)
    args = dict(stride=2, padding=1, groups=G)
    y = FORWARD[nd](x, w, b if with_bias else None, **args, algorithm=algorithm)
    spatial = tuple(out_size(n, k, 2, 1) for n, k in zip(x.shape[2:], w.shape[2:]))
    assert y.shape == (0, K) + spatial
    assert y.dtype == np.dtype(dtype)
    assert y.flags.c_contiguous


@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_batch_backward_gives_zero_parameter_gradients(nd, algorithm, dtype):
    x, w, b = make(nd, n=0, dtype=dtype)
    args = dict(stride=2, padding=1, groups=G)
    spatial = tuple(out_size(n, k, 2, 1) for n, k in zip(x.shape[2:], w.shape[2:]))
    grad_out = np.zeros((0, K) + spatial, dtype=dtype)
    # leave NaN garbage in freed buffers of the gradients' sizes, so that an
    # uninitialised np.empty result would show
    for shape in (w.shape, b.shape):
        junk = np.full(shape, np.nan, dtype=dtype)
        del junk
    gx, gw, gb = BACKWARD[nd](grad_out, x, w, **args, algorithm=algorithm)
    assert gx.shape == x.shape and gx.dtype == np.dtype(dtype)
    assert gw.shape == w.shape and gw.dtype == np.dtype(dtype)
    assert gb.shape == (K,) and gb.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, np.zeros(K, dtype))


# ------------------------------------------------------------- algorithm

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("algorithm", ["fft", "Direct", "Winograd", "", "1X1", "im2col "])
def test_unknown_algorithm(kind, nd, algorithm):
    x, w, b = make(nd)
    with pytest.raises(ValueError, match=rf"^algorithm must be one of .*got {esc(algorithm)}$"):
        run(kind, nd, x, w, b, groups=G, algorithm=algorithm)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("algorithm", [None, 1, b"direct", ("direct",), np.int64(0)])
def test_algorithm_not_a_string(kind, nd, algorithm):
    x, w, b = make(nd)
    with pytest.raises(TypeError, match=rf"^algorithm must be a str, got "
                                        rf"{type(algorithm).__name__}"):
        run(kind, nd, x, w, b, groups=G, algorithm=algorithm)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("which", ["all", "last", "first"])
def test_1x1_algorithm_on_other_kernels(kind, nd, which):
    kernel = {"all": (3,) * nd, "last": (1,) * (nd - 1) + (2,),
              "first": (3,) + (1,) * (nd - 1)}[which]
    x, w, b = make(nd, kernel=kernel)
    with pytest.raises(ValueError, match=rf"^algorithm='1x1' needs a kernel of all ones, "
                                         rf"got kernel size {re.escape(str(kernel))}$"):
        run(kind, nd, x, w, b, groups=G, algorithm="1x1")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
def test_1x1_algorithm_accepted_on_1x1_kernels(kind, nd):
    x, w, b = make(nd, kernel=(1,) * nd)
    go = np.random.default_rng(2).standard_normal(nominal_grad_out(x, w).shape)
    expected = run(kind, nd, x, w, b, grad_out=go, groups=G, algorithm="direct")
    got = run(kind, nd, x, w, b, grad_out=go, groups=G, algorithm="1x1")
    if kind == "forward":
        expected, got = [expected], [got]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------- backward

@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("need", [("x", "input"), "w", ("grad_x",), ["X"], ("x", None),
                                  "xweight"])
def test_need_with_unknown_name(nd, need):
    x, w, _ = make(nd)
    shown = (need,) if isinstance(need, str) else need  # a str means a 1-tuple
    with pytest.raises(ValueError, match=rf"^need must name gradients from .*got "
                                         rf"{esc(shown)}$"):
        BACKWARD[nd](nominal_grad_out(x, w), x, w, groups=G, need=need)


@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("need", [5, None, 1.0])
def test_need_not_iterable(nd, need):
    x, w, _ = make(nd)
    with pytest.raises(TypeError, match=rf"^need must be a tuple of names.*got {esc(need)}$"):
        BACKWARD[nd](nominal_grad_out(x, w), x, w, groups=G, need=need)


NEED_SUBSETS = [(), ("x",), ("weight",), ("bias",), ("x", "weight"), ("x", "bias"),
                ("weight", "bias"), ("bias", "x"), "x", "weight", "bias", ["weight"],
                frozenset({"x", "bias"})]


@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("need", NEED_SUBSETS, ids=repr)
def test_need_subsets(nd, need):
    x, w, _ = make(nd)
    args = dict(stride=2, padding=1, groups=G)
    spatial = tuple(out_size(n, k, 2, 1) for n, k in zip(x.shape[2:], w.shape[2:]))
    grad_out = np.random.default_rng(1).standard_normal((N, K) + spatial)
    full = BACKWARD[nd](grad_out, x, w, **args)
    got = BACKWARD[nd](grad_out, x, w, **args, need=need)
    assert isinstance(got, tuple) and len(got) == 3
    wanted = {need} if isinstance(need, str) else set(need)
    for name, g, f in zip(("x", "weight", "bias"), got, full):
        if name in wanted:
            assert g is not None, name
            np.testing.assert_array_equal(g, f)
        else:
            assert g is None, name


# ------------------------------------------- validation before any kernel

def _huge(nd):
    """A zero-stride x of 2**54 elements (64 PiB as float32, no memory behind it):
    copying it or running a kernel on it is impossible, so only an error raised
    before any kernel work can come back."""
    spatial = {1: (4096,), 2: (64, 64), 3: (16, 16, 16)}[nd]
    return np.broadcast_to(np.float32(0), (2**40, C) + spatial)


@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("bad", ["algorithm", "1x1", "bias", "grad_out", "need", "dtype",
                                 "stride"])
def test_validation_before_any_kernel(nd, bad):
    x = _huge(nd)
    _, w, b = make(nd, dtype=np.float32)
    go = np.broadcast_to(np.float32(0), nominal_shape(x, w))
    if bad == "algorithm":
        with pytest.raises(ValueError, match="algorithm"):
            FORWARD[nd](x, w, b, groups=G, algorithm="nope")
        with pytest.raises(ValueError, match="algorithm"):
            BACKWARD[nd](go, x, w, groups=G, algorithm="nope")
    elif bad == "1x1":
        with pytest.raises(ValueError, match="1x1"):
            FORWARD[nd](x, w, b, groups=G, algorithm="1x1")
    elif bad == "bias":
        with pytest.raises(ValueError, match="bias"):
            FORWARD[nd](x, w, b[:-1], groups=G)
    elif bad == "grad_out":
        with pytest.raises(ValueError, match="grad_out"):
            BACKWARD[nd](go[:, :-1], x, w, groups=G)
    elif bad == "need":
        with pytest.raises(ValueError, match="need"):
            BACKWARD[nd](go, x, w, groups=G, need=("x", "nope"))
    elif bad == "dtype":
        with pytest.raises(TypeError, match="float64"):
            FORWARD[nd](x, w.astype(np.float64), b, groups=G)
    else:
        with pytest.raises(ValueError, match="stride"):
            BACKWARD[nd](go, x, w, groups=G, stride=-1)


BAD_CALLS = {
    "stride": dict(stride=0),
    "padding": dict(padding=-1),
    "padding_str": dict(padding="full"),
    "dilation": dict(dilation=(0,)),
    "groups": dict(groups=3),
    "algorithm": dict(algorithm="fft"),
    "1x1": dict(algorithm="1x1"),
    "too_big": dict(dilation=50),
    "padding_mode": dict(padding=1, padding_mode="mirror"),
    "reflect_too_big": dict(padding=50, padding_mode="reflect"),
    "padding_pair": dict(padding=((1, 2, 3),)),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("bad", sorted(BAD_CALLS))
def test_failed_calls_leave_inputs_unmodified(kind, nd, bad):
    x, w, b = make(nd, dtype=np.float32, seed=3)
    go = nominal_grad_out(x, w)
    go[...] = np.random.default_rng(4).standard_normal(go.shape)
    before = [a.copy() for a in (x, w, b, go)]
    kwargs = dict(groups=G)
    kwargs.update(BAD_CALLS[bad])
    with pytest.raises((ValueError, TypeError)):
        run(kind, nd, x, w, b, grad_out=go, **kwargs)
    for a, saved in zip((x, w, b, go), before):
        np.testing.assert_array_equal(a, saved)
        assert a.flags.writeable and a.flags.c_contiguous


# ------------------------------------------------- outside the int64 range

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", DIMS)
@pytest.mark.parametrize("name, value", [("stride", 2**31), ("stride", 2**63),
                                         ("dilation", 2**31), ("dilation", 2**62),
                                         ("padding", 2**31), ("padding", 2**64)])
def test_arguments_beyond_32_bits_are_rejected(kind, nd, name, value):
    """Sizes the kernels' index arithmetic cannot hold are refused by name (not
    an OverflowError from the Cython call or NumPy's nameless "array is too
    big"), as in pooling."""
    x, w, b = make(nd)
    bad = (1,) * (nd - 1) + (value,) if name != "padding" else (0,) * (nd - 1) + (value,)
    with pytest.raises(ValueError, match=rf"^conv{nd}d: {name} must be at most 2\*\*31 - 1, "
                                         rf"got {re.escape(str(bad))}"):
        run(kind, nd, x, w, b, groups=G, **{name: bad})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("padding", [2**30, "same"])
def test_padded_plane_beyond_2_48_elements_is_rejected(kind, nd, padding):
    """Padding (or "same" with a huge dilation) that makes a padded input plane
    of more than 2**48 elements: the direct kernels would copy into it."""
    x, w, b = make(nd)
    args = dict(padding=padding, groups=G)
    if padding == "same":
        args["dilation"] = 2**30
    with pytest.raises(ValueError, match=rf"^conv{nd}d: padding={esc(padding)} pads an input "
                                         rf"plane of size {re.escape(str(x.shape[2:]))} to "
                                         rf"\d+ elements, more than the kernels support"):
        run(kind, nd, x, w, b, **args)
