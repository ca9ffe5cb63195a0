"""Module.fuse(): an inference copy of a model with its Conv -> BatchNorm
(-> ReLU, -> residual add) stages folded into single convolutions.

Folding: in eval mode BatchNorm is the per-channel affine map
y = (x - running_mean) * gamma / sqrt(running_var + eps) + beta, so
conv followed by it is one convolution with weight w * s (s = gamma /
sqrt(var + eps), per output channel) and bias (b - running_mean) * s + beta,
computed in float64 and rounded once to the model's dtype. The activation,
a clamp to [lo, hi] (ReLU [0, inf], ReLU6 [0, 6], Hardtanh [min_val,
max_val]), and a residual block's shortcut add before it run in the
convolution's store pass: the kernel applies them to each output tile right
after storing it (cnnfast._ext._conv's epilogue), so no separate pass reads
the activation.

What is fused: inside every Sequential and Chain (the models' straight-line
containers), ConvNd -> BatchNormNd, ConvNd -> BatchNormNd -> activation and
ConvNd -> activation (N = 1, 2, 3 matching; activation: ReLU, ReLU6 or
Hardtanh); ResNet's blocks and MobileNetV2's inverted residuals as a whole
(their own _fused). A BatchNorm with track_running_stats=False normalises with
batch statistics even in eval mode and is left as it is. Everything else is
kept (copied).
"""
from __future__ import annotations

import copy
import operator
import threading
import time

import numpy as np

from .. import _plan, _replay
from .._ops.activation import epilogue_clamp
from .._ops.conv import _conv_forward_fused, _conv_forward_fused_last
from .._ops.data_format import _to_first, _to_last
from .._threads import kernel_threads
from .activation import Hardtanh, ReLU, ReLU6
from .container import Chain, Sequential, set_data_format
from .conv import Conv1d, Conv2d, Conv3d
from .linear import Identity
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from . import module as _module
from .module import TRACE, Module, Parameter

_INFERENCE_ONLY = ("{what} is part of a fused inference model (Module.fuse()): it has no "
                   "backward and cannot train; train the original model and call fuse() again")


def _inference_error(what):
    return RuntimeError(_INFERENCE_ONLY.format(what=what))


# the convolutions fuse() folds, and the BatchNorm of each one's dimension
_CONVS = (Conv1d, Conv2d, Conv3d)
_BATCH_NORMS = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}


def foldable(bn, nd=2) -> bool:
    """A BatchNorm{nd}d whose eval-mode map is fixed (it uses running statistics)."""
    return isinstance(bn, _BATCH_NORMS[nd]) and bn.track_running_stats


def fold_batch_norm(conv, bn):
    """(weight, bias) of conv followed by bn in eval mode, in conv's dtype."""
    dtype = conv.weight.dtype
    w = conv.weight.data.astype(np.float64)
    b = (np.zeros(w.shape[0]) if conv.bias is None else conv.bias.data.astype(np.float64))
    if bn is None:
        return w.astype(dtype), b.astype(dtype)
    scale = 1 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    shift = -bn.running_mean.astype(np.float64) * scale
    if bn.affine:
        gamma = bn.weight.data.astype(np.float64)
        scale, shift = scale * gamma, shift * gamma
        if bn.bias is not None:   # BatchNorm2d(bias=False) has no shift
            shift = shift + bn.bias.data.astype(np.float64)
    w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    return w.astype(dtype), (b * scale + shift).astype(dtype)


def clamp_of(activation):
    """The (lo, hi) a fusable activation layer clamps to, or None for a layer
    that is not one (exact types: a subclass may compute something else)."""
    if type(activation) is ReLU:
        return (0.0, float("inf"))
    if type(activation) in (Hardtanh, ReLU6):
        return (activation.min_val, activation.max_val)
    return None


def _clamp_name(clamp):
    """The activation a (lo, hi) clamp is, for reprs."""
    return {(0.0, float("inf")): "ReLU", (0.0, 6.0): "ReLU6"}.get(clamp, f"Hardtanh{clamp}")


