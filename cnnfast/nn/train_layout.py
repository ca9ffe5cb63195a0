"""Training a channels-first model channels-last inside.

A fused model already runs channels-last inside (nn.fuse.InferenceModel).
Training is the model itself, so it cannot be a converted copy: instead a
model class that mixes in ChannelsLastTraining, called in training mode on a
channels-first batch, lays every layer out channels-last for the length of
the call (their `data_format` attributes, restored afterwards), runs on the
batch converted once, and its backward does the same, so the activations and
their gradients stay in one layout from the first layer to the last and back
with no per-layer copies: the NHWC direct kernel, its input and weight
gradients and the channels-last BatchNorm and pooling passes.

One thread, the training step of the models benchmark (forward, loss,
backward, SGD), ms, channels-first layers -> channels-last inside, PyTorch in
the same run: ResNet-18 batch 16 at 112x112 483 -> 411 (PyTorch 403),
MobileNetV2 batch 16 at 112x112 346 -> 249 (339), VGG-11 batch 8 at 64x64
891 -> 820 (920), ResNet-18 batch 8 at 64x64 113 -> 113 (119).

It applies when the model is all cnnfast's own modules laid out
channels-first and every convolution has a channels-last kernel (the test
fuse() makes: _runs_channels_last), and the input is one 4-D float array.
The backward runs channels-last only while the first layer still holds the
activation that run saved: after any other forward (forward_features, a
direct call of a submodule) it runs as the layers are laid out. Call
backward on the model that was called (a submodule's backward after the
model's channels-last forward sees channels-last saved activations under a
channels-first layout). CNNFAST_TRAIN_CHANNELS_LAST=0 turns it off.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from . import module as _module
from .._ops.data_format import _to_first, _to_last


class _Active(threading.local):
    on = False   # a channels-last run is under way in this thread


_ACTIVE = _Active()


def enabled() -> bool:
    return os.environ.get("CNNFAST_TRAIN_CHANNELS_LAST", "").strip() != "0"


def _eligible(model, ndim, dtype) -> bool:
    """A 4-D float input to a channels-first model that can run channels-last
    (cached per model until a module's public attribute changes)."""
    if ndim != 4 or np.dtype(dtype) not in (np.float32, np.float64) or not enabled():
        return False
    key = _module.mutations
    cached = model.__dict__.get("_channels_last_training")
    if cached is None or cached[0] != key:
        from .fuse import _data_format, _runs_channels_last
        ok = (_data_format(model) == "channels_first" and model._first_layer() is not None
              and _runs_channels_last(model))
        cached = (key, ok)
        object.__setattr__(model, "_channels_last_training", cached)
    return cached[1]


def _layout(model, data_format):
    """Set every layer's data_format without counting it as a change of the
    model (nn.module.mutations: it is restored before the call returns)."""
    for m in model.modules():
        if hasattr(m, "data_format"):
            object.__setattr__(m, "data_format", data_format)


class ChannelsLastTraining:
    """Mixin of cnnfast's model classes (before Transfer and the container):
    see the module docstring."""

    def __call__(self, *args, **kwargs):
        x = args[0] if len(args) == 1 and not kwargs else None
        if (self.training and not _ACTIVE.on and _module.TRACE.tracer is None
                and type(x) is np.ndarray and _eligible(self, x.ndim, x.dtype)):
            return self._channels_last_forward(x)
        return super().__call__(*args, **kwargs)

    def _channels_last_forward(self, x):
        from .fuse import _to_last_in
        x_last = _to_last_in(x)
        _layout(self, "channels_last")
        _ACTIVE.on = True
        try:
            y = self.forward(x_last)
        finally:
            _ACTIVE.on = False
            _layout(self, "channels_first")
        # the activation the first layer saved: backward runs channels-last
        # only while it is still there (no other forward since)
        object.__setattr__(self, "_channels_last_run", self._first_layer()._cache)
        return _to_first(y) if isinstance(y, np.ndarray) and y.ndim >= 3 else y

    def backward(self, grad_out):
        token = self.__dict__.get("_channels_last_run")
        first = self._first_layer()
        if token is None or first is None or first._cache is not token:
            return super().backward(grad_out)
        if isinstance(grad_out, np.ndarray) and grad_out.ndim >= 3:
            grad_out = _to_last(np.ascontiguousarray(grad_out))
        _layout(self, "channels_last")
        try:
            grad_x = super().backward(grad_out)
        finally:
            _layout(self, "channels_first")
        return _to_first(grad_x) if isinstance(grad_x, np.ndarray) else grad_x

    def _explain(self, t, *args, **kwargs):
        """explain_model's rows of the run above: the conversion of the input
        and the layers channels-last (cnnfast._explain)."""
        from .._explain import DryArray
        from .._explain_layers import channels_last_inside
        x = args[0] if len(args) == 1 and not kwargs else None
        if not (self.training and isinstance(x, DryArray) and _eligible(self, x.ndim, x.dtype)):
            return t._run_forward(self, t.name_of(self), args, kwargs)

        def run(inner):
            _layout(self, "channels_last")
            try:
                return t._run_forward(self, t.name_of(self), (inner,), {})
            finally:
                _layout(self, "channels_first")
        return channels_last_inside(t, self, run, x)
