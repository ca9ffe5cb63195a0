"""Public ops: validate (cnnfast._validation), allocate, pick the algorithm,
call a kernel. No arithmetic on data happens here."""
from __future__ import annotations

import math

import numpy as np

from ._ext import _conv, _pool
from . import _validation as V
from ._threads import blas_pinned, get_num_threads

__all__ = [
    "conv1d", "conv2d", "conv3d",
    "conv1d_backward", "conv2d_backward", "conv3d_backward",
    "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool1d_backward", "max_pool2d_backward", "max_pool3d_backward",
    "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "avg_pool1d_backward", "avg_pool2d_backward", "avg_pool3d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward",
    "global_max_pool2d", "global_max_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
]


# Below these amounts of work a call runs on one thread: waking a second
# OpenMP thread costs more than it saves (like torch's grain size).
CONV_GRAIN = 1 << 21     # multiply-adds
POOL_GRAIN = 1 << 17     # input elements read (or written, for backward)


def _threads_for(work: int) -> int:
    return 1 if work < CONV_GRAIN else get_num_threads()


def _pool_threads(elements: int) -> int:
    return 1 if elements < POOL_GRAIN else get_num_threads()


# ------------------------------------------------------------ convolution

def choose_conv_algorithm(geom: V.ConvGeometry, gradient: str = "forward") -> str:
    """The `algorithm="auto"` rule for the forward pass or one gradient
    ("forward", "x" or "weight"), fitted to single-thread measurements on
    AVX-512 (bench/, python -m cnnfast.bench):

    * stride 1 with at least CHANNELS_IN_LANES output channels per group:
      "direct", whose stride-1 kernel holds output channels in the vector
      lanes and reads the input in place of im2col's column copy (VGG 3x3
      20.7 -> 18.6 ms, 1x1@14 0.56 -> 0.30 ms), once output rows are 14 or
      more wide (at 14x14 as fast as the depth-stacked GEMM, with no stacked
      copies: peak memory 1.5x instead of 2.1x input + weights + output;
      below, the stacked GEMM wins: 4x4 at 512 channels 7.8 vs 13.0 ms),
      and at any size for K <= 48 (LeNet c2 0.77
      -> 0.47 ms: M = 16 GEMMs run far below peak); with K <= 48 also for
      any stride on planes of at most SMALL_PLANE outputs in batches of 16
      or more, where the kernel tiles images (LeNet c2 0.47 -> 0.39 ms;
      stride 2, 64 x (16, 14, 14) -> 32: 0.75 -> 0.50 ms);
    * input gradient: the same with the roles of C and K swapped (it runs
      the forward kernel on grad_out), from 100 input positions (14x14 wins,
      8x8 loses);
    * fewer channels: a 1x1 kernel is a plain GEMM over channels ("1x1");
      "direct" (pixels in the lanes) when a group has 2..11 output channels
      and rows of at least 8 outputs; for the input gradient with stride 1
      and 8..11 input channels, or depthwise;
    * weight gradient: im2col's GEMM reduces over the batch at near-peak speed
      and wins on every measured shape;
    * shapes beyond BLAS's 32-bit sizes: "direct"; otherwise "im2col".
    """
    if not V.fits_blas(geom):
        return "direct"
    k_per_group = geom.out_channels // geom.groups
    c_per_group = geom.in_channels // geom.groups
    stride_1 = all(s == 1 for s in geom.stride)
    if gradient == "forward" and k_per_group >= CHANNELS_IN_LANES and (
            (stride_1 and (k_per_group <= 48 or geom.out_size[-1] >= 14))
            or (k_per_group <= 48 and geom.batch >= 16
                and math.prod(geom.out_size) <= SMALL_PLANE)):
        return "direct"
    if gradient == "x" and stride_1 and c_per_group >= CHANNELS_IN_LANES and (
            math.prod(geom.in_size) >= 100):
        return "direct"
    if geom.is_pointwise:
        return "1x1"
    if gradient == "forward":
        if 2 <= k_per_group < CHANNELS_IN_LANES and geom.out_size[-1] >= 8:
            return "direct"
    elif gradient == "x":
        depthwise = c_per_group == 1 and k_per_group == 1
        if (stride_1 and geom.in_size[-1] >= 8 and k_per_group <= 64
                and (8 <= c_per_group < CHANNELS_IN_LANES or depthwise)):
            return "direct"
    return "im2col"


