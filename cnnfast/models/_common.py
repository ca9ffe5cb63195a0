"""Shared pieces of the model definitions."""
from __future__ import annotations

from .. import _validation as V
from ..nn import init
from ..nn.layers import BatchNorm2d, Conv2d, Linear
from ..nn.module import Module


class Chain(Module):
    """Runs its child modules in the order they were assigned; backward in
    reverse. Models whose graph is a straight line subclass this and only
    declare their layers."""

    def _stages(self):
        return self.children()

    def forward(self, x):
        for m in self._stages():
            x = m(x)
        return x

    def backward(self, grad_out):
        for m in reversed(self._stages()):
            grad_out = m.backward(grad_out)
        return grad_out


def check_model_args(num_classes, in_channels):
    V.positive_int(num_classes, "num_classes")
    V.positive_int(in_channels, "in_channels")


def torchvision_init(model, conv="kaiming_fan_out", linear="default"):
    """Re-initialise a freshly built model the way its torchvision namesake
    does: conv weights N(0, 2/fan_out) or truncated N(0, 0.01^2), biases 0,
    BatchNorm to (1, 0), linear weights N(0, 0.01^2) or left at the default."""
    for m in model.modules():
        if isinstance(m, Conv2d):
            w = m.weight.data
            if conv == "kaiming_fan_out":
                m.weight.data = init.kaiming_normal_fan_out(w.shape, w.dtype)
                if m.bias is not None:
                    m.bias.data[...] = 0
            elif conv == "trunc_normal":
                m.weight.data = init.trunc_normal(w.shape, 0.01, w.dtype)
        elif isinstance(m, BatchNorm2d) and m.affine:
            m.weight.data[...] = 1
            m.bias.data[...] = 0
        elif isinstance(m, Linear):
            w = m.weight.data
            if linear == "normal":
                m.weight.data = init.normal(w.shape, 0.01, w.dtype)
                if m.bias is not None:
                    m.bias.data[...] = 0
            elif linear == "trunc_normal":
                m.weight.data = init.trunc_normal(w.shape, 0.01, w.dtype)
