"""cnnfast.explain_model: a dry run's rows match the real call layer by layer
(names, classes, shapes, order, in every model, both modes and formats, fused
and ONNX-loaded), its convolution passes are explain_conv's, the passes
follow the mode, skip_input_grad and frozen parameters, it raises the real
call's validation errors and allocates nothing."""
import math
import tracemalloc

import numpy as np
import pytest

import cnnfast
from cnnfast import models, nn
from cnnfast._explain import DryRunError
from cnnfast._threads import kernel_threads
from cnnfast._ops.data_format import _shape_first, _shape_last
from cnnfast.nn.module import Module


# ---------------------------------------------------------------- helpers

def _shape(a):
    return tuple(a.shape) if isinstance(a, np.ndarray) else None


def _first_array(values):
    if isinstance(values, (tuple, list)):
        for v in values:
            if isinstance(v, np.ndarray):
                return v
        return None
    return values if isinstance(values, np.ndarray) else None


def _real_calls(monkeypatch, model, *inputs):
    """Run model(*inputs) for real, recording each leaf layer call (and
    ReLU.forward_sum): (name, class, first input shape, first output shape)."""
    names = {id(m): n for n, m in model.named_modules()}
    calls = []
    call, forward_sum = Module.__call__, nn.ReLU.forward_sum

    def recording_call(self, *args, **kwargs):
        out = call(self, *args, **kwargs)
        if not self.named_children():
            calls.append((names.get(id(self)), type(self).__name__,
                          _shape(_first_array(args)), _shape(_first_array(out))))
        return out

    def recording_sum(self, a, b):
        out = forward_sum(self, a, b)
        calls.append((names.get(id(self)), type(self).__name__, a.shape, out.shape))
        return out

    with monkeypatch.context() as m:
        m.setattr(Module, "__call__", recording_call)
        m.setattr(nn.ReLU, "forward_sum", recording_sum)
        out = model(*inputs)
    return calls, out


def _layer_rows(plan):
    """(name, op, first in shape, out shape) of the rows that are layer calls."""
    out = []
    for r in plan.rows:
        if r.name.endswith(")"):
            continue
        first = r.in_shape[0] if r.in_shape and isinstance(r.in_shape[0], tuple) else r.in_shape
        last = r.out_shape[0] if r.out_shape and isinstance(r.out_shape[0], tuple) \
            else r.out_shape
        out.append((r.name, r.op, tuple(first), tuple(last), r.layout))
    return out


