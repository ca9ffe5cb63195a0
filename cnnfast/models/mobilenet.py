"""MobileNetV2 (Sandler et al., 2018) with torchvision's layout and names:
inverted residual blocks (1x1 expansion, depthwise 3x3, linear 1x1
projection), ReLU6, `features` and `classifier` state-dict keys."""
from __future__ import annotations

import math

import numpy as np

from .. import _plan
from .._ops.inverted_residual import block_forward_last, block_plan
from ..nn import (
    AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, ReLU6, Sequential,
)
from ..nn.container import Chain, set_data_format
from ..nn.fuse import FusedConv2d, fuse_tree
from ..nn.module import Module
from ..nn.train_layout import ChannelsLastTraining
from ._common import Transfer, check_model_args, load_weights, torchvision_init

# torchvision's table: expansion t, output channels c, repeats n, first stride s
INVERTED_RESIDUAL_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def _make_divisible(v, divisor, min_value=None):
    """torchvision's rounding of a channel count to a multiple of divisor
    (at least min_value, default divisor), never more than 10% below v."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn_relu6(in_channels, out_channels, kernel_size=3, stride=1, groups=1,
                  dtype=np.float32):
    """torchvision's Conv2dNormActivation with ReLU6: Conv2d (no bias, "same"
    padding for odd kernels) -> BatchNorm2d -> ReLU6, keys "0", "1"."""
    return Sequential(Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                             padding=(kernel_size - 1) // 2, groups=groups, bias=False,
                             dtype=dtype),
                      BatchNorm2d(out_channels, dtype=dtype), ReLU6())


class InvertedResidual(Module):
    """1x1 expansion to inp * expand_ratio channels (left out when the ratio is
    1), depthwise 3x3 carrying the stride, each with BN and ReLU6, then a
    linear 1x1 projection with BN; x is added when the shape is kept
    (stride 1, inp == oup). torchvision's keys: `conv.0.0.weight`, ..."""

    def __init__(self, inp, oup, stride, expand_ratio, dtype=np.float32):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        hidden = int(round(inp * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        layers = [conv_bn_relu6(inp, hidden, 1, dtype=dtype)] if expand_ratio != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden, dtype=dtype),
                   Conv2d(hidden, oup, 1, bias=False, dtype=dtype),
                   BatchNorm2d(oup, dtype=dtype)]
        self.conv = Sequential(*layers)
        self.out_channels = oup

    def forward(self, x):
        y = self.conv(x)
        if self.use_res_connect:
            y += x   # y is the last BatchNorm's fresh output
        return y

    def backward(self, grad_out):
        g = self.conv.backward(grad_out)
        if self.use_res_connect:
            g = g + grad_out
        return g

    def _fused(self):
        """Module.fuse()'s replacement: the stages fused as in any chain, then
        (with an expansion, or a residual the projection adds in its store
        pass) a FusedInvertedResidual running them."""
        self.conv = fuse_tree(self.conv)
        if isinstance(self.conv[-2], FusedConv2d):
            return FusedInvertedResidual(self)
        return self


class FusedInvertedResidual(Module):
    """An InvertedResidual after Module.fuse(): conv[:-2] then the fused
    projection conv[-2](., residual=x when the block adds x; conv[-1] is
    its folded BatchNorm). Channels-last, the convolutions run as one
    driver call when the plan says so
    (cnnfast._inverted_residual: the expanded activation stays in cache).
    Inference only."""

    def __init__(self, block):
        super().__init__()
        self.conv = block.conv
        self.use_res_connect = block.use_res_connect
        self.training = False
        self._plans = {}   # (shape, dtype, planning state) -> block plan or None

    def _block_layers(self):
        """(expand, depthwise, project) FusedConv2d of a channels-last block
        (expand None without an expansion), else None."""
        c = self.conv
        if len(c) == 4:
            layers = (c[0][0], c[1][0], c[2])
        elif len(c) == 3:
            layers = (None, c[0][0], c[1])
        else:
            return None
        ok = all(isinstance(m, FusedConv2d) and m.data_format == "channels_last"
                 for m in layers if m is not None)
        return layers if ok else None

    def _block_plan(self, x):
        layers = self._block_layers()
        if layers is None or not isinstance(x, np.ndarray):
            return None, None
        key = (x.shape, x.dtype.str, _plan.planning_state())
        if key not in self._plans:
            if len(self._plans) >= 16:   # a model called on many shapes
                self._plans.clear()
            self._plans[key] = block_plan(x, *layers, self.use_res_connect)
        return layers, self._plans[key]

    def forward(self, x):
        layers, plan = self._block_plan(x)
        if plan is not None:
            return block_forward_last(x, *layers, self.use_res_connect, plan)
        return self._layers_forward(x)

    def _layers_forward(self, x):
        """The block layer by layer (explain_model's rule traces this too)."""
        *stages, project, _ = self.conv.children()
        y = x
        for m in stages:
            y = m(y)
        return project(y, residual=x if self.use_res_connect else None)

    def backward(self, grad_out):
        return self.conv.backward(grad_out)   # raises: inference only

    def _explain(self, tracer, x):
        from .._explain_layers import inverted_residual_rule
        return inverted_residual_rule(tracer, self, x)


class MobileNetV2(ChannelsLastTraining, Transfer, Chain):
    """torchvision's MobileNetV2: `features` (a stem conv, 17 inverted
    residual blocks, a 1x1 conv to last_channel), global average pool,
    `classifier` (Dropout, Linear). Base and head (see Transfer): the head
    is `classifier[1]`; forward_features(x) returns its (N, last_channel)
    input (1280 for width_mult <= 1). With `weights`, the random
    initialisation is skipped."""

    head_name = "classifier.1"

    def __init__(self, num_classes=1000, in_channels=3, width_mult=1.0, dropout=0.2,
                 round_nearest=8, dtype=np.float32, *, weights=None,
                 data_format="channels_first"):
        super().__init__()
        check_model_args(num_classes, in_channels)
        if (isinstance(width_mult, bool) or not isinstance(width_mult, (int, float))
                or not math.isfinite(width_mult) or width_mult <= 0):
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
        channels = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [conv_bn_relu6(in_channels, channels, 3, 2, dtype=dtype)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t,
                                                 dtype=dtype))
                channels = out
        features.append(conv_bn_relu6(channels, self.last_channel, 1, dtype=dtype))
        self.features = Sequential(*features)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.flatten = Flatten()
        self.classifier = Sequential(Dropout(dropout),
                                     Linear(self.last_channel, num_classes, dtype=dtype))
        set_data_format(self, data_format)
        if weights is not None:
            load_weights(self, weights)
            return
        torchvision_init(self, conv="kaiming_fan_out", linear="normal")

    def forward_features(self, x):
        x = self.flatten(self.avgpool(self.features(x)))
        return self.classifier[0](x)


def mobilenet_v2(num_classes=1000, in_channels=3, *, width_mult=1.0, dropout=0.2,
                 dtype=np.float32, weights=None, data_format="channels_first"):
    """MobileNetV2; `width_mult` scales every layer's channels (rounded to
    multiples of 8, as torchvision). `weights`: a weights file (.npz,
    .safetensors, torchvision's .pth, e.g. mobilenet_v2-b0353104.pth or
    mobilenet_v2-7ebf99e0.pth); `data_format`: "channels_last" for
    (N, H, W, C) inputs."""
    return MobileNetV2(num_classes, in_channels, width_mult, dropout, dtype=dtype,
                       weights=weights, data_format=data_format)
