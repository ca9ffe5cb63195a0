"""Public ops: validate (cnnfast._validation), plan (cnnfast._plan: the
algorithm, kernel, layout and threads of each pass), allocate, call the
driver (cnnfast._ext). No arithmetic on data happens here."""
from __future__ import annotations

import contextlib
import math

import numpy as np

from ._ext import _conv, _conv_nhwc, _dense, _depthwise, _elementwise, _layout, _pool
from . import _nhwc
from . import _nhwc_backward
from . import _plan as P
from . import _validation as V
from ._threads import blas_pinned, num_threads

__all__ = [
    "conv1d", "conv2d", "conv3d",
    "conv1d_backward", "conv2d_backward", "conv3d_backward", "explain_conv",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv_transpose1d_backward", "conv_transpose2d_backward", "conv_transpose3d_backward",
    "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool1d_backward", "max_pool2d_backward", "max_pool3d_backward",
    "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "avg_pool1d_backward", "avg_pool2d_backward", "avg_pool3d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward",
    "global_max_pool2d", "global_max_pool2d_backward",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_avg_pool1d_backward", "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool3d_backward",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "adaptive_max_pool1d_backward", "adaptive_max_pool2d_backward",
    "adaptive_max_pool3d_backward",
    "batch_norm", "batch_norm_backward", "relu", "relu_backward",
    "relu6", "relu6_backward", "hardtanh", "hardtanh_backward",
]


# ----------------------------------------------------------- data formats

_SWAPPABLE = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64))


def _first_view(a):
    """A channels-last array (N, *spatial, C) seen as channels-first
    (N, C, *spatial): a view, for validation (anything else passes through
    and validation judges it)."""
    return np.moveaxis(a, -1, 1) if isinstance(a, np.ndarray) and a.ndim >= 3 else a


def _shape_first(shape: tuple) -> tuple:
    return (shape[0], shape[-1]) + tuple(shape[1:-1])


def _shape_last(shape: tuple) -> tuple:
    return (shape[0],) + tuple(shape[2:]) + (shape[1],)


def _to_first(a):
    """A channels-last array as a new C-contiguous channels-first one, by the
    blocked copy (native float32/float64/int64; a non-contiguous one is made
    contiguous first); other arrays as
    _first_view (validation rejects or converts them)."""
    if not isinstance(a, np.ndarray) or a.ndim < 3 or a.dtype not in _SWAPPABLE or not a.size:
        return _first_view(a)
    n, c = a.shape[0], a.shape[-1]
    if c == 1 or a.size == n * c:  # one channel or one position: the same memory order
        return _first_view(a)
    out = np.empty(_shape_first(a.shape), a.dtype)
    _layout.swap_axes(V.kernel_array(a, a.dtype).reshape(n, -1, c), out.reshape(n, c, -1),
                      P.copy_threads(a.size))
    return out


def _to_last(a):
    """A channels-first result (N, C, *spatial), C-contiguous, as a new
    C-contiguous channels-last array; None and (N, C) arrays unchanged."""
    if a is None or a.ndim < 3:
        return a
    n, c = a.shape[:2]
    if c == 1 or a.size == n * c:  # the same memory order: a reshape of the new result
        return a.reshape(_shape_last(a.shape))
    out = np.empty(_shape_last(a.shape), a.dtype)
    if a.size:
        _layout.swap_axes(a.reshape(n, c, -1), out.reshape(n, -1, c), P.copy_threads(a.size))
    return out


def _pixel_rows(a, dtype, stride=None):
    """A channels-last array as its (pixels, channels) matrix, C-contiguous;
    with a stride, of the pixels a strided 1x1 convolution reads."""
    if stride is not None and any(s > 1 for s in stride):
        a = a[(slice(None),) + tuple(slice(None, None, s) for s in stride)]
    a = V.kernel_array(a, dtype)
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def _strided_grad(grad_sub, x_shape, stride):
    """The input gradient of a strided 1x1 convolution: grad_sub at the
    pixels it read, zeros elsewhere."""
    if all(s == 1 for s in stride):
        return grad_sub
    grad_x = np.zeros(x_shape, grad_sub.dtype)
    grad_x[(slice(None),) + tuple(slice(None, None, s) for s in stride)] = grad_sub
    return grad_x


def _pointwise_rows(rows, w2, trans_w, bias, shape, threads):
    """A new array of `shape` (channels-last) = rows @ (w2.T if trans_w else
    w2) + bias: a channels-last 1x1 convolution or its input gradient."""
    out = np.empty(shape, rows.dtype)
    out2 = out.reshape(rows.shape[0], shape[-1])
    with blas_pinned:
        _conv.pointwise_rows(rows, V.kernel_array(w2, rows.dtype), bias, out2, trans_w, threads)
    return out


def _pointwise_weight(go_rows, x_rows, shape, threads):
    """A new array of `shape` = go_rows.T @ x_rows: a 1x1 weight gradient."""
    grad_w = np.empty(shape, go_rows.dtype)
    with blas_pinned:
        _conv.pointwise_rows_weight(go_rows, x_rows,
                                    grad_w.reshape(go_rows.shape[1], x_rows.shape[1]), threads)
    return grad_w


def _channel_sums(go_rows):
    grad_b = np.empty(go_rows.shape[1], go_rows.dtype)
    _conv.channel_sums_last(go_rows, grad_b)
    return grad_b


# ------------------------------------------------------------ convolution

def _kernel_args(p):
    """The driver arguments of a plan entry: kernel, and the GEMM's (tile,
    weights_in_place, reduction_chunk)."""
    return p.kernel, (p.tile, p.weights_in_place, P.REDUCTION_CHUNK)


def _batch_as_pixels(a, rows):
    """(N, rows...) -> (1, rows, 1, 1, N): C-contiguous copy, batch last."""
    n = a.shape[0]
    return np.ascontiguousarray(a.reshape(n, rows).T).reshape(1, rows, 1, 1, n)


def _pixels_as_batch(a5, shape):
    """Inverse of _batch_as_pixels: (1, rows, 1, 1, N) -> new C-contiguous `shape`."""
    return np.ascontiguousarray(a5.reshape(a5.shape[1], a5.shape[4]).T).reshape(shape)


def _depth_stack(a5):
    """(N, C, 1, H, W) -> new C-contiguous (1, C, N, H, W)."""
    n, c = a5.shape[:2]
    return np.ascontiguousarray(a5.transpose(1, 0, 2, 3, 4)).reshape((1, c, n) + a5.shape[3:])


def _depth_unstack(a5, shape):
    """(1, C, N, H, W) -> new C-contiguous array of `shape` (N, C, ...)."""
    c, n = a5.shape[1:3]
    return np.ascontiguousarray(a5.reshape((c, n) + a5.shape[3:]).swapaxes(0, 1)).reshape(shape)


# The kernels' code of zero padding (the batch-as-pixels view has no padding).
_ZERO_PADDING = V.PAD_MODES.index("zeros")
# The unit geometry of the batch-as-pixels view: stride, padding, dilation.
_UNIT3 = ((1, 1, 1), (0, 0, 0), (1, 1, 1))


# Only the im2col weight gradient calls BLAS among the conv kernels: the
# other passes skip the pin (reading and setting OpenBLAS's thread count
# costs a few microseconds, the whole of a tiny call's kernel).
_NO_PIN = contextlib.nullcontext()


def _pin(p):
    return blas_pinned if p.kernel == "gemm_blas" else _NO_PIN


def _dw5(shape, last):
    """A shape as the depthwise driver's 5-D view: (N, C, D, H, W), or with
    `last` (N, D, H, W, C); unit dims added before the spatial ones."""
    lead = 1 if last else 2
    return shape[:lead] + (1,) * (5 - len(shape)) + shape[lead:]


def _depthwise_forward(geom, p, x, weight, bias, clamp=None, residual=None, last=False):
    """Plan entry p (kernel "depthwise"): a new (N, K, *out) array, or
    (N, *out, K) with `last` (x channels-last); bias of the kernel dtype
    (empty: none); a fused layer's residual and clamp as _run_forward's."""
    if not last and p.layout == "channels_last":   # narrow rows: the NHWC kernels
        res = None if residual is None else _to_last(V.kernel_array(residual, geom.dtype))
        return _to_first(_depthwise_forward(geom, p, _to_last(V.kernel_array(x, geom.dtype)),
                                            weight, bias, clamp, res, True))
    out_shape = _shape_last(geom.out_shape) if last else geom.out_shape
    out = np.empty(out_shape, geom.dtype)
    x = V.kernel_array(x, geom.dtype)
    res5 = None if residual is None else V.kernel_array(residual, geom.dtype).reshape(
        _dw5(out_shape, last))
    run = _depthwise.forward_last if last else _depthwise.forward_first
    run(x.reshape(_dw5(x.shape, last)), V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape),
        bias, out.reshape(_dw5(out_shape, last)), *geom.kernel_args, geom.pad_mode_code,
        p.split, dict(p.arrays), p.threads, clamp, res5)
    return out


