"""models.mobilenet_v2 and models.resnet50/101/152 against plain-torch twins
of torchvision's definitions (cnnfast.bench.torch_twins): exact state-dict
keys and shapes, forward in train and eval, every gradient, running
statistics, an SGD step; weights= from a torch.save file; fuse() and
channels_last equality; the blocks against finite differences; bad input.
The VGG-11 and GoogLeNet twins of the models benchmark: keys and eval
outputs."""
import numpy as np
import pytest

import cnnfast
import cnnfast.nn as nn
from cnnfast import models
from cnnfast.bench.torch_twins import (BOTTLENECK_LAYERS, torch_googlenet, torch_mobilenet_v2,
                                       torch_resnet_bottleneck, torch_vgg11)
from cnnfast.models.mobilenet import _make_divisible
from cnnfast.optim import SGD

# small enough to stay fast, large enough for every block to see a 1x1 or bigger plane
TWIN_CASES = {"mobilenet_v2": dict(width_mult=0.25), "resnet50": {}}
# input sizes of the float64 comparisons: ResNet-50's layer4 at 2x2, so that its
# training-mode BatchNorms see 8 values a channel, not 2 (two values normalise
# to +-1 whatever they are: a condition number that eats float64's digits)
TWIN_SIZES = {"mobilenet_v2": 32, "resnet50": 48}


def _torch_twin(torch, name, in_channels=3, num_classes=1000, **kwargs):
    if name == "mobilenet_v2":
        return torch_mobilenet_v2(torch, in_channels, num_classes, **kwargs)
    return torch_resnet_bottleneck(torch, BOTTLENECK_LAYERS[name], in_channels, num_classes)


def _keys_without_counters(twin):
    return {k: tuple(v.shape) for k, v in twin.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def _perturb(model, rng):
    """BatchNorm affine parameters and statistics away from (1, 0, 0, 1)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            C, dt = m.num_features, m.weight.dtype
            m.weight.data = (1 + 0.2 * rng.standard_normal(C)).astype(dt)
            m.bias.data = (0.1 * rng.standard_normal(C)).astype(dt)
            m.running_mean = (0.1 * rng.standard_normal(C)).astype(dt)
            m.running_var = (rng.random(C) + 0.5).astype(dt)
    return model


@pytest.fixture
def torch1():
    """torch on one thread (its float64 grouped convolutions contend badly on
    a loaded machine), restored afterwards."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


def _pair(torch, name, rng, dtype=np.float64, in_channels=3):
    nn.manual_seed(1)
    ours = _perturb(models.MODELS[name](num_classes=10, in_channels=in_channels, dtype=dtype,
                                        **TWIN_CASES[name]), rng)
    theirs = _torch_twin(torch, name, in_channels, 10, **TWIN_CASES[name])
    theirs = theirs.double() if dtype == np.float64 else theirs
    assert {k: v.shape for k, v in ours.state_dict().items()} == _keys_without_counters(theirs)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()},
                           strict=False)
    return ours, theirs


def _no_dropout(*modules):
    for model in modules:
        for m in model.modules():
            if type(m).__name__ == "Dropout":
                m.p = 0.0


# ------------------------------------------------------------------ twins

@pytest.mark.parametrize("name", list(TWIN_CASES))
def test_matches_torch_twin_train_eval_gradients_and_sgd_step(rng, name, torch1):
    torch = torch1
    ours, theirs = _pair(torch, name, rng)
    _no_dropout(ours, theirs)   # the masks come from different generators
    x = rng.standard_normal((2, 3, TWIN_SIZES[name], TWIN_SIZES[name]))
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs.train()(tx)
    y = ours.train()(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-8, atol=1e-9)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(g))
    gx = ours.backward(g)
    scale = np.abs(tx.grad.numpy()).max()
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-7, atol=1e-8 * scale)
    tgrads = {k: p.grad.numpy() for k, p in theirs.named_parameters()}
    ograds = ours.named_grads()
    assert set(ograds) == set(tgrads)
    for k, grad in ograds.items():
        np.testing.assert_allclose(grad, tgrads[k], rtol=1e-6,
                                   atol=1e-8 * max(np.abs(tgrads[k]).max(), 1e-3), err_msg=k)
    # eval mode: the running statistics that forward moved, in both
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x), want, rtol=1e-8, atol=1e-9 * np.abs(want).max())
    # one SGD step (momentum, weight decay) from those gradients moves both alike
    opt = SGD(ours.parameters(), 0.1, momentum=0.9, weight_decay=1e-3)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt.step()
    topt.step()
    tstate = theirs.state_dict()
    for k, v in ours.state_dict().items():   # parameters and running statistics
        np.testing.assert_allclose(v, tstate[k].numpy(), rtol=1e-7, atol=1e-9, err_msg=k)


@pytest.mark.parametrize("name, kwargs", [("mobilenet_v2", {}), ("mobilenet_v2",
                                                                  {"width_mult": 0.5}),
                                          ("mobilenet_v2", {"width_mult": 1.4}),
                                          ("resnet101", {}), ("resnet152", {})], ids=str)
