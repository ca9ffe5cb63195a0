"""The graph's heavy operators on cnnfast's kernels: Conv, ConvTranspose,
BatchNormalization, the pools, Gemm and MatMul (cnnfast.functional), and
Pad and Resize/Upsample (NumPy index maps with exact adjoints).

Trainable arrays are Parameters held by the operator that consumes them
(weight, bias, ...); the executor passes None in their input slots, and
backward returns None there (their gradients go into Parameter.grad).
"""
from __future__ import annotations

import copy
import math

import numpy as np

from .. import functional as F
from .._ops.batch_norm import _batch_norm, _batch_norm_backward
from .._ops.dense import _dense_matmul
from ..nn.fuse import FusedConv2d
from ._ops import Op, check_size, ints, is_float, unbroadcast


def auto_pads(auto_pad, in_size, kernel, stride, dilation):
    """ONNX's auto_pad as (before, after) pairs for the given spatial size:
    SAME_UPPER puts the odd pixel after, SAME_LOWER before."""
    if auto_pad == "VALID":
        return tuple((0, 0) for _ in in_size)
    pairs = []
    for n, k, s, d in zip(in_size, kernel, stride, dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        pairs.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    return tuple(pairs)


class _Windowed(Op):
    """Shared by convolutions and pools: the padding, fixed at load time or,
    for auto_pad with a spatial size only known per call, computed per call."""

    def _pads(self, x):
        if self.padding is not None:
            return self.padding
        return auto_pads(self.auto_pad, x.shape[2:], self.kernel_size, self.stride,
                         self.dilation)


class Conv(_Windowed):
    def __init__(self, node, weight, bias, stride, dilation, groups, padding, auto_pad):
        super().__init__(node)
        self.weight, self.bias = weight, bias
        self.nd = weight.data.ndim - 2
        self.kernel_size = weight.data.shape[2:]
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding, self.auto_pad = padding, auto_pad
        self.padding_mode, self.data_format = "zeros", "channels_first"   # FusedConv2d reads these

    def forward(self, x, w=None, b=None):
        pads = self._pads(x)
        y = getattr(F, f"conv{self.nd}d")(x, self.weight.data,
                                          None if self.bias is None else self.bias.data,
                                          self.stride, pads, self.dilation, self.groups)
        self._keep((x, pads))
        return (y,)

    def backward(self, g):
        x, pads = self._saved()
        need = (("x",) if self._input_grad else ()) \
            + (("weight",) if self._needs_grad(self.weight) else ()) \
            + (("bias",) if self._needs_grad(self.bias) else ())
        if not need:
            return (None, None, None)
        gx, gw, gb = getattr(F, f"conv{self.nd}d_backward")(
            g, x, self.weight.data, self.stride, pads, self.dilation, self.groups, need=need)
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return (gx, None, None)

    def extra_repr(self):
        return (f"weight={self.weight.shape}, stride={self.stride}, "
                f"padding={self.padding or self.auto_pad}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, {self._node!r}")


class ConvTranspose(Op):
    """ONNX ConvTranspose: explicit pads, or pads derived from output_shape
    or auto_pad per the operator's definition (total padding split with the
    odd pixel first unless SAME_UPPER)."""

    def __init__(self, node, weight, bias, stride, dilation, groups, padding, auto_pad,
                 output_padding, output_shape):
        super().__init__(node)
        self.weight, self.bias = weight, bias
        self.nd = weight.data.ndim - 2
        self.kernel_size = weight.data.shape[2:]
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding, self.auto_pad = padding, auto_pad
        self.output_padding, self.output_shape = output_padding, output_shape

    def _geometry(self, x):
        if self.output_shape is None and self.auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
            return self.padding, self.output_padding
        in_size = x.shape[2:]
        want = self.output_shape or tuple(n * s for n, s in zip(in_size, self.stride))
        pairs = []
        for n, k, s, d, r, o in zip(in_size, self.kernel_size, self.stride, self.dilation,
                                    self.output_padding, want):
            total = s * (n - 1) + r + (k - 1) * d + 1 - o
            if total < 0:
                raise ValueError(f"ConvTranspose {self._node!r}: output_shape {want} is "
                                 f"larger than the input {tuple(x.shape)} can produce")
            small, big = total // 2, total - total // 2
            pairs.append((small, big) if self.auto_pad == "SAME_UPPER" else (big, small))
        return tuple(pairs), self.output_padding

    def _args(self, x):
        pads, out_pad = self._geometry(x)
        return dict(stride=self.stride, padding=pads, output_padding=out_pad,
                    groups=self.groups, dilation=self.dilation)

    def forward(self, x, w=None, b=None):
        args = self._args(x)
        y = getattr(F, f"conv_transpose{self.nd}d")(
            x, self.weight.data, None if self.bias is None else self.bias.data, **args)
        self._keep((x, args))
        return (y,)

    def backward(self, g):
        x, args = self._saved()
        need = (("x",) if self._input_grad else ()) \
            + (("weight",) if self._needs_grad(self.weight) else ()) \
            + (("bias",) if self._needs_grad(self.bias) else ())
        if not need:
            return (None, None, None)
        gx, gw, gb = getattr(F, f"conv_transpose{self.nd}d_backward")(
            g, x, self.weight.data, **args, need=need)
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return (gx, None, None)


class BatchNorm(Op):
    """BatchNormalization over (N, C, ...): running statistics in eval mode;
    in training mode torch's batch statistics and running-statistic update
    (momentum is torch's, 1 - ONNX's)."""

    affine = True

    def __init__(self, node, weight, bias, mean, var, eps, momentum):
        super().__init__(node)
        self.weight, self.bias = weight, bias
        self.register_buffer("running_mean", mean)
        self.register_buffer("running_var", var)
        self.eps, self.momentum = float(eps), float(momentum)

    def forward(self, x, *unused):
        y, mean, invstd = _batch_norm(
            x, self.running_mean, self.running_var, self.weight.data, self.bias.data,
            training=self.training, momentum=self.momentum, eps=self.eps)
        self._keep((x, mean, invstd))
        return (y,)

    def backward(self, g):
        x, mean, invstd = self._saved()
        gx, gw, gb = _batch_norm_backward(g, x, self.weight.data, mean, invstd)
        self.weight.accumulate(gw if self._needs_grad(self.weight) else None)
        self.bias.accumulate(gb if self._needs_grad(self.bias) else None)
        return (gx, None, None, None, None)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}, momentum={self.momentum}, {self._node!r}"


