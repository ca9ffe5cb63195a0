"""Module bookkeeping: parameter/buffer registry, state dicts (round trips,
strict key and shape checks), freeze/unfreeze, train/eval, dtype casts, and
cnnfast's .npz save/load."""
import numpy as np
import pytest

import cnnfast.nn as nn
from cnnfast import io
from cnnfast.models import lenet5, resnet18


class Net(nn.Module):
    """A small two-branch-free net with a nested container and a buffer holder."""

    def __init__(self, dtype=np.float32):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, dtype=dtype),
                                      nn.BatchNorm2d(4, dtype=dtype), nn.ReLU())
        self.pool = nn.GlobalAvgPool2d()
        self.head = nn.Linear(4, 3, dtype=dtype)

    def forward(self, x):
        return self.head(self.pool(self.features(x)))

    def backward(self, g):
        return self.features.backward(self.pool.backward(self.head.backward(g)))


KEYS = ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
        "features.1.running_mean", "features.1.running_var", "head.weight", "head.bias"]


def _step(net, rng):
    x = rng.standard_normal((2, 1, 6, 6)).astype(net.head.weight.dtype)
    y = net(x)
    net.backward(np.ones_like(y))


def test_names_follow_attributes():
    net = Net()
    assert list(net.state_dict()) == KEYS
    params = [k for k, _ in net.named_parameters()]
    assert params == [k for k in KEYS if "running" not in k]
    assert [k for k, _ in net.named_buffers()] == ["features.1.running_mean",
                                                   "features.1.running_var"]
    assert all(isinstance(p, nn.Parameter) for p in net.parameters())
    assert len(net.parameters()) == 6


def test_state_dict_is_a_copy():
    net = Net()
    state = net.state_dict()
    state["head.weight"][...] = 123
    assert not np.any(net.head.weight.data == 123)


def test_state_dict_round_trip(rng):
    a, b = Net(), Net()
    _step(a, rng)   # moves the running statistics away from their defaults
    b.load_state_dict(a.state_dict())
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(va, vb, err_msg=k)
    a.eval()
    b.eval()
    x = rng.standard_normal((3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))


def test_load_keeps_the_dtype_of_the_arrays():
    net = Net()
    state = {k: v.astype(np.float64) for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert all(v.dtype == np.float64 for v in net.state_dict().values())


def test_strict_loading_reports_missing_and_unexpected_keys():
    net = Net()
    state = net.state_dict()
    del state["head.bias"]
    state["head.extra"] = np.zeros(3, np.float32)
    before = net.head.weight.data.copy()
    with pytest.raises(ValueError) as err:
        net.load_state_dict({**state, "head.weight": before + 1})
    assert "missing key(s): head.bias" in str(err.value)
    assert "unexpected key(s): head.extra" in str(err.value)
    np.testing.assert_array_equal(net.head.weight.data, before)   # nothing half-loaded
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert missing == ["head.bias"] and unexpected == ["head.extra"]


def test_shape_mismatch_is_an_error_even_when_not_strict():
    net = Net()
    state = net.state_dict()
    state["head.weight"] = np.zeros((5, 4), np.float32)
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"head.weight.*\(3, 4\).*\(5, 4\)"):
            net.load_state_dict(state, strict=strict)


def test_num_batches_tracked_is_accepted_and_ignored():
    net = Net()
    state = net.state_dict()
    state["features.1.num_batches_tracked"] = np.array(5)
    net.load_state_dict(state)
    assert "features.1.num_batches_tracked" not in net.state_dict()


