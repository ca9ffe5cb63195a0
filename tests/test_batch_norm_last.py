"""Batch normalisation of channels-last activations (cnnfast._ops.batch_norm_last,
csrc/elementwise/norm_batch_last.h): against cnnfast.reference and the
channels-first op on the transposed arrays, 1-D to 3-D, odd channel counts
(vector tails), batch 0 and 1, float32 and float64, training and eval,
the running statistics, the fused ReLU backward, finite differences, NaN,
threads, the same errors as the channels-first path, and nn.BatchNorm1d/2d/3d
with data_format="channels_last" making no layout copies."""
import numpy as np
import pytest

import cnnfast
from cnnfast import nn, reference
from cnnfast._ext import _elementwise
from cnnfast._ops import data_format
from cnnfast._plan import elementwise_threads
from cnnfast._ops.batch_norm import _batch_norm, _batch_norm_backward
from cnnfast._ops.batch_norm_last import _batch_norm_backward_last, _batch_norm_last
from helpers import numeric_gradient

DTYPES = [np.float32, np.float64]
# channels-last shapes (N, *spatial, C): 1-D, 2-D, 3-D; channel counts below,
# at and past a vector (16 float32 / 8 float64 lanes), batch 1
SHAPES = [(3, 7, 5), (2, 5, 3, 17), (1, 4, 3, 33), (2, 2, 3, 4, 19), (5, 1, 1, 40),
          (4, 6, 1), (2, 9, 9, 24), (1, 2, 24)]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


def _first(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if a is not None and a.ndim >= 3 else a


def _last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if a is not None and a.ndim >= 3 else a


def _inputs(rng, shape, dtype, offset=0.0):
    C = shape[-1]
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    rm = rng.standard_normal(C).astype(dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    return x, rm, rv, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track", [False, True])
def test_forward_matches_reference_and_channels_first(rng, shape, dtype, training, affine,
                                                      track):
    if not training and not track:
        return   # eval needs running statistics
    x, rm, rv, w, b = _inputs(rng, shape, dtype, offset=3.0)
    wb = (w, b) if affine else (None, None)
    stats = [(rm.copy(), rv.copy()) if track else (None, None) for _ in range(3)]
    y, mean, invstd = _batch_norm_last(x, *stats[0], *wb, training=training, momentum=0.3)
    want = _last(reference.batch_norm(_first(x), *stats[1], *wb, training=training,
                                      momentum=0.3))
    y_cf, mean_cf, invstd_cf = _batch_norm(_first(x), *stats[2], *wb, training=training,
                                           momentum=0.3)
    assert y.dtype == dtype and y.shape == x.shape and y.flags.c_contiguous
    np.testing.assert_allclose(y, want, **_tol(dtype))
    np.testing.assert_allclose(y, _last(y_cf), **_tol(dtype))
    np.testing.assert_allclose(mean, mean_cf, **_tol(dtype))
    np.testing.assert_allclose(invstd, invstd_cf, **_tol(dtype))
    if not training:   # the same rounded scale and shift per element
        np.testing.assert_array_equal(y, _last(y_cf))
    if track:
        for got, ref, cf in zip(stats[0], stats[1], stats[2]):
            np.testing.assert_allclose(got, ref, **_tol(dtype))
            np.testing.assert_allclose(got, cf, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_backward_matches_reference_and_channels_first(rng, shape, dtype, affine, relu):
    x, _, _, w, b = _inputs(rng, shape, dtype)
    w = w if affine else None
    g = rng.standard_normal(shape).astype(dtype)
    y, mean, invstd = _batch_norm_last(x, None, None, w, b if affine else None, training=True)
    r = reference.relu(y) if relu else None
    got = _batch_norm_backward_last(g, x, w, mean, invstd, r)
    g_in = reference.relu_backward(g, r) if relu else g
    want = reference.batch_norm_backward(_first(g_in), _first(x), w, mean, invstd)
    cf = _batch_norm_backward(_first(g), _first(x), w, mean, invstd, _first(r))
    assert got[0].shape == x.shape and got[0].flags.c_contiguous
    for a, e, c in zip(got, (_last(want[0]),) + want[1:], (_last(cf[0]),) + cf[1:]):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, **_tol(dtype))
        np.testing.assert_allclose(a, c, **_tol(dtype))


@pytest.mark.parametrize("shape", [(2, 3, 5), (3, 2, 2, 4), (2, 2, 1, 2, 3)], ids=str)
@pytest.mark.parametrize("affine", [False, True])
def test_backward_finite_differences(rng, shape, affine):
    x, _, _, w, b = _inputs(rng, shape, np.float64)
    weights = rng.standard_normal(shape)
    wb = (w, b) if affine else (None, None)

    def loss():
        return float(np.sum(_batch_norm_last(x, None, None, *wb, training=True)[0] * weights))

    _, mean, invstd = _batch_norm_last(x, None, None, *wb, training=True)
    gx, gw, gb = _batch_norm_backward_last(weights, x, wb[0], mean, invstd)
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), rtol=1e-5, atol=1e-7)
    if affine:
        np.testing.assert_allclose(gw, numeric_gradient(loss, w), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(gb, numeric_gradient(loss, b), rtol=1e-5, atol=1e-7)


def test_statistics_survive_a_large_mean(rng):
    x = (rng.standard_normal((4, 5, 5, 3)) + 1e4).astype(np.float32)
    y = _batch_norm_last(x, None, None, training=True)[0]
    want = _last(reference.batch_norm(_first(x), None, None, training=True))
    np.testing.assert_allclose(y, want, rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 4, 4, 3), (2, 0, 4, 3), (0, 5, 3), (2, 3, 4, 0)],
                         ids=str)
