"""ResNet-18/34/50/101/152 (He et al., 2015) with torchvision's layout and names."""
from __future__ import annotations

import numpy as np

from ..nn import (
    AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential,
)
from ..nn.container import Chain, set_data_format
from ..nn.fuse import Folded, FusedConv2d, foldable, fuse_tree, input_is_scratch
from ..nn.module import Module
from ..nn.train_layout import ChannelsLastTraining
from ._common import Transfer, check_model_args, load_weights, torchvision_init


class _ResidualBlock(Module):
    """A residual block: conv-BN stages named conv1/bn1/relu1, conv2/..., the
    last one's output added to the shortcut before its ReLU:
    relu_k(bn_k(conv_k(... relu1(bn1(conv1(x))) ...)) + s(x)), s the identity
    or `downsample` (1x1 conv + BN) when the shape changes. Subclasses build
    the stages (attributes, in torchvision's order) and set _depth."""

    _depth = 0

    def _stages(self):
        """[(conv, bn, relu)] of each stage, in order."""
        return [(getattr(self, f"conv{i}"), getattr(self, f"bn{i}"), getattr(self, f"relu{i}"))
                for i in range(1, self._depth + 1)]

    def forward(self, x):
        *inner, (conv, bn, relu) = self._stages()
        out = x
        for c, b, r in inner:
            out = r(b(c(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return relu.forward_sum(bn(conv(out)), shortcut)   # relu(out + shortcut), one pass

    def backward(self, grad_out):
        *inner, (conv, bn, relu) = self._stages()
        g = relu.backward(grad_out)
        # the sum fans the gradient out to both paths; x receives both contributions
        g_main = conv.backward(bn.backward(g))
        for c, b, r in reversed(inner):
            # BN + ReLU backward in one (the ReLU's mask inside the batch norm's passes)
            g_main = c.backward(b.backward(g_main, relu=r))
        g_short = g if self.downsample is None else self.downsample.backward(g)
        g_main += g_short   # a fresh array from conv1's backward
        return g_main

    def _fused(self):
        """Module.fuse()'s replacement: one fused convolution per stage, the
        last adding the shortcut and applying its ReLU in its store pass."""
        if not all(foldable(bn) for _, bn, _ in self._stages()):
            for name, child in self.named_children():
                setattr(self, name, fuse_tree(child))
            return self
        return FusedResidualBlock(self)


class BasicBlock(_ResidualBlock):
    """Two 3x3 conv-BN stages plus a shortcut: relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))
    (ResNet-18/34)."""

    expansion = 1
    _depth = 2

    def __init__(self, inplanes, planes, stride=1, downsample=None, dtype=np.float32):
        super().__init__()
        self.conv1 = Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False,
                            dtype=dtype)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False, dtype=dtype)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        self.downsample = downsample
        self.relu2 = ReLU()   # a second instance: each keeps its own backward cache


class Bottleneck(_ResidualBlock):
    """torchvision's Bottleneck (ResNet-50/101/152, "ResNet v1.5"): 1x1 conv to
    `planes`, 3x3 conv carrying the stride, 1x1 conv to planes * 4, each with
    BN, plus the shortcut: relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))
    + s(x))."""

    expansion = 4
    _depth = 3

    def __init__(self, inplanes, planes, stride=1, downsample=None, dtype=np.float32):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = Conv2d(inplanes, planes, 1, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False,
                            dtype=dtype)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        self.relu2 = ReLU()
        self.conv3 = Conv2d(planes, out, 1, bias=False, dtype=dtype)
        self.bn3 = BatchNorm2d(out, dtype=dtype)
        self.downsample = downsample
        self.relu3 = ReLU()


class FusedResidualBlock(Module):
    """A residual block after Module.fuse(): each stage one convolution with
    its BatchNorm folded in and its ReLU in the store pass; the last one also
    adds the shortcut (the identity or the fused downsample) before its ReLU.
    Inference only. The block's attribute names are kept (bn/relu as Folded)."""

    def __init__(self, block):
        super().__init__()
        self._depth = block._depth
        for i in range(1, self._depth + 1):
            setattr(self, f"conv{i}", FusedConv2d(getattr(block, f"conv{i}"),
                                                  getattr(block, f"bn{i}"), relu=True))
            setattr(self, f"bn{i}", Folded(f"conv{i}"))
            if i < self._depth:
                setattr(self, f"relu{i}", Folded(f"conv{i}"))
        self.downsample = None if block.downsample is None else fuse_tree(block.downsample)
        setattr(self, f"relu{self._depth}", Folded(f"conv{self._depth}"))
        self.training = False
        # the shortcut is an array of the block's own (the downsample's
        # fused convolution returns a new one): the last stage may store its
        # output over it (FusedConv2d's into_residual)
        ds = self.downsample
        self._own_shortcut = (isinstance(ds, Sequential) and len(ds) > 0
                              and type(ds[0]) is FusedConv2d
                              and all(type(m) is Folded for m in list(ds)[1:]))
        self.consumes_input = False   # set by fuse() where nothing reads x after the block

    def forward(self, x):
        if self.downsample is None:
            shortcut, scratch = x, input_is_scratch(self, x)
        else:
            shortcut, scratch = self.downsample(x), self._own_shortcut
        out = x
        for i in range(1, self._depth):
            out = getattr(self, f"conv{i}")(out)
        return getattr(self, f"conv{self._depth}")(out, residual=shortcut,
                                                   into_residual=scratch)

    def backward(self, grad_out):
        return self.conv1.backward(grad_out)   # raises: inference only


def downsample(inplanes, planes, stride, dtype):
    return Sequential(Conv2d(inplanes, planes, 1, stride=stride, bias=False, dtype=dtype),
                      BatchNorm2d(planes, dtype=dtype))


class ResNet(ChannelsLastTraining, Transfer, Chain):
    """torchvision's ResNet. Base and head (see Transfer): the head is `fc`;
    the base is conv1 ... layer4 and the global average pool, and
    forward_features(x) returns its (N, 512 * block.expansion) output (512
    for BasicBlock, 2048 for Bottleneck). With `weights`, the
    random initialisation is skipped."""

    def __init__(self, block, layers, num_classes=1000, in_channels=3,
                 zero_init_residual=False, dtype=np.float32, *, weights=None,
                 data_format="channels_first"):
        super().__init__()
        check_model_args(num_classes, in_channels)
        self._inplanes = 64
        self.conv1 = Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(64, dtype=dtype)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, dtype)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, dtype)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, dtype)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, dtype)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.flatten = Flatten()
        self.fc = Linear(512 * block.expansion, num_classes, dtype=dtype)
        set_data_format(self, data_format)
        if weights is not None:
            load_weights(self, weights)
            return
        torchvision_init(self, conv="kaiming_fan_out", linear="default")
        if zero_init_residual:
            # each residual branch starts at zero, so every block starts as the identity
            for m in self.modules():
                if isinstance(m, _ResidualBlock):
                    getattr(m, f"bn{m._depth}").weight.data[...] = 0

    def forward_features(self, x):
        for m in self._stages()[:-1]:
            x = m(x)
        return x

    def _make_layer(self, block, planes, blocks, stride, dtype):
        out = planes * block.expansion
        ds = (downsample(self._inplanes, out, stride, dtype)
              if stride != 1 or self._inplanes != out else None)
        layers = [block(self._inplanes, planes, stride, ds, dtype=dtype)]
        self._inplanes = out
        layers += [block(out, planes, dtype=dtype) for _ in range(1, blocks)]
        return Sequential(*layers)


