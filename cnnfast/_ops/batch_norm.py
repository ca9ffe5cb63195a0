"""batch_norm and batch_norm_backward (also fused with the backward of a
ReLU after it): their arguments' checks, then the per-channel statistics,
affine map and gradient sums of cnnfast._ext._elementwise."""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._cache import memoized
from .._ext import _elementwise
from .._validation import check_array, common_float_dtype, expect_shape, flag


def _real_number(value, name: str, minimum: float | None = None) -> float:
    """A finite real number (not a bool), optionally >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got "
                        f"{type(value).__name__} {V.shown(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {V.shown(value)}")
    return float(value)


def _channel_vector(a, name: str, channels: int, x_shape: tuple) -> None:
    if a is None:
        return
    check_array(a, name)
    if a.shape != (channels,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({channels},): one value per "
                         f"channel of x (shape {x_shape}, channels on axis 1)")


def _channels_input(x, op: str) -> None:
    check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dims (N, C, *) for {op}, got shape {x.shape}")


class NormShape(NamedTuple):
    """x of any (N, C, *) shape seen as (N, C, S) for the kernels."""
    dtype: np.dtype
    shape: tuple
    count: int      # values per channel, N * S
    as3d: tuple     # (N, C, S)


def _norm_shape(dtype, x) -> NormShape:
    n, c = x.shape[:2]
    s = math.prod(x.shape[2:])
    return NormShape(dtype, tuple(x.shape), n * s, (n, c, s))


class NormArgs(NamedTuple):
    """cnnfast.batch_norm's validated arguments."""
    shape: NormShape
    training: bool
    momentum: float
    eps: float
    native_eval: bool     # inference on statistics of x's dtype in native byte order (one
                          # batch_norm_eval call; else the NumPy path converts them)


@memoized(arrays=5)
def batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum,
                    eps) -> NormArgs:
    op = "batch_norm"
    _channels_input(x, op)
    training = flag(training, "training")
    momentum = _real_number(momentum, "momentum")
    eps = _real_number(eps, "eps", minimum=0)
    C = x.shape[1]
    for name, a in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _channel_vector(a, name, C, x.shape)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be arrays or both be None, "
                         f"got running_mean={'None' if running_mean is None else 'an array'}, "
                         f"running_var={'None' if running_var is None else 'an array'}")
    if not training and running_mean is None:
        raise ValueError("batch_norm with training=False normalises with running_mean and "
                         "running_var: they must be arrays, got None")
    dtype = common_float_dtype(x=x, running_mean=running_mean, running_var=running_var,
                               weight=weight, bias=bias)
    if training and running_mean is not None:
        for name, a in (("running_mean", running_mean), ("running_var", running_var)):
            if not a.flags.writeable:
                raise ValueError(f"{name} must be writeable: training=True updates it in "
                                 f"place")
    count = x.shape[0] * math.prod(x.shape[2:])
    if training and count == 1:
        raise ValueError(f"batch_norm with training=True needs more than one value per "
                         f"channel to compute batch statistics, got x of shape {x.shape}")
    native = all(a is None or a.dtype == dtype
                 for a in (running_mean, running_var, weight, bias))
    return NormArgs(_norm_shape(dtype, x), training, momentum, eps, native and not training)


@memoized(arrays=6)
def batch_norm_backward_args(grad_out, x, weight, mean, invstd, relu_out=None) -> NormShape:
    op = "batch_norm_backward"
    check_array(grad_out, "grad_out")
    _channels_input(x, op)
    expect_shape(grad_out, x.shape, "grad_out", "the shape of x")
    if relu_out is not None:
        check_array(relu_out, "relu_out")
        expect_shape(relu_out, x.shape, "relu_out", "the shape of x")
    C = x.shape[1]
    for name, a in (("weight", weight), ("mean", mean), ("invstd", invstd)):
        _channel_vector(a, name, C, x.shape)
    if mean is None or invstd is None:
        raise TypeError(f"mean and invstd must be arrays (the batch statistics of the "
                        f"forward), got mean={type(mean).__name__}, "
                        f"invstd={type(invstd).__name__}")
    dtype = common_float_dtype(grad_out=grad_out, x=x, weight=weight, mean=mean, invstd=invstd,
                               relu_out=relu_out)
    return _norm_shape(dtype, x)


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
    args = batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps)
    y, mean, invstd = _normalise(args, x, running_mean, running_var, weight, bias)
    return y, mean.astype(y.dtype), invstd.astype(y.dtype)


def _channel_map(args: NormArgs, batch_stats, running_mean, running_var, weight, bias):
    """(mean, invstd, scale, shift) per channel in float64, y = x * scale +
    shift: training, the batch's statistics (batch_stats() -> mean, biased
    var) with the running statistics updated in place; else the running ones.
    Shared by both layouts (batch_norm_last.py)."""
    shape, training, momentum, eps, _ = args
    if training:
        mean, var = batch_stats()
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
    return mean, invstd, scale, shift


def _normalise(args: NormArgs, x, running_mean, running_var, weight, bias):
    """(y, mean, invstd) of batch_norm, the statistics in float64."""
    shape = args[0]
    dtype = shape.dtype
    x3 = V.kernel_array(x, dtype).reshape(shape.as3d)
    threads = P.elementwise_threads(x3.size)
    mean, invstd, scale, shift = _channel_map(args, lambda: _batch_stats(x3, threads),
                                              running_mean, running_var, weight, bias)
    y = np.empty(shape.shape, dtype=dtype)
    _elementwise.channel_affine(x3, np.ascontiguousarray(scale), np.ascontiguousarray(shift),
                                y.reshape(shape.as3d), threads)
    return y, mean, invstd


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of x (N, C, *) per channel, as
    torch.nn.functional.batch_norm: y = (x - mean) / sqrt(var + eps) * weight
    + bias. training=True normalises with the batch's mean and biased
    variance and, when running_mean/running_var are given, updates them in
    place: r = (1 - momentum) * r + momentum * batch (unbiased variance);
    training=False normalises with the running statistics. Statistics are
    accumulated in float64."""
    args = batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps)
    if not args.native_eval:
        return _normalise(args, x, running_mean, running_var, weight, bias)[0]
    shape = args.shape   # inference: one driver call computes the per-channel map too
    y = np.empty(shape.shape, dtype=shape.dtype)
    _elementwise.batch_norm_eval(V.kernel_array(x, shape.dtype).reshape(shape.as3d),
                                 running_mean, running_var, weight, bias, args.eps,
                                 y.reshape(shape.as3d), P.elementwise_threads(y.size))
    return y


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
    shape = batch_norm_backward_args(grad_out, x, weight, mean, invstd, relu_out)
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
