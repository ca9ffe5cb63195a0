"""cnnfast.batch_norm / batch_norm_backward and cnnfast.relu / relu_backward
(C kernels): against cnnfast.reference and torch (optional oracle), central
finite differences in float64, float32 and float64, 1-D to 3-D inputs (N, C),
(N, C, L), (N, C, H, W), (N, C, D, H, W), every memory layout, N = 0, NaN
propagation, the running-statistics update, threads, and bad input."""
import numpy as np
import pytest

import cnnfast
from cnnfast import reference
from cnnfast._ops.activation import _add_relu
from cnnfast._ops.batch_norm import _batch_norm, _batch_norm_backward
from helpers import numeric_gradient
from layouts import LAYOUTS, check_unmodified, relayout, snapshot

SHAPES = [(4, 3), (3, 2, 7), (2, 3, 5, 4), (2, 2, 3, 4, 3), (1, 5, 33, 17)]
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


def _bn_inputs(rng, shape, dtype, offset=0.0):
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    rm = rng.standard_normal(C).astype(dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    return x, rm, rv, w, b


# ------------------------------------------------------------ batch norm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_matches_reference(rng, shape, dtype, training, affine):
    x, rm, rv, w, b = _bn_inputs(rng, shape, dtype, offset=3.0)
    rm2, rv2 = rm.copy(), rv.copy()
    kw = dict(training=training, momentum=0.3, eps=1e-3)
    wb = (w, b) if affine else (None, None)
    y = cnnfast.batch_norm(x, rm, rv, *wb, **kw)
    want = reference.batch_norm(x, rm2, rv2, *wb, **kw)
    assert y.dtype == dtype and y.shape == shape and y.flags.c_contiguous
    np.testing.assert_allclose(y, want, **_tol(dtype))
    np.testing.assert_allclose(rm, rm2, **_tol(dtype))
    np.testing.assert_allclose(rv, rv2, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_matches_torch(rng, shape, dtype):
    torch = pytest.importorskip("torch")
    x, rm, rv, w, b = _bn_inputs(rng, shape, dtype)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    for training in (True, False):
        y = cnnfast.batch_norm(x, rm, rv, w, b, training=training, momentum=0.2)
        want = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, torch.tensor(w),
                                              torch.tensor(b), training=training,
                                              momentum=0.2).numpy()
        np.testing.assert_allclose(y, want, **_tol(dtype))
        np.testing.assert_allclose(rm, trm.numpy(), **_tol(dtype))
        np.testing.assert_allclose(rv, trv.numpy(), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_backward_matches_reference_and_torch(rng, shape, dtype):
    x, rm, rv, w, b = _bn_inputs(rng, shape, dtype, offset=1.0)
    y, mean, invstd = _batch_norm(x, None, None, w, b, training=True)
    g = rng.standard_normal(shape).astype(dtype)
    got = cnnfast.batch_norm_backward(g, x, w, mean, invstd)
    want = reference.batch_norm_backward(g, x, w, mean, invstd)
    for a, e in zip(got, want):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, **_tol(dtype))
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True)
    np.testing.assert_allclose(y, ty.detach().numpy(), **_tol(dtype))
    ty.backward(torch.tensor(g))
    for a, t in zip(got, (tx, tw, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-4 if dtype == np.float32
                                   else 1e-10, atol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_relu_backward_is_both_backwards(rng, shape, dtype):
    """The fused BatchNorm + ReLU backward (the ReLU's mask inside the batch
    norm's passes) equals relu_backward followed by batch_norm_backward."""
    x, _, _, w, b = _bn_inputs(rng, shape, dtype)
    y, mean, invstd = _batch_norm(x, None, None, w, b, training=True)
    r = cnnfast.relu(y)
    r.flat[::5] = np.nan   # NaN outputs pass the gradient (threshold_backward)
    g = rng.standard_normal(shape).astype(dtype)
    fused = _batch_norm_backward(g, x, w, mean, invstd, relu_out=r)
    want = reference.batch_norm_backward(reference.relu_backward(g, r), x, w, mean, invstd)
    for a, e in zip(fused, want):
        np.testing.assert_allclose(a, e, **_tol(dtype))
    with pytest.raises(ValueError, match="relu_out has shape"):
        _batch_norm_backward(g, x, w, mean, invstd, relu_out=r[..., :1])


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 2, 3, 3), (2, 2, 2, 2, 3)], ids=str)
@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_backward_finite_differences(rng, shape, affine):
    x, _, _, w, b = _bn_inputs(rng, shape, np.float64, offset=2.0)
    weights = rng.standard_normal(shape)
    wb = (w, b) if affine else (None, None)

    def loss():
        return float(np.sum(cnnfast.batch_norm(x, None, None, *wb, training=True) * weights))

    _, mean, invstd = _batch_norm(x, None, None, *wb, training=True)
    gx, gw, gb = cnnfast.batch_norm_backward(weights, x, wb[0], mean, invstd)
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), rtol=1e-5, atol=1e-7)
    if affine:
        np.testing.assert_allclose(gw, numeric_gradient(loss, w), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(gb, numeric_gradient(loss, b), rtol=1e-5, atol=1e-7)


def test_batch_norm_statistics_survive_a_large_mean(rng):
    """Shifted one-pass sums: a float32 channel with mean 1e4 and std 1e-1
    still gets its variance (the plain sum of squares would lose it)."""
    x = (1e4 + 0.1 * rng.standard_normal((8, 2, 16, 16))).astype(np.float32)
    y = cnnfast.batch_norm(x, None, None, training=True)
    want = reference.batch_norm(x, None, None, training=True)
    np.testing.assert_allclose(y, want, rtol=1e-2, atol=2e-2)
    assert abs(y.std() - 1) < 1e-2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_norm_layouts(rng, layout, files):
    x, rm, rv, w, b = _bn_inputs(rng, (2, 3, 5, 6), np.float64)
    g = rng.standard_normal(x.shape)
    want = reference.batch_norm(x, rm, rv, w, b)
    _, mean, invstd = _batch_norm(x, None, None, w, b, training=True)
    want_grad = reference.batch_norm_backward(g, x, w, mean, invstd)
    if layout == "broadcast":
        x = relayout(x, layout, files())
        g = relayout(g, layout, files())
        want = reference.batch_norm(x, rm, rv, w, b)
        want_grad = reference.batch_norm_backward(g, x, w, mean, invstd)
    else:
        x, g = relayout(x, layout, files()), relayout(g, layout, files())
    keep = snapshot([x, g])
    np.testing.assert_allclose(cnnfast.batch_norm(x, rm, rv, w, b), want, rtol=1e-12,
                               atol=1e-12)
    for a, e in zip(cnnfast.batch_norm_backward(g, x, w, mean, invstd), want_grad):
        np.testing.assert_allclose(a, e, rtol=1e-11, atol=1e-11)
    check_unmodified(keep)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_empty_batch(dtype):
    x = np.zeros((0, 3, 4, 4), dtype)
    rm, rv = np.full(3, 0.5, dtype), np.full(3, 2.0, dtype)
    for training in (False, True):
        y = cnnfast.batch_norm(x, rm, rv, training=training)
        assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_array_equal(rm, 0.5)   # an empty batch leaves the statistics alone
    np.testing.assert_array_equal(rv, 2.0)
    gx, gw, gb = cnnfast.batch_norm_backward(x, x, None, np.zeros(3, dtype), np.ones(3, dtype))
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_nan_stays_in_its_channel(rng, dtype):
    x = rng.standard_normal((3, 4, 5, 5)).astype(dtype)
    x[1, 2, 3, 3] = np.nan
    y = cnnfast.batch_norm(x, None, None, training=True)
    assert np.isnan(y[:, 2]).all()
    assert np.isfinite(np.delete(y, 2, axis=1)).all()
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    y = cnnfast.batch_norm(x, rm, rv)   # eval: only the NaN itself
    assert np.isnan(y).sum() == 1 and np.isnan(y[1, 2, 3, 3])


def test_batch_norm_threads_give_identical_results(rng):
    x, rm, rv, w, b = _bn_inputs(rng, (4, 6, 40, 40), np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    outs = []
    for n in (1, 2):
        with cnnfast.num_threads(n):
            y, mean, invstd = _batch_norm(x, None, None, w, b, training=True)
            outs.append((y, *cnnfast.batch_norm_backward(g, x, w, mean, invstd)))
    for a, b_ in zip(*outs):
        np.testing.assert_array_equal(a, b_)


# ------------------------------------------------------------------- relu

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 4), (2, 3, 5, 4), (3, 70001), (0, 3, 4)],
                         ids=str)