def resnet18(num_classes=1000, in_channels=3, *, zero_init_residual=False, dtype=np.float32,
             weights=None, data_format="channels_first"):
    """ResNet-18: BasicBlocks [2, 2, 2, 2]. `weights`: a weights file (.npz,
    .safetensors, torchvision's .pth, e.g. resnet18-f37072fd.pth)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, zero_init_residual, dtype,
                  weights=weights, data_format=data_format)


def resnet34(num_classes=1000, in_channels=3, *, zero_init_residual=False, dtype=np.float32,
             weights=None, data_format="channels_first"):
    """ResNet-34: BasicBlocks [3, 4, 6, 3]. `weights`: a weights file (.npz,
    .safetensors, torchvision's .pth)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, zero_init_residual, dtype,
                  weights=weights, data_format=data_format)


def resnet50(num_classes=1000, in_channels=3, *, zero_init_residual=False, dtype=np.float32,
             weights=None, data_format="channels_first"):
    """ResNet-50: Bottlenecks [3, 4, 6, 3]. `weights`: a weights file (.npz,
    .safetensors, torchvision's .pth, e.g. resnet50-0676ba61.pth or
    resnet50-11ad3fa6.pth)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, zero_init_residual,
                  dtype, weights=weights, data_format=data_format)


def resnet101(num_classes=1000, in_channels=3, *, zero_init_residual=False, dtype=np.float32,
              weights=None, data_format="channels_first"):
    """ResNet-101: Bottlenecks [3, 4, 23, 3]. `weights`: a weights file (.npz,
    .safetensors, torchvision's .pth)."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, zero_init_residual,
                  dtype, weights=weights, data_format=data_format)


def resnet152(num_classes=1000, in_channels=3, *, zero_init_residual=False, dtype=np.float32,
              weights=None, data_format="channels_first"):
    """ResNet-152: Bottlenecks [3, 8, 36, 3]. `weights`: a weights file (.npz,
    .safetensors, torchvision's .pth)."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, zero_init_residual,
                  dtype, weights=weights, data_format=data_format)
