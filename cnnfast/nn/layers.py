"""The layers: torch.nn's constructor arguments and parameter names, forward
and backward on NumPy arrays.

Convolution, pooling, BatchNorm, ReLU, ReLU6 and Hardtanh call the public
kernels in cnnfast.functional (looked up at call time); Linear is one GEMM
through NumPy; LeakyReLU, Tanh, Sigmoid and Dropout are a few elementwise NumPy
expressions each.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from .. import _validation as V
from .. import functional as F
from .._ops.activation import _add_relu, _real, clamp_bounds, elementwise_args
from .._ops.batch_norm import _batch_norm, _batch_norm_backward
from .._ops.conv_validation import (
    _transpose_padding, conv_padding_arg, padding_mode_arg, transpose_output_padding,
)
from .._ops.data_format import _to_first, _to_last
from .._ops.dense import _dense_matmul
from .._ops.pool_validation import divisor_override_arg, pool_padding_arg
from . import init
from .module import TRACE, Module, Parameter

__all__ = [
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "Linear", "Flatten", "Identity", "ReLU", "ReLU6", "Hardtanh", "LeakyReLU", "Tanh", "Sigmoid",
    "Dropout", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "GlobalAvgPool2d",
    "GlobalMaxPool2d", "Sequential",
]


# ----------------------------------------------------------------- helpers

def float_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _nonneg_int(value, name):
    if not V._is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def _check_input(x, layer, ndim, channels=None, axis=1):
    """Shape/dtype checks for layers whose arithmetic is NumPy (the kernels
    check their own inputs)."""
    V.check_array(x, "x")
    if isinstance(ndim, int) and x.ndim != ndim or not isinstance(ndim, int) and x.ndim < ndim[0]:
        want = ndim if isinstance(ndim, int) else f"at least {ndim[0]}"
        raise ValueError(f"{layer} expects x with {want} dims, got shape {x.shape}")
    if channels is not None and x.shape[axis] != channels:
        raise ValueError(f"{layer} expects {channels} features on axis {axis} of x, "
                         f"got shape {x.shape}")


def _same_dtype(x, param, layer):
    # compared in native byte order: a big-endian float32 x is still float32
    if x.dtype.newbyteorder("=") != param.data.dtype.newbyteorder("="):
        raise TypeError(f"{layer}: x has dtype {x.dtype} but the layer's parameters are "
                        f"{param.data.dtype}; convert one of them (model.to(dtype) or "
                        f"x.astype(...))")


def _data_format(data_format):
    """A layer's data_format argument, validated (cnnfast._validation)."""
    V.channels_last(data_format)
    return data_format


def _format_repr(data_format):
    """The extra_repr suffix of a layer's data_format (nothing for the default)."""
    return ", data_format='channels_last'" if data_format == "channels_last" else ""


def _spatial(x, data_format):
    """The spatial sizes of x in data_format."""
    return x.shape[1:-1] if data_format == "channels_last" else x.shape[2:]


# ------------------------------------------------------------- convolution

def _conv_layer_backward(layer, op, grad_out, x, args):
    """A conv-family layer's backward: the gradients its parameters need
    (frozen ones are skipped), accumulated; returns the input gradient."""
    need = (("x",) if layer._input_grad else ()) \
        + (("weight",) if layer._needs_grad(layer.weight) else ()) \
        + (("bias",) if layer._needs_grad(layer.bias) else ())
    if not need:
        return None
    gx, gw, gb = getattr(F, op)(grad_out, x, layer.weight.data, **args, need=need)
    layer.weight.accumulate(gw)
    if layer.bias is not None:
        layer.bias.accumulate(gb)
    return gx