class Pool(_Windowed):
    """MaxPool and AveragePool on cnnfast's pooling kernels."""

    def __init__(self, node, kind, kernel_size, stride, dilation, padding, auto_pad, ceil_mode,
                 count_include_pad):
        super().__init__(node)
        self.kind, self.kernel_size, self.stride = kind, kernel_size, stride
        self.dilation, self.padding, self.auto_pad = dilation, padding, auto_pad
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.nd = len(kernel_size)

    def forward(self, x):
        pads = self._pads(x)
        if self.kind == "max":
            out = getattr(F, f"max_pool{self.nd}d")(x, self.kernel_size, self.stride, pads,
                                                     self.dilation, self.ceil_mode,
                                                     return_indices=self.training)
            y, idx = out if self.training else (out, None)
            self._keep((idx, x.shape))
            return (y,)
        y = getattr(F, f"avg_pool{self.nd}d")(x, self.kernel_size, self.stride, pads,
                                               self.ceil_mode, self.count_include_pad)
        self._keep((pads, x.shape))
        return (y,)

    def backward(self, g):
        saved, shape = self._saved()
        if self.kind == "max":
            return (getattr(F, f"max_pool{self.nd}d_backward")(g, saved, shape),)
        return (getattr(F, f"avg_pool{self.nd}d_backward")(
            g, shape, self.kernel_size, self.stride, saved, self.ceil_mode,
            self.count_include_pad),)

    def extra_repr(self):
        return (f"{self.kind}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding or self.auto_pad}, {self._node!r}")


