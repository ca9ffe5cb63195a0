"""cnnfast.nn layers: backward against central finite differences (float64),
forward/backward against torch.nn twins holding the same weights, train/eval
behaviour (BatchNorm running statistics, inverted dropout), initialisation
and constructor validation."""
import math

import numpy as np
import pytest

import cnnfast.nn as nn

# (id, factory, input shape); factories take dtype where the layer has parameters
LAYERS = [
    ("conv1d", lambda dt: nn.Conv1d(3, 4, 3, stride=2, padding=1, dtype=dt), (2, 3, 9)),
    ("conv2d", lambda dt: nn.Conv2d(3, 5, 3, padding=1, dtype=dt), (2, 3, 6, 5)),
    ("conv2d_groups", lambda dt: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2),
                                           groups=2, bias=False, dtype=dt), (2, 4, 7, 6)),
    ("conv2d_same", lambda dt: nn.Conv2d(2, 3, 4, padding="same", dtype=dt), (1, 2, 5, 6)),
    ("conv3d", lambda dt: nn.Conv3d(2, 3, 3, padding=1, dtype=dt), (2, 2, 4, 3, 4)),
    ("linear", lambda dt: nn.Linear(5, 3, dtype=dt), (4, 5)),
    ("linear_3d_input", lambda dt: nn.Linear(5, 3, dtype=dt), (2, 3, 5)),
    ("maxpool", lambda dt: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 8)),
    ("maxpool_ceil", lambda dt: nn.MaxPool2d(2, ceil_mode=True), (2, 2, 5, 5)),
    ("avgpool", lambda dt: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
     (2, 3, 7, 6)),
    ("avgpool_ceil", lambda dt: nn.AvgPool2d(2, ceil_mode=True), (1, 2, 5, 5)),
    ("adaptive_avg", lambda dt: nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    ("adaptive_max", lambda dt: nn.AdaptiveMaxPool2d(3), (2, 2, 7, 5)),
    ("global_avg", lambda dt: nn.GlobalAvgPool2d(), (2, 3, 4, 5)),
    ("global_max", lambda dt: nn.GlobalMaxPool2d(), (2, 3, 4, 5)),
    ("flatten", lambda dt: nn.Flatten(), (2, 3, 2, 2)),
    ("relu", lambda dt: nn.ReLU(), (3, 4, 5)),
    ("tanh", lambda dt: nn.Tanh(), (3, 4, 5)),
    ("sigmoid", lambda dt: nn.Sigmoid(), (3, 4, 5)),
    ("dropout", lambda dt: nn.Dropout(0.3), (4, 6)),
    ("batchnorm", lambda dt: nn.BatchNorm2d(3, dtype=dt), (4, 3, 3, 2)),
    ("batchnorm_no_affine", lambda dt: nn.BatchNorm2d(3, affine=False, dtype=dt), (3, 3, 2, 2)),
    ("sequential", lambda dt: nn.Sequential(nn.Conv2d(2, 3, 3, dtype=dt), nn.BatchNorm2d(3, dtype=dt),
                                            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                            nn.Linear(12, 4, dtype=dt)), (3, 2, 6, 6)),
]
LAYER_IDS = [c[0] for c in LAYERS]


def _output_loss(module, x, weights, seed):
    """sum(module(x) * weights), with the dropout generator reset so every
    evaluation draws the same mask."""
    nn.manual_seed(seed)
    return float(np.sum(module(x) * weights))


def check_gradients(module, x, rng, checks=10, eps=1e-6, rtol=1e-5, atol=1e-7):
    """backward vs central differences on a few random entries of x and of
    every parameter (float64)."""
    module.train()
    nn.manual_seed(7)
    y = module(x)
    weights = rng.standard_normal(y.shape)
    module.zero_grad()
    grad_x = module.backward(weights)
    grads = module.named_grads()
    targets = [("x", x, grad_x)] + [(name, p.data, grads[name])
                                    for name, p in module.named_parameters()]
    for name, array, analytic in targets:
        assert analytic.shape == array.shape, name
        for flat in rng.choice(array.size, size=min(checks, array.size), replace=False):
            idx = np.unravel_index(flat, array.shape)
            old = array[idx]
            array[idx] = old + eps
            up = _output_loss(module, x, weights, 7)
            array[idx] = old - eps
            down = _output_loss(module, x, weights, 7)
            array[idx] = old
            numeric = (up - down) / (2 * eps)
            assert analytic[idx] == pytest.approx(numeric, rel=rtol, abs=atol), (name, idx)


