"""The cache of validated geometries and plans (cnnfast._cache): a repeated
call reuses them, a call with a new bad argument still raises the full
validation's error, the cache is bounded, and a plan is never reused under
another thread count, policy or threshold."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _cache, _plan
from cnnfast import functional as F
from cnnfast._ops.adaptive_pool import _prepared_adaptive
from cnnfast._ops.avg_pool import _prepared_avg_pool, _prepared_avg_pool_backward
from cnnfast._ops.conv import _prepared_backward, _prepared_forward
from cnnfast._ops.conv_validation import conv_geometry
from cnnfast._ops.max_pool import _prepared_max_pool, _prepared_max_pool_backward
from cnnfast._ops.pool_validation import adaptive_windows3, divisor_array, pool_geometry


def _error(fn):
    """(type, message) of what fn raises."""
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    return type(info.value), str(info.value)


_rng = np.random.default_rng(0)
X = _rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
W = _rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
B = _rng.standard_normal(6).astype(np.float32)
GO = np.ones((2, 6, 8, 8), np.float32)
POOLED, INDICES = F.max_pool2d(X, 2, return_indices=True)
MEAN, VAR = np.zeros(4, np.float32), np.ones(4, np.float32)
READ_ONLY = np.zeros(4, np.float32)
READ_ONLY.flags.writeable = False

# (op, valid keyword arguments, {argument: bad values}): each bad value is
# equal (==) to a valid one, or of the same shape/dtype, where that can be
# confused in a dict key
CASES = [
    (F.conv2d, dict(x=X, weight=W, bias=B, stride=1, padding=1, dilation=1, groups=1),
     dict(stride=[True, 1.0, 0, "1", np.float64(1)], padding=[True, -1, "full", ((1, 1),)],
          dilation=[1.0, 0], groups=[True, 2.0, 3], algorithm=["bogus", 1],
          padding_mode=["bogus"], data_format=["nchw"], bias=[B[:5], B.astype(np.float64)],
          x=[X.astype(np.float16), X.astype(np.int32), X.tolist(), X[:, :3]],
          weight=[W.astype(np.float64), W[:, :3]])),
    (F.conv2d_backward, dict(grad_out=GO, x=X, weight=W, stride=1, padding=1),
     dict(grad_out=[GO[:, :5], GO.astype(np.float64)], need=[("x", "bogus"), "w", 1],
          stride=[True, 1.0])),
    (F.max_pool2d, dict(x=X, kernel_size=2, return_indices=False),
     dict(kernel_size=[True, 2.0, 0, (2,)], stride=[0, 2.0], return_indices=[2, "no"],
          ceil_mode=[2], padding=[2, True], x=[X.astype(np.float16), X[0]])),
    (F.max_pool2d_backward, dict(grad_out=POOLED, indices=INDICES, input_shape=X.shape),
     dict(indices=[INDICES.astype(np.int32), INDICES[:1]], input_shape=[(2, 4, 8), "x"],
          grad_out=[POOLED.astype(np.float16)])),
    (F.avg_pool2d, dict(x=X, kernel_size=2, count_include_pad=True, divisor_override=None),
     dict(divisor_override=[0, True, 2.0], count_include_pad=[2], kernel_size=[True])),
    (F.avg_pool2d_backward, dict(grad_out=POOLED, input_shape=X.shape, kernel_size=2),
     dict(kernel_size=[3, True], input_shape=[(2, 4, 10, 8)])),
    (F.adaptive_avg_pool2d, dict(x=X, output_size=2), dict(output_size=[0, True, 2.0, (2,)])),
    (F.adaptive_max_pool2d, dict(x=X, output_size=2, return_indices=False),
     dict(output_size=[True], return_indices=[2])),
    (F.global_avg_pool2d, dict(x=X, keepdims=False), dict(keepdims=[2], x=[X[0]])),
    (F.global_max_pool2d, dict(x=X, keepdims=False), dict(keepdims=["no"])),
    (F.batch_norm, dict(x=X, running_mean=MEAN, running_var=VAR, training=False,
                        momentum=0.1, eps=1e-5),
     dict(momentum=[True, "0.1", float("nan")], eps=[-1.0, True], training=[2],
          running_mean=[MEAN[:3], MEAN.astype(np.float64)])),
    (F.relu, dict(x=X), dict(x=[X.astype(np.float16), X.tolist()])),
]


@pytest.mark.parametrize("op, good, bad", CASES, ids=[c[0].__name__ for c in CASES])
def test_a_cached_call_with_a_bad_argument_raises_the_same_error(op, good, bad):
    """Every bad value raises, after the valid call filled the cache, exactly
    what it raises with an empty cache."""
    for name, values in bad.items():
        for value in values:
            args = dict(good, **{name: value})
            _cache.clear()
            cold = _error(lambda: op(**args))
            op(**good)
            op(**good)   # now from the cache
            assert _error(lambda: op(**args)) == cold, (name, value)


def test_batch_norm_in_training_needs_writeable_statistics_cached_or_not():
    good = dict(x=X, running_mean=MEAN.copy(), running_var=VAR.copy(), training=True)
    F.batch_norm(**good)
    F.batch_norm(**good)
    # the same shapes and dtypes, read-only: the key holds the flag
    with pytest.raises(ValueError, match="running_mean must be writeable"):
        F.batch_norm(**dict(good, running_mean=READ_ONLY))


def test_repeated_calls_hit_the_cache_and_give_the_same_results():
    """The first call validates (conv_geometry) and plans (plan_conv) into
    its prepared call; a repeat is one lookup of that and nothing else."""
    _cache.clear()
    first = F.conv2d(X, W, B, padding=1)
    assert conv_geometry.cache_info().misses == 1 and _plan.plan_conv.cache_info().misses == 1
    before = _prepared_forward.cache_info().hits
    again = F.conv2d(X, W, B, padding=1)
    assert _prepared_forward.cache_info().hits == before + 1
    assert conv_geometry.cache_info().hits == 0 and _plan.plan_conv.cache_info().hits == 0
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, cnnfast.reference.conv2d(X, W, B, padding=1),
                               rtol=1e-5, atol=1e-5)


def test_uncacheable_arguments_are_validated_in_full():
    """numpy integers, padding pairs and lists of non-ints are not keys:
    those calls bypass the cache and still work or fail as before."""
    assert _cache.call_key((np.int64(1),), {}) is None
    assert _cache.call_key((((1, 1), (1, 1)),), {}) is None
    assert _cache.call_key(([1, 2.0],), {}) is None
    assert _cache.call_key((1, True), {}) != _cache.call_key((1, 1), {})
    assert _cache.call_key((1.0,), {}) != _cache.call_key((1,), {})
    assert _cache.call_key((-0.0,), {}) != _cache.call_key((0.0,), {})
    np.testing.assert_array_equal(F.conv2d(X, W, stride=np.int64(1), padding=((1, 1), (1, 1))),
                                  F.conv2d(X, W, stride=1, padding=1))


def test_the_caches_are_bounded():
    _cache.clear()
    for width in range(4, 4 + _cache.MAXSIZE + 20):
        x = np.ones((1, 1, 4, width), np.float32)
        F.max_pool2d(x, 2)
        F.conv2d(x, np.ones((1, 1, 1, 1), np.float32))
    for fn in (pool_geometry, conv_geometry, _plan.plan_conv):
        info = fn.cache_info()
        assert info.maxsize == _cache.MAXSIZE and info.currsize == _cache.MAXSIZE


def test_plans_are_keyed_on_threads_policy_and_thresholds(monkeypatch):
    """The same call planned under another thread count, conv policy or
    threshold gets its own plan (the cache holds one per state)."""
    shape = ((8, 64, 28, 28), (64, 64, 3, 3))
    with cnnfast.num_threads(1):
        assert cnnfast.explain_conv(*shape, padding=1).passes["forward"].threads == 1
    with cnnfast.num_threads(2):
        assert cnnfast.explain_conv(*shape, padding=1).passes["forward"].threads == 2
    with cnnfast.num_threads(1):
        assert cnnfast.explain_conv(*shape, padding=1).passes["forward"].algorithm == "winograd"
        with cnnfast.conv_policy(winograd=False):
            assert cnnfast.explain_conv(*shape, padding=1).passes["forward"].algorithm != \
                "winograd"
        monkeypatch.setattr(_plan, "WINOGRAD_MIN_CHANNELS", 128)
        assert cnnfast.explain_conv(*shape, padding=1).passes["forward"].algorithm != "winograd"


def test_cached_plans_and_windows_cannot_be_modified():
    plan = cnnfast.explain_conv((1, 3, 8, 8), (4, 3, 3, 3))
    with pytest.raises(TypeError):
        plan.passes["forward"] = None
    assert not adaptive_windows3((8, 8), (3, 3)).flags.writeable
    assert not divisor_array(np.dtype(np.float32), ((1,), (2, 2), (2, 2))).flags.writeable
    x = np.ones((1, 1, 8, 8), np.float32)
    backward = _prepared_avg_pool_backward(F.avg_pool2d(x, 3, 2, 1), 2, x.shape, 3, 2, 1, False,
                                           True, None, "channels_first")[1]
    assert not backward.args[3].flags.writeable   # its divisors


# ------------------------------------------------- prepared calls (one lookup a call)

PREPARED = (_prepared_forward, _prepared_backward, _prepared_max_pool,
            _prepared_max_pool_backward, _prepared_avg_pool, _prepared_avg_pool_backward,
            _prepared_adaptive)


def _every_op(x, w, go, pooled, indices):
    """Each op with a prepared call, on arrays of X's shapes."""
    return [
        F.conv2d(x, w, padding=1), *F.conv2d_backward(go, x, w, padding=1)[:2],
        *F.max_pool2d(x, 2, return_indices=True), F.max_pool2d_backward(pooled, indices, x.shape),
        F.avg_pool2d(x, 2), F.avg_pool2d_backward(pooled, x.shape, 2),
        F.adaptive_avg_pool2d(x, 3), F.adaptive_max_pool2d(x, 3),
        F.global_avg_pool2d(x), F.global_max_pool2d(x, keepdims=True),
        F.adaptive_max_pool2d_backward(pooled, indices, x.shape),
        F.batch_norm(x, MEAN.astype(x.dtype), VAR.astype(x.dtype)), F.relu(x),
    ]