def test_state_dict_keys_are_torchvisions(rng, name, kwargs, torch1):
    torch = torch1
    twin = _torch_twin(torch, name, **kwargs)
    ours = models.MODELS[name](**kwargs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == _keys_without_counters(twin)
    assert list(ours.state_dict()) == list(_keys_without_counters(twin))   # and their order
    count = sum(p.data.size for p in ours.parameters())
    assert count == sum(p.numel() for p in twin.parameters())
    if not kwargs:   # torchvision's published figures
        assert count == {"mobilenet_v2": 3_504_872, "resnet101": 44_549_160,
                         "resnet152": 60_192_808}[name]
    if name != "mobilenet_v2":   # the deep ResNets: one small forward
        x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
        assert np.isfinite(ours.eval()(x)).all()


@pytest.mark.parametrize("name, make", [("vgg11", torch_vgg11),
                                        ("googlenet", torch_googlenet)])
def test_benchmark_twins_vgg11_googlenet(rng, name, make, torch1):
    """The twins the models benchmark times and exports to ONNX hold exactly
    the cnnfast model's keys and compute its eval output (32x32: every pool
    of both still sees a plane of at least 1x1)."""
    torch = torch1
    nn.manual_seed(2)
    ours = _perturb(models.MODELS[name](num_classes=10), rng).eval()
    theirs = make(torch, 3, 10).eval()
    assert list(ours.state_dict()) == list(_keys_without_counters(theirs))
    assert {k: v.shape for k, v in ours.state_dict().items()} == _keys_without_counters(theirs)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()},
                           strict=False)
    x = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_make_divisible_and_last_channel():
    assert models.mobilenet_v2(width_mult=1.4).last_channel == 1792
    assert models.mobilenet_v2(width_mult=0.35).last_channel == 1280
    assert [_make_divisible(v, 8) for v in (32 * 0.35, 16 * 0.35, 24 * 1.4, 3, 100)] == \
        [16, 8, 32, 8, 104]


@pytest.mark.parametrize("name", list(TWIN_CASES))
def test_weights_from_a_torch_save_file(tmp_path, rng, name, torch1):
    """torch.save of the twin's state dict (with torchvision's num_batches_tracked
    counters) loads through weights= and gives the twin's outputs."""
    torch = torch1
    twin = _torch_twin(torch, name, 3, 5, **TWIN_CASES[name])
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in twin.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    path = tmp_path / f"{name}.pth"
    torch.save(twin.state_dict(), path)
    ours = models.MODELS[name](num_classes=5, weights=path, **TWIN_CASES[name]).eval()
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = twin.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    m64 = models.MODELS[name](num_classes=5, weights=path, dtype=np.float64, **TWIN_CASES[name])
    assert {v.dtype for v in m64.state_dict().values()} == {np.dtype(np.float64)}
    with pytest.raises(ValueError, match="do not fit this"):
        models.MODELS[name](num_classes=6, weights=path, **TWIN_CASES[name])


# ---------------------------------------------------- fuse, channels_last

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_mobilenet_equals_eval_model(rng, dtype):
    nn.manual_seed(0)
    model = _perturb(models.mobilenet_v2(num_classes=7, width_mult=0.5, dtype=dtype), rng)
    x = rng.standard_normal((2, 3, 48, 40)).astype(dtype)
    want = model.eval()(x)
    fused = model.fuse()
    kinds = {type(m).__name__ for m in fused.modules()}
    assert {"FusedInvertedResidual", "FusedConv2d"} <= kinds
    assert not kinds & {"Conv2d", "BatchNorm2d", "ReLU6"}   # everything folded
    got = fused(x)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_allclose(fused.forward_features(x), model.forward_features(x), rtol=tol,
                               atol=tol * np.abs(want).max())
    with pytest.raises(RuntimeError, match="inference"):
        fused.backward(np.ones_like(got))