def _assert_matches_real(monkeypatch, model, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    plan = cnnfast.explain_model(model, shape)
    calls, _ = _real_calls(monkeypatch, model, x)
    rows = _layer_rows(plan)
    fmt = plan.data_format

    def in_model_format(s, layout):   # a fused model's inside runs channels-last
        return _shape_first(s) if layout != fmt and s is not None and len(s) >= 3 else s

    got = [(n, op, i, o) for n, op, i, o, _ in rows]
    want = [(n, op, in_model_format(i, lay), in_model_format(o, lay))
            for (n, op, i, o), (*_, lay) in zip(calls, rows)]
    assert got == want
    return plan


SMALL = {
    "lenet5": (lambda: models.lenet5(), (2, 1, 32, 32)),
    "resnet18": (lambda: models.resnet18(num_classes=5), (2, 3, 32, 32)),
    "resnet50": (lambda: models.resnet50(num_classes=5), (2, 3, 32, 32)),
    "mobilenet_v2": (lambda: models.mobilenet_v2(num_classes=5, width_mult=0.25),
                     (2, 3, 32, 32)),
    "googlenet": (lambda: models.googlenet(num_classes=5, aux_logits=True,
                                           transform_input=True), (2, 3, 64, 64)),
    "vgg11": (lambda: models.vgg11(num_classes=5), (1, 3, 32, 32)),
    "alexnet": (lambda: models.alexnet(num_classes=5), (1, 3, 64, 64)),
}


@pytest.fixture(scope="module")
def zoo():
    nn.manual_seed(0)
    return {name: build() for name, (build, _) in SMALL.items()}


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("name", list(SMALL))
def test_rows_follow_the_real_forward_in_both_modes(monkeypatch, rng, zoo, name):
    model, shape = zoo[name], SMALL[name][1]
    for mode in ("eval", "train"):
        getattr(model, mode)()
        plan = _assert_matches_real(monkeypatch, model, shape, rng)
        assert plan.training == (mode == "train")
        for row in plan.rows:
            if mode == "eval":
                assert list(row.passes) == ["forward"]
            else:
                assert "forward" in row.passes
    model.eval()


LAYERS = [
    (lambda: nn.Conv1d(3, 16, 3, padding="same", padding_mode="reflect"), (2, 3, 12)),
    (lambda: nn.Conv2d(4, 8, 3, stride=2, dilation=2, groups=2), (2, 4, 11, 11)),
    (lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8), (2, 8, 9, 9)),
    (lambda: nn.Conv2d(16, 32, 1, data_format="channels_last"), (2, 6, 6, 16)),
    (lambda: nn.Conv2d(3, 16, 3, data_format="channels_last"), (2, 6, 6, 3)),
    (lambda: nn.Conv3d(2, 4, 2), (1, 2, 4, 4, 4)),
    (lambda: nn.ConvTranspose1d(4, 2, 3, stride=2), (2, 4, 5)),
    (lambda: nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, output_padding=1), (2, 4, 5, 5)),
    (lambda: nn.ConvTranspose2d(16, 8, 1, data_format="channels_last"), (2, 5, 5, 16)),
    (lambda: nn.ConvTranspose3d(2, 2, 2, stride=2), (1, 2, 3, 3, 3)),
    (lambda: nn.Linear(6, 4), (2, 3, 6)),
    (lambda: nn.Flatten(), (2, 3, 4, 5)),
    (lambda: nn.Flatten(data_format="channels_last"), (2, 4, 5, 3)),
    (lambda: nn.Identity(), (2, 3)),
    (lambda: nn.ReLU(), (2, 3, 4)),
    (lambda: nn.ReLU6(), (2, 3, 4)),
    (lambda: nn.Hardtanh(-2.0, 2.0), (2, 3, 4)),
    (lambda: nn.LeakyReLU(0.1), (2, 3, 4)),
    (lambda: nn.Tanh(), (2, 3, 4)),
    (lambda: nn.Sigmoid(), (2, 3, 4)),
    (lambda: nn.Dropout(0.3), (2, 3, 4)),
    (lambda: nn.BatchNorm1d(3), (4, 3)),
    (lambda: nn.BatchNorm1d(3), (4, 3, 5)),
    (lambda: nn.BatchNorm2d(3, data_format="channels_last"), (2, 4, 4, 3)),
    (lambda: nn.BatchNorm3d(2, affine=False), (2, 2, 3, 3, 3)),
    (lambda: nn.MaxPool1d(3, 2, 1), (2, 3, 9)),
    (lambda: nn.MaxPool2d(3, 2, ceil_mode=True), (2, 3, 8, 8)),
    (lambda: nn.MaxPool2d(2, data_format="channels_last"), (2, 8, 8, 16)),
    (lambda: nn.MaxPool3d(2), (1, 2, 4, 4, 4)),
    (lambda: nn.AvgPool1d(2), (2, 3, 8)),
    (lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False), (2, 3, 6, 6)),
    (lambda: nn.AvgPool2d(2, data_format="channels_last"), (2, 6, 6, 3)),
    (lambda: nn.AvgPool3d(2), (1, 2, 4, 4, 4)),
    (lambda: nn.AdaptiveAvgPool1d(3), (2, 3, 7)),
    (lambda: nn.AdaptiveAvgPool2d((2, None)), (2, 3, 7, 5)),
    (lambda: nn.AdaptiveAvgPool3d(1), (1, 2, 3, 3, 3)),
    (lambda: nn.AdaptiveMaxPool1d(2), (2, 3, 7)),
    (lambda: nn.AdaptiveMaxPool2d(3, data_format="channels_last"), (2, 7, 7, 4)),
    (lambda: nn.AdaptiveMaxPool3d(2), (1, 2, 4, 4, 4)),
    (lambda: nn.GlobalAvgPool2d(), (2, 3, 4, 4)),
    (lambda: nn.GlobalAvgPool2d(keepdims=True, data_format="channels_last"), (2, 4, 4, 3)),
    (lambda: nn.GlobalMaxPool2d(), (2, 3, 4, 4)),
]


