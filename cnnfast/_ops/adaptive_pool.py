"""adaptive_{avg,max}_pool{1,2,3}d and global_{avg,max}_pool2d, with their
backward: pooling to a fixed output size over torch's adaptive windows
(global pooling is the 1x1 case; channels-last it pools each image's
(H*W, C) plane in place)."""
from __future__ import annotations

import functools

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._cache import memoized
from .._ext import _conv_nhwc, _pool
from .data_format import _first_view, _shape_first, _to_first, _to_last
from .max_pool import _max_pool_backward, _max_pool_backward_last, _scatter_max
from .planes import run_planes
from .pool_validation import (
    adaptive_geometry, adaptive_windows3, check_indices, divisor_array, input_shape_arg,
    max_pool_indices, pooled_grad,
)


@memoized(arrays=1, state=P.planning_state)
def _prepared_adaptive(x, kind, nd, is_max, output_size, keepdims, return_indices,
                       data_format):
    """An adaptive or global (kind) pooling call validated once (one cache
    lookup when repeated): its _pool.PlanesForward (planes.run_planes runs
    it), or None channels-last (the op's general path). keepdims: global
    pooling's (adaptive pooling passes True)."""
    if V.channels_last(data_format):
        return None
    op = f"{kind}_{'max' if is_max else 'avg'}_pool{nd}d"
    dtype, out_size = adaptive_geometry(x, output_size, op, nd)
    keepdims = V.flag(keepdims, "keepdims")
    return_indices = V.flag(return_indices, "return_indices")
    out_shape = x.shape[:2] + tuple(out_size)
    # a result too large to allocate fails here, before its (as long) windows
    np.empty(out_shape, dtype=dtype)
    planes = (x.shape[0] * x.shape[1],)
    return _pool.PlanesForward("adaptive_max" if is_max else "adaptive_avg", dtype,
                               planes + (1,) * (3 - nd) + x.shape[2:],
                               planes + (1,) * (3 - nd) + tuple(out_size),
                               out_shape if keepdims else x.shape[:2], None,
                               adaptive_windows3(x.shape[2:], out_size), P.pool_threads(x.size),
                               return_indices)


def _adaptive_last(nd, x, output_size, return_indices, is_max):
    """Channels-last adaptive pooling: the channels-first call between layout copies."""
    op = f"adaptive_{'max' if is_max else 'avg'}_pool{nd}d"
    adaptive_geometry(_first_view(x), output_size, op, nd)
    x = _to_first(x)
    if is_max:
        result = _adaptive_max_pool(nd, x, output_size, return_indices)
        return tuple(map(_to_last, result)) if return_indices else _to_last(result)
    return _to_last(_adaptive_avg_pool(nd, x, output_size))


def _adaptive_avg_pool(nd, x, output_size, data_format="channels_first"):
    call = _prepared_adaptive(x, "adaptive", nd, False, output_size, True, False, data_format)
    if call is not None:
        return run_planes(call, x)
    # channels-last
    dtype, out_size = adaptive_geometry(_first_view(x), output_size,
                                        f"adaptive_avg_pool{nd}d", nd)
    if all(o == 1 for o in out_size) and x.size:   # the global average, NHWC kernel
        x3 = V.kernel_array(x, dtype)
        n, c = x3.shape[0], x3.shape[-1]
        out = np.empty((n,) + (1,) * nd + (c,), dtype)
        _conv_nhwc.global_avg(x3.reshape(-1), n, x3.size // max(n * c, 1), c,
                              out.reshape(-1), P.pool_threads(x3.size))
        return out
    return _adaptive_last(nd, x, output_size, False, False)


def _adaptive_max_pool(nd, x, output_size, return_indices, data_format="channels_first"):
    call = _prepared_adaptive(x, "adaptive", nd, True, output_size, True, return_indices,
                              data_format)
    if call is not None:
        return run_planes(call, x)
    return _adaptive_last(nd, x, output_size, V.flag(return_indices, "return_indices"), True)


def _adaptive_avg_pool_backward(nd, grad_out, input_shape, data_format="channels_first"):
    op = f"adaptive_avg_pool{nd}d_backward"
    if V.channels_last(data_format):
        shape = input_shape_arg(input_shape, nd + 2, op)
        pooled_grad(_first_view(grad_out), _shape_first(shape), op, nd=nd)
        return _to_last(_adaptive_avg_pool_backward(nd, _to_first(grad_out),
                                                    _shape_first(shape)))
    dtype, input_shape = pooled_grad(grad_out, input_shape, op, nd=nd)
    return _adaptive_avg_backward(grad_out, input_shape, dtype)


def _adaptive_avg_backward(grad_out, input_shape, dtype):
    nd = len(input_shape) - 2
    out_size = grad_out.shape[2:] if grad_out.ndim == nd + 2 else (1,) * nd
    planes = (input_shape[0] * input_shape[1],)
    in3, out3 = (1,) * (3 - nd) + input_shape[2:], (1,) * (3 - nd) + tuple(out_size)
    grad_x = np.empty(input_shape, dtype=dtype)
    _pool.adaptive_avg_backward(V.kernel_array(grad_out, dtype).reshape(planes + out3),
                                grad_x.reshape(planes + in3),
                                adaptive_windows3(input_shape[2:], out_size),
                                P.pool_threads(grad_x.size))
    return grad_x