# Both GEMM algorithms share one driver, which reads a 1x1 stride-1 unpadded
# input in place (no column copy) and builds column tiles otherwise.
_KERNEL_OF = {"direct": "direct", "im2col": "gemm", "1x1": "gemm"}


def _conv_method(algorithm, geom, gradient="forward"):
    algorithm = V.conv_algorithm(algorithm, geom)
    return choose_conv_algorithm(geom, gradient) if algorithm == "auto" else algorithm


def _conv_macs(geom):
    return (geom.batch * geom.out_channels * math.prod(geom.out_size)
            * geom.in_channels // geom.groups * math.prod(geom.kernel))


# A kernel that covers the whole unpadded input (LeNet's conv3, a classifier
# written as a conv) has one output per image: the per-image GEMMs would have
# a single column. With `auto` it runs as a 1x1 convolution of one "image"
# whose pixels are the batch: one GEMM of width N.
_UNIT3 = ((1, 1, 1), (0, 0, 0), (1, 1, 1))   # stride, padding, dilation


def _is_full_window(geom, algorithm) -> bool:
    return (algorithm == "auto" and geom.groups == 1 and geom.batch > 1
            and tuple(geom.kernel) == tuple(geom.in_size)
            and not any(geom.pad_before) and not any(geom.pad_after)
            and all(d == 1 for d in geom.dilation)
            and max(geom.batch, geom.in_channels * math.prod(geom.kernel)) <= V.BLAS_INT_MAX)


def _batch_as_pixels(a, rows):
    """(N, rows...) -> (1, rows, 1, 1, N): C-contiguous copy, batch last."""
    n = a.shape[0]
    return np.ascontiguousarray(a.reshape(n, rows).T).reshape(1, rows, 1, 1, n)


def _pixels_as_batch(a5, shape):
    """Inverse of _batch_as_pixels: (1, rows, 1, 1, N) -> new C-contiguous `shape`."""
    return np.ascontiguousarray(a5.reshape(a5.shape[1], a5.shape[4]).T).reshape(shape)


# Images with few output positions (ResNet's last stages: 7x7, 4x4, 2x2) make
# GEMMs too narrow to run near peak. With `auto`, a 1-D/2-D batch is then
# stacked along the unused depth axis, (N, C, 1, H, W) -> (1, C, N, H, W): the
# depth-1 kernel keeps images apart and the kernels see one image whose
# column tiles span the batch. The weight-gradient and input-gradient kernels
# parallelise over images, so backward stacks only on one thread. Limits in
# output positions per image, measured (1 thread): forward wins up to 16x16
# (ResNet 3x3@14: 20.2 -> 18.7 ms) but a 1x1 layer only below 8x8, backward
# only below 8x8 (7x7: 50.7 -> 47.2 ms, 2x2: 17.2 -> 7.4 ms; 14x14 loses).
SMALL_PLANE = 256
# Channels per group from which the stride-1 direct kernel puts channels in
# the vector lanes.
CHANNELS_IN_LANES = _conv.CHANNELS_IN_LANES_MIN
SMALL_PLANE_POINTWISE_OR_BACKWARD = 64
# ...and backward stacks even with several threads at 2x2 and below, where the
# one stacked GEMM beats per-image parallelism (ResNet 2x2 layer, 2 threads:
# 13.1 -> 7.8 ms; at 4x4 the parallel per-image kernels win, 3.8 vs 4.7 ms).
TINY_PLANE = 4


def _stack_batch(geom, algorithm, nthreads, gradient="forward") -> bool:
    """Stack for this pass? Only where auto picked a GEMM: the direct kernels
    gain nothing from wider columns and lose their row blocking (LeNet c2
    forward 0.66 -> 1.39 ms)."""
    positions = math.prod(geom.out_size)
    limit = (SMALL_PLANE if gradient == "forward" and not geom.is_pointwise
             else SMALL_PLANE_POINTWISE_OR_BACKWARD)
    return (algorithm == "auto" and geom.nd <= 2 and geom.batch > 1 and positions <= limit
            and _conv_method(algorithm, geom, gradient) != "direct"
            and (gradient == "forward" or nthreads == 1 or positions <= TINY_PLANE))


def _depth_stack(a5):
    """(N, C, 1, H, W) -> new C-contiguous (1, C, N, H, W)."""
    n, c = a5.shape[:2]
    return np.ascontiguousarray(a5.transpose(1, 0, 2, 3, 4)).reshape((1, c, n) + a5.shape[3:])


def _depth_unstack(a5, shape):
    """(1, C, N, H, W) -> new C-contiguous array of `shape` (N, C, ...)."""
    c, n = a5.shape[1:3]
    return np.ascontiguousarray(a5.reshape((c, n) + a5.shape[3:]).swapaxes(0, 1)).reshape(shape)


def _conv_forward(nd, x, weight, bias, stride, padding, dilation, groups, algorithm):
    geom = V.conv_geometry(nd, x, weight, bias, stride, padding, dilation, groups)
    method = _conv_method(algorithm, geom)
    if _is_full_window(geom, algorithm):
        rows = geom.in_channels * math.prod(geom.kernel)
        x5 = _batch_as_pixels(V.kernel_array(x, geom.dtype), rows)
        w5 = V.kernel_array(weight, geom.dtype).reshape(geom.out_channels, rows, 1, 1, 1)
        b = (np.empty(0, geom.dtype) if bias is None else V.kernel_array(bias, geom.dtype))
        out5 = np.empty((1, geom.out_channels, 1, 1, geom.batch), dtype=geom.dtype)
        with blas_pinned:
            _conv.conv_forward(x5, w5, b, out5, *_UNIT3, 1, "gemm",
                               _threads_for(_conv_macs(geom)))
        return _pixels_as_batch(out5, geom.out_shape)
    x5 = V.kernel_array(x, geom.dtype).reshape(geom.x5_shape)
    w5 = V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape)
    b = (np.empty(0, geom.dtype) if bias is None else V.kernel_array(bias, geom.dtype))
    nthreads = _threads_for(_conv_macs(geom))
    stacked = _stack_batch(geom, algorithm, nthreads)
    out5 = np.empty(((1, geom.out_channels, geom.batch) + geom.out5_shape[3:]) if stacked
                    else geom.out5_shape, dtype=geom.dtype)
    with blas_pinned:
        _conv.conv_forward(_depth_stack(x5) if stacked else x5, w5, b, out5, *geom.kernel_args,
                           geom.groups, _KERNEL_OF[method], nthreads)
    return _depth_unstack(out5, geom.out_shape) if stacked else out5.reshape(geom.out_shape)