@pytest.mark.parametrize("name, factory, shape", LAYERS, ids=LAYER_IDS)
def test_backward_matches_finite_differences(rng, name, factory, shape):
    nn.manual_seed(0)
    module = factory(np.float64)
    x = rng.standard_normal(shape)
    check_gradients(module, x, rng)


@pytest.mark.parametrize("name, factory, shape", LAYERS, ids=LAYER_IDS)
def test_float32_in_float32_out(rng, name, factory, shape):
    module = factory(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    y = module(x)
    assert y.dtype == np.float32
    gx = module.backward(np.ones_like(y))
    assert gx.dtype == np.float32 and gx.shape == x.shape
    for p in module.parameters():
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32


def test_inputs_are_not_modified(rng):
    module = LAYERS[-1][1](np.float64)
    x = rng.standard_normal((3, 2, 6, 6))
    keep = x.copy()
    y = module(x)
    g = rng.standard_normal(y.shape)
    g_keep = g.copy()
    module.backward(g)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(g, g_keep)


def test_backward_accumulates_into_grad(rng):
    layer = nn.Linear(4, 3, dtype=np.float64)
    x = rng.standard_normal((5, 4))
    g = rng.standard_normal((5, 3))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)


def test_backward_needs_training_forward(rng):
    layer = nn.Conv2d(2, 3, 3)
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.ones((1, 3, 2, 2), np.float32))
    layer.eval()
    layer(rng.standard_normal((1, 2, 4, 4)).astype(np.float32))
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.ones((1, 3, 2, 2), np.float32))


def test_eval_forward_keeps_the_training_cache(rng):
    layer = nn.Linear(3, 2, dtype=np.float64)
    x_train, x_eval = rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    layer(x_train)
    layer.eval()
    layer(x_eval)
    layer.train()
    g = rng.standard_normal((4, 2))
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, g.T @ x_train)


# --------------------------------------------------------------- behaviour

def test_batchnorm_running_statistics(rng):
    bn = nn.BatchNorm2d(3, momentum=0.1, dtype=np.float64)
    x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
    bn(x)
    mean = x.mean(axis=(0, 2, 3))
    var_unbiased = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var_unbiased)
    # training output uses the batch's biased variance
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    bn.eval()
    y_eval = bn(x)
    expect = (x - bn.running_mean[:, None, None]) / np.sqrt(bn.running_var[:, None, None] + 1e-5)
    np.testing.assert_allclose(y_eval, expect)


def test_batchnorm_cumulative_average(rng):
    bn = nn.BatchNorm2d(2, momentum=None, dtype=np.float64)
    batches = [rng.standard_normal((3, 2, 2, 2)) + i for i in range(3)]
    for b in batches:
        bn(b)
    expect = np.mean([b.mean(axis=(0, 2, 3)) for b in batches], axis=0)
    np.testing.assert_allclose(bn.running_mean, expect)


def test_batchnorm_needs_more_than_one_value():
    with pytest.raises(ValueError, match="more than one value"):
        nn.BatchNorm2d(2)(np.ones((1, 2, 1, 1), np.float32))


def test_dropout_inverted_scaling(rng):
    drop = nn.Dropout(0.25)
    x = rng.standard_normal((200, 50)).astype(np.float32) + 3
    y = drop(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.02
    g = drop.backward(np.ones_like(y))
    np.testing.assert_allclose(g, np.where(kept, 1 / 0.75, 0), rtol=1e-6)
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)
    assert np.all(nn.Dropout(1.0)(x) == 0)