def _depthwise_input_grad(geom, p, grad_out, weight, bias=None, last=False):
    """Plan entry p (kernel "depthwise", zero padding): the input gradient, a
    new (N, C, *in) array, or (N, *in, C) with `last`; bias: added per
    channel (a transposed convolution's)."""
    if not last and p.layout == "channels_last":   # narrow rows: the NHWC kernels
        return _to_first(_depthwise_input_grad(geom, p, _to_last(V.kernel_array(
            grad_out, geom.dtype)), weight, bias, True))
    shape = (geom.batch, geom.in_channels) + tuple(geom.in_size)
    shape = _shape_last(shape) if last else shape
    grad_x = np.empty(shape, geom.dtype)
    go = V.kernel_array(grad_out, geom.dtype)
    args = (go.reshape(_dw5(go.shape, last)),
            V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape),
            grad_x.reshape(_dw5(shape, last)), *geom.kernel_args, p.split, dict(p.arrays),
            p.threads)
    (_depthwise.input_last if last else _depthwise.input_first)(*args, bias)
    return grad_x


def _depthwise_weight_grad(geom, p, grad_out, x, weight_shape, last=False):
    """Plan entry p (kernel "depthwise"): the weight gradient, a new array of
    weight_shape, from grad_out and x (both channels-last with `last`)."""
    grad_w = np.empty(weight_shape, geom.dtype)
    go, x = V.kernel_array(grad_out, geom.dtype), V.kernel_array(x, geom.dtype)
    if not last and p.layout == "channels_last":   # narrow rows: the NHWC kernels
        go, x, last = _to_last(go.reshape(geom.out_shape)), _to_last(x.reshape(
            geom.x5_shape[:2] + tuple(geom.in_size))), True
    run = _depthwise.weight_last if last else _depthwise.weight_first
    run(go.reshape(_dw5(go.shape, last)), x.reshape(_dw5(x.shape, last)),
        grad_w.reshape(geom.w5_shape), *geom.kernel_args, geom.pad_mode_code, p.split,
        dict(p.arrays), p.threads)
    return grad_w


def _run_forward(geom, p, x, weight, bias, clamp=None, residual=None):
    """The forward pass of plan entry p: conv(x, weight) + bias, a new (N, K,
    *out) array. x and weight are any arrays validated for geom; bias an
    array of the kernel dtype (empty: none). A fused layer's epilogue:
    `residual` (validated, out's shape) added and then the activation
    `clamp` = (lo, hi) or None, both on each output tile inside the
    kernel's parallel loop."""
    if p.kernel == "depthwise":
        return _depthwise_forward(geom, p, x, weight, bias, clamp, residual)
    if p.kernel == "nhwc_direct":   # channels-first: the NHWC kernel between layout copies
        res = None if residual is None else _to_last(V.kernel_array(residual, geom.dtype))
        w = _nhwc.pack_weights(weight, geom, p.config)[0]
        return _to_first(_nhwc.run(p.config, geom, _to_last(V.kernel_array(x, geom.dtype)), w,
                                   _nhwc.pack_bias(bias, geom, p.config), res,
                                   V.epilogue_clamp(clamp)))
    if p.layout == "batch_as_pixels":
        rows = geom.in_channels * math.prod(geom.kernel)
        x5 = _batch_as_pixels(V.kernel_array(x, geom.dtype), rows)
        w5 = V.kernel_array(weight, geom.dtype).reshape(geom.out_channels, rows, 1, 1, 1)
        out5 = np.empty((1, geom.out_channels, 1, 1, geom.batch), dtype=geom.dtype)
        res5 = None if residual is None else _batch_as_pixels(residual, geom.out_channels)
        with _pin(p):
            _conv.conv_forward(x5, w5, bias, out5, *_UNIT3, 1, *_kernel_args(p),
                               _ZERO_PADDING, p.threads, clamp, res5)
        return _pixels_as_batch(out5, geom.out_shape)
    x5 = V.kernel_array(x, geom.dtype).reshape(geom.x5_shape)
    w5 = V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape)
    stacked = p.layout == "depth_stacked"
    out5 = np.empty(((1, geom.out_channels, geom.batch) + geom.out5_shape[3:]) if stacked
                    else geom.out5_shape, dtype=geom.dtype)
    res5 = None
    if residual is not None:
        res5 = V.kernel_array(residual, geom.dtype).reshape(geom.out5_shape)
        res5 = _depth_stack(res5) if stacked else res5
    with _pin(p):
        _conv.conv_forward(_depth_stack(x5) if stacked else x5, w5, bias, out5,
                           *geom.kernel_args, geom.groups, *_kernel_args(p),
                           geom.pad_mode_code, p.threads, clamp, res5)
    return _depth_unstack(out5, geom.out_shape) if stacked else out5.reshape(geom.out_shape)


def _run_input_grad(geom, p, go5, weight, go_stacked=None, bias=None):
    """The input-gradient pass of plan entry p: a new (N, C, *in) array from
    go5 (N, K, *out as 5-D, kernel dtype); go_stacked: go5 depth-stacked, if
    the caller has it already; bias: per channel of the result, added by the
    driver (a transposed convolution's bias)."""
    if p.kernel == "depthwise":
        return _depthwise_input_grad(geom, p, go5, weight, bias)
    shape = geom.x5_shape[:2] + tuple(geom.in_size)
    if p.layout == "batch_as_pixels":
        rows = geom.in_channels * math.prod(geom.kernel)
        w5 = V.kernel_array(weight, geom.dtype).reshape(geom.out_channels, rows, 1, 1, 1)
        gx5 = np.empty((1, rows, 1, 1, geom.batch), dtype=geom.dtype)
        with _pin(p):
            _conv.conv_backward_input(_batch_as_pixels(go5, geom.out_channels), w5, gx5,
                                      *_UNIT3, 1, *_kernel_args(p), p.threads)
        gx = _pixels_as_batch(gx5, shape)
        if bias is not None:   # gx5's rows are (channel, tap) here, not channels
            gx += bias.reshape((1, -1) + (1,) * (gx.ndim - 2))
        return gx
    stacked = p.layout == "depth_stacked"
    if stacked and go_stacked is None:
        go_stacked = _depth_stack(go5)
    w5 = V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape)
    gx5 = np.empty(((1, geom.in_channels, geom.batch) + geom.x5_shape[3:]) if stacked
                   else geom.x5_shape, dtype=geom.dtype)
    with _pin(p):
        _conv.conv_backward_input(go_stacked if stacked else go5, w5, gx5, *geom.kernel_args,
                                  geom.groups, *_kernel_args(p), p.threads, bias)
    return _depth_unstack(gx5, shape) if stacked else gx5.reshape(shape)


def _run_weight_grad(geom, p, go5, x, weight_shape, go_stacked=None):
    """The weight-gradient pass of plan entry p: a new array of weight_shape
    from go5 (N, K, *out as 5-D, kernel dtype) and the conv input x."""
    if p.kernel == "depthwise":
        return _depthwise_weight_grad(geom, p, go5, x, weight_shape)
    grad_w = np.empty(weight_shape, dtype=geom.dtype)
    if p.layout == "batch_as_pixels":
        rows = geom.in_channels * math.prod(geom.kernel)
        with _pin(p):
            _conv.conv_backward_weight(_batch_as_pixels(go5, geom.out_channels),
                                       _batch_as_pixels(V.kernel_array(x, geom.dtype), rows),
                                       grad_w.reshape(geom.out_channels, rows, 1, 1, 1),
                                       *_UNIT3, 1, p.kernel, p.tile, _ZERO_PADDING,
                                       p.threads)
        return grad_w
    stacked = p.layout == "depth_stacked"
    if stacked and go_stacked is None:
        go_stacked = _depth_stack(go5)
    x5 = V.kernel_array(x, geom.dtype).reshape(geom.x5_shape)
    with _pin(p):
        _conv.conv_backward_weight(go_stacked if stacked else go5,
                                   _depth_stack(x5) if stacked else x5,
                                   grad_w.reshape(geom.w5_shape), *geom.kernel_args,
                                   geom.groups, p.kernel, p.tile, geom.pad_mode_code,
                                   p.threads)
    return grad_w


