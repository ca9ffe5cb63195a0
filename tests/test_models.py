"""cnnfast.models: every model builds and runs forward/backward; parameter
counts and state-dict keys are torchvision's; the residual and Inception
blocks pass finite-difference checks; LeNet-5 and ResNet-18 agree with torch
twins (outputs, gradients, one optimizer step); LeNet-5 learns."""
import numpy as np
import pytest

import cnnfast
import cnnfast.nn as nn
from cnnfast import models
from cnnfast.bench.train import torch_lenet5, torch_resnet18
from cnnfast.optim import SGD, Adam

# (model, input size): AlexNet's stem needs at least 63x63
SMALL_INPUTS = {"lenet5": 32, "alexnet": 64, "vgg11": 32, "vgg16": 32, "googlenet": 32,
                "resnet18": 32, "resnet34": 32, "resnet50": 32, "mobilenet_v2": 32}
# ResNet-101/152 are ResNet-50's code with more blocks: test_models_mobilenet_resnet.py
# builds them (parameter counts, keys, a forward); the per-model tests below skip them
ZOO = [name for name in models.MODELS if name not in ("resnet101", "resnet152")]

# Published parameter counts of the torchvision models (1000 classes, no aux
# heads); LeNet-5's is 156 + 2416 + 48120 + 10164 + 850.
PARAM_COUNTS = {"lenet5": 61_706, "alexnet": 61_100_840, "vgg11": 132_863_336,
                "vgg16": 138_357_544, "googlenet": 6_624_904, "resnet18": 11_689_512,
                "resnet34": 21_797_672, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872}

# Sample keys and shapes, read off torchvision's alexnet.py, vgg.py, resnet.py
# and googlenet.py (Sequential indices count the parameter-free layers too).
EXPECTED_KEYS = {
    "lenet5": {"conv1.weight": (6, 1, 5, 5), "conv3.weight": (120, 16, 5, 5),
               "fc1.weight": (84, 120), "fc2.bias": (10,)},
    "alexnet": {"features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5),
                "features.6.weight": (384, 192, 3, 3), "features.8.weight": (256, 384, 3, 3),
                "features.10.weight": (256, 256, 3, 3), "classifier.1.weight": (4096, 9216),
                "classifier.4.weight": (4096, 4096), "classifier.6.weight": (1000, 4096)},
    "vgg11": {"features.0.weight": (64, 3, 3, 3), "features.18.weight": (512, 512, 3, 3),
              "classifier.0.weight": (4096, 25088), "classifier.3.weight": (4096, 4096),
              "classifier.6.bias": (1000,)},
    "vgg16": {"features.2.weight": (64, 64, 3, 3), "features.28.weight": (512, 512, 3, 3),
              "classifier.0.weight": (4096, 25088), "classifier.6.weight": (1000, 4096)},
    "googlenet": {"conv1.conv.weight": (64, 3, 7, 7), "conv1.bn.running_var": (64,),
                  "conv3.conv.weight": (192, 64, 3, 3),
                  "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),   # 3x3, as torchvision
                  "inception4e.branch2.1.conv.weight": (320, 160, 3, 3),
                  "inception5b.branch4.1.bn.running_mean": (128,), "fc.weight": (1000, 1024)},
    "resnet18": {"conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,),
                 "layer1.1.conv2.weight": (64, 64, 3, 3),
                 "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                 "layer2.0.downsample.1.running_var": (128,), "layer4.1.bn2.bias": (512,),
                 "fc.weight": (1000, 512)},
    "resnet34": {"layer3.5.conv2.weight": (256, 256, 3, 3), "layer4.2.bn2.weight": (512,),
                 "layer4.0.downsample.0.weight": (512, 256, 1, 1)},
    "resnet50": {"layer1.0.conv1.weight": (64, 64, 1, 1), "layer1.0.conv3.weight": (256, 64, 1, 1),
                 "layer1.0.downsample.0.weight": (256, 64, 1, 1),
                 "layer2.0.conv2.weight": (128, 128, 3, 3), "layer4.2.bn3.running_var": (2048,),
                 "fc.weight": (1000, 2048)},
    "mobilenet_v2": {"features.0.0.weight": (32, 3, 3, 3), "features.0.1.running_mean": (32,),
                     "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.1.conv.1.weight": (16, 32, 1, 1),
                     "features.2.conv.0.0.weight": (96, 16, 1, 1),
                     "features.2.conv.1.0.weight": (96, 1, 3, 3),
                     "features.17.conv.3.bias": (320,), "features.18.0.weight": (1280, 320, 1, 1),
                     "classifier.1.weight": (1000, 1280)},
}
ABSENT_KEYS = {"resnet18": ["layer1.0.downsample.0.weight", "conv1.bias"],
               "googlenet": ["aux1.fc1.weight", "conv1.conv.bias"]}