@pytest.mark.parametrize("build, shape", LAYERS)
def test_every_layer_class(monkeypatch, rng, build, shape):
    nn.manual_seed(0)
    layer = build()
    model = nn.Sequential(layer)
    for mode in ("eval", "train"):
        getattr(model, mode)()
        plan = _assert_matches_real(monkeypatch, model, shape, rng)
        (row,) = plan.rows
        passes = {"forward"} | ({"x"} if mode == "train" else set())
        for p in ("weight", "bias"):
            param = getattr(layer, p, None)
            if mode == "train" and param is not None:
                passes.add(p)
        assert set(row.passes) == passes
        for p in row.passes.values():
            assert p.threads >= 1 and p.flops >= 0 and p.workspace_bytes >= 0


def test_every_layer_call_is_a_row_in_call_order(monkeypatch, rng, zoo):
    """GoogLeNet in training mode: aux heads, concat and transform steps."""
    model = zoo["googlenet"].train()
    plan = cnnfast.explain_model(model, (2, 3, 64, 64))
    ops = [r.op for r in plan.rows]
    assert ops[:2] == ["mul", "add"]                       # transform_input
    assert ops.count("concat") == 9                          # one per Inception
    names = [r.name for r in plan.rows]
    assert names.index("aux1.fc2") < names.index("inception4b.branch1.conv")
    assert names.index("aux2.fc2") < names.index("inception4e.branch1.conv")
    concat = next(r for r in plan.rows if r.op == "concat")
    assert concat.name == "inception3a.(concat)" and len(concat.in_shape) == 4
    assert concat.out_shape == (2, 256, 8, 8)
    model.eval()


def test_conv_passes_are_explain_convs(zoo):
    model = zoo["resnet18"].train()
    plan = cnnfast.explain_model(model, (2, 3, 32, 32))
    convs = [r for r in plan.rows if r.op == "Conv2d"]
    modules = dict(model.named_modules())
    assert len(convs) == 20
    for r in convs:
        m = modules[r.name]
        need = tuple(r.passes)
        # a training ResNet runs channels-last inside (nn.train_layout); rows
        # give shapes in the model's data_format
        assert r.layout == "channels_last"
        shape = (r.in_shape[0],) + tuple(r.in_shape[2:]) + (r.in_shape[1],)
        want = cnnfast.explain_conv(shape, m.weight.shape, m.stride, m.padding,
                                    m.dilation, m.groups, need=need,
                                    data_format="channels_last")
        assert r.passes == want.passes
        assert r.out_shape == want.out_shape
        n, k, c, taps = r.in_shape[0], m.out_channels, m.in_channels // m.groups, \
            math.prod(m.kernel_size)
        assert r.passes["forward"].flops == 2 * n * k * c * taps * math.prod(r.out_shape[2:])
    model.eval()


def test_training_passes_follow_skip_input_grad_and_freeze():
    nn.manual_seed(0)
    model = models.resnet18(num_classes=5).train()
    rows = {r.name: r for r in cnnfast.explain_model(model, (2, 3, 32, 32)).rows}
    assert set(rows["conv1"].passes) == {"forward", "x", "weight"}     # bias=False
    assert set(rows["fc"].passes) == {"forward", "x", "weight", "bias"}
    assert set(rows["bn1"].passes) == {"forward", "x", "weight", "bias"}
    model.skip_input_grad()
    rows = {r.name: r for r in cnnfast.explain_model(model, (2, 3, 32, 32)).rows}
    assert set(rows["conv1"].passes) == {"forward", "weight"}
    model.layer1.freeze()
    model.fc.bias.requires_grad = False
    rows = {r.name: r for r in cnnfast.explain_model(model, (2, 3, 32, 32)).rows}
    assert set(rows["layer1.0.conv1"].passes) == {"forward", "x"}
    assert set(rows["layer1.0.bn1"].passes) == {"forward", "x"}
    assert set(rows["fc"].passes) == {"forward", "x", "weight"}
    model.freeze()
    rows = {r.name: r for r in cnnfast.explain_model(model, (2, 3, 32, 32)).rows}
    assert set(rows["conv1"].passes) == {"forward"}


def test_googlenet_transform_has_no_gradient_when_the_input_needs_none():
    nn.manual_seed(0)
    model = models.googlenet(num_classes=5, transform_input=True).train()
    rows = cnnfast.explain_model(model, (2, 3, 64, 64)).rows
    assert [set(r.passes) for r in rows[:2]] == [{"forward", "x"}] * 2
    model.skip_input_grad()
    rows = cnnfast.explain_model(model, (2, 3, 64, 64)).rows
    assert [set(r.passes) for r in rows[:2]] == [{"forward"}] * 2