def test_dropout_is_reproducible_with_manual_seed(rng):
    x = rng.standard_normal((10, 10))
    nn.manual_seed(3)
    a = nn.Dropout()(x)
    nn.manual_seed(3)
    b = nn.Dropout()(x)
    np.testing.assert_array_equal(a, b)


def test_default_initialisation_bounds():
    nn.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, groups=2)
    bound = 1 / math.sqrt(4 * 9)          # fan_in = C / groups * kH * kW
    for p in (conv.weight.data, conv.bias.data):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.9 * bound    # fills the interval
    lin = nn.Linear(50, 400)
    assert np.abs(lin.weight.data).max() <= 1 / math.sqrt(50)
    # U(-b, b) has standard deviation b / sqrt(3)
    assert lin.weight.data.std() == pytest.approx(1 / math.sqrt(50) / math.sqrt(3), rel=0.02)
    assert conv.weight.data.dtype == np.float32
    assert nn.Conv2d(1, 1, 1, dtype=np.float64).weight.data.dtype == np.float64
    bn = nn.BatchNorm2d(4)
    np.testing.assert_array_equal(bn.weight.data, 1)
    np.testing.assert_array_equal(bn.bias.data, 0)


def test_manual_seed_reproduces_weights():
    nn.manual_seed(11)
    a = nn.Conv2d(3, 4, 3).weight.data
    nn.manual_seed(11)
    b = nn.Conv2d(3, 4, 3).weight.data
    np.testing.assert_array_equal(a, b)


def test_sequential_container():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU)
    assert [k for k, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    seq.append(nn.Tanh())
    assert len(seq) == 4 and list(seq)[-1].__class__ is nn.Tanh


@pytest.mark.parametrize("build, arg", [
    (lambda: nn.Conv2d(0, 4, 3), "in_channels"),
    (lambda: nn.Conv2d(3, -1, 3), "out_channels"),
    (lambda: nn.Conv2d(3, 4, 0), "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), "stride"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), "padding"),
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), "padding"),
    (lambda: nn.Conv2d(3, 4, 3, dilation=0), "dilation"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "groups"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"), "padding_mode"),
    (lambda: nn.Conv2d(3, 4, 3, dtype=np.int32), "dtype"),
    (lambda: nn.Conv1d(3, 4, (3, 3)), "kernel_size"),
    (lambda: nn.Linear(0, 3), "in_features"),
    (lambda: nn.Linear(3, 0), "out_features"),
    (lambda: nn.MaxPool2d(2, padding=2), "padding"),
    (lambda: nn.MaxPool2d(0), "kernel_size"),
    (lambda: nn.AvgPool2d(2, stride=0), "stride"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), "divisor_override"),
    (lambda: nn.AdaptiveAvgPool2d(0), "output_size"),
    (lambda: nn.Dropout(1.5), "p"),
    (lambda: nn.BatchNorm2d(0), "num_features"),
    (lambda: nn.BatchNorm2d(3, eps=0), "eps"),
    (lambda: nn.BatchNorm2d(3, momentum=2), "momentum"),
    (lambda: nn.CrossEntropyLoss(reduction="max"), "reduction"),
])
def test_bad_constructor_arguments(build, arg):
    with pytest.raises(ValueError, match=arg):
        build()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="x"):
        nn.Conv2d(3, 4, 3)(np.ones((1, 2, 5, 5), np.float32))   # channel mismatch
    with pytest.raises(ValueError, match="5 features"):
        nn.Linear(5, 2)(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="float64"):
        nn.Linear(5, 2)(np.ones((2, 5)))                           # float64 into float32
    with pytest.raises(ValueError, match="3 features"):
        nn.BatchNorm2d(3)(np.ones((2, 4, 2, 2), np.float32))


# ------------------------------------------------------------------- torch

