"""Training a channels-first model channels-last inside (cnnfast.nn.train_layout):
the same outputs and gradients as running its layers channels-first, the
layers' layout restored after every call, and backward following the
forward that filled the caches."""
import numpy as np
import pytest

from cnnfast import models, nn
from cnnfast.nn import module as _module


def _build(name, dtype=np.float64):
    nn.manual_seed(3)
    if name == "mobilenet_v2":
        return models.mobilenet_v2(num_classes=5, width_mult=0.25, dtype=dtype).train()
    return models.MODELS[name](num_classes=5, dtype=dtype).train()


def _step(model, x, g):
    nn.manual_seed(7)   # the same Dropout masks (VGG, MobileNetV2) in both runs
    y = model(x)
    gx = model.backward(g)
    return y, gx, {k: v.copy() for k, v in model.named_grads().items()}


def _formats(model):
    return {m.data_format for m in model.modules() if hasattr(m, "data_format")}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_same_result_as_channels_first_layers(monkeypatch, rng, name):
    size = 32
    x = rng.standard_normal((2, 3, size, size))
    inside, plain = _build(name), _build(name)
    g = rng.standard_normal((2, 5))
    before = _module.mutations
    y1, gx1, grads1 = _step(inside, x, g)
    assert _module.mutations == before          # the layout switch is not a model change
    assert _formats(inside) == {"channels_first"}
    first = inside._first_layer()
    assert first._cache.shape == (2, size, size, 3)   # it ran channels-last
    monkeypatch.setenv("CNNFAST_TRAIN_CHANNELS_LAST", "0")
    y2, gx2, grads2 = _step(plain, x, g)
    assert plain._first_layer()._cache.shape == (2, 3, size, size)
    np.testing.assert_allclose(y1, y2, rtol=1e-9, atol=1e-10)
    assert gx1.shape == x.shape
    np.testing.assert_allclose(gx1, gx2, rtol=1e-8, atol=1e-10 * np.abs(gx2).max())
    assert set(grads1) == set(grads2)
    for k in grads1:
        scale = max(1.0, float(np.abs(grads2[k]).max()))
        np.testing.assert_allclose(grads1[k], grads2[k], rtol=1e-8, atol=1e-10 * scale,
                                   err_msg=k)
    for (k, a), b in zip(inside.state_dict().items(), plain.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=k)


def test_backward_follows_the_forward_that_filled_the_caches(monkeypatch, rng):
    x1, x2 = rng.standard_normal((2, 2, 3, 32, 32))
    g = rng.standard_normal((2, 5))
    model, reference = _build("resnet18"), _build("resnet18")
    model(x1)                                     # channels-last inside
    monkeypatch.setenv("CNNFAST_TRAIN_CHANNELS_LAST", "0")
    model(x2)                                     # the layers' own layout: caches replaced
    gx = model.backward(g)
    _, gx_ref, grads_ref = _step(reference, x2, g)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-9, atol=1e-12)
    for k, v in model.named_grads().items():
        np.testing.assert_allclose(v, grads_ref[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_models_without_channels_last_kernels_and_eval_mode_stay_channels_first(rng):
    lenet = _build("lenet5")                      # conv1: 6 output channels, no NHWC kernel
    lenet(rng.standard_normal((2, 1, 32, 32)))
    assert lenet._first_layer()._cache.shape == (2, 1, 32, 32)
    model = _build("resnet18")
    model(rng.standard_normal((2, 3, 32, 32)))
    assert model._first_layer()._cache.shape == (2, 32, 32, 3)
    model.eval()                                  # inference: the layers' own layout
    y = model(rng.standard_normal((1, 3, 32, 32)))
    assert y.shape == (1, 5) and _formats(model) == {"channels_first"}


def test_float32_step_and_skip_input_grad(rng):
    model = _build("resnet18", np.float32).skip_input_grad()
    x = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
    y = model(x)
    assert y.dtype == np.float32 and y.shape == (2, 5)
    assert model.backward(np.ones_like(y)) is None
    assert all(p.grad is not None and np.isfinite(p.grad).all() for p in model.parameters())
