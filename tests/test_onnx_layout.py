"""The layout pass of fused ONNX models (cnnfast.onnx._layout): exported
twins run channels-last inside and equal onnxruntime (both data_format
values, static and dynamic batch); the ResNet-18 twin runs its convolutions
on the channels-last kernels with at most two layout conversions. Twins
whose convolutions have too few channels for the channels-last kernel stay
channels-first on their own; the tests force the pass on them so that
every rule (Concat, Flatten over 7x7-like data, Pad, Resize, Softmax,
PRelu, ConvTranspose, the depthwise block) runs."""
import copy
import functools

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import cnnfast.onnx as connx  # noqa: E402
from cnnfast.onnx import _layout  # noqa: E402
from test_onnx import SMALLER, TWINS, _export, _ort, _twin  # noqa: E402

NAMES = ["resnet18", "googlenet_like", "vgg_like", "mobilenet_block", "autoencoder", "zoo"]


@functools.lru_cache(maxsize=None)
def _exported(name, dynamic):
    """(input, the twin's ONNX bytes at opset 17), once per module run."""
    x = np.random.default_rng(7).standard_normal(SMALLER.get(name, TWINS[name][1]))
    x = x.astype(np.float32)
    return x, _export(torch, _twin(torch, name), torch.from_numpy(x), 17, dynamic)


def _nhwc(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if a.ndim in (4, 5) else a


@pytest.fixture
def forced(monkeypatch):
    """Every graph runs channels-last inside, whatever its channel counts."""
    monkeypatch.setattr(_layout, "channels_last_pays", lambda ops: (True, ""))


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_fused_twins_run_channels_last_and_equal_onnxruntime(rng, forced, name, dynamic):
    x, data = _exported(name, dynamic)
    shape = x.shape
    batches = [x] + ([rng.standard_normal((3,) + shape[1:]).astype(np.float32)]
                     if dynamic else [])
    for data_format in ("channels_first", "channels_last"):
        fused = connx.load(data, data_format=data_format).fuse()
        assert fused.layout == "channels_last" and fused.data_format == data_format
        for xb in batches:
            expected = _ort(data, {"x": xb})[0]
            if data_format == "channels_first":
                y = fused(xb)
            else:
                y = fused(_nhwc(xb))
                expected = _nhwc(expected)
            assert y.shape == expected.shape
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=2e-5)
        conversions = fused.module.layout_conversions
        copies = [c for c in conversions if c[3] == "copy"]
        if name == "vgg_like":   # Reshape (view(N, -1)) over 4x4 spatial data needs NCHW
            assert any(c[0] == "/Reshape" and c[2] == "NHWC->NCHW" for c in copies)
        if data_format == "channels_last" and name != "vgg_like":
            assert not copies, conversions   # NHWC in, NHWC (or (N, classes)) out
        assert len(conversions) <= 2, conversions


def test_resnet18_twin_fuses_channels_last_on_its_own(rng):
    x, data = _exported("resnet18", True)
    ours = connx.load(data)
    fused = ours.fuse()
    assert fused.layout == "channels_last" and fused.module.layout_reason == ""
    np.testing.assert_allclose(fused(x), _ort(data, {"x": x})[0], rtol=1e-4, atol=2e-5)
    convs = [op.fused for op in fused.module._ops if hasattr(op, "fused")]
    assert len(convs) == 20
    assert all(c.data_format == "channels_last" and c._packed for c in convs)
    conversions = fused.module.layout_conversions
    assert len(conversions) <= 2
    assert conversions[0][1:] == ("x", "NCHW->NHWC", "copy")   # the input, once
    assert all(c[3] == "free" for c in conversions[1:])
    again = copy.deepcopy(fused)   # a copied plan runs on its own operators
    np.testing.assert_array_equal(again(x), fused(x))
    # the loaded model itself (eval and train) still runs channels-first, exactly
    assert ours.layout == "channels_first"
    ours.train()
    y = ours(x)
    g = ours.backward(np.ones_like(y))
    assert g.shape == x.shape and len(ours.named_grads()) == len(ours.parameters())