class FusedConv2d(Module):
    """Inference-only convolution with folded BatchNorm: clamp(conv(x) + bias
    (+ residual), lo, hi) with `clamp` = (lo, hi), else conv(x) + bias
    (+ residual); the residual add and the clamp run in the convolution
    kernel's store pass. relu=True is clamp=(0, inf). It also serves Conv1d
    and Conv3d: its dimension is conv's."""

    def __init__(self, conv, bn=None, relu=False, clamp=None):
        super().__init__()
        weight, bias = fold_batch_norm(conv, bn)
        weight.flags.writeable = bias.flags.writeable = False
        self.weight = Parameter(weight, requires_grad=False)
        self.bias = Parameter(bias, requires_grad=False)
        self._packed = {}   # channels-last: weights packed for the NHWC kernel, by config
        self.stride, self.padding = conv.stride, conv.padding
        self.padding_mode = conv.padding_mode
        self.dilation, self.groups = conv.dilation, conv.groups
        self._nd = conv.weight.data.ndim - 2   # any conv with torch's weight layout
        self.clamp = epilogue_clamp(relu if clamp is None else clamp)
        self.data_format = getattr(conv, "data_format", "channels_first")
        self.training = False
        self._folded = ((type(bn).__name__ if bn is not None else "")
                        + ("" if self.clamp is None else f" + {_clamp_name(self.clamp)}"))

    def forward(self, x, residual=None, into_residual=False):
        """into_residual: residual is the caller's scratch, dead after this
        call, and the result may be stored over it (channels-last only)."""
        if self.data_format == "channels_last":
            # the NHWC kernel with weights packed once (the arrays are
            # read-only: an in-place edit cannot leave a stale packed copy)
            return _conv_forward_fused_last(
                self._nd, x, self.weight.data, self.bias.data, self.stride, self.padding,
                self.dilation, self.groups, self.clamp, residual, self.padding_mode,
                self._packed, into_residual)
        return _conv_forward_fused(self._nd, x, self.weight.data, self.bias.data, self.stride,
                                   self.padding, self.dilation, self.groups, self.clamp,
                                   residual, self.padding_mode)

    def backward(self, grad_out):
        raise _inference_error(type(self).__name__)

    def extra_repr(self):
        w = self.weight.shape
        return (f"{w[1] * self.groups}, {w[0]}, kernel_size={tuple(w[2:])}, "
                f"stride={self.stride}, padding={self.padding}"
                + (f", groups={self.groups}" if self.groups != 1 else "")
                + f", folded={self._folded.strip(' +')!r}")


class Folded(Identity):
    """Where a fused model's BatchNorm2d or activation was: folded into the
    convolution before it, so it passes x through."""

    def __init__(self, into: str):
        super().__init__()
        self.into = into
        self.training = False

    def backward(self, grad_out):
        raise _inference_error(type(self).__name__)

    def extra_repr(self):
        return f"into {self.into}"


def is_chain(module) -> bool:
    """Containers that run their children in attribute order (Sequential and
    the models' Chain), where a child's output feeds only the next child. A
    subclass that overrides forward (or Chain's _stages) may use its
    children otherwise, so it is not one (its children are still fused)."""
    cls = type(module)
    if isinstance(module, Sequential):
        return cls.forward is Sequential.forward
    return (isinstance(module, Chain) and cls.forward is Chain.forward
            and cls._stages is Chain._stages)


class _Run(threading.local):
    input = None   # what the InferenceModel running in this thread was called with


_RUN = _Run()


def input_is_scratch(module, x) -> bool:
    """Whether a fused block may store over its input x: fuse() marked it
    (`consumes_input`: it and every container above it are chains, so what
    reaches it is read by nobody after it), it runs inside an
    InferenceModel's own call (not called on its own), and x is not, and
    does not share memory with, that call's input. (The same inside a
    recorded run as outside it: a replay must do what the normal run does.)"""
    run_input = _RUN.input
    return (getattr(module, "consumes_input", False) and run_input is not None
            and type(x) is np.ndarray and not np.may_share_memory(x, run_input))


def _mark_chain_inputs(module):
    """Set consumes_input on the blocks that have it (False) whose
    containers, up to the model, are all chains: a chain's stage reads
    what the stage before it returned (or the chain's input), and nothing
    reads it afterwards."""
    if not is_chain(module):
        return
    for child in module.children():
        if hasattr(child, "consumes_input"):
            child.consumes_input = True
        _mark_chain_inputs(child)


