"""conv{1,2,3}d and conv{1,2,3}d_backward, explain_conv, and the fused
forward of Module.fuse()'s layers: validate (conv_validation), plan
(cnnfast._plan), then run the passes (conv_passes) or, channels-last, the
NHWC kernels (cnnfast._nhwc, _nhwc_backward), the 1x1 pixel-row GEMMs
(pointwise) or the depthwise kernels (depthwise), with layout copies around
the channels-first plan for the rest."""
from __future__ import annotations

from types import MappingProxyType

import numpy as np

from .. import _nhwc
from .. import _nhwc_backward
from .. import _plan as P
from .. import _validation as V
from .._cache import memoized
from .._threads import num_threads
from .activation import epilogue_clamp
from .conv_passes import (
    _bias_array, _bias_grad, _depth_stack, _merge_first, _run_forward, _run_input_grad,
    _run_input_grad_folded, _run_weight_grad, forward_call, run_forward_call,
)
from .conv_validation import conv_algorithm, conv_geometry, conv_need, conv_residual
from .data_format import _first_view, _shape_first, _shape_last, _to_first, _to_last
from .depthwise import _depthwise_backward_last, _depthwise_forward, _depthwise_pack
from .pointwise import _channel_sums, _pixel_rows, _pointwise_backward_last, _pointwise_rows


def _conv_forward(nd, x, weight, bias, stride, padding, dilation, groups, algorithm,
                  padding_mode="zeros", data_format="channels_first"):
    prepared = _prepared_forward(x, weight, bias, nd, stride, padding, dilation, groups,
                                 algorithm, padding_mode, data_format)
    if prepared is None:
        return _conv_forward_last(nd, x, weight, bias, stride, padding, dilation, groups,
                                  algorithm, padding_mode)
    geom, p, call = prepared
    if call is not None:
        return run_forward_call(call, x, weight, _bias_array(bias, geom.dtype))
    return _run_forward(geom, p, x, weight, _bias_array(bias, geom.dtype))


@memoized(arrays=3, state=P.planning_state)
def _prepared_forward(x, weight, bias, nd, stride, padding, dilation, groups, algorithm,
                      padding_mode, data_format):
    """A conv{nd}d call validated and planned once (one cache lookup for a
    repeated call): (geometry, forward plan entry, its conv_passes.ForwardCall
    or None when another kernel runs it), or None channels-last."""
    if V.channels_last(data_format):
        return None
    geom = conv_geometry(nd, x, weight, bias, stride, padding, dilation, groups,
                         padding_mode=padding_mode)
    p = P.plan_conv(geom, conv_algorithm(algorithm, geom), ("forward",)).passes["forward"]
    return geom, p, forward_call(geom, p)


def _conv_forward_fused(nd, x, weight, bias, stride, padding, dilation, groups, clamp=None,
                        residual=None, padding_mode="zeros"):
    """conv{nd}d with a fused inference layer's epilogue (Module.fuse()):
    clamp(conv(x, weight) + bias + residual, lo, hi), residual optional,
    computed in the convolution's store pass (no separate pass over the
    output). clamp: None or False (no activation), True (ReLU, [0, inf]) or
    (lo, hi) (ReLU6 [0, 6], Hardtanh [min_val, max_val])."""
    geom = conv_geometry(nd, x, weight, bias, stride, padding, dilation, groups,
                         padding_mode=padding_mode)
    conv_residual(residual, geom)
    bounds = epilogue_clamp(clamp)
    plan = P.plan_conv(geom, "auto", ("forward",))
    return _run_forward(geom, plan.passes["forward"], x, weight, _bias_array(bias, geom.dtype),
                        bounds, residual)


