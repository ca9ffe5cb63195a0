"""explain_model's rules: per layer class, what its call would run.

A rule(tracer, layer, *inputs) validates its inputs with the functions the
layer's forward calls (on zero-stride ghosts of the stand-ins), records the
row and returns the output stand-in(s). Convolutions plan with
cnnfast._plan.plan_conv exactly as cnnfast.functional's paths do; the other
passes follow the conventions in cnnfast._explain's docstring. A rule applies
to a subclass only when it keeps the class's forward (a subclass that
overrides forward computes something else).
"""
from __future__ import annotations

import math

import numpy as np

from . import _plan as P
from . import _validation as V
from ._explain import DryArray, DryRunError, numpy_pass
from ._ops.activation import elementwise_args, epilogue_clamp
from ._ops.batch_norm import batch_norm_args
from ._ops.conv_validation import (
    conv_algorithm, conv_geometry, conv_residual, conv_transpose_geometry,
)
from ._ops.data_format import _first_view, _shape_first, _shape_last
from ._ops.inverted_residual import block_plan
from ._ops.pool_validation import adaptive_geometry, avg_pool_divisors, pool_geometry
from .nn import fuse as _fuse
from .nn._checks import _check_input, _same_dtype
from .nn.activation import Hardtanh, LeakyReLU, ReLU, Sigmoid, Tanh
from .nn.container import Chain, Sequential
from .nn.conv import _ConvNd, _ConvTransposeNd
from .nn.dropout import Dropout
from .nn.linear import Flatten, Identity, Linear
from .nn.module import Module
from .nn.normalization import _BatchNorm
from .nn.pooling import (
    AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AdaptiveMaxPool1d,
    AdaptiveMaxPool2d, AdaptiveMaxPool3d, AvgPool1d, AvgPool2d, AvgPool3d, GlobalAvgPool2d,
    GlobalMaxPool2d, MaxPool1d, MaxPool2d, MaxPool3d, _AdaptiveAvg, _AdaptiveMax, _AvgPool,
    _MaxPool,
)

ELEMENTWISE_LAYOUT = {"channels_last": "channels_last", "channels_first": "images"}


def _ghost(x):
    """What the layer's validation sees: a ghost for a stand-in, else the
    object itself (a wrong type then raises the real call's error)."""
    return x.ghost() if isinstance(x, DryArray) else x


def _first(g, last):
    return _first_view(g) if last else g


def _out(t, shape, dtype, last):
    """The output stand-in of a channels-first result shape."""
    return t.new(_shape_last(shape) if last and len(shape) >= 3 else shape, dtype)


def _layout_of(t, m):
    fmt = getattr(m, "data_format", None)
    return fmt if fmt in ("channels_first", "channels_last") else t.current_layout()


def _dry_inputs(t, *xs):
    return [t.dry(x) for x in xs if x is not None]


# ------------------------------------------------------------ convolution

def _conv_need(m):
    return ((("x",) if m._input_grad else ())
            + (("weight",) if m._needs_grad(m.weight) else ())
            + (("bias",) if m._needs_grad(m.bias) else ()))


def conv_passes(geom, algorithm, need, last, transposed=False):
    """{pass: PassPlan} of a convolution layer's forward and the gradients
    in `need`, as functional's conv paths run them. transposed: geom is the
    convolution whose input gradient the transposed convolution is."""
    if transposed:   # forward = conv's input gradient, x = conv's forward
        order = ("x",) + tuple({"x": "forward"}.get(p, p) for p in need if p != "bias")
        plan = P.plan_conv(geom, algorithm, order).passes
        passes = {"forward": plan["x"]}
        if "x" in need:
            passes["x"] = plan["forward"]
        if "weight" in need:
            passes["weight"] = plan["weight"]
        if "bias" in need:
            passes["bias"] = P.PassPlan("direct", "channel_sum", "images",
                                        P.conv_threads(P.conv_macs(geom)), 0, False, 0,
                                        math.prod(geom.x5_shape))
    else:
        passes = dict(P.plan_conv(geom, algorithm, ("forward",) + tuple(need),
                                  channels_last=last).passes)
    if last and P.conv_channels_last_native(geom, algorithm, transposed=transposed):
        passes = P.native_pointwise_passes(passes, geom, transposed)
    return passes


