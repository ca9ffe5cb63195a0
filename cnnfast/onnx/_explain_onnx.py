"""explain_model's rules for a loaded ONNX graph (cnnfast._explain_layers'
counterparts): the model converts a channels-last input to channels-first
planes and back, and each operator's row is planned as its forward runs.
Operators without a rule here (Reshape, Concat, Add, Transpose, Softmax, ...)
run their own forward on the stand-ins, their NumPy arithmetic counted;
one that needs values (Gather of a runtime index, ...) raises a TypeError
naming it."""
from __future__ import annotations

import math

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._explain import DryArray, DryRunError, numpy_pass
from .._explain_layers import _batch_norm_row, _conv_need, _copy_row, _elementwise
from .._explain_layers import _dry_inputs, _ghost, _pool_row, _record_conv, conv_passes
from .._ops.activation import elementwise_args
from .._ops.batch_norm import batch_norm_args
from .._ops.conv_validation import conv_algorithm, conv_geometry, conv_transpose_geometry
from .._ops.data_format import _shape_first, _shape_last
from .._ops.pool_validation import adaptive_geometry, avg_pool_divisors, pool_geometry
from . import _layers as L
from . import _ops as O
from ._model import OnnxModel, _op_label


def model_rule(t, m, *inputs):
    """OnnxModel.forward, planned."""
    if len(inputs) != len(m._input_names):
        raise TypeError(f"the model takes {len(m._input_names)} input(s) "
                        f"({', '.join(m._input_names)}), got {len(inputs)}")
    env = dict(m._consts)
    for name, x in zip(m._input_names, inputs):
        if m._check_input(name, _ghost(x), m._input_shapes.get(name)):
            first = t.new(_shape_first(x.shape), x.dtype)
            _copy_row(t, m, "to_channels_first", x, first, x.shape, x.shape, "channels_first")
            x = first
        env[name] = x
    op = None
    t.push_layout("channels_first")
    try:
        for op, args, outs in zip(m._ops, m._args, m._outs):
            values = op(*[env[n] if n else None for n in args])
            env.update(zip(outs, values))
    except DryRunError:
        raise
    except (ValueError, TypeError, IndexError) as e:
        raise ValueError(f"{_op_label(op)}: {e}") from e
    finally:
        t.pop_layout()
    outputs = []
    for name in m._output_names:
        y = env[name]
        if m.data_format == "channels_last" and isinstance(y, DryArray) and y.ndim in (4, 5):
            last = t.new(_shape_last(y.shape), y.dtype)
            _copy_row(t, m, "to_channels_last", y, last, last.shape, last.shape,
                      "channels_first")
            y = last
        outputs.append(y)
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def conv_rule(t, m, x, w=None, b=None):
    g = _ghost(x)
    bias = None if m.bias is None else m.bias.data
    geom = conv_geometry(m.nd, g, m.weight.data, bias, m.stride, m._pads(g), m.dilation,
                         m.groups)
    need = _conv_need(m) if m.training else ()
    passes = conv_passes(geom, conv_algorithm("auto", geom), need, False)
    return (_record_conv(t, m, x, geom, geom.out_shape, passes, False),)


def conv_transpose_rule(t, m, x, w=None, b=None):
    g = _ghost(x)
    args = m._args(g)
    bias = None if m.bias is None else m.bias.data
    tg = conv_transpose_geometry(m.nd, g, m.weight.data, bias, args["stride"],
                                 args["padding"], args["output_padding"], args["groups"],
                                 args["dilation"])
    need = _conv_need(m) if m.training else ()
    passes = conv_passes(tg.conv, conv_algorithm("auto", tg.conv), need, False,
                         transposed=True)
    return (_record_conv(t, m, x, tg.conv, tg.out_shape, passes, False, transposed=True),)


def batch_norm_rule(t, m, x, *unused):
    batch_norm_args(_ghost(x), m.running_mean, m.running_var, m.weight.data, m.bias.data,
                    m.training, m.momentum, m.eps)
    return (_batch_norm_row(t, m, x, m.training, False, m._needs_grad(m.weight),
                            m._needs_grad(m.bias)),)


def pool_rule(t, m, x):
    g = _ghost(x)
    pads = m._pads(g)
    if m.kind == "max":
        geom = pool_geometry(m.nd, "max", g, m.kernel_size, m.stride, pads, m.dilation,
                             m.ceil_mode)
    else:
        geom = pool_geometry(m.nd, "avg", g, m.kernel_size, m.stride, pads, 1, m.ceil_mode)
        avg_pool_divisors(geom, V.flag(m.count_include_pad, "count_include_pad"), None)
    outputs = math.prod(geom.out_shape)
    taps = outputs * math.prod(geom.kernel)
    return (_pool_row(t, m, x, geom.out_shape, geom.dtype, False, False, f"pool_{m.kind}",
                      taps, f"pool_{m.kind}_backward", outputs if m.kind == "max" else taps),)


def global_pool_rule(t, m, x):
    g = _ghost(x)
    if getattr(x, "ndim", 0) == 4:
        dtype, _ = adaptive_geometry(g, 1, f"global_{m.kind}_pool2d")
        kernel = f"pool_global_{m.kind}"
    else:
        V.check_array(g, "x")
        dtype, kernel = x.dtype, f"numpy_{m.kind}"
    shape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
    return (_pool_row(t, m, x, shape, dtype, False, False, kernel, x.size,
                      f"{kernel}_backward", x.size),)


