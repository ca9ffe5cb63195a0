"""Numbers at the edges: NaN and Inf through every conv algorithm and every
pooling family (forward and backward), -inf padding that is never selected,
float64 gradients of the conv paths test_conv.py's finite differences do not
reach, and (marked slow, see conftest.py) arrays of more than 2**31 elements.

The oracle is cnnfast.reference, which computes with plain NumPy (IEEE
arithmetic: NaN spreads through every sum it enters, inf - inf is NaN). A
result matches when its NaN, +inf and -inf positions are the reference's and
its finite values agree to the usual tolerance. tests/test_pool.py holds the
hand-made NaN/tie/-inf cases of 2-D max pooling; these are the rest.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import numeric_gradient, tolerance

import cnnfast
from cnnfast import reference

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def quiet_numpy():
    """The reference computes inf - inf and 0 * inf on purpose."""
    with np.errstate(invalid="ignore", over="ignore"):
        yield


def assert_ieee_equal(got, expected, dtype, reduction):
    """Same NaN / +inf / -inf positions; finite values within tolerance."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    for kind in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(kind(got), kind(expected), err_msg=kind.__name__)
    finite = np.isfinite(expected)
    tol = tolerance(dtype, reduction)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=tol, atol=tol)


def sprinkle(rng, a, count, values=(np.nan, np.inf, -np.inf)):
    """a with `count` random entries set to each of `values` (in place)."""
    flat = a.reshape(-1)
    for v in values:
        flat[rng.choice(flat.size, size=min(count, flat.size), replace=False)] = v
    return a


# ------------------------------------------------------------ convolution

# (nd, x shape, weight shape, arguments): padding (zeros never multiply a
# NaN into a valid output), stride 2 (the polyphase input gradient), dilation,
# groups, 1x1 kernels
CONV_CASES = [
    (1, (2, 4, 19), (6, 2, 3), dict(stride=2, padding=1, dilation=2, groups=2)),
    (2, (2, 3, 9, 11), (4, 3, 3, 3), dict(padding=1)),
    (2, (2, 4, 10, 9), (6, 2, 3, 2), dict(stride=2, padding=(1, 0), groups=2)),
    (2, (1, 4, 12, 12), (4, 1, 3, 3), dict(padding="same", dilation=2, groups=4)),
    (2, (2, 8, 7, 6), (5, 8, 1, 1), dict()),
    (2, (2, 4, 7, 6), (6, 2, 1, 1), dict(stride=(1, 2), padding=(0, 1), groups=2)),
    (3, (2, 2, 5, 6, 7), (3, 2, 2, 3, 2), dict(stride=(1, 2, 1), padding=(1, 0, 1))),
]
FORWARD = {1: cnnfast.conv1d, 2: cnnfast.conv2d, 3: cnnfast.conv3d}
BACKWARD = {1: cnnfast.conv1d_backward, 2: cnnfast.conv2d_backward,
            3: cnnfast.conv3d_backward}


def _conv_params():
    for i, (nd, xs, ws, args) in enumerate(CONV_CASES):
        algorithms = ["direct", "im2col", "auto"] + (["1x1"] if ws[2:] == (1,) * nd else [])
        for alg in algorithms:
            yield pytest.param(i, alg, id=f"{nd}d-{xs}-{ws}-{alg}")


def _conv_inputs(case, dtype, seed):
    nd, xs, ws, args = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return rng, nd, x, w, b, args


