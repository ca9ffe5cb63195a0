"""algorithm="winograd" (F(4x4, 3x3)): every pass against the reference and
finite differences, odd sizes, padding forms, groups, batch 0 and 1,
non-finite values (the direct result), layouts, the float32 error bound,
the conv policy and validation."""
import threading

import numpy as np
import pytest

import cnnfast
from cnnfast import _plan, reference
from helpers import numeric_gradient
from layouts import relayout

# (x shape, K, padding, groups): odd sizes, a 1x1 input with padding, wide
# rows (several vector lanes of tiles), groups and depthwise
CASES = [
    ((2, 3, 7, 9), 5, 1, 1),
    ((1, 4, 5, 5), 6, 0, 2),
    ((1, 2, 1, 1), 3, 1, 1),
    ((3, 16, 14, 13), 20, "same", 1),
    ((2, 8, 9, 9), 4, 2, 1),
    ((1, 4, 6, 6), 4, 3, 1),
    ((2, 6, 3, 70), 12, (1, 0), 3),
    ((1, 5, 11, 4), 5, "valid", 5),
    ((2, 13, 30, 31), 17, 1, 1),
]
F32_BOUND = 1e-5     # the documented float32 bound (docs/API.md)


def _arrays(rng, x_shape, K, groups, dtype=np.float64):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((K, x_shape[1] // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def _rel(got, ref):
    return np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-300)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_gradients_match_the_reference_float64(rng, case, threads):
    x_shape, K, padding, groups = case
    x, w, b = _arrays(rng, x_shape, K, groups)
    args = dict(padding=padding, groups=groups)
    ref = reference.conv2d(x, w, b, **args)
    go = rng.standard_normal(ref.shape)
    with cnnfast.num_threads(threads):
        y = cnnfast.conv2d(x, w, b, **args, algorithm="winograd")
        gx, gw, gb = cnnfast.conv2d_backward(go, x, w, **args, algorithm="winograd")
    rx, rw, rb = reference.conv2d_backward(go, x, w, **args)
    assert y.shape == ref.shape and y.dtype == np.float64
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-11 * max(np.abs(ref).max(), 1))
    np.testing.assert_allclose(gx, rx, rtol=0, atol=1e-11 * max(np.abs(rx).max(), 1))
    np.testing.assert_allclose(gw, rw, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(gb, rb, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[5]], ids=str)
def test_every_pass_matches_finite_differences(rng, case):
    x_shape, K, padding, groups = case
    x, w, b = _arrays(rng, x_shape, K, groups)
    args = dict(padding=padding, groups=groups)
    go = rng.standard_normal(reference.conv2d(x, w, b, **args).shape)

    def loss():
        return float(np.sum(cnnfast.conv2d(x, w, b, **args, algorithm="winograd") * go))

    gx, gw, gb = cnnfast.conv2d_backward(go, x, w, **args, algorithm="winograd")
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_gradient(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float32_within_the_documented_bound(rng, case):
    x_shape, K, padding, groups = case
    x, w, b = _arrays(rng, x_shape, K, groups)
    args = dict(padding=padding, groups=groups)
    ref = reference.conv2d(x, w, b, **args)
    go = rng.standard_normal(ref.shape)
    f = [a.astype(np.float32) for a in (x, w, b, go)]
    y = cnnfast.conv2d(f[0], f[1], f[2], **args, algorithm="winograd")
    gx, _, _ = cnnfast.conv2d_backward(f[3], f[0], f[1], **args, need="x", algorithm="winograd")
    assert y.dtype == np.float32 and gx.dtype == np.float32
    assert _rel(y, ref) <= F32_BOUND
    assert _rel(gx, reference.conv2d_backward(go, x, w, **args)[0]) <= F32_BOUND


def test_float32_bound_on_a_wide_layer(rng):
    # 256 channels (the documented figures are for the benchmark shapes)
    x = rng.standard_normal((1, 256, 12, 12)).astype(np.float32)
    w = (rng.standard_normal((64, 256, 3, 3)) * 0.1).astype(np.float32)
    ref = cnnfast.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, algorithm="direct")
    y = cnnfast.conv2d(x, w, padding=1, algorithm="winograd")
    assert _rel(y, ref) <= 2e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_zero(dtype):
    x = np.zeros((0, 4, 5, 5), dtype)
    w = np.ones((3, 4, 3, 3), dtype)
    y = cnnfast.conv2d(x, w, padding=1, algorithm="winograd")
    assert y.shape == (0, 3, 5, 5) and y.dtype == dtype
    gx, gw, gb = cnnfast.conv2d_backward(y, x, w, padding=1, algorithm="winograd")
    assert gx.shape == x.shape and not gw.any() and not gb.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["x", "weight", "grad_out"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_give_the_direct_result(rng, dtype, where, value):
    x, w, b = _arrays(rng, (2, 5, 9, 10), 6, 1, dtype)
    go = rng.standard_normal((2, 6, 9, 10)).astype(dtype)
    target = {"x": x, "weight": w, "grad_out": go}[where]
    target[(1, 2, 1, 2) if where == "weight" else (1, 2, 3, 4)] = value
    for algo_out in ("forward", "x"):
        got, want = [
            (cnnfast.conv2d(x, w, b, padding=1, algorithm=a) if algo_out == "forward"
             else cnnfast.conv2d_backward(go, x, w, padding=1, need="x", algorithm=a)[0])
            for a in ("winograd", "direct")]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["fortran", "transposed", "strided", "negative"])
