"""Shared pieces of the model definitions."""
from __future__ import annotations

import os

import numpy as np

from .. import _validation as V
from ..io import read_state_dict
from ..nn import BatchNorm2d, Conv2d, Linear, init


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


class Transfer:
    """Feature extraction and fine-tuning, shared by every model.

    A model is a base (everything up to its last layer) and a head (the final
    Linear layer, at the dotted attribute `head_name`, torchvision's name).
    `forward_features(x)` runs the base and returns what the head takes in,
    so `model(x)` equals `model.head(model.forward_features(x))` for the
    logits. The course recipe, with cnnfast's Module.freeze():

        model = resnet18(weights="resnet18-f37072fd.pth")
        model.freeze().eval()                 # the base: no gradients, BN statistics kept
        head = model.replace_head(5)          # a new trainable Linear(512, 5) at model.fc
        feats = model.forward_features(x)     # feature extraction: run the base once
        loss = loss_fn(head(feats), y); head.backward(loss_fn.backward()); opt.step()

    (To fine-tune deeper layers instead, unfreeze them, e.g. model.layer4.unfreeze(),
    and train the whole model in train mode: model.backward passes through the
    frozen layers without computing their gradients.)
    """

    head_name = "fc"

    @property
    def head(self):
        """The final Linear layer (the module at `head_name`)."""
        module = self
        for part in self.head_name.split("."):
            module = getattr(module, part)
        return module

    def replace_head(self, num_classes):
        """Put a fresh trainable Linear(head.in_features, num_classes) in place of
        the head (same dtype and bias setting; torch.nn.Linear's default init)
        and return it."""
        old = self.head
        new = Linear(old.in_features, num_classes, bias=old.bias is not None,
                     dtype=old.weight.dtype)
        owner = self
        *parents, last = self.head_name.split(".")
        for part in parents:
            owner = getattr(owner, part)
        setattr(owner, last, new)
        return new

    def forward_features(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward_features")


def load_weights(model, weights, drop_prefixes=()):
    """What `weights=` does in every model constructor: read_state_dict(weights)
    (cnnfast .npz, .safetensors, or PyTorch's .pth) loaded strictly into the
    freshly built model. Floating-point arrays are cast to the model's dtype
    (a float64 model from torchvision's float32 file stays float64). Keys
    starting with one of `drop_prefixes` are dropped first (GoogLeNet without
    aux heads, as torchvision does with its own file)."""
    if weights is None:
        return model
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None or the path of a weights file, got "
                        f"{type(weights).__name__}")
    path = os.fspath(weights)
    dtype = model.parameters()[0].dtype
    # The random initial values are about to be replaced: drop them first (a
    # zero-strided stand-in keeps each shape for load_state_dict's checks; if
    # loading fails the constructor raises, so no model is left half-loaded).
    # With assign=True the arrays read become the parameters: weights= costs
    # one copy of the weights, not three.
    for _, p in model.named_parameters():
        p.data = np.broadcast_to(np.zeros((), p.dtype), p.shape)
    state = {}
    for key, value in read_state_dict(path).items():
        if key.startswith(tuple(drop_prefixes)):
            continue
        state[key] = value.astype(dtype, copy=False) if value.dtype.kind == "f" else value
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except ValueError as err:
        raise ValueError(f"weights={path!r} do not fit this {type(model).__name__}: "
                         f"{err}") from None
    return model
