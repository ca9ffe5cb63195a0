"""A channels-last 1x1 convolution (and a stride-1 1x1 transposed one) as
GEMMs over pixel rows: the (pixels, channels) matrix of an image is its
memory, so forward and gradients need no layout copy
(P.conv_channels_last_native decides when this path runs)."""
from __future__ import annotations

import math

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._ext import _conv
from .._threads import blas_pinned
from .data_format import _shape_last


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
