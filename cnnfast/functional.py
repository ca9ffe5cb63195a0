"""Public ops: validate (cnnfast._validation), allocate, pick the algorithm,
call a kernel. No arithmetic on data happens here."""
from __future__ import annotations

import numpy as np

from . import _conv
from . import _validation as V
from ._threads import blas_pinned, get_num_threads

__all__ = [
    "conv1d", "conv2d", "conv3d",
    "conv1d_backward", "conv2d_backward", "conv3d_backward",
]


# ------------------------------------------------------------ convolution

def choose_conv_algorithm(geom: V.ConvGeometry, gradient: str = "forward") -> str:
    """The `algorithm="auto"` rule for the forward pass or one gradient
    ("forward", "x" or "weight"), fitted to single-thread measurements on
    AVX-512 (bench/, python -m cnnfast.bench):

    * a kernel of all ones is a plain GEMM over channels: "1x1";
    * forward: "direct" when a group has few output channels (2..48) and rows
      of at least 8 outputs: GEMMs with M <= 48 run far below peak while the
      direct kernel keeps 8 accumulator chains busy (LeNet c2: 0.5 vs 0.8 ms);
    * input gradient, stride 1: the same with the roles of C and K swapped
      (it runs the forward kernel on grad_out), also for depthwise layers;
    * weight gradient: im2col's GEMM reduces over the batch at near-peak speed
      and wins on every measured shape;
    * shapes beyond BLAS's 32-bit sizes: "direct"; otherwise "im2col".
    """
    if not V.fits_blas(geom):
        return "direct"
    if geom.is_pointwise:
        return "1x1"
    k_per_group = geom.out_channels // geom.groups
    c_per_group = geom.in_channels // geom.groups
    if gradient == "forward":
        if 2 <= k_per_group <= 48 and geom.out_size[-1] >= 8:
            return "direct"
    elif gradient == "x":
        depthwise = c_per_group == 1 and k_per_group == 1
        if (all(s == 1 for s in geom.stride) and geom.in_size[-1] >= 8
                and k_per_group <= 64 and (8 <= c_per_group <= 48 or depthwise)):
            return "direct"
    return "im2col"


# Both GEMM algorithms share one driver, which reads a 1x1 stride-1 unpadded
# input in place (no column copy) and builds column tiles otherwise.
_KERNEL_OF = {"direct": "direct", "im2col": "gemm", "1x1": "gemm"}


def _conv_method(algorithm, geom, gradient="forward"):
    algorithm = V.conv_algorithm(algorithm, geom)
    return choose_conv_algorithm(geom, gradient) if algorithm == "auto" else algorithm


def _conv_forward(nd, x, weight, bias, stride, padding, dilation, groups, algorithm):
    geom = V.conv_geometry(nd, x, weight, bias, stride, padding, dilation, groups)
    method = _conv_method(algorithm, geom)
    x5 = V.kernel_array(x, geom.dtype).reshape(geom.x5_shape)
    w5 = V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape)
    b = (np.empty(0, geom.dtype) if bias is None else V.kernel_array(bias, geom.dtype))
    out = np.empty(geom.out_shape, dtype=geom.dtype)
    nthreads = get_num_threads()
    with blas_pinned:
        _conv.conv_forward(x5, w5, b, out.reshape(geom.out5_shape), *geom.kernel_args,
                           geom.groups, _KERNEL_OF[method], nthreads)
    return out


def _conv_backward(nd, grad_out, x, weight, stride, padding, dilation, groups, need,
                   algorithm):
    geom = V.conv_geometry(nd, x, weight, None, stride, padding, dilation, groups,
                           grad_out=grad_out)
    need = V.conv_need(need)
    V.conv_algorithm(algorithm, geom)
    go5 = V.kernel_array(grad_out, geom.dtype).reshape(geom.out5_shape)
    nthreads = get_num_threads()
    grad_x = grad_w = grad_b = None
    with blas_pinned:
        if "x" in need:
            w5 = V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape)
            grad_x = np.empty(x.shape, dtype=geom.dtype)
            _conv.conv_backward_input(go5, w5, grad_x.reshape(geom.x5_shape), *geom.kernel_args,
                                      geom.groups, _KERNEL_OF[_conv_method(algorithm, geom, "x")],
                                      nthreads)
        if "weight" in need:
            x5 = V.kernel_array(x, geom.dtype).reshape(geom.x5_shape)
            grad_w = np.empty(weight.shape, dtype=geom.dtype)
            _conv.conv_backward_weight(go5, x5, grad_w.reshape(geom.w5_shape), *geom.kernel_args,
                                       geom.groups,
                                       _KERNEL_OF[_conv_method(algorithm, geom, "weight")],
                                       nthreads)
        if "bias" in need:
            grad_b = np.empty(geom.out_channels, dtype=geom.dtype)
            _conv.conv_backward_bias(go5, grad_b, nthreads)
    return grad_x, grad_w, grad_b


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto"):
    """1-D convolution (cross-correlation) of x (N, C, L) with weight (K, C//groups, k)."""
    return _conv_forward(1, x, weight, bias, stride, padding, dilation, groups, algorithm)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto"):
    """2-D convolution of x (N, C, H, W) with weight (K, C//groups, kH, kW), as
    torch.nn.functional.conv2d; padding also takes "valid" and "same"."""
    return _conv_forward(2, x, weight, bias, stride, padding, dilation, groups, algorithm)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto"):
    """3-D convolution of x (N, C, D, H, W) with weight (K, C//groups, kD, kH, kW)."""
    return _conv_forward(3, x, weight, bias, stride, padding, dilation, groups, algorithm)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto"):
    """Gradients of conv1d -> (grad_x, grad_weight, grad_bias); None where not in `need`."""
    return _conv_backward(1, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto"):
    """Gradients of conv2d -> (grad_x, grad_weight, grad_bias); None where not in `need`."""
    return _conv_backward(2, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm)


def conv3d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need=("x", "weight", "bias"), algorithm="auto"):
    """Gradients of conv3d -> (grad_x, grad_weight, grad_bias); None where not in `need`."""
    return _conv_backward(3, grad_out, x, weight, stride, padding, dilation, groups, need,
                          algorithm)