class GlobalPool(Op):
    """GlobalAveragePool / GlobalMaxPool: the kernels for 4-D inputs, NumPy
    for other ranks; the result keeps its unit spatial dims (ONNX)."""

    def __init__(self, node, kind):
        super().__init__(node)
        self.kind = kind

    def forward(self, x):
        if x.ndim == 4:
            if self.kind == "avg":
                self._keep((None, x.shape))
                return (F.global_avg_pool2d(x, keepdims=True),)
            y, idx = F.global_max_pool2d(x, keepdims=True, return_indices=True)
            self._keep((idx, x.shape))
            return (y,)
        axes = tuple(range(2, x.ndim))
        y = x.mean(axis=axes, keepdims=True, dtype=x.dtype) if self.kind == "avg" \
            else x.max(axis=axes, keepdims=True)
        self._keep((x if self.kind == "max" else None, x.shape, y))
        return (y,)

    def backward(self, g):
        saved = self._saved()
        if len(saved) == 2:
            idx, shape = saved
            if self.kind == "avg":
                return (F.global_avg_pool2d_backward(g, shape),)
            return (F.global_max_pool2d_backward(g, idx, shape),)
        x, shape, y = saved
        if self.kind == "avg":
            n = math.prod(shape[2:])
            return (np.broadcast_to(g / g.dtype.type(n), shape).copy(),)
        hit = x == y
        axes = tuple(range(2, x.ndim))
        return ((g * hit / hit.sum(axis=axes, keepdims=True)).astype(g.dtype),)


def _mm(a, b, trans_a=False, trans_b=False):
    return _dense_matmul(a, b, trans_a, trans_b)


class Gemm(Op):
    """alpha * op(A) @ op(B) + beta * C; B and C are Parameters when the
    file gives them as constants (weight and bias), runtime inputs otherwise."""

    def __init__(self, node, weight, bias, alpha, beta, trans_a, trans_b):
        super().__init__(node)
        self.weight, self.bias = weight, bias
        self.alpha, self.beta = float(alpha), float(beta)
        self.trans_a, self.trans_b = bool(trans_a), bool(trans_b)

    def forward(self, a, b=None, c=None):
        b = self.weight.data if self.weight is not None else b
        c = self.bias.data if self.bias is not None else c
        n = b.shape[0] if self.trans_b else b.shape[-1]
        if (self.alpha == 1 and self.beta == 1 and isinstance(c, np.ndarray)
                and c.shape in ((n,), (1, n)) and c.dtype == a.dtype):
            # the common dense layer: its bias in the driver call (a step a
            # fused model's recorded run replays, cnnfast._replay)
            y = _dense_matmul(a, b, self.trans_a, self.trans_b, bias=c)
            self._keep((a, b, c.shape))
            return (y,)
        y = _mm(a, b, self.trans_a, self.trans_b)
        if self.alpha != 1:
            y *= y.dtype.type(self.alpha)
        if c is not None:
            y += c if self.beta == 1 else c * c.dtype.type(self.beta)
        self._keep((a, b, None if c is None else c.shape))
        return (y,)

    def backward(self, g):
        a, b, c_shape = self._saved()
        if self.alpha != 1:
            g_ab = g * g.dtype.type(self.alpha)
        else:
            g_ab = g
        # d op(A) = g @ op(B).T ; d op(B) = op(A).T @ g
        ga = None
        if self._input_grad:
            ga = (_mm(b, g_ab, self.trans_b, True) if self.trans_a
                  else _mm(g_ab, b, False, not self.trans_b))
        gb = None
        if self.weight is None or self._needs_grad(self.weight):
            gb = (_mm(g_ab, a, True, self.trans_a) if self.trans_b
                  else _mm(a, g_ab, not self.trans_a, False))
        gc = None
        if c_shape is not None:
            gc = unbroadcast(g, c_shape).reshape(c_shape)
            if self.beta != 1:
                gc = gc * gc.dtype.type(self.beta)
        if self.weight is not None:
            self.weight.accumulate(gb)
            gb = None
        if self.bias is not None:
            if self._needs_grad(self.bias):
                self.bias.accumulate(np.array(gc, copy=True))
            gc = None
        return (ga, gb, gc)

    def extra_repr(self):
        w = None if self.weight is None else self.weight.shape
        return (f"weight={w}, alpha={self.alpha}, beta={self.beta}, transA={self.trans_a}, "
                f"transB={self.trans_b}, {self._node!r}")