def test_mobilenet_v2_fuses_channels_last_on_its_own():
    """Depthwise convolutions (one input channel per group) have their own
    channels-last kernels: torchvision's MobileNetV2 (its ONNX export) runs
    NHWC inside, as cnnfast's own fused MobileNetV2 does, converting only its
    input (the classifier reads the 1x1 pooled map: a free conversion)."""
    from cnnfast.bench.models import ModelCase, _batch, cnnfast_call, onnx_export

    case = ModelCase("mobilenet_v2", "inference", 2, 32, 3, 10)
    model, _ = cnnfast_call(case)
    data = onnx_export(torch, case, model)
    x, _ = _batch(case)
    fused = connx.load(data).fuse()
    assert fused.layout == "channels_last" and fused.module.layout_reason == ""
    convs = [op.fused for op in fused.module._ops if hasattr(op, "fused")]
    assert sum(c.groups > 1 and c.groups == c.weight.data.shape[0] for c in convs) == 17
    assert all(c.data_format == "channels_last" for c in convs)
    # ReLU6 (Clip(0, 6)) runs in the convolutions' store pass, with its bound
    assert sum(c.clamp == (0.0, 6.0) for c in convs) == 35
    np.testing.assert_allclose(fused(x), _ort(data, {"x": x})[0], rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(fused(x), model.eval()(x), rtol=1e-4, atol=2e-5)
    big = x * 50   # activations past 6 (clamped by both)
    np.testing.assert_allclose(fused(big), _ort(data, {"x": big})[0], rtol=1e-4, atol=1e-4)
    copies = [c for c in fused.module.layout_conversions if c[3] == "copy"]
    assert [c[1:3] for c in copies] == [("x", "NCHW->NHWC")], copies


class _BroadcastAdd(torch.nn.Module):
    """relu(bn(conv(x)) + s) with s (N, 16, 1, 1) from another branch: an Add
    that fuse() takes as a residual but that broadcasts at run time."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.side = torch.nn.Conv2d(3, 16, 1)

    def forward(self, x):
        s = self.side(x).mean((2, 3), keepdim=True)
        return torch.relu(self.bn(self.conv(x)) + s)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_fused_residual_that_broadcasts_runs_after_the_conv(rng, forced, data_format):
    torch.manual_seed(0)
    net = _BroadcastAdd().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    data = _export(torch, net, torch.from_numpy(x), 17, False)
    fused = connx.load(data, data_format=data_format).fuse()
    with_residual = [op for op, args in zip(fused.module._ops, fused.module._args)
                     if type(op).__name__ == "FusedConv" and len(args) == 2]
    assert len(with_residual) == 1
    expected = _ort(data, {"x": x})[0]
    if data_format == "channels_first":
        np.testing.assert_allclose(fused(x), expected, rtol=1e-4, atol=2e-5)
    else:
        np.testing.assert_allclose(fused(_nhwc(x)), _nhwc(expected), rtol=1e-4, atol=2e-5)


def test_small_channel_graphs_stay_channels_first_and_say_why(rng):
    x = rng.standard_normal(TWINS["lenet5"][1]).astype(np.float32)
    data = _export(torch, _twin(torch, "lenet5"), torch.from_numpy(x), 17, False)
    fused = connx.load(data).fuse()
    assert fused.layout == "channels_first" and fused.module.layout_conversions == []
    assert "output channel(s) per group" in fused.module.layout_reason
    np.testing.assert_allclose(fused(x), _ort(data, {"x": x})[0], rtol=1e-4, atol=2e-5)
    # channels_last in and out around a channels-first inside: converted once, by the model
    x, data = _exported("autoencoder", True)
    fused = connx.load(data, data_format="channels_last").fuse()
    assert (fused.layout, fused.data_format) == ("channels_first", "channels_last")
    np.testing.assert_allclose(fused(_nhwc(x)), _nhwc(_ort(data, {"x": x})[0]),
                               rtol=1e-4, atol=2e-5)


def test_axis_rules_map_nchw_axes(rng):
    assert [_layout.axis_last(a, 4) for a in range(4)] == [0, 3, 1, 2]
    assert [_layout.axis_last(a, 5) for a in range(5)] == [0, 4, 1, 2, 3]
    c = rng.standard_normal((3, 1, 1)).astype(np.float32)   # a per-channel constant
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(_nhwc(x) + _layout.relaid(c, 4), _nhwc(x + c))


def _graph_check(model, x, data_format="channels_first"):
    from test_onnx import _ort
    data = model.SerializeToString()
    fused = connx.load(data, data_format=data_format).fuse()
    assert fused.layout == "channels_last"
    y = fused(x)
    np.testing.assert_allclose(y, _ort(data, {"x": x})[0] if data_format == "channels_first"
                               else _nhwc(_ort(data, {"x": np.moveaxis(x, -1, 1).copy()})[0]),
                               rtol=1e-4, atol=2e-5)
    return fused.module.layout_conversions


def test_nhwc_input_transposed_by_the_graph_is_taken_as_it_is(rng):
    """tf2onnx's Keras exports start with Transpose(NHWC -> NCHW): that
    array is the NHWC value the convolution reads, nothing is copied."""
    from onnx import helper
    from test_onnx import _model
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3
    model = _model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                    helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["r"]),
                    helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 3, 1])],
                   [("x", [2, 6, 5, 3])], ["y"], {"w": w})
    assert _graph_check(model, rng.standard_normal((2, 6, 5, 3)).astype(np.float32)) == []


def test_five_d_graph_runs_ndhwc(rng, forced):
    """Conv3d, BatchNormalization, MaxPool3d, Add of a per-channel constant,
    ReduceMean over the spatial axes, Softmax over the channels: NDHWC."""
    from onnx import helper
    from test_onnx import _model
    w = rng.standard_normal((16, 2, 3, 3, 3)).astype(np.float32) * 0.3
    c = 16
    inits = {"w": w, "g": rng.random(c).astype(np.float32) + 0.5,
             "b": rng.standard_normal(c).astype(np.float32),
             "m": rng.standard_normal(c).astype(np.float32) * 0.1,
             "v": rng.random(c).astype(np.float32) + 0.5,
             "k": rng.standard_normal((c, 1, 1, 1)).astype(np.float32)}
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER"),
                    helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
                    helper.make_node("MaxPool", ["n"], ["p"], kernel_shape=[2, 2, 2],
                                     strides=[2, 2, 2]),
                    helper.make_node("Add", ["p", "k"], ["a"]),
                    helper.make_node("Softmax", ["a"], ["s"], axis=1),
                    helper.make_node("ReduceMean", ["s"], ["y"], axes=[2, 3, 4], keepdims=1)],
                   [("x", [2, 2, 4, 6, 5])], ["y"], inits, opset=13)
    x = rng.standard_normal((2, 2, 4, 6, 5)).astype(np.float32)
    conv = _graph_check(model, x)
    assert [c[1:3] for c in conv] == [("x", "NCHW->NHWC"), ("y", "NHWC->NCHW")]
    assert [c[3] for c in conv] == ["copy", "free"]   # y is (N, C, 1, 1, 1)
    assert _graph_check(model, _nhwc(x), "channels_last") == []