def _conv_forward_fused_last(nd, x, weight, bias, stride, padding, dilation, groups,
                             clamp=None, residual=None, padding_mode="zeros", packed=None,
                             into_residual=False):
    """_conv_forward_fused on channels-last x and residual: clamp(conv(x) + bias
    + residual), clamp as there, residual optional. On the NHWC
    direct kernel (epilogue in its store pass, weights packed once: `packed`,
    a dict the layer keeps, caches them per configuration), else on the
    channels-first kernels between layout copies. into_residual: residual
    is the caller's scratch, which nobody reads after this call; the direct
    kernel may store the result over it (_nhwc.run) and return it."""
    geom = conv_geometry(nd, _first_view(x), weight, bias, stride, padding, dilation, groups,
                         padding_mode=padding_mode)
    conv_residual(None if residual is None else _first_view(residual), geom)
    clamp = epilogue_clamp(clamp)
    p = P.plan_conv(geom, "auto", ("forward",), channels_last=True,
                    kept_weights=packed is not None).passes["forward"]
    if P.depthwise_native_last(geom, "auto"):
        b = _bias_array(bias, geom.dtype)
        wpk = None if packed is None else _packed(
            packed, ("depthwise",), weight, bias, lambda: _depthwise_pack(geom, weight, b))
        return _depthwise_forward(geom, p, x, weight, b, clamp, residual, last=True,
                                  packed=wpk)
    if p.kernel == "nhwc_winograd":
        u, finite, b = _packed(packed, ("winograd", p.config.m, p.config.pos_stride), weight,
                               bias, lambda: (*_nhwc.winograd_pack(weight, geom, p.config),
                                              _nhwc.winograd_bias(bias, geom)))
        if finite:
            out = _nhwc.winograd_run(p.config, geom, x, u, b, residual, clamp)
            if out is not None:
                return out
        # a non-finite weight or input: the direct kernel's exact result
        p = p._replace(kernel="nhwc_direct", config=_nhwc.configure(geom, p.config.threads))
    if p.kernel != "nhwc_direct":
        return _to_last(_conv_forward_fused(
            nd, _to_first(x), weight, bias, stride, padding, dilation, groups, clamp,
            None if residual is None else _to_first(residual), padding_mode))
    w, finite, b = _packed(packed, ("direct", p.config.group_stride, p.config.block), weight,
                           bias, lambda: (*_nhwc.pack_weights(weight, geom, p.config),
                                          _nhwc.pack_bias(bias, geom, p.config)))
    into_residual = into_residual and _nhwc.writes_into_residual(p.config, geom, x, residual)
    return _nhwc.run(p.config, geom, x, w, b, residual, clamp, into_residual, finite)


def _packed(cache, key, weight, bias, pack):
    """pack() of a layer's weight and bias (packed weights, finite, packed
    bias), kept in the layer's dict `cache`
    (None: not kept). An entry holds the source arrays: a replaced weight
    (load_state_dict) misses, and its id cannot be reused by another array
    while cached."""
    entry = None if cache is None else cache.get(key)
    if entry is None or entry[0] is not weight or entry[1] is not bias:
        entry = (weight, bias, pack())
        if cache is not None:
            cache[key] = entry
    return entry[2]


def _conv_forward_last(nd, x, weight, bias, stride, padding, dilation, groups, algorithm,
                       padding_mode):
    geom = conv_geometry(nd, _first_view(x), weight, bias, stride, padding, dilation, groups,
                         padding_mode=padding_mode)
    algorithm = conv_algorithm(algorithm, geom)
    p = P.plan_conv(geom, algorithm, ("forward",), channels_last=True).passes["forward"]
    if P.depthwise_native_last(geom, algorithm):
        return _depthwise_forward(geom, p, x, weight, _bias_array(bias, geom.dtype), last=True)
    if p.kernel in ("nhwc_direct", "nhwc_winograd"):
        return _nhwc.forward_pass(p.kernel, p.config, geom, x, weight, bias)
    if P.conv_channels_last_native(geom, algorithm):
        return _pointwise_rows(_pixel_rows(x, geom.dtype, geom.stride),
                               weight.reshape(geom.out_channels, geom.in_channels), True,
                               _bias_array(bias, geom.dtype), _shape_last(geom.out_shape),
                               P.conv_threads(P.conv_macs(geom)))
    return _to_last(_conv_forward(nd, _to_first(x), weight, bias, stride, padding, dilation,
                                  groups, algorithm, padding_mode))


