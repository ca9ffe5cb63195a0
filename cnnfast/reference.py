"""Pure-NumPy reference implementations: the test oracle and the benchmark
baseline. Same signatures and semantics as cnnfast.functional, written for
clarity the way a careful NumPy programmer would (sliding windows, one batched
matmul, a Python loop over kernel taps at most -- never over pixels)."""
from __future__ import annotations

import functools
import inspect
import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import _validation as V
from ._ops.activation import clamp_bounds, elementwise_args
from ._ops.batch_norm import batch_norm_args, batch_norm_backward_args
from ._ops.conv_validation import conv_algorithm, conv_geometry, conv_need, conv_transpose_geometry
from ._ops.pool_validation import (
    adaptive_geometry, adaptive_windows, check_indices, divisor_override_arg, input_shape_arg,
    max_pool_indices, pool_geometry, pooled_grad,
)


# ------------------------------------------------------------ convolution

# torch's padding_mode -> NumPy's np.pad mode
_NP_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _padded(x, geom):
    """x padded in geom.pad_mode: zeros, mirrored without repeating the edge,
    the edge repeated, or wrapped around."""
    pads = [(0, 0), (0, 0)] + list(zip(geom.pad_before, geom.pad_after))
    return np.pad(np.asarray(x, dtype=geom.dtype), pads, mode=_NP_PAD[geom.pad_mode])


def _fold(grad_padded, geom):
    """Adjoint of _padded: the gradient wrt the padded input summed onto the
    input element each padded position holds (zero padding: cropped). Per
    dim, the padded position's source index is the padding of arange(n)."""
    g = grad_padded
    for axis, (n, b, a) in enumerate(zip(geom.in_size, geom.pad_before, geom.pad_after), 2):
        if geom.pad_mode == "zeros":
            g = g[(slice(None),) * axis + (slice(b, b + n),)]
            continue
        source = np.pad(np.arange(n), (b, a), mode=_NP_PAD[geom.pad_mode])
        out = np.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1:], dtype=g.dtype)
        np.add.at(np.moveaxis(out, axis, 0), source, np.moveaxis(g, axis, 0))
        g = out
    return np.ascontiguousarray(g)