def test_empty(shape, dtype):
    x = np.zeros(shape, dtype)
    C = shape[-1]
    for training in (False, True):
        rm, rv = np.full(C, 0.5, dtype), np.full(C, 2.0, dtype)
        y, mean, invstd = _batch_norm_last(x, rm, rv, training=training)
        assert y.shape == shape and y.dtype == dtype
        np.testing.assert_array_equal(rm, 0.5)   # an empty batch leaves them as they are
        np.testing.assert_array_equal(rv, 2.0)
    gx, gw, gb = _batch_norm_backward_last(x, x, None, np.zeros(C, dtype), np.ones(C, dtype))
    assert gx.shape == shape
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_stays_in_its_channel(rng, dtype):
    x = rng.standard_normal((3, 5, 5, 20)).astype(dtype)
    x[1, 3, 3, 2] = np.nan
    x[2, 1, 0, 17] = np.inf
    y = _batch_norm_last(x, None, None, training=True)[0]
    y_cf = _batch_norm(_first(x), None, None, training=True)[0]
    np.testing.assert_array_equal(np.isnan(y), np.isnan(_last(y_cf)))
    assert np.isnan(y[..., [2, 17]]).all()
    assert np.isfinite(np.delete(y, [2, 17], axis=-1)).all()
    rm, rv = np.zeros(20, dtype), np.ones(20, dtype)
    y = _batch_norm_last(x, rm, rv)[0]   # eval: only the NaN itself (and the inf)
    assert np.isnan(y).sum() == 1 and np.isnan(y[1, 3, 3, 2])
    g = rng.standard_normal(x.shape).astype(dtype)
    g[0, 0, 0, 5] = np.nan
    mean, invstd = np.zeros(20, dtype), np.ones(20, dtype)
    got = _batch_norm_backward_last(g, np.nan_to_num(x), None, mean, invstd)
    want = _batch_norm_backward(_first(g), _first(np.nan_to_num(x)), None, mean, invstd)
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(_last(want[0])))
    np.testing.assert_array_equal(np.isnan(got[1]), np.isnan(want[1]))


