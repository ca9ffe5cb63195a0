"""GoogLeNet / Inception v1 (Szegedy et al., 2014) with torchvision's layout
and names: every conv is BasicConv2d (conv without bias + BatchNorm(eps=1e-3)
+ ReLU), and branch3 of each Inception module uses a 3x3 conv where the paper
has 5x5 (torchvision's published weights are built that way)."""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..nn import (
    AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU,
    Sequential,
)
from ..nn.container import Chain, set_data_format
from .._ops.data_format import _concat
from ..nn.module import Module
from ._common import Transfer, check_model_args, load_weights, torchvision_init


class GoogLeNetOutputs(NamedTuple):
    """What a GoogLeNet with aux_logits returns in training mode (torchvision's order)."""
    logits: np.ndarray
    aux_logits2: Optional[np.ndarray]
    aux_logits1: Optional[np.ndarray]


class BasicConv2d(Chain):
    def __init__(self, in_channels, out_channels, dtype=np.float32, **conv_args):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, bias=False, dtype=dtype, **conv_args)
        self.bn = BatchNorm2d(out_channels, eps=0.001, dtype=dtype)
        self.relu = ReLU()


class Inception(Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1 reduction then
    3x3; 1x1 reduction then 3x3 (the paper's 5x5); 3x3 max pool then 1x1."""

    data_format = "channels_first"   # the channel axis of the concatenation

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj,
                 dtype=np.float32):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, dtype, kernel_size=1)
        self.branch2 = Sequential(BasicConv2d(in_channels, ch3x3red, dtype, kernel_size=1),
                                  BasicConv2d(ch3x3red, ch3x3, dtype, kernel_size=3, padding=1))
        self.branch3 = Sequential(BasicConv2d(in_channels, ch5x5red, dtype, kernel_size=1),
                                  BasicConv2d(ch5x5red, ch5x5, dtype, kernel_size=3, padding=1))
        self.branch4 = Sequential(MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                  BasicConv2d(in_channels, pool_proj, dtype, kernel_size=1))
        self._widths = (ch1x1, ch3x3, ch5x5, pool_proj)

    def _branches(self):
        return (self.branch1, self.branch2, self.branch3, self.branch4)

    def _axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def forward(self, x):
        return _concat([b(x) for b in self._branches()], self._axis())

    def backward(self, grad_out):
        splits = np.cumsum(self._widths)[:-1]
        grads = np.split(grad_out, splits, axis=self._axis())
        # every branch read x, so x's gradient is the sum of the four
        grad_x = self.branch1.backward(grads[0])
        for branch, g in zip(self._branches()[1:], grads[1:]):
            grad_x += branch.backward(g)
        return grad_x


class InceptionAux(Chain):
    """Auxiliary classifier: 4x4 adaptive average pool, 1x1 conv to 128,
    fc 2048 -> 1024, ReLU, dropout, fc 1024 -> num_classes."""

    def __init__(self, in_channels, num_classes, dropout=0.7, dtype=np.float32):
        super().__init__()
        self.pool = AdaptiveAvgPool2d((4, 4))
        self.conv = BasicConv2d(in_channels, 128, dtype, kernel_size=1)
        self.flatten = Flatten()
        self.fc1 = Linear(2048, 1024, dtype=dtype)
        self.relu = ReLU()
        self.dropout = Dropout(dropout)
        self.fc2 = Linear(1024, num_classes, dtype=dtype)


# ImageNet statistics: transform_input maps inputs normalised with them to the
# (x - 0.5) / 0.5 scaling the ported TensorFlow weights expect.
_MEAN = np.array([0.485, 0.456, 0.406])
_STD = np.array([0.229, 0.224, 0.225])


