"""max_pool{1,2,3}d and their backward: the plane kernels (cnnfast._ext._pool)
in either layout, the NHWC kernel for channels-last inference, and the
range-checked index scatter that adaptive and global max pooling share."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._cache import memoized
from .._ext import _conv_nhwc, _pool
from .data_format import _first_view, _shape_first, _shape_last, _to_first, _to_last
from .planes import run_planes
from .pool_validation import (
    check_indices, index_out_of_range, input_shape_arg, max_pool_indices, pool_geometry,
    pooled_grad,
)


@memoized(arrays=1, state=P.planning_state)
def _prepared_max_pool(x, nd, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices, data_format):
    """A max_pool{nd}d call validated once (one cache lookup when repeated):
    its _pool.PlanesForward (planes.run_planes runs it), or None
    channels-last (_max_pool's general path)."""
    if V.channels_last(data_format):
        return None
    geom = pool_geometry(nd, "max", x, kernel_size, stride, padding, dilation, ceil_mode)
    return _pool.PlanesForward("max", geom.dtype, geom.planes_shape, geom.out_planes_shape,
                               geom.out_shape, geom.kernel_args, None, P.pool_threads(x.size),
                               V.flag(return_indices, "return_indices"))


def _max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
              data_format="channels_first"):
    call = _prepared_max_pool(x, nd, kernel_size, stride, padding, dilation, ceil_mode,
                              return_indices, data_format)
    if call is not None:
        return run_planes(call, x)
    # channels-last
    geom = pool_geometry(nd, "max", _first_view(x), kernel_size, stride, padding, dilation,
                         ceil_mode)
    return_indices = V.flag(return_indices, "return_indices")
    if nd <= 2 and not return_indices:   # inference: the NHWC kernel, no padded copy
        return _max_pool_nhwc(geom, x)
    if P.pool_channels_last_native(nd, geom.channels):
        return _max_pool_last(geom, x, return_indices)
    result = _max_pool(nd, _to_first(x), kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices)
    return tuple(map(_to_last, result)) if return_indices else _to_last(result)


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


class ScatterCall(NamedTuple):
    """A channels-first max-pooling backward, all but its arrays: grad_out
    and indices as (planes, outputs) rows scattered into grad_x's planes."""
    dtype: np.dtype
    input_shape: tuple
    rows_shape: tuple
    planes_shape: tuple
    threads: int


def scatter_call(grad_out, input_shape, dtype) -> ScatterCall:
    planes = input_shape[0] * input_shape[1]
    size = math.prod(input_shape)
    return ScatterCall(dtype, input_shape, (planes, grad_out.size // planes if planes else 0),
                       (planes, size // planes if planes else 0), P.pool_threads(size))


@memoized(arrays=2, state=P.planning_state)
def _prepared_max_pool_backward(grad_out, indices, nd, input_shape, op, data_format):
    """A max-pooling backward validated once (one cache lookup when
    repeated): its ScatterCall, or None channels-last."""
    if V.channels_last(data_format):
        return None
    dtype, input_shape = max_pool_indices(grad_out, indices, input_shape, nd, op,
                                          check_range=False)
    return scatter_call(grad_out, input_shape, dtype)


def _max_pool_backward(nd, grad_out, indices, input_shape, op,
                       data_format="channels_first"):
    call = _prepared_max_pool_backward(grad_out, indices, nd, input_shape, op, data_format)
    if call is None:
        return _max_pool_backward_last(nd, grad_out, indices, input_shape, op)
    return _run_scatter(call, grad_out, indices, op)


def _max_pool_backward_last(nd, grad_out, indices, input_shape, op, keepdims_ok=False):
    """Channels-last max-pooling backward, any nd (global: keepdims_ok): the
    scatter kernel reads channels-last images directly (P.pool_channels_last_native
    is for the forward kernels; a scatter has no layout to prefer)."""
    shape = input_shape_arg(input_shape, nd + 2, op)
    # indices are range-checked by the scatter kernel as it uses them
    if keepdims_ok:  # global pooling: grad_out (N, C) or (N, 1, 1, C)
        dtype, _ = pooled_grad(_first_view(grad_out), _shape_first(shape), op,
                               keepdims_ok=True)
        check_indices(_first_view(indices), _first_view(grad_out), _shape_first(shape), op,
                      check_range=False)
    else:
        dtype, _ = max_pool_indices(_first_view(grad_out), _first_view(indices),
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
        raise index_out_of_range(int(indices.reshape(-1)[bad]), _shape_first(input_shape), op)
    return grad_x


def _scatter_max(grad_out, indices, input_shape, dtype, op):
    """grad_x from grad_out scattered through indices (validated but for the
    range: the kernel checks every index as it uses it)."""
    return _run_scatter(scatter_call(grad_out, input_shape, dtype), grad_out, indices, op)


def _run_scatter(call: ScatterCall, grad_out, indices, op):
    grad_x = np.empty(call.input_shape, dtype=call.dtype)
    flat_indices = V.kernel_array(indices, np.int64).reshape(call.rows_shape)
    bad = _pool.max_pool_backward(V.kernel_array(grad_out, call.dtype).reshape(call.rows_shape),
                                  flat_indices, grad_x.reshape(call.planes_shape),
                                  call.threads)
    if bad >= 0:   # the first index outside its plane
        raise index_out_of_range(int(flat_indices.flat[bad]), call.input_shape, op)
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
