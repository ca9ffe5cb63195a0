"""Linear (one GEMM on cnnfast's threads), and the layers that only reshape
around it: Flatten and Identity."""
from __future__ import annotations

import math

import numpy as np

from .. import _validation as V
from .._ops.dense import _dense_matmul
from . import init
from ._checks import _check_input, _data_format, _same_dtype, float_dtype
from .module import Module, Parameter


class Linear(Module):
    """y = x @ weight.T + bias over the last axis of x (any leading dims)."""
    _first_layer = Module._self_first

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features = V.positive_int(in_features, "in_features")
        self.out_features = V.positive_int(out_features, "out_features")
        dtype = float_dtype(dtype)
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(init.kaiming_uniform(shape, dtype))
        self.bias = (Parameter(init.uniform((self.out_features,),
                                            1 / math.sqrt(self.in_features), dtype))
                     if bias else None)

    def forward(self, x):
        _check_input(x, "Linear", (1,), self.in_features, axis=-1)
        _same_dtype(x, self.weight, "Linear")
        x2 = x.reshape(-1, self.in_features)
        y = _dense_matmul(x2, self.weight.data, trans_b=True,
                          bias=None if self.bias is None else self.bias.data)
        y = y.reshape(x.shape[:-1] + (self.out_features,))
        if self.training:
            self._cache = x
        return y

    def backward(self, grad_out):
        x = self._saved()
        g2 = grad_out.reshape(-1, self.out_features)
        if self._needs_grad(self.weight):
            self.weight.accumulate(
                _dense_matmul(g2, x.reshape(-1, self.in_features), trans_a=True))
        grad_x = (_dense_matmul(g2, self.weight.data).reshape(x.shape)
                  if self._input_grad else None)
        if self._needs_grad(self.bias):
            self.bias.accumulate(g2.sum(axis=0))
        return grad_x

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Merge dims start_dim..end_dim into one (by default all but the batch)."""

    def __init__(self, start_dim=1, end_dim=-1, data_format="channels_first"):
        super().__init__()
        if not V._is_int(start_dim) or not V._is_int(end_dim):
            raise TypeError(f"start_dim and end_dim must be ints, got {start_dim!r}, "
                            f"{end_dim!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)
        # channels_last: x (N, *spatial, C) is flattened in channels-first
        # order, so a Linear after it keeps the weights of the channels-first
        # model (torchvision's state dicts load unchanged)
        self.data_format = _data_format(data_format)

    def forward(self, x):
        if self.data_format == "channels_last" and getattr(x, "ndim", 0) >= 3:
            y = self._flatten(np.moveaxis(x, -1, 1))
            return np.moveaxis(y, 1, -1) if y.ndim >= 3 else y
        return self._flatten(x)

    def backward(self, grad_out):
        shape = self._saved()   # the (channels-first) shape _flatten saw
        if self.data_format == "channels_last" and len(shape) >= 3:
            if grad_out.ndim >= 3:
                grad_out = np.moveaxis(grad_out, -1, 1)
            return np.ascontiguousarray(np.moveaxis(grad_out.reshape(shape), 1, -1))
        return grad_out.reshape(shape)

    def _flatten(self, x):
        nd = x.ndim
        start, end = self.start_dim % nd, self.end_dim % nd
        if start > end:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after "
                             f"end_dim={self.end_dim} for x of shape {x.shape}")
        if self.training:
            self._cache = x.shape
        merged = int(np.prod(x.shape[start:end + 1]))   # explicit: -1 fails for N == 0
        return x.reshape(x.shape[:start] + (merged,) + x.shape[end + 1:])


class Identity(Module):
    """Passes x through (handy for cutting a head off a model)."""

    def forward(self, x):
        if self.training:
            self._cache = True
        return x

    def backward(self, grad_out):
        self._saved()
        return grad_out