@pytest.mark.parametrize("name", ZOO)
def test_builds_with_torchvision_layout_and_runs(rng, name):
    nn.manual_seed(0)
    model = models.MODELS[name]()        # defaults: 1000 classes, 3 channels (LeNet: 10, 1)
    assert sum(p.data.size for p in model.parameters()) == PARAM_COUNTS[name]
    state = model.state_dict()
    for key, shape in EXPECTED_KEYS[name].items():
        assert state[key].shape == shape, key
    for key in ABSENT_KEYS.get(name, []):
        assert key not in state
    assert all(v.dtype == np.float32 for v in state.values())
    in_ch = 1 if name == "lenet5" else 3
    classes = 10 if name == "lenet5" else 1000
    size = SMALL_INPUTS[name]
    x = rng.standard_normal((2, in_ch, size, size)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, classes) and y.dtype == np.float32 and np.all(np.isfinite(y))
    g = model.backward(np.ones_like(y) / y.size)
    assert g.shape == x.shape and np.all(np.isfinite(g))
    assert set(model.named_grads()) == {k for k, _ in model.named_parameters()}
    model.eval()
    assert model(x).shape == (2, classes)


def test_num_classes_and_in_channels():
    m = models.resnet18(num_classes=7, in_channels=1, dtype=np.float64)
    assert m.conv1.weight.shape == (64, 1, 7, 7) and m.fc.weight.shape == (7, 512)
    assert m.fc.weight.dtype == np.float64
    assert models.googlenet(num_classes=3, in_channels=2).fc.weight.shape == (3, 1024)


def test_googlenet_aux_parameter_count():
    aux = models.googlenet(aux_logits=True).state_dict()
    assert aux["aux1.fc1.weight"].shape == (1024, 2048)
    assert aux["aux2.conv.conv.weight"].shape == (128, 528, 1, 1)
    assert sum(v.size for k, v in aux.items() if "running" not in k) == 13_004_888


def test_googlenet_aux_heads_and_transform_input(rng):
    nn.manual_seed(0)
    model = models.googlenet(num_classes=5, aux_logits=True, transform_input=True,
                             dtype=np.float64)
    x = rng.standard_normal((2, 3, 32, 32))
    out = model(x)
    assert isinstance(out, models.GoogLeNetOutputs)
    assert [o.shape for o in out] == [(2, 5)] * 3
    g_main_only = model.backward(np.ones((2, 5)))
    model.zero_grad()
    g_all = model.backward(tuple(np.ones((2, 5)) for _ in out))
    assert g_all.shape == x.shape and not np.allclose(g_all, g_main_only)
    assert "aux1.fc2.weight" in model.named_grads()
    model.eval()
    assert model(x).shape == (2, 5)     # eval: logits only


