"""Cross-entropy over logits: log-softmax + negative log-likelihood, as
torch.nn.CrossEntropyLoss (class weights, ignore_index, reductions, label
smoothing; class-index or class-probability targets; (N, C, *d) logits)."""
from __future__ import annotations

import numbers

import numpy as np

from .. import _validation as V
from .module import Module

REDUCTIONS = ("none", "mean", "sum")


class CrossEntropyLoss(Module):
    """`loss(logits, target)` -> float ("mean", "sum") or array ("none");
    `loss.backward(grad=None)` -> d loss / d logits.

    logits: (N, C) or (N, C, *d) float array. target: (N,) or (N, *d)
    integer class indices in [0, C) (or ignore_index), or class
    probabilities of the logits' shape. weight: (C,) class weights or None;
    a buffer (state_dict()["weight"] when given, as torch's).

    torch's rules: each element's loss is -sum_c q_c log softmax(logits)_c
    with q = weight[y] * ((1 - eps) one_hot(y) + eps / C) for class indices
    (eps: label_smoothing; elements whose target is ignore_index count
    nothing) and q = weight * ((1 - eps) target + eps / C) for
    probabilities. "mean" divides the sum by the summed weight[y] of the
    counted elements (class indices) or by the element count
    (probabilities); no counted element gives NaN, as torch. "sum" of
    nothing is 0.0. With reduction="none", backward(grad) takes the
    gradient of each loss element, shape (N, *d) (default ones).
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__()
        if weight is not None:
            V.check_array(weight, "weight")
            if weight.ndim != 1 or weight.dtype.kind != "f":
                raise ValueError(f"weight must be a 1-D float array of class weights (C,), "
                                 f"got shape {weight.shape} dtype {weight.dtype}")
        if not V._is_int(ignore_index):
            raise TypeError(f"ignore_index must be an int, got "
                            f"{type(ignore_index).__name__} {ignore_index!r}")
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if (not isinstance(label_smoothing, numbers.Real) or isinstance(label_smoothing, bool)
                or not 0 <= label_smoothing <= 1):
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        # a buffer, as torch's (_WeightedLoss): in state_dict() when given,
        # so a weighted loss saved by torch loads into this one
        self.register_buffer("weight", None if weight is None else np.array(weight))
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.label_smoothing = float(label_smoothing)

    def _targets(self, logits, target):
        """q: (M, C) target weights per element (class axis last), and the
        mean's denominator."""
        N, C = logits.shape[:2]
        spatial = logits.shape[2:]
        w = (np.ones(C, logits.dtype) if self.weight is None
             else self.weight.astype(logits.dtype))
        if self.weight is not None and w.shape != (C,):
            raise ValueError(f"weight has shape {w.shape}, expected ({C},) for logits with "
                             f"{C} classes")
        eps = self.label_smoothing
        if target.dtype.kind == "f":    # class probabilities
            if target.shape != logits.shape:
                raise ValueError(f"probability targets must have the logits' shape "
                                 f"{logits.shape}, got {target.shape}")
            V.common_float_dtype(logits=logits, target=target)
            probs = np.moveaxis(target, 1, -1).reshape(-1, C).astype(logits.dtype)
            q = ((1 - eps) * probs + eps / C) * w
            return q, q.shape[0]
        if target.dtype.kind not in "iu":
            raise TypeError(f"target must hold class indices (ints) or class probabilities "
                            f"(floats), got dtype {target.dtype}")
        if target.shape != (N,) + spatial:
            raise ValueError(f"class-index target must have shape {(N,) + spatial} "
                             f"(logits' shape without the class axis), got {target.shape}")
        labels = target.reshape(-1).astype(np.int64)
        counted = labels != self.ignore_index
        bad = counted & ((labels < 0) | (labels >= C))
        if bad.any():
            raise ValueError(f"target holds class indices outside [0, {C}) (ignore_index="
                             f"{self.ignore_index}): found {int(labels[bad][0])}")
        safe = np.where(counted, labels, 0)
        q = np.full((labels.size, C), eps / C, dtype=logits.dtype) * w
        q[np.arange(labels.size), safe] += (1 - eps) * w[safe]
        q[~counted] = 0
        return q, w[safe][counted].sum(dtype=np.float64)

    def forward(self, logits, target):
        V.check_array(logits, "logits")
        if logits.dtype.kind != "f" or logits.dtype.itemsize not in (4, 8):
            raise TypeError(f"logits must be float32 or float64, got {logits.dtype}")
        if logits.ndim < 2 or logits.shape[1] == 0:
            raise ValueError(f"logits must have shape (N, C) or (N, C, *d) with C >= 1, "
                             f"got {logits.shape}")
        target = np.asarray(target)
        logits = logits.astype(logits.dtype.newbyteorder("="), copy=False)
        C = logits.shape[1]
        q, denom = self._targets(logits, target)
        z = np.moveaxis(logits, 1, -1).reshape(-1, C)
        shifted = z - (z.max(axis=1, keepdims=True) if z.size else 0)  # exp cannot overflow
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        per_element = -(q * log_p).sum(axis=1)
        # d(-sum_c q_c log_softmax_c)/d logits = softmax * sum_c q_c - q, per element
        grad = np.exp(log_p) * q.sum(axis=1, keepdims=True) - q
        out_shape = (logits.shape[0],) + logits.shape[2:]
        self._cache = (grad, logits.shape, out_shape)
        if self.reduction == "none":
            return per_element.reshape(out_shape)
        total = float(per_element.sum(dtype=np.float64))
        if self.reduction == "sum":
            self._scale = 1.0
            return total
        self._scale = 1.0 / denom if denom else float("nan")
        return total / denom if denom else float("nan")

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def backward(self, grad_out=None):
        """The gradient wrt the logits of the last forward; grad_out: the
        upstream gradient (a scalar for "mean"/"sum", default 1; an (N, *d)
        array for "none", default ones)."""
        grad, shape, out_shape = self._saved()
        if self.reduction == "none":
            g = (np.ones(out_shape, grad.dtype) if grad_out is None
                 else np.asarray(grad_out, dtype=grad.dtype))
            if g.shape != out_shape:
                raise ValueError(f"grad_out must have the loss's shape {out_shape} "
                                 f"(reduction='none'), got {g.shape}")
            scaled = grad * g.reshape(-1, 1)
        else:
            g = 1.0 if grad_out is None else grad_out
            if np.ndim(g) != 0:
                raise ValueError(f"grad_out must be a scalar for reduction="
                                 f"{self.reduction!r}, got shape {np.shape(g)}")
            scaled = grad * grad.dtype.type(float(g) * self._scale)
        C = shape[1]
        spatial = shape[2:]
        return np.ascontiguousarray(
            np.moveaxis(scaled.reshape((shape[0],) + spatial + (C,)), -1, 1))

    def extra_repr(self):
        parts = [f"reduction={self.reduction!r}"]
        if self.ignore_index != -100:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        if self.weight is not None:
            parts.append("weight=...")
        return ", ".join(parts)
