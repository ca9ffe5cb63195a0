"""cnnfast.onnx: models exported from plain-torch twins (the legacy
TorchScript exporter: the dynamo one needs onnxscript) at opsets 11 and
17, static and dynamic batch, equal onnxruntime and torch; gradients in
training mode equal torch's autograd; per-operator graphs built with
onnx.helper cover every attribute form (outputs against onnxruntime,
gradients against finite differences); hostile files are refused."""
import io
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnfast  # noqa: E402
import cnnfast.onnx as connx  # noqa: E402
from cnnfast.bench.train import torch_lenet5, torch_resnet18  # noqa: E402

ort = pytest.importorskip("onnxruntime")


# ------------------------------------------------------------ torch twins

def _mobilenet_block(torch):
    """An inverted residual (MobileNetV2): 1x1 expand, depthwise 3x3, 1x1
    project, ReLU6 (exported as Clip), the shortcut add."""
    T = torch.nn

    class Net(T.Module):
        def __init__(self):
            super().__init__()
            self.stem = T.Sequential(T.Conv2d(3, 8, 3, 2, 1, bias=False), T.BatchNorm2d(8),
                                     T.ReLU6())
            self.expand = T.Sequential(T.Conv2d(8, 24, 1, bias=False), T.BatchNorm2d(24),
                                       T.ReLU6())
            self.dw = T.Sequential(T.Conv2d(24, 24, 3, 1, 1, groups=24, bias=False),
                                   T.BatchNorm2d(24), T.ReLU6())
            self.project = T.Sequential(T.Conv2d(24, 8, 1, bias=False), T.BatchNorm2d(8))
            self.head = T.Linear(8, 5)

        def forward(self, x):
            x = self.stem(x)
            x = x + self.project(self.dw(self.expand(x)))
            return self.head(torch.flatten(T.functional.adaptive_avg_pool2d(x, 1), 1))

    return Net()


def _googlenet_like(torch):
    """Inception-style branches joined by a Concat, max pooling with
    ceil_mode, a 1x1 reduction before the 3x3."""
    T = torch.nn

    class Net(T.Module):
        def __init__(self):
            super().__init__()
            self.stem = T.Conv2d(3, 8, 3, padding=1)
            self.pool = T.MaxPool2d(3, 2, ceil_mode=True)
            self.b1 = T.Conv2d(8, 4, 1)
            self.b2 = T.Sequential(T.Conv2d(8, 4, 1), T.ReLU(), T.Conv2d(4, 6, 3, padding=1))
            self.b3 = T.Sequential(T.MaxPool2d(3, 1, 1), T.Conv2d(8, 2, 1))
            self.fc = T.Linear(12, 4)

        def forward(self, x):
            x = self.pool(torch.relu(self.stem(x)))
            x = torch.cat([torch.relu(self.b1(x)), torch.relu(self.b2(x)),
                           torch.relu(self.b3(x))], 1)
            return self.fc(x.mean(dim=(2, 3)))

    return Net()


def _vgg_like(torch):
    T = torch.nn

    class Net(T.Module):
        def __init__(self):
            super().__init__()
            self.features = T.Sequential(
                T.Conv2d(3, 8, 3, padding=1), T.ReLU(), T.MaxPool2d(2),
                T.Conv2d(8, 16, 3, padding=1), T.ReLU(), T.MaxPool2d(2))
            self.classifier = T.Sequential(T.Linear(16 * 4 * 4, 32), T.ReLU(), T.Dropout(0.5),
                                           T.Linear(32, 6))

        def forward(self, x):
            # view(size(0), -1): the Shape -> Gather -> Concat -> Reshape chain
            return self.classifier(self.features(x).view(x.size(0), -1))

    return Net()


def _autoencoder(torch):
    T = torch.nn

    class Net(T.Module):
        def __init__(self):
            super().__init__()
            self.enc = T.Sequential(T.Conv2d(1, 8, 3, 2, 1), T.ReLU(), T.Conv2d(8, 16, 3, 2, 1),
                                    T.LeakyReLU(0.1))
            self.dec = T.Sequential(T.ConvTranspose2d(16, 8, 3, 2, 1, output_padding=1),
                                    T.ELU(), T.ConvTranspose2d(8, 1, 4, 2, 1), T.Sigmoid())

        def forward(self, x):
            return self.dec(self.enc(x))

    return Net()


def _zoo(torch):
    """The remaining operators torch writes: PReLU, Hardswish, Hardsigmoid,
    Tanh, average pooling without padding in the count, reflection padding,
    nearest and bilinear upsampling, softmax."""
    T = torch.nn

    class Net(T.Module):
        def __init__(self):
            super().__init__()
            self.pad = T.ReflectionPad2d((1, 2, 0, 1))
            self.conv = T.Conv2d(2, 4, 3)
            self.prelu = T.PReLU(4)
            self.pool = T.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
            self.up1 = T.Upsample(scale_factor=2, mode="nearest")
            self.up2 = T.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.conv2 = T.Conv2d(8, 3, 1)

        def forward(self, x):
            x = self.pool(self.prelu(self.conv(self.pad(x))))
            x = torch.cat([T.functional.hardswish(self.up1(x)),
                           T.functional.hardsigmoid(self.up2(torch.tanh(x)))], 1)
            return torch.softmax(self.conv2(x), dim=1)

    return Net()