def _conv_note(geom, passes, last, transposed):
    """Why a channels-last convolution's forward runs on the channels-first
    kernels between layout copies (empty where it runs on NHWC)."""
    kernel = passes["forward"].kernel
    if not last or kernel in ("nhwc_direct", "nhwc_winograd", "pointwise_rows"):
        return ""
    if kernel == "depthwise" and not transposed and P.depthwise_native_last(geom, "auto"):
        return ""   # the channels-last depthwise kernel (_ops/conv.py)
    if transposed:
        why = "a transposed convolution other than 1x1 stride 1"
    elif geom.pad_mode != "zeros":
        why = f"padding_mode {geom.pad_mode!r}"
    else:
        lanes = P.NHWC_MIN_CHANNELS * 4 // np.dtype(geom.dtype).itemsize
        why = (f"{geom.out_channels // geom.groups} output channels per group < {lanes}"
               if geom.out_channels // geom.groups < lanes else "not planned on NHWC")
    return f"channels-first kernels between layout copies: {why}"


def _record_conv(t, m, x, geom, out_shape, passes, last, extra=(), transposed=False):
    y = _out(t, out_shape, geom.dtype, last)
    t.record(t.name_of(m), type(m).__name__, _dry_inputs(t, x, *extra), [y],
             _layout_of(t, m) if hasattr(m, "data_format") else t.current_layout(), passes,
             note=_conv_note(geom, passes, last, transposed))
    return y


def conv_rule(t, m, x):
    last = V.channels_last(m.data_format)
    bias = None if m.bias is None else m.bias.data
    geom = conv_geometry(m._nd, _first(_ghost(x), last), m.weight.data, bias, m.stride,
                         m.padding, m.dilation, m.groups, padding_mode=m.padding_mode)
    need = _conv_need(m) if m.training else ()
    passes = conv_passes(geom, conv_algorithm("auto", geom), need, last)
    return _record_conv(t, m, x, geom, geom.out_shape, passes, last)


def conv_transpose_rule(t, m, x, output_size=None):
    args = m._args(m._output_padding(_ghost(x), output_size))
    last = V.channels_last(args.pop("data_format"))
    bias = None if m.bias is None else m.bias.data
    tg = conv_transpose_geometry(m._nd, _first(_ghost(x), last), m.weight.data, bias,
                                 args["stride"], args["padding"], args["output_padding"],
                                 args["groups"], args["dilation"])
    need = _conv_need(m) if m.training else ()
    passes = conv_passes(tg.conv, conv_algorithm("auto", tg.conv), need, last,
                         transposed=True)
    return _record_conv(t, m, x, tg.conv, tg.out_shape, passes, last, transposed=True)


def fused_conv_rule(t, m, x, residual=None, into_residual=False):
    """FusedConv2d: _ops.conv._conv_forward_fused(_last). (into_residual
    changes where the output goes, not the kernel or the bytes it moves.)"""
    last = m.data_format == "channels_last"
    geom = conv_geometry(m._nd, _first(_ghost(x), last), m.weight.data, m.bias.data,
                         m.stride, m.padding, m.dilation, m.groups,
                         padding_mode=m.padding_mode)
    conv_residual(None if residual is None else _first(_ghost(residual), last), geom)
    epilogue_clamp(m.clamp)
    # channels-last, the layer keeps its packed (Winograd: transformed) weights
    kept = {"channels_last": True, "kept_weights": True} if last else {}
    passes = dict(P.plan_conv(geom, "auto", ("forward",), **kept).passes)
    return _record_conv(t, m, x, geom, geom.out_shape, passes, last,
                        () if residual is None else (residual,))


def inverted_residual_rule(t, m, x):
    """models.mobilenet.FusedInvertedResidual: its layers' rows (each
    validated as it would be), and when the block runs as one driver call
    (_ops.inverted_residual.block_plan), its three convolutions' forward
    passes are that call's: kernel inverted_residual_block, its threads and
    work array (the workspace on the expansion's row), each its own FLOPs."""
    start = len(t.rows)
    out = m._layers_forward(x)
    layers = m._block_layers()
    plan = (block_plan(x.ghost(), *layers, m.use_res_connect)
            if layers is not None and isinstance(x, DryArray) else None)
    if plan is not None:
        cfg = plan[1]
        convs = [i for i in range(start, len(t.rows)) if t.rows[i].op == "FusedConv2d"]
        for k, i in enumerate(convs):
            row = t.rows[i]
            fwd = row.passes["forward"]
            fwd = P.PassPlan("direct", "inverted_residual_block", "channels_last", cfg.threads,
                             0, False, cfg.workspace_bytes if k == 0 else 0, fwd.flops,
                             config=cfg)
            t.rows[i] = row._replace(
                passes=dict(row.passes, forward=fwd),
                note="one driver call with the block's other convolutions: "
                     "expanded rows kept in cache (cnnfast._inverted_residual)")
    return out


# ------------------------------------------------------------ dense, shape

def linear_rule(t, m, x):
    _check_input(_ghost(x), "Linear", (1,), m.in_features, axis=-1)
    _same_dtype(x, m.weight, "Linear")
    rows = math.prod(x.shape[:-1])
    macs = rows * m.out_features * m.in_features
    threads = P.dense_threads(macs, m.out_features * m.in_features)
    passes = {"forward": numpy_pass("dense_matmul", 2 * macs + (
        rows * m.out_features if m.bias is not None else 0), threads)}
    if m.training:
        if m._input_grad:
            passes["x"] = numpy_pass("dense_matmul", 2 * macs, threads)
        if m._needs_grad(m.weight):
            passes["weight"] = numpy_pass("dense_matmul", 2 * macs, threads)
        if m._needs_grad(m.bias):
            passes["bias"] = numpy_pass("numpy_sum", rows * m.out_features)
    y = t.new(x.shape[:-1] + (m.out_features,), x.dtype)
    t.record(t.name_of(m), type(m).__name__, [t.dry(x)], [y], t.current_layout(), passes)
    return y


def view_rule(t, m, x, *args, **kwargs):
    """Layers whose forward only reshapes or passes x on (Flatten, Identity,
    Folded, Dropout in eval mode): the real forward on a ghost, which
    makes views only; a channels-last Flatten of a spatial input copies."""
    cache = m._cache
    try:
        out = m.forward(_ghost(x), *args, **kwargs)
    finally:
        m._cache = cache
    copies = (isinstance(m, Flatten) and m.data_format == "channels_last"
              and getattr(x, "ndim", 0) >= 3 and x.shape[-1] > 1
              and math.prod(x.shape[1:-1]) > 1)
    kernel = "numpy_copy" if copies else ("reshape" if isinstance(m, Flatten) else "identity")
    passes = {"forward": numpy_pass(kernel, 0)}
    if m.training:
        passes["x"] = numpy_pass(kernel, 0)
    y = t.new(out.shape, out.dtype)
    t.record(t.name_of(m), type(m).__name__, [t.dry(x)], [y], t.current_layout(), passes)
    return y


# ------------------------------------------------------------ activations

def _elementwise(t, m, inputs, kernel, flops_per, backward, back_flops_per, threads=None,
                 out_dtype=None):
    x = inputs[0]
    size = x.size
    threads = P.elementwise_threads(size) if threads is None else threads
    layout = ELEMENTWISE_LAYOUT[t.current_layout()]
    passes = {"forward": numpy_pass(kernel, flops_per * size, threads, layout)}
    if m.training:
        passes["x"] = numpy_pass(backward, back_flops_per * size, threads, layout)
    y = t.new(x.shape, x.dtype if out_dtype is None else out_dtype)
    t.record(t.name_of(m), type(m).__name__, [t.dry(a) for a in inputs], [y],
             t.current_layout(), passes)
    return y


def _own_backward(cls):
    """cls.backward, looking past the channels-last training mixin (whose
    backward runs the container's)."""
    from .nn.train_layout import ChannelsLastTraining
    for c in cls.__mro__:
        if c is not ChannelsLastTraining and "backward" in c.__dict__:
            return c.__dict__["backward"]
    return None


def _after_batch_norm(t, m, x):
    """Does ReLU m's backward run inside the batch norm's before it? When x
    is that batch norm's output and the container's backward pairs the two:
    adjacent stages of a chain (layers.backward_chain) or an inner stage of a
    residual block."""
    from .models.resnet import _ResidualBlock
    if not t.rows or t.producers.get(id(x)) != len(t.rows) - 1:
        return False
    scope = t.scope_modules[-2]
    bn = t.modules.get(t.rows[-1].name)
    backward = _own_backward(type(scope))
    if not isinstance(bn, _BatchNorm):
        return False
    if isinstance(scope, _ResidualBlock) and backward is _ResidualBlock.backward:
        return any(b is bn and r is m for _, b, r in scope._stages()[:-1])
    if isinstance(scope, Chain) and backward is Chain.backward:
        stages = scope._stages()
    elif isinstance(scope, Sequential) and backward is Sequential.backward:
        stages = scope.children()
    else:
        return False
    return any(a is bn and b is m for a, b in zip(stages, stages[1:]))


def relu_rule(t, m, x):
    dtype = elementwise_args("relu", x=_ghost(x))
    fused = m.training and type(m) is ReLU and _after_batch_norm(t, m, x)
    y = _elementwise(t, m, [x], "relu", 1, "relu_backward", 1, out_dtype=dtype)
    if fused:   # its mask is applied inside the batch norm's backward passes
        t.rows[-1].passes["x"] = numpy_pass("in_batch_norm_backward", 0,
                                            t.rows[-1].passes["x"].threads)
    return y


def relu_sum_rule(t, m, a, b):
    """ReLU.forward_sum: relu(a + b) in one pass (a residual block's end)."""
    dtype = elementwise_args("add_relu", a=_ghost(a), b=_ghost(b))
    return _elementwise(t, m, [a, b], "add_relu", 2, "relu_backward", 1, out_dtype=dtype)


def hardtanh_rule(t, m, x):
    dtype = elementwise_args("hardtanh", x=_ghost(x))
    return _elementwise(t, m, [x], "clamp", 1, "clamp_backward", 1, out_dtype=dtype)


def tanh_rule(t, m, x):
    """The C kernel for float32/float64 (about 20 flops per element: the
    polynomial, exp, a division); the backward is NumPy's g * (1 - y*y)."""
    if not isinstance(x, DryArray):
        raise DryRunError(f"{type(m).__name__} got {type(x).__name__}, not an activation")
    if x.dtype in (np.float32, np.float64):
        return _elementwise(t, m, [x], "tanh", 20, "numpy_mul", 3)
    return _elementwise(t, m, [x], "numpy_tanh", 1, "numpy_mul", 3, threads=1)


def leaky_relu_rule(t, m, x):
    dtype = elementwise_args("LeakyReLU.forward", x=_ghost(x))
    return _elementwise(t, m, [x], "numpy_where_mul", 2, "numpy_mul", 1, threads=1,
                        out_dtype=dtype)


def numpy_activation_rule(kernel):
    def rule(t, m, x):
        if not isinstance(x, DryArray):
            raise DryRunError(f"{type(m).__name__} got {type(x).__name__}, not an activation")
        return _elementwise(t, m, [x], kernel, 1, "numpy_mul", 3, threads=1)
    return rule


def dropout_rule(t, m, x):
    if not m.training:
        return view_rule(t, m, x)
    y = _elementwise(t, m, [x], "numpy_dropout", 3, "numpy_mul", 1, threads=1)
    # the uniform draws (float64) and the keep mask are temporaries
    forward = t.rows[-1].passes["forward"]
    t.rows[-1].passes["forward"] = forward._replace(workspace_bytes=x.size * 9)
    return y


# ------------------------------------------------------------ batch norm

def batch_norm_rule(t, m, x):
    last = m.data_format == "channels_last" and getattr(x, "ndim", 0) > 2
    g = m._validate(_ghost(x))
    use_batch = m.training or not m.track_running_stats
    update = m.training and m.track_running_stats
    g = _first(g, last)
    batch_norm_args(g, m.running_mean if update or not use_batch else None,
                    m.running_var if update or not use_batch else None,
                    m.weight.data if m.affine else None,
                    None if m.bias is None else m.bias.data, use_batch, 0.0, m.eps)
    return _batch_norm_row(t, m, x, use_batch, last,
                           m.affine and m._needs_grad(m.weight), m._needs_grad(m.bias))


def _batch_norm_row(t, m, x, use_batch, last, grad_weight, grad_bias):
    size = x.size
    threads = P.elementwise_threads(size)
    # a channels-last input runs on the channels-last kernels, no layout copies
    layout = "channels_last" if last else "images"
    passes = {"forward": numpy_pass("batch_norm", (5 if use_batch else 2) * size, threads,
                                    layout)}
    if m.training:
        passes["x"] = numpy_pass("batch_norm_backward", 8 * size, threads, layout)
        # gamma's and beta's gradients are the sums of the input gradient's first pass
        if grad_weight:
            passes["weight"] = numpy_pass("batch_norm_grad_sums", 0, threads)
        if grad_bias:
            passes["bias"] = numpy_pass("batch_norm_grad_sums", 0, threads)
    y = t.new(x.shape, x.dtype)
    t.record(t.name_of(m), type(m).__name__, [t.dry(x)], [y], _layout_of(t, m), passes)
    return y


# ---------------------------------------------------------------- pooling

def _pool_row(t, m, x, out_shape, dtype, last, native, forward, fwd_flops, backward,
              back_flops, indices=False):
    size = x.size
    threads = P.pool_threads(size)
    layout = "channels_last" if last and native else "images"
    copies = (size + math.prod(out_shape)) * x.dtype.itemsize if last and not native else 0
    passes = {"forward": numpy_pass(forward, fwd_flops, threads, layout, copies)}
    if m.training:
        passes["x"] = numpy_pass(backward, back_flops, threads, layout, copies)
    y = _out(t, out_shape, dtype, last)
    outs = [y]
    if indices:
        outs.append(t.new(y.shape, np.int64))
    note = (f"channels-first kernels between layout copies: {_POOL_WHY.get(type(m), '')}"
            if last and not native else "")
    t.record(t.name_of(m), type(m).__name__, [t.dry(x)], outs, _layout_of(t, m), passes,
             note=note.rstrip(": "))
    return tuple(outs) if indices else y


# why a channels-last pooling layer is not native (P.pool_channels_last_native)
_POOL_WHY = {**{cls: f"fewer than {P.POOL_CHANNELS_LAST_MIN} channels"
                for cls in (MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d)},
             MaxPool3d: "3-D pooling", AvgPool3d: "3-D pooling",
             **{cls: "adaptive pooling" for cls in (
                 AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d,
                 AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d)}}


def max_pool_rule(t, m, x):
    last = V.channels_last(m.data_format)
    geom = pool_geometry(m._nd, "max", _first(_ghost(x), last), m.kernel_size, m.stride,
                         m.padding, m.dilation, m.ceil_mode)
    outputs = math.prod(geom.out_shape)
    # without indices (inference) a channels-last 1-D/2-D pool runs on the NHWC kernel
    nhwc = last and m._nd <= 2 and not (m.training or m.return_indices)
    return _pool_row(t, m, x, geom.out_shape, geom.dtype, last,
                     nhwc or P.pool_channels_last_native(m._nd, geom.channels),
                     "pool_max_nhwc" if nhwc else "pool_max",
                     outputs * math.prod(geom.kernel), "pool_max_backward", outputs,
                     m.return_indices)


def avg_pool_rule(t, m, x):
    last = V.channels_last(m.data_format)
    geom = pool_geometry(m._nd, "avg", _first(_ghost(x), last), m.kernel_size, m.stride,
                         m.padding, 1, m.ceil_mode)
    avg_pool_divisors(geom, m.count_include_pad, m.divisor_override)
    flops = math.prod(geom.out_shape) * math.prod(geom.kernel)
    return _pool_row(t, m, x, geom.out_shape, geom.dtype, last,
                     P.pool_channels_last_native(m._nd, geom.channels), "pool_avg", flops,
                     "pool_avg_backward", flops)


def adaptive_rule(t, m, x):
    size = m._size(_ghost(x))
    last = V.channels_last(m.data_format)
    is_max = isinstance(m, _AdaptiveMax)
    op = f"adaptive_{'max' if is_max else 'avg'}_pool{m._nd}d"
    dtype, out_size = adaptive_geometry(_first(_ghost(x), last), size, op, m._nd)
    shape = (x.shape[0], x.shape[-1] if last else x.shape[1]) + tuple(out_size)
    # channels-last, an average to one value per channel is the NHWC global average
    nhwc = last and not is_max and all(o == 1 for o in out_size) and x.size > 0
    kind = op[9:12]
    return _pool_row(t, m, x, shape, dtype, last, nhwc,
                     "pool_global_avg_nhwc" if nhwc else f"pool_adaptive_{kind}",
                     x.size, f"pool_adaptive_{kind}_backward",
                     math.prod(shape) if is_max else x.size, is_max and m.return_indices)


def global_pool_rule(t, m, x):
    last = V.channels_last(m.data_format)
    kind = "max" if isinstance(m, GlobalMaxPool2d) else "avg"
    dtype, _ = adaptive_geometry(_first(_ghost(x), last), 1, f"global_{kind}_pool2d")
    V.flag(m.keepdims, "keepdims")
    n, c = x.shape[0], (x.shape[-1] if last else x.shape[1])
    shape = (n, c, 1, 1) if m.keepdims else (n, c)
    y = _pool_row(t, m, x, shape, dtype, last, True, f"pool_global_{kind}", x.size,
                  f"pool_global_{kind}_backward", x.size if kind == "avg" else n * c)
    return y


# ---------------------------------------------------------- fused models

def inference_model_rule(t, m, *args, **kwargs):
    """InferenceModel: a model that runs channels-last inside converts its
    input once and an output with spatial dims back once (rows for both)."""
    if not m._converts():
        return m.module(*args, **kwargs)
    return channels_last_inside(t, m, lambda x: m.module(x, *args[1:], **kwargs), args[0])


def channels_last_inside(t, m, run, x):
    """The rows of run(x) on a model m that runs channels-last inside: x
    converted once (when it is a float image batch), run under that layout,
    an output with spatial dims converted back."""
    convert = (isinstance(x, DryArray) and x.ndim >= 3 and x.dtype.kind == "f"
               and x.dtype.itemsize in (4, 8))
    if convert:
        inner = t.new(_shape_last(x.shape), x.dtype)
        _copy_row(t, m, "to_channels_last", x, inner, x.shape, x.shape, "channels_last")
        x = inner
    t.push_layout("channels_last")
    try:
        out = run(x)
    finally:
        t.pop_layout()
    if isinstance(out, DryArray) and out.ndim >= 3:
        first = t.new(_shape_first(out.shape), out.dtype)
        _copy_row(t, m, "to_channels_first", out, first, first.shape, first.shape,
                  "channels_last")
        out = first
    return out


def _copy_row(t, m, what, x, y, in_shape, out_shape, layout):
    """A layout conversion (the blocked copy of _ext/_layout), shapes given
    in the model's data_format; layout: the one inside the model."""
    name = t.name_of(m)
    passes = {"forward": numpy_pass("layout_copy", 0, P.copy_threads(x.size), "images")}
    t.record(f"{name}.({what})" if name else f"({what})", what, [x], [y], layout, passes,
             in_shape=in_shape, out_shape=out_shape)


# ------------------------------------------------------------------ table

RULES = {
    (_ConvNd, "forward"): conv_rule,
    (_ConvTransposeNd, "forward"): conv_transpose_rule,
    (_fuse.FusedConv2d, "forward"): fused_conv_rule,
    (Linear, "forward"): linear_rule,
    (Flatten, "forward"): view_rule,
    (Identity, "forward"): view_rule,
    (ReLU, "forward"): relu_rule,
    (ReLU, "forward_sum"): relu_sum_rule,
    (Hardtanh, "forward"): hardtanh_rule,
    (LeakyReLU, "forward"): leaky_relu_rule,
    (Tanh, "forward"): tanh_rule,
    (Sigmoid, "forward"): numpy_activation_rule("scipy_expit"),
    (Dropout, "forward"): dropout_rule,
    (_BatchNorm, "forward"): batch_norm_rule,
    (_MaxPool, "forward"): max_pool_rule,
    (_AvgPool, "forward"): avg_pool_rule,
    (_AdaptiveAvg, "forward"): adaptive_rule,
    (_AdaptiveMax, "forward"): adaptive_rule,
    (GlobalAvgPool2d, "forward"): global_pool_rule,
    (GlobalMaxPool2d, "forward"): global_pool_rule,
    (_fuse.InferenceModel, "forward"): inference_model_rule,
}


def _onnx_rules():
    try:
        from .onnx import _explain_onnx
    except ImportError:   # the onnx extra is not installed: no ONNX models either
        return {}
    return _explain_onnx.RULES


_ALL = None


def rule_for(module, method="forward"):
    """The rule of module's class for `method`, or None (a container runs its
    forward on the stand-ins; another leaf its forward as a user layer). A
    class's own `_explain(tracer, *inputs)` comes first."""
    global _ALL
    own = getattr(type(module), "_explain", None)
    if own is not None and method == "forward":
        return lambda t, m, *args, **kwargs: own(m, t, *args, **kwargs)
    if _ALL is None:
        _ALL = {**RULES, **_onnx_rules()}
    for cls in type(module).__mro__:
        rule = _ALL.get((cls, method))
        if rule is not None:
            # a subclass overriding the method computes something else
            same = getattr(type(module), method) is getattr(cls, method)
            return rule if same else None
        if cls is Module:
            break
    return None