def _torch_twin(torch, name):
    """The torch.nn layer built with the same arguments as LAYERS[name]."""
    T = torch.nn
    return {
        "conv1d": lambda: T.Conv1d(3, 4, 3, stride=2, padding=1),
        "conv2d": lambda: T.Conv2d(3, 5, 3, padding=1),
        "conv2d_groups": lambda: T.Conv2d(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2),
                                          groups=2, bias=False),
        "conv2d_same": lambda: T.Conv2d(2, 3, 4, padding="same"),
        "conv3d": lambda: T.Conv3d(2, 3, 3, padding=1),
        "linear": lambda: T.Linear(5, 3),
        "linear_3d_input": lambda: T.Linear(5, 3),
        "maxpool": lambda: T.MaxPool2d(3, stride=2, padding=1),
        "maxpool_ceil": lambda: T.MaxPool2d(2, ceil_mode=True),
        "avgpool": lambda: T.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        "avgpool_ceil": lambda: T.AvgPool2d(2, ceil_mode=True),
        "adaptive_avg": lambda: T.AdaptiveAvgPool2d((3, 2)),
        "adaptive_max": lambda: T.AdaptiveMaxPool2d(3),
        "global_avg": lambda: T.Sequential(T.AdaptiveAvgPool2d(1), T.Flatten()),
        "global_max": lambda: T.Sequential(T.AdaptiveMaxPool2d(1), T.Flatten()),
        "flatten": lambda: T.Flatten(),
        "relu": lambda: T.ReLU(),
        "tanh": lambda: T.Tanh(),
        "sigmoid": lambda: T.Sigmoid(),
        "batchnorm": lambda: T.BatchNorm2d(3),
        "batchnorm_no_affine": lambda: T.BatchNorm2d(3, affine=False),
        "sequential": lambda: T.Sequential(T.Conv2d(2, 3, 3), T.BatchNorm2d(3), T.ReLU(),
                                           T.MaxPool2d(2), T.Flatten(), T.Linear(12, 4)),
    }.get(name)


def copy_into_torch(torch, module, twin):
    """Load the cnnfast state dict into the torch twin; the keys must agree
    (torch's extra num_batches_tracked buffers aside)."""
    state = {k: torch.from_numpy(v) for k, v in module.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing)
    assert all(k.endswith("num_batches_tracked") for k in set(twin.state_dict()) - set(state))


TORCH_CASES = [c for c in LAYERS if c[0] != "dropout"]


@pytest.mark.parametrize("name, factory, shape", TORCH_CASES,
                         ids=[c[0] for c in TORCH_CASES])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.filterwarnings("ignore:Using padding='same'")   # torch's note on even kernels
def test_matches_torch(rng, name, factory, shape, mode):
    torch = pytest.importorskip("torch")
    module = factory(np.float64)
    twin = _torch_twin(torch, name)().double()
    copy_into_torch(torch, module, twin)
    if mode == "eval":   # give BatchNorm non-trivial running statistics first
        warm = rng.standard_normal(shape)
        module(warm)
        twin(torch.from_numpy(warm))
        module.eval()
        twin.eval()
    x = rng.standard_normal(shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = twin(tx)
    y = module(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for key, value in module.state_dict().items():    # running statistics too
        np.testing.assert_allclose(value, twin.state_dict()[key].numpy(), rtol=1e-12,
                                   atol=1e-14, err_msg=key)
    if mode == "eval":
        return
    g = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(g))
    gx = module.backward(g)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    torch_grads = {k: p.grad.numpy() for k, p in twin.named_parameters()}
    assert set(module.named_grads()) == set(torch_grads)
    for key, grad in module.named_grads().items():
        np.testing.assert_allclose(grad, torch_grads[key], rtol=1e-9, atol=1e-12, err_msg=key)


def test_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 5)) * 3
    target = rng.integers(0, 5, size=6)
    for kwargs in ({}, {"reduction": "sum"}, {"label_smoothing": 0.1}):
        loss = nn.CrossEntropyLoss(**kwargs)
        value = loss(logits, target)
        t_logits = torch.tensor(logits, requires_grad=True)
        t_loss = torch.nn.CrossEntropyLoss(**kwargs)(t_logits, torch.from_numpy(target))
        t_loss.backward()
        assert value == pytest.approx(t_loss.item(), rel=1e-12)
        np.testing.assert_allclose(loss.backward(), t_logits.grad.numpy(), rtol=1e-10,
                                   atol=1e-14)