def _reduction(w):
    return int(np.prod(w.shape[1:]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["x", "weight", "bias"])
@pytest.mark.parametrize("case, algorithm", list(_conv_params()))
def test_conv_forward_propagates_nan_and_inf(case, algorithm, where, dtype):
    """A NaN or inf in x reaches exactly the outputs whose window holds it (+inf
    and -inf in one window give NaN); one in the weights or bias reaches every
    output of its channel -- including border outputs whose window lies partly
    in the zero padding (0 * NaN is NaN: padding is not skipped)."""
    rng, nd, x, w, b, args = _conv_inputs(case, dtype, seed=case)
    target = {"x": x, "weight": w, "bias": b}[where]
    sprinkle(rng, target, 1 if where != "x" else 3)
    expected = getattr(reference, f"conv{nd}d")(x, w, b, **args)
    got = FORWARD[nd](x, w, b, **args, algorithm=algorithm)
    assert not np.isfinite(expected).all()
    assert_ieee_equal(got, expected, dtype, _reduction(w))


# The direct input gradient convolves grad_out's zero padding with the
# weights; with a NaN/inf weight it falls back on the GEMM (col2im of real
# products only), so every algorithm matches the reference below.


def _backward_params():
    for param in _conv_params():
        case, algorithm = param.values
        for where in ["grad_out", "x", "weight"]:
            for gradient in ["x", "weight", "bias"]:
                yield pytest.param(case, algorithm, where, gradient,
                                   id=f"{param.id}-{where}-grad_{gradient}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, algorithm, where, gradient", list(_backward_params()))
def test_conv_backward_propagates_nan_and_inf(case, algorithm, where, gradient, dtype):
    rng, nd, x, w, _, args = _conv_inputs(case, dtype, seed=10 + case)
    out_shape = getattr(reference, f"conv{nd}d")(x, w, **args).shape
    grad_out = rng.standard_normal(out_shape).astype(dtype)
    target = {"grad_out": grad_out, "x": x, "weight": w}[where]
    sprinkle(rng, target, 1)
    expected = getattr(reference, f"conv{nd}d_backward")(grad_out, x, w, **args,
                                                         need=(gradient,))
    got = BACKWARD[nd](grad_out, x, w, **args, algorithm=algorithm, need=(gradient,))
    i = ["x", "weight", "bias"].index(gradient)
    reduction = out_shape[1] if gradient == "x" else int(np.prod(out_shape)) // out_shape[1]
    assert_ieee_equal(got[i], expected[i], dtype, reduction)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_overflow_gives_inf_not_nan(algorithm, dtype):
    """Finite inputs whose products overflow give +-inf, as NumPy does. (Where
    +inf and -inf terms meet, NaN or inf depends on fused multiply-adds, which
    keep an overflowing product exact: not tested.)"""
    big = np.finfo(dtype).max / 4
    x = np.full((1, 1, 4, 4), big, dtype=dtype)
    w = np.full((2, 1, 2, 2), 8.0, dtype=dtype)
    w[1] = -8.0
    got = cnnfast.conv2d(x, w, algorithm=algorithm)
    assert np.isposinf(got[0, 0]).all() and np.isneginf(got[0, 1]).all()
    gx, gw, gb = cnnfast.conv2d_backward(np.ones_like(got), x, w, algorithm=algorithm)
    assert np.isfinite(gx).all() and np.isposinf(gw).all() and (gb == 9).all()


# ---------------------------------------------------------------- pooling

# (op, x shape, arguments)
MAX_CASES = [
    ("max_pool1d", (2, 3, 17), dict(kernel_size=3, stride=2, padding=1, dilation=2,
                                    ceil_mode=True)),
    ("max_pool2d", (2, 3, 9, 11), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1),
                                       ceil_mode=True)),
    ("max_pool2d", (1, 2, 10, 13), dict(kernel_size=3, stride=1, dilation=(2, 3),
                                        padding=(0, 1))),
    ("max_pool3d", (2, 2, 5, 6, 7), dict(kernel_size=(2, 3, 2), stride=(1, 2, 2),
                                         padding=(1, 1, 0), dilation=(1, 1, 2))),
    ("adaptive_max_pool2d", (2, 3, 9, 11), dict(output_size=(4, 3))),
    ("adaptive_max_pool2d", (1, 2, 5, 4), dict(output_size=(7, 9))),  # overlapping cells
    ("global_max_pool2d", (2, 3, 9, 11), dict()),
]
AVG_CASES = [
    ("avg_pool1d", (2, 3, 17), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                    count_include_pad=False)),
    ("avg_pool2d", (2, 3, 9, 11), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1),
                                       ceil_mode=True)),
    ("avg_pool2d", (1, 4, 10, 13), dict(kernel_size=(2, 3), stride=1, padding=(1, 0),
                                        divisor_override=5)),
    ("avg_pool3d", (2, 2, 5, 6, 7), dict(kernel_size=(2, 3, 2), stride=(1, 2, 2),
                                         padding=(1, 1, 0), count_include_pad=False)),
    ("adaptive_avg_pool2d", (2, 3, 9, 11), dict(output_size=(4, 3))),
    ("global_avg_pool2d", (2, 3, 9, 11), dict()),
]