# name: (builder, input shape (N, C, H, W))
TWINS = {"lenet5": (torch_lenet5, (2, 1, 32, 32)),
         "resnet18": (torch_resnet18, (2, 3, 64, 64)),
         "mobilenet_block": (_mobilenet_block, (2, 3, 16, 16)),
         "googlenet_like": (_googlenet_like, (2, 3, 15, 15)),
         "vgg_like": (_vgg_like, (2, 3, 16, 16)),
         "autoencoder": (_autoencoder, (2, 1, 16, 16)),
         "zoo": (_zoo, (2, 2, 9, 10))}


# the gradient and fusion checks run ResNet-18 at 32x32 (layer4 at 1x1), to stay fast
SMALLER = {"resnet18": (2, 3, 32, 32)}


def _twin(torch, name, double=False):
    torch.manual_seed(0)
    model = TWINS[name][0](torch)
    # non-default BatchNorm statistics and affine parameters, so they matter
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.add_(0.2 * torch.randn_like(m.weight))
                m.bias.add_(0.2 * torch.randn_like(m.bias))
                m.running_mean.add_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.mul_(1 + 0.2 * torch.rand_like(m.running_var))
    return (model.double() if double else model).eval()


def _export(torch, model, x, opset, dynamic, **kwargs):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}} if dynamic else None,
                          **kwargs)
    return buf.getvalue()


def _ort(data, feeds):
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


CASES = [(name, opset, dynamic) for name in TWINS for opset in (11, 17)
         for dynamic in (False, True) if name != "resnet18" or opset == 11 or dynamic]


@pytest.mark.parametrize("name, opset, dynamic", CASES)
def test_exported_twins_match_onnxruntime_and_torch(rng, name, opset, dynamic):
    torch = pytest.importorskip("torch")
    model = _twin(torch, name)
    x = rng.standard_normal(TWINS[name][1]).astype(np.float32)
    data = _export(torch, model, torch.from_numpy(x), opset, dynamic)
    ours = connx.load(data)
    y = ours(x)
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(y, _ort(data, {"x": x})[0], rtol=1e-4, atol=2e-5)
    if dynamic:   # another batch size through the same (runtime shape chain) graph
        x3 = rng.standard_normal((3,) + TWINS[name][1][1:]).astype(np.float32)
        np.testing.assert_allclose(ours(x3), _ort(data, {"x": x3})[0], rtol=1e-4, atol=2e-5)
    else:
        with pytest.raises(ValueError, match="input 'x' must have shape"):
            ours(np.zeros((3,) + TWINS[name][1][1:], np.float32))


@pytest.mark.parametrize("name", list(TWINS))
def test_gradients_in_training_mode_equal_torch_autograd(rng, name):
    """Exported with BatchNormalization kept (no constant folding), loaded
    in float64; one training-mode step: output, input gradient, every
    parameter gradient and the running statistics equal torch's."""
    torch = pytest.importorskip("torch")
    model = _twin(torch, name, double=True)
    x = rng.standard_normal(SMALLER.get(name, TWINS[name][1]))
    data = _export(torch, model, torch.from_numpy(x), 17, True, do_constant_folding=False)
    ours = connx.load(data, dtype=np.float64).train()
    model.train()
    for m in model.modules():   # the exported graph has no dropout (eval-mode export)
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    tx = torch.tensor(x, requires_grad=True)
    ty = model(tx)
    y = ours(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-11)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), rtol=1e-7, atol=1e-9)
    theirs = dict(model.named_parameters())
    grads = ours.named_grads()
    assert set(grads) == set(theirs)
    for key, p in theirs.items():
        # a BatchNorm over 2 values per channel (ResNet's 1x1 layer4) cancels heavily:
        # the tolerance is relative to the array's largest gradient
        expected = p.grad.numpy()
        np.testing.assert_allclose(grads[key], expected, rtol=1e-7,
                                   atol=1e-9 * (1 + np.abs(expected).max()), err_msg=key)
    state = ours.state_dict()
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_allclose(state[key], value.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=key)


def test_state_dict_keys_parameters_and_buffers(rng):
    torch = pytest.importorskip("torch")
    model = _twin(torch, "resnet18")
    x = torch.zeros(1, 3, 32, 32)
    ours = connx.load(_export(torch, model, x, 17, False, do_constant_folding=False))
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(ours.state_dict()) == expected
    assert {k for k, _ in ours.named_parameters()} == {k for k, _ in model.named_parameters()}
    assert {k for k, _ in ours.named_buffers()} == {k for k, _ in model.named_buffers()
                                                     if "num_batches" not in k}
    for key, value in model.state_dict().items():
        if key in expected:
            np.testing.assert_array_equal(ours.state_dict()[key], value.numpy())