def test_threads_give_identical_results(rng):
    """Bit for bit run to run at 1 and 3 threads, and across thread counts
    (the blocks and their order depend on the shape only)."""
    x, _, _, w, b = _inputs(rng, (4, 33, 31, 40), np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    r = np.maximum(rng.standard_normal(x.shape), 0).astype(np.float32)
    outs = []
    for n in (1, 3, 1, 3):
        with cnnfast.num_threads(n):
            assert elementwise_threads(x.size) == n
            rm, rv = np.zeros(40, np.float32), np.ones(40, np.float32)
            y, mean, invstd = _batch_norm_last(x, rm, rv, w, b, training=True)
            outs.append((y, mean, invstd, rm, rv,
                         *_batch_norm_backward_last(g, x, w, mean, invstd, r),
                         _batch_norm_last(x, rm, rv, w, b)[0]))
    for other in outs[1:]:
        for a, b_ in zip(outs[0], other):
            np.testing.assert_array_equal(a, b_)


def test_non_contiguous_and_byte_swapped_inputs(rng):
    x, rm, rv, w, b = _inputs(rng, (3, 6, 5, 9), np.float64)
    strided = x[:, ::2]
    y = _batch_norm_last(strided, None, None, w, b, training=True)[0]
    want = _last(reference.batch_norm(_first(strided), None, None, w, b, training=True))
    np.testing.assert_allclose(y, want, **_tol(np.float64))
    swapped = x.astype(x.dtype.newbyteorder(">"))
    y = _batch_norm_last(swapped, rm, rv, w, b)[0]
    np.testing.assert_array_equal(y, _batch_norm_last(x, rm, rv, w, b)[0])


# ---------------------------------------------------------- bad input

def _bad_calls():
    x = np.ones((2, 4, 4, 3), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    return [
        lambda f, t: f(t(x), rm[:2], rv),
        lambda f, t: f(t(x), rm, rv, weight=np.ones(4, np.float32)),
        lambda f, t: f(t(x), rm, None),
        lambda f, t: f(t(x), None, None),
        lambda f, t: f(t(x), rm.astype(np.float64), rv),
        lambda f, t: f(t(x).astype(np.int32), rm, rv),
        lambda f, t: f(t(x), rm, rv, eps=-1.0),
        lambda f, t: f(t(x), rm, rv, momentum="0.1"),
        lambda f, t: f(t(x), rm, rv, momentum=float("nan")),
        lambda f, t: f(t(x), rm, rv, training="yes"),
        lambda f, t: f(t(x[:1, :1, :1]), rm, rv, training=True),
        lambda f, t: f(t(x), np.broadcast_to(rm, 3), rv, training=True),
    ]


def _bad_backward_calls():
    x = np.ones((2, 4, 4, 3), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    return [
        lambda f, t: f(t(x[:1]), t(x), None, rm, rv),
        lambda f, t: f(t(x), t(x), None, None, rv),
        lambda f, t: f(t(x), t(x), None, rm[:1], rv),
        lambda f, t: f(t(x), t(x), np.ones(2, np.float32), rm, rv),
        lambda f, t: f(t(x), t(x), None, rm, rv, t(x[:, :1])),
        lambda f, t: f(t(x).astype(np.float64), t(x), None, rm, rv),
        lambda f, t: f(x.tolist(), t(x), None, rm, rv),
    ]


def _no_kernels(monkeypatch):
    def kernel(*args):
        raise AssertionError("a kernel ran on bad input")
    for name in dir(_elementwise):
        if name.startswith(("batch_norm", "channel_affine")):
            monkeypatch.setattr(_elementwise, name, kernel)


@pytest.mark.parametrize("i", range(len(_bad_calls())))
def test_bad_input_raises_as_channels_first(monkeypatch, i):
    _no_kernels(monkeypatch)
    call = _bad_calls()[i]
    with pytest.raises((TypeError, ValueError)) as want:
        call(_batch_norm, _first)
    with pytest.raises(want.type) as got:
        call(_batch_norm_last, lambda a: a)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("i", range(len(_bad_backward_calls())))
def test_bad_backward_input_raises_as_channels_first(monkeypatch, i):
    _no_kernels(monkeypatch)
    call = _bad_backward_calls()[i]
    with pytest.raises((TypeError, ValueError)) as want:
        call(_batch_norm_backward, _first)
    with pytest.raises(want.type) as got:
        call(_batch_norm_backward_last, lambda a: a)
    assert str(got.value) == str(want.value)


# ---------------------------------------------------------------- layers

def _no_layout_copies(monkeypatch):
    def copy(a):
        raise AssertionError("a layout copy in a channels-last batch norm")
    monkeypatch.setattr(data_format, "_to_first", copy)
    monkeypatch.setattr(data_format, "_to_last", copy)


@pytest.mark.parametrize("cls, shape", [(nn.BatchNorm1d, (4, 9, 6)),
                                        (nn.BatchNorm2d, (3, 5, 7, 19)),
                                        (nn.BatchNorm3d, (2, 3, 4, 3, 10))], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False},
                                {"track_running_stats": False}, {"bias": False}], ids=str)
def test_layers_match_channels_first(monkeypatch, rng, cls, shape, dtype, kw):
    C = shape[-1]
    last = cls(C, dtype=dtype, data_format="channels_last", **kw)
    first = cls(C, dtype=dtype, **kw)
    if last.affine:
        w = rng.standard_normal(C).astype(dtype)
        last.weight.data[...] = first.weight.data[...] = w
        if last.bias is not None:
            last.bias.data[...] = first.bias.data[...] = w[::-1]
    _no_layout_copies(monkeypatch)
    for step in range(3):
        x = (rng.standard_normal(shape) + step).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        y = last(x)
        monkeypatch.undo()
        y_cf = first(_first(x))
        _no_layout_copies(monkeypatch)
        np.testing.assert_allclose(y, _last(y_cf), **_tol(dtype))
        gx = last.backward(g)
        monkeypatch.undo()
        gx_cf = first.backward(_first(g))
        _no_layout_copies(monkeypatch)
        np.testing.assert_allclose(gx, _last(gx_cf), **_tol(dtype))
        for a, b in zip(last.parameters(), first.parameters()):
            np.testing.assert_allclose(a.grad, b.grad, **_tol(dtype))
    for name in ("running_mean", "running_var"):
        a, b = getattr(last, name), getattr(first, name)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, **_tol(dtype))
    last.eval()
    first.eval()
    x = rng.standard_normal(shape).astype(dtype)
    y = last(x)
    monkeypatch.undo()
    np.testing.assert_allclose(y, _last(first(_first(x))), **_tol(dtype))


def test_explain_reports_the_channels_last_kernels():
    model = nn.Sequential(nn.BatchNorm2d(8, data_format="channels_last")).train()
    (row,) = cnnfast.explain_model(model, (2, 5, 5, 8)).rows
    assert row.note == ""
    for name in ("forward", "x"):
        assert row.passes[name].layout == "channels_last"
        assert row.passes[name].workspace_bytes == 0   # no layout copies
