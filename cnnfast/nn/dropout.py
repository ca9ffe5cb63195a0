"""Dropout: inverted dropout on NumPy arrays."""
from __future__ import annotations

import numpy as np

from . import init
from .module import Module


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and
    scale the survivors by 1 / (1 - p), so eval mode is the identity. Masks are
    drawn from cnnfast.nn.init's generator (cnnfast.nn.manual_seed)."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = inplace

    def forward(self, x):
        if not self.training:
            return x
        if self.p == 1:
            mask = np.zeros_like(x)
        else:
            keep = init.generator().random(x.shape) >= self.p
            mask = keep.astype(x.dtype) * x.dtype.type(1 / (1 - self.p))
        self._cache = mask
        return x * mask

    def backward(self, grad_out):
        return grad_out * self._saved()

    def extra_repr(self):
        return f"p={self.p}"
