"""Sequential and Chain (the straight-line containers Module.fuse() looks
into), the backward through a chain of modules (a BatchNorm and the ReLU
after it as one pass), and set_data_format, which lays a built model out
channels-first or channels-last."""
from __future__ import annotations

from .. import _validation as V
from .activation import ReLU
from .module import Module
from .normalization import _BatchNorm


def backward_chain(stages, grad_out):
    """Backward through modules that ran in order (each one's output the
    next one's input): each one's backward in reverse, except that a
    BatchNorm followed by a ReLU runs as one fused backward."""
    i = len(stages) - 1
    while i >= 0:
        m = stages[i]
        if type(m) is ReLU and i > 0 and isinstance(stages[i - 1], _BatchNorm):
            grad_out = stages[i - 1].backward(grad_out, relu=m)
            i -= 2
        else:
            grad_out = m.backward(grad_out)
            i -= 1
    return grad_out


class Sequential(Module):
    """Children named "0", "1", ... (or by an OrderedDict's keys), run in order."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__} at {name}")
            setattr(self, name, m)

    def __len__(self):
        return len(self.named_children())

    def __iter__(self):
        return iter(self.children())

    def __getitem__(self, i):
        return self.children()[i]

    def append(self, module):
        setattr(self, str(len(self)), module)
        return self

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x

    def backward(self, grad_out):
        return backward_chain(self.children(), grad_out)

    def _first_layer(self):
        children = self.children()
        return children[0]._first_layer() if children else None


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
        return backward_chain(self._stages(), grad_out)

    def _first_layer(self):
        stages = self._stages()
        return stages[0]._first_layer() if stages else None


def set_data_format(model, data_format):
    """Lay a freshly built model out in data_format: every layer that has a
    data_format (convs, pools, BatchNorm, Flatten, concatenations) gets it.
    Weights keep their layout in both, and a channels-last model flattens in
    channels-first order (nn.Flatten), so the same state dict (torchvision's)
    loads into either and gives the same outputs on transposed inputs."""
    V.channels_last(data_format)
    for m in model.modules():
        if hasattr(m, "data_format"):
            m.data_format = data_format
    return model