def _run_input_grad_folded(geom, p, go5, weight):
    """The input gradient of a non-zero padding mode: the gradient wrt the
    padded input (plan entry p is planned on geom.padded_input), its border
    folded back onto the input elements the padding copied."""
    padded = geom.padded_input
    gpad = _run_input_grad(padded, p, go5, weight)
    grad_x = np.empty(geom.x5_shape, dtype=geom.dtype)
    _conv.conv_fold_padding(gpad.reshape(padded.x5_shape), grad_x, geom.kernel_args[1],
                            geom.pad_mode_code, P.pool_threads(gpad.size))
    return grad_x


def _bias_grad(go5, channels, threads, dtype):
    grad_b = np.empty(channels, dtype=dtype)
    _conv.conv_backward_bias(go5, grad_b, threads)
    return grad_b


def _bias_array(bias, dtype):
    return np.empty(0, dtype) if bias is None else V.kernel_array(bias, dtype)


def _conv_forward(nd, x, weight, bias, stride, padding, dilation, groups, algorithm,
                  padding_mode="zeros", data_format="channels_first"):
    if V.channels_last(data_format):
        return _conv_forward_last(nd, x, weight, bias, stride, padding, dilation, groups,
                                  algorithm, padding_mode)
    geom = V.conv_geometry(nd, x, weight, bias, stride, padding, dilation, groups,
                           padding_mode=padding_mode)
    plan = P.plan_conv(geom, V.conv_algorithm(algorithm, geom), ("forward",))
    return _run_forward(geom, plan.passes["forward"], x, weight, _bias_array(bias, geom.dtype))


def _conv_forward_fused(nd, x, weight, bias, stride, padding, dilation, groups, clamp=None,
                        residual=None, padding_mode="zeros"):
    """conv{nd}d with a fused inference layer's epilogue (Module.fuse()):
    clamp(conv(x, weight) + bias + residual, lo, hi), residual optional,
    computed in the convolution's store pass (no separate pass over the
    output). clamp: None or False (no activation), True (ReLU, [0, inf]) or
    (lo, hi) (ReLU6 [0, 6], Hardtanh [min_val, max_val])."""
    geom = V.conv_geometry(nd, x, weight, bias, stride, padding, dilation, groups,
                           padding_mode=padding_mode)
    V.conv_residual(residual, geom)
    bounds = V.epilogue_clamp(clamp)
    plan = P.plan_conv(geom, "auto", ("forward",))
    return _run_forward(geom, plan.passes["forward"], x, weight, _bias_array(bias, geom.dtype),
                        bounds, residual)


def _conv_forward_fused_last(nd, x, weight, bias, stride, padding, dilation, groups,
                             clamp=None, residual=None, padding_mode="zeros", packed=None):
    """_conv_forward_fused on channels-last x and residual: clamp(conv(x) + bias
    + residual), clamp as there, residual optional. On the NHWC
    direct kernel (epilogue in its store pass, weights packed once: `packed`,
    a dict the layer keeps, caches them per configuration), else on the
    channels-first kernels between layout copies."""
    geom = V.conv_geometry(nd, _first_view(x), weight, bias, stride, padding, dilation, groups,
                           padding_mode=padding_mode)
    V.conv_residual(None if residual is None else _first_view(residual), geom)
    clamp = V.epilogue_clamp(clamp)
    p = P.plan_conv(geom, "auto", ("forward",), channels_last=True,
                    kept_weights=packed is not None).passes["forward"]
    if P.depthwise_native_last(geom, "auto"):
        return _depthwise_forward(geom, p, x, weight, _bias_array(bias, geom.dtype), clamp,
                                  residual, last=True)
    if p.kernel == "nhwc_winograd":
        direct = _nhwc.configure(geom, p.config.threads)   # its bias layout, and the fallback
        u, finite, b = _packed(packed, ("winograd", p.config.m, p.config.pos_stride), weight,
                               bias, lambda: (*_nhwc.winograd_pack(weight, geom, p.config),
                                              _nhwc.pack_bias(bias, geom, direct)))
        if finite:
            out = _nhwc.winograd_run(p.config, geom, x, u, b, residual, clamp)
            if out is not None:
                return out
        # a non-finite weight or input: the direct kernel's exact result
        p = p._replace(kernel="nhwc_direct", config=direct)
    if p.kernel != "nhwc_direct":
        return _to_last(_conv_forward_fused(
            nd, _to_first(x), weight, bias, stride, padding, dilation, groups, clamp,
            None if residual is None else _to_first(residual), padding_mode))
    w, _, b = _packed(packed, ("direct", p.config.group_stride, p.config.block), weight, bias,
                      lambda: (*_nhwc.pack_weights(weight, geom, p.config),
                               _nhwc.pack_bias(bias, geom, p.config)))
    return _nhwc.run(p.config, geom, x, w, b, residual, clamp)


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
    geom = V.conv_geometry(nd, _first_view(x), weight, bias, stride, padding, dilation, groups,
                           padding_mode=padding_mode)
    algorithm = V.conv_algorithm(algorithm, geom)
    p = P.plan_conv(geom, algorithm, ("forward",), channels_last=True).passes["forward"]
    if P.depthwise_native_last(geom, algorithm):
        return _depthwise_forward(geom, p, x, weight, _bias_array(bias, geom.dtype), last=True)
    if p.kernel == "nhwc_direct":
        return _nhwc.forward(p.config, geom, x, weight, bias)
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
    geom = V.conv_geometry(nd, _first_view(x), weight, None, stride, padding, dilation,
                           groups, grad_out=_first_view(grad_out), padding_mode=padding_mode)
    need = V.conv_need(need)
    chosen = V.conv_algorithm(algorithm, geom)
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
            grad["x"] = _nhwc_backward.input_grad(p.config, geom, grad_out, weight)
        elif name == "weight":
            grad["weight"] = _nhwc_backward.weight_grad(p.config, geom, grad_out, x)
        else:
            grad["bias"] = _channel_sums(_pixel_rows(grad_out, geom.dtype))
    rest = tuple(g for g in passes if grad[g] is None)
    if rest:   # x is read only by the weight gradient
        first = _conv_backward(
            nd, _to_first(grad_out), _to_first(x) if "weight" in rest else _first_view(x),
            weight, stride, padding, dilation, groups, rest, algorithm, padding_mode)
        _merge_first(grad, rest, first)
    return grad["x"], grad["weight"], grad["bias"]


def _merge_first(grad, rest, first):
    """Store the passes named in rest from a channels-first call's (grad_x,
    grad_w, grad_b) into the dict grad, grad_x in the channels-last layout."""
    for g, value in zip(("x", "weight", "bias"), first):
        if g in rest:
            grad[g] = _to_last(value) if g == "x" else value


def _pointwise_backward_last(geom, grad_out, x, weight, need):
    """The gradients of a channels-last 1x1 convolution
    (P.conv_channels_last_native): GEMMs over pixel rows."""
    threads = P.conv_threads(P.conv_macs(geom))
    go = _pixel_rows(grad_out, geom.dtype)
    grad_x = grad_w = grad_b = None
    if "x" in need:
        grad_x = _strided_grad(_pointwise_rows(
            go, weight.reshape(geom.out_channels, geom.in_channels), False,
            np.empty(0, geom.dtype), _shape_last(geom.out_shape)[:-1] + (geom.in_channels,),
            threads), x.shape, geom.stride)
    if "weight" in need:
        grad_w = _pointwise_weight(go, _pixel_rows(x, geom.dtype, geom.stride), weight.shape,
                                   threads)
    if "bias" in need:
        grad_b = _channel_sums(go)
    return grad_x, grad_w, grad_b


def _depthwise_backward_last(geom, algorithm, grad_out, x, weight, need):
    """The gradients of a channels-last depthwise conv on its NHWC kernels."""
    plan = P.plan_conv(geom, algorithm, [p for p in ("x", "weight", "bias") if p in need],
                       channels_last=True)
    grad_x = grad_w = grad_b = None
    if "x" in need:
        grad_x = _depthwise_input_grad(geom, plan.passes["x"], grad_out, weight, last=True)
    if "weight" in need:
        grad_w = _depthwise_weight_grad(geom, plan.passes["weight"], grad_out, x, weight.shape,
                                        last=True)
    if "bias" in need:
        grad_b = _channel_sums(_pixel_rows(grad_out, geom.dtype))
    return grad_x, grad_w, grad_b


def _conv_backward(nd, grad_out, x, weight, stride, padding, dilation, groups, need,
                   algorithm, padding_mode="zeros", data_format="channels_first"):
    if V.channels_last(data_format):
        return _conv_backward_last(nd, grad_out, x, weight, stride, padding, dilation, groups,
                                   need, algorithm, padding_mode)
    geom = V.conv_geometry(nd, x, weight, None, stride, padding, dilation, groups,
                           grad_out=grad_out, padding_mode=padding_mode)
    need = V.conv_need(need)
    plan = P.plan_conv(geom, V.conv_algorithm(algorithm, geom),
                       [p for p in ("x", "weight", "bias") if p in need])
    go5 = V.kernel_array(grad_out, geom.dtype).reshape(geom.out5_shape)
    passes = plan.passes
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