def _fuse_chain(module):
    """Fold the ConvNd -> BatchNormNd (-> activation) / ConvNd -> activation
    runs among module's children in place (module is the private copy)."""
    items = module.named_children()
    i = 0
    while i < len(items):
        name, m = items[i]
        if type(m) not in _CONVS:
            i += 1
            continue
        j, bn, clamp = i + 1, None, None
        if j < len(items) and foldable(items[j][1], m._nd):
            bn, j = items[j][1], j + 1
        if j < len(items) and clamp_of(items[j][1]) is not None:
            clamp, j = clamp_of(items[j][1]), j + 1
        if j > i + 1:
            setattr(module, name, FusedConv2d(m, bn, clamp=clamp))
            for folded_name, _ in items[i + 1:j]:
                setattr(module, folded_name, Folded(name))
        i = j


def fuse_tree(module):
    """The fused replacement of module (a private copy, modified in place):
    a module's own _fused() if it has one (ResNet's blocks), else module
    with every child fused and, for chains, its Conv-BN-ReLU runs folded."""
    own = getattr(module, "_fused", None)
    if own is not None:
        return own()
    for name, child in module.named_children():
        setattr(module, name, fuse_tree(child))
    if is_chain(module):
        _fuse_chain(module)
    return module


class InferenceModel(Module):
    """What Module.fuse() returns: the fused copy of a model (at .module),
    for inference only. Calling it runs the fused model; public attributes
    it does not have itself (forward_features, head, fc, ...) are the
    fused model's. eval() works; train() and backward() raise.

    `layout` is the layout of the activations inside: a channels-first
    model whose every convolution has a channels-last kernel runs
    channels-last inside (see _runs_channels_last): its input is converted once,
    every layer reads and writes NHWC, and an output with spatial dims is
    converted back once (a classifier's (N, classes) needs nothing). Its
    submodules (`.module`, `.fc`, ...) work in that layout. A model that
    lays its graph out itself (owns_layout: cnnfast.onnx's) converts its
    inputs and outputs itself (converts=False)."""

    def __init__(self, module, layout="channels_first", data_format="channels_first",
                 converts=True):
        super().__init__()
        self.module = module
        self.layout = layout
        self.data_format = data_format
        self._wraps_layout = converts
        self.training = False
        self._replays = {}   # input signature -> _SEEN, a _replay.Recording, or _REFUSED

    def _converts(self):
        return self._wraps_layout and self.layout != self.data_format

    def forward(self, x, *args, **kwargs):
        if (not args and not kwargs and type(x) is np.ndarray and TRACE.tracer is None
                and _replay.enabled()):
            y = self._replayed(x)
            if y is not None:
                return y
        return self._forward(x, *args, **kwargs)

    def _forward(self, x, *args, **kwargs):
        # the blocks may then store over activations other than x (input_is_scratch)
        outer = _RUN.input
        _RUN.input = x if not args and not kwargs and type(x) is np.ndarray else None
        try:
            if not self._converts():
                return self.module(x, *args, **kwargs)
            return _to_first_out(self.module(_to_last_in(x), *args, **kwargs))
        finally:
            _RUN.input = outer

    def recording(self, x):
        """The recorded run this model replays for inputs like x, or None
        (cnnfast._replay; for the per-layer benchmark)."""
        entry = self._replays.get(self._signature(x)) if type(x) is np.ndarray else None
        return entry if isinstance(entry, _replay.Recording) else None

    @staticmethod
    def _signature(x):
        return (x.shape, x.dtype.char, x.flags.writeable, _plan.planning_state())

    def _replayed(self, x):
        """The model's output for x from its recorded run (cnnfast._replay),
        recording it at the second call with x's signature; None: run it the
        normal way."""
        if (x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8) or not x.dtype.isnative
                or not x.flags.c_contiguous or not x.flags.aligned):
            return None   # the layers would convert it first, outside the drivers
        key = self._signature(x)
        entry = self._replays.get(key)
        if entry is None:   # first call: it packs weights and fills the plan caches
            self._remember(key, _SEEN)
            return None
        if entry is _REFUSED:
            return None
        if entry is _SEEN:
            return self._record(key, x)
        if entry.mutations != _module.mutations:
            if not _same_objects(entry.state, _model_state(self)):
                self._replays.clear()
                return None
            entry.mutations = _module.mutations
        threads = kernel_threads()
        if threads == 1:
            return entry.run(x)
        choice = entry.choice   # many threads, or the one-thread twin under load
        twin = choice.wants_twin() and (choice.twin or self._one_thread_twin(entry, x))
        wall, cpu = time.perf_counter(), time.process_time()
        y = (twin or entry).run(x)
        if y is not None:
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            choice.report(bool(twin), wall, cpu / (wall * threads) if wall > 0 else 1.0)
        return y

    def _record(self, key, x):
        y, recording = self._recording_of(x)
        self._remember(key, recording or _REFUSED)
        return y

    def _recording_of(self, x):
        """(the model's output for x, a checked _replay.Recording of that
        run or None)."""
        TRACE.tracer = _CallOwners()
        try:
            out, rec = _replay.record(self._forward, x)
        finally:
            TRACE.tracer = None
        y = out.copy() if type(out) is np.ndarray else out   # the recording reuses `out`
        try:
            recording = _replay.Recording(rec, x, out)
        except _replay.Refused:
            return y, None
        # checked on a second input, call by call: anything computed outside
        # the recorded calls would be stale in the replay
        x2 = _check_input(x)
        expected, rec2 = _replay.record(self._forward, x2)
        same = (recording.verify(rec2, x2) and type(expected) is np.ndarray
                and recording.output.dtype == expected.dtype
                and recording.output.shape == expected.shape
                and recording.output.tobytes() == expected.tobytes())
        if not same:
            return y, None
        recording.state, recording.mutations = _model_state(self), _module.mutations
        return y, recording

    def _one_thread_twin(self, entry, x):
        """entry's calls on one thread (ThreadChoice), or None when that does
        not give the same output bit for bit (a kernel whose sums follow its
        thread split)."""
        twin = entry.single_threaded()
        x2 = _check_input(x)
        many = entry.run(x2)
        many = None if many is None else many.tobytes()
        single = twin.run(x2)
        if many is None or single is None or single.tobytes() != many:
            twin = None
        entry.choice.twin = twin or False
        return twin

    def _remember(self, key, entry):
        self._replays.pop(key, None)
        if len(self._replays) >= _replay.MAX_RECORDINGS:
            self._replays.pop(next(iter(self._replays)))
        self._replays[key] = entry

    def forward_features(self, x):
        out = self.module.forward_features(_to_last_in(x) if self._converts() else x)
        return _to_first_out(out) if self._converts() else out

    def backward(self, grad_out):
        raise _inference_error(f"{type(self.module).__name__} (fused)")

    def train(self, mode=True):
        if mode:
            raise _inference_error(f"{type(self.module).__name__} (fused)")
        return super().train(False)

    def fuse(self):
        return self

    def __getattr__(self, name):
        module = self.__dict__.get("module")
        if module is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        return getattr(module, name)


