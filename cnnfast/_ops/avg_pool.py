"""avg_pool{1,2,3}d and their backward on the plane kernels
(cnnfast._ext._pool), channels-last in place for 1-D and 2-D; the divisors
follow torch's count_include_pad and divisor_override rules
(pool_validation.avg_pool_divisors)."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._cache import memoized
from .._ext import _pool
from .data_format import _first_view, _shape_first, _shape_last, _to_first, _to_last
from .planes import run_planes
from .pool_validation import (
    avg_pool_divisors, divisor_array, divisor_override_arg, input_shape_arg, pool_geometry,
)


class AvgPoolCall(NamedTuple):
    """An average pooling's backward, all but its array: the shapes and
    kernel arguments a repeated call reuses (channels-first, or a
    channels-last backward's on the plane view)."""
    dtype: np.dtype
    in_shape: tuple           # grad_x's
    planes_shape: tuple       # grad_x's planes
    out_planes_shape: tuple   # grad_out's planes
    args: tuple               # kernel, stride, padding (3-D), divisor_array, threads


def _divisors(geom, count_include_pad, divisor_override):
    return avg_pool_divisors(geom, V.flag(count_include_pad, "count_include_pad"),
                             divisor_override_arg(divisor_override))


def _backward_call(geom, divisors) -> AvgPoolCall:
    """_pool.avg_pool_backward on geom's planes, its divisor arrays made once."""
    kernel, stride3, padding3, _ = geom.kernel_args
    return AvgPoolCall(geom.dtype, geom.in_shape, geom.planes_shape, geom.out_planes_shape,
                       (kernel, stride3, padding3, divisor_array(geom.dtype, divisors),
                        P.pool_threads(math.prod(geom.in_shape))))


@memoized(arrays=1, state=P.planning_state)
def _prepared_avg_pool(x, nd, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override, data_format):
    """An avg_pool{nd}d call validated once (one cache lookup when repeated):
    its _pool.PlanesForward (planes.run_planes runs it; its divisors made
    once: per call they cost ~5 us), or None channels-last (_avg_pool's
    general path)."""
    if V.channels_last(data_format):
        return None
    geom = pool_geometry(nd, "avg", x, kernel_size, stride, padding, 1, ceil_mode)
    divisors = _divisors(geom, count_include_pad, divisor_override)
    return _pool.PlanesForward("avg", geom.dtype, geom.planes_shape, geom.out_planes_shape,
                               geom.out_shape, geom.kernel_args,
                               divisor_array(geom.dtype, divisors),
                               P.pool_threads(x.size))


def _avg_pool(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override, data_format="channels_first"):
    call = _prepared_avg_pool(x, nd, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override, data_format)
    if call is not None:
        return run_planes(call, x)
    # channels-last
    geom = pool_geometry(nd, "avg", _first_view(x), kernel_size, stride, padding, 1,
                         ceil_mode)
    divisors = _divisors(geom, count_include_pad, divisor_override)
    if P.pool_channels_last_native(nd, geom.channels):
        x4 = V.kernel_array(x, geom.dtype).reshape(geom.last_planes_shape)
        out = np.empty(_shape_last(geom.out_shape), dtype=geom.dtype)
        kernel, stride3, padding3, _ = geom.last_kernel_args
        _pool.avg_pool_forward(x4, out.reshape(geom.last_out_planes_shape), kernel, stride3,
                               padding3, divisor_array(geom.dtype,
                                                             geom.last_divisors(divisors)),
                               P.pool_threads(x4.size))
        return out
    return _to_last(_avg_pool(nd, _to_first(x), kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override))


@memoized(arrays=1, state=P.planning_state)
def _prepared_avg_pool_backward(grad_out, nd, input_shape, kernel_size, stride, padding,
                                ceil_mode, count_include_pad, divisor_override, data_format):
    """An avg_pool{nd}d_backward call validated once: (the validated
    input_shape, its AvgPoolCall; channels-last on the plane view, or None
    when it runs between layout copies)."""
    op = f"avg_pool{nd}d_backward"
    last = V.channels_last(data_format)
    V.check_array(grad_out, "grad_out")
    dtype = V.common_float_dtype(grad_out=grad_out)
    input_shape = input_shape_arg(input_shape, nd + 2, op)
    geom = pool_geometry(nd, "avg", None, kernel_size, stride, padding, 1, ceil_mode,
                         input_shape=_shape_first(input_shape) if last else input_shape,
                         dtype=dtype)
    V.expect_shape(grad_out, _shape_last(geom.out_shape) if last else geom.out_shape,
                   "grad_out", f"the output shape of avg_pool{nd}d for input_shape {input_shape}")
    divisors = _divisors(geom, count_include_pad, divisor_override)
    call = _backward_call(geom, divisors)
    if not last:
        return input_shape, call
    if not P.pool_channels_last_native(nd, geom.channels):
        return input_shape, None
    last_call = call._replace(
        in_shape=input_shape, planes_shape=geom.last_planes_shape,
        out_planes_shape=geom.last_out_planes_shape,
        args=geom.last_kernel_args[:3] + (
            divisor_array(dtype, geom.last_divisors(divisors)), call.args[-1]))
    return input_shape, last_call


def _avg_pool_backward(nd, grad_out, input_shape, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override, data_format="channels_first"):
    input_shape, call = _prepared_avg_pool_backward(
        grad_out, nd, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
        divisor_override, data_format)
    if call is None:   # channels-last, between layout copies
        return _to_last(_avg_pool_backward(nd, _to_first(grad_out), _shape_first(input_shape),
                                           kernel_size, stride, padding, ceil_mode,
                                           count_include_pad, divisor_override))
    grad_x = np.empty(call.in_shape, dtype=call.dtype)
    _pool.avg_pool_backward(V.kernel_array(grad_out, call.dtype).reshape(call.out_planes_shape),
                            grad_x.reshape(call.planes_shape), *call.args)
    return grad_x


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
