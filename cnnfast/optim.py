"""Optimizers with torch.optim's update rules (single-tensor code path).

Parameters whose `.grad` is None (frozen, or not reached by backward) are
skipped entirely, as in torch: no weight decay, no momentum update.

`state_dict()` / `load_state_dict()` use torch.optim's structure, so a
checkpoint resumes the exact trajectory (and a torch optimizer's state dict,
its tensors converted to NumPy, loads):

    {"state": {0: {"momentum_buffer": array}, ...},    # parameters with state
     "param_groups": [{"lr": 0.1, "momentum": 0.9, ..., "params": [0, 1, ...]}]}
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


def _as_state_array(value, param, where):
    """A per-parameter state array from a state dict: the parameter's shape,
    cast to its dtype (as torch casts floating state on load), a fresh copy."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu" or arr.shape != param.shape:
        raise ValueError(f"{where} must be a numeric array of the parameter's shape "
                         f"{param.shape}, got {arr.dtype} {arr.shape}")
    return np.array(arr, dtype=param.dtype, copy=True, order="C")


class Optimizer:
    # torch's param_group keys for this optimizer's hyperparameters
    _hyper: tuple = ("lr",)

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

    @classmethod
    def _checked(cls, **hyper) -> dict:
        """The hyperparameters validated and normalised (attribute -> value),
        the one place the constructor and load_state_dict check them."""
        return {"lr": _nonneg(hyper["lr"], "lr")}

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> dict:
        """torch.optim's layout: "state" maps each parameter's position in
        `params` to copies of its buffers (only parameters that have any),
        "param_groups" is one group with the hyperparameters and the list of
        positions. Arrays are copies; nothing refers to the optimizer."""
        state = {}
        for i, s in enumerate(self.state):
            if s:
                state[i] = {k: v.copy() if isinstance(v, np.ndarray) else v
                            for k, v in s.items()}
        group = {name: getattr(self, name) for name in self._hyper}
        group["params"] = list(range(len(self.params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict) -> None:
        """Restore state_dict()'s output (or torch's, converted to NumPy).
        The loaded hyperparameters win over the constructor's (as in torch);
        buffers are copied and cast to each parameter's dtype. Everything is
        checked before anything changes: a state dict for another number of
        parameters, another optimizer or other shapes is a ValueError."""
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups', as "
                             "Optimizer.state_dict() returns")
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1:
            raise ValueError(f"state_dict['param_groups'] must be a list of one group "
                             f"(cnnfast optimizers have exactly one), got {groups!r:.200}")
        group = groups[0]
        ids = list(group.get("params", ()))
        if len(ids) != len(self.params):
            raise ValueError(f"state_dict's parameter group has {len(ids)} parameters, this "
                             f"{type(self).__name__} has {len(self.params)}")
        absent = [k for k in self._hyper if k not in group]
        if absent:
            raise ValueError(f"state_dict's parameter group lacks {absent}: not a "
                             f"{type(self).__name__} state dict")
        for flag in ("maximize", "amsgrad", "differentiable"):
            if group.get(flag):
                raise ValueError(f"state_dict's parameter group sets {flag}=True, which "
                                 f"cnnfast's {type(self).__name__} does not support")
        hyper = self._checked(**{k: _plain(group[k]) for k in self._hyper})
        position = {_plain(pid): i for i, pid in enumerate(ids)}
        state: list = [dict() for _ in self.params]
        for pid, entry in dict(state_dict["state"]).items():
            i = position.get(_plain(pid))
            if i is None or not isinstance(entry, dict):
                raise ValueError(f"state_dict['state'] has an entry {pid!r} that is not one of "
                                 f"the group's parameters")
            state[i] = self._param_state(entry, self.params[i], f"state[{pid!r}]")
        vars(self).update(hyper)
        self.state = state

    def _param_state(self, entry, param, where) -> dict:
        raise NotImplementedError

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

    _hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool

    def __init__(self, params, lr, momentum=0, weight_decay=0, nesterov=False, *,
                 dampening=0):
        super().__init__(params, lr)
        vars(self).update(self._checked(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                        nesterov=nesterov, dampening=dampening))

    @classmethod
    def _checked(cls, *, lr, momentum, dampening, weight_decay, nesterov):
        out = dict(lr=_nonneg(lr, "lr"), momentum=_nonneg(momentum, "momentum"),
                   weight_decay=_nonneg(weight_decay, "weight_decay"),
                   dampening=_nonneg(dampening, "dampening"), nesterov=bool(nesterov))
        if out["nesterov"] and (out["momentum"] == 0 or out["dampening"] != 0):
            raise ValueError(f"nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        return out

    def _param_state(self, entry, param, where):
        unknown = set(entry) - {"momentum_buffer"}
        if unknown:
            raise ValueError(f"{where} has {sorted(unknown)}: not SGD state")
        buf = entry.get("momentum_buffer")
        if buf is None:                     # torch keeps None when momentum is 0
            return {}
        return {"momentum_buffer": _as_state_array(buf, param, f"{where}['momentum_buffer']")}

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

    _hyper = ("lr", "betas", "eps", "weight_decay")
    betas: tuple
    eps: float
    weight_decay: float

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super().__init__(params, lr)
        vars(self).update(self._checked(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @classmethod
    def _checked(cls, *, lr, betas, eps, weight_decay):
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                           and 0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        return dict(lr=_nonneg(lr, "lr"), betas=(float(betas[0]), float(betas[1])),
                    eps=_nonneg(eps, "eps"), weight_decay=_nonneg(weight_decay, "weight_decay"))

    def _param_state(self, entry, param, where):
        if set(entry) != {"step", "exp_avg", "exp_avg_sq"}:
            raise ValueError(f"{where} has {sorted(entry)}, not Adam's step, exp_avg and "
                             f"exp_avg_sq")
        step = _plain(entry["step"])
        if (not isinstance(step, (int, float)) or isinstance(step, bool) or step < 0
                or step != int(step)):
            raise ValueError(f"{where}['step'] must be a whole number >= 0, got {step!r}")
        return {"step": int(step),
                "exp_avg": _as_state_array(entry["exp_avg"], param, f"{where}['exp_avg']"),
                "exp_avg_sq": _as_state_array(entry["exp_avg_sq"], param,
                                              f"{where}['exp_avg_sq']")}

    def step(self):
        beta1, beta2 = self.betas
        for p, g, state in self._with_grads():
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            if self._step_in_c(p, g, state):
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
            m += (1 - beta1) * (g - m)           # torch: exp_avg.lerp_(grad, 1 - beta1)
            v *= beta2
            v += (1 - beta2) * g * g
            step_size = self.lr / (1 - beta1 ** t)
            denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + p.data.dtype.type(self.eps)
            p.data -= step_size * (m / denom)

    def _step_in_c(self, p, g, state) -> bool:
        """The update in one C pass over p, g and both moments (NumPy's
        expressions make about ten passes and four temporaries), for the
        arrays the kernel can write in place (see SGD._step_in_c); moments
        loaded from a state dict qualify when they match the parameter."""
        data = p.data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if (data.dtype not in _KERNEL_DTYPES or g.shape != data.shape or g.dtype != data.dtype
                or not all(a.flags.c_contiguous and a.flags.aligned and a.flags.writeable
                           and a.dtype == data.dtype and a.shape == data.shape
                           for a in (data, m, v))):
            return False
        g = np.require(g, requirements=("C_CONTIGUOUS", "ALIGNED"))
        beta1, beta2 = self.betas
        t = state["step"]
        _elementwise.adam_update(data.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                                 beta1, beta2, self.eps, self.weight_decay,
                                 self.lr / (1 - beta1 ** t), math.sqrt(1 - beta2 ** t),
                                 _plan.elementwise_threads(data.size))
        return True


def _plain(value):
    """A 0-d NumPy array or NumPy scalar (torch's tensors converted) as a Python
    number; lists (betas) as tuples; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, list):
        value = tuple(_plain(v) for v in value)
    return value