def _conv_backward_last(nd, grad_out, x, weight, stride, padding, dilation, groups, need,
                        algorithm, padding_mode):
    """Channels-last gradients: the passes the plan gives layout
    "channels_last" run on the NHWC kernels (_nhwc_backward; a 1x1 one as
    GEMMs over pixel rows), the others on the channels-first plan between
    layout copies (as does the input gradient when a weight is NaN or inf)."""
    geom = conv_geometry(nd, _first_view(x), weight, None, stride, padding, dilation,
                         groups, grad_out=_first_view(grad_out), padding_mode=padding_mode)
    need = conv_need(need)
    chosen = conv_algorithm(algorithm, geom)
    if P.depthwise_native_last(geom, chosen, need):
        return _depthwise_backward_last(geom, chosen, grad_out, x, weight, need)
    if P.conv_channels_last_native(geom, chosen):
        return _pointwise_backward_last(geom, grad_out, x, weight, need)
    passes = P.plan_conv(geom, chosen, [g for g in ("x", "weight", "bias") if g in need],
                         channels_last=True).passes
    grad = dict.fromkeys(("x", "weight", "bias"))
    for name, p in passes.items():
        if p.layout != "channels_last":
            continue
        if name == "x":
            grad["x"] = _nhwc_backward.run_input_grad(p.kernel, p.config, geom, grad_out,
                                                      weight)
        elif name == "weight":
            grad["weight"] = _nhwc_backward.run_weight_grad(p.kernel, p.config, geom,
                                                            grad_out, x)
        else:
            grad["bias"] = _channel_sums(_pixel_rows(grad_out, geom.dtype))
    rest = tuple(g for g in passes if grad[g] is None)
    if rest:   # x is read only by the weight gradient
        first = _conv_backward(
            nd, _to_first(grad_out), _to_first(x) if "weight" in rest else _first_view(x),
            weight, stride, padding, dilation, groups, rest, algorithm, padding_mode)
        _merge_first(grad, rest, first)
    return grad["x"], grad["weight"], grad["bias"]


def _conv_backward(nd, grad_out, x, weight, stride, padding, dilation, groups, need,
                   algorithm, padding_mode="zeros", data_format="channels_first"):
    prepared = _prepared_backward(grad_out, x, weight, nd, stride, padding, dilation, groups,
                                  need, algorithm, padding_mode, data_format)
    if prepared is None:
        return _conv_backward_last(nd, grad_out, x, weight, stride, padding, dilation, groups,
                                   need, algorithm, padding_mode)
    geom, passes = prepared
    go5 = V.kernel_array(grad_out, geom.dtype).reshape(geom.out5_shape)
    # both gradients stacked: stack grad_out once
    go_stacked = (_depth_stack(go5) if all(passes.get(g) and passes[g].layout == "depth_stacked"
                                           for g in ("x", "weight")) else None)
    grad_x = grad_w = grad_b = None
    if "x" in passes and geom.pad_mode != "zeros":
        grad_x = _run_input_grad_folded(geom, passes["x"], go5, weight).reshape(x.shape)
    elif "x" in passes:
        grad_x = _run_input_grad(geom, passes["x"], go5, weight, go_stacked).reshape(x.shape)
    if "weight" in passes:
        grad_w = _run_weight_grad(geom, passes["weight"], go5, x, weight.shape, go_stacked)
    if "bias" in passes:
        grad_b = _bias_grad(go5, geom.out_channels, passes["bias"].threads, geom.dtype)
    return grad_x, grad_w, grad_b


@memoized(arrays=3, state=P.planning_state)
def _prepared_backward(grad_out, x, weight, nd, stride, padding, dilation, groups, need,
                       algorithm, padding_mode, data_format):
    """A conv{nd}d_backward call validated and planned once (one cache
    lookup when repeated): (geometry, planned passes), or None
    channels-last."""
    if V.channels_last(data_format):
        return None
    geom = conv_geometry(nd, x, weight, None, stride, padding, dilation, groups,
                         grad_out=grad_out, padding_mode=padding_mode)
    need = conv_need(need)
    plan = P.plan_conv(geom, conv_algorithm(algorithm, geom),
                       [p for p in ("x", "weight", "bias") if p in need])
    return geom, plan.passes