def _adaptive_max_pool_backward(nd, grad_out, indices, input_shape,
                                data_format="channels_first"):
    return _max_pool_backward(nd, grad_out, indices, input_shape,
                              f"adaptive_max_pool{nd}d_backward", data_format)


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
    dtype, _ = adaptive_geometry(_first_view(x), 1, op)
    return dtype, x.shape[0], x.shape[1] * x.shape[2], x.shape[3]


def _global_window(hw):
    return (1, hw, 1), (1, 1, 1), (0, 0, 0)


@functools.lru_cache(maxsize=256)
def _global_divisors(dtype, hw, c):
    """The window's divisor: all hw rows (per-dim factors 1, hw, 1 per
    channel); cached by (dtype, hw, c), not by its c-long factors."""
    return divisor_array(dtype, ((1,), (hw,), (1,) * c))


def global_avg_pool2d(x, keepdims=False, *, data_format="channels_first"):
    """Mean over each (H, W) plane -> (N, C), or (N, C, 1, 1) with keepdims
    ((N, 1, 1, C) channels-last)."""
    call = _prepared_adaptive(x, "global", 2, False, 1, keepdims, False, data_format)
    if call is not None:
        return run_planes(call, x)
    # channels-last
    dtype, n, hw, c = _global_geometry(x, "global_avg_pool2d")
    V.flag(keepdims, "keepdims")
    out = np.empty((n, 1, 1, c), dtype=dtype)
    _pool.avg_pool_forward(V.kernel_array(x, dtype).reshape(n, 1, hw, c), out,
                           *_global_window(hw), _global_divisors(dtype, hw, c),
                           P.pool_threads(x.size))
    return _keepdims(out, keepdims, last=True)


def global_avg_pool2d_backward(grad_out, input_shape, *, data_format="channels_first"):
    """Gradient of global_avg_pool2d; grad_out (N, C) or (N, C, 1, 1)
    ((N, 1, 1, C) channels-last)."""
    op = "global_avg_pool2d_backward"
    if V.channels_last(data_format):
        shape = input_shape_arg(input_shape, 4, op)
        dtype, _ = pooled_grad(_first_view(grad_out), _shape_first(shape), op,
                               keepdims_ok=True)
        n, hw, c = shape[0], shape[1] * shape[2], shape[3]
        grad_x = np.empty(shape, dtype=dtype)
        _pool.avg_pool_backward(V.kernel_array(grad_out, dtype).reshape(n, 1, 1, c),
                                grad_x.reshape(n, 1, hw, c), *_global_window(hw),
                                _global_divisors(dtype, hw, c), P.pool_threads(grad_x.size))
        return grad_x
    dtype, input_shape = pooled_grad(grad_out, input_shape, op, keepdims_ok=True)
    return _adaptive_avg_backward(grad_out, input_shape, dtype)


def global_max_pool2d(x, keepdims=False, return_indices=False, *,
                      data_format="channels_first"):
    """Max over each (H, W) plane -> (N, C) (or (N, C, 1, 1)), with int64 flat
    plane indices on request."""
    call = _prepared_adaptive(x, "global", 2, True, 1, keepdims, return_indices, data_format)
    if call is not None:
        return run_planes(call, x)
    # channels-last
    dtype, n, hw, c = _global_geometry(x, "global_max_pool2d")
    V.flag(keepdims, "keepdims")
    return_indices = V.flag(return_indices, "return_indices")
    out = np.empty((n, 1, 1, c), dtype=dtype)
    indices = np.empty(out.shape, dtype=np.int64) if return_indices else None
    _pool.max_pool_forward(V.kernel_array(x, dtype).reshape(n, 1, hw, c), out, indices,
                           *_global_window(hw), (1, 1, 1), P.pool_threads(x.size))
    if indices is None:
        return _keepdims(out, keepdims, last=True)
    np.floor_divide(indices, c, out=indices)   # (H*W, C) positions -> plane positions
    return _keepdims(out, keepdims, last=True), _keepdims(indices, keepdims, last=True)


def global_max_pool2d_backward(grad_out, indices, input_shape, *,
                               data_format="channels_first"):
    """Gradient of global_max_pool2d; grad_out and indices (N, C) or (N, C, 1, 1)
    ((N, 1, 1, C) channels-last)."""
    op = "global_max_pool2d_backward"
    if V.channels_last(data_format):
        return _max_pool_backward_last(2, grad_out, indices, input_shape, op, keepdims_ok=True)
    dtype, input_shape = pooled_grad(grad_out, input_shape, op, keepdims_ok=True)
    check_indices(indices, grad_out, input_shape, op, check_range=False)
    return _scatter_max(grad_out, indices, input_shape, dtype, op)