class _ConvNd(Module):
    _nd = 0
    _first_layer = Module._self_first

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", dtype=np.float32,
                 data_format="channels_first"):
        super().__init__()
        nd = self._nd
        self.data_format = _data_format(data_format)
        self.in_channels = V.positive_int(in_channels, "in_channels")
        self.out_channels = V.positive_int(out_channels, "out_channels")
        self.kernel_size = V.ntuple(kernel_size, nd, "kernel_size", minimum=1)
        self.stride = V.ntuple(stride, nd, "stride", minimum=1)
        self.dilation = V.ntuple(dilation, nd, "dilation", minimum=1)
        # ints, pairs, "valid", "same" (and "causal" for Conv1d), as the functional ops
        self.padding = conv_padding_arg(padding, nd)
        self.groups = V.positive_int(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.padding_mode = padding_mode_arg(padding_mode)
        dtype = float_dtype(dtype)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Parameter(init.kaiming_uniform(shape, dtype))
        self.bias = (Parameter(init.uniform((self.out_channels,),
                                            1 / math.sqrt(init.fan_in(shape)), dtype))
                     if bias else None)

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode,
                    data_format=self.data_format)

    def forward(self, x):
        op = getattr(F, f"conv{self._nd}d")
        y = op(x, self.weight.data, None if self.bias is None else self.bias.data,
               **self._args())
        if self.training:
            self._cache = x
        return y

    def backward(self, grad_out):
        return _conv_layer_backward(self, f"conv{self._nd}d_backward", grad_out, self._saved(),
                                    self._args())

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return (s + ("" if self.bias is not None else ", bias=False")
                + _format_repr(self.data_format))


