"""Module.fuse(): the fused inference copy of every model in cnnfast.models
and of user Sequentials equals the unfused model in eval mode (float32
rounding; float64 too), the original model is untouched, the fused model
refuses to train; the convolution epilogue (residual add + ReLU in the
store pass) against the reference on every forward kernel and layout."""
import numpy as np
import pytest

import cnnfast
import cnnfast.nn as nn
from cnnfast import models, reference
from cnnfast._ops.conv import _conv_forward_fused
from cnnfast.nn.fuse import FusedConv2d, InferenceModel

SMALL_INPUTS = {"lenet5": 32, "alexnet": 64, "vgg11": 32, "vgg16": 32, "googlenet": 32,
                "resnet18": 32, "resnet34": 32, "resnet50": 32, "mobilenet_v2": 32}
# ResNet-101/152 fuse as ResNet-50 (the same blocks); test_models_mobilenet_resnet.py builds them
ZOO = [name for name in models.MODELS if name not in ("resnet101", "resnet152")]


def _randomise_batch_norms(model, rng):
    """Statistics and affine parameters away from (0, 1, 1, 0), so folding is tested."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
            C, dt = m.num_features, m.running_mean.dtype
            m.running_mean = (0.1 * rng.standard_normal(C)).astype(dt)
            m.running_var = (rng.random(C) + 0.5).astype(dt)
            if m.affine:
                m.weight.data = (1 + 0.2 * rng.standard_normal(C)).astype(dt)
                m.bias.data = (0.1 * rng.standard_normal(C)).astype(dt)


def _build(name, dtype, rng, **kw):
    nn.manual_seed(0)
    model = models.MODELS[name](num_classes=7, dtype=dtype, **kw)
    _randomise_batch_norms(model, rng)
    return model


def _close(got, want, dtype):
    scale = float(np.max(np.abs(want))) or 1.0
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("name, kw", [(n, {}) for n in ZOO]
                         + [("googlenet", {"aux_logits": True, "transform_input": True})],
                         ids=ZOO + ["googlenet_aux"])
def test_fused_model_equals_eval_model(rng, name, kw):
    dtype = np.float32
    model = _build(name, dtype, rng, **kw)
    size = SMALL_INPUTS[name]
    channels = 1 if name == "lenet5" else 3
    x = rng.standard_normal((2, channels, size, size)).astype(dtype)
    before = model.state_dict()
    model.train()
    fused = model.fuse()
    assert isinstance(fused, InferenceModel) and not fused.training
    assert model.training   # the original keeps its mode ...
    for key, value in model.state_dict().items():   # ... and its values
        np.testing.assert_array_equal(value, before[key])
    want = model.eval()(x)
    got = fused(x)
    assert got.dtype == dtype and got.shape == want.shape
    _close(got, want, dtype)
    originals = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    for _, b in list(fused.named_buffers()) + [(0, p.data) for p in fused.parameters()]:
        assert not any(np.shares_memory(b, o) for o in originals)
    if name != "lenet5":   # every Conv2d and BatchNorm2d is folded (LeNet-5 has tanh units)
        left = [m for m in fused.modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d)]
        assert not left, f"unfused layers left: {left}"


def test_fused_resnet_float64_and_features(rng):
    model = _build("resnet18", np.float64, rng).eval()
    x = rng.standard_normal((1, 3, 40, 36))
    fused = model.fuse()
    _close(fused(x), model(x), np.float64)
    _close(fused.forward_features(x), model.forward_features(x), np.float64)


def test_original_model_still_trains_after_fuse(rng):
    model = _build("resnet18", np.float32, rng)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    model.fuse()
    model.train()
    y = model(x)
    model.zero_grad()
    model.backward(np.ones_like(y))
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_user_sequential(rng, dtype):
    nn.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, dtype=dtype), nn.BatchNorm2d(16, dtype=dtype), nn.ReLU(),
        nn.Conv2d(16, 8, 3, stride=2, bias=False, dtype=dtype), nn.BatchNorm2d(8, dtype=dtype),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 4, 1, dtype=dtype), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, dtype=dtype),
        nn.BatchNorm2d(4, track_running_stats=False, dtype=dtype),   # not foldable: kept
        nn.Flatten(), nn.Linear(4 * 3 * 3, 5, dtype=dtype))
    _randomise_batch_norms(model, rng)
    x = rng.standard_normal((3, 3, 15, 14)).astype(dtype)
    fused = model.fuse()
    kinds = [type(m).__name__ for m in fused.module.children()]
    assert kinds == ["FusedConv2d", "Folded", "Folded", "FusedConv2d", "Folded", "MaxPool2d",
                     "FusedConv2d", "Folded", "Conv2d", "BatchNorm2d", "Flatten", "Linear"]
    _close(fused(x), model.eval()(x), dtype)
    assert fused.eval() is fused


def test_a_sequential_with_its_own_forward_is_not_folded(rng):
    class Skip(nn.Sequential):   # uses its children otherwise than in a chain
        def forward(self, x):
            return self[2](self[0](x)) + self[1](self[0](x))

    model = Skip(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    _randomise_batch_norms(model, rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    fused = model.fuse()
    assert [type(m).__name__ for m in fused.module.children()] == ["Conv2d", "BatchNorm2d",
                                                                   "ReLU"]
    _close(fused(x), model.eval()(x), np.float32)


def test_fused_model_refuses_to_train(rng):
    fused = _build("resnet18", np.float32, rng).fuse()
    with pytest.raises(RuntimeError, match="inference"):
        fused.train()
    with pytest.raises(RuntimeError, match="inference"):
        fused.backward(np.ones((1, 7), np.float32))
    conv = next(m for m in fused.modules() if isinstance(m, FusedConv2d))
    with pytest.raises(RuntimeError, match="inference"):
        conv.backward(np.ones((1, 1, 1, 1), np.float32))
    assert not fused.training and fused.fuse() is fused


def test_fused_model_rejects_a_bad_residual(rng):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    fused = FusedConv2d(conv, None, relu=True)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="residual has shape"):
        fused(x, residual=np.zeros((1, 4, 5, 4), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        fused(x, residual=np.zeros((1, 4, 5, 5), np.float64))


# Shapes that reach each forward kernel and layout of the plan (checked below).
EPILOGUE_CASES = [
    # (N, C, H, W), (K, kh, kw), stride, padding
    ((2, 3, 9, 10), (16, 3, 3), 1, 1),      # direct_lanes, padded
    ((2, 16, 9, 9), (20, 1, 1), 1, 0),      # 1x1: gemm, pointwise
    ((2, 4, 11, 12), (5, 3, 3), 2, 1),      # im2col gemm, stride 2
    ((1, 3, 12, 20), (6, 3, 3), 1, 1),      # direct_rows (few channels, wide rows)
    ((17, 8, 6, 6), (16, 3, 3), 1, 1),      # small planes, stride 1
    ((16, 8, 12, 12), (16, 3, 3), 2, 1),    # direct_lanes_batch (batch in the tile)
    ((2, 32, 4, 4), (64, 3, 3), 1, 1),      # depth-stacked GEMM (small planes)
    ((5, 6, 1, 1), (9, 1, 1), 1, 0),        # batch as pixels (1x1 planes)
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_conv_epilogue_every_kernel(rng, dtype, residual, relu):
    seen = set()
    for xs, (K, kh, kw), stride, padding in EPILOGUE_CASES:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal((K, xs[1], kh, kw)).astype(dtype)
        b = rng.standard_normal(K).astype(dtype)
        plan = cnnfast.explain_conv(xs, w.shape, stride, padding, dtype=dtype,
                                    need=("forward",))
        p = plan.passes["forward"]
        seen.add((p.kernel, p.layout))
        want = reference.conv2d(x, w, b, stride, padding)
        res = rng.standard_normal(want.shape).astype(dtype) if residual else None
        if residual:
            want = want + res
        if relu:
            want = np.where(want <= 0, 0, want)
        got = _conv_forward_fused(2, x, w, b, stride, padding, 1, 1, relu, res)
        tol = 1e-4 if dtype == np.float32 else 1e-11
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max(),
                                   err_msg=str(plan))
    kernels = {k for k, _ in seen}
    layouts = {layout for _, layout in seen}
    assert {"gemm", "direct_lanes", "direct_lanes_batch", "direct_rows"} <= kernels, seen
    assert {"images", "depth_stacked", "batch_as_pixels"} <= layouts, seen


def test_conv_epilogue_keeps_nan(rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    x[0, 0, 4, 4] = np.nan
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    y = _conv_forward_fused(2, x, w, None, 1, 1, 1, 1, True, None)
    assert np.isnan(y[0, :, 3:6, 3:6]).all() and np.isfinite(y[0, :, :2]).all()


def test_conv_epilogue_threads_identical(rng):
    x = rng.standard_normal((2, 16, 20, 20)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    res = rng.standard_normal((2, 32, 20, 20)).astype(np.float32)
    outs = []
    for n in (1, 2):
        with cnnfast.num_threads(n):
            outs.append(_conv_forward_fused(2, x, w, None, 1, 1, 1, 1, True, res))
    np.testing.assert_array_equal(*outs)