def test_cross_entropy_weight_is_a_buffer_loaded_from_torch(rng, tmp_path):
    """A weighted loss's class weights are in state_dict() under torch's key,
    and torch's state dict of a weighted loss (a .pth file) loads into it."""
    torch = pytest.importorskip("torch")
    from cnnfast.io import read_state_dict

    assert nn.CrossEntropyLoss().state_dict() == {}   # torch: no buffer without weights
    weights = rng.uniform(0.5, 2.0, 4)
    twin = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weights))
    torch.save(twin.state_dict(), tmp_path / "loss.pth")
    loss = nn.CrossEntropyLoss(weight=np.ones(4))
    loss.load_state_dict(read_state_dict(tmp_path / "loss.pth"))
    assert list(loss.state_dict()) == list(twin.state_dict()) == ["weight"]
    np.testing.assert_array_equal(loss.state_dict()["weight"], weights)
    logits, target = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    expected = twin(torch.from_numpy(logits), torch.from_numpy(target)).item()
    assert loss(logits, target) == pytest.approx(expected, rel=1e-12)
    # and back: torch loads cnnfast's state dict
    back = torch.nn.CrossEntropyLoss(weight=torch.ones(4, dtype=torch.float64))
    back.load_state_dict({k: torch.from_numpy(v) for k, v in loss.state_dict().items()})
    np.testing.assert_array_equal(back.weight.numpy(), weights)
    with pytest.raises(ValueError, match="unexpected key"):  # as torch's strict loading
        nn.CrossEntropyLoss().load_state_dict(loss.state_dict())


def test_cross_entropy_is_stable_and_validates(rng):
    loss = nn.CrossEntropyLoss()
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]], np.float32)
    value = loss(logits, np.array([0, 0]))
    assert np.isfinite(value) and value == pytest.approx(0, abs=1e-6)
    assert loss.backward().dtype == np.float32
    with pytest.raises(ValueError, match="target"):
        loss(logits, np.array([0, 2]))
    with pytest.raises(ValueError, match="target"):
        loss(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="logits"):
        loss(logits[0], np.array([0]))


def test_cross_entropy_gradient_by_finite_differences(rng):
    loss = nn.CrossEntropyLoss(label_smoothing=0.2)
    logits = rng.standard_normal((4, 3))
    target = np.array([0, 2, 1, 2])
    loss(logits, target)
    analytic = loss.backward()
    eps = 1e-6
    for idx in np.ndindex(logits.shape):
        bumped = logits.copy()
        bumped[idx] += eps
        up = loss(bumped, target)
        bumped[idx] -= 2 * eps
        down = loss(bumped, target)
        assert analytic[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


# ------------------------------------------------------------- regressions

def test_linear_and_batchnorm_accept_non_native_byte_order(rng):
    # docs/API.md: inputs may be in non-native byte order; big-endian float32 is float32
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    for layer, inp in ((nn.Linear(2, 3), x), (nn.BatchNorm2d(3), x)):
        ref = layer(inp)
        y = layer(inp.astype(">f4"))
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, ref)
        assert layer.backward(np.ones_like(y)).dtype == np.float32


def test_batchnorm_empty_batch_passes_through():
    # torch: N == 0 in training returns an empty output, running stats untouched
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    y = bn(np.zeros((0, 3, 4, 4)))
    assert y.shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(bn.running_mean, 0)
    np.testing.assert_array_equal(bn.running_var, 1)
    gx = bn.backward(np.zeros((0, 3, 4, 4)))
    assert gx.shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(bn.weight.grad, 0)
    np.testing.assert_array_equal(bn.bias.grad, 0)


def test_relu_propagates_nan():
    # torch.relu(nan) is nan; zeroing it would hide a diverged activation
    relu = nn.ReLU()
    y = relu(np.array([np.nan, -1.0, 2.0]))
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2
    np.testing.assert_array_equal(relu.backward(np.ones(3)), [1, 0, 1])