def test_merged_initializers_become_one_parameter_per_consumer(rng):
    """torch's exporter merges equal initializers (fresh BatchNorm weights are
    all ones) behind Identity nodes: each layer still trains on its own."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = _vgg_like(torch)
    model.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1),
                                         torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                         torch.nn.Conv2d(4, 4, 3, padding=1),
                                         torch.nn.BatchNorm2d(4), torch.nn.MaxPool2d(4))
    model.classifier = torch.nn.Linear(64, 3)
    model.eval()
    data = _export(torch, model, torch.zeros(2, 3, 16, 16), 13, False, do_constant_folding=False)
    proto = onnx.load_from_string(data)
    assert any(n.op_type == "Identity" for n in proto.graph.node)   # the merge happened
    ours = connx.load(data).train()
    params = dict(ours.named_parameters())
    assert "features.1.weight" in params and "features.4.weight" in params
    assert params["features.1.weight"] is not params["features.4.weight"]
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    y = ours(x)
    ours.backward(np.ones_like(y))
    for p in ours.parameters():
        p.data -= 0.1 * p.grad
    assert not np.array_equal(params["features.1.weight"].data, params["features.4.weight"].data)


def test_fuse_matches_eval_mode_and_uses_fused_convolutions(rng):
    torch = pytest.importorskip("torch")
    from cnnfast.onnx._layers import FusedConv
    for name in ("resnet18", "mobilenet_block"):
        model = _twin(torch, name)
        x = rng.standard_normal(SMALLER.get(name, TWINS[name][1])).astype(np.float32)
        ours = connx.load(_export(torch, model, torch.from_numpy(x), 17, True,
                                  do_constant_folding=False))
        fused = ours.fuse()
        np.testing.assert_allclose(fused(x), ours(x), rtol=1e-4, atol=1e-5)
        kinds = [type(op) for op in fused.module._ops]
        convs = sum(isinstance(op, FusedConv) for op in fused.module._ops)
        assert convs == {"resnet18": 20, "mobilenet_block": 4}[name]
        assert all(k.__name__ not in ("BatchNorm",) for k in kinds)
        if name == "resnet18":   # every residual Add + Relu went into a convolution
            assert not any(getattr(op, "kind", None) == "Add" for op in fused.module._ops)
        with pytest.raises(RuntimeError, match="inference"):
            fused.train()
        # the original is untouched: its operators, weights and training still work
        assert any(type(op).__name__ == "BatchNorm" for op in ours._ops)
        for key, value in model.state_dict().items():
            if key in ours.state_dict():
                np.testing.assert_array_equal(ours.state_dict()[key], value.numpy())
        ours.train()
        ours.backward(np.ones_like(ours(x)))
        assert len(ours.named_grads()) == len(ours.parameters())


def test_save_load_and_channels_last(tmp_path, rng):
    torch = pytest.importorskip("torch")
    model = _twin(torch, "googlenet_like")
    x = rng.standard_normal((2, 3, 15, 15)).astype(np.float32)
    data = _export(torch, model, torch.from_numpy(x), 17, True)
    a = connx.load(data)
    b = connx.load(data)
    for p in a.parameters():
        p.data = p.data + np.float32(0.01)
    path = cnnfast.save(a, tmp_path / "m.npz")
    cnnfast.load(b, path)
    np.testing.assert_array_equal(a(x), b(x))
    last = connx.load(data, data_format="channels_last")
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    cnnfast.load(last, path)
    np.testing.assert_allclose(last(xl), a(x), rtol=1e-5, atol=1e-6)
    # 4-D outputs come back NHWC, and the input gradient too
    ae = _twin(torch, "autoencoder")
    xa = rng.standard_normal((2, 1, 16, 16)).astype(np.float32)
    data = _export(torch, ae, torch.from_numpy(xa), 11, False)
    first, lastm = connx.load(data).train(), connx.load(data, data_format="channels_last").train()
    y1, y2 = first(xa), lastm(np.ascontiguousarray(xa.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(y2, y1.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(y1.shape).astype(np.float32)
    g1 = first.backward(g)
    g2 = lastm.backward(np.ascontiguousarray(g.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(g2, g1.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-6)


def test_arguments_are_checked(rng):
    torch = pytest.importorskip("torch")
    data = _export(torch, _twin(torch, "lenet5"), torch.zeros(1, 1, 32, 32), 11, True)
    with pytest.raises(ValueError, match="dtype"):
        connx.load(data, dtype=np.int32)
    with pytest.raises(ValueError, match="data_format"):
        connx.load(data, data_format="NHWC")
    with pytest.raises(TypeError, match="must be a path, bytes"):
        connx.load(42)
    model = connx.load(data)
    with pytest.raises(TypeError, match="float32"):
        model(np.zeros((1, 1, 32, 32)))
    with pytest.raises(TypeError, match="takes 1 input"):
        model()
    with pytest.raises(RuntimeError, match="training mode"):
        model.train().backward(np.zeros((1, 10), np.float32))


# ------------------------------------------------- graphs built by hand

def _model(nodes, inputs, outputs, inits=(), opset=17):
    """A ModelProto: inputs [(name, shape)], float outputs (names, their
    shapes inferred, or (name, shape)), initializers {name: array}."""
    outputs = [(o, None) if isinstance(o, str) else o for o in outputs]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 9
    return onnx.shape_inference.infer_shapes(model)   # the outputs' shapes, as exporters write


def _check(model, feeds, rng, grad=True, rtol=1e-5, atol=1e-6):
    """Outputs equal onnxruntime's; in float64, the backward pass equals
    central finite differences of sum(y * g)."""
    data = model.SerializeToString()
    ours = connx.load(data)
    names = [i.name for i in model.graph.input if i.name not in
             {t.name for t in model.graph.initializer}]
    xs = [feeds[n] for n in names]
    y = ours(*xs)
    np.testing.assert_allclose(y, _ort(data, feeds)[0], rtol=rtol, atol=atol)
    if not grad:
        return
    m64 = connx.load(data, dtype=np.float64).train()
    x64 = [x.astype(np.float64) for x in xs]
    out = m64(*x64)
    g = rng.standard_normal(out.shape)
    gx = m64.backward(g)
    gx = gx if isinstance(gx, tuple) else (gx,)
    eps = 1e-6
    for x, gi in zip(x64, gx):
        # central differences at up to 24 positions (all of a small input)
        flat = rng.permutation(x.size)[:24]
        for idx in (np.unravel_index(i, x.shape) for i in flat):
            old = x[idx]
            x[idx] = old + eps
            up = np.sum(m64(*x64) * g)
            x[idx] = old - eps
            down = np.sum(m64(*x64) * g)
            x[idx] = old
            np.testing.assert_allclose(gi[idx], (up - down) / (2 * eps), rtol=1e-5, atol=1e-7,
                                       err_msg=f"position {idx}")


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("attrs", [
    dict(pads=[1, 0, 2, 1]),                                    # asymmetric
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER", strides=[2, 1]),
    dict(auto_pad="VALID", dilations=[2, 1]),
    dict(group=2, pads=[1, 1, 1, 1], dilations=[1, 2]),
])
def test_conv_attribute_forms(rng, attrs):
    w = _x(rng, 4, 4 // attrs.get("group", 1), 3, 2)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    model = _model([node], [("x", [1, 4, 6, 5])], ["y"], {"w": w, "b": _x(rng, 4)})
    _check(model, {"x": _x(rng, 1, 4, 6, 5)}, rng)


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0]),
    dict(strides=[2, 2], output_shape=[9, 8]),
    dict(strides=[2, 1], auto_pad="SAME_UPPER"),
    dict(group=2, dilations=[2, 1]),
])
def test_conv_transpose_attribute_forms(rng, attrs):
    w = _x(rng, 4, 3 // 1 if attrs.get("group", 1) == 1 else 2, 3, 3)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    model = _model([node], [("x", [1, 4, 4, 4])], ["y"], {"w": w})
    _check(model, {"x": _x(rng, 1, 4, 4, 4)}, rng)


@pytest.mark.parametrize("op, attrs", [
    ("MaxPool", dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 3], strides=[2, 1], auto_pad="SAME_UPPER")),
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[2, 1], pads=[1, 0, 0, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0],
                         count_include_pad=0)),
    ("AveragePool", dict(kernel_shape=[2, 3], auto_pad="SAME_LOWER", strides=[2, 2])),
    ("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
])
def test_pooling_attribute_forms(rng, op, attrs):
    model = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", [2, 3, 7, 6])], ["y"])
    _check(model, {"x": _x(rng, 2, 3, 7, 6)}, rng)


@pytest.mark.parametrize("attrs, a_shape, b_shape, c_shape", [
    (dict(transB=1), (3, 4), (5, 4), (5,)),
    (dict(transA=1, alpha=0.5, beta=2.0), (4, 3), (4, 5), (3, 5)),
    (dict(transA=1, transB=1, beta=0.5), (4, 3), (5, 4), (1, 5)),
    (dict(), (3, 4), (4, 5), None),
])
def test_gemm_forms_and_matmul(rng, attrs, a_shape, b_shape, c_shape):
    inits = {"B": _x(rng, *b_shape)}
    inputs = ["a", "B"]
    if c_shape:
        inits["C"] = _x(rng, *c_shape)
        inputs.append("C")
    model = _model([helper.make_node("Gemm", inputs, ["y"], **attrs)], [("a", list(a_shape))],
                   ["y"], inits)
    _check(model, {"a": _x(rng, *a_shape)}, rng)
    ours = connx.load(model.SerializeToString())
    assert set(k for k, _ in ours.named_parameters()) == set(inits)
    # MatMul of two runtime operands with broadcasting, and with a weight
    nodes = [helper.make_node("MatMul", ["a", "b"], ["t"]),
             helper.make_node("MatMul", ["t", "W"], ["y"])]
    model = _model(nodes, [("a", [2, 1, 3, 4]), ("b", [3, 4, 2])], ["y"], {"W": _x(rng, 2, 3)})
    _check(model, {"a": _x(rng, 2, 1, 3, 4), "b": _x(rng, 3, 4, 2)}, rng)


@pytest.mark.parametrize("opset", [9, 11, 13])
def test_clip_bounds_by_opset_and_activations(rng, opset):
    if opset < 11:
        clip = helper.make_node("Clip", ["x"], ["c"], min=-0.5, max=0.7)
        inits = {}
    else:
        clip = helper.make_node("Clip", ["x", "lo", "", ], ["c"])
        inits = {"lo": np.array(-0.5, np.float32)}
    nodes = [clip,
             helper.make_node("LeakyRelu", ["c"], ["a"], alpha=0.2),
             helper.make_node("Elu", ["x"], ["b"], alpha=0.7),
             helper.make_node("HardSigmoid", ["x"], ["h"], alpha=0.3, beta=0.4),
             helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("Mul", ["s", "h"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["q"]),
             helper.make_node("Sub", ["q", "x"], ["d"]),
             helper.make_node("Div", ["d", "k"], ["y"])]
    inits["k"] = np.array([1.5, 2.0, -3.0], np.float32).reshape(1, 3, 1)
    model = _model(nodes, [("x", [2, 3, 4])], ["y"], inits, opset=opset)
    _check(model, {"x": _x(rng, 2, 3, 4)}, rng)


@pytest.mark.parametrize("opset", [9, 11, 18])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_modes_by_opset(rng, opset, mode):
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    if opset < 11:
        node = helper.make_node("Pad", ["x"], ["y"], mode=mode, pads=pads, value=0.5)
        inits = {}
    else:
        node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
        inits = {"p": np.array(pads, np.int64), "v": np.array(0.5, np.float32)}
    model = _model([node], [("x", [1, 2, 4, 3])], ["y"], inits, opset=opset)
    _check(model, {"x": _x(rng, 1, 2, 4, 3)}, rng)


@pytest.mark.parametrize("mode, coord, extra", [
    ("nearest", "asymmetric", dict(nearest_mode="floor")),
    ("nearest", "half_pixel", dict(nearest_mode="round_prefer_ceil")),
    ("nearest", "tf_half_pixel_for_nn", dict(nearest_mode="round_prefer_floor")),
    ("linear", "half_pixel", {}),
    ("linear", "pytorch_half_pixel", {}),
    ("linear", "align_corners", {}),
    ("linear", "asymmetric", {}),
])
def test_resize_modes(rng, mode, coord, extra):
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode=mode,
                            coordinate_transformation_mode=coord, **extra)
    scales = np.array([1, 1, 2.0, 1.5], np.float32)
    model = _model([node], [("x", [1, 2, 3, 4])], ["y"], {"s": scales}, opset=13)
    _check(model, {"x": _x(rng, 1, 2, 3, 4)}, rng)
    # sizes instead of scales (downsampling too)
    node = helper.make_node("Resize", ["x", "", "", "z"], ["y"], mode=mode,
                            coordinate_transformation_mode=coord, **extra)
    model = _model([node], [("x", [1, 2, 5, 4])], ["y"],
                   {"z": np.array([1, 2, 3, 7], np.int64)}, opset=13)
    _check(model, {"x": _x(rng, 1, 2, 5, 4)}, rng)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_opset9_and_resize_opset10(rng, mode):
    scales = {"s": np.array([1, 1, 2, 3], np.float32)}
    for op, opset in (("Upsample", 9), ("Resize", 10)):
        model = _model([helper.make_node(op, ["x", "s"], ["y"], mode=mode)],
                       [("x", [1, 1, 3, 2])], ["y"], scales, opset=opset)
        _check(model, {"x": _x(rng, 1, 1, 3, 2)}, rng)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_reductions_softmax_squeeze_by_opset(rng, opset):
    if opset < 18:
        mean = helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 3], keepdims=1)
        mx = helper.make_node("ReduceMax", ["x"], ["r"], axes=[2], keepdims=0)
        inits = {}
    else:
        mean = helper.make_node("ReduceMean", ["x", "ax"], ["m"], keepdims=1)
        mx = helper.make_node("ReduceMax", ["x", "ax2"], ["r"], keepdims=0)
        inits = {"ax": np.array([1, 3], np.int64), "ax2": np.array([2], np.int64)}
    if opset < 13:
        sq = helper.make_node("Squeeze", ["m"], ["q"], axes=[1])
        un = helper.make_node("Unsqueeze", ["q"], ["u"], axes=[0])
    else:
        sq = helper.make_node("Squeeze", ["m", "one"], ["q"])
        un = helper.make_node("Unsqueeze", ["q", "zero"], ["u"])
        inits.update(one=np.array([1], np.int64), zero=np.array([0], np.int64))
    nodes = [mean, mx, sq, un,
             helper.make_node("Softmax", ["r"], ["s"], axis=1),
             helper.make_node("Flatten", ["u"], ["f"], axis=2),
             helper.make_node("Transpose", ["s"], ["t"], perm=[1, 0, 2]),
             helper.make_node("Flatten", ["t"], ["tf"], axis=1),
             helper.make_node("Concat", ["tf", "f"], ["y"], axis=1)]
    # shapes: x (2,3,4,5): m (2,1,4,1) q (2,4,1) u (1,2,4,1) f (2,4)?  kept simple below
    model = _model(nodes[:2] + [nodes[4], nodes[6], nodes[7]], [("x", [2, 3, 4, 5])], ["tf"],
                   {k: v for k, v in inits.items() if k.startswith("ax")}, opset=opset)
    _check(model, {"x": _x(rng, 2, 3, 4, 5)}, rng)
    model = _model([mean, sq, un, nodes[5]], [("x", [2, 3, 4, 5])], ["f"], inits, opset=opset)
    _check(model, {"x": _x(rng, 2, 3, 4, 5)}, rng)


@pytest.mark.parametrize("dynamic", [False, True])
def test_shape_chain_folds_or_runs(rng, dynamic):
    """x.view(x.size(0), -1) as exporters write it; Slice (inputs), Gather,
    Cast, ConstantOfShape, Expand on the way. Static: folded at load (no
    shape operator left); dynamic batch: runs per call."""
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Slice", ["r", "st", "en", "ax1"], ["sl"]),
             helper.make_node("Cast", ["n1"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("ConstantOfShape", ["two"], ["c"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Expand", ["c", "ones"], ["ce"]),
             helper.make_node("Mul", ["sl", "ce"], ["m"]),
             helper.make_node("Div", ["m", "nf"], ["y"])]
    inits = dict(zero=np.array(0, np.int64), axes0=i64(0), minus1=i64(-1), st=i64(1),
                 en=i64(2 ** 62), ax1=i64(1), two=i64(1, 1), ones=i64(1, 1))
    batch = "N" if dynamic else 2
    model = _model(nodes, [("x", [batch, 2, 3])], [("y", ["N", "M"])], inits, opset=13)
    _check(model, {"x": _x(rng, 2, 2, 3)}, rng)
    ours = connx.load(model.SerializeToString())
    left = {type(op).__name__ for op in ours._ops}
    assert ("Shape" in left) == dynamic


def test_prelu_gather_where_and_tied_weights(rng):
    nodes = [helper.make_node("PRelu", ["x", "slope"], ["p"]),
             helper.make_node("Gather", ["p", "idx"], ["g"], axis=2),
             helper.make_node("Greater", ["g", "zero"], ["mask"]),
             helper.make_node("Where", ["mask", "g", "x2"], ["w"]),
             helper.make_node("Conv", ["w", "cw"], ["c1"]),
             helper.make_node("Conv", ["c1", "cw"], ["y"])]   # one weight, two layers
    inits = dict(slope=_x(rng, 2, 1, 1), idx=np.array([2, 0, 0, 1], np.int64),
                 zero=np.array(0.3, np.float32), x2=_x(rng, 1, 2, 4, 3), cw=_x(rng, 2, 2, 1, 1))
    model = _model(nodes, [("x", [1, 2, 3, 3])], ["y"], inits)
    _check(model, {"x": _x(rng, 1, 2, 3, 3)}, rng)
    ours = connx.load(model.SerializeToString()).train()
    assert [k for k, _ in ours.named_parameters()] == ["slope", "cw"]
    y = ours(_x(rng, 1, 2, 3, 3))
    ours.backward(np.ones_like(y))
    assert ours.named_grads()["cw"].shape == (2, 2, 1, 1)


def test_batchnorm_training_mode_and_momentum(rng):
    """BN in train(): batch statistics, running ones moved with momentum
    1 - ONNX's (torch's 0.1 for ONNX's 0.9); eval(): the running ones."""
    C = 3
    inits = dict(s=_x(rng, C), b=_x(rng, C), m=_x(rng, C), v=np.abs(_x(rng, C)) + 0.5)
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                            epsilon=1e-3, momentum=0.8)
    model = _model([node], [("x", [4, C, 2, 2])], ["y"], inits)
    _check(model, {"x": _x(rng, 4, C, 2, 2)}, rng)
    ours = connx.load(model.SerializeToString(), dtype=np.float64).train()
    x = rng.standard_normal((4, C, 2, 2))
    y = ours(x)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-3)
    expected = expected * inits["s"][:, None, None] + inits["b"][:, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-12)
    state = ours.state_dict()
    np.testing.assert_allclose(state["m"], 0.8 * inits["m"] + 0.2 * mean, rtol=1e-6)
    np.testing.assert_allclose(state["v"], 0.8 * inits["v"] + 0.2 * x.var(axis=(0, 2, 3),
                                                                           ddof=1), rtol=1e-6)
    assert {k for k, _ in ours.named_parameters()} == {"s", "b"}
    assert {k for k, _ in ours.named_buffers()} == {"m", "v"}