class MatMul(Op):
    """numpy.matmul semantics; a constant second operand is a Parameter
    (the layer's weight). 2-D products (and a stack of rows times a
    matrix) run on cnnfast's dense kernel."""

    def __init__(self, node, weight=None):
        super().__init__(node)
        self.weight = weight

    @staticmethod
    def _product(a, b):
        if b.ndim == 2 and a.ndim >= 2 and a.dtype == b.dtype and is_float(a):
            return _mm(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[1:])
        return np.matmul(a, b)

    def forward(self, a, b=None):
        b = self.weight.data if self.weight is not None else b
        self._keep((a, b))
        return (self._product(a, b),)

    def backward(self, g):
        a, b = self._saved()
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        ga = unbroadcast(np.matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        gb = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), g2), b2.shape).reshape(b.shape)
        if self.weight is not None:
            self.weight.accumulate(np.ascontiguousarray(gb) if self._needs_grad(self.weight)
                                   else None)
            gb = None
        return (ga, gb)


# -------------------------------------------------- index-map operators

def _apply_maps(x, maps, fill=None):
    """x gathered along each axis by its map (idx (n_out, taps), weights or
    None); idx -1 means `fill` (constant padding)."""
    for axis, idx, w in maps:
        taken = np.take(x, np.maximum(idx, 0), axis=axis)   # (..., n_out, taps, ...)
        shape = [1] * taken.ndim
        shape[axis], shape[axis + 1] = idx.shape
        if w is not None:
            taken = (taken * w.reshape(shape).astype(x.dtype)).sum(axis=axis + 1)
        else:
            taken = taken[(slice(None),) * (axis + 1) + (0,)]
            if fill is not None and (idx < 0).any():
                where = [slice(None)] * taken.ndim
                where[axis] = idx[:, 0] < 0
                taken[tuple(where)] = fill
        x = taken
    return x


def _adjoint_maps(g, shape, maps):
    """The gradient of _apply_maps: each axis's map transposed, last axis first."""
    sizes = list(shape)
    dims = []
    for axis, idx, w in maps:
        dims.append(sizes[axis])
    for (axis, idx, w), n_in in zip(reversed(maps), reversed(dims)):
        out_shape = list(g.shape)
        out_shape[axis] = n_in
        out = np.zeros(out_shape, g.dtype)
        moved_out = np.moveaxis(out, axis, 0)
        moved_g = np.moveaxis(g, axis, 0)
        for t in range(idx.shape[1]):
            keep = idx[:, t] >= 0
            contrib = moved_g[keep]
            if w is not None:
                contrib = contrib * w[keep, t].astype(g.dtype).reshape(
                    (-1,) + (1,) * (moved_g.ndim - 1))
            np.add.at(moved_out, idx[keep, t], contrib)
        g = out
    return g


def _check_sizes(shape, changed, op, limit):
    """Before building index maps: the result's shape (axis sizes changed)."""
    out = list(shape)
    for axis, n in changed:
        out[axis] = n
    check_size(out, op, limit)


def _pad_index(n, before, after, mode):
    src = np.arange(-before, n + after)
    if mode == "constant":
        return np.where((src >= 0) & (src < n), src, -1)
    if mode == "edge":
        return np.clip(src, 0, n - 1)
    if mode == "wrap":
        return src % n
    period = 2 * (n - 1)   # reflect: mirror without repeating the edge
    if period == 0:
        return np.zeros_like(src)
    r = np.abs(src) % period
    return np.where(r >= n, period - r, r)


