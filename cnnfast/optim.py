"""Optimizers with torch.optim's update rules (single-tensor code path).

Parameters whose `.grad` is None (frozen, or not reached by backward) are
skipped entirely, as in torch: no weight decay, no momentum update.
"""
from __future__ import annotations

import math

import numpy as np

from . import _plan
from ._ext import _elementwise
from .nn.module import Module, Parameter

__all__ = ["Optimizer", "SGD", "Adam"]

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _nonneg(value, name):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class Optimizer:
    def __init__(self, params, lr):
        if isinstance(params, Module):
            raise TypeError("pass model.parameters(), not the model itself")
        self.params = list(params)
        if not self.params:
            raise ValueError("params is an empty list: nothing to optimise")
        for p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"params must hold cnnfast.nn.Parameter objects, "
                                f"got {type(p).__name__}")
        self.lr = _nonneg(lr, "lr")
        self.state = [dict() for _ in self.params]   # per-parameter buffers

    def zero_grad(self, set_to_none=True):
        """Reset the gradients (to None by default, as torch 2)."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def _with_grads(self):
        for p, state in zip(self.params, self.state):
            if p.grad is not None and p.requires_grad:
                yield p, p.grad, state

    def step(self):
        raise NotImplementedError


class SGD(Optimizer):
    """p -= lr * d, where d is the gradient plus weight_decay * p, passed
    through momentum (buf = momentum * buf + (1 - dampening) * g; the first
    step sets buf = g) and, with nesterov, d = g + momentum * buf."""

    def __init__(self, params, lr, momentum=0, weight_decay=0, nesterov=False, *,
                 dampening=0):
        super().__init__(params, lr)
        self.momentum = _nonneg(momentum, "momentum")
        self.weight_decay = _nonneg(weight_decay, "weight_decay")
        self.dampening = _nonneg(dampening, "dampening")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(f"nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")

    def step(self):
        for p, g, state in self._with_grads():
            if self._step_in_c(p, g, state):
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(g, copy=True)
                else:
                    buf *= self.momentum
                    buf += (1 - self.dampening) * g
                g = g + self.momentum * buf if self.nesterov else buf
            p.data -= self.lr * g

    def _step_in_c(self, p, g, state) -> bool:
        """The update in one C pass over p, g and the momentum buffer (NumPy's
        expressions make six passes and three temporaries: half a ResNet-18
        step's non-convolution time). Only for the arrays the kernel can
        write in place: a C-contiguous, aligned, writeable parameter in
        native float32/float64, its gradient of the same dtype and shape."""
        data = p.data
        if (data.dtype not in _KERNEL_DTYPES or not data.flags.c_contiguous
                or not data.flags.aligned or not data.flags.writeable
                or g.shape != data.shape or g.dtype != data.dtype):
            return False
        g = np.require(g, requirements=("C_CONTIGUOUS", "ALIGNED"))
        buf, first = None, False
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.empty_like(data)
                first = True
        _elementwise.sgd_update(data.reshape(-1), g.reshape(-1),
                                None if buf is None else buf.reshape(-1), self.lr,
                                self.momentum, self.dampening, self.weight_decay,
                                self.nesterov, first, _plan.elementwise_threads(data.size))
        return True


class Adam(Optimizer):
    """Adam (Kingma & Ba) with torch's bias correction; weight_decay is the
    L2 penalty added to the gradient (torch's Adam, not AdamW)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super().__init__(params, lr)
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _nonneg(eps, "eps")
        self.weight_decay = _nonneg(weight_decay, "weight_decay")

    def step(self):
        beta1, beta2 = self.betas
        for p, g, state in self._with_grads():
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
            m += (1 - beta1) * (g - m)           # torch: exp_avg.lerp_(grad, 1 - beta1)
            v *= beta2
            v += (1 - beta2) * g * g
            step_size = self.lr / (1 - beta1 ** t)
            denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + p.data.dtype.type(self.eps)
            p.data -= step_size * (m / denom)