@pytest.mark.parametrize("name", list(TWIN_CASES))
def test_channels_last_equals_channels_first(rng, name):
    nn.manual_seed(0)
    a = _perturb(models.MODELS[name](num_classes=4, dtype=np.float64, **TWIN_CASES[name]), rng)
    b = models.MODELS[name](num_classes=4, dtype=np.float64, data_format="channels_last",
                            **TWIN_CASES[name])
    b.load_state_dict(a.state_dict())
    _no_dropout(a, b)
    x = rng.standard_normal((2, 3, 32, 32))
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    a.eval(), b.eval()
    np.testing.assert_allclose(b(xl), a(x), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(b.fuse()(xl), a(x), rtol=1e-9, atol=1e-10)
    if name == "resnet50":
        return   # training mode: MobileNetV2 has the same layers (and is 10x cheaper)
    ya, yb = a.train()(x), b.train()(xl)
    np.testing.assert_allclose(yb, ya, rtol=1e-9, atol=1e-10)
    go = rng.standard_normal(ya.shape)
    ga, gb = a.backward(go), b.backward(go)
    np.testing.assert_allclose(gb, ga.transpose(0, 2, 3, 1), rtol=1e-8,
                               atol=1e-9 * np.abs(ga).max())
    grads_a, grads_b = a.named_grads(), b.named_grads()
    # a BatchNorm's shift feeding another BatchNorm has a gradient of rounding
    # noise (the second one removes the mean): tolerances relative to the largest
    scale = max(np.abs(grad).max() for grad in grads_a.values())
    for k, grad in grads_a.items():
        np.testing.assert_allclose(grads_b[k], grad, rtol=1e-8, atol=1e-10 * scale, err_msg=k)


# ------------------------------------------------------------------ blocks

def _check_gradients(module, x, rng, eps=1e-6):
    """Central differences of sum(module(x) * w) at a few entries of x and of
    every parameter, in training mode (batch statistics)."""
    y = module.train()(x)
    w = rng.standard_normal(y.shape)
    module.zero_grad()
    gx = module.backward(w)
    grads = module.named_grads()
    targets = [(x, gx)] + [(p.data, grads[k]) for k, p in module.named_parameters()]
    for array, analytic in targets:
        for flat in rng.choice(array.size, size=min(4, array.size), replace=False):
            idx = np.unravel_index(flat, array.shape)
            old = array[idx]
            array[idx] = old + eps
            up = np.sum(module(x) * w)
            array[idx] = old - eps
            down = np.sum(module(x) * w)
            array[idx] = old
            assert analytic[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("block", ["bottleneck", "bottleneck_downsample", "inverted_residual",
                                   "inverted_residual_stride2", "inverted_residual_t1"])
def test_block_gradients(rng, block):
    nn.manual_seed(0)
    f64 = np.float64
    if block == "bottleneck":
        m = models.Bottleneck(8, 2, dtype=f64)
    elif block == "bottleneck_downsample":
        m = models.Bottleneck(4, 2, stride=2, downsample=models.resnet.downsample(4, 8, 2, f64),
                              dtype=f64)
    elif block == "inverted_residual":
        m = models.InvertedResidual(4, 4, 1, 3, dtype=f64)
        assert m.use_res_connect
    elif block == "inverted_residual_stride2":
        m = models.InvertedResidual(4, 6, 2, 2, dtype=f64)
    else:
        m = models.InvertedResidual(4, 4, 1, 1, dtype=f64)
    in_ch = m.conv1.in_channels if "bottleneck" in block else m.conv[0][0].in_channels
    _check_gradients(m, rng.standard_normal((2, in_ch, 5, 5)), rng)


def test_zero_init_residual_and_torchvision_init():
    nn.manual_seed(0)
    model = models.resnet50(num_classes=3, zero_init_residual=True)
    for block in model.layer1.children() + model.layer4.children():
        assert not block.bn3.weight.data.any() and block.bn2.weight.data.all()
    mb = models.mobilenet_v2(num_classes=3)
    assert not mb.classifier[1].bias.data.any()
    assert mb.classifier[1].weight.data.std() == pytest.approx(0.01, rel=0.1)
    w = mb.features[1].conv[0][0].weight.data      # depthwise (32, 1, 3, 3): fan_out 32 * 9
    assert w.std() == pytest.approx(np.sqrt(2 / (32 * 9)), rel=0.2)


def test_forward_features_and_replace_head(rng):
    nn.manual_seed(0)
    model = models.mobilenet_v2(num_classes=4, in_channels=1, width_mult=0.25).eval()
    x = rng.standard_normal((3, 1, 32, 32)).astype(np.float32)
    feats = model.forward_features(x)
    assert feats.shape == (3, 1280) and model.head is model.classifier[1]
    np.testing.assert_array_equal(model(x), model.head(feats))
    model.replace_head(9)
    assert model(x).shape == (3, 9) and "classifier.1.weight" in model.state_dict()
    r50 = models.resnet50(num_classes=2).eval()
    assert r50.forward_features(x.repeat(3, axis=1)).shape == (3, 2048)


def test_bad_arguments():
    for bad in (0, -1.0, float("nan"), "1", True):
        with pytest.raises(ValueError, match="width_mult"):
            models.mobilenet_v2(width_mult=bad)
    with pytest.raises(ValueError, match="in_channels"):
        models.mobilenet_v2(in_channels=0)
    with pytest.raises(ValueError, match="num_classes"):
        models.resnet50(num_classes=0)
    with pytest.raises(ValueError, match="p must be a probability"):
        models.mobilenet_v2(dropout=1.5)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        models.InvertedResidual(4, 4, 3, 6)
    with pytest.raises(TypeError, match="float64"):
        models.mobilenet_v2(width_mult=0.25)(np.zeros((1, 3, 32, 32)))


def test_registered_and_exported():
    # MODELS is what `cnnfast train`, the benchmark and the examples choose from
    for name in ("mobilenet_v2", "resnet50", "resnet101", "resnet152"):
        assert models.MODELS[name] is getattr(models, name)
    for name in ("relu6", "relu6_backward", "hardtanh", "hardtanh_backward"):
        assert getattr(cnnfast, name) is getattr(cnnfast.functional, name)