def test_train_eval_propagate():
    net = Net()
    assert net.training and net.features[1].training
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_freeze_leaves_parameters_untouched(rng):
    from cnnfast.optim import SGD

    net = Net()
    net.features.freeze()
    frozen = {k: v.copy() for k, v in net.state_dict().items() if k.startswith("features.0")
              or k in ("features.1.weight", "features.1.bias")}
    opt = SGD(net.parameters(), 0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        _step(net, rng)
        opt.step()
    for name, p in net.named_parameters():
        if name.startswith("features"):
            assert p.grad is None, name
            np.testing.assert_array_equal(p.data, frozen[name])
    assert set(net.named_grads()) == {"head.weight", "head.bias"}
    net.features.unfreeze()
    _step(net, rng)
    assert set(net.named_grads()) == {k for k in KEYS if "running" not in k}


def test_frozen_model_still_returns_the_input_gradient(rng):
    net = Net(np.float64)
    x = rng.standard_normal((2, 1, 6, 6))
    y = net(x)
    g_ref = net.backward(np.ones_like(y))
    net.freeze()
    net(x)
    np.testing.assert_allclose(net.backward(np.ones_like(y)), g_ref)
    assert net.named_grads() == {}


def test_to_casts_parameters_and_buffers(rng):
    net = Net().to(np.float64)
    assert all(v.dtype == np.float64 for v in net.state_dict().values())
    y = net(rng.standard_normal((2, 1, 6, 6)))
    assert y.dtype == np.float64


def test_repr_lists_children():
    text = repr(Net())
    assert "(features): Sequential(" in text and "(0): Conv2d(1, 4" in text


def test_load_state_dict_assign_takes_the_arrays_without_copying(rng):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm2d(2))
    state = {k: rng.standard_normal(v.shape).astype(np.float32)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)                   # default: copies
    assert not np.shares_memory(model[0].weight.data, state["0.weight"])
    model.load_state_dict(state, assign=True)      # torch's keyword: the arrays themselves
    assert model[0].weight.data is state["0.weight"]
    assert model[1].running_mean is state["1.running_mean"]
    # read-only, non-contiguous or byte-swapped arrays are still copied
    frozen = state["0.weight"].copy()
    frozen.flags.writeable = False
    odd = {"0.weight": frozen, "0.bias": state["0.bias"].astype(">f4"),
           "1.weight": np.repeat(state["1.weight"], 2)[::2]}
    model.load_state_dict(odd, strict=False, assign=True)
    for key, value in odd.items():
        mod, attr = key.split(".")
        arr = getattr(model[int(mod)], attr).data
        assert not np.shares_memory(arr, value) and arr.flags.writeable and arr.dtype.isnative
        np.testing.assert_array_equal(arr, value)


# --------------------------------------------------------------- save/load

def test_save_load_round_trip(tmp_path, rng):
    a, b = lenet5(), lenet5()
    path = io.save(a, tmp_path / "w")
    assert path.endswith(".npz")
    assert io.load(b, path) is b
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(a.eval()(x), b.eval()(x))


def test_loading_another_architecture_fails_clearly(tmp_path):
    path = io.save(lenet5(), tmp_path / "lenet.npz")
    with pytest.raises(ValueError, match="saved from a LeNet5, not a ResNet"):
        io.load(resnet18(), path)
    other = io.save(lenet5(num_classes=4), tmp_path / "lenet4.npz")
    with pytest.raises(ValueError, match="(?s)different layer sizes.*fc2.weight"):
        io.load(lenet5(), other)


def test_shared_parameter_is_listed_and_stepped_once(rng):
    # torch's named_parameters() drops duplicates (weight tying), so an
    # optimizer steps a shared Parameter once per step, not once per owner
    from cnnfast.optim import SGD

    seq = nn.Sequential(nn.Linear(3, 3, bias=False, dtype=np.float64),
                        nn.Linear(3, 3, bias=False, dtype=np.float64))
    seq[1].weight = seq[0].weight
    assert [k for k, _ in seq.named_parameters()] == ["0.weight"]
    assert list(seq.state_dict()) == ["0.weight", "1.weight"]   # torch keeps both keys
    p = seq[0].weight
    before = p.data.copy()
    p.accumulate(np.ones((3, 3)))
    SGD(seq.parameters(), 0.5).step()
    np.testing.assert_allclose(p.data, before - 0.5)
