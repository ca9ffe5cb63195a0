"""Batch normalisation of channels-last activations (N, *spatial, C) and its
backward, without layout copies: the arguments are checked by batch_norm.py's
validation on a channels-first view (the same errors as the channels-first
op), then the per-channel sums and the affine maps of _elementwise's
channels-last kernels run along rows of C contiguous channels. Statistics
and the per-channel coefficients are computed in float64 as batch_norm.py
computes them; the sums are added in another order than the channels-first
kernels' (blocks of rows), so training-mode results agree with them to
rounding, not bit for bit; eval mode applies the same rounded scale and
shift to each element."""
from __future__ import annotations

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._ext import _elementwise
from .batch_norm import _channel_map, batch_norm_args, batch_norm_backward_args
from .data_format import _first_view


def _rows(a, shape):
    """a channels-last array of the validated NormShape as (rows, C)."""
    return V.kernel_array(a, shape.dtype).reshape(shape.count, shape.shape[1])


def _batch_norm_last(x, running_mean, running_var, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5):
    """_batch_norm of channels-last x: (y, mean, invstd), y channels-last,
    mean and invstd in x's dtype; the running statistics updated in place
    as batch_norm updates them."""
    args = batch_norm_args(_first_view(x), running_mean, running_var, weight, bias, training,
                           momentum, eps)
    shape = args[0]
    dtype, C = shape.dtype, shape.shape[1]
    x2 = _rows(x, shape)
    threads = P.elementwise_threads(x2.size)

    def batch_stats():
        mean, var = np.empty(C), np.empty(C)
        _elementwise.batch_norm_stats_last(x2, mean, var, threads)
        return mean, var
    mean, invstd, scale, shift = _channel_map(args, batch_stats, running_mean, running_var,
                                              weight, bias)
    y = np.empty(x.shape, dtype=dtype)
    _elementwise.channel_affine_last(x2, scale.astype(dtype), shift.astype(dtype),
                                     y.reshape(x2.shape), threads)
    return y, mean.astype(dtype), invstd.astype(dtype)


def _batch_norm_backward_last(grad_out, x, weight, mean, invstd, relu_out=None):
    """_batch_norm_backward of channels-last grad_out, x and relu_out (the
    output of a ReLU after this batch norm, or None) -> (grad_x
    channels-last, grad_weight, grad_bias)."""
    shape = batch_norm_backward_args(_first_view(grad_out), _first_view(x), weight, mean, invstd,
                                     _first_view(relu_out))
    dtype, C, count = shape.dtype, shape.shape[1], shape.count
    x2, go2 = _rows(x, shape), _rows(grad_out, shape)
    ry2 = None if relu_out is None else _rows(relu_out, shape)
    threads = P.elementwise_threads(x2.size)
    mean64 = np.ascontiguousarray(mean, dtype=np.float64)
    invstd64 = np.asarray(invstd, dtype=np.float64)
    sum_go, sum_gox = np.empty(C), np.empty(C)
    _elementwise.batch_norm_grad_sums_last(go2, ry2, x2, mean64, sum_go, sum_gox, threads)
    m = max(count, 1)
    a = invstd64 if weight is None else invstd64 * np.asarray(weight, dtype=np.float64)
    coef = np.stack([a, -a * invstd64 * invstd64 * sum_gox / m, -a * sum_go / m, mean64])
    grad_x = np.empty(x.shape, dtype=dtype)
    _elementwise.batch_norm_grad_input_last(go2, ry2, x2, coef.astype(dtype),
                                            grad_x.reshape(x2.shape), threads)
    return grad_x, (sum_gox * invstd64).astype(dtype), sum_go.astype(dtype)