def test_batch_norm_relu_backward_runs_as_one_pass():
    nn.manual_seed(0)
    model = models.resnet18(num_classes=5).train()
    rows = {r.name: r for r in cnnfast.explain_model(model, (2, 3, 32, 32)).rows}
    assert rows["relu"].passes["x"].kernel == "in_batch_norm_backward"
    assert rows["layer1.0.relu1"].passes["x"].kernel == "in_batch_norm_backward"
    assert rows["layer1.0.relu2"].passes["x"].kernel == "relu_backward"   # after the add
    # a BN in a nested chain and a ReLU after it: two backward passes
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)),
                          nn.ReLU()).train()
    rows = cnnfast.explain_model(model, (2, 3, 8, 8)).rows
    assert rows[-1].passes["x"].kernel == "relu_backward"


def test_fused_model_runs_channels_last_inside(monkeypatch, rng, zoo):
    fused = zoo["resnet18"].eval().fuse()
    assert fused.layout == "channels_last"
    plan = _assert_matches_real(monkeypatch, fused, (2, 3, 32, 32), rng)
    first, last = plan.rows[0], plan.rows[-1]
    assert (first.name, first.op, first.layout) == ("(to_channels_last)", "to_channels_last",
                                                    "channels_last")
    assert first.in_shape == first.out_shape == (2, 3, 32, 32)
    assert plan.rows[1].op == "FusedConv2d" and plan.rows[1].layout == "channels_last"
    assert plan.rows[1].in_shape == (2, 3, 32, 32)          # in the model's data_format
    assert plan.rows[1].passes["forward"].kernel == "nhwc_direct"
    assert last.op == "Linear"   # a (N, classes) output needs no conversion back
    ends = [r for r in plan.rows if r.name.endswith("conv2") and r.op == "FusedConv2d"]
    assert ends and all(len(r.in_shape) == 2 for r in ends)   # x and the residual
    # a fused model whose output has spatial dims converts it back
    body = models.resnet18(num_classes=5).eval()
    features = nn.Sequential(body.conv1, body.bn1, body.relu).fuse()
    rows = cnnfast.explain_model(features, (1, 3, 16, 16)).rows
    assert [r.op for r in rows] == ["to_channels_last", "FusedConv2d", "Folded", "Folded",
                                    "to_channels_first"]
    assert rows[-1].out_shape == (1, 64, 8, 8)