def _conv_transpose_forward_last(nd, x, weight, bias, stride, padding, output_padding, groups,
                                 dilation, algorithm):
    """Channels-last conv_transpose: the conv's input gradient on the NHWC
    kernels (bias added in their store) where the plan runs it there, a
    GEMM over pixel rows for a stride-1 1x1, else the channels-first call
    between layout copies (also for a NaN/inf weight)."""
    tg = V.conv_transpose_geometry(nd, _first_view(x), weight, bias, stride, padding,
                                   output_padding, groups, dilation)
    conv = tg.conv
    chosen = V.conv_algorithm(algorithm, conv)
    if P.conv_channels_last_native(conv, chosen, transposed=True):
        # y (pixels, C_out) = x (pixels, C_in) @ w (C_in, C_out) + bias
        return _pointwise_rows(_pixel_rows(x, conv.dtype),
                               weight.reshape(conv.out_channels, conv.in_channels), False,
                               _bias_array(bias, conv.dtype), _shape_last(tg.out_shape),
                               P.conv_threads(P.conv_macs(conv)))
    p = P.plan_conv(conv, chosen, ("x",), channels_last=True).passes["x"]
    if p.layout == "channels_last":
        out = _nhwc_backward.input_grad(p.config, conv, x, weight, bias)
        if out is not None:
            return out
    return _to_last(_conv_transpose_forward(nd, _to_first(x), weight, bias, stride, padding,
                                            output_padding, groups, dilation, algorithm))


def _conv_transpose_backward_last(nd, grad_out, x, weight, stride, padding, output_padding,
                                  groups, dilation, need, algorithm):
    """Channels-last conv_transpose gradients: the conv's forward (wrt x) and
    weight gradient (grad_out as its input, x as its output gradient) on the
    NHWC kernels where the plan runs them there, channel sums for the bias;
    the rest on the channels-first call between layout copies."""
    tg = V.conv_transpose_geometry(nd, _first_view(x), weight, None, stride, padding,
                                   output_padding, groups, dilation,
                                   grad_out=_first_view(grad_out))
    conv = tg.conv
    need = V.conv_need(need)
    chosen = V.conv_algorithm(algorithm, conv)
    if P.conv_channels_last_native(conv, chosen, transposed=True):
        return _pointwise_transpose_backward_last(conv, grad_out, x, weight, need)
    wanted = [p for p, g in (("forward", "x"), ("weight", "weight")) if g in need]
    passes = P.plan_conv(conv, chosen, wanted, channels_last=True).passes
    grad = dict.fromkeys(("x", "weight", "bias"))
    if "x" in need and passes["forward"].layout == "channels_last":
        grad["x"] = _nhwc.forward(passes["forward"].config, conv, grad_out, weight, None)
    if "weight" in need and passes["weight"].layout == "channels_last":
        grad["weight"] = _nhwc_backward.weight_grad(passes["weight"].config, conv, x, grad_out)
    if "bias" in need:
        grad["bias"] = _channel_sums(_pixel_rows(grad_out, conv.dtype))
    rest = tuple(g for g in need if grad[g] is None)
    if rest:   # grad_out is read only by the weight gradient and the x gradient
        first = _conv_transpose_backward(
            nd, _to_first(grad_out), _to_first(x) if "weight" in rest else _first_view(x),
            weight, stride, padding, output_padding, groups, dilation, rest, algorithm)
        _merge_first(grad, rest, first)
    return grad["x"], grad["weight"], grad["bias"]


def _pointwise_transpose_backward_last(conv, grad_out, x, weight, need):
    """The gradients of a channels-last stride-1 1x1 conv_transpose: GEMMs
    over pixel rows."""
    threads = P.conv_threads(P.conv_macs(conv))
    go = _pixel_rows(grad_out, conv.dtype)
    grad_x = grad_w = grad_b = None
    if "x" in need:  # grad_x (pixels, C_in) = grad_out (pixels, C_out) @ w.T
        grad_x = _pointwise_rows(go, weight.reshape(conv.out_channels, conv.in_channels), True,
                                 np.empty(0, conv.dtype), x.shape, threads)
    if "weight" in need:  # grad_w (C_in, C_out) = x.T @ grad_out
        grad_w = _pointwise_weight(_pixel_rows(x, conv.dtype), go, weight.shape, threads)
    if "bias" in need:
        grad_b = _channel_sums(go)
    return grad_x, grad_w, grad_b


def _conv_transpose_forward(nd, x, weight, bias, stride, padding, output_padding, groups,
                            dilation, algorithm, data_format="channels_first"):
    """conv_transpose(x, w) is the input gradient of the conv that maps its
    output back to x (V.TransposeGeometry): the same plan entry and driver."""
    if V.channels_last(data_format):
        return _conv_transpose_forward_last(nd, x, weight, bias, stride, padding,
                                            output_padding, groups, dilation, algorithm)
    tg = V.conv_transpose_geometry(nd, x, weight, bias, stride, padding, output_padding, groups,
                                   dilation)
    conv = tg.conv
    plan = P.plan_conv(conv, V.conv_algorithm(algorithm, conv), ("x",))
    x5 = V.kernel_array(x, conv.dtype).reshape(conv.out5_shape)
    return _run_input_grad(conv, plan.passes["x"], x5, weight,
                           bias=None if bias is None else V.kernel_array(bias, conv.dtype))


def _conv_transpose_backward(nd, grad_out, x, weight, stride, padding, output_padding, groups,
                             dilation, need, algorithm, data_format="channels_first"):
    """Gradients of conv_transpose: wrt x, the conv's forward of grad_out; wrt
    the weight, the conv's weight gradient with grad_out as its input and x as
    its output gradient; wrt the bias, grad_out's channel sums."""
    if V.channels_last(data_format):
        return _conv_transpose_backward_last(nd, grad_out, x, weight, stride, padding,
                                             output_padding, groups, dilation, need, algorithm)
    tg = V.conv_transpose_geometry(nd, x, weight, None, stride, padding, output_padding, groups,
                                   dilation, grad_out=grad_out)
    conv = tg.conv
    need = V.conv_need(need)
    wanted = [p for p, g in (("forward", "x"), ("weight", "weight")) if g in need]
    plan = P.plan_conv(conv, V.conv_algorithm(algorithm, conv), wanted)
    grad_x = grad_w = grad_b = None
    if "x" in need:
        grad_x = _run_forward(conv, plan.passes["forward"], grad_out, weight,
                              np.empty(0, conv.dtype))
    if "weight" in need:
        x5 = V.kernel_array(x, conv.dtype).reshape(conv.out5_shape)
        grad_w = _run_weight_grad(conv, plan.passes["weight"], x5, grad_out, weight.shape)
    if "bias" in need:
        go5 = V.kernel_array(grad_out, conv.dtype).reshape(conv.x5_shape)
        grad_b = _bias_grad(go5, conv.in_channels, P.conv_threads(P.conv_macs(conv)),
                            conv.dtype)
    return grad_x, grad_w, grad_b


