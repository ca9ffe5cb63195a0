"""Module and Parameter: the bookkeeping every layer shares.

There is no autograd. Each layer's `forward` (in training mode) keeps what its
`backward` needs in `self._cache`, CS231n style, and `backward(grad_out)`
returns the gradient wrt the input and adds the parameter gradients into
`param.grad`. Containers chain their children's forward and backward.

Parameters, buffers and submodules are plain attributes; names, state-dict keys
and traversal order come from walking `vars(self)` in assignment order, so
`self.conv1 = Conv2d(...)` is all it takes to get the key `conv1.weight`.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

# torchvision's BatchNorm layers carry this counter; we accept and ignore it.
_IGNORED_KEYS = ("num_batches_tracked",)


class _Trace(threading.local):
    """The dry run (cnnfast._explain.Tracer) active in this thread, if any:
    while one is, calling a module plans the call instead of running it."""
    tracer: Any = None


TRACE = _Trace()


class Parameter:
    """A trainable array: `.data` (the values) and `.grad` (None until a
    backward pass adds into it). `requires_grad=False` (set by `freeze()`)
    means backward computes no gradient for it and optimizers skip it."""

    __slots__ = ("_data", "grad", "requires_grad")

    def __init__(self, data, requires_grad=True):
        self.data = np.ascontiguousarray(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        global mutations
        mutations += 1
        self._data = value

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def accumulate(self, grad) -> None:
        """Add `grad` into `.grad` (torch semantics: gradients sum across
        backward calls until the optimizer's zero_grad). Takes ownership of a
        fresh `grad` array instead of copying it: layers pass new arrays."""
        if not self.requires_grad or grad is None:
            return
        if self.grad is None:
            self.grad = np.asarray(grad, dtype=self.data.dtype)
        else:
            self.grad += grad

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


# Counts replacements of a Parameter's array and of modules' public
# attributes (parameters, children, settings), anywhere: a fused model's
# recorded run (cnnfast._replay) checks its model again when it moved.
mutations = 0


class Module:
    """Base class: subclasses set attributes in __init__ and define
    forward(x) and backward(grad_out)."""

    def __setattr__(self, name, value):
        if name[:1] != "_":
            global mutations
            mutations += 1
        object.__setattr__(self, name, value)

    _input_grad = True   # backward computes the input gradient (see skip_input_grad)

    def __init__(self):
        self.training = True
        self._buffer_names = []   # attribute names holding buffers (e.g. running_mean)
        self._cache = None        # what the last training-mode forward saved

    # ------------------------------------------------------------ compute
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, *args, **kwargs):
        tracer = TRACE.tracer
        if tracer is not None:
            return tracer.call(self, args, kwargs)
        return self.forward(*args, **kwargs)

    def _saved(self):
        """The cache of the last training-mode forward, or a clear error."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward pass in "
                               f"training mode first (call .train() and run forward)")
        return self._cache

    def _needs_grad(self, param) -> bool:
        return param is not None and param.requires_grad

    # ------------------------------------------------------------- registry
    def register_buffer(self, name: str, value) -> None:
        """A non-trainable array saved in the state dict (e.g. running_mean)."""
        setattr(self, name, value)
        if name not in self._buffer_names:
            self._buffer_names.append(name)

    def _public(self):
        return [(k, v) for k, v in vars(self).items() if not k.startswith("_")]

    def named_children(self):
        return [(k, v) for k, v in self._public() if isinstance(v, Module)]

    def children(self):
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def _own_parameters(self):
        return [(k, v) for k, v in self._public() if isinstance(v, Parameter)]

    def _own_buffers(self):
        return [(k, getattr(self, k)) for k in self._buffer_names
                if getattr(self, k, None) is not None]

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs: own parameters, then each child's.
        A Parameter shared by several modules (weight tying) is listed once,
        under its first name, as torch does, so optimizers step it once."""
        out, seen = [], set()
        for mod_name, mod in self.named_modules(prefix):
            dot = f"{mod_name}." if mod_name else ""
            for k, p in mod._own_parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((dot + k, p))
        return out

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        out = []
        for mod_name, mod in self.named_modules():
            dot = f"{mod_name}." if mod_name else ""
            out += [(dot + k, b) for k, b in mod._own_buffers()]
        return out

    def named_grads(self) -> dict:
        """name -> gradient for every parameter that has one (frozen ones never do)."""
        return {name: p.grad for name, p in self.named_parameters() if p.grad is not None}

    # ---------------------------------------------------------- state dict
    def state_dict(self) -> OrderedDict:
        """Dotted name -> copy of every parameter and buffer, in torch's order
        (each module's parameters, then its buffers, then its children)."""
        out = OrderedDict()
        for mod_name, mod in self.named_modules():
            dot = f"{mod_name}." if mod_name else ""
            for k, p in mod._own_parameters():
                out[dot + k] = p.data.copy()
            for k, b in mod._own_buffers():
                out[dot + k] = np.array(b, copy=True)
        return out

    def _slots(self):
        """Dotted name -> (owner module, attribute name) for every state entry."""
        slots = {}
        for mod_name, mod in self.named_modules():
            dot = f"{mod_name}." if mod_name else ""
            for k, _ in mod._own_parameters() + mod._own_buffers():
                slots[dot + k] = (mod, k)
        return slots

    def load_state_dict(self, state_dict, strict=True, assign=False) -> IncompatibleKeys:
        """Copy arrays in by name. The loaded arrays keep their dtype. With
        strict=True any missing or unexpected key is an error; a shape
        mismatch always is. `*.num_batches_tracked` (torchvision) is ignored.
        Nothing is modified unless every check passes.

        assign=True (torch's keyword) takes the given arrays themselves as
        the parameters and buffers, without a copy, wherever they already are
        writeable, C-contiguous and in native byte order (the others are still
        copied): for a state dict handed over, e.g. straight from
        cnnfast.io.read_state_dict(path), so loading costs no second copy."""
        slots = self._slots()
        given = {k: v for k, v in state_dict.items()
                 if k.rsplit(".", 1)[-1] not in _IGNORED_KEYS}
        missing = [k for k in slots if k not in given]
        unexpected = [k for k in given if k not in slots]
        errors = []
        if strict and missing:
            errors.append(f"missing key(s): {', '.join(missing)}")
        if strict and unexpected:
            errors.append(f"unexpected key(s): {', '.join(unexpected)}")
        arrays = {}
        for key, value in given.items():
            if key not in slots:
                continue
            arr = (np.require(value, requirements=("C", "W")) if assign
                   else np.array(value, copy=True, order="C"))
            mod, attr = slots[key]
            current = getattr(mod, attr)
            current = current.data if isinstance(current, Parameter) else current
            if arr.shape != current.shape:
                errors.append(f"shape mismatch for {key}: the model has {current.shape}, "
                              f"the state dict has {arr.shape}")
            elif arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
                errors.append(f"dtype of {key} must be float32 or float64, got {arr.dtype}")
            arrays[key] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        if errors:
            raise ValueError(f"error(s) loading state dict into {type(self).__name__}:\n  "
                             + "\n  ".join(errors))
        for key, arr in arrays.items():
            mod, attr = slots[key]
            current = getattr(mod, attr)
            if isinstance(current, Parameter):
                current.data = arr
                current.grad = None
            else:
                setattr(mod, attr, arr)
        return IncompatibleKeys(missing, unexpected)

    # --------------------------------------------------------------- modes
    def train(self, mode=True):
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def skip_input_grad(self, skip=True):
        """backward() computes no gradient wrt this model's input (and
        returns None): the first layer's input-gradient pass, which nobody
        uses when the input is data, is skipped (torch skips it too for
        inputs without requires_grad). Applies when the first layer the input
        reaches is a convolution or Linear (in a Sequential, a model's Chain,
        GoogLeNet); otherwise backward still returns the input gradient.
        skip=False restores it. Returns self."""
        first = self._first_layer()
        if first is not None:
            first._input_grad = not skip
        return self

    def _first_layer(self):
        """The layer whose input is this module's input, where that is known
        and the layer can skip its input gradient; None otherwise."""
        return None

    def _self_first(self):
        return self

    def fuse(self):
        """A new inference-only copy of this model in which each Conv2d ->
        BatchNorm2d (-> ReLU, -> ResNet's residual add + ReLU) runs as one
        convolution with folded weights, the activation applied in the
        kernel's store pass (cnnfast.nn.fuse). Its outputs equal this
        model's in eval mode to rounding; this model is not modified. The
        copy's eval() works, its train() and backward() raise."""
        from .fuse import fuse
        return fuse(self)

    def freeze(self):
        """Stop computing and applying gradients for every parameter below here."""
        for p in self.parameters():
            p.requires_grad = False
            p.grad = None
        return self

    def unfreeze(self):
        for p in self.parameters():
            p.requires_grad = True
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, dtype):
        """Cast every parameter and buffer to float32 or float64 (in place)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        for m in self.modules():
            for _, p in m._own_parameters():
                p.data = p.data.astype(dtype)
                p.grad = None if p.grad is None else p.grad.astype(dtype)
            for k, b in m._own_buffers():
                setattr(m, k, b.astype(dtype))
        return self

    # ---------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        children = self.named_children()
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"