def test_relu_matches_reference(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    if x.size:
        x.flat[:: 7] = 0.0
        x.flat[1] = np.nan
        x.flat[-1] = -0.0
    y = cnnfast.relu(x)
    np.testing.assert_array_equal(y, reference.relu(x))   # NaN compares equal
    assert y.dtype == dtype and y.shape == shape
    g = rng.standard_normal(shape).astype(dtype)
    gx = cnnfast.relu_backward(g, y)
    np.testing.assert_array_equal(gx, reference.relu_backward(g, y))
    if x.size:
        assert np.isnan(y.flat[1]) and gx.flat[1] == g.flat[1]   # torch: NaN passes


def test_relu_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    x[0, 0, 0] = np.nan
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.relu(tx)
    g = rng.standard_normal(x.shape).astype(np.float32)
    ty.backward(torch.tensor(g))
    y = cnnfast.relu(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(cnnfast.relu_backward(g, y), tx.grad.numpy())


def test_relu_finite_differences(rng):
    x = rng.standard_normal((2, 3, 4))
    x[np.abs(x) < 1e-3] = 0.5   # away from the kink
    w = rng.standard_normal(x.shape)
    gx = cnnfast.relu_backward(w, cnnfast.relu(x))
    np.testing.assert_allclose(gx, numeric_gradient(lambda: float(np.sum(cnnfast.relu(x) * w)),
                                                    x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_relu_layouts(rng, layout, files):
    x = rng.standard_normal((2, 3, 5, 6))
    g = rng.standard_normal(x.shape)
    xl, gl = relayout(x, layout, files()), relayout(g, layout, files())
    keep = snapshot([xl, gl])
    np.testing.assert_array_equal(cnnfast.relu(xl), reference.relu(xl))
    np.testing.assert_array_equal(cnnfast.relu_backward(gl, xl), reference.relu_backward(gl, xl))
    check_unmodified(keep)


def test_add_relu_is_relu_of_the_sum(rng):
    a = rng.standard_normal((3, 70001)).astype(np.float32)
    b = rng.standard_normal(a.shape).astype(np.float32)
    a[0, 0] = np.nan
    np.testing.assert_array_equal(_add_relu(a, b), reference.relu(a + b))


# ------------------------------------------------------------- bad input

def _bn_args(dtype=np.float32):
    x = np.ones((2, 3, 4, 4), dtype)
    return x, np.zeros(3, dtype), np.ones(3, dtype)


@pytest.mark.parametrize("module", [cnnfast.functional, reference], ids=["functional", "reference"])
@pytest.mark.parametrize("call, error, match", [
    (lambda m, x, rm, rv: m.batch_norm(x.tolist(), rm, rv), TypeError, "x must be a numpy"),
    (lambda m, x, rm, rv: m.batch_norm(x[0, 0, 0], rm, rv), ValueError, "at least 2 dims"),
    (lambda m, x, rm, rv: m.batch_norm(x, rm[:2], rv), ValueError, r"running_mean has shape"),
    (lambda m, x, rm, rv: m.batch_norm(x, rm, rv, weight=np.ones(4, np.float32)), ValueError,
     "weight has shape"),
    (lambda m, x, rm, rv: m.batch_norm(x, rm, None), ValueError, "both be arrays"),
    (lambda m, x, rm, rv: m.batch_norm(x, None, None), ValueError, "training=False"),
    (lambda m, x, rm, rv: m.batch_norm(x, rm.astype(np.float64), rv), TypeError,
     "share a dtype"),
    (lambda m, x, rm, rv: m.batch_norm(x.astype(np.int32), rm, rv), TypeError,
     "float32 or float64"),
    (lambda m, x, rm, rv: m.batch_norm(x, rm, rv, eps=-1.0), ValueError, "eps must be >= 0"),
    (lambda m, x, rm, rv: m.batch_norm(x, rm, rv, momentum="0.1"), TypeError, "momentum"),
    (lambda m, x, rm, rv: m.batch_norm(x, rm, rv, training="yes"), TypeError, "training"),
    (lambda m, x, rm, rv: m.batch_norm(x[:1, :, :1, :1], rm, rv, training=True), ValueError,
     "more than one value per channel"),
    (lambda m, x, rm, rv: m.batch_norm(x, np.broadcast_to(rm, 3), rv, training=True),
     ValueError, "running_mean must be writeable"),
    (lambda m, x, rm, rv: m.batch_norm_backward(x[:1], x, None, rm, rv), ValueError,
     "grad_out has shape"),
    (lambda m, x, rm, rv: m.batch_norm_backward(x, x, None, None, rv), TypeError,
     "mean and invstd"),
    (lambda m, x, rm, rv: m.batch_norm_backward(x, x, None, rm[:1], rv), ValueError,
     "mean has shape"),
    (lambda m, x, rm, rv: m.relu([1.0]), TypeError, "x must be a numpy"),
    (lambda m, x, rm, rv: m.relu(x.astype(np.int64)), TypeError, "float32 or float64"),
    (lambda m, x, rm, rv: m.relu_backward(x, x[0]), ValueError, "y has shape"),
])
def test_bad_input(module, call, error, match):
    x, rm, rv = _bn_args()
    with pytest.raises(error, match=match):
        call(module, x, rm, rv)
