"""conv_transpose{1,2,3}d and their backward: a transposed convolution is
the input gradient of the convolution mapping its output back to x
(conv_validation.TransposeGeometry), so it runs that convolution's passes
(conv_passes), channels-last on the NHWC kernels where the plan puts them."""
from __future__ import annotations

import numpy as np

from .. import _nhwc
from .. import _nhwc_backward
from .. import _plan as P
from .. import _validation as V
from .conv_passes import (
    _bias_array, _bias_grad, _merge_first, _run_forward, _run_input_grad, _run_weight_grad,
)
from .conv_validation import conv_algorithm, conv_need, conv_transpose_geometry
from .data_format import _first_view, _shape_last, _to_first, _to_last
from .pointwise import (
    _channel_sums, _pixel_rows, _pointwise_rows, _pointwise_transpose_backward_last,
)


def _conv_transpose_forward_last(nd, x, weight, bias, stride, padding, output_padding, groups,
                                 dilation, algorithm):
    """Channels-last conv_transpose: the conv's input gradient on the NHWC
    kernels (bias added in their store) where the plan runs it there, a
    GEMM over pixel rows for a stride-1 1x1, else the channels-first call
    between layout copies (also for a NaN/inf weight)."""
    tg = conv_transpose_geometry(nd, _first_view(x), weight, bias, stride, padding,
                                 output_padding, groups, dilation)
    conv = tg.conv
    chosen = conv_algorithm(algorithm, conv)
    if P.conv_channels_last_native(conv, chosen, transposed=True):
        # y (pixels, C_out) = x (pixels, C_in) @ w (C_in, C_out) + bias
        return _pointwise_rows(_pixel_rows(x, conv.dtype),
                               weight.reshape(conv.out_channels, conv.in_channels), False,
                               _bias_array(bias, conv.dtype), _shape_last(tg.out_shape),
                               P.conv_threads(P.conv_macs(conv)))
    p = P.plan_conv(conv, chosen, ("x",), channels_last=True).passes["x"]
    if p.layout == "channels_last":
        out = _nhwc_backward.run_input_grad(p.kernel, p.config, conv, x, weight, bias)
        if out is not None:
            return out
    return _to_last(_conv_transpose_forward(nd, _to_first(x), weight, bias, stride, padding,
                                            output_padding, groups, dilation, algorithm))


def _conv_transpose_backward_last(nd, grad_out, x, weight, stride, padding, output_padding,
                                  groups, dilation, need, algorithm):
    """Channels-last conv_transpose gradients: the conv's forward (wrt x) and
    weight gradient (grad_out as its input, x as its output gradient) on the
    NHWC kernels where the plan runs them there, channel sums for the bias;
    the rest on the channels-first call between layout copies."""
    tg = conv_transpose_geometry(nd, _first_view(x), weight, None, stride, padding,
                                 output_padding, groups, dilation,
                                 grad_out=_first_view(grad_out))
    conv = tg.conv
    need = conv_need(need)
    chosen = conv_algorithm(algorithm, conv)
    if P.conv_channels_last_native(conv, chosen, transposed=True):
        return _pointwise_transpose_backward_last(conv, grad_out, x, weight, need)
    wanted = [p for p, g in (("forward", "x"), ("weight", "weight")) if g in need]
    passes = P.plan_conv(conv, chosen, wanted, channels_last=True).passes
    grad = dict.fromkeys(("x", "weight", "bias"))
    if "x" in need and passes["forward"].layout == "channels_last":
        grad["x"] = _nhwc.forward_pass(passes["forward"].kernel, passes["forward"].config,
                                       conv, grad_out, weight, None)
    if "weight" in need and passes["weight"].layout == "channels_last":
        grad["weight"] = _nhwc_backward.run_weight_grad(passes["weight"].kernel,
                                                        passes["weight"].config, conv, x,
                                                        grad_out)
    if "bias" in need:
        grad["bias"] = _channel_sums(_pixel_rows(grad_out, conv.dtype))
    rest = tuple(g for g in need if grad[g] is None)
    if rest:   # grad_out is read only by the weight gradient and the x gradient
        first = _conv_transpose_backward(
            nd, _to_first(grad_out), _to_first(x) if "weight" in rest else _first_view(x),
            weight, stride, padding, output_padding, groups, dilation, rest, algorithm)
        _merge_first(grad, rest, first)
    return grad["x"], grad["weight"], grad["bias"]


