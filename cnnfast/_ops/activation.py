"""relu, relu6 and hardtanh (the clamp kernel) with their backward, tanh, the
fused add + ReLU of residual blocks, and the checks of their arguments
(also the clamp bounds a fused convolution's epilogue takes)."""
from __future__ import annotations

import math

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._ext import _elementwise
from .._validation import check_array, common_float_dtype


def elementwise_args(op: str, **arrays) -> np.dtype:
    """Arrays of one shape and one float dtype (relu, relu_backward, add_relu)."""
    first = None
    for name, a in arrays.items():
        check_array(a, name)
        if first is None:
            first = (name, a.shape)
        elif a.shape != first[1]:
            raise ValueError(f"{name} has shape {a.shape}, expected {first[1]} (the shape of "
                             f"{first[0]}) for {op}")
    return common_float_dtype(**arrays)


def one_float_array(op: str, x) -> np.dtype:
    """elementwise_args(op, x=x), its common case (a float32 or float64
    ndarray) checked inline: the checks' calls cost a tiny ReLU as much as
    its kernel."""
    if type(x) is np.ndarray and x.dtype in V.NATIVE_FLOATS:
        return x.dtype
    return elementwise_args(op, x=x)


def _real(value, name: str) -> float:
    """A real number (int or float, not bool) as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} "
                        f"{V.shown(value)}")
    return float(value)


def clamp_bounds(min_val, max_val) -> tuple[float, float]:
    """hardtanh's bounds: numbers, not NaN, min_val <= max_val (torch's rule;
    equal bounds are a constant)."""
    lo, hi = _real(min_val, "min_val"), _real(max_val, "max_val")
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"min_val and max_val must not be NaN, got min_val={V.shown(min_val)}, "
                         f"max_val={V.shown(max_val)}")
    if lo > hi:
        raise ValueError(f"min_val must be <= max_val, got min_val={V.shown(min_val)}, "
                         f"max_val={V.shown(max_val)}")
    return lo, hi


def epilogue_clamp(clamp) -> tuple[float, float] | None:
    """A fused convolution's activation: None/False (none), True (ReLU,
    [0, inf]) or (lo, hi) -> the (lo, hi) the kernel's epilogue takes."""
    if clamp is None or clamp is False:
        return None
    if clamp is True:
        return (0.0, math.inf)
    if not isinstance(clamp, tuple) or len(clamp) != 2:
        raise TypeError(f"clamp must be None, a bool or a (lo, hi) pair, got {V.shown(clamp)}")
    return clamp_bounds(*clamp)


def relu(x):
    """max(x, 0) elementwise, NaN kept (as torch.relu); a new array."""
    dtype = one_float_array("relu", x)
    xf = V.kernel_array(x, dtype).reshape(-1)
    y = np.empty(x.shape, dtype=dtype)
    _elementwise.relu(xf, y.reshape(-1), P.elementwise_threads(xf.size))
    return y


def tanh(x):
    """tanh elementwise of a float32 or float64 array on the threads (float32
    within 3 ulp: csrc/elementwise/activation_tanh.h); a new array."""
    xf = V.kernel_array(x, x.dtype).reshape(-1)
    y = np.empty(x.shape, dtype=x.dtype)
    _elementwise.tanh(xf, y.reshape(-1), P.elementwise_threads(xf.size))
    return y


def relu_backward(grad_out, y):
    """Gradient of relu given its output y: grad_out where y is not <= 0 (NaN
    outputs pass it, as torch's threshold_backward), else 0."""
    dtype = elementwise_args("relu_backward", grad_out=grad_out, y=y)
    gf = V.kernel_array(grad_out, dtype).reshape(-1)
    grad_x = np.empty(grad_out.shape, dtype=dtype)
    _elementwise.relu_backward(gf, V.kernel_array(y, dtype).reshape(-1), grad_x.reshape(-1),
                               P.elementwise_threads(gf.size))
    return grad_x


def _clamp(op, x, lo, hi):
    """x clamped to [lo, hi] by the clamp kernel (relu6, hardtanh)."""
    dtype = one_float_array(op, x)
    xf = V.kernel_array(x, dtype).reshape(-1)
    y = np.empty(x.shape, dtype=dtype)
    _elementwise.clamp(xf, y.reshape(-1), lo, hi, P.elementwise_threads(xf.size))
    return y


def _clamp_backward(op, grad_out, x, lo, hi):
    """grad_out where lo < x < hi, else 0 (relu6_backward, hardtanh_backward)."""
    dtype = elementwise_args(op, grad_out=grad_out, x=x)
    gf = V.kernel_array(grad_out, dtype).reshape(-1)
    grad_x = np.empty(grad_out.shape, dtype=dtype)
    _elementwise.clamp_backward(gf, V.kernel_array(x, dtype).reshape(-1), grad_x.reshape(-1),
                                lo, hi, P.elementwise_threads(gf.size))
    return grad_x


def hardtanh(x, min_val=-1.0, max_val=1.0):
    """x clamped to [min_val, max_val] elementwise, NaN kept (as
    torch.nn.functional.hardtanh); a new array. min_val > max_val is a
    ValueError."""
    return _clamp("hardtanh", x, *clamp_bounds(min_val, max_val))


def hardtanh_backward(grad_out, x, min_val=-1.0, max_val=1.0):
    """Gradient of hardtanh given its input x: grad_out where min_val < x <
    max_val, else 0 (at and outside the bounds, and where x is NaN)."""
    return _clamp_backward("hardtanh_backward", grad_out, x, *clamp_bounds(min_val, max_val))


def relu6(x):
    """min(max(x, 0), 6) elementwise, NaN kept (as torch.nn.functional.relu6:
    hardtanh on [0, 6]); a new array."""
    return _clamp("relu6", x, 0.0, 6.0)


def relu6_backward(grad_out, x):
    """Gradient of relu6 given its input x: grad_out where 0 < x < 6, else 0
    (NaN x: 0)."""
    return _clamp_backward("relu6_backward", grad_out, x, 0.0, 6.0)


def _add_relu(a, b, out=None):
    """relu(a + b) in one pass (a residual block's sum and activation); into
    `out` (a C-contiguous array of a's shape and dtype, may be a or b) or a
    new array."""
    dtype = elementwise_args("add_relu", a=a, b=b)
    y = np.empty(a.shape, dtype=dtype) if out is None else out
    af = V.kernel_array(a, dtype).reshape(-1)
    _elementwise.add_relu(af, V.kernel_array(b, dtype).reshape(-1), y.reshape(-1),
                          P.elementwise_threads(af.size))
    return y
