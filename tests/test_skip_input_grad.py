"""Module.skip_input_grad(): the first layer's input-gradient pass is skipped
(backward returns None) and every parameter gradient stays exactly what it
was; skip_input_grad(False) restores the input gradient."""
import numpy as np
import pytest

import cnnfast.nn as nn
from cnnfast import models

CASES = [
    ("lenet5", lambda: models.lenet5(), (2, 1, 32, 32)),
    ("resnet18", lambda: models.resnet18(num_classes=5), (2, 3, 32, 32)),
    ("googlenet", lambda: models.googlenet(num_classes=5, transform_input=True,
                                           aux_logits=True), (2, 3, 32, 32)),
    ("sequential_linear", lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), (4, 3, 2, 2)),
    ("sequential_conv", lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                                              nn.Linear(16, 2)), (2, 3, 4, 4)),
]


def _grads(model, x):
    nn.manual_seed(3)
    y = model(x)
    g = y if not isinstance(y, tuple) else tuple(y)
    model.zero_grad()
    gx = model.backward(np.ones_like(g) if not isinstance(g, tuple)
                        else tuple(np.ones_like(a) for a in g))
    return gx, {k: v.copy() for k, v in model.named_grads().items()}


@pytest.mark.parametrize("name, build, shape", CASES, ids=[c[0] for c in CASES])
def test_skip_input_grad(rng, name, build, shape):
    nn.manual_seed(0)
    model = build().train()
    x = rng.standard_normal(shape).astype(np.float32)
    gx, grads = _grads(model, x)
    assert gx is not None and gx.shape == x.shape
    assert model.skip_input_grad() is model
    skipped, grads_skipped = _grads(model, x)
    if name == "sequential_linear":   # the first layer is a Flatten: nothing to skip
        np.testing.assert_array_equal(skipped, gx)
    else:
        assert skipped is None
    assert grads_skipped.keys() == grads.keys()
    for k in grads:
        np.testing.assert_array_equal(grads_skipped[k], grads[k], err_msg=k)
    model.skip_input_grad(False)
    again, _ = _grads(model, x)
    np.testing.assert_array_equal(again, gx)
