"""Cross-entropy over logits: log-softmax + negative log-likelihood, as
torch.nn.CrossEntropyLoss with class-index targets."""
from __future__ import annotations

import numpy as np

from .. import _validation as V
from .module import Module


class CrossEntropyLoss(Module):
    """`loss(logits, target)` -> float; `loss.backward()` -> d loss / d logits.

    logits: (N, C) float array; target: (N,) ints in [0, C).
    reduction: "mean" (default) or "sum"; label_smoothing as torch's (the
    target distribution is (1 - eps) * one_hot + eps / C).
    """

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing <= 1:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.reduction = reduction
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits, target):
        V.check_array(logits, "logits")
        target = np.asarray(target)
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (N, C), got {logits.shape}")
        if logits.dtype.kind != "f":
            raise TypeError(f"logits must be float32 or float64, got {logits.dtype}")
        if target.shape != (logits.shape[0],) or target.dtype.kind not in "iu":
            raise ValueError(f"target must be ({logits.shape[0]},) class indices (ints), "
                             f"got shape {target.shape} dtype {target.dtype}")
        N, C = logits.shape
        if N and (target.min() < 0 or target.max() >= C):
            raise ValueError(f"target holds class indices outside [0, {C}): "
                             f"min {target.min()}, max {target.max()}")
        shifted = logits - logits.max(axis=1, keepdims=True)   # exp cannot overflow
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        eps = self.label_smoothing
        want = np.full_like(log_p, eps / C)
        want[np.arange(N), target] += 1 - eps
        per_sample = -(want * log_p).sum(axis=1)
        denom = N if self.reduction == "mean" else 1
        # The gradient of -sum(want * log_softmax) wrt the logits: softmax - want
        self._cache = (np.exp(log_p) - want) / max(denom, 1)
        return float(per_sample.sum() / denom) if N else float("nan")

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def backward(self, grad_out=1.0):
        return self._saved() * np.asarray(grad_out, dtype=self._saved().dtype)