def test_fused_rows_name_the_kernels_the_run_executes(monkeypatch, rng):
    """Every convolution of a fused channels-last ResNet-18, as run: NHWC
    Winograd (weights kept by the layer), NHWC direct or a channels-first
    driver kernel, in the order the rows give."""
    from cnnfast import _nhwc
    from cnnfast._ext import _conv
    nn.manual_seed(0)
    fused = models.resnet18(num_classes=5).eval().fuse()
    ran = []
    for module, name, kernel in ((_nhwc, "run", "nhwc_direct"),
                                 (_nhwc, "winograd_run", "nhwc_winograd")):
        def record(*args, _real=getattr(module, name), _kernel=kernel, **kwargs):
            ran.append(_kernel)
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, record)
    real_forward = _conv.conv_forward

    def record_forward(*args):
        ran.append(args[8])   # the driver kernel of the plan entry
        return real_forward(*args)
    monkeypatch.setattr(_conv, "conv_forward", record_forward)
    plan = cnnfast.explain_model(fused, (2, 3, 64, 64))
    fused(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    planned = [r.passes["forward"].kernel for r in plan.rows if r.op == "FusedConv2d"]
    assert planned == ran and "nhwc_winograd" in planned


def test_training_rows_name_the_kernels_forward_and_backward_execute(monkeypatch, rng):
    """ResNet-18 in training mode, one forward and backward: the driver
    kernels each convolution pass ran are the rows' (as multisets per pass:
    backward runs in reverse order)."""
    from collections import Counter

    from cnnfast import _nhwc, _nhwc_backward
    from cnnfast._ext import _conv
    nn.manual_seed(0)
    model = models.resnet18(num_classes=5).train().skip_input_grad()
    ran = {"forward": [], "x": [], "weight": []}
    # the position of the driver kernel's name among each driver's arguments
    for name, gradient, at in (("conv_forward", "forward", 8),
                               ("conv_backward_input", "x", 7),
                               ("conv_backward_weight", "weight", 7)):
        def record(*args, _real=getattr(_conv, name), _gradient=gradient, _at=at):
            ran[_gradient].append(args[_at])
            return _real(*args)
        monkeypatch.setattr(_conv, name, record)
    # the NHWC kernels (the model trains channels-last inside): one call of
    # each pass's entry point per convolution
    for module, name, gradient, kernel in ((_nhwc, "run", "forward", "nhwc_direct"),
                                           (_nhwc_backward, "input_grad", "x", "nhwc_direct_x"),
                                           (_nhwc_backward, "weight_grad", "weight",
                                            "nhwc_weight"),
                                           (_nhwc_backward, "weight_grad_winograd", "weight",
                                            "nhwc_winograd_weight")):
        def record_nhwc(*args, _real=getattr(module, name), _gradient=gradient, _k=kernel,
                        **kwargs):
            ran[_gradient].append(_k)
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, record_nhwc)
    # the 1x1 downsamples: GEMMs over pixel rows (forward, and each gradient asked for)
    from cnnfast._ops import conv as conv_op

    def rows_forward(*args, _real=conv_op._pointwise_rows):
        ran["forward"].append("pointwise_rows")
        return _real(*args)

    def rows_backward(geom, grad_out, x, weight, need, _real=conv_op._pointwise_backward_last):
        for gradient in ("x", "weight"):
            if gradient in need:
                ran[gradient].append("pointwise_rows")
        return _real(geom, grad_out, x, weight, need)
    monkeypatch.setattr(conv_op, "_pointwise_rows", rows_forward)
    monkeypatch.setattr(conv_op, "_pointwise_backward_last", rows_backward)
    plan = cnnfast.explain_model(model, (2, 3, 32, 32))
    y = model(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    model.backward(np.ones_like(y))
    convs = [r for r in plan.rows if r.op == "Conv2d"]
    for gradient, kernels in ran.items():
        assert Counter(r.passes[gradient].kernel for r in convs if gradient in r.passes) \
            == Counter(kernels), gradient
    assert len(ran["x"]) == len(convs) - 1   # skip_input_grad: not the stem's


def test_channels_last_models(monkeypatch, rng):
    nn.manual_seed(0)
    for model, shape in ((models.resnet18(num_classes=5, data_format="channels_last"),
                          (2, 32, 32, 3)),
                         (models.mobilenet_v2(num_classes=5, width_mult=0.25,
                                              data_format="channels_last"), (2, 32, 32, 3))):
        for mode in ("eval", "train"):
            getattr(model, mode)()
            plan = _assert_matches_real(monkeypatch, model, shape, rng)
            assert {r.layout for r in plan.rows} == {"channels_last"}
            if isinstance(model, models.ResNet):   # indices (training) need the plane kernel
                pool = next(r for r in plan.rows if r.name == "maxpool")
                assert pool.passes["forward"].kernel == (
                    "pool_max" if mode == "train" else "pool_max_nhwc")
            conv = next(r for r in plan.rows if r.op == "Conv2d" and r.name.endswith("0.0")
                        or r.name == "layer1.0.conv1")
            m = dict(model.named_modules())[conv.name]
            want = cnnfast.explain_conv(conv.in_shape, m.weight.shape, m.stride, m.padding,
                                        groups=m.groups, need=tuple(conv.passes),
                                        data_format="channels_last")
            assert conv.passes == want.passes


def test_rows_say_why_a_channels_last_layer_runs_channels_first():
    nn.manual_seed(0)
    model = models.lenet5(data_format="channels_last").eval()
    rows = {r.name: r for r in cnnfast.explain_model(model, (2, 32, 32, 1)).rows}
    assert rows["conv1"].note.endswith("6 output channels per group < 16")
    assert rows["pool1"].note.endswith("fewer than 16 channels")
    assert rows["conv2"].note == "" and rows["conv2"].passes["forward"].kernel == "nhwc_direct"
    assert "(channels-first kernels" in str(cnnfast.explain_model(model, (2, 32, 32, 1)))


def test_channels_last_depthwise_rows_have_no_copies_note():
    # the depthwise kernel runs channels-last natively (_ops/conv.py): no layout copies
    # (fused, its blocks run as one call each: tests/test_inverted_residual.py)
    nn.manual_seed(0)
    model = models.mobilenet_v2(num_classes=10, data_format="channels_last").eval()
    rows = [r for r in cnnfast.explain_model(model, (1, 64, 64, 3)).rows
            if r.passes and r.passes["forward"].kernel == "depthwise"]
    assert len(rows) == 17 and all(r.layout == "channels_last" and r.note == "" for r in rows)


class Twice(nn.Sequential):
    """The same convolution applied twice (weights shared)."""

    def forward(self, x):
        conv = self[0]
        return self[1](conv(conv(x)))


def test_a_layer_called_twice_has_two_rows(monkeypatch, rng):
    nn.manual_seed(0)
    model = Twice(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()).eval()
    plan = _assert_matches_real(monkeypatch, model, (1, 4, 8, 8), rng)
    assert [r.name for r in plan.rows] == ["0", "0", "1"]


def test_threads_argument_and_totals_and_table():
    nn.manual_seed(0)
    model = models.vgg11(num_classes=5).eval()
    plan = cnnfast.explain_model(model, (1, 3, 32, 32), threads=1)
    assert plan.threads == 1
    assert {p.threads for r in plan.rows for p in r.passes.values()} == {1}
    with cnnfast.num_threads(2):
        plan2 = cnnfast.explain_model(model, (1, 3, 32, 32))
        want = kernel_threads()
    assert plan2.threads == want
    assert max(p.threads for r in plan2.rows for p in r.passes.values()) == want
    assert plan.flops == sum(p.flops for r in plan.rows for p in r.passes.values())
    assert plan.workspace_bytes == max(p.workspace_bytes for r in plan.rows
                                       for p in r.passes.values())
    gemm_flops = sum(r.passes["forward"].flops for r in plan.rows
                     if r.op in ("Conv2d", "Linear"))
    assert gemm_flops > 0.99 * plan.flops
    text = str(plan)
    lines = text.splitlines()
    assert len(lines) == 2 + len(plan.rows) + 1
    assert lines[-1].startswith(f"total: {len(plan.rows)} rows")
    assert "features.0" in lines[2] and "Conv2d" in lines[2]
    with pytest.raises(ValueError, match="threads"):
        cnnfast.explain_model(model, (1, 3, 32, 32), threads=0)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with cnnfast.num_threads(2), threadpoolctl.threadpool_limits(1, user_api="openmp"):
        capped = cnnfast.explain_model(model, (1, 3, 32, 32))
    assert capped.threads == 1   # the effective count, as the kernels run
    assert {p.threads for r in capped.rows for p in r.passes.values()} == {1}


def _same_error(model, x, shape):
    with pytest.raises((ValueError, TypeError)) as real:
        model(x)
    with pytest.raises(type(real.value)) as dry:
        cnnfast.explain_model(model, shape)
    assert str(dry.value) == str(real.value)


def test_validation_errors_are_the_real_calls(rng):
    nn.manual_seed(0)
    model = models.resnet18(num_classes=5).eval()
    _same_error(model, np.zeros((1, 4, 32, 32), np.float32), (1, 4, 32, 32))   # channels
    _same_error(model, np.zeros((1, 3, 32), np.float32), (1, 3, 32))           # rank
    lenet = models.lenet5().eval()
    _same_error(lenet, np.zeros((1, 1, 28, 28), np.float32), (1, 1, 28, 28))
    # a wrong channel count deep inside: layer 5's input
    bad = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(9, 2)).eval()
    _same_error(bad, np.zeros((1, 3, 8, 8), np.float32), (1, 3, 8, 8))
    # training-mode batch statistics of one value per channel
    mobile = models.mobilenet_v2(num_classes=5, width_mult=0.25).train()
    _same_error(mobile, np.zeros((1, 3, 32, 32), np.float32), (1, 3, 32, 32))
    with pytest.raises(ValueError, match="x_shape"):
        cnnfast.explain_model(model, (1, -3, 32, 32))
    with pytest.raises(TypeError, match="x_shape"):
        cnnfast.explain_model(model, "1x3x32x32")
    with pytest.raises(TypeError, match="model"):
        cnnfast.explain_model(object(), (1, 3, 32, 32))