# --------------------------------------------------------------- refusals

def _conv_model(opset=13):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv0")
    return _model([node], [("x", [1, 1, 4, 4])], ["y"], {"w": np.ones((1, 1, 3, 3), np.float32)},
                  opset=opset)


def test_unsupported_operator_names_type_node_and_list():
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv0"),
                    helper.make_node("Einsum", ["c", "c"], ["y"], name="mix",
                                     equation="abcd,abcd->abcd")],
                   [("x", [1, 1, 4, 4])], [("y", [1, 1, 4, 4])],
                   {"w": np.ones((1, 1, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"Einsum node 'mix'.*supported: .*Conv.*Resize"):
        connx.load(model.SerializeToString())


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.graph.node[0].attribute.append(helper.make_attribute("auto_pad", "BOGUS")),
     "auto_pad"),
    (lambda m: setattr(m.graph.node[0], "domain", "com.evil"), "custom domain 'com.evil'"),
    (lambda m: setattr(m.opset_import[0], "version", 8), "opset 8"),
    (lambda m: m.graph.initializer[0].dims.__setitem__(0, 1 << 40), "oversize dims"),
    (lambda m: setattr(m.graph.initializer[0], "raw_data",
                       m.graph.initializer[0].raw_data[:10]), "truncated"),
    (lambda m: m.functions.append(onnx.FunctionProto(name="f", domain="x")), "functions"),
])
def test_broken_and_hostile_graphs_are_refused(mutate, message):
    model = _conv_model()
    tensor = model.graph.initializer[0]
    if not tensor.raw_data:
        tensor.raw_data = np.ones((1, 1, 3, 3), np.float32).tobytes()
        del tensor.float_data[:]
    mutate(model)
    with pytest.raises(ValueError, match=message):
        connx.load(model.SerializeToString())