def explain_conv(x_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, *,
                 algorithm="auto", dtype="float32", need=("forward", "x", "weight", "bias"),
                 threads=None, padding_mode="zeros", data_format="channels_first"):
    """How cnnfast would run conv{1,2,3}d on arrays of these shapes, without
    running anything: a ConvPlan (cnnfast._plan) with the output shape and,
    per pass ("forward", and the gradients "x", "weight", "bias"), the
    algorithm, driver kernel, layout, thread count, GEMM tiling, work-array
    bytes and FLOPs. `print()` it for a table. The arguments are those of
    conv*d (the dimension follows len(x_shape)), validated the same way; the
    plan is the one the call would execute with `threads` threads (default:
    the current get_num_threads()). With data_format="channels_last",
    x_shape is (N, *spatial, C) and the passes the channels-last kernels run
    have layout "channels_last" (the others run the channels-first plan
    between layout copies)."""
    last = V.channels_last(data_format)
    x_shape = _shape_arg(x_shape, "x_shape")
    weight_shape = _shape_arg(weight_shape, "weight_shape")
    if last and len(x_shape) >= 3:
        x_shape = _shape_first(x_shape)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    nd = len(x_shape) - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"x_shape must have 3, 4 or 5 entries (N, C, *spatial), got {x_shape}")
    # zero-stride views: validation sees the shapes and dtype, no memory is used
    x = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), x_shape, (0,) * len(x_shape))
    w = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), weight_shape,
                                        (0,) * len(weight_shape))
    geom = conv_geometry(nd, x, w, None, stride, padding, dilation, groups,
                         padding_mode=padding_mode)
    need = [need] if isinstance(need, str) else list(need)
    bad = [p for p in need if p not in P.PASSES]
    if bad:
        raise ValueError(f"need must name passes from {P.PASSES}, got {V.shown(tuple(need))}")
    algorithm = conv_algorithm(algorithm, geom)
    if threads is None:
        return _explained(geom, algorithm, need, last)
    with num_threads(threads):
        return _explained(geom, algorithm, need, last)


def _shape_arg(shape, name):
    """explain_conv's x_shape or weight_shape: a sequence of ints >= 0."""
    try:
        values = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {V.shown(shape)}") from None
    if not all(V._is_int(v) for v in values):
        raise TypeError(f"{name} must be a tuple of ints, got {V.shown(shape)}")
    if any(v < 0 for v in values):
        raise ValueError(f"{name} must not have negative sizes, got {values}")
    return tuple(int(v) for v in values)


def _explained(geom, algorithm, need, last):
    """explain_conv's plan: plan_conv's, with the passes a channels-last 1x1
    convolution runs as GEMMs over its pixel rows (as explain_model shows
    them: the plan the call executes)."""
    plan = P.plan_conv(geom, algorithm, need, channels_last=last)
    if last and P.conv_channels_last_native(geom, algorithm):
        plan = plan._replace(passes=MappingProxyType(
            P.native_pointwise_passes(dict(plan.passes), geom)))
    return plan


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", padding_mode="zeros",
           data_format="channels_first"):
    """1-D convolution (cross-correlation) of x (N, C, L) with weight (K, C//groups, k);
    padding also takes "valid", "same", "causal" and a (before, after) pair;
    padding_mode "zeros", "reflect", "replicate" or "circular" (torch's)."""
    return _conv_forward(1, x, weight, bias, stride, padding, dilation, groups, algorithm,
                         padding_mode, data_format)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", padding_mode="zeros",
           data_format="channels_first"):
    """2-D convolution of x (N, C, H, W) with weight (K, C//groups, kH, kW), as
    torch.nn.functional.conv2d; padding also takes "valid", "same" and
    (before, after) pairs per dim; padding_mode as torch.nn.Conv2d's."""
    return _conv_forward(2, x, weight, bias, stride, padding, dilation, groups, algorithm,
                         padding_mode, data_format)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", padding_mode="zeros",
           data_format="channels_first"):
    """3-D convolution of x (N, C, D, H, W) with weight (K, C//groups, kD, kH, kW)."""
    return _conv_forward(3, x, weight, bias, stride, padding, dilation, groups, algorithm,
                         padding_mode, data_format)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto", padding_mode="zeros",
           data_format="channels_first"):
    """Gradients of conv1d -> (grad_x, grad_weight, grad_bias); None where not in `need`."""
    return _conv_backward(1, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm, padding_mode, data_format)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto", padding_mode="zeros",
           data_format="channels_first"):
    """Gradients of conv2d -> (grad_x, grad_weight, grad_bias); None where not in `need`."""
    return _conv_backward(2, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm, padding_mode, data_format)


def conv3d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto", padding_mode="zeros",
           data_format="channels_first"):
    """Gradients of conv3d -> (grad_x, grad_weight, grad_bias); None where not in `need`."""
    return _conv_backward(3, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm, padding_mode, data_format)
