"""Max, average, adaptive and global pooling layers over cnnfast.functional's
pooling ops (looked up at call time)."""
from __future__ import annotations

from .. import _validation as V
from .. import functional as F
from .._ops.pool_validation import divisor_override_arg, pool_padding_arg
from ._checks import _data_format, _format_repr, _spatial
from .module import Module


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