def _check_block_gradients(module, x, rng, eps=1e-6):
    module.train()
    y = module(x)
    w = rng.standard_normal(y.shape)
    module.zero_grad()
    gx = module.backward(w)
    grads = module.named_grads()
    targets = [(x, gx)] + [(p.data, grads[k]) for k, p in module.named_parameters()]
    for array, analytic in targets:
        for flat in rng.choice(array.size, size=min(6, array.size), replace=False):
            idx = np.unravel_index(flat, array.shape)
            old = array[idx]
            array[idx] = old + eps
            up = np.sum(module(x) * w)
            array[idx] = old - eps
            down = np.sum(module(x) * w)
            array[idx] = old
            assert analytic[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("block", ["identity", "downsample"])
def test_basic_block_gradients(rng, block):
    nn.manual_seed(0)
    if block == "identity":
        m = models.BasicBlock(3, 3, dtype=np.float64)
    else:
        ds = models.resnet.downsample(2, 4, 2, np.float64)
        m = models.BasicBlock(2, 4, stride=2, downsample=ds, dtype=np.float64)
    x = rng.standard_normal((2, m.conv1.in_channels, 5, 5))
    _check_block_gradients(m, x, rng)


def test_inception_gradients(rng):
    nn.manual_seed(0)
    m = models.Inception(4, 2, 2, 3, 2, 3, 2, dtype=np.float64)
    x = rng.standard_normal((2, 4, 5, 5))
    assert m(x).shape == (2, 2 + 3 + 3 + 2, 5, 5)
    _check_block_gradients(m, x, rng)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        models.lenet5(num_classes=0)
    with pytest.raises(ValueError, match="in_channels"):
        models.resnet18(in_channels=0)
    with pytest.raises(ValueError, match="transform_input"):
        models.googlenet(in_channels=1, transform_input=True)
    with pytest.raises(ValueError, match="32x32"):
        models.lenet5()(np.zeros((1, 1, 28, 28), np.float32))


# ------------------------------------------------------------------- torch

TWINS = {"lenet5": (torch_lenet5, 1, 32), "resnet18": (torch_resnet18, 3, 32)}


def _twins(torch, name, rng):
    nn.manual_seed(1)
    ours = models.MODELS[name](num_classes=10, in_channels=TWINS[name][1], dtype=np.float64)
    # non-default BatchNorm affine parameters, so they matter in the comparison
    for key, p in ours.named_parameters():
        if ".bn" in key or "bn1" in key or "downsample.1" in key:
            p.data = p.data + 0.1 * rng.standard_normal(p.shape)
    theirs = TWINS[name][0](torch).double()
    state = {k: torch.from_numpy(v) for k, v in ours.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    extra = set(theirs.state_dict()) - set(state)
    assert all(k.endswith("num_batches_tracked") for k in extra)
    return ours, theirs


@pytest.mark.parametrize("name", list(TWINS))
def test_matches_torch_twin(rng, name):
    torch = pytest.importorskip("torch")
    ours, theirs = _twins(torch, name, rng)
    size = TWINS[name][2]
    x = rng.standard_normal((3, TWINS[name][1], size, size))
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    y = ours(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-10)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    tgrads = {k: p.grad.numpy() for k, p in theirs.named_parameters()}
    ograds = ours.named_grads()
    assert set(ograds) == set(tgrads)
    for k in ograds:
        # summed in another order than torch's (cancellation in small
        # elements): the error bound scales with the gradient's magnitude
        scale = max(1.0, float(np.abs(tgrads[k]).max()))
        np.testing.assert_allclose(ograds[k], tgrads[k], rtol=1e-8, atol=1e-10 * scale,
                                   err_msg=k)
    # running statistics moved identically; eval mode then agrees too
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v, theirs.state_dict()[k].numpy(), rtol=1e-10, atol=1e-12)
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-10)