class Conv1d(_ConvNd):
    """1-D convolution over (N, C, L)."""
    _nd = 1


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W); weight (out, in // groups, kH, kW)."""
    _nd = 2


class Conv3d(_ConvNd):
    """3-D convolution over (N, C, D, H, W)."""
    _nd = 3


class _ConvTransposeNd(Module):
    """torch.nn.ConvTranspose*d: weight (in, out // groups, *kernel), bias (out,)."""
    _nd = 0
    _first_layer = Module._self_first

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 dtype=np.float32, data_format="channels_first"):
        super().__init__()
        nd = self._nd
        self.data_format = _data_format(data_format)
        self.in_channels = V.positive_int(in_channels, "in_channels")
        self.out_channels = V.positive_int(out_channels, "out_channels")
        self.kernel_size = V.ntuple(kernel_size, nd, "kernel_size", minimum=1)
        self.stride = V.ntuple(stride, nd, "stride", minimum=1)
        self.dilation = V.ntuple(dilation, nd, "dilation", minimum=1)
        before, after = _transpose_padding(padding, nd)
        self.padding = before if before == after else tuple(zip(before, after))
        self.output_padding = V.ntuple(output_padding, nd, "output_padding", minimum=0)
        for r, s, d in zip(self.output_padding, self.stride, self.dilation):
            if r >= s and r >= d:
                raise ValueError(f"output_padding must be smaller than either stride or "
                                 f"dilation, got output_padding={output_padding!r}, "
                                 f"stride={stride!r}, dilation={dilation!r}")
        self.groups = V.positive_int(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' (torch allows no other mode for "
                             f"transposed convolutions), got {padding_mode!r}")
        self.padding_mode = padding_mode
        dtype = float_dtype(dtype)
        shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        # torch's init: kaiming_uniform(a=sqrt(5)) with fan_in = shape[1] * taps
        self.weight = Parameter(init.kaiming_uniform(shape, dtype))
        self.bias = (Parameter(init.uniform((self.out_channels,),
                                            1 / math.sqrt(init.fan_in(shape)), dtype))
                     if bias else None)

    def _args(self, output_padding=None):
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding if output_padding is None
                    else output_padding, groups=self.groups, dilation=self.dilation,
                    data_format=self.data_format)

    def _output_padding(self, x, output_size):
        """The output_padding of a call with output_size (None: the layer's)."""
        if output_size is None:
            return None
        V.check_array(x, "x")
        if x.ndim != self._nd + 2:
            raise ValueError(f"{type(self).__name__} expects x with {self._nd + 2} dims, "
                             f"got shape {x.shape}")
        if (self.data_format == "channels_last" and isinstance(output_size, (tuple, list))
                and len(output_size) == self._nd + 2):
            output_size = tuple(output_size)[1:-1]   # a full (N, *spatial, C) shape
        return transpose_output_padding(
            output_size, self._nd, _spatial(x, self.data_format), self.kernel_size,
            self.stride, self.padding, self.dilation, f"{type(self).__name__}.forward")

    def forward(self, x, output_size=None):
        """output_size: the spatial size wanted (or the full (N, C, *spatial)
        shape), between the smallest output size and that plus stride - 1 per
        dim (torch's rule); it replaces output_padding for this call."""
        op = getattr(F, f"conv_transpose{self._nd}d")
        args = self._args(self._output_padding(x, output_size))
        y = op(x, self.weight.data, None if self.bias is None else self.bias.data, **args)
        if self.training:
            self._cache = (x, args["output_padding"])
        return y

    def backward(self, grad_out):
        x, output_padding = self._saved()
        return _conv_layer_backward(self, f"conv_transpose{self._nd}d_backward", grad_out, x,
                                    self._args(output_padding))

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if any(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return (s + ("" if self.bias is not None else ", bias=False")
                + _format_repr(self.data_format))


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over (N, C, L)."""
    _nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution over (N, C, H, W); weight (in, out // groups, kH, kW)."""
    _nd = 2


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution over (N, C, D, H, W)."""
    _nd = 3


# ------------------------------------------------------------------ linear

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
        y = _dense_matmul(x2, self.weight.data, trans_b=True)
        if self.bias is not None:
            y += self.bias.data
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


# ------------------------------------------------------------- activations

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


class Tanh(Module):
    def forward(self, x):
        y = np.tanh(x)
        if self.training:
            self._cache = y
        return y

    def backward(self, grad_out):
        y = self._saved()
        return grad_out * (1 - y * y)


class Sigmoid(Module):
    def forward(self, x):
        y = expit(x)   # no overflow warnings for large |x|, keeps float32
        if self.training:
            self._cache = y
        return y

    def backward(self, grad_out):
        y = self._saved()
        return grad_out * y * (1 - y)


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and
    scale the survivors by 1 / (1 - p), so eval mode is the identity. Masks are
    drawn from cnnfast.nn.init's generator (cnnfast.nn.manual_seed)."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = inplace

    def forward(self, x):
        if not self.training:
            return x
        if self.p == 1:
            mask = np.zeros_like(x)
        else:
            keep = init.generator().random(x.shape) >= self.p
            mask = keep.astype(x.dtype) * x.dtype.type(1 / (1 - self.p))
        self._cache = mask
        return x * mask

    def backward(self, grad_out):
        return grad_out * self._saved()

    def extra_repr(self):
        return f"p={self.p}"


# ----------------------------------------------------------- normalisation

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
        if last:   # the kernels reduce over channels-first planes
            x = _to_first(x)
        # training: batch statistics, and the running ones updated if tracked;
        # eval: the running statistics, or the batch's when none are tracked
        use_batch = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        momentum = 0.0
        if update:
            momentum = (1 / (self._batches_seen + 1)) if self.momentum is None else self.momentum
        y, mean, invstd = _batch_norm(
            x, self.running_mean if update or not use_batch else None,
            self.running_var if update or not use_batch else None,
            self.weight.data if self.affine else None,
            None if self.bias is None else self.bias.data,
            training=use_batch, momentum=momentum, eps=self.eps)
        if update:
            self._batches_seen += 1   # torch counts empty batches too (num_batches_tracked)
        if self.training:
            self._cache = (x, mean, invstd)
        return _to_last(y) if last else y

    def backward(self, grad_out, relu=None):
        """relu: the ReLU this layer's output went through (grad_out is then
        that ReLU's output gradient): both backward passes in one, the
        ReLU's mask applied inside the batch norm's (backward_chain)."""
        x, mean, invstd = self._saved()
        last = self.data_format == "channels_last" and x.ndim > 2
        relu_out = None if relu is None else relu._saved()
        if last:   # the kernels reduce over channels-first planes
            grad_out = _to_first(grad_out)
            relu_out = None if relu_out is None else _to_first(relu_out)
        grad_x, g_gamma, g_beta = _batch_norm_backward(
            grad_out, x, self.weight.data if self.affine else None, mean, invstd, relu_out)
        if self.affine:
            self.weight.accumulate(g_gamma if self._needs_grad(self.weight) else None)
        if self.bias is not None:
            self.bias.accumulate(g_beta if self._needs_grad(self.bias) else None)
        return _to_last(grad_x) if last else grad_x

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


# ----------------------------------------------------------------- pooling

class _Pool(Module):
    """Shared constructor checks for the windowed pools of _nd dims."""
    _nd = 2

    def _window(self, kernel_size, stride, padding):
        nd = self._nd
        self.kernel_size = V.ntuple(kernel_size, nd, "kernel_size", minimum=1)
        self.stride = (self.kernel_size if stride is None
                       else V.ntuple(stride, nd, "stride", minimum=1))
        # ints (at most half the kernel), (before, after) pairs, "valid", "same"
        self.padding = pool_padding_arg(padding, nd, self.kernel_size, type(self).__name__)

    def _op(self, suffix=""):
        return getattr(F, f"{self._kind}_pool{self._nd}d{suffix}")


class _MaxPool(_Pool):
    _kind = "max"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False, data_format="channels_first"):
        super().__init__()
        self.data_format = _data_format(data_format)
        self._window(kernel_size, stride, padding)
        self.dilation = V.ntuple(dilation, self._nd, "dilation", minimum=1)
        self.return_indices, self.ceil_mode = bool(return_indices), bool(ceil_mode)

    def forward(self, x):
        need_idx = self.training or self.return_indices
        out = self._op()(x, self.kernel_size, self.stride, self.padding, self.dilation,
                         self.ceil_mode, return_indices=need_idx, data_format=self.data_format)
        if not need_idx:
            return out
        y, idx = out
        if self.training:
            self._cache = (idx, x.shape)
        return (y, idx) if self.return_indices else y

    def backward(self, grad_out):
        idx, shape = self._saved()
        return self._op("_backward")(grad_out, idx, shape, data_format=self.data_format)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (", ceil_mode=True" if self.ceil_mode else "") + _format_repr(self.data_format))


class _AvgPool(_Pool):
    _kind = "avg"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, data_format="channels_first"):
        super().__init__()
        self.data_format = _data_format(data_format)
        self._window(kernel_size, stride, padding)
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override_arg(divisor_override)

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x):
        y = self._op()(x, *self._args(), data_format=self.data_format)
        if self.training:
            self._cache = x.shape
        return y

    def backward(self, grad_out):
        return self._op("_backward")(grad_out, self._saved(), *self._args(),
                                     data_format=self.data_format)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + _format_repr(self.data_format))


class MaxPool1d(_MaxPool):
    _nd = 1


class MaxPool2d(_MaxPool):
    _nd = 2


class MaxPool3d(_MaxPool):
    _nd = 3


class AvgPool1d(_AvgPool):
    _nd = 1


class AvgPool2d(_AvgPool):
    _nd = 2


class AvgPool3d(_AvgPool):
    _nd = 3


def _adaptive_size(output_size, nd):
    """int, or nd entries that may be None ("keep the input size")."""
    if V._is_int(output_size):
        output_size = (output_size,) * nd
    if not isinstance(output_size, (tuple, list)) or len(output_size) != nd or not all(
            s is None or V._is_int(s) and s >= 1 for s in output_size):
        raise ValueError(f"output_size must be a positive int or {nd} positive ints "
                         f"(or None), got {output_size!r}")
    return tuple(output_size)


class _Adaptive(Module):
    _nd = 2

    def __init__(self, output_size, data_format="channels_first"):
        super().__init__()
        self.output_size = _adaptive_size(output_size, self._nd)
        self.data_format = _data_format(data_format)

    def _size(self, x):
        V.check_array(x, "x")
        if x.ndim != self._nd + 2:
            spatial = V._SPATIAL[self._nd]
            layout = (f"(N, {spatial}, C)" if self.data_format == "channels_last"
                      else f"(N, C, {spatial})")
            raise ValueError(f"{type(self).__name__} expects x of shape {layout}, "
                             f"got {x.shape}")
        spatial = _spatial(x, self.data_format)
        return tuple(spatial[i] if s is None else s for i, s in enumerate(self.output_size))

    def extra_repr(self):
        return f"output_size={self.output_size}" + _format_repr(self.data_format)


class _AdaptiveAvg(_Adaptive):
    """Average over torch's adaptive windows to a fixed output size."""

    def forward(self, x):
        y = getattr(F, f"adaptive_avg_pool{self._nd}d")(x, self._size(x),
                                                        data_format=self.data_format)
        if self.training:
            self._cache = x.shape
        return y

    def backward(self, grad_out):
        return getattr(F, f"adaptive_avg_pool{self._nd}d_backward")(
            grad_out, self._saved(), data_format=self.data_format)


class _AdaptiveMax(_Adaptive):
    """Max over torch's adaptive windows to a fixed output size."""

    def __init__(self, output_size, return_indices=False, data_format="channels_first"):
        super().__init__(output_size, data_format)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        y, idx = getattr(F, f"adaptive_max_pool{self._nd}d")(x, self._size(x),
                                                             return_indices=True,
                                                             data_format=self.data_format)
        if self.training:
            self._cache = (idx, x.shape)
        return (y, idx) if self.return_indices else y

    def backward(self, grad_out):
        idx, shape = self._saved()
        return getattr(F, f"adaptive_max_pool{self._nd}d_backward")(
            grad_out, idx, shape, data_format=self.data_format)


class AdaptiveAvgPool1d(_AdaptiveAvg):
    _nd = 1


class AdaptiveAvgPool2d(_AdaptiveAvg):
    _nd = 2


class AdaptiveAvgPool3d(_AdaptiveAvg):
    _nd = 3


class AdaptiveMaxPool1d(_AdaptiveMax):
    _nd = 1


class AdaptiveMaxPool2d(_AdaptiveMax):
    _nd = 2


class AdaptiveMaxPool3d(_AdaptiveMax):
    _nd = 3


class GlobalAvgPool2d(Module):
    """Mean over H and W: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with keepdims."""

    def __init__(self, keepdims=False, data_format="channels_first"):
        super().__init__()
        self.keepdims = bool(keepdims)
        self.data_format = _data_format(data_format)

    def forward(self, x):
        y = F.global_avg_pool2d(x, keepdims=self.keepdims, data_format=self.data_format)
        if self.training:
            self._cache = x.shape
        return y

    def backward(self, grad_out):
        return F.global_avg_pool2d_backward(grad_out, self._saved(),
                                            data_format=self.data_format)


class GlobalMaxPool2d(Module):
    """Max over H and W: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with keepdims."""

    def __init__(self, keepdims=False, data_format="channels_first"):
        super().__init__()
        self.keepdims = bool(keepdims)
        self.data_format = _data_format(data_format)

    def forward(self, x):
        if not self.training:
            return F.global_max_pool2d(x, keepdims=self.keepdims, data_format=self.data_format)
        y, idx = F.global_max_pool2d(x, keepdims=self.keepdims, return_indices=True,
                                     data_format=self.data_format)
        self._cache = (idx, x.shape)
        return y

    def backward(self, grad_out):
        idx, shape = self._saved()
        return F.global_max_pool2d_backward(grad_out, idx, shape, data_format=self.data_format)


# -------------------------------------------------------------- containers

def backward_chain(stages, grad_out):
    """Backward through modules that ran in order (each one's output the
    next one's input): each one's backward in reverse, except that a
    BatchNorm followed by a ReLU runs as one fused backward."""
    i = len(stages) - 1
    while i >= 0:
        m = stages[i]
        if type(m) is ReLU and i > 0 and isinstance(stages[i - 1], _BatchNorm):
            grad_out = stages[i - 1].backward(grad_out, relu=m)
            i -= 2
        else:
            grad_out = m.backward(grad_out)
            i -= 1
    return grad_out


class Sequential(Module):
    """Children named "0", "1", ... (or by an OrderedDict's keys), run in order."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__} at {name}")
            setattr(self, name, m)

    def __len__(self):
        return len(self.named_children())

    def __iter__(self):
        return iter(self.children())

    def __getitem__(self, i):
        return self.children()[i]

    def append(self, module):
        setattr(self, str(len(self)), module)
        return self

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x

    def backward(self, grad_out):
        return backward_chain(self.children(), grad_out)

    def _first_layer(self):
        children = self.children()
        return children[0]._first_layer() if children else None
