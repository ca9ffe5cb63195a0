"""ReLU, ReLU6, Hardtanh and Tanh (C kernels: cnnfast.functional's relu,
hardtanh; _ops.activation.tanh), LeakyReLU and Sigmoid (a few NumPy
expressions each)."""
from __future__ import annotations

import numpy as np
from scipy.special import expit

from .. import _validation as V
from .. import _replay
from .. import functional as F
from .._ops.activation import _add_relu, _real, clamp_bounds, elementwise_args, tanh
from .module import TRACE, Module


class ReLU(Module):
    """max(x, 0) in C (cnnfast.relu); keeps its output for backward."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace   # accepted for torch compatibility; inputs are never modified

    def forward(self, x):
        y = F.relu(x)
        if self.training:
            self._cache = y
        return y

    def forward_sum(self, a, b):
        """relu(a + b) in one pass: a residual block's sum and activation
        (backward as for forward: the gradient reaches both a and b)."""
        if TRACE.tracer is not None:   # a dry run (cnnfast.explain_model)
            return TRACE.tracer.call(self, (a, b), {}, "forward_sum")
        y = _add_relu(a, b)
        if self.training:
            self._cache = y
        return y

    def backward(self, grad_out):
        return F.relu_backward(grad_out, self._saved())


class Hardtanh(Module):
    """x clamped to [min_val, max_val] in C (cnnfast.hardtanh), NaN kept.
    Keeps its output for backward: y is strictly inside the bounds exactly
    where x is (and NaN where x is), so hardtanh_backward on y gives x's
    gradient, and y is the array the next layer keeps anyway (x, a batch
    norm's output, would be one more activation held)."""

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        self.min_val, self.max_val = clamp_bounds(min_val, max_val)
        self.inplace = inplace   # accepted for torch compatibility; inputs are never modified

    def forward(self, x):
        y = F.hardtanh(x, self.min_val, self.max_val)
        if self.training:
            self._cache = y
        return y

    def backward(self, grad_out):
        return F.hardtanh_backward(grad_out, self._saved(), self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    """min(max(x, 0), 6): Hardtanh(0, 6), as torch's ReLU6 (MobileNetV2's
    activation)."""

    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return ""


class LeakyReLU(Module):
    """x where x > 0, else negative_slope * x (NaN kept), as torch's
    LeakyReLU; the gradient is negative_slope wherever x is not > 0."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = _real(negative_slope, "negative_slope")
        self.inplace = inplace   # accepted for torch compatibility; inputs are never modified

    def _slope(self, x, what):
        """The per-element slope (1 or negative_slope) given the input x."""
        dtype = elementwise_args(f"LeakyReLU.{what}", x=x)
        x = V.kernel_array(x, dtype)
        return np.where(x > 0, dtype.type(1), dtype.type(self.negative_slope))

    def forward(self, x):
        slope = self._slope(x, "forward")
        if self.training:
            self._cache = slope
        return slope * x

    def backward(self, grad_out):
        slope = self._saved()
        elementwise_args("LeakyReLU.backward", grad_out=grad_out, x=slope)
        return slope * grad_out

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


def _times(grad_out, t):
    """grad_out * t, into t (a temporary of the caller's) when the product
    has t's dtype and shape. In-place NumPy passes: LeNet's tanh backward,
    (64, 6, 28, 28), 0.22 -> 0.16 ms."""
    if (isinstance(grad_out, np.ndarray) and grad_out.shape == t.shape
            and np.result_type(grad_out, t) == t.dtype):
        return np.multiply(grad_out, t, out=t)
    return grad_out * t


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))   # native byte order


class Tanh(Module):
    def forward(self, x):
        if type(x) is np.ndarray and x.dtype in _KERNEL_DTYPES:
            y = tanh(x)   # the C kernel: NumPy's SIMD tanh is AVX-512 only
        elif type(x) is np.ndarray and x.dtype.kind == "f" and x.dtype.isnative:
            y = np.empty(x.shape, x.dtype)
            _replay.step(np.tanh, x, y)   # a step a fused model's recorded run replays
        else:
            y = np.tanh(x)
        if self.training:
            self._cache = y
        return y

    def backward(self, grad_out):
        y = self._saved()
        t = y * y   # grad_out * (1 - y*y) with one temporary, not three
        np.subtract(1, t, out=t)
        return _times(grad_out, t)


class Sigmoid(Module):
    def forward(self, x):
        y = expit(x)   # no overflow warnings for large |x|, keeps float32
        if self.training:
            self._cache = y
        return y

    def backward(self, grad_out):
        y = self._saved()
        t = 1 - y   # grad_out * y * (1 - y) with one temporary
        np.multiply(t, y, out=t)
        return _times(grad_out, t)