def test_prepared_calls_take_each_calls_own_arrays():
    """A prepared call keeps shapes and arguments, never arrays: the same
    shapes with other values, strides (a transposed copy's view) or memory
    order give that call's own results."""
    _cache.clear()
    _every_op(X, W, GO, POOLED, INDICES)   # fills the caches
    rng = np.random.default_rng(1)
    x = rng.standard_normal(X.shape[::-1]).astype(np.float32).T   # same shape, not C-contiguous
    w = rng.standard_normal(W.shape).astype(np.float32)
    go = np.asfortranarray(rng.standard_normal(GO.shape).astype(np.float32))
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    hits = [fn.cache_info().hits for fn in PREPARED]
    cached = _every_op(x, w, go, pooled, indices)
    assert all(fn.cache_info().hits > h for fn, h in zip(PREPARED, hits))
    _cache.clear()
    fresh = _every_op(np.ascontiguousarray(x), w, np.ascontiguousarray(go), pooled, indices)
    assert len(cached) == len(fresh)
    for a, b in zip(cached, fresh):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_prepared_calls_are_keyed_on_dtype_and_flags():
    """float64 arrays of the same shapes get float64 results (their own
    prepared calls); a read-only input is valid for these ops and works."""
    _cache.clear()
    _every_op(X, W, GO, POOLED, INDICES)
    x64, w64, go64 = X.astype(np.float64), W.astype(np.float64), GO.astype(np.float64)
    pooled64, indices64 = F.max_pool2d(x64, 2, return_indices=True)
    for r in _every_op(x64, w64, go64, pooled64, indices64):
        if r.dtype != np.int64:
            assert r.dtype == np.float64
    frozen = X.copy()
    frozen.flags.writeable = False
    for a, b in zip(_every_op(frozen, W, GO, POOLED, INDICES), _every_op(X, W, GO, POOLED, INDICES)):
        np.testing.assert_array_equal(a, b)