def _dense_matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for the dense layers, on cnnfast's threads (never NumPy's
    BLAS pool, see _ext/_dense.pyx). a and b: 2-D arrays of one float dtype."""
    dtype = V.common_float_dtype(a=a, b=b)
    a, b = V.kernel_array(a, dtype), V.kernel_array(b, dtype)
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    k = a.shape[0] if trans_a else a.shape[1]
    out = np.empty((m, n), dtype=dtype)
    with blas_pinned:
        _dense.matmul(a, b, out, trans_a, trans_b, P.dense_threads(m * n * k))
    return out


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
    x_shape, weight_shape = tuple(x_shape), tuple(weight_shape)
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
    geom = V.conv_geometry(nd, x, w, None, stride, padding, dilation, groups,
                           padding_mode=padding_mode)
    need = [need] if isinstance(need, str) else list(need)
    bad = [p for p in need if p not in P.PASSES]
    if bad:
        raise ValueError(f"need must name passes from {P.PASSES}, got {tuple(need)!r}")
    algorithm = V.conv_algorithm(algorithm, geom)
    if threads is None:
        return P.plan_conv(geom, algorithm, need, channels_last=last)
    with num_threads(threads):
        return P.plan_conv(geom, algorithm, need, channels_last=last)


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


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto", data_format="channels_first"):
    """1-D transposed convolution of x (N, C_in, L) with weight (C_in, C_out // groups, k),
    as torch.nn.functional.conv_transpose1d; padding also takes (before, after) pairs."""
    return _conv_transpose_forward(1, x, weight, bias, stride, padding, output_padding, groups,
                                   dilation, algorithm, data_format)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto", data_format="channels_first"):
    """2-D transposed convolution of x (N, C_in, H, W) with weight (C_in, C_out // groups,
    kH, kW): the adjoint of conv2d, as torch.nn.functional.conv_transpose2d (note groups
    before dilation); padding also takes (before, after) pairs per dim (ONNX pads)."""
    return _conv_transpose_forward(2, x, weight, bias, stride, padding, output_padding, groups,
                                   dilation, algorithm, data_format)


def conv_transpose3d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto", data_format="channels_first"):
    """3-D transposed convolution of x (N, C_in, D, H, W) with weight
    (C_in, C_out // groups, kD, kH, kW)."""
    return _conv_transpose_forward(3, x, weight, bias, stride, padding, output_padding, groups,
                                   dilation, algorithm, data_format)


def conv_transpose1d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto", data_format="channels_first"):
    """Gradients of conv_transpose1d -> (grad_x, grad_weight, grad_bias); None where not
    in `need`."""
    return _conv_transpose_backward(1, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm, data_format)


def conv_transpose2d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto", data_format="channels_first"):
    """Gradients of conv_transpose2d -> (grad_x, grad_weight, grad_bias); None where not
    in `need`."""
    return _conv_transpose_backward(2, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm, data_format)


def conv_transpose3d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto", data_format="channels_first"):
    """Gradients of conv_transpose3d -> (grad_x, grad_weight, grad_bias); None where not
    in `need`."""
    return _conv_transpose_backward(3, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm, data_format)


# ---------------------------------------------------------------- pooling

def _max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
              data_format="channels_first"):
    last = V.channels_last(data_format)
    geom = V.pool_geometry(nd, "max", _first_view(x) if last else x, kernel_size, stride,
                           padding, dilation, ceil_mode)
    return_indices = V.flag(return_indices, "return_indices")
    if last:
        if nd <= 2 and not return_indices:   # inference: the NHWC kernel, no padded copy
            return _max_pool_nhwc(geom, x)
        if P.pool_channels_last_native(nd, geom.channels):
            return _max_pool_last(geom, x, return_indices)
        result = _max_pool(nd, _to_first(x), kernel_size, stride, padding, dilation,
                           ceil_mode, return_indices)
        return tuple(map(_to_last, result)) if return_indices else _to_last(result)
    x4 = V.kernel_array(x, geom.dtype).reshape(geom.planes_shape)
    out = np.empty(geom.out_shape, dtype=geom.dtype)
    indices = np.empty(geom.out_shape, dtype=np.int64) if return_indices else None
    _pool.max_pool_forward(x4, out.reshape(geom.out_planes_shape),
                           None if indices is None else indices.reshape(geom.out_planes_shape),
                           *geom.kernel_args, P.pool_threads(x4.size))
    return (out, indices) if return_indices else out


def _max_pool_nhwc(geom, x):
    """Channels-last 1-D/2-D max pooling without indices (csrc/nhwc/pool_nhwc.h)."""
    x3 = V.kernel_array(x, geom.dtype)
    out = np.empty(_shape_last(geom.out_shape), dtype=geom.dtype)
    two = lambda t, fill: ((fill,) * (2 - geom.nd) + tuple(t))   # noqa: E731
    in_hw, out_hw = two(geom.in_size, 1), two(geom.out_size, 1)
    _conv_nhwc.max_pool(x3.reshape(-1), (geom.batch,) + in_hw + (geom.channels,),
                        out.reshape(-1), (geom.batch,) + out_hw + (geom.channels,),
                        two(geom.kernel, 1), two(geom.stride, 1), two(geom.padding, 0),
                        two(geom.dilation, 1), P.pool_threads(x3.size))
    return out


def _max_pool_last(geom, x, return_indices):
    """Channels-last max pooling on the plane kernels (PoolGeometry.last_*)."""
    x4 = V.kernel_array(x, geom.dtype).reshape(geom.last_planes_shape)
    out = np.empty(_shape_last(geom.out_shape), dtype=geom.dtype)
    indices = np.empty(out.shape, dtype=np.int64) if return_indices else None
    _pool.max_pool_forward(x4, out.reshape(geom.last_out_planes_shape),
                           None if indices is None else indices.reshape(
                               geom.last_out_planes_shape),
                           *geom.last_kernel_args, P.pool_threads(x4.size))
    if indices is None:
        return out
    # flat (*spatial, C) positions -> positions in the spatial plane (the
    # window along C is 1 wide, so position % C is the output's own channel)
    np.floor_divide(indices, geom.channels, out=indices)
    return out, indices


def _max_pool_backward(nd, grad_out, indices, input_shape, op,
                       data_format="channels_first"):
    if V.channels_last(data_format):
        return _max_pool_backward_last(nd, grad_out, indices, input_shape, op)
    dtype, input_shape = V.max_pool_indices(grad_out, indices, input_shape, nd, op,
                                            check_range=False)
    return _scatter_max(grad_out, indices, input_shape, dtype, op)


def _max_pool_backward_last(nd, grad_out, indices, input_shape, op, keepdims_ok=False):
    """Channels-last max-pooling backward, any nd (global: keepdims_ok): the
    scatter kernel reads channels-last images directly (P.pool_channels_last_native
    is for the forward kernels; a scatter has no layout to prefer)."""
    shape = V.input_shape_arg(input_shape, nd + 2, op)
    # indices are range-checked by the scatter kernel as it uses them
    if keepdims_ok:  # global pooling: grad_out (N, C) or (N, 1, 1, C)
        dtype, _ = V.pooled_grad(_first_view(grad_out), _shape_first(shape), op,
                                 keepdims_ok=True)
        V.check_indices(_first_view(indices), _first_view(grad_out), _shape_first(shape), op,
                        check_range=False)
    else:
        dtype, _ = V.max_pool_indices(_first_view(grad_out), _first_view(indices),
                                      _shape_first(shape), nd, op, check_range=False)
    return _scatter_max_last(grad_out, indices, shape, dtype, op)


def _scatter_max_last(grad_out, indices, input_shape, dtype, op):
    """Channels-last grad_x: grad_out scattered through (range-checked)
    plane indices, each image one plane of (*spatial, C) positions."""
    n, c = input_shape[0], input_shape[-1]
    grad_x = np.empty(input_shape, dtype=dtype)
    if n == 0:
        return grad_x
    outputs = grad_out.size // n
    bad = _pool.max_pool_backward(V.kernel_array(grad_out, dtype).reshape(n, outputs),
                                  V.kernel_array(indices, np.int64).reshape(n, outputs),
                                  grad_x.reshape(n, grad_x.size // n),
                                  P.pool_threads(grad_x.size), c)
    if bad >= 0:
        raise V.index_out_of_range(int(indices.reshape(-1)[bad]), _shape_first(input_shape), op)
    return grad_x


def _scatter_max(grad_out, indices, input_shape, dtype, op):
    """grad_x from grad_out scattered through indices; the kernel range-checks
    every index as it uses it and reports the first bad one."""
    planes = input_shape[0] * input_shape[1]
    outputs = grad_out.size // planes if planes else 0
    grad_x = np.empty(input_shape, dtype=dtype)
    flat_indices = V.kernel_array(indices, np.int64).reshape(planes, outputs)
    bad = _pool.max_pool_backward(V.kernel_array(grad_out, dtype).reshape(planes, outputs),
                                  flat_indices,
                                  grad_x.reshape(planes, grad_x.size // planes if planes else 0),
                                  P.pool_threads(grad_x.size))
    if bad >= 0:
        raise V.index_out_of_range(int(flat_indices.flat[bad]), input_shape, op)
    return grad_x


def _avg_pool(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override, data_format="channels_first"):
    last = V.channels_last(data_format)
    geom = V.pool_geometry(nd, "avg", _first_view(x) if last else x, kernel_size, stride,
                           padding, 1, ceil_mode)
    divisors = V.avg_pool_divisors(geom, V.flag(count_include_pad, "count_include_pad"),
                                   V.divisor_override_arg(divisor_override))
    if last and P.pool_channels_last_native(nd, geom.channels):
        x4 = V.kernel_array(x, geom.dtype).reshape(geom.last_planes_shape)
        out = np.empty(_shape_last(geom.out_shape), dtype=geom.dtype)
        kernel, stride3, padding3, _ = geom.last_kernel_args
        _pool.avg_pool_forward(x4, out.reshape(geom.last_out_planes_shape), kernel, stride3,
                               padding3, geom.last_divisors(divisors), P.pool_threads(x4.size))
        return out
    if last:
        return _to_last(_avg_pool(nd, _to_first(x), kernel_size, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override))
    x4 = V.kernel_array(x, geom.dtype).reshape(geom.planes_shape)
    out = np.empty(geom.out_shape, dtype=geom.dtype)
    kernel, stride3, padding3, _ = geom.kernel_args
    _pool.avg_pool_forward(x4, out.reshape(geom.out_planes_shape), kernel, stride3, padding3,
                           tuple(divisors), P.pool_threads(x4.size))
    return out


def _avg_pool_backward(nd, grad_out, input_shape, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override, data_format="channels_first"):
    op = f"avg_pool{nd}d_backward"
    last = V.channels_last(data_format)
    V.check_array(grad_out, "grad_out")
    dtype = V.common_float_dtype(grad_out=grad_out)
    input_shape = V.input_shape_arg(input_shape, nd + 2, op)
    geom = V.pool_geometry(nd, "avg", None, kernel_size, stride, padding, 1, ceil_mode,
                           input_shape=_shape_first(input_shape) if last else input_shape,
                           dtype=dtype)
    V.expect_shape(grad_out, _shape_last(geom.out_shape) if last else geom.out_shape,
                   "grad_out", f"the output shape of avg_pool{nd}d for input_shape {input_shape}")
    divisors = V.avg_pool_divisors(geom, V.flag(count_include_pad, "count_include_pad"),
                                   V.divisor_override_arg(divisor_override))
    if last and P.pool_channels_last_native(nd, geom.channels):
        grad_x = np.empty(input_shape, dtype=dtype)
        kernel, stride3, padding3, _ = geom.last_kernel_args
        _pool.avg_pool_backward(
            V.kernel_array(grad_out, dtype).reshape(geom.last_out_planes_shape),
            grad_x.reshape(geom.last_planes_shape), kernel, stride3, padding3,
            geom.last_divisors(divisors), P.pool_threads(grad_x.size))
        return grad_x
    if last:
        return _to_last(_avg_pool_backward(nd, _to_first(grad_out), _shape_first(input_shape),
                                           kernel_size, stride, padding, ceil_mode,
                                           count_include_pad, divisor_override))
    grad_x = np.empty(input_shape, dtype=dtype)
    kernel, stride3, padding3, _ = geom.kernel_args
    _pool.avg_pool_backward(V.kernel_array(grad_out, dtype).reshape(geom.out_planes_shape),
                            grad_x.reshape(geom.planes_shape), kernel, stride3, padding3,
                            tuple(divisors), P.pool_threads(grad_x.size))
    return grad_x


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, data_format="channels_first"):
    """Max pooling of x (N, C, L) -> y, or (y, indices) with return_indices."""
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                     data_format)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, data_format="channels_first"):
    """Max pooling of x (N, C, H, W) as torch.nn.functional.max_pool2d; indices
    are int64 flat positions inside each (H, W) plane."""
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                     data_format)


