"""Depthwise convolution (groups == channels) on its own driver
(cnnfast._ext._depthwise), in either layout: forward, input and weight
gradients of one plan entry (kernel "depthwise"), and the channels-last
gradients of a whole call. Narrow channels-first rows run on the
channels-last kernels between layout copies when the plan says so."""
from __future__ import annotations

import math

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._ext import _depthwise
from .data_format import _shape_last, _to_first, _to_last
from .pointwise import _channel_sums, _pixel_rows


def _dw5(shape, last):
    """A shape as the depthwise driver's 5-D view: (N, C, D, H, W), or with
    `last` (N, D, H, W, C); unit dims added before the spatial ones."""
    lead = 1 if last else 2
    return shape[:lead] + (1,) * (5 - len(shape)) + shape[lead:]


# Results of at least this many bytes start at a 64-byte boundary
# (_empty_aligned); smaller ones stay in L2 (2 MB a core here), where a store
# straddling two lines costs little, and skip finding the address (~1-3 us).
ALIGN_BYTES = 1 << 20


def _empty_aligned(shape, dtype):
    """np.empty(shape, dtype), starting at a 64-byte boundary when it has
    ALIGN_BYTES or more (NumPy aligns to 16 bytes). The channels-last
    kernels store whole 64-byte vectors at pixel starts: with C * itemsize a
    multiple of 64 every store then fills one cache line instead of
    straddling two (the input gradient's kernel, 1 thread, aligned against
    16-byte-offset results: 144 x 56 x 56 stride 2, batch 8, 0.88-0.99 vs
    1.17-1.26 ms; 96 x 112 x 112 stride 2, 0.30-0.32 vs 0.38-0.42 ms)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < ALIGN_BYTES:
        return np.empty(shape, dtype)
    buf = np.empty(nbytes + 64, np.uint8)
    at = -buf.ctypes.data % 64
    return buf[at:at + nbytes].view(dtype).reshape(shape)


def _depthwise_pack(geom, weight, bias):
    """weight and bias (of the kernel dtype, empty: none) packed for the
    channels-last forward (_depthwise.forward_last's `packed`)."""
    return _depthwise.pack_last(V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape), bias,
                                geom.in_channels)


def _depthwise_forward(geom, p, x, weight, bias, clamp=None, residual=None, last=False,
                       packed=None):
    """Plan entry p (kernel "depthwise"): a new (N, K, *out) array, or
    (N, *out, K) with `last` (x channels-last); bias of the kernel dtype
    (empty: none); a fused layer's residual and clamp as _run_forward's;
    packed: with `last`, weight and bias as _depthwise_pack gives them (a
    fused layer's, packed once), or None."""
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
        p.split, dict(p.arrays), p.threads, clamp, res5, *((packed,) if last else ()))
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
    grad_x = _empty_aligned(shape, geom.dtype)
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