def gemm_rule(t, m, a, b=None, c=None):
    ga = _ghost(a)
    gb = m.weight.data if m.weight is not None else _ghost(b)
    dtype = V.common_float_dtype(a=ga, b=gb)
    if ga.ndim != 2 or gb.ndim != 2:
        raise ValueError(f"Gemm takes 2-D A and B, got shapes {ga.shape} and {gb.shape}")
    (M, K), (K2, N) = (ga.T if m.trans_a else ga).shape, (gb.T if m.trans_b else gb).shape
    if K != K2:
        raise ValueError(f"Gemm: op(A) {(M, K)} and op(B) {(K2, N)} do not multiply")
    bias = m.bias.data if m.bias is not None else c
    if bias is not None:
        np.broadcast_shapes(np.shape(bias) if not isinstance(bias, DryArray) else bias.shape,
                            (M, N))
    macs = M * N * K
    threads = P.dense_threads(macs, K * N)
    passes = {"forward": numpy_pass("dense_matmul", 2 * macs + (M * N if bias is not None
                                                                 else 0), threads)}
    if m.training:
        if m._input_grad:
            passes["x"] = numpy_pass("dense_matmul", 2 * macs, threads)
        if m.weight is None or m._needs_grad(m.weight):
            passes["weight"] = numpy_pass("dense_matmul", 2 * macs, threads)
        if m.bias is not None and m._needs_grad(m.bias):
            passes["bias"] = numpy_pass("numpy_sum", M * N)
    y = t.new((M, N), dtype)
    t.record(t.name_of(m), "Gemm", [t.dry(a)], [y], t.current_layout(), passes)
    return (y,)


def activation_rule(t, m, x):
    if m.kind == "Relu" and x.dtype.kind == "f":
        elementwise_args("relu", x=_ghost(x))
        return (_elementwise(t, m, [x], "relu", 1, "relu_backward", 1),)
    return (_elementwise(t, m, [x], f"numpy_{m.kind.lower()}", 2, "numpy_backward", 3,
                         threads=1),)


def clip_rule(t, m, x, lo=None, hi=None):
    return (_elementwise(t, m, [x], "numpy_clip", 1, "numpy_mul", 1, threads=1),)


def transpose_rule(t, m, x):
    """Transpose: np.ascontiguousarray(x.transpose(perm)), a NumPy copy."""
    perm = tuple(reversed(range(x.ndim))) if m.perm is None else m.perm
    y = t.dry(x).transpose(perm)
    passes = {"forward": numpy_pass("numpy_transpose", 0)}
    if m.training:
        passes["x"] = numpy_pass("numpy_transpose", 0)
    t.record(t.name_of(m), "Transpose", [t.dry(x)], [y], t.current_layout(), passes)
    return (y,)


def matmul_rule(t, m, a, b=None):
    """MatMul: a constant 2-D weight runs on cnnfast's dense kernel (as
    Gemm), anything else is np.matmul."""
    b = m.weight.data if m.weight is not None else b
    sb = b.shape
    if not (len(sb) == 2 and a.ndim >= 2 and a.dtype == b.dtype and a.dtype.kind == "f"):
        return t._user_leaf(m, t.name_of(m), (a, b), {})   # np.matmul, counted
    if a.shape[-1] != sb[0]:
        raise ValueError(f"MatMul {m._node!r}: shapes {a.shape} and {sb} do not multiply")
    rows = math.prod(a.shape[:-1])
    macs = rows * sb[0] * sb[1]
    threads = P.dense_threads(macs, sb[0] * sb[1])
    passes = {"forward": numpy_pass("dense_matmul", 2 * macs, threads)}
    if m.training:
        passes["x"] = numpy_pass("numpy_matmul", 2 * macs)
        if m.weight is None or m._needs_grad(m.weight):
            passes["weight"] = numpy_pass("numpy_matmul", 2 * macs)
    y = t.new(a.shape[:-1] + (sb[1],), a.dtype)
    t.record(t.name_of(m), "MatMul", _dry_inputs(t, a, b if isinstance(b, DryArray) else None),
             [y], t.current_layout(), passes)
    return (y,)


def _index_map_row(t, m, x, resized, flops_per):
    """Pad / Resize: NumPy gathers along each changed axis (_apply_maps)."""
    shape = list(x.shape)
    for axis, out in resized:
        shape[axis] = out
    y = t.new(tuple(shape), x.dtype)
    flops = flops_per * y.size * len(resized)
    passes = {"forward": numpy_pass("numpy_gather", flops)}
    if m.training:
        passes["x"] = numpy_pass("numpy_scatter_add", flops)
    t.record(t.name_of(m), type(m).__name__, [t.dry(x)], [y], t.current_layout(), passes)
    return (y,)


def pad_rule(t, m, x, pads=None, value=None, axes=None):
    specs, _ = m._specs(_ghost(x), pads, value, axes)
    return _index_map_row(t, m, x, [(axis, n + b + a) for axis, n, b, a in specs], 0)


def resize_rule(t, m, x, roi=None, scales=None, sizes=None):
    specs = m._specs(_ghost(x), scales, sizes)
    # linear: 2 taps per output along each axis (a multiply and an add each)
    return _index_map_row(t, m, x, [(axis, out) for axis, _, out, _ in specs],
                          4 if m.mode == "linear" else 0)


RULES = {
    (L.Pad, "forward"): pad_rule,
    (L.Resize, "forward"): resize_rule,
    (L.MatMul, "forward"): matmul_rule,
    (O.Transpose, "forward"): transpose_rule,
    (OnnxModel, "forward"): model_rule,
    (L.Conv, "forward"): conv_rule,
    (L.ConvTranspose, "forward"): conv_transpose_rule,
    (L.BatchNorm, "forward"): batch_norm_rule,
    (L.Pool, "forward"): pool_rule,
    (L.GlobalPool, "forward"): global_pool_rule,
    (L.Gemm, "forward"): gemm_rule,
    (O.Activation, "forward"): activation_rule,
    (O.Clip, "forward"): clip_rule,
}