def _columns(x, geom):
    """im2col: (N, G, P, C/G * prod(kernel)) windows of the padded input."""
    nd, G = geom.nd, geom.groups
    xp = _padded(x, geom)
    eff = [(k - 1) * d + 1 for k, d in zip(geom.kernel, geom.dilation)]
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nd)))
    # positions subsampled by the stride, taps by the dilation
    win = win[(slice(None), slice(None))
              + tuple(slice(None, o * s, s) for o, s in zip(geom.out_size, geom.stride))
              + tuple(slice(None, None, d) for d in geom.dilation)]
    N, C = xp.shape[:2]
    win = win.reshape((N, G, C // G) + win.shape[2:])           # N G Cg O... k...
    order = (0, 1) + tuple(range(3, 3 + nd)) + (2,) + tuple(range(3 + nd, 3 + 2 * nd))
    P, R = int(np.prod(geom.out_size)), C // G * int(np.prod(geom.kernel))
    return win.transpose(order).reshape(N, G, P, R)           # N G P (Cg k...)


def _grouped_weight(weight, geom):
    G = geom.groups
    return np.asarray(weight, dtype=geom.dtype).reshape(G, geom.out_channels // G, -1)


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, algorithm,
          padding_mode="zeros"):
    geom = conv_geometry(nd, x, weight, bias, stride, padding, dilation, groups,
                         padding_mode=padding_mode)
    conv_algorithm(algorithm, geom)  # same argument checks as the kernels
    cols = _columns(x, geom)                                   # N G P R
    w = _grouped_weight(weight, geom)                          # G Kg R
    out = cols @ w.transpose(0, 2, 1)                          # N G P Kg
    out = out.transpose(0, 1, 3, 2).reshape(geom.out_shape)
    if bias is not None:
        out = out + np.asarray(bias, dtype=geom.dtype).reshape((-1,) + (1,) * nd)
    return np.ascontiguousarray(out, dtype=geom.dtype)


def _col2im(grad_cols, geom):
    """Adjoint of _columns: sum each tap's column back onto the padded input,
    then fold that onto the input (_fold)."""
    nd, N = geom.nd, geom.batch
    padded = [n + b + a for n, b, a in zip(geom.in_size, geom.pad_before, geom.pad_after)]
    gx = np.zeros((N, geom.in_channels, *padded), dtype=geom.dtype)
    g = grad_cols.reshape((N, geom.groups) + tuple(geom.out_size)
                          + (geom.in_channels // geom.groups,) + tuple(geom.kernel))
    # -> N C O... k...
    g = np.moveaxis(g, 2 + nd, 2).reshape((N, geom.in_channels) + tuple(geom.out_size)
                                          + tuple(geom.kernel))
    for tap in itertools.product(*(range(k) for k in geom.kernel)):
        region = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                       for t, d, o, s in zip(tap, geom.dilation, geom.out_size, geom.stride))
        gx[(slice(None), slice(None)) + region] += g[(Ellipsis,) + tap]
    return _fold(gx, geom)


def _conv_backward(nd, grad_out, x, weight, stride, padding, dilation, groups, need,
                   algorithm, padding_mode="zeros"):
    geom = conv_geometry(nd, x, weight, None, stride, padding, dilation, groups,
                         grad_out=grad_out, padding_mode=padding_mode)
    need = conv_need(need)
    conv_algorithm(algorithm, geom)  # same argument checks as the kernels
    G, N = geom.groups, geom.batch
    P = int(np.prod(geom.out_size))
    go = np.asarray(grad_out, dtype=geom.dtype).reshape(N, G, geom.out_channels // G, P)
    w = _grouped_weight(weight, geom)                          # G Kg R
    grad_x = grad_w = grad_b = None
    if "x" in need:
        grad_x = _col2im(go.transpose(0, 1, 3, 2) @ w, geom)   # N G P R -> input
    if "weight" in need:
        cols = _columns(x, geom)                               # N G P R
        gw = np.zeros_like(w)
        for n in range(N):  # a loop over images keeps the temporaries small
            gw += go[n] @ cols[n]
        grad_w = gw.reshape(weight.shape)
    if "bias" in need:
        axes = (0,) + tuple(range(2, 2 + nd))
        grad_b = np.asarray(grad_out, dtype=geom.dtype).sum(axis=axes, dtype=np.float64)
        grad_b = grad_b.astype(geom.dtype)
    return grad_x, grad_w, grad_b


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", padding_mode="zeros"):
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, algorithm,
                 padding_mode)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", padding_mode="zeros"):
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, algorithm,
                 padding_mode)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", padding_mode="zeros"):
    return _conv(3, x, weight, bias, stride, padding, dilation, groups, algorithm,
                 padding_mode)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto", padding_mode="zeros"):
    return _conv_backward(1, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm, padding_mode)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto", padding_mode="zeros"):
    return _conv_backward(2, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm, padding_mode)


def conv3d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto", padding_mode="zeros"):
    return _conv_backward(3, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm, padding_mode)


# ------------------------------------------------- transposed convolution

def _transpose_taps(tg):
    """Per kernel tap: the slice of the full (uncropped) transposed output that
    input position i lands on, i*stride + tap*dilation, for every i."""
    conv = tg.conv
    in_size = conv.out_size
    for tap in itertools.product(*(range(k) for k in conv.kernel)):
        yield tap, tuple(slice(t * d, t * d + (n - 1) * s + 1, s)
                         for t, d, n, s in zip(tap, conv.dilation, in_size, conv.stride))


def _full_transpose_size(tg):
    """The transposed output before cropping: (in - 1)*s + d*(k - 1) + 1 plus
    output_padding, per dim (output_padding can pass what any tap reaches)."""
    conv = tg.conv
    return tuple(max((n - 1) * s + d * (k - 1) + 1, b + o)
                 for n, s, d, k, b, o in zip(conv.out_size, conv.stride, conv.dilation,
                                             conv.kernel, conv.pad_before, conv.in_size))


def _crop(tg):
    conv = tg.conv
    return (slice(None), slice(None)) + tuple(slice(b, b + o) for b, o in
                                              zip(conv.pad_before, conv.in_size))


def _conv_transpose(nd, x, weight, bias, stride, padding, output_padding, groups, dilation,
                    algorithm):
    tg = conv_transpose_geometry(nd, x, weight, bias, stride, padding, output_padding,
                                 groups, dilation)
    conv = tg.conv
    conv_algorithm(algorithm, conv)  # same argument checks as the kernels
    G, N = groups, conv.batch
    C_in, C_out = conv.out_channels, conv.in_channels
    xg = np.asarray(x, dtype=conv.dtype).reshape((N, G, C_in // G) + tuple(conv.out_size))
    wg = np.asarray(weight, dtype=conv.dtype).reshape((G, C_in // G, C_out // G)
                                                      + tuple(conv.kernel))
    full = np.zeros((N, G, C_out // G) + _full_transpose_size(tg), dtype=conv.dtype)
    for tap, region in _transpose_taps(tg):
        # y[n, g, o, i*s + t*d] += sum over c of x[n, g, c, i] * w[g, c, o, t]
        full[(slice(None),) * 3 + region] += np.einsum(
            "ngc...,gco->ngo...", xg, wg[(Ellipsis,) + tap])
    out = full.reshape((N, C_out) + full.shape[3:])[_crop(tg)]
    if bias is not None:
        out = out + np.asarray(bias, dtype=conv.dtype).reshape((-1,) + (1,) * nd)
    return np.ascontiguousarray(out, dtype=conv.dtype)


def _conv_transpose_backward(nd, grad_out, x, weight, stride, padding, output_padding, groups,
                             dilation, need, algorithm):
    tg = conv_transpose_geometry(nd, x, weight, None, stride, padding, output_padding,
                                 groups, dilation, grad_out=grad_out)
    conv = tg.conv
    need = conv_need(need)
    conv_algorithm(algorithm, conv)
    G, N = groups, conv.batch
    C_in, C_out = conv.out_channels, conv.in_channels
    full = np.zeros((N, C_out) + _full_transpose_size(tg), dtype=conv.dtype)
    full[_crop(tg)] = np.asarray(grad_out, dtype=conv.dtype)
    full = full.reshape((N, G, C_out // G) + full.shape[2:])
    xg = np.asarray(x, dtype=conv.dtype).reshape((N, G, C_in // G) + tuple(conv.out_size))
    wg = np.asarray(weight, dtype=conv.dtype).reshape((G, C_in // G, C_out // G)
                                                      + tuple(conv.kernel))
    grad_x = np.zeros_like(xg) if "x" in need else None
    grad_w = np.zeros_like(wg) if "weight" in need else None
    for tap, region in _transpose_taps(tg):
        g = full[(slice(None),) * 3 + region]                   # N G C_out/G in...
        if grad_x is not None:
            grad_x += np.einsum("ngo...,gco->ngc...", g, wg[(Ellipsis,) + tap])
        if grad_w is not None:
            spatial = math.prod(conv.out_size)
            grad_w[(Ellipsis,) + tap] = np.einsum("ngcs,ngos->gco",
                                                  xg.reshape(xg.shape[:3] + (spatial,)),
                                                  g.reshape(g.shape[:3] + (spatial,)))
    if grad_x is not None:
        grad_x = np.ascontiguousarray(grad_x.reshape(np.shape(x)))
    if grad_w is not None:
        grad_w = np.ascontiguousarray(grad_w.reshape(np.shape(weight)))
    grad_b = None
    if "bias" in need:
        axes = (0,) + tuple(range(2, 2 + nd))
        grad_b = np.asarray(grad_out, dtype=conv.dtype).sum(axis=axes, dtype=np.float64)
        grad_b = grad_b.astype(conv.dtype)
    return grad_x, grad_w, grad_b


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return _conv_transpose(1, x, weight, bias, stride, padding, output_padding, groups,
                           dilation, algorithm)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return _conv_transpose(2, x, weight, bias, stride, padding, output_padding, groups,
                           dilation, algorithm)


def conv_transpose3d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto"):
    return _conv_transpose(3, x, weight, bias, stride, padding, output_padding, groups,
                           dilation, algorithm)


def conv_transpose1d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto"):
    return _conv_transpose_backward(1, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm)


def conv_transpose2d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto"):
    return _conv_transpose_backward(2, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm)


def conv_transpose3d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto"):
    return _conv_transpose_backward(3, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm)


# ---------------------------------------------------------------- pooling

def _volume(shape) -> int:
    return math.prod(int(n) for n in shape)  # Python ints: no int64 wrap-around


def _windows(a, geom, fill):
    """(..., *out_size, *kernel) pooling windows of a (whose last nd axes are
    the spatial ones) padded with `fill`, including ceil_mode's overhang."""
    nd = geom.nd
    pads = [(0, 0)] * (a.ndim - nd)
    for n, o, k, s, p, d in zip(geom.in_size, geom.out_size, geom.kernel, geom.stride,
                                geom.padding, geom.dilation):
        extent = (o - 1) * s + (k - 1) * d + 1
        pads.append((p, max(extent - n - p, 0)))
    ap = np.pad(a, pads, constant_values=fill)
    eff = [(k - 1) * d + 1 for k, d in zip(geom.kernel, geom.dilation)]
    win = sliding_window_view(ap, eff, axis=tuple(range(a.ndim - nd, a.ndim)))
    lead = (slice(None),) * (a.ndim - nd)
    return win[lead + tuple(slice(None, o * s, s) for o, s in zip(geom.out_size, geom.stride))
               + tuple(slice(None, None, d) for d in geom.dilation)]


def _first_inside(geom):
    """Flat plane index of each window's first tap inside the input (torch's
    index for a window whose maximum is -inf), clamped into the plane."""
    flat = np.zeros(geom.out_size, dtype=np.int64)
    for axis, (n, o, s, p, d) in enumerate(zip(geom.in_size, geom.out_size, geom.stride,
                                               geom.padding, geom.dilation)):
        start = np.arange(o) * s - p
        start = np.where(start < 0, start + (-start + d - 1) // d * d, start)
        shape = [1] * geom.nd
        shape[axis] = o
        flat = flat * n + np.minimum(start, n - 1).reshape(shape)
    return flat


def _torch_argmax(values, taps):
    """Index along the last axis that torch's max scan ends on: the last NaN
    if there is one, else the first maximum."""
    isnan = np.isnan(taps)
    last_nan = taps.shape[-1] - 1 - np.argmax(isnan[..., ::-1], axis=-1)
    first_max = np.argmax(taps == values[..., None], axis=-1)
    return np.where(isnan.any(axis=-1), last_nan, first_max)


def _max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    geom = pool_geometry(nd, "max", x, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = V.flag(return_indices, "return_indices")
    x = np.asarray(x, dtype=geom.dtype)
    taps = _windows(x, geom, -np.inf).reshape(geom.out_shape + (_volume(geom.kernel),))
    out = taps.max(axis=-1)                       # NaN propagates
    if not return_indices:
        return out
    plane = np.arange(int(np.prod(geom.in_size)), dtype=np.int64).reshape(geom.in_size)
    positions = _windows(plane, geom, -1).reshape(tuple(geom.out_size) + (-1,))
    tap = _torch_argmax(out, taps)
    indices = np.take_along_axis(np.broadcast_to(positions, taps.shape), tap[..., None],
                                 axis=-1)[..., 0]
    indices = np.where(out == -np.inf, _first_inside(geom), indices)
    return out, indices


def _scatter_max(grad_out, indices, input_shape, dtype):
    N, C = input_shape[:2]
    outputs = _volume(np.shape(grad_out)[2:])
    grad_x = np.zeros((N * C, _volume(input_shape[2:])), dtype=dtype)
    g = np.asarray(grad_out, dtype=dtype).reshape(N * C, outputs)
    rows = np.arange(N * C)[:, None]
    np.add.at(grad_x, (rows, np.asarray(indices).reshape(N * C, outputs)), g)
    return grad_x.reshape(input_shape)


def _max_pool_backward(nd, grad_out, indices, input_shape):
    op = f"max_pool{nd}d_backward"
    dtype, input_shape = max_pool_indices(grad_out, indices, input_shape, nd, op)
    return _scatter_max(grad_out, indices, input_shape, dtype)


def _avg_divisor(geom, count_include_pad, divisor_override):
    """Each window's divisor, by pooling an indicator of what counts: input
    elements, plus the explicit padding with count_include_pad (never
    ceil_mode's overhang)."""
    if divisor_override is not None:
        return np.full(geom.out_size, float(divisor_override))
    counted = np.ones(geom.in_size)
    if count_include_pad and geom.counts_padding:   # "same" padding never counts
        counted = np.pad(counted, list(zip(geom.padding, geom.pad_after)), constant_values=1)
        geom = geom._replace(in_size=counted.shape, padding=(0,) * geom.nd)
    counts = _windows(counted, geom, 0).reshape(tuple(geom.out_size) + (-1,)).sum(axis=-1)
    return counts


def _avg_pool(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    geom = pool_geometry(nd, "avg", x, kernel_size, stride, padding, 1, ceil_mode)
    divisor = _avg_divisor(geom, V.flag(count_include_pad, "count_include_pad"),
                           divisor_override_arg(divisor_override))
    x = np.asarray(x, dtype=geom.dtype)
    sums = _windows(x, geom, 0).reshape(geom.out_shape + (_volume(geom.kernel),)).sum(axis=-1)
    # every window holds an input element (validated): its divisor is nonzero
    return (sums / divisor).astype(geom.dtype)


def _avg_pool_backward(nd, grad_out, input_shape, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override):
    op = f"avg_pool{nd}d_backward"
    V.check_array(grad_out, "grad_out")
    dtype = V.common_float_dtype(grad_out=grad_out)
    input_shape = input_shape_arg(input_shape, nd + 2, op)
    geom = pool_geometry(nd, "avg", None, kernel_size, stride, padding, 1, ceil_mode,
                         input_shape=input_shape, dtype=dtype)
    V.expect_shape(grad_out, geom.out_shape, "grad_out", f"the output shape of avg_pool{nd}d")
    divisor = _avg_divisor(geom, V.flag(count_include_pad, "count_include_pad"),
                           divisor_override_arg(divisor_override))
    share = np.asarray(grad_out, dtype=dtype) / divisor
    # every output adds its share to each tap of its window, one tap at a time
    extent = [max((o - 1) * s + k, n + p) + p for n, o, k, s, p in zip(
        geom.in_size, geom.out_size, geom.kernel, geom.stride, geom.padding)]
    grad_padded = np.zeros(geom.out_shape[:2] + tuple(extent), dtype=dtype)
    for tap in itertools.product(*(range(k) for k in geom.kernel)):
        window = tuple(slice(t, t + (o - 1) * s + 1, s)
                       for t, o, s in zip(tap, geom.out_size, geom.stride))
        grad_padded[(Ellipsis,) + window] += share
    inside = tuple(slice(p, p + n) for p, n in zip(geom.padding, geom.in_size))
    return np.ascontiguousarray(grad_padded[(Ellipsis,) + inside])


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool(3, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool1d_backward(grad_out, indices, input_shape):
    return _max_pool_backward(1, grad_out, indices, input_shape)


def max_pool2d_backward(grad_out, indices, input_shape):
    return _max_pool_backward(2, grad_out, indices, input_shape)


def max_pool3d_backward(grad_out, indices, input_shape):
    return _max_pool_backward(3, grad_out, indices, input_shape)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool3d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_pool(3, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool1d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool_backward(1, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool_backward(2, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override)


def avg_pool3d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool_backward(3, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override)


def _adaptive_cells(in_size, out_size):
    """(output cell, window slices) for torch's adaptive windows, any number
    of dims. Windows differ in size, so the loop runs over output cells (few:
    7x7 for VGG's head), each vectorised over the batch and channels."""
    windows = [adaptive_windows(n, o) for n, o in zip(in_size, out_size)]
    for cell in itertools.product(*(range(o) for o in out_size)):
        yield cell, tuple(slice(int(s[i]), int(e[i])) for (s, e), i in zip(windows, cell))


def _adaptive_avg_pool(nd, x, output_size):
    dtype, out_size = adaptive_geometry(x, output_size, f"adaptive_avg_pool{nd}d", nd)
    x = np.asarray(x, dtype=dtype)
    out = np.empty(x.shape[:2] + out_size, dtype=dtype)
    for cell, window in _adaptive_cells(x.shape[2:], out_size):
        out[(Ellipsis,) + cell] = x[(Ellipsis,) + window].mean(axis=tuple(range(2, 2 + nd)))
    return out


def _adaptive_max_pool(nd, x, output_size, return_indices):
    dtype, out_size = adaptive_geometry(x, output_size, f"adaptive_max_pool{nd}d", nd)
    return_indices = V.flag(return_indices, "return_indices")
    x = np.asarray(x, dtype=dtype)
    N, C = x.shape[:2]
    out = np.empty((N, C) + out_size, dtype=dtype)
    indices = np.empty((N, C) + out_size, dtype=np.int64)
    plane = np.arange(_volume(x.shape[2:]), dtype=np.int64).reshape(x.shape[2:])
    for cell, window in _adaptive_cells(x.shape[2:], out_size):
        taps = x[(Ellipsis,) + window].reshape(N, C, _volume(w.stop - w.start for w in window))
        out[(Ellipsis,) + cell] = taps.max(axis=-1)
        tap = _torch_argmax(out[(Ellipsis,) + cell], taps)
        indices[(Ellipsis,) + cell] = plane[window].reshape(-1)[tap]
    return (out, indices) if return_indices else out


def _adaptive_avg_pool_backward(nd, grad_out, input_shape):
    dtype, input_shape = pooled_grad(grad_out, input_shape,
                                     f"adaptive_avg_pool{nd}d_backward", nd=nd)
    grad_out = np.asarray(grad_out, dtype=dtype)
    grad_x = np.zeros(input_shape, dtype=dtype)
    for cell, window in _adaptive_cells(input_shape[2:], grad_out.shape[2:]):
        count = _volume(w.stop - w.start for w in window)
        grad_x[(Ellipsis,) + window] += (grad_out[(Ellipsis,) + cell] / count).reshape(
            input_shape[:2] + (1,) * nd)
    return grad_x


def _adaptive_max_pool_backward(nd, grad_out, indices, input_shape):
    dtype, input_shape = max_pool_indices(grad_out, indices, input_shape, nd,
                                          f"adaptive_max_pool{nd}d_backward")
    return _scatter_max(grad_out, indices, input_shape, dtype)


def adaptive_avg_pool1d(x, output_size):
    return _adaptive_avg_pool(1, x, output_size)


def adaptive_avg_pool2d(x, output_size):
    return _adaptive_avg_pool(2, x, output_size)


def adaptive_avg_pool3d(x, output_size):
    return _adaptive_avg_pool(3, x, output_size)


def adaptive_max_pool1d(x, output_size, return_indices=False):
    return _adaptive_max_pool(1, x, output_size, return_indices)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    return _adaptive_max_pool(2, x, output_size, return_indices)


def adaptive_max_pool3d(x, output_size, return_indices=False):
    return _adaptive_max_pool(3, x, output_size, return_indices)


def adaptive_avg_pool1d_backward(grad_out, input_shape):
    return _adaptive_avg_pool_backward(1, grad_out, input_shape)


def adaptive_avg_pool2d_backward(grad_out, input_shape):
    return _adaptive_avg_pool_backward(2, grad_out, input_shape)


def adaptive_avg_pool3d_backward(grad_out, input_shape):
    return _adaptive_avg_pool_backward(3, grad_out, input_shape)


def adaptive_max_pool1d_backward(grad_out, indices, input_shape):
    return _adaptive_max_pool_backward(1, grad_out, indices, input_shape)


def adaptive_max_pool2d_backward(grad_out, indices, input_shape):
    return _adaptive_max_pool_backward(2, grad_out, indices, input_shape)


def adaptive_max_pool3d_backward(grad_out, indices, input_shape):
    return _adaptive_max_pool_backward(3, grad_out, indices, input_shape)


def global_avg_pool2d(x, keepdims=False):
    dtype, _ = adaptive_geometry(x, 1, "global_avg_pool2d")
    out = np.asarray(x, dtype=dtype).mean(axis=(2, 3), keepdims=V.flag(keepdims, "keepdims"))
    return out.astype(dtype)


def global_avg_pool2d_backward(grad_out, input_shape):
    dtype, input_shape = pooled_grad(grad_out, input_shape, "global_avg_pool2d_backward",
                                     keepdims_ok=True)
    N, C, H, W = input_shape
    share = np.asarray(grad_out, dtype=dtype).reshape(N, C, 1, 1) / (H * W)
    return np.ascontiguousarray(np.broadcast_to(share, input_shape))


def global_max_pool2d(x, keepdims=False, return_indices=False):
    dtype, _ = adaptive_geometry(x, 1, "global_max_pool2d")
    keepdims = V.flag(keepdims, "keepdims")
    return_indices = V.flag(return_indices, "return_indices")
    x = np.asarray(x, dtype=dtype)
    taps = x.reshape(x.shape[:2] + (_volume(x.shape[2:]),))
    out = taps.max(axis=-1)
    indices = _torch_argmax(out, taps).astype(np.int64)
    if keepdims:
        out, indices = out[:, :, None, None], indices[:, :, None, None]
    return (out, indices) if return_indices else out


def global_max_pool2d_backward(grad_out, indices, input_shape):
    op = "global_max_pool2d_backward"
    dtype, input_shape = pooled_grad(grad_out, input_shape, op, keepdims_ok=True)
    check_indices(indices, grad_out, input_shape, op)
    return _scatter_max(grad_out, indices, input_shape, dtype)


# --------------------------------------------------- batch norm, activations

def _channel_view(a, shape):
    """A (C,) array broadcast against x of `shape` (channels on axis 1)."""
    return a.reshape((1, -1) + (1,) * (len(shape) - 2))


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    shape, training, momentum, eps, _ = batch_norm_args(x, running_mean, running_var, weight,
                                                        bias, training, momentum, eps)
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = np.asarray(x, dtype=np.float64)
    if training:
        if shape.count == 0:
            mean, var = np.zeros(x.shape[1]), np.ones(x.shape[1])
        else:
            mean = x64.mean(axis=axes)
            var = ((x64 - _channel_view(mean, x.shape)) ** 2).mean(axis=axes)
            if running_mean is not None:
                running_mean[...] = (1 - momentum) * running_mean + momentum * mean
                running_var[...] = ((1 - momentum) * running_var
                                    + momentum * var * shape.count / (shape.count - 1))
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
    y = (x64 - _channel_view(mean, x.shape)) / np.sqrt(_channel_view(var, x.shape) + eps)
    if weight is not None:
        y = y * _channel_view(np.asarray(weight, dtype=np.float64), x.shape)
    if bias is not None:
        y = y + _channel_view(np.asarray(bias, dtype=np.float64), x.shape)
    return y.astype(shape.dtype)


def batch_norm_backward(grad_out, x, weight, mean, invstd):
    shape = batch_norm_backward_args(grad_out, x, weight, mean, invstd)
    axes = (0,) + tuple(range(2, x.ndim))
    g = np.asarray(grad_out, dtype=np.float64)
    xhat = ((np.asarray(x, dtype=np.float64) - _channel_view(np.asarray(mean, np.float64),
                                                             x.shape))
            * _channel_view(np.asarray(invstd, np.float64), x.shape))
    grad_bias = g.sum(axis=axes)
    grad_weight = (g * xhat).sum(axis=axes)
    m = max(shape.count, 1)
    gamma = np.ones(x.shape[1]) if weight is None else np.asarray(weight, np.float64)
    scale = _channel_view(gamma * np.asarray(invstd, np.float64), x.shape)
    grad_x = scale * (g - _channel_view(grad_bias / m, x.shape)
                      - xhat * _channel_view(grad_weight / m, x.shape))
    return (grad_x.astype(shape.dtype), grad_weight.astype(shape.dtype),
            grad_bias.astype(shape.dtype))


def relu(x):
    dtype = elementwise_args("relu", x=x)
    x = np.asarray(x, dtype=dtype)
    return np.where(x <= 0, dtype.type(0), x)


def relu_backward(grad_out, y):
    dtype = elementwise_args("relu_backward", grad_out=grad_out, y=y)
    return np.where(np.asarray(y) <= 0, dtype.type(0), np.asarray(grad_out, dtype=dtype))



def hardtanh(x, min_val=-1.0, max_val=1.0):
    lo, hi = clamp_bounds(min_val, max_val)
    dtype = elementwise_args("hardtanh", x=x)
    x = np.asarray(x, dtype=dtype)
    # where() rather than np.clip: the bounds are compared in x's dtype, NaN kept
    lo, hi = dtype.type(lo), dtype.type(hi)
    return np.where(x <= lo, lo, np.where(x >= hi, hi, x))


def hardtanh_backward(grad_out, x, min_val=-1.0, max_val=1.0):
    lo, hi = clamp_bounds(min_val, max_val)
    dtype = elementwise_args("hardtanh_backward", grad_out=grad_out, x=x)
    x = np.asarray(x, dtype=dtype)
    inside = (x > dtype.type(lo)) & (x < dtype.type(hi))   # False at NaN
    return np.where(inside, np.asarray(grad_out, dtype=dtype), dtype.type(0))


def relu6(x):
    return hardtanh(x, 0.0, 6.0)


def relu6_backward(grad_out, x):
    return hardtanh_backward(grad_out, x, 0.0, 6.0)

# ----------------------------------------------------------- data formats

def _to_last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if a is not None and a.ndim >= 3 else a


def _with_data_format(fn, gradient_tuple):
    """fn with functional's keyword-only data_format: channels-last arrays
    (x, grad_out, indices) and input_shape are viewed channels-first, fn runs,
    and its activations (for a conv backward only grad_x) come back
    channels-last."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def op(*args, data_format="channels_first", **kwargs):
        if not V.channels_last(data_format):
            return fn(*args, **kwargs)
        bound = sig.bind(*args, **kwargs)
        for name in ("x", "grad_out", "indices"):
            a = bound.arguments.get(name)
            if isinstance(a, np.ndarray) and a.ndim >= 3:
                bound.arguments[name] = np.moveaxis(a, -1, 1)
        shape = bound.arguments.get("input_shape")
        if isinstance(shape, (tuple, list)) and len(shape) >= 3:
            bound.arguments["input_shape"] = (shape[0], shape[-1]) + tuple(shape[1:-1])
        out = fn(*bound.args, **bound.kwargs)
        if gradient_tuple:
            return (_to_last(out[0]),) + tuple(out[1:])
        return tuple(map(_to_last, out)) if isinstance(out, tuple) else _to_last(out)

    op.__signature__ = sig.replace(parameters=list(sig.parameters.values()) + [
        inspect.Parameter("data_format", inspect.Parameter.KEYWORD_ONLY,
                          default="channels_first")])
    return op


for _name in [n for n in dir() if n[0] != "_" and (n.startswith(("conv", "max_pool", "avg_pool",
                                                                 "adaptive_", "global_")))]:
    globals()[_name] = _with_data_format(
        globals()[_name], _name.startswith("conv") and _name.endswith("_backward"))
del _name