def test_any_memory_layout_gives_the_same_result(rng, layout, tmp_path):
    x, w, b = _arrays(rng, (2, 6, 10, 11), 8, 2, np.float32)
    go = rng.standard_normal((2, 8, 10, 11)).astype(np.float32)
    want = cnnfast.conv2d(x, w, b, padding=1, groups=2, algorithm="winograd")
    want_gx = cnnfast.conv2d_backward(go, x, w, padding=1, groups=2, need="x",
                                      algorithm="winograd")[0]
    lx, lw, lgo = (relayout(a, layout, tmp_path / f"{i}.bin") for i, a in enumerate((x, w, go)))
    np.testing.assert_array_equal(cnnfast.conv2d(lx, lw, b, padding=1, groups=2,
                                                 algorithm="winograd"), want)
    np.testing.assert_array_equal(cnnfast.conv2d_backward(lgo, lx, lw, padding=1, groups=2,
                                                          need="x", algorithm="winograd")[0],
                                  want_gx)


def test_conv_transpose_and_layers_accept_winograd(rng):
    x = rng.standard_normal((2, 4, 6, 7))
    w = rng.standard_normal((4, 5, 3, 3))
    np.testing.assert_allclose(cnnfast.conv_transpose2d(x, w, padding=1, algorithm="winograd"),
                               reference.conv_transpose2d(x, w, padding=1), atol=1e-11)


@pytest.mark.parametrize("bad, match", [
    (dict(kernel=5), r"algorithm='winograd' needs kernel size \(3, 3\), got kernel size \(5, 5\)"),
    (dict(stride=2), r"algorithm='winograd' needs stride \(1, 1\), got stride \(2, 2\)"),
    (dict(dilation=2), r"algorithm='winograd' needs dilation \(1, 1\), got dilation \(2, 2\)"),
])
def test_other_2d_shapes_are_a_value_error(bad, match):
    k = bad.get("kernel", 3)
    x, w = np.ones((1, 2, 9, 9)), np.ones((2, 2, k, k))
    args = {n: v for n, v in bad.items() if n != "kernel"}
    with pytest.raises(ValueError, match=match):
        cnnfast.conv2d(x, w, **args, algorithm="winograd")
    go = np.ones(cnnfast.conv2d(x, w, **args).shape)
    with pytest.raises(ValueError, match=match):
        cnnfast.conv2d_backward(go, x, w, **args, algorithm="winograd")