def max_pool3d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, data_format="channels_first"):
    """Max pooling of x (N, C, D, H, W) -> y, or (y, indices) with return_indices."""
    return _max_pool(3, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                     data_format)


def max_pool1d_backward(grad_out, indices, input_shape, *, data_format="channels_first"):
    """Gradient of max_pool1d wrt x: grad_out scattered (summed) through indices."""
    return _max_pool_backward(1, grad_out, indices, input_shape, "max_pool1d_backward",
                              data_format)


def max_pool2d_backward(grad_out, indices, input_shape, *, data_format="channels_first"):
    """Gradient of max_pool2d wrt x: grad_out scattered (summed) through indices."""
    return _max_pool_backward(2, grad_out, indices, input_shape, "max_pool2d_backward",
                              data_format)


def max_pool3d_backward(grad_out, indices, input_shape, *, data_format="channels_first"):
    """Gradient of max_pool3d wrt x: grad_out scattered (summed) through indices."""
    return _max_pool_backward(3, grad_out, indices, input_shape, "max_pool3d_backward",
                              data_format)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, data_format="channels_first"):
    """Average pooling of x (N, C, L)."""
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, data_format)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, data_format="channels_first"):
    """Average pooling of x (N, C, H, W) as torch.nn.functional.avg_pool2d."""
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, data_format)


def avg_pool3d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, data_format="channels_first"):
    """Average pooling of x (N, C, D, H, W)."""
    return _avg_pool(3, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, data_format)


def avg_pool1d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None, *,
                        data_format="channels_first"):
    """Gradient of avg_pool1d wrt x."""
    return _avg_pool_backward(1, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override, data_format)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None, *,
                        data_format="channels_first"):
    """Gradient of avg_pool2d wrt x: each output's gradient spread evenly
    (same divisor as forward) over its window; overlaps sum."""
    return _avg_pool_backward(2, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override, data_format)


def avg_pool3d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None, *,
                        data_format="channels_first"):
    """Gradient of avg_pool3d wrt x."""
    return _avg_pool_backward(3, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override, data_format)


def _adaptive(is_max, x, out_size, return_indices):
    """Adaptive (or global: out_size all ones) pooling of x (N, C, *spatial)."""
    dtype = V.common_float_dtype(x=x)
    nd = x.ndim - 2
    out = np.empty(x.shape[:2] + tuple(out_size), dtype=dtype)   # before the (as long) windows
    windows = V.adaptive_windows3(x.shape[2:], out_size)
    indices = np.empty(out.shape, dtype=np.int64) if return_indices else None
    planes = (x.shape[0] * x.shape[1],)
    in3, out3 = (1,) * (3 - nd) + x.shape[2:], (1,) * (3 - nd) + tuple(out_size)
    _pool.adaptive_pool_forward(is_max, V.kernel_array(x, dtype).reshape(planes + in3),
                                out.reshape(planes + out3),
                                None if indices is None else indices.reshape(planes + out3),
                                windows, P.pool_threads(x.size))
    return out, indices


def _adaptive_last(nd, x, output_size, return_indices, is_max):
    """Channels-last adaptive pooling: the channels-first call between layout copies."""
    op = f"adaptive_{'max' if is_max else 'avg'}_pool{nd}d"
    V.adaptive_geometry(_first_view(x), output_size, op, nd)
    x = _to_first(x)
    if is_max:
        result = _adaptive_max_pool(nd, x, output_size, return_indices)
        return tuple(map(_to_last, result)) if return_indices else _to_last(result)
    return _to_last(_adaptive_avg_pool(nd, x, output_size))


def _adaptive_avg_pool(nd, x, output_size, data_format="channels_first"):
    if V.channels_last(data_format):
        dtype, out_size = V.adaptive_geometry(_first_view(x), output_size,
                                              f"adaptive_avg_pool{nd}d", nd)
        if all(o == 1 for o in out_size) and x.size:   # the global average, NHWC kernel
            x3 = V.kernel_array(x, dtype)
            n, c = x3.shape[0], x3.shape[-1]
            out = np.empty((n,) + (1,) * nd + (c,), dtype)
            _conv_nhwc.global_avg(x3.reshape(-1), n, x3.size // max(n * c, 1), c,
                                  out.reshape(-1), P.pool_threads(x3.size))
            return out
        return _adaptive_last(nd, x, output_size, False, False)
    _, out_size = V.adaptive_geometry(x, output_size, f"adaptive_avg_pool{nd}d", nd)
    return _adaptive(False, x, out_size, False)[0]


def _adaptive_max_pool(nd, x, output_size, return_indices, data_format="channels_first"):
    if V.channels_last(data_format):
        return _adaptive_last(nd, x, output_size, V.flag(return_indices, "return_indices"),
                              True)
    _, out_size = V.adaptive_geometry(x, output_size, f"adaptive_max_pool{nd}d", nd)
    return_indices = V.flag(return_indices, "return_indices")
    out, indices = _adaptive(True, x, out_size, return_indices)
    return (out, indices) if return_indices else out


def _adaptive_avg_pool_backward(nd, grad_out, input_shape, data_format="channels_first"):
    op = f"adaptive_avg_pool{nd}d_backward"
    if V.channels_last(data_format):
        shape = V.input_shape_arg(input_shape, nd + 2, op)
        V.pooled_grad(_first_view(grad_out), _shape_first(shape), op, nd=nd)
        return _to_last(_adaptive_avg_pool_backward(nd, _to_first(grad_out),
                                                    _shape_first(shape)))
    dtype, input_shape = V.pooled_grad(grad_out, input_shape, op, nd=nd)
    return _adaptive_avg_backward(grad_out, input_shape, dtype)


