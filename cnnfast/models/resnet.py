"""ResNet-18/34 (He et al., 2015) with torchvision's layout and names."""
from __future__ import annotations

import numpy as np

from ..nn.layers import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d
from ..nn.layers import ReLU, Sequential
from ..nn.fuse import Folded, FusedConv2d, foldable, fuse_tree
from ..nn.module import Module
from ._common import Chain, Transfer, check_model_args, load_weights, torchvision_init


class BasicBlock(Module):
    """Two 3x3 conv-BN stages plus a shortcut: relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x)),
    where s is the identity, or `downsample` (1x1 conv + BN) when the shape changes."""

    expansion = 1

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

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2.forward_sum(out, shortcut)   # relu(out + shortcut), one pass

    def backward(self, grad_out):
        g = self.relu2.backward(grad_out)
        # the sum fans the gradient out to both paths; x receives both contributions
        # bn1 + relu1 backward in one (the ReLU's mask inside the batch norm's passes)
        g_main = self.conv1.backward(self.bn1.backward(
            self.conv2.backward(self.bn2.backward(g)), relu=self.relu1))
        g_short = g if self.downsample is None else self.downsample.backward(g)
        g_main += g_short   # a fresh array from conv1's backward
        return g_main


    def _fused(self):
        """Module.fuse()'s replacement: two fused convolutions, the second
        adding the shortcut and applying relu2 in its store pass."""
        if not (foldable(self.bn1) and foldable(self.bn2)):
            for name, child in self.named_children():
                setattr(self, name, fuse_tree(child))
            return self
        return FusedBasicBlock(self)


class FusedBasicBlock(Module):
    """A BasicBlock after Module.fuse(): relu(conv2'(relu(conv1'(x))) + s(x)),
    conv' the convolutions with their BatchNorm folded in, s the identity or
    the fused downsample; inference only."""

    def __init__(self, block):
        super().__init__()
        self.conv1 = FusedConv2d(block.conv1, block.bn1, relu=True)
        self.bn1 = Folded("conv1")
        self.relu1 = Folded("conv1")
        self.conv2 = FusedConv2d(block.conv2, block.bn2, relu=True)
        self.bn2 = Folded("conv2")
        self.downsample = None if block.downsample is None else fuse_tree(block.downsample)
        self.relu2 = Folded("conv2")
        self.training = False

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x), residual=shortcut)

    def backward(self, grad_out):
        return self.conv2.backward(grad_out)   # raises: inference only


def downsample(inplanes, planes, stride, dtype):
    return Sequential(Conv2d(inplanes, planes, 1, stride=stride, bias=False, dtype=dtype),
                      BatchNorm2d(planes, dtype=dtype))


class ResNet(Transfer, Chain):
    """torchvision's ResNet. Base and head (see Transfer): the head is `fc`;
    the base is conv1 ... layer4 and the global average pool, and
    forward_features(x) returns its (N, 512) output. With `weights`, the
    random initialisation is skipped."""

    def __init__(self, block, layers, num_classes=1000, in_channels=3,
                 zero_init_residual=False, dtype=np.float32, *, weights=None):
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
        if weights is not None:
            load_weights(self, weights)
            return
        torchvision_init(self, conv="kaiming_fan_out", linear="default")
        if zero_init_residual:
            # each residual branch starts at zero, so every block starts as the identity
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.bn2.weight.data[...] = 0

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
             weights=None):
    """ResNet-18: BasicBlocks [2, 2, 2, 2]. `weights`: a weights file (.npz,
    .safetensors, torchvision's .pth, e.g. resnet18-f37072fd.pth)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, zero_init_residual, dtype,
                  weights=weights)


def resnet34(num_classes=1000, in_channels=3, *, zero_init_residual=False, dtype=np.float32,
             weights=None):
    """ResNet-34: BasicBlocks [3, 4, 6, 3]. `weights`: a weights file (.npz,
    .safetensors, torchvision's .pth)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, zero_init_residual, dtype,
                  weights=weights)
