"""BatchNorm1d/2d/3d on cnnfast.functional's batch_norm kernels (channels-last
inputs on the channels-last ones, _ops/batch_norm_last.py, without layout
copies); backward can fold in a following ReLU's."""
from __future__ import annotations

import numpy as np

from .. import _validation as V
from .._ops.batch_norm import _batch_norm, _batch_norm_backward
from .._ops.batch_norm_last import _batch_norm_backward_last, _batch_norm_last
from ._checks import _check_input, _data_format, _format_repr, _same_dtype, float_dtype
from .module import Module, Parameter


class _BatchNorm(Module):
    """Per-channel normalisation of (N, C, *spatial) with _ndims dims. Training
    normalises with the batch statistics (biased variance) and moves the
    running estimates by `momentum` towards them (unbiased variance, as
    torch); eval mode uses the running estimates. momentum=None is a
    cumulative average. channels_last: the channel axis is the last one."""

    _ndims = (4,)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, bias=True, dtype=np.float32,
                 data_format="channels_first"):
        super().__init__()
        self.num_features = V.positive_int(num_features, "num_features")
        self.data_format = _data_format(data_format)   # channels_last: channel axis last
        if not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if momentum is not None and (not isinstance(momentum, (int, float))
                                     or not 0 <= momentum <= 1):
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        # torch 2.13's flag: bias=False keeps the scale but has no shift parameter
        self.has_bias = V.flag(bias, "bias")
        dtype = float_dtype(dtype)
        C = self.num_features
        self.weight = Parameter(np.ones(C, dtype)) if affine else None
        self.bias = Parameter(np.zeros(C, dtype)) if affine and self.has_bias else None
        self.register_buffer("running_mean", np.zeros(C, dtype) if track_running_stats else None)
        self.register_buffer("running_var", np.ones(C, dtype) if track_running_stats else None)
        self._batches_seen = 0

    def _validate(self, x):
        """The layer's own checks of x (the kernels check the rest)."""
        name = type(self).__name__
        V.check_array(x, "x")
        if x.ndim not in self._ndims:
            raise ValueError(f"{name} expects x with {' or '.join(map(str, self._ndims))} "
                             f"dims, got shape {x.shape}")
        last = self.data_format == "channels_last" and x.ndim > 2
        _check_input(x, name, x.ndim, self.num_features, axis=x.ndim - 1 if last else 1)
        if self.affine:
            _same_dtype(x, self.weight, name)
        return x

    def forward(self, x):
        self._validate(x)
        last = self.data_format == "channels_last" and x.ndim > 2
        # training: batch statistics, and the running ones updated if tracked;
        # eval: the running statistics, or the batch's when none are tracked
        use_batch = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        momentum = 0.0
        if update:
            momentum = (1 / (self._batches_seen + 1)) if self.momentum is None else self.momentum
        y, mean, invstd = (_batch_norm_last if last else _batch_norm)(
            x, self.running_mean if update or not use_batch else None,
            self.running_var if update or not use_batch else None,
            self.weight.data if self.affine else None,
            None if self.bias is None else self.bias.data,
            training=use_batch, momentum=momentum, eps=self.eps)
        if update:
            self._batches_seen += 1   # torch counts empty batches too (num_batches_tracked)
        if self.training:
            self._cache = (x, mean, invstd)
        return y

    def backward(self, grad_out, relu=None):
        """relu: the ReLU this layer's output went through (grad_out is then
        that ReLU's output gradient): both backward passes in one, the
        ReLU's mask applied inside the batch norm's (backward_chain)."""
        x, mean, invstd = self._saved()
        last = self.data_format == "channels_last" and x.ndim > 2
        relu_out = None if relu is None else relu._saved()
        grad_x, g_gamma, g_beta = (_batch_norm_backward_last if last else _batch_norm_backward)(
            grad_out, x, self.weight.data if self.affine else None, mean, invstd, relu_out)
        if self.affine:
            self.weight.accumulate(g_gamma if self._needs_grad(self.weight) else None)
        if self.bias is not None:
            self.bias.accumulate(g_beta if self._needs_grad(self.bias) else None)
        return grad_x

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}"
                + ("" if self.has_bias else ", bias=False") + _format_repr(self.data_format))


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) ((N, L, C) channels-last)."""
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) ((N, H, W, C) channels-last)."""
    _ndims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch normalisation of (N, C, D, H, W) ((N, D, H, W, C) channels-last)."""
    _ndims = (5,)
