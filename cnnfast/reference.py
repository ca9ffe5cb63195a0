"""Pure-NumPy reference implementations: the test oracle and the benchmark
baseline. Same signatures and semantics as cnnfast.functional, written for
clarity the way a careful NumPy programmer would (sliding windows, one batched
matmul, a Python loop over kernel taps at most -- never over pixels)."""
from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import _validation as V


# ------------------------------------------------------------ convolution

def _padded(x, geom):
    pads = [(0, 0), (0, 0)] + list(zip(geom.pad_before, geom.pad_after))
    return np.pad(np.asarray(x, dtype=geom.dtype), pads)


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


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, algorithm):
    geom = V.conv_geometry(nd, x, weight, bias, stride, padding, dilation, groups)
    V.conv_algorithm(algorithm, geom)  # same argument checks as the kernels
    cols = _columns(x, geom)                                   # N G P R
    w = _grouped_weight(weight, geom)                          # G Kg R
    out = cols @ w.transpose(0, 2, 1)                          # N G P Kg
    out = out.transpose(0, 1, 3, 2).reshape(geom.out_shape)
    if bias is not None:
        out = out + np.asarray(bias, dtype=geom.dtype).reshape((-1,) + (1,) * nd)
    return np.ascontiguousarray(out, dtype=geom.dtype)


def _col2im(grad_cols, geom):
    """Adjoint of _columns: sum each tap's column back onto the padded input."""
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
    crop = tuple(slice(b, b + n) for b, n in zip(geom.pad_before, geom.in_size))
    return np.ascontiguousarray(gx[(slice(None), slice(None)) + crop])


def _conv_backward(nd, grad_out, x, weight, stride, padding, dilation, groups, need,
                   algorithm):
    geom = V.conv_geometry(nd, x, weight, None, stride, padding, dilation, groups,
                           grad_out=grad_out)
    need = V.conv_need(need)
    V.conv_algorithm(algorithm, geom)  # same argument checks as the kernels
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
           algorithm="auto"):
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, algorithm)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto"):
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, algorithm)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto"):
    return _conv(3, x, weight, bias, stride, padding, dilation, groups, algorithm)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto"):
    return _conv_backward(1, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto"):
    return _conv_backward(2, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm)


def conv3d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto"):
    return _conv_backward(3, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm)