def _adaptive_avg_backward(grad_out, input_shape, dtype):
    nd = len(input_shape) - 2
    out_size = grad_out.shape[2:] if grad_out.ndim == nd + 2 else (1,) * nd
    planes = (input_shape[0] * input_shape[1],)
    in3, out3 = (1,) * (3 - nd) + input_shape[2:], (1,) * (3 - nd) + tuple(out_size)
    grad_x = np.empty(input_shape, dtype=dtype)
    _pool.adaptive_avg_backward(V.kernel_array(grad_out, dtype).reshape(planes + out3),
                                grad_x.reshape(planes + in3),
                                V.adaptive_windows3(input_shape[2:], out_size),
                                P.pool_threads(grad_x.size))
    return grad_x


def _adaptive_max_pool_backward(nd, grad_out, indices, input_shape,
                                data_format="channels_first"):
    op = f"adaptive_max_pool{nd}d_backward"
    if V.channels_last(data_format):
        return _max_pool_backward_last(nd, grad_out, indices, input_shape, op)
    dtype, input_shape = V.max_pool_indices(grad_out, indices, input_shape, nd, op,
                                            check_range=False)
    return _scatter_max(grad_out, indices, input_shape, dtype, op)


def adaptive_avg_pool1d(x, output_size, *,
                        data_format="channels_first"):
    """Average pooling of x (N, C, L) to a fixed output length (torch's windows)."""
    return _adaptive_avg_pool(1, x, output_size, data_format)


def adaptive_avg_pool2d(x, output_size, *,
                        data_format="channels_first"):
    """Average pooling to a fixed output size (torch's adaptive windows:
    [floor(i*in/out), ceil((i+1)*in/out)))."""
    return _adaptive_avg_pool(2, x, output_size, data_format)


def adaptive_avg_pool3d(x, output_size, *,
                        data_format="channels_first"):
    """Average pooling of x (N, C, D, H, W) to a fixed output size."""
    return _adaptive_avg_pool(3, x, output_size, data_format)


def adaptive_max_pool1d(x, output_size, return_indices=False, *,
                        data_format="channels_first"):
    """Max pooling of x (N, C, L) to a fixed output length -> y, or (y, indices)."""
    return _adaptive_max_pool(1, x, output_size, return_indices, data_format)


def adaptive_max_pool2d(x, output_size, return_indices=False, *,
                        data_format="channels_first"):
    """Max pooling to a fixed output size -> y, or (y, indices)."""
    return _adaptive_max_pool(2, x, output_size, return_indices, data_format)


def adaptive_max_pool3d(x, output_size, return_indices=False, *,
                        data_format="channels_first"):
    """Max pooling of x (N, C, D, H, W) to a fixed output size -> y, or (y,
    indices): flat positions inside each (D, H, W) volume, as torch."""
    return _adaptive_max_pool(3, x, output_size, return_indices, data_format)


def adaptive_avg_pool1d_backward(grad_out, input_shape, *,
                                 data_format="channels_first"):
    """Gradient of adaptive_avg_pool1d wrt x; the output size is grad_out's."""
    return _adaptive_avg_pool_backward(1, grad_out, input_shape, data_format)


def adaptive_avg_pool2d_backward(grad_out, input_shape, *,
                                 data_format="channels_first"):
    """Gradient of adaptive_avg_pool2d wrt x; the output size is grad_out's."""
    return _adaptive_avg_pool_backward(2, grad_out, input_shape, data_format)


def adaptive_avg_pool3d_backward(grad_out, input_shape, *,
                                 data_format="channels_first"):
    """Gradient of adaptive_avg_pool3d wrt x; the output size is grad_out's."""
    return _adaptive_avg_pool_backward(3, grad_out, input_shape, data_format)


def adaptive_max_pool1d_backward(grad_out, indices, input_shape, *,
                                 data_format="channels_first"):
    """Gradient of adaptive_max_pool1d wrt x: grad_out scattered through indices."""
    return _adaptive_max_pool_backward(1, grad_out, indices, input_shape, data_format)


def adaptive_max_pool2d_backward(grad_out, indices, input_shape, *,
                                 data_format="channels_first"):
    """Gradient of adaptive_max_pool2d wrt x: grad_out scattered through indices."""
    return _adaptive_max_pool_backward(2, grad_out, indices, input_shape, data_format)


def adaptive_max_pool3d_backward(grad_out, indices, input_shape, *,
                                 data_format="channels_first"):
    """Gradient of adaptive_max_pool3d wrt x: grad_out scattered through indices."""
    return _adaptive_max_pool_backward(3, grad_out, indices, input_shape, data_format)


def _keepdims(out, keepdims, last=False):
    """(N, C, 1, 1) (channels-last (N, 1, 1, C)) -> (N, C) unless keepdims."""
    if V.flag(keepdims, "keepdims"):
        return out
    return out.reshape(out.shape[0], out.shape[3] if last else out.shape[1])


# Global pooling of a channels-last image is pooling of its (H*W, C) plane
# with a window of all H*W rows and 1 column: the plane kernels' lanes run
# across channels and nothing is copied.

def _global_geometry(x, op):
    """Validated (dtype, N, H*W, C) of a channels-last global pooling input."""
    dtype, _ = V.adaptive_geometry(_first_view(x), 1, op)
    return dtype, x.shape[0], x.shape[1] * x.shape[2], x.shape[3]


def _global_window(hw):
    return (1, hw, 1), (1, 1, 1), (0, 0, 0)


def global_avg_pool2d(x, keepdims=False, *, data_format="channels_first"):
    """Mean over each (H, W) plane -> (N, C), or (N, C, 1, 1) with keepdims
    ((N, 1, 1, C) channels-last)."""
    if V.channels_last(data_format):
        dtype, n, hw, c = _global_geometry(x, "global_avg_pool2d")
        V.flag(keepdims, "keepdims")
        out = np.empty((n, 1, 1, c), dtype=dtype)
        _pool.avg_pool_forward(V.kernel_array(x, dtype).reshape(n, 1, hw, c), out,
                               *_global_window(hw), ((1,), (hw,), (1,) * c),
                               P.pool_threads(x.size))
        return _keepdims(out, keepdims, last=True)
    V.adaptive_geometry(x, 1, "global_avg_pool2d")
    V.flag(keepdims, "keepdims")
    return _keepdims(_adaptive(False, x, (1, 1), False)[0], keepdims)


def global_avg_pool2d_backward(grad_out, input_shape, *, data_format="channels_first"):
    """Gradient of global_avg_pool2d; grad_out (N, C) or (N, C, 1, 1)
    ((N, 1, 1, C) channels-last)."""
    op = "global_avg_pool2d_backward"
    if V.channels_last(data_format):
        shape = V.input_shape_arg(input_shape, 4, op)
        dtype, _ = V.pooled_grad(_first_view(grad_out), _shape_first(shape), op,
                                 keepdims_ok=True)
        n, hw, c = shape[0], shape[1] * shape[2], shape[3]
        grad_x = np.empty(shape, dtype=dtype)
        _pool.avg_pool_backward(V.kernel_array(grad_out, dtype).reshape(n, 1, 1, c),
                                grad_x.reshape(n, 1, hw, c), *_global_window(hw),
                                ((1,), (hw,), (1,) * c), P.pool_threads(grad_x.size))
        return grad_x
    dtype, input_shape = V.pooled_grad(grad_out, input_shape, op, keepdims_ok=True)
    return _adaptive_avg_backward(grad_out, input_shape, dtype)


def global_max_pool2d(x, keepdims=False, return_indices=False, *,
                      data_format="channels_first"):
    """Max over each (H, W) plane -> (N, C) (or (N, C, 1, 1)), with int64 flat
    plane indices on request."""
    last = V.channels_last(data_format)
    if last:
        dtype, n, hw, c = _global_geometry(x, "global_max_pool2d")
    else:
        V.adaptive_geometry(x, 1, "global_max_pool2d")
    V.flag(keepdims, "keepdims")
    return_indices = V.flag(return_indices, "return_indices")
    if last:
        out = np.empty((n, 1, 1, c), dtype=dtype)
        indices = np.empty(out.shape, dtype=np.int64) if return_indices else None
        _pool.max_pool_forward(V.kernel_array(x, dtype).reshape(n, 1, hw, c), out, indices,
                               *_global_window(hw), (1, 1, 1), P.pool_threads(x.size))
        if indices is not None:  # (H*W, C) positions -> plane positions
            np.floor_divide(indices, c, out=indices)
    else:
        out, indices = _adaptive(True, x, (1, 1), return_indices)
    if return_indices:
        return _keepdims(out, keepdims, last), _keepdims(indices, keepdims, last)
    return _keepdims(out, keepdims, last)


