"""Conv1d/2d/3d and ConvTranspose1d/2d/3d: torch.nn's constructor arguments
and parameters; forward and backward call cnnfast.functional's
conv{nd}d / conv_transpose{nd}d (looked up at call time)."""
from __future__ import annotations

import math

import numpy as np

from .. import _validation as V
from .. import functional as F
from .._ops.conv_validation import (
    _transpose_padding, conv_padding_arg, padding_mode_arg, transpose_output_padding,
)
from . import init
from ._checks import _data_format, _format_repr, _spatial, float_dtype
from .module import Module, Parameter


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