class Pad(Op):
    """Pad (constant, reflect, edge, wrap); negative pads crop."""

    def __init__(self, node, mode, pads=None, value=0.0, axes=None):
        super().__init__(node)
        self.mode, self.pads, self.value, self.axes = mode, pads, value, axes

    def _specs(self, x, pads, value, axes):
        """The validated call: ([(axis, n, before, after)] of the padded axes, fill)."""
        pads = self.pads if pads is None else ints(pads, "pads")
        axes = self.axes if axes is None else ints(axes, "axes")
        axes = list(range(x.ndim)) if axes is None else [a % x.ndim for a in axes]
        if len(pads) != 2 * len(axes):
            raise ValueError(f"Pad {self._node!r}: {len(pads)} pads for a tensor of rank "
                             f"{x.ndim}")
        fill = self.value if value is None or value.size == 0 else value.item()
        specs = []
        for i, axis in enumerate(axes):
            b, a = pads[i], pads[i + len(axes)]
            n = x.shape[axis]
            if b == 0 and a == 0:
                continue
            if n + b + a < 0 or (self.mode != "constant" and n == 0):
                raise ValueError(f"Pad {self._node!r}: pads {pads} do not fit shape {x.shape}")
            if self.mode == "reflect" and (b >= n or a >= n):
                raise ValueError(f"Pad {self._node!r}: reflect pads must be smaller than the "
                                 f"dimension ({n}), got {b}, {a}")
            specs.append((axis, n, b, a))
        _check_sizes(x.shape, [(axis, n + b + a) for axis, n, b, a in specs], "Pad",
                     self.size_limit)
        return specs, fill

    def forward(self, x, pads=None, value=None, axes=None):
        specs, fill = self._specs(x, pads, value, axes)
        maps = [(axis, _pad_index(n, b, a, self.mode)[:, None], None)
                for axis, n, b, a in specs]
        y = _apply_maps(x, maps, fill=x.dtype.type(fill) if self.mode == "constant" else None)
        self._keep((x.shape, maps))
        return (np.ascontiguousarray(y) if maps else x.copy(),)

    def backward(self, g):
        shape, maps = self._saved()
        return (_adjoint_maps(g, shape, maps), None, None, None)


def _nearest(x, mode, scale):
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    # "simple" (Upsample and Resize-10, as onnxruntime): truncation when
    # enlarging, the ceiling when shrinking
    return np.ceil(x) if scale < 1 else np.trunc(x)


def resize_map(n_in, n_out, scale, mode, coord, nearest_mode):
    """(idx (n_out, taps), weights or None): the source positions of one axis."""
    j = np.arange(n_out, dtype=np.float64)
    if coord == "half_pixel":
        src = (j + 0.5) / scale - 0.5
    elif coord == "pytorch_half_pixel":
        src = (j + 0.5) / scale - 0.5 if n_out > 1 else np.zeros(n_out)
    elif coord == "align_corners":
        src = j * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    elif coord == "tf_half_pixel_for_nn":
        src = (j + 0.5) / scale
    else:   # asymmetric
        src = j / scale
    if mode == "nearest":
        idx = np.clip(_nearest(src, nearest_mode, scale), 0, n_in - 1).astype(np.int64)
        return idx[:, None], None
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    return np.stack([lo, hi], 1), np.stack([1 - frac, frac], 1)