def _conv_transpose_forward(nd, x, weight, bias, stride, padding, output_padding, groups,
                            dilation, algorithm, data_format="channels_first"):
    """conv_transpose(x, w) is the input gradient of the conv that maps its
    output back to x (TransposeGeometry): the same plan entry and driver."""
    if V.channels_last(data_format):
        return _conv_transpose_forward_last(nd, x, weight, bias, stride, padding,
                                            output_padding, groups, dilation, algorithm)
    tg = conv_transpose_geometry(nd, x, weight, bias, stride, padding, output_padding, groups,
                                 dilation)
    conv = tg.conv
    plan = P.plan_conv(conv, conv_algorithm(algorithm, conv), ("x",))
    x5 = V.kernel_array(x, conv.dtype).reshape(conv.out5_shape)
    return _run_input_grad(conv, plan.passes["x"], x5, weight,
                           bias=None if bias is None else V.kernel_array(bias, conv.dtype))


def _conv_transpose_backward(nd, grad_out, x, weight, stride, padding, output_padding, groups,
                             dilation, need, algorithm, data_format="channels_first"):
    """Gradients of conv_transpose: wrt x, the conv's forward of grad_out; wrt
    the weight, the conv's weight gradient with grad_out as its input and x as
    its output gradient; wrt the bias, grad_out's channel sums."""
    if V.channels_last(data_format):
        return _conv_transpose_backward_last(nd, grad_out, x, weight, stride, padding,
                                             output_padding, groups, dilation, need, algorithm)
    tg = conv_transpose_geometry(nd, x, weight, None, stride, padding, output_padding, groups,
                                 dilation, grad_out=grad_out)
    conv = tg.conv
    need = conv_need(need)
    wanted = [p for p, g in (("forward", "x"), ("weight", "weight")) if g in need]
    plan = P.plan_conv(conv, conv_algorithm(algorithm, conv), wanted)
    grad_x = grad_w = grad_b = None
    if "x" in need:
        grad_x = _run_forward(conv, plan.passes["forward"], grad_out, weight,
                              np.empty(0, conv.dtype))
    if "weight" in need:
        x5 = V.kernel_array(x, conv.dtype).reshape(conv.out5_shape)
        grad_w = _run_weight_grad(conv, plan.passes["weight"], x5, grad_out, weight.shape)
    if "bias" in need:
        go5 = V.kernel_array(grad_out, conv.dtype).reshape(conv.x5_shape)
        grad_b = _bias_grad(go5, conv.in_channels, P.conv_threads(P.conv_macs(conv)),
                            conv.dtype)
    return grad_x, grad_w, grad_b


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto", data_format="channels_first"):
    """1-D transposed convolution of x (N, C_in, L) with weight (C_in, C_out // groups, k),
    as torch.nn.functional.conv_transpose1d; padding also takes (before, after) pairs."""
    return _conv_transpose_forward(1, x, weight, bias, stride, padding, output_padding, groups,
                                   dilation, algorithm, data_format)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto", data_format="channels_first"):
    """2-D transposed convolution of x (N, C_in, H, W) with weight (C_in, C_out // groups,
    kH, kW): the adjoint of conv2d, as torch.nn.functional.conv_transpose2d (note groups
    before dilation); padding also takes (before, after) pairs per dim (ONNX pads)."""
    return _conv_transpose_forward(2, x, weight, bias, stride, padding, output_padding, groups,
                                   dilation, algorithm, data_format)


def conv_transpose3d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto", data_format="channels_first"):
    """3-D transposed convolution of x (N, C_in, D, H, W) with weight
    (C_in, C_out // groups, kD, kH, kW)."""
    return _conv_transpose_forward(3, x, weight, bias, stride, padding, output_padding, groups,
                                   dilation, algorithm, data_format)


def conv_transpose1d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto", data_format="channels_first"):
    """Gradients of conv_transpose1d -> (grad_x, grad_weight, grad_bias); None where not
    in `need`."""
    return _conv_transpose_backward(1, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm, data_format)


def conv_transpose2d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto", data_format="channels_first"):
    """Gradients of conv_transpose2d -> (grad_x, grad_weight, grad_bias); None where not
    in `need`."""
    return _conv_transpose_backward(2, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm, data_format)


def conv_transpose3d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need=("x", "weight", "bias"),
                              algorithm="auto", data_format="channels_first"):
    """Gradients of conv_transpose3d -> (grad_x, grad_weight, grad_bias); None where not
    in `need`."""
    return _conv_transpose_backward(3, grad_out, x, weight, stride, padding, output_padding,
                                    groups, dilation, need, algorithm, data_format)