OPTIMIZERS = [
    ("sgd_momentum_wd", lambda ps: SGD(ps, 0.05, momentum=0.9, weight_decay=1e-3),
     lambda t, ps: t.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("sgd_nesterov", lambda ps: SGD(ps, 0.05, momentum=0.9, nesterov=True),
     lambda t, ps: t.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", lambda ps: Adam(ps, lr=1e-3, weight_decay=1e-4),
     lambda t, ps: t.optim.Adam(ps, lr=1e-3, weight_decay=1e-4)),
]


@pytest.mark.parametrize("name", list(TWINS))
@pytest.mark.parametrize("opt_name, make, make_torch", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_training_steps_match_torch(rng, name, opt_name, make, make_torch):
    torch = pytest.importorskip("torch")
    ours, theirs = _twins(torch, name, rng)
    opt, topt = make(ours.parameters()), make_torch(torch, theirs.parameters())
    loss_fn, tloss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    size = TWINS[name][2]
    for _ in range(2):   # two steps: the second exercises momentum / Adam state
        x = rng.standard_normal((4, TWINS[name][1], size, size))
        y = rng.integers(0, 10, size=4)
        loss = loss_fn(ours(x), y)
        opt.zero_grad()
        ours.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        tloss = tloss_fn(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-9)
    tstate = theirs.state_dict()
    # Adam divides by sqrt(v): where a gradient is at rounding level, a
    # different (equally exact) summation order moves that step by a few
    # 1e-9, so the absolute tolerance is a millionth of the lr-sized step
    atol = 1e-8 if opt_name == "adam" else 1e-9
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v, tstate[k].numpy(), rtol=1e-7, atol=atol, err_msg=k)


def test_lenet5_learns_in_one_short_epoch():
    from cnnfast.cli import load_digits_32
    from cnnfast.data import DataLoader, Normalize

    x, y, _, _ = load_digits_32()
    x, y = Normalize([x.mean()], [x.std()])(x[:640]), y[:640]
    nn.manual_seed(0)
    model = models.lenet5()
    loss_fn = nn.CrossEntropyLoss()
    opt = SGD(model.parameters(), 0.05, momentum=0.9)

    def full_loss():
        model.eval()
        value = loss_fn(model(x), y)
        model.train()
        return value

    before = full_loss()
    for xb, yb in DataLoader(x, y, batch_size=32, seed=0):
        loss_fn(model(xb), yb)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    after = full_loss()
    assert after < 0.6 * before   # 20 steps: from chance (ln 10 = 2.3) to about 1


# ------------------------------------------ weights=, feature extraction, heads

HEADS = {"lenet5": ("fc2", 84), "alexnet": ("classifier.6", 4096),
         "vgg11": ("classifier.6", 4096), "vgg16": ("classifier.6", 4096),
         "googlenet": ("fc", 1024), "resnet18": ("fc", 512), "resnet34": ("fc", 512),
         "resnet50": ("fc", 2048), "mobilenet_v2": ("classifier.1", 1280)}


def _small(name, **kwargs):
    if name in ("vgg11", "vgg16"):
        kwargs.setdefault("init_weights", False)     # 2-3 s of random numbers saved
    return models.MODELS[name](num_classes=3, in_channels=1 if name == "lenet5" else 3,
                               **kwargs)


@pytest.mark.parametrize("name", ZOO)
def test_forward_features_feed_the_head(rng, name):
    nn.manual_seed(0)
    model = _small(name).eval()
    head_name, width = HEADS[name]
    assert model.head_name == head_name
    assert isinstance(model.head, nn.Linear) and model.head.in_features == width
    size = SMALL_INPUTS[name]
    x = rng.standard_normal((2, 1 if name == "lenet5" else 3, size, size)).astype(np.float32)
    feats = model.forward_features(x)
    assert feats.shape == (2, width)
    np.testing.assert_array_equal(model(x), model.head(feats))
    new = model.replace_head(5)
    assert model.head is new and new.weight.dtype == np.float32
    assert model(x).shape == (2, 5)
    assert f"{head_name}.weight" in model.state_dict()


def test_googlenet_replace_head_renews_aux_heads_too():
    model = models.googlenet(num_classes=3, aux_logits=True)
    model.replace_head(7)
    assert model.fc.out_features == model.aux1.fc2.out_features == model.aux2.fc2.out_features == 7


def _fit_head(model, x, y, steps, full_backward, lr):
    loss_fn = nn.CrossEntropyLoss()
    head = model.head
    opt = Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    feats = None if full_backward else model.forward_features(x)   # base run once, in eval
    losses = []
    for _ in range(steps):
        if full_backward:
            losses.append(loss_fn(model(x), y))
            opt.zero_grad()
            model.backward(loss_fn.backward())
        else:
            losses.append(loss_fn(head(feats), y))
            opt.zero_grad()
            head.backward(loss_fn.backward())
        opt.step()
    return losses


@pytest.mark.parametrize("name, full_backward, lr", [("resnet18", False, 0.01),
                                                     ("lenet5", True, 0.1)])
def test_frozen_base_and_new_head_train(rng, name, full_backward, lr):
    """Feature extraction (the frozen base run once in eval mode, then only the
    head trained on its output) and fine-tuning through a frozen base (the
    whole model in train mode; the base passes gradients but gets none)."""
    nn.manual_seed(0)
    model = _small(name)
    model.freeze()
    if not full_backward:
        model.eval()                       # BatchNorm statistics stay as loaded
    head = model.replace_head(4)
    base_before = {k: v for k, v in model.state_dict().items()
                   if not k.startswith(model.head_name)}
    in_ch = 1 if name == "lenet5" else 3
    x = rng.standard_normal((16, in_ch, 32, 32)).astype(np.float32)
    y = rng.integers(0, 4, size=16)
    losses = _fit_head(model, x, y, 15, full_backward, lr)
    assert losses[-1] < 0.7 * losses[0], losses
    assert set(model.named_grads()) == {f"{model.head_name}.weight", f"{model.head_name}.bias"}
    after = model.state_dict()
    for k, v in base_before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)
    assert head.weight.requires_grad