def _ids(cases):
    return [f"{op}-{shape}-{i}" for i, (op, shape, _) in enumerate(cases)]


def _pool(op, module=cnnfast):
    return getattr(module, op)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, shape, kw", MAX_CASES, ids=_ids(MAX_CASES))
def test_max_pool_nan_and_inf_match_reference(op, shape, kw, dtype):
    """Values and indices equal the reference (torch's rule: a NaN wins and the
    index points at it; +inf is an ordinary maximum), and backward sends each
    gradient to the chosen element, NaN gradients included."""
    rng = np.random.default_rng(len(shape) * 7 + len(kw))
    x = sprinkle(rng, rng.standard_normal(shape).astype(dtype), 4)
    y, idx = _pool(op)(x, **kw, return_indices=True)
    y_ref, idx_ref = _pool(op, reference)(x, **kw, return_indices=True)
    np.testing.assert_array_equal(y, y_ref)  # NaN == NaN here
    np.testing.assert_array_equal(idx, idx_ref)
    n, c = shape[:2]
    picked = np.take_along_axis(x.reshape(n, c, -1), idx.reshape(n, c, -1), -1)
    np.testing.assert_array_equal(picked.reshape(y.shape), y)
    grad_out = sprinkle(rng, rng.standard_normal(y.shape).astype(dtype), 1, (np.nan, np.inf))
    got = _pool(op + "_backward")(grad_out, idx, x.shape)
    expected = _pool(op + "_backward", reference)(grad_out, idx, x.shape)
    assert_ieee_equal(got, expected, dtype, 8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, shape, kw", AVG_CASES, ids=_ids(AVG_CASES))
def test_avg_pool_nan_and_inf_match_reference(op, shape, kw, dtype):
    """A window holding NaN, or both +inf and -inf, averages to NaN; one with
    only +inf to +inf; backward spreads a NaN or inf gradient over its window."""
    rng = np.random.default_rng(len(shape) * 11 + len(kw))
    x = sprinkle(rng, rng.standard_normal(shape).astype(dtype), 4)
    y = _pool(op)(x, **kw)
    y_ref = _pool(op, reference)(x, **kw)
    assert not np.isfinite(y_ref).all()
    assert_ieee_equal(y, y_ref, dtype, 64)
    grad_out = sprinkle(rng, rng.standard_normal(y.shape).astype(dtype), 1)
    rest = {k: v for k, v in kw.items() if k != "output_size"}
    got = _pool(op + "_backward")(grad_out, x.shape, **rest)
    expected = _pool(op + "_backward", reference)(grad_out, x.shape, **rest)
    assert_ieee_equal(got, expected, dtype, 64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, shape, kw", [c for c in MAX_CASES if "padding" in c[2]],
                         ids=_ids([c for c in MAX_CASES if "padding" in c[2]]))
def test_negative_infinity_padding_is_never_selected(op, shape, kw, dtype):
    """An input of all -inf: every window's maximum is -inf, found inside the
    input (the padding is -inf too, and must lose the tie), so every index is a
    real element and backward never writes outside the plane."""
    x = np.full(shape, -np.inf, dtype=dtype)
    y, idx = _pool(op)(x, **kw, return_indices=True)
    assert np.isneginf(y).all()
    plane = int(np.prod(shape[2:]))
    assert idx.min() >= 0 and idx.max() < plane
    np.testing.assert_array_equal(idx, _pool(op, reference)(x, **kw, return_indices=True)[1])
    grad_x = _pool(op + "_backward")(np.ones(y.shape, dtype), idx, shape)
    assert grad_x.sum() == y.size  # every output's gradient landed inside the input


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_finite_values_beat_negative_infinity_padding(nd, dtype):
    """Windows half in the padding over finite inputs below any padding value
    a buggy kernel might use (-huge, not -inf): the maximum is always an input."""
    shape = (1, 2) + (5,) * nd
    x = np.full(shape, -np.finfo(dtype).max, dtype=dtype)
    y, idx = _pool(f"max_pool{nd}d")(x, 3, stride=2, padding=1, return_indices=True)
    assert (y == -np.finfo(dtype).max).all()
    np.testing.assert_array_equal(
        idx, getattr(reference, f"max_pool{nd}d")(x, 3, stride=2, padding=1,
                                                  return_indices=True)[1])


# -------------------------------------------------- finite differences

def _fd_check(nd, x, w, b, args, algorithm):
    forward, backward = FORWARD[nd], BACKWARD[nd]
    rng = np.random.default_rng(0)
    grad_out = rng.standard_normal(forward(x, w, b, **args, algorithm=algorithm).shape)

    def loss():
        return float(np.sum(forward(x, w, b, **args, algorithm=algorithm) * grad_out))

    gx, gw, gb = backward(grad_out, x, w, **args, algorithm=algorithm)
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_gradient(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("path", ["1x1-strided-padded", "1x1-plain", "full-window",
                                  "stacked-small-planes", "stacked-tiny-planes-1d",
                                  "depthwise-stride-2", "3d-dilated-groups"])
def test_conv_gradients_of_special_paths_match_finite_differences(path):
    """float64 gradients against central differences on the paths
    test_conv.py's finite differences do not take: the 1x1 algorithm, and
    auto's batch-as-pixels (kernel == input) and depth-stacked small-plane GEMMs."""
    rng = np.random.default_rng(1)
    nd, xs, ws, args, algorithm = {
        "1x1-strided-padded": (2, (2, 4, 5, 4), (4, 2, 1, 1),
                               dict(stride=2, padding=1, groups=2), "1x1"),
        "1x1-plain": (2, (2, 3, 4, 3), (5, 3, 1, 1), dict(), "1x1"),
        "full-window": (2, (3, 2, 3, 4), (4, 2, 3, 4), dict(), "auto"),
        "stacked-small-planes": (2, (3, 2, 4, 4), (3, 2, 3, 3), dict(padding=1), "auto"),
        "stacked-tiny-planes-1d": (1, (4, 3, 2), (2, 3, 2), dict(padding=1), "auto"),
        "depthwise-stride-2": (2, (2, 3, 7, 6), (3, 1, 3, 3),
                               dict(stride=2, padding=1, groups=3), "direct"),
        "3d-dilated-groups": (3, (1, 4, 4, 5, 4), (2, 2, 2, 2, 2),
                              dict(dilation=(1, 2, 1), padding=(0, 1, 1), groups=2), "im2col"),
    }[path]
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    _fd_check(nd, x, w, b, args, algorithm)


# ------------------------------------------- more than 2**31 elements

HUGE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "huge_shapes.py"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["max_pool2d_plane", "max_pool2d_batch", "avg_pool2d_batch",
                                  "max_pool2d_backward_batch", "conv2d_im2col_batch",
                                  "conv2d_direct_output"])
def test_more_than_2_31_elements(case):
    """Offsets past 2**31 elements (in one plane, or across the batch): sampled
    outputs near the end equal the reference on the matching slice. Up to
    about 10 GB each, in a child process; skipped unless --runslow or
    CNNFAST_SLOW=1 (scripts/huge_shapes.py runs them all)."""
    if not HUGE_SCRIPT.exists():
        pytest.skip("scripts/huge_shapes.py is not in this tree")
    # the child imports the cnnfast this process imported
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__)))
    child = subprocess.run([sys.executable, str(HUGE_SCRIPT), case], capture_output=True,
                           text=True, timeout=3600, env=env)
    assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-2000:]
    if f"{case}: skipped" in child.stdout:
        pytest.skip(child.stdout.strip())
    assert f"{case}: ok" in child.stdout
