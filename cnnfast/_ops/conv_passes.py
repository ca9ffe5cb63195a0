"""One planned pass of a convolution on the drivers: the forward, input
gradient, weight gradient and bias sums of a plan entry (cnnfast._plan), in
the layout the plan chose (per image, depth-stacked batch, batch as pixels),
dispatched to the depthwise and NHWC kernels where the entry names them.
conv and conv_transpose both run on these (a transposed convolution's
forward is a convolution's input gradient)."""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import numpy as np

from .. import _nhwc
from .. import _nhwc_backward
from .. import _plan as P
from .. import _replay
from .. import _validation as V
from .._ext import _conv, _layout
from .._threads import blas_pinned
from .activation import epilogue_clamp
from .data_format import _to_first, _to_last
from .depthwise import _depthwise_forward, _depthwise_input_grad, _depthwise_weight_grad


def _kernel_args(p):
    """The driver arguments of a plan entry: kernel, and the GEMM's (tile,
    weights_in_place, reduction_chunk)."""
    return p.kernel, (p.tile, p.weights_in_place, P.REDUCTION_CHUNK)


def _contiguous(view):
    """np.ascontiguousarray(view): a copy (as a step that a fused model's
    recorded run replays, cnnfast._replay) unless view already is one."""
    if view.flags.c_contiguous:
        return view
    out = np.empty(view.shape, view.dtype)
    _replay.step(np.copyto, out, view)
    return out


def _transposed(a2):
    """A new C-contiguous copy of the C-contiguous 2-D a2's transpose: the
    blocked copy of the layout conversions, on cnnfast's threads (NumPy's
    transposing copy is one thread, a strided walk: LeNet's batch-as-pixels
    copies did not scale)."""
    if a2.shape[0] == 1 or a2.shape[1] == 1:
        return a2.reshape(a2.shape[::-1])
    out = np.empty(a2.shape[::-1], a2.dtype)
    _layout.swap_axes(a2.reshape((1,) + a2.shape), out.reshape((1,) + out.shape),
                      P.copy_threads(a2.size))
    return out


def _batch_as_pixels(a, rows):
    """(N, rows...) -> (1, rows, 1, 1, N): C-contiguous copy, batch last."""
    n = a.shape[0]
    return _transposed(V.kernel_array(a, a.dtype).reshape(n, rows)).reshape(1, rows, 1, 1, n)


def _pixels_as_batch(a5, shape):
    """Inverse of _batch_as_pixels: (1, rows, 1, 1, N) -> new C-contiguous `shape`."""
    return _transposed(a5.reshape(a5.shape[1], a5.shape[4])).reshape(shape)


def _depth_stack(a5):
    """(N, C, 1, H, W) -> new C-contiguous (1, C, N, H, W)."""
    n, c = a5.shape[:2]
    return _contiguous(a5.transpose(1, 0, 2, 3, 4)).reshape((1, c, n) + a5.shape[3:])


def _depth_unstack(a5, shape):
    """(1, C, N, H, W) -> new C-contiguous array of `shape` (N, C, ...)."""
    c, n = a5.shape[1:3]
    return _contiguous(a5.reshape((c, n) + a5.shape[3:]).swapaxes(0, 1)).reshape(shape)


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


def _run_forward(geom, p, x, weight, bias, clamp=None, residual=None):
    """The forward pass of plan entry p: conv(x, weight) + bias, a new (N, K,
    *out) array. x and weight are any arrays validated for geom; bias an
    array of the kernel dtype (empty: none). A fused layer's epilogue:
    `residual` (validated, out's shape) added and then the activation
    `clamp` = (lo, hi) or None, both on each output tile inside the
    kernel's parallel loop."""
    if p.kernel == "depthwise":
        return _depthwise_forward(geom, p, x, weight, bias, clamp, residual)
    if p.kernel in ("nhwc_direct", "nhwc_winograd"):
        # channels-first: the NHWC kernels between layout copies
        res = None if residual is None else _to_last(V.kernel_array(residual, geom.dtype))
        return _to_first(_nhwc.forward_pass(p.kernel, p.config, geom,
                                            _to_last(V.kernel_array(x, geom.dtype)), weight,
                                            bias, res, epilogue_clamp(clamp)))
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
    return run_forward_call(forward_call(geom, p), x, weight, bias, clamp, residual)