def test_weights_argument_every_format(tmp_path, rng):
    import torchfiles

    nn.manual_seed(0)
    source = models.resnet18(num_classes=3, in_channels=1)
    paths = [cnnfast.save(source, tmp_path / "w.npz"),
             torchfiles.save_arrays(tmp_path / "w.pth", source.state_dict())]
    try:
        import safetensors  # noqa: F401
        paths.append(cnnfast.save(source, tmp_path / "w.safetensors"))
    except ImportError:
        pass
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    expected = source.eval()(x)
    for path in paths:
        nn.manual_seed(1)                  # a different random start
        model = models.resnet18(num_classes=3, in_channels=1, weights=path).eval()
        np.testing.assert_array_equal(model(x), expected, err_msg=str(path))
    # float64 model from a float32 file: the model's dtype wins
    m64 = models.resnet18(num_classes=3, in_channels=1, dtype=np.float64, weights=paths[0])
    assert {v.dtype for v in m64.state_dict().values()} == {np.dtype(np.float64)}
    np.testing.assert_allclose(m64.eval()(x.astype(np.float64)), expected, rtol=1e-4, atol=1e-5)


def test_weights_argument_errors(tmp_path):
    path = cnnfast.save(models.lenet5(), tmp_path / "lenet.npz")
    with pytest.raises(ValueError, match=r"(?s)weights='.*lenet.npz' do not fit this ResNet"
                                         r".*missing key"):
        models.resnet18(weights=path)
    with pytest.raises(ValueError, match="shape mismatch for fc2.weight"):
        models.lenet5(num_classes=4, weights=path)
    with pytest.raises(TypeError, match="weights must be None or the path"):
        models.lenet5(weights=models.lenet5().state_dict())
    with pytest.raises(FileNotFoundError):
        models.lenet5(weights=tmp_path / "missing.pth")


def test_googlenet_weights_with_aux_heads_as_torchvision_publishes(tmp_path, rng):
    nn.manual_seed(0)
    published = models.googlenet(num_classes=3, aux_logits=True)    # the file has aux1/aux2
    path = cnnfast.save(published, tmp_path / "googlenet.npz")
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = published.eval()(x)
    plain = models.googlenet(num_classes=3, weights=path)          # aux keys dropped
    assert plain.aux1 is None and not any(k.startswith("aux") for k in plain.state_dict())
    np.testing.assert_array_equal(plain.eval()(x), expected)
    with_aux = models.googlenet(num_classes=3, aux_logits=True, weights=path)
    assert with_aux.state_dict().keys() == published.state_dict().keys()


def test_autoencoder_with_transposed_convolutions_round_trips_and_freezes(tmp_path, rng):
    """A convolutional autoencoder (the decoder made of ConvTranspose2d, as in
    examples/autoencoder.py): its state dict round-trips through a file, and
    with the encoder frozen the decoder alone gets gradients and trains while
    the encoder's weights stay as they were."""
    from cnnfast.optim import SGD
    nn.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
    decoder = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(),
                            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1))
    model = nn.Sequential(encoder, decoder)
    x = rng.standard_normal((6, 1, 16, 16)).astype(np.float32)
    y = model(x)
    assert y.shape == x.shape
    path = cnnfast.save(model, tmp_path / "autoencoder.safetensors")
    twin = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(),
                      nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)))
    cnnfast.load(twin, path)
    assert set(twin.state_dict()) == set(model.state_dict())
    assert {k for k in model.state_dict() if k.startswith("1.")} == {
        "1.0.weight", "1.0.bias", "1.2.weight", "1.2.bias"}
    np.testing.assert_array_equal(twin(x), y)

    encoder.freeze()
    before = {k: v.copy() for k, v in encoder.state_dict().items()}
    opt = SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        y = model(x)
        losses.append(float(((y - x) ** 2).mean()))
        model.backward(2 * (y - x) / y.size)
        opt.step()
    assert losses[-1] < losses[0]
    assert set(model.named_grads()) == {"1.0.weight", "1.0.bias", "1.2.weight", "1.2.bias"}
    for k, v in encoder.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