class Scaled(Module):
    """A user layer doing plain NumPy arithmetic: dry-runnable."""

    def forward(self, x):
        return x * 2.0 + 1.0


class Picks(Module):
    """A user layer indexing channels (an advanced index: no values needed)."""

    def forward(self, x):
        return np.concatenate([x[:, [0, 2]], x[:, 1:2].reshape(x.shape[0], 1, -1)
                               .reshape(x[:, 1:2].shape)], axis=1)


class Normalized(Module):
    """A user layer that needs the values (a data-dependent branch)."""

    def forward(self, x):
        if np.abs(x).max() > 1:
            return x / np.abs(x).max()
        return x


def test_user_layers_work_or_name_themselves():
    nn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Scaled(), nn.ReLU()).train()
    rows = cnnfast.explain_model(model, (1, 3, 8, 8)).rows
    assert [(r.name, r.op) for r in rows] == [("0", "Conv2d"), ("1", "Scaled"), ("2", "ReLU")]
    assert rows[1].passes["forward"].flops == 2 * 4 * 6 * 6
    assert rows[1].out_shape == (1, 4, 6, 6)
    rows = cnnfast.explain_model(nn.Sequential(nn.Conv2d(3, 4, 3), Picks()).eval(),
                                 (1, 3, 8, 8)).rows
    assert rows[1].out_shape == (1, 3, 6, 6)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Normalized()).eval()
    with pytest.raises(TypeError, match=r"^1 \(Normalized\) cannot be dry-run"):
        cnnfast.explain_model(model, (1, 3, 8, 8))