class ForwardCall(NamedTuple):
    """A forward pass on the per-image or depth-stacked drivers, all but its
    arrays: what a repeated call (same geometry and plan entry) reuses
    instead of deriving the 5-D shapes and driver arguments again."""
    dtype: np.dtype
    x5_shape: tuple
    w5_shape: tuple
    y5_shape: tuple       # the output as 5-D (N, K, *out)
    out5_shape: tuple     # what the driver writes: y5_shape, depth-stacked (1, K, N, ...)
    out_shape: tuple
    stacked: bool
    driver_args: tuple    # stride, padding, dilation (3-D), groups, kernel, GEMM tiling,
                          # padding mode, threads
    blas: bool            # the kernel calls BLAS: pin its threads


def forward_call(geom, p) -> ForwardCall | None:
    """The ForwardCall of plan entry p, None when it runs elsewhere
    (depthwise, NHWC or batch-as-pixels kernels: _run_forward)."""
    if p.kernel in ("depthwise", "nhwc_direct", "nhwc_winograd") or p.layout == "batch_as_pixels":
        return None
    stacked = p.layout == "depth_stacked"
    y5 = geom.out5_shape
    return ForwardCall(geom.dtype, geom.x5_shape, geom.w5_shape, y5,
                       (1, geom.out_channels, geom.batch) + y5[3:] if stacked else y5,
                       geom.out_shape, stacked,
                       (*geom.kernel_args, geom.groups, *_kernel_args(p), geom.pad_mode_code,
                        p.threads),
                       p.kernel == "gemm_blas")


def run_forward_call(call: ForwardCall, x, weight, bias, clamp=None, residual=None):
    """conv(x, weight) + bias (then residual and clamp, as _run_forward) by
    the prepared call: a new (N, K, *out) array."""
    dtype = call.dtype
    x5 = V.kernel_array(x, dtype).reshape(call.x5_shape)
    w5 = V.kernel_array(weight, dtype).reshape(call.w5_shape)
    out5 = np.empty(call.out5_shape, dtype=dtype)
    res5 = None
    if residual is not None:
        res5 = V.kernel_array(residual, dtype).reshape(call.y5_shape)
        res5 = _depth_stack(res5) if call.stacked else res5
    if call.stacked:
        x5 = _depth_stack(x5)
    if call.blas:
        with blas_pinned:
            _conv.conv_forward(x5, w5, bias, out5, *call.driver_args, clamp, res5)
    else:   # reading and setting OpenBLAS's thread count costs a tiny call's kernel time
        _conv.conv_forward(x5, w5, bias, out5, *call.driver_args, clamp, res5)
    return _depth_unstack(out5, call.out_shape) if call.stacked else out5.reshape(call.out_shape)


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
    if p.layout == "channels_last_copies":   # the NHWC kernels between layout copies
        go = _to_last(go5.reshape(geom.out5_shape[:2] + tuple(geom.out_size)))
        return _nhwc_backward.run_weight_grad(p.kernel, p.config, geom, go,
                                              _to_last(V.kernel_array(x, geom.dtype)))
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
    """The drivers' bias: kernel dtype, empty for none (a shared read-only
    empty array: the drivers only read it)."""
    return V._NO_ELEMENTS[dtype] if bias is None else V.kernel_array(bias, dtype)


def _merge_first(grad, rest, first):
    """Store the passes named in rest from a channels-first call's (grad_x,
    grad_w, grad_b) into the dict grad, grad_x in the channels-last layout."""
    for g, value in zip(("x", "weight", "bias"), first):
        if g in rest:
            grad[g] = _to_last(value) if g == "x" else value