def test_empty_truncated_and_garbage_bytes(tmp_path):
    data = _conv_model().SerializeToString()
    for bad in (b"", data[: len(data) // 2], b"\xff" * 64):
        with pytest.raises(ValueError, match="f:"):
            connx.load(bad)
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        connx.load(path)
    with pytest.raises(FileNotFoundError):
        connx.load(tmp_path / "missing.onnx")


def _external_model(tmp_path, location, weights=None, length=None):
    """A Conv model whose weight lives in an external file at `location`."""
    model = _conv_model()
    t = model.graph.initializer[0]
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": "0",
               "length": str(36 if length is None else length)}
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    if weights is not None:
        (folder / "w.bin").write_bytes(weights)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_only_inside_the_models_folder(tmp_path):
    w = np.arange(9, dtype=np.float32)
    path = _external_model(tmp_path, "w.bin", w.tobytes())
    ours = connx.load(path)   # a path argument: read from the folder
    x = np.ones((1, 1, 4, 4), np.float32)
    np.testing.assert_allclose(ours(x), np.full((1, 1, 2, 2), w.sum()))
    with pytest.raises(ValueError, match="only when the model is loaded from a path"):
        connx.load(path.read_bytes())
    secret = tmp_path / "secret.bin"
    secret.write_bytes(w.tobytes())
    for location in ("../secret.bin", str(secret), "sub/../../secret.bin"):
        with pytest.raises(ValueError, match="outside the model's folder"):
            connx.load(_external_model(tmp_path, location))
    link = tmp_path / "model" / "link.bin"
    link.symlink_to(secret)
    with pytest.raises(ValueError, match="resolves outside"):
        connx.load(_external_model(tmp_path, "link.bin"))
    with pytest.raises(ValueError, match="needs 36 bytes"):
        connx.load(_external_model(tmp_path, "w.bin", w.tobytes()[:20], length=20))
    with pytest.raises(ValueError, match="needs 36 bytes"):
        connx.load(_external_model(tmp_path, "w.bin", w.tobytes()[:20]))
    with pytest.raises(ValueError, match="not a file"):
        connx.load(_external_model(tmp_path, "nothing.bin"))


def test_values_cnnfast_cannot_compute_are_refused_at_load():
    # a weight computed at run time
    model = _model([helper.make_node("Conv", ["x", "x"], ["y"], name="c")],
                   [("x", [1, 1, 3, 3])], ["y"])
    with pytest.raises(ValueError, match="Conv node 'c'.*constant"):
        connx.load(model.SerializeToString())
    # an unsupported attribute value
    model = _model([helper.make_node("Resize", ["x", "", "s"], ["y"], name="r", mode="cubic")],
                   [("x", [1, 1, 3, 3])], ["y"], {"s": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(ValueError, match="Resize node 'r'.*cubic"):
        connx.load(model.SerializeToString())
    # a graph whose declared shapes do not work on cnnfast's kernels
    model = _model([helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[2, 2],
                                     dilations=[2, 2])], [("x", [1, 1, 5, 5])], ["y"], opset=19)
    with pytest.raises(ValueError, match="AveragePool node 'p'.*dilation"):
        connx.load(model.SerializeToString())
    # a non-float graph input
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(ValueError, match="element type INT64"):
        connx.load(model.SerializeToString())


def test_newest_opset_loads(rng):
    newest = onnx.defs.onnx_opset_version()
    model = _conv_model(opset=newest)
    model.ir_version = onnx.IR_VERSION
    tensor = model.graph.initializer[0]
    ours = connx.load(model)
    assert model.graph.initializer[0] is tensor   # the caller's proto is not modified
    x = _x(rng, 1, 1, 4, 4)
    np.testing.assert_allclose(ours(x), cnnfast.conv2d(x, np.ones((1, 1, 3, 3), np.float32)),
                               rtol=1e-6)
    assert "Conv" in connx.supported_operators()


def test_unused_file_is_not_opened(tmp_path):
    """External data that no longer exists is reported, nothing else read."""
    path = _external_model(tmp_path, "w.bin")
    assert not os.path.exists(tmp_path / "model" / "w.bin")
    with pytest.raises(ValueError, match="not a file"):
        connx.load(path)


def test_skip_input_grad_keeps_parameter_gradients(rng):
    torch = pytest.importorskip("torch")
    data = _export(torch, _twin(torch, "lenet5"), torch.zeros(2, 1, 32, 32), 17, True)
    full, skipped = connx.load(data).train(), connx.load(data).train().skip_input_grad()
    x = _x(rng, 2, 1, 32, 32)
    g = _x(rng, 2, 10)
    full(x)
    skipped(x)
    assert full.backward(g).shape == x.shape
    assert skipped.backward(g) is None
    for (k, a), (_, b) in zip(full.named_parameters(), skipped.named_parameters()):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=k)


@pytest.mark.parametrize("node, inits", [
    (helper.make_node("ConstantOfShape", ["s"], ["c"]), {"s": np.array([1 << 40], np.int64)}),
    (helper.make_node("Expand", ["k", "s"], ["c"]),
     {"k": np.ones(1, np.float32), "s": np.array([1 << 20, 1 << 20], np.int64)}),
    (helper.make_node("Resize", ["k", "", "s"], ["c"]),
     {"k": np.ones((1, 1), np.float32), "s": np.array([1e12, 1e12], np.float32)}),
    (helper.make_node("Pad", ["k", "s"], ["c"]),
     {"k": np.ones((1, 1), np.float32), "s": np.array([0, 0, 1 << 40, 0], np.int64)}),
])
def test_folded_constants_are_size_checked_before_allocating(node, inits):
    nodes = [node, helper.make_node("Shape", ["c"], ["cs"]),
             helper.make_node("Reshape", ["x", "cs"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["a"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_param = "b"
    with pytest.raises(ValueError, match="is refused"):
        connx.load(model.SerializeToString())


def test_oversize_input_dims_are_refused():
    model = _conv_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 1 << 40
    with pytest.raises(ValueError, match="declares dimension"):
        connx.load(model.SerializeToString())


def test_training_mode_export_and_float64_conversion(rng):
    """torch's TrainingMode.TRAINING export (BatchNormalization with
    training_mode=1 and its extra outputs, Dropout with a training_mode
    input): the model's own mode decides; to(float64) converts everything."""
    torch = pytest.importorskip("torch")
    model = _twin(torch, "vgg_like")
    model.train()
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    data = _export(torch, model, torch.from_numpy(x), 17, True,
                   training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)
    assert any(n.op_type == "Dropout" for n in onnx.load_from_string(data).graph.node)
    ours = connx.load(data)
    model.eval()
    np.testing.assert_allclose(ours(x), model(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    ours.to(np.float64)
    y64 = ours(x.astype(np.float64))
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, model.double()(torch.from_numpy(x).double()).detach().numpy(),
                               rtol=1e-6, atol=1e-7)
    ours.train()
    np.random.seed(0)
    a = ours(x.astype(np.float64))
    assert not np.allclose(a, y64)   # dropout active in training mode


EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                       "onnx_finetune.py")


@pytest.mark.skipif(not os.path.exists(EXAMPLE), reason="examples/ not present")
def test_example_exports_compares_and_fine_tunes(capsys):
    pytest.importorskip("sklearn")
    import runpy
    example = runpy.run_path(EXAMPLE)
    example["main"](["--quick"])
    lines = capsys.readouterr().out.splitlines()
    diff = next(float(line.rsplit(":", 1)[1]) for line in lines if "onnxruntime" in line)
    assert diff < 1e-5
    before = next(float(line.rsplit(":", 1)[1]) for line in lines if "before" in line)
    after = float(next(line for line in lines if line.startswith("epoch")).rsplit(" ", 1)[1])
    assert after > before + 0.1, lines   # the head learned (chance is 0.1)


@pytest.mark.skipif(not os.path.exists(EXAMPLE), reason="examples/ not present")
def test_example_graph_without_torch_is_cnnfasts_lenet5(tmp_path, rng):
    """The example's fallback writer (onnx.helper, no torch): the loaded
    graph computes what cnnfast's own LeNet-5 with those weights computes."""
    import runpy

    from cnnfast import models
    example = runpy.run_path(EXAMPLE)
    path = str(tmp_path / "lenet.onnx")
    example["export_with_onnx_helper"](path)
    cnnfast.nn.manual_seed(0)
    reference = models.lenet5().eval()
    loaded = connx.load(path)
    assert list(loaded.state_dict()) == list(reference.state_dict())
    x = _x(rng, 3, 1, 32, 32)
    np.testing.assert_allclose(loaded(x), reference(x), rtol=1e-5, atol=1e-6)


def test_dense_layer_as_matmul_plus_add_trains_its_bias(rng):
    """tf2onnx writes Dense as MatMul(W) + Add(b): both are parameters."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Add", ["r", "c"], ["y"])]   # a plain constant add
    inits = dict(W=_x(rng, 12, 4), b=_x(rng, 4), c=_x(rng, 4))
    model = _model(nodes, [("x", [2, 3, 2, 2])], ["y"], inits)
    _check(model, {"x": _x(rng, 2, 3, 2, 2)}, rng)
    ours = connx.load(model.SerializeToString()).train()
    assert [k for k, _ in ours.named_parameters()] == ["W", "b"]
    x = _x(rng, 2, 3, 2, 2)
    y = ours(x)
    ours.backward(np.ones_like(y))
    a = x.reshape(2, 12) @ inits["W"] + inits["b"]
    np.testing.assert_allclose(ours.named_grads()["b"], (a > 0).sum(0), rtol=1e-6)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split_and_log_softmax(rng, opset):
    if opset < 13:
        split = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, split=[1, 3, 2])
        inits = {}
    elif opset < 18:
        split = helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1)
        inits = {"sizes": np.array([1, 3, 2], np.int64)}
    else:   # equal parts; the middle one unused (its gradient is zero)
        split = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)
        inits = {}
    nodes = [split,
             helper.make_node("LogSoftmax", ["c"], ["l"], axis=1),
             helper.make_node("Mul", ["a", "a"], ["q"]),
             helper.make_node("Concat", ["q", "l"] if opset == 18 else ["q", "b", "l"], ["y"],
                              axis=1)]
    model = _model(nodes, [("x", [2, 6, 3])], ["y"], inits, opset=opset)
    _check(model, {"x": _x(rng, 2, 6, 3)}, rng)