def test_prepared_calls_follow_the_thread_count_and_thresholds(monkeypatch):
    """A prepared call holds its thread count: another num_threads, or a
    changed grain, gets its own entry."""
    _cache.clear()
    x = np.zeros((2, 4, 128, 128), np.float32)   # 2**17 elements: at POOL_GRAIN
    args = (x, 2, 2, None, 0, 1, False, False, "channels_first")
    with cnnfast.num_threads(1):
        assert _prepared_max_pool(*args).threads == 1
        F.max_pool2d(x, 2)
    with cnnfast.num_threads(2):
        assert _prepared_max_pool(*args).threads == 2
        monkeypatch.setattr(_plan, "POOL_GRAIN", x.size + 1)
        assert _prepared_max_pool(*args).threads == 1
    monkeypatch.undo()
    with cnnfast.num_threads(2):
        assert _prepared_max_pool(*args).threads == 2


def test_prepared_conv_follows_the_policy():
    shape_x, shape_w = (8, 64, 28, 28), (64, 64, 3, 3)
    x, w = np.zeros(shape_x, np.float32), np.zeros(shape_w, np.float32)
    args = (x, w, None, 2, 1, 1, 1, 1, "auto", "zeros", "channels_first")
    with cnnfast.num_threads(1):
        assert _prepared_forward(*args)[1].algorithm == "winograd"
        with cnnfast.conv_policy(winograd=False):
            assert _prepared_forward(*args)[1].algorithm != "winograd"
        assert _prepared_forward(*args)[1].algorithm == "winograd"


def test_a_layout_switch_takes_the_general_path():
    """channels_last calls of the same shapes are prepared as None (the
    general path) and give the channels-first results transposed."""
    _cache.clear()
    last = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
    for op, args in ((F.max_pool2d, (2,)), (F.avg_pool2d, (2,)), (F.adaptive_avg_pool2d, (3,)),
                     (F.global_max_pool2d, ())):
        first = op(X, *args)
        np.testing.assert_array_equal(
            op(last, *args, data_format="channels_last"),
            first if first.ndim == 2 else first.transpose(0, 2, 3, 1))