def _conv_backward(nd, grad_out, x, weight, stride, padding, dilation, groups, need,
                   algorithm):
    geom = V.conv_geometry(nd, x, weight, None, stride, padding, dilation, groups,
                           grad_out=grad_out)
    need = V.conv_need(need)
    V.conv_algorithm(algorithm, geom)
    go5 = V.kernel_array(grad_out, geom.dtype).reshape(geom.out5_shape)
    nthreads = _threads_for(_conv_macs(geom))
    grad_x = grad_w = grad_b = None
    if _is_full_window(geom, algorithm):
        return _full_window_backward(geom, go5, x, weight, need, nthreads)
    stack_x = _stack_batch(geom, algorithm, nthreads, "x")
    stack_w = _stack_batch(geom, algorithm, nthreads, "weight")
    go_stacked = _depth_stack(go5) if stack_x or stack_w else None
    with blas_pinned:
        if "x" in need:
            w5 = V.kernel_array(weight, geom.dtype).reshape(geom.w5_shape)
            gx5 = np.empty(((1, geom.in_channels, geom.batch) + geom.x5_shape[3:]) if stack_x
                           else geom.x5_shape, dtype=geom.dtype)
            _conv.conv_backward_input(go_stacked if stack_x else go5, w5, gx5, *geom.kernel_args,
                                      geom.groups, _KERNEL_OF[_conv_method(algorithm, geom, "x")],
                                      nthreads)
            grad_x = _depth_unstack(gx5, x.shape) if stack_x else gx5.reshape(x.shape)
        if "weight" in need:
            x5 = V.kernel_array(x, geom.dtype).reshape(geom.x5_shape)
            grad_w = np.empty(weight.shape, dtype=geom.dtype)
            _conv.conv_backward_weight(go_stacked if stack_w else go5,
                                       _depth_stack(x5) if stack_w else x5,
                                       grad_w.reshape(geom.w5_shape), *geom.kernel_args,
                                       geom.groups,
                                       _KERNEL_OF[_conv_method(algorithm, geom, "weight")],
                                       nthreads)
        if "bias" in need:
            grad_b = np.empty(geom.out_channels, dtype=geom.dtype)
            _conv.conv_backward_bias(go5, grad_b, nthreads)
    return grad_x, grad_w, grad_b