class GoogLeNet(Transfer, Module):
    """torchvision's GoogLeNet. Base and head (see Transfer): the head is `fc`;
    the base is conv1 ... inception5b, the global average pool and dropout, and
    forward_features(x) returns its (N, 1024) output (no aux heads).
    replace_head(n) also gives the aux heads (aux_logits=True) new n-class
    `fc2` layers.

    `weights`: torchvision's published file holds aux1/aux2 (untrained, as
    torchvision warns), so it loads strictly into aux_logits=True; with
    aux_logits=False those keys are dropped, as torchvision's googlenet() does.
    Those weights expect transform_input=True (torchvision's default when it
    loads them). With `weights`, the random initialisation is skipped."""

    def __init__(self, num_classes=1000, in_channels=3, aux_logits=False,
                 transform_input=False, init_weights=True, dropout=0.2, dropout_aux=0.7,
                 dtype=np.float32, *, weights=None, data_format="channels_first"):
        super().__init__()
        check_model_args(num_classes, in_channels)
        if transform_input and in_channels != 3:
            raise ValueError(f"transform_input=True needs in_channels=3 (it uses ImageNet's "
                             f"RGB statistics), got in_channels={in_channels}")
        self.aux_logits, self.transform_input = bool(aux_logits), bool(transform_input)
        self.conv1 = BasicConv2d(in_channels, 64, dtype, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, dtype, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, dtype, kernel_size=3, padding=1)
        self.maxpool2 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32, dtype)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64, dtype)
        self.maxpool3 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64, dtype)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64, dtype)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64, dtype)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64, dtype)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128, dtype)
        self.maxpool4 = MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128, dtype)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128, dtype)
        self.aux1 = InceptionAux(512, num_classes, dropout_aux, dtype) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux, dtype) if aux_logits else None
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.flatten = Flatten()
        self.dropout = Dropout(dropout)
        self.fc = Linear(1024, num_classes, dtype=dtype)
        if init_weights and weights is None:
            torchvision_init(self, conv="trunc_normal", linear="trunc_normal")
        self.data_format = "channels_first"
        set_data_format(self, data_format)
        load_weights(self, weights, drop_prefixes=() if aux_logits else ("aux1.", "aux2."))

    # The network is a chain with two taps (after 4a and 4d) for the aux heads.
    def _segments(self):
        return ([self.conv1, self.maxpool1, self.conv2, self.conv3, self.maxpool2,
                 self.inception3a, self.inception3b, self.maxpool3, self.inception4a],
                [self.inception4b, self.inception4c, self.inception4d],
                [self.inception4e, self.maxpool4, self.inception5a, self.inception5b,
                 self.avgpool, self.flatten, self.dropout, self.fc])

    def _scale_shift(self, dtype):
        """Per-channel scale and shift, shaped to broadcast against x."""
        scale, shift = (_STD / 0.5).astype(dtype), ((_MEAN - 0.5) / 0.5).astype(dtype)
        if self.data_format == "channels_last":
            return scale, shift
        return scale[:, None, None], shift[:, None, None]

    def replace_head(self, num_classes):
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = Linear(aux.fc2.in_features, num_classes, dtype=aux.fc2.weight.dtype)
        return super().replace_head(num_classes)

    def _transform(self, x):
        if self.transform_input:
            scale, shift = self._scale_shift(x.dtype)
            x = x * scale + shift
        return x

    def forward_features(self, x):
        x = self._transform(x)
        head, middle, tail = self._segments()
        for m in head + middle + tail[:-1]:
            x = m(x)
        return x

    def forward(self, x):
        x = self._transform(x)
        head, middle, tail = self._segments()
        for m in head:
            x = m(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        for m in middle:
            x = m(x)
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        for m in tail:
            x = m(x)
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x

    def backward(self, grad_out):
        """grad_out: the logits' gradient, or (logits, aux2, aux1) gradients as
        returned by forward (None for a head that does not contribute)."""
        if isinstance(grad_out, tuple):
            g, g_aux2, g_aux1 = grad_out
        else:
            g, g_aux2, g_aux1 = grad_out, None, None
        head, middle, tail = self._segments()
        for m in reversed(tail):
            g = m.backward(g)
        if g_aux2 is not None:
            g = g + self.aux2.backward(g_aux2)
        for m in reversed(middle):
            g = m.backward(g)
        if g_aux1 is not None:
            g = g + self.aux1.backward(g_aux1)
        for m in reversed(head):
            g = m.backward(g)
        if self.transform_input and g is not None:   # None: skip_input_grad()
            g = g * self._scale_shift(g.dtype)[0]
        return g

    def _first_layer(self):
        return self.conv1._first_layer()


def googlenet(num_classes=1000, in_channels=3, aux_logits=False, transform_input=False, *,
              init_weights=True, dropout=0.2, dropout_aux=0.7, dtype=np.float32, weights=None,
              data_format="channels_first"):
    """GoogLeNet; in training mode with aux_logits=True forward returns
    GoogLeNetOutputs(logits, aux_logits2, aux_logits1). `weights`: a weights
    file (.npz, .safetensors, torchvision's .pth: pass transform_input=True
    for torchvision's published weights, see GoogLeNet)."""
    return GoogLeNet(num_classes, in_channels, aux_logits, transform_input, init_weights,
                     dropout, dropout_aux, dtype, weights=weights, data_format=data_format)