def global_max_pool2d_backward(grad_out, indices, input_shape, *,
                               data_format="channels_first"):
    """Gradient of global_max_pool2d; grad_out and indices (N, C) or (N, C, 1, 1)
    ((N, 1, 1, C) channels-last)."""
    op = "global_max_pool2d_backward"
    if V.channels_last(data_format):
        return _max_pool_backward_last(2, grad_out, indices, input_shape, op, keepdims_ok=True)
    dtype, input_shape = V.pooled_grad(grad_out, input_shape, op, keepdims_ok=True)
    V.check_indices(indices, grad_out, input_shape, op, check_range=False)
    return _scatter_max(grad_out, indices, input_shape, dtype, op)


# --------------------------------------------------- batch norm, activations

def _batch_stats(x3, threads):
    """Per-channel mean and biased variance (float64) of x3 (N, C, S)."""
    C = x3.shape[1]
    mean, var = np.empty(C), np.empty(C)
    _elementwise.batch_norm_stats(x3, mean, var, threads)
    return mean, var


def _batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
    """batch_norm, also returning the statistics it normalised with: (y,
    mean, invstd), mean and invstd in x's dtype (the batch's when training,
    the running ones' otherwise), what batch_norm_backward takes. The layer
    (nn.BatchNorm2d) calls this to keep them for its backward."""
    shape, training, momentum, eps = V.batch_norm_args(x, running_mean, running_var, weight,
                                                       bias, training, momentum, eps)
    dtype = shape.dtype
    x3 = V.kernel_array(x, dtype).reshape(shape.as3d)
    threads = P.elementwise_threads(x3.size)
    if training:
        mean, var = _batch_stats(x3, threads)
        if running_mean is not None and shape.count > 0:
            # torch: an empty batch leaves the running statistics as they are
            unbiased = var * (shape.count / (shape.count - 1))
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * unbiased
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
    invstd = 1 / np.sqrt(var + eps)
    scale = invstd if weight is None else invstd * np.asarray(weight, dtype=np.float64)
    shift = -mean * scale
    if bias is not None:
        shift = shift + np.asarray(bias, dtype=np.float64)
    y = np.empty(shape.shape, dtype=dtype)
    _elementwise.channel_affine(x3, np.ascontiguousarray(scale), np.ascontiguousarray(shift),
                                y.reshape(shape.as3d), threads)
    return y, mean.astype(dtype), invstd.astype(dtype)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of x (N, C, *) per channel, as
    torch.nn.functional.batch_norm: y = (x - mean) / sqrt(var + eps) * weight
    + bias. training=True normalises with the batch's mean and biased
    variance and, when running_mean/running_var are given, updates them in
    place: r = (1 - momentum) * r + momentum * batch (unbiased variance);
    training=False normalises with the running statistics. Statistics are
    accumulated in float64."""
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)[0]


def batch_norm_backward(grad_out, x, weight, mean, invstd):
    """Training-mode gradient of batch_norm -> (grad_x, grad_weight,
    grad_bias): mean and invstd = 1 / sqrt(biased var + eps) are the batch
    statistics that forward normalised with; weight None means 1 (then
    grad_weight and grad_bias are still those of an affine map at 1 and 0).
    Two passes over the data: the per-channel sums, then grad_x."""
    return _batch_norm_backward(grad_out, x, weight, mean, invstd)


def _batch_norm_backward(grad_out, x, weight, mean, invstd, relu_out=None):
    """batch_norm_backward; with relu_out (the output of a ReLU applied to
    this batch norm's output), the gradient of relu(batch_norm(x)): grad_out
    is masked where relu_out <= 0 inside the same two passes (no separate
    ReLU backward pass)."""
    shape = V.batch_norm_backward_args(grad_out, x, weight, mean, invstd, relu_out)
    dtype = shape.dtype
    x3 = V.kernel_array(x, dtype).reshape(shape.as3d)
    go3 = V.kernel_array(grad_out, dtype).reshape(shape.as3d)
    ry3 = None if relu_out is None else V.kernel_array(relu_out, dtype).reshape(shape.as3d)
    threads = P.elementwise_threads(x3.size)
    mean64 = np.ascontiguousarray(mean, dtype=np.float64)
    invstd64 = np.asarray(invstd, dtype=np.float64)
    C = shape.shape[1]
    sum_go, sum_gox = np.empty(C), np.empty(C)
    _elementwise.batch_norm_grad_sums(go3, ry3, x3, mean64, sum_go, sum_gox, threads)
    m = max(shape.count, 1)
    a = invstd64 if weight is None else invstd64 * np.asarray(weight, dtype=np.float64)
    coef = np.stack([a, -a * invstd64 * invstd64 * sum_gox / m, -a * sum_go / m, mean64],
                    axis=1)
    grad_x = np.empty(shape.shape, dtype=dtype)
    _elementwise.batch_norm_grad_input(go3, ry3, x3, np.ascontiguousarray(coef),
                                       grad_x.reshape(shape.as3d), threads)
    return grad_x, (sum_gox * invstd64).astype(dtype), sum_go.astype(dtype)


def relu(x):
    """max(x, 0) elementwise, NaN kept (as torch.relu); a new array."""
    dtype = V.elementwise_args("relu", x=x)
    xf = V.kernel_array(x, dtype).reshape(-1)
    y = np.empty(x.shape, dtype=dtype)
    _elementwise.relu(xf, y.reshape(-1), P.elementwise_threads(xf.size))
    return y


def _clamp(op, x, lo, hi):
    """x clamped to [lo, hi] by the clamp kernel (relu6, hardtanh)."""
    dtype = V.elementwise_args(op, x=x)
    xf = V.kernel_array(x, dtype).reshape(-1)
    y = np.empty(x.shape, dtype=dtype)
    _elementwise.clamp(xf, y.reshape(-1), lo, hi, P.elementwise_threads(xf.size))
    return y


def _clamp_backward(op, grad_out, x, lo, hi):
    """grad_out where lo < x < hi, else 0 (relu6_backward, hardtanh_backward)."""
    dtype = V.elementwise_args(op, grad_out=grad_out, x=x)
    gf = V.kernel_array(grad_out, dtype).reshape(-1)
    grad_x = np.empty(grad_out.shape, dtype=dtype)
    _elementwise.clamp_backward(gf, V.kernel_array(x, dtype).reshape(-1), grad_x.reshape(-1),
                                lo, hi, P.elementwise_threads(gf.size))
    return grad_x


def hardtanh(x, min_val=-1.0, max_val=1.0):
    """x clamped to [min_val, max_val] elementwise, NaN kept (as
    torch.nn.functional.hardtanh); a new array. min_val > max_val is a
    ValueError."""
    return _clamp("hardtanh", x, *V.clamp_bounds(min_val, max_val))


def hardtanh_backward(grad_out, x, min_val=-1.0, max_val=1.0):
    """Gradient of hardtanh given its input x: grad_out where min_val < x <
    max_val, else 0 (at and outside the bounds, and where x is NaN)."""
    return _clamp_backward("hardtanh_backward", grad_out, x, *V.clamp_bounds(min_val, max_val))


def relu6(x):
    """min(max(x, 0), 6) elementwise, NaN kept (as torch.nn.functional.relu6:
    hardtanh on [0, 6]); a new array."""
    return _clamp("relu6", x, 0.0, 6.0)


def relu6_backward(grad_out, x):
    """Gradient of relu6 given its input x: grad_out where 0 < x < 6, else 0
    (NaN x: 0)."""
    return _clamp_backward("relu6_backward", grad_out, x, 0.0, 6.0)


def relu_backward(grad_out, y):
    """Gradient of relu given its output y: grad_out where y is not <= 0 (NaN
    outputs pass it, as torch's threshold_backward), else 0."""
    dtype = V.elementwise_args("relu_backward", grad_out=grad_out, y=y)
    gf = V.kernel_array(grad_out, dtype).reshape(-1)
    grad_x = np.empty(grad_out.shape, dtype=dtype)
    _elementwise.relu_backward(gf, V.kernel_array(y, dtype).reshape(-1), grad_x.reshape(-1),
                               P.elementwise_threads(gf.size))
    return grad_x


def _add_relu(a, b, out=None):
    """relu(a + b) in one pass (a residual block's sum and activation); into
    `out` (a C-contiguous array of a's shape and dtype, may be a or b) or a
    new array."""
    dtype = V.elementwise_args("add_relu", a=a, b=b)
    y = np.empty(a.shape, dtype=dtype) if out is None else out
    af = V.kernel_array(a, dtype).reshape(-1)
    _elementwise.add_relu(af, V.kernel_array(b, dtype).reshape(-1), y.reshape(-1),
                          P.elementwise_threads(af.size))
    return y