class Resize(Op):
    """Resize (and Upsample): nearest or (multi)linear, separable per axis.
    The scales or sizes come from constants or runtime inputs."""

    def __init__(self, node, mode, coord, nearest_mode, scales=None, sizes=None, axes=None):
        super().__init__(node)
        self.mode, self.coord, self.nearest_mode = mode, coord, nearest_mode
        self.scales, self.sizes, self.axes = scales, sizes, axes

    def _specs(self, x, scales, sizes):
        """The validated call: [(axis, n, out, scale)] of the resized axes."""
        scales = self.scales if scales is None or scales.size == 0 else \
            tuple(float(s) for s in scales.reshape(-1))
        sizes = self.sizes if sizes is None or sizes.size == 0 else ints(sizes, "sizes")
        axes = list(range(x.ndim)) if self.axes is None else [a % x.ndim for a in self.axes]
        given = sizes if sizes is not None else scales
        if given is None or len(given) != len(axes):
            raise ValueError(f"Resize {self._node!r}: {0 if given is None else len(given)} "
                             f"scales or sizes for {len(axes)} axes")
        specs = []
        for i, axis in enumerate(axes):
            n = x.shape[axis]
            if sizes is not None:
                out, scale = sizes[i], sizes[i] / n if n else 1.0
            else:
                scale = scales[i]
                out = int(math.floor(n * scale + 1e-9)) if math.isfinite(scale) else -1
            if not scale > 0 or out < 1 or n < 1:
                raise ValueError(f"Resize {self._node!r}: cannot resize axis {axis} of "
                                 f"{x.shape} by scale {scale} to size {out}")
            if out != n or scale != 1:
                specs.append((axis, n, out, scale))
        _check_sizes(x.shape, [(axis, out) for axis, _, out, _ in specs], "Resize",
                     self.size_limit)
        return specs

    def forward(self, x, roi=None, scales=None, sizes=None):
        specs = self._specs(x, scales, sizes)
        maps = [(axis,) + resize_map(n, out, scale, self.mode, self.coord, self.nearest_mode)
                for axis, n, out, scale in specs]
        y = _apply_maps(x, maps)
        self._keep((x.shape, maps))
        return (np.ascontiguousarray(y) if maps else x.copy(),)

    def backward(self, g):
        shape, maps = self._saved()
        return (_adjoint_maps(g, shape, maps), None, None, None)

    def extra_repr(self):
        return (f"mode={self.mode!r}, coordinate_transformation_mode={self.coord!r}, "
                f"{self._node!r}")


class FusedConv(Op):
    """Conv (+ BatchNormalization) (+ a residual Add) (+ Relu, or Clip(0,
    max)) as one cnnfast FusedConv2d: the residual add and the activation
    run in the convolution's store pass (a Clip(0, 6) after it, MobileNetV2's
    ReLU6, was a second pass over every activation: its ONNX export ran
    1.35x the time of cnnfast's own fused model). Inference only."""

    def __init__(self, node, conv, bn, relu, clip_max=None):
        super().__init__(node)
        clamp = None if clip_max is None else (0.0, float(clip_max))
        self.fused = FusedConv2d(conv, bn, relu, clamp)
        self._plain = None   # conv + bias alone, for a residual that broadcasts
        self._shape_for = (None, None)
        self.training = False

    def forward(self, x, residual=None):
        if residual is not None and residual.shape != self._out_shape(x):
            return (self._broadcast_residual(x, residual),)
        return (self.fused(x, residual),)

    def _out_shape(self, x):
        """The convolution's output shape for x (in x's layout), kept for
        the last input shape."""
        if self._shape_for[0] != x.shape:
            f = self.fused
            last = f.data_format == "channels_last"
            first = (x.shape[0], x.shape[-1]) + x.shape[1:-1] if last else x.shape
            out = F.explain_conv(first, f.weight.data.shape, f.stride, f.padding, f.dilation,
                                 f.groups, dtype=x.dtype, need=("forward",),
                                 padding_mode=f.padding_mode).out_shape
            self._shape_for = (x.shape, (out[0],) + out[2:] + (out[1],) if last else out)
        return self._shape_for[1]

    def _broadcast_residual(self, x, residual):
        """An Add whose other operand broadcasts (a per-channel value) cannot
        run in the store pass: conv + bias, then the add and the activation."""
        if self._plain is None:   # the same folded weights, without the clamp
            self._plain = copy.copy(self.fused)
            self._plain.clamp = None
        y = self._plain(x)
        y = (y + residual).astype(y.dtype, copy=False)
        if self.fused.clamp is not None:
            lo, hi = self.fused.clamp
            y = np.where(y < lo, y.dtype.type(lo), np.where(y > hi, y.dtype.type(hi), y))
        return y

    def backward(self, g):
        return self.fused.backward(g)
