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

def choose_conv_algorithm(geom: V.ConvGeometry) -> str:
    """The `algorithm="auto"` rule, from measurements on the benchmark shapes
    (bench/, python -m cnnfast.bench):

    * a kernel of all ones is a plain GEMM over channels: "1x1";
    * few output or input taps per group (depthwise, LeNet-sized layers:
      K/groups < 16 or C/groups * taps < 32) starve a GEMM: "direct";
    * shapes beyond BLAS's 32-bit sizes: "direct";
    * otherwise im2col + BLAS GEMM, near the machine's sgemm peak: "im2col".
    """
    if not V.fits_blas(geom):
        return "direct"
    if geom.is_pointwise:
        return "1x1"
    per_group_k = geom.out_channels // geom.groups
    rows = geom.in_channels // geom.groups * int(np.prod(geom.kernel))
    if per_group_k < 16 or rows < 32:
        return "direct"
    return "im2col"


# Both GEMM algorithms share one driver, which reads a 1x1 stride-1 unpadded
# input in place (no column copy) and builds column tiles otherwise.
_KERNEL_OF = {"direct": "direct", "im2col": "gemm", "1x1": "gemm"}


def _conv_method(algorithm, geom):
    algorithm = V.conv_algorithm(algorithm, geom)
    return choose_conv_algorithm(geom) if algorithm == "auto" else algorithm


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
    method = _conv_method(algorithm, geom)
    kernel = _KERNEL_OF[method]
    go5 = V.kernel_array(grad_out, geom.dtype).reshape(geom.out5_shape)
    nthreads = get_num_threads()
    grad_x = grad_w = grad_b = None
    with blas_pinned:
        if "x" in need:
            w5 = V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape)
            grad_x = np.empty(x.shape, dtype=geom.dtype)
            _conv.conv_backward_input(go5, w5, grad_x.reshape(geom.x5_shape), *geom.kernel_args,
                                      geom.groups, kernel, nthreads)
        if "weight" in need:
            x5 = V.kernel_array(x, geom.dtype).reshape(geom.x5_shape)
            grad_w = np.empty(weight.shape, dtype=geom.dtype)
            _conv.conv_backward_weight(go5, x5, grad_w.reshape(geom.w5_shape), *geom.kernel_args,
                                       geom.groups, kernel, nthreads)
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