class UsesKernel(Module):
    """A user container calling a cnnfast op on its child's output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return cnnfast.relu(self.conv(x))


class Described(Module):
    """A user layer that describes itself (its own _explain)."""

    def forward(self, x):
        return np.cumsum(x, axis=-1)

    def _explain(self, tracer, x):
        from cnnfast._explain import numpy_pass
        y = tracer.new(x.shape, x.dtype)
        tracer.record(tracer.name_of(self), "cumsum", [x], [y], tracer.current_layout(),
                      {"forward": numpy_pass("numpy_cumsum", x.size)})
        return y


def test_user_code_calling_kernels_or_describing_itself():
    nn.manual_seed(0)
    with pytest.raises(TypeError, match=r"^the model \(UsesKernel\) cannot be dry-run"):
        cnnfast.explain_model(UsesKernel(), (1, 3, 8, 8))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Described()).eval()
    rows = cnnfast.explain_model(model, (1, 3, 8, 8)).rows
    assert [(r.name, r.op, r.out_shape) for r in rows] == [
        ("0", "Conv2d", (1, 4, 6, 6)), ("1", "cumsum", (1, 4, 6, 6))]
    assert rows[1].passes["forward"].flops == 4 * 36


def test_dry_run_changes_nothing_and_allocates_nothing():
    nn.manual_seed(0)
    model = models.vgg16(num_classes=10).train()
    state = {k: v.copy() for k, v in model.state_dict().items() if "running" in k}
    cnnfast.explain_model(model, (1, 3, 32, 32))   # imports the rules first
    tracemalloc.start()
    try:
        plan = cnnfast.explain_model(model, (64, 3, 224, 224))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one activation would be 64 * 64 * 224 * 224 * 4 bytes = 822 MB
    assert peak < 500_000
    # training runs channels-last inside (nn.train_layout): the input's
    # conversion first
    assert plan.rows[0].op == "to_channels_last"
    assert plan.rows[1].out_shape == (64, 64, 224, 224)
    assert plan.flops > 3 * 2 * 15.4e9 * 64 * 0.9   # forward + 2 gradients, 15.4 GMAC/image
    assert all(m._cache is None for m in model.modules())
    for k, v in state.items():
        assert np.array_equal(model.state_dict()[k], v)


def test_onnx_loaded_model(monkeypatch, rng):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import io
    import warnings

    import cnnfast.onnx as connx
    T = torch.nn

    class Net(T.Module):
        def __init__(self):
            super().__init__()
            self.stem = T.Sequential(T.Conv2d(3, 8, 3, padding=1), T.BatchNorm2d(8), T.ReLU())
            self.pool = T.MaxPool2d(2)
            self.b1 = T.Conv2d(8, 8, 1)
            self.b2 = T.Conv2d(8, 4, 3, padding=1)
            self.fc = T.Linear(12, 3)

        def forward(self, x):
            x = self.pool(self.stem(x))
            x = torch.cat([torch.relu(self.b1(x) + x), self.b2(x)], 1)
            return torch.softmax(self.fc(torch.flatten(T.functional.adaptive_avg_pool2d(x, 1),
                                                       1)), dim=1)

    torch.manual_seed(0)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (torch.zeros(2, 3, 8, 8),), buf, dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"])
    for data_format, shape in (("channels_first", (2, 3, 8, 8)),
                               ("channels_last", (2, 8, 8, 3))):
        model = connx.load(buf.getvalue(), data_format=data_format)
        for mode in ("eval", "train"):
            getattr(model, mode)()
            x = rng.standard_normal(shape).astype(np.float32)
            plan = cnnfast.explain_model(model, shape)
            calls, y = _real_calls(monkeypatch, model, x)
            rows = [r for r in plan.rows if not r.name.endswith(")")]
            assert [(r.name, r.op) for r in rows] == [c[:2] for c in calls]
            # the graph runs channels-first inside; rows show the model's data_format
            convert = _shape_last if data_format == "channels_last" else tuple
            assert [r.out_shape for r in rows] == [
                convert(c[3]) if len(c[3]) >= 3 else c[3] for c in calls]
            assert plan.rows[-1].out_shape == y.shape
            ops = [r.op for r in plan.rows]
            assert ops.count("Conv") == 3 and "Gemm" in ops and "Pool" in ops
            if data_format == "channels_last":
                assert plan.rows[0].op == "to_channels_first"
        if data_format == "channels_first":
            fused = model.eval().fuse()
            x = rng.standard_normal(shape).astype(np.float32)
            calls, _ = _real_calls(monkeypatch, fused, x)
            rows = cnnfast.explain_model(fused, shape).rows
            assert [(r.name, r.op) for r in rows if not r.name.endswith(")")] == \
                [c[:2] for c in calls]
            assert "FusedConv2d" in [r.op for r in rows]
    with pytest.raises(ValueError, match="input 'x' must have shape"):
        cnnfast.explain_model(model, (2, 8, 8, 4))


def test_unsupported_numpy_raises_dry_run_error():
    nn.manual_seed(0)

    class Sums(Module):
        def forward(self, x):
            return np.cumsum(x, axis=1)

    with pytest.raises(DryRunError, match="Sums"):
        cnnfast.explain_model(nn.Sequential(nn.Conv2d(3, 4, 3), Sums()), (1, 3, 8, 8))


def _onnx_graph(nodes, inits):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


def _onnx_case(op, inits=None, inputs=("x",), **attrs):
    return op, inputs, inits or {}, attrs


ONNX_OPS = [
    _onnx_case("Pad", {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)}, ("x", "p"),
               mode="reflect"),
    _onnx_case("Resize", {"s": np.array([1, 1, 2, 1.5], np.float32)}, ("x", "", "s"),
               mode="linear"),
    _onnx_case("Transpose", perm=[0, 2, 3, 1]),
    _onnx_case("Softmax", axis=1),
    _onnx_case("ReduceMean", axes=[2, 3], keepdims=1),
    _onnx_case("LeakyRelu", alpha=0.1),
    _onnx_case("PRelu", {"s": np.full((4, 1, 1), 0.2, np.float32)}, ("x", "s")),
    _onnx_case("MatMul", {"w": np.ones((6, 3), np.float32)}, ("x", "w")),
    _onnx_case("Concat", None, ("x", "x"), axis=1),
    _onnx_case("Unsqueeze", {"a": np.array([0], np.int64)}, ("x", "a")),
]


@pytest.mark.parametrize("op, inputs, inits, attrs", ONNX_OPS, ids=[c[0] for c in ONNX_OPS])
def test_onnx_operators(rng, op, inputs, inits, attrs):
    pytest.importorskip("onnx")
    from onnx import helper
    import cnnfast.onnx as connx
    data = _onnx_graph([helper.make_node(op, list(inputs), ["y"], **attrs)], inits)
    model = connx.load(data)
    y = model(rng.standard_normal((2, 4, 6, 6)).astype(np.float32))
    for mode in ("eval", "train"):
        getattr(model, mode)()
        plan = cnnfast.explain_model(model, (2, 4, 6, 6))
        assert plan.rows[-1].out_shape == y.shape
        passes = set(plan.rows[-1].passes)
        assert plan.rows[-1].name == "0"
        assert passes == {"forward"} if mode == "eval" else {"forward", "x"} <= passes