@pytest.mark.parametrize("fn, x, w", [
    (cnnfast.conv1d, np.ones((1, 2, 8)), np.ones((2, 2, 3))),
    (cnnfast.conv3d, np.ones((1, 2, 5, 5, 5)), np.ones((2, 2, 3, 3, 3))),
])
def test_1d_and_3d_are_a_value_error(fn, x, w):
    with pytest.raises(ValueError, match=r"algorithm='winograd' needs a 2-D convolution"):
        fn(x, w, algorithm="winograd")


# ---------------------------------------------------------------- policy

BIG = ((8, 64, 28, 28), (64, 64, 3, 3))   # a shape auto runs on Winograd


def test_auto_picks_winograd_and_the_policy_turns_it_off():
    assert cnnfast.get_conv_policy() == {"winograd": True}
    plan = cnnfast.explain_conv(*BIG, padding=1)
    assert plan.passes["forward"].algorithm == "winograd"
    assert plan.passes["x"].algorithm == "winograd"
    # the weight gradient on the NHWC Winograd kernel between layout copies
    assert plan.passes["weight"].kernel == "nhwc_winograd_weight"
    assert plan.passes["weight"].layout == "channels_last_copies"
    try:
        cnnfast.set_conv_policy(winograd=False)
        assert cnnfast.get_conv_policy() == {"winograd": False}
        plan = cnnfast.explain_conv(*BIG, padding=1)
        assert "winograd" not in {p.algorithm for p in plan.passes.values()}
        # explicit algorithms are not affected
        x, w = np.ones((1, 2, 6, 6)), np.ones((3, 2, 3, 3))
        np.testing.assert_allclose(cnnfast.conv2d(x, w, algorithm="winograd"),
                                   reference.conv2d(x, w), atol=1e-12)
        cnnfast.set_conv_policy()   # None keeps the value
        assert cnnfast.get_conv_policy() == {"winograd": False}
    finally:
        cnnfast.set_conv_policy(winograd=True)
    assert cnnfast.explain_conv(*BIG, padding=1).passes["forward"].algorithm == "winograd"


def test_conv_policy_context_manager_restores_the_policy_even_on_error():
    with cnnfast.conv_policy(winograd=False):
        assert cnnfast.explain_conv(*BIG, padding=1).passes["forward"].algorithm != "winograd"
        with cnnfast.conv_policy(winograd=True):
            assert cnnfast.get_conv_policy()["winograd"] is True
        assert cnnfast.get_conv_policy()["winograd"] is False
    assert cnnfast.get_conv_policy()["winograd"] is True
    with pytest.raises(RuntimeError):
        with cnnfast.conv_policy(winograd=False):
            raise RuntimeError("boom")
    assert cnnfast.get_conv_policy()["winograd"] is True


def test_the_policy_is_process_wide():
    seen = []
    with cnnfast.conv_policy(winograd=False):
        t = threading.Thread(target=lambda: seen.append(cnnfast.get_conv_policy()["winograd"]))
        t.start()
        t.join()
    assert seen == [False]


@pytest.mark.parametrize("bad", ["no", 2, None.__class__])
def test_policy_arguments_are_validated(bad):
    with pytest.raises(TypeError, match="winograd must be a bool"):
        cnnfast.set_conv_policy(winograd=bad)
    with pytest.raises(TypeError, match="winograd must be a bool"):
        with cnnfast.conv_policy(winograd=bad):
            pass
    with pytest.raises(TypeError):
        cnnfast.set_conv_policy(False)   # keyword-only
    assert cnnfast.get_conv_policy()["winograd"] is True


def test_auto_keeps_small_shapes_and_other_kernels_off_winograd():
    small = cnnfast.explain_conv((1, 16, 8, 8), (16, 16, 3, 3), padding=1)
    assert small.passes["forward"].algorithm != "winograd"
    five = cnnfast.explain_conv((8, 64, 28, 28), (64, 64, 5, 5), padding=2)
    assert "winograd" not in {p.algorithm for p in five.passes.values()}
    assert _plan.winograd_wins.__doc__   # the rule lives in the plan module