_SEEN, _REFUSED = "seen", "refused"   # _replays entries besides recordings


class _CallOwners:
    """The tracer at Module.__call__ while a run is recorded: tags each
    kernel call with the leaf module that makes it and which of its calls
    it is (the per-layer benchmark times a replay by those tags)."""

    def __init__(self):
        self.counts = {}

    def call(self, module, args, kwargs, method="forward"):
        if module.named_children():
            return getattr(module, method)(*args, **kwargs)
        rec = _replay.recorder()
        if rec is None:
            return getattr(module, method)(*args, **kwargs)
        k = self.counts[id(module)] = self.counts.get(id(module), -1) + 1
        before = rec.owner
        rec.owner = (module, k)
        TRACE.tracer = None   # a leaf's own calls (ReLU.forward_sum asks the hook again)
        try:
            return getattr(module, method)(*args, **kwargs)
        finally:
            TRACE.tracer = self
            rec.owner = before


def _check_input(x):
    """The second input a recording is checked on (fixed: reproducible)."""
    return np.random.default_rng(0x5EED).standard_normal(x.shape).astype(x.dtype)


def _model_state(model) -> list:
    """What a recorded run of model depends on: its modules, their public
    attributes and their parameters' arrays (compared by identity)."""
    state = []
    for m in model.modules():
        state.append(m)
        for k, v in vars(m).items():
            if k[:1] != "_":
                state.append(v)
                if isinstance(v, Parameter):
                    state.append(v.data)
    return state