def _full_window_backward(geom, go5, x, weight, need, nthreads):
    """Gradients of a full-window conv through the batch-as-pixels 1x1 view."""
    rows = geom.in_channels * math.prod(geom.kernel)
    go_pix = _batch_as_pixels(go5, geom.out_channels)
    grad_x = grad_w = grad_b = None
    with blas_pinned:
        if "x" in need:
            w5 = V.kernel_array(weight, geom.dtype).reshape(geom.out_channels, rows, 1, 1, 1)
            gx5 = np.empty((1, rows, 1, 1, geom.batch), dtype=geom.dtype)
            _conv.conv_backward_input(go_pix, w5, gx5, *_UNIT3, 1, "gemm", nthreads)
            grad_x = _pixels_as_batch(gx5, x.shape)
        if "weight" in need:
            x5 = _batch_as_pixels(V.kernel_array(x, geom.dtype), rows)
            grad_w = np.empty(weight.shape, dtype=geom.dtype)
            _conv.conv_backward_weight(go_pix, x5, grad_w.reshape(geom.out_channels, rows, 1, 1, 1),
                                       *_UNIT3, 1, "gemm", nthreads)
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


# ---------------------------------------------------------------- pooling

def _max_pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    geom = V.pool_geometry(nd, "max", x, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = V.flag(return_indices, "return_indices")
    x4 = V.kernel_array(x, geom.dtype).reshape(geom.planes_shape)
    out = np.empty(geom.out_shape, dtype=geom.dtype)
    indices = np.empty(geom.out_shape, dtype=np.int64) if return_indices else None
    _pool.max_pool_forward(x4, out.reshape(geom.out_planes_shape),
                           None if indices is None else indices.reshape(geom.out_planes_shape),
                           *geom.kernel_args, _pool_threads(x4.size))
    return (out, indices) if return_indices else out


def _max_pool_backward(nd, grad_out, indices, input_shape, op):
    dtype, input_shape = V.max_pool_indices(grad_out, indices, input_shape, nd, op,
                                            check_range=False)
    return _scatter_max(grad_out, indices, input_shape, dtype, op)


def _scatter_max(grad_out, indices, input_shape, dtype, op):
    """grad_x from grad_out scattered through indices; the kernel range-checks
    every index as it uses it and reports the first bad one."""
    planes = input_shape[0] * input_shape[1]
    outputs = grad_out.size // planes if planes else 0
    grad_x = np.empty(input_shape, dtype=dtype)
    flat_indices = V.kernel_array(indices, np.int64).reshape(planes, outputs)
    bad = _pool.max_pool_backward(V.kernel_array(grad_out, dtype).reshape(planes, outputs),
                                  flat_indices,
                                  grad_x.reshape(planes, grad_x.size // planes if planes else 0),
                                  _pool_threads(grad_x.size))
    if bad >= 0:
        raise V.index_out_of_range(int(flat_indices.flat[bad]), input_shape, op)
    return grad_x


def _avg_pool(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    geom = V.pool_geometry(nd, "avg", x, kernel_size, stride, padding, 1, ceil_mode)
    divisors = V.avg_pool_divisors(geom, V.flag(count_include_pad, "count_include_pad"),
                                   V.divisor_override_arg(divisor_override))
    x4 = V.kernel_array(x, geom.dtype).reshape(geom.planes_shape)
    out = np.empty(geom.out_shape, dtype=geom.dtype)
    kernel, stride3, padding3, _ = geom.kernel_args
    _pool.avg_pool_forward(x4, out.reshape(geom.out_planes_shape), kernel, stride3, padding3,
                           tuple(divisors), _pool_threads(x4.size))
    return out


def _avg_pool_backward(nd, grad_out, input_shape, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override):
    op = f"avg_pool{nd}d_backward"
    V.check_array(grad_out, "grad_out")
    dtype = V.common_float_dtype(grad_out=grad_out)
    input_shape = V.input_shape_arg(input_shape, nd + 2, op)
    geom = V.pool_geometry(nd, "avg", None, kernel_size, stride, padding, 1, ceil_mode,
                           input_shape=input_shape, dtype=dtype)
    V.expect_shape(grad_out, geom.out_shape, "grad_out",
                   f"the output shape of avg_pool{nd}d for input_shape {input_shape}")
    divisors = V.avg_pool_divisors(geom, V.flag(count_include_pad, "count_include_pad"),
                                   V.divisor_override_arg(divisor_override))
    grad_x = np.empty(input_shape, dtype=dtype)
    kernel, stride3, padding3, _ = geom.kernel_args
    _pool.avg_pool_backward(V.kernel_array(grad_out, dtype).reshape(geom.out_planes_shape),
                            grad_x.reshape(geom.planes_shape), kernel, stride3, padding3,
                            tuple(divisors), _pool_threads(grad_x.size))
    return grad_x


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling of x (N, C, L) -> y, or (y, indices) with return_indices."""
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling of x (N, C, H, W) as torch.nn.functional.max_pool2d; indices
    are int64 flat positions inside each (H, W) plane."""
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling of x (N, C, D, H, W) -> y, or (y, indices) with return_indices."""
    return _max_pool(3, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool1d_backward(grad_out, indices, input_shape):
    """Gradient of max_pool1d wrt x: grad_out scattered (summed) through indices."""
    return _max_pool_backward(1, grad_out, indices, input_shape, "max_pool1d_backward")


def max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of max_pool2d wrt x: grad_out scattered (summed) through indices."""
    return _max_pool_backward(2, grad_out, indices, input_shape, "max_pool2d_backward")


def max_pool3d_backward(grad_out, indices, input_shape):
    """Gradient of max_pool3d wrt x: grad_out scattered (summed) through indices."""
    return _max_pool_backward(3, grad_out, indices, input_shape, "max_pool3d_backward")


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Average pooling of x (N, C, L)."""
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Average pooling of x (N, C, H, W) as torch.nn.functional.avg_pool2d."""
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool3d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Average pooling of x (N, C, D, H, W)."""
    return _avg_pool(3, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool1d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of avg_pool1d wrt x."""
    return _avg_pool_backward(1, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of avg_pool2d wrt x: each output's gradient spread evenly
    (same divisor as forward) over its window; overlaps sum."""
    return _avg_pool_backward(2, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override)


def avg_pool3d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of avg_pool3d wrt x."""
    return _avg_pool_backward(3, grad_out, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override)


def _adaptive(is_max, x, out_hw, return_indices):
    dtype = V.common_float_dtype(x=x)
    N, C, H, W = x.shape
    out = np.empty((N, C) + tuple(out_hw), dtype=dtype)   # before the (as long) windows
    hs, he = V.adaptive_windows(H, out_hw[0])
    ws, we = V.adaptive_windows(W, out_hw[1])
    indices = np.empty(out.shape, dtype=np.int64) if return_indices else None
    planes = (N * C,)
    _pool.adaptive_pool_forward(is_max, V.kernel_array(x, dtype).reshape(planes + (H, W)),
                                out.reshape(planes + tuple(out_hw)),
                                None if indices is None else indices.reshape(
                                    planes + tuple(out_hw)),
                                hs, he, ws, we, _pool_threads(x.size))
    return out, indices


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size (torch's adaptive windows:
    [floor(i*in/out), ceil((i+1)*in/out)))."""
    _, out_hw = V.adaptive_geometry(x, output_size, "adaptive_avg_pool2d")
    return _adaptive(False, x, out_hw, False)[0]


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Max pooling to a fixed output size -> y, or (y, indices)."""
    _, out_hw = V.adaptive_geometry(x, output_size, "adaptive_max_pool2d")
    return_indices = V.flag(return_indices, "return_indices")
    out, indices = _adaptive(True, x, out_hw, return_indices)
    return (out, indices) if return_indices else out


def adaptive_avg_pool2d_backward(grad_out, input_shape):
    """Gradient of adaptive_avg_pool2d wrt x; the output size is grad_out's."""
    op = "adaptive_avg_pool2d_backward"
    dtype, input_shape = V.pooled_grad(grad_out, input_shape, op)
    return _adaptive_avg_backward(grad_out, input_shape, dtype)


def _adaptive_avg_backward(grad_out, input_shape, dtype):
    N, C, H, W = input_shape
    OH, OW = (grad_out.shape[2:] if grad_out.ndim == 4 else (1, 1))
    hs, he = V.adaptive_windows(H, OH)
    ws, we = V.adaptive_windows(W, OW)
    grad_x = np.empty(input_shape, dtype=dtype)
    _pool.adaptive_avg_backward(V.kernel_array(grad_out, dtype).reshape(N * C, OH, OW),
                                grad_x.reshape(N * C, H, W), hs, he, ws, we,
                                _pool_threads(grad_x.size))
    return grad_x


def adaptive_max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of adaptive_max_pool2d wrt x: grad_out scattered through indices."""
    op = "adaptive_max_pool2d_backward"
    dtype, input_shape = V.max_pool_indices(grad_out, indices, input_shape, 2, op,
                                            check_range=False)
    return _scatter_max(grad_out, indices, input_shape, dtype, op)


def _keepdims(out, keepdims):
    return out if V.flag(keepdims, "keepdims") else out.reshape(out.shape[:2])


def global_avg_pool2d(x, keepdims=False):
    """Mean over each (H, W) plane -> (N, C), or (N, C, 1, 1) with keepdims."""
    V.adaptive_geometry(x, 1, "global_avg_pool2d")
    V.flag(keepdims, "keepdims")
    return _keepdims(_adaptive(False, x, (1, 1), False)[0], keepdims)


def global_avg_pool2d_backward(grad_out, input_shape):
    """Gradient of global_avg_pool2d; grad_out (N, C) or (N, C, 1, 1)."""
    dtype, input_shape = V.pooled_grad(grad_out, input_shape, "global_avg_pool2d_backward",
                                       keepdims_ok=True)
    return _adaptive_avg_backward(grad_out, input_shape, dtype)


def global_max_pool2d(x, keepdims=False, return_indices=False):
    """Max over each (H, W) plane -> (N, C) (or (N, C, 1, 1)), with int64 flat
    plane indices on request."""
    V.adaptive_geometry(x, 1, "global_max_pool2d")
    V.flag(keepdims, "keepdims")
    return_indices = V.flag(return_indices, "return_indices")
    out, indices = _adaptive(True, x, (1, 1), return_indices)
    if return_indices:
        return _keepdims(out, keepdims), _keepdims(indices, keepdims)
    return _keepdims(out, keepdims)


def global_max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of global_max_pool2d; grad_out and indices (N, C) or (N, C, 1, 1)."""
    op = "global_max_pool2d_backward"
    dtype, input_shape = V.pooled_grad(grad_out, input_shape, op, keepdims_ok=True)
    V.check_indices(indices, grad_out, input_shape, op, check_range=False)
    return _scatter_max(grad_out, indices, input_shape, dtype, op)