def _same_objects(a, b) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _arrays(model):
    """Every parameter value, gradient and buffer array of model's tree."""
    for m in model.modules():
        for _, p in m._own_parameters():
            yield p.data
            if p.grad is not None:
                yield p.grad
        for _, b in m._own_buffers():
            yield b


def fuse(model: Module) -> InferenceModel:
    """Module.fuse(): the model is copied (never modified), put in eval
    mode, and its stages folded (see the module docstring).

    The copy first shares the model's arrays (a deep copy of VGG-16 would
    cost its 550 MB once more, and folding again); what fusing leaves
    unfolded is then copied, so the result shares no memory with model.
    Its arrays are read-only: an in-place edit could not reach the packed
    weights and the recorded runs (cnnfast._replay) built from them;
    load_state_dict replaces arrays, which both notice."""
    shared = {id(a): a for a in _arrays(model)}
    saved = {}
    for m in model.modules():   # the copy does not need the last forward's caches
        saved[id(m)] = m._cache
        m._cache = None
    try:
        twin = copy.deepcopy(model, dict(shared))
    finally:
        for m in model.modules():
            m._cache = saved[id(m)]
    twin.eval()
    fused = fuse_tree(twin)
    _mark_chain_inputs(fused)
    for m in fused.modules():
        for _, p in m._own_parameters():
            p.grad = None
            if id(p.data) in shared:
                p.data = p.data.copy()
            p.data.flags.writeable = False
        for k, b in m._own_buffers():
            if id(b) in shared:
                b = b.copy()
                setattr(m, k, b)
            if isinstance(b, np.ndarray):
                b.flags.writeable = False
    if getattr(fused, "owns_layout", False):
        return InferenceModel(fused, fused.layout, fused.data_format, converts=False)
    layout = data_format = _data_format(fused)
    if data_format == "channels_first" and _runs_channels_last(fused):
        set_data_format(fused, "channels_last")
        layout = "channels_last"
    return InferenceModel(fused, layout, data_format or "channels_first")


def _data_format(model):
    """The data_format every layer of model shares (None: mixed)."""
    formats = {m.data_format for m in model.modules() if hasattr(m, "data_format")}
    return formats.pop() if len(formats) == 1 else (None if formats else "channels_first")


def _runs_channels_last(model) -> bool:
    """Can a fused channels-first model run channels-last inside? When every
    module is one of cnnfast's own (layers and model blocks, which all honour
    data_format; a user's module may assume NCHW in its forward) and every
    convolution has a channels-last kernel (P.nhwc_layer_ok, or depthwise:
    LeNet's 6-channel conv1 has none, and would pay two layout copies per call)."""
    from .. import _plan
    for m in model.modules():
        if not type(m).__module__.startswith(("cnnfast.nn.", "cnnfast.models.")):
            return False
        if isinstance(m, _CONVS + (FusedConv2d,)):
            w = m.weight.data
            depthwise = m.groups > 1 and w.shape[1] == 1   # groups == C_in: its NHWC kernels
            if not (depthwise or _plan.nhwc_layer_ok(w.shape[0] // m.groups, m.padding_mode,
                                                     w.dtype)):
                return False
    return True


def _to_last_in(x):
    """A channels-first model input as the channels-last array the fused
    model runs on (anything else is passed on for the layers to judge)."""
    if (isinstance(x, np.ndarray) and x.ndim >= 3 and x.dtype.kind == "f"
            and x.dtype.itemsize in (4, 8)):
        return _to_last(np.require(x, x.dtype.newbyteorder("="), ("C_CONTIGUOUS", "ALIGNED")))
    return x


def _to_first_out(y):
    """The fused model's channels-last output as the caller's channels-first
    one: arrays with spatial dims are converted, (N, features) pass through."""
    if isinstance(y, tuple):
        return type(y)(*map(_to_first_out, y)) if hasattr(y, "_fields") else tuple(
            map(_to_first_out, y))
    return _to_first(y) if isinstance(y, np.ndarray) and y.ndim >= 3 else y
