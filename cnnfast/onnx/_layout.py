"""The layout pass of a fused ONNX model (OnnxModel.fuse()): the graph runs
channels-last inside, on the kernels cnnfast's own fused models use.

Every 4-D and 5-D value carries its layout: NCHW as ONNX defines it, or
NHWC (NDHWC: the channel axis moved last) after a layout-aware operator.
Each operator gets a rule at fuse() time, from its type:
  native     Conv (as FusedConv2d with data_format="channels_last": the NHWC
             direct and Winograd kernels, weights packed once), ConvTranspose,
             BatchNormalization, the pools (global ones too): their 4-D/5-D
             inputs are made NHWC (a caller's NCHW input is converted once,
             here, by its first reader), their outputs are NHWC;
  follow     elementwise functions (Relu, Clip, Sigmoid, Cast, ...): the
             output has the input's layout;
  broadcast  Add/Sub/Mul/Div, Where, PRelu: an NCHW operand broadcast
             against an NHWC one (a per-channel constant (C, 1, 1)) is
             re-laid out as a view; a full-size NCHW operand is converted;
  axis       Concat, Split, Softmax, LogSoftmax, ReduceX, Pad, Resize: run
             with their axes mapped (NCHW axis 1 -> last, k >= 2 -> k - 1);
  Shape      reports the NCHW shape of an NHWC value (no copy);
  Transpose  between the two orders moves nothing (see _transpose).
Any other operator (Flatten, Reshape, Transpose, Squeeze, Gather, Slice,
Gemm, ...) depends on NCHW memory order: its NHWC inputs are converted to
NCHW first. A value with 1x1 spatial size (after a global pool) or one
channel has the same memory order in both layouts, and that conversion is
a reshape (no copy). Each conversion of the last call is listed in
OnnxModel.layout_conversions (node, value, direction, copy or free).

Whether a model runs channels-last is the rule of cnnfast's own fused
models (cnnfast.nn.fuse._runs_channels_last): every convolution is 2-D
with a channels-last kernel (_plan.nhwc_layer_ok: enough output channels
per group, or depthwise: one input channel per group) and none is transposed (its channels-last call copies to NCHW
and back). channels_last_pays() says why not, for the model's
layout_reason.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from .. import _plan
from .. import functional as F
from .._ops.data_format import _first_view, _shape_first, _to_first, _to_last
from . import _layers as L
from . import _ops as O

RANKS = (4, 5)   # (N, C, H, W) and (N, C, D, H, W) values are laid out NHWC / NDHWC
TO_LAST, TO_FIRST = "NCHW->NHWC", "NHWC->NCHW"


def channels_last_pays(ops):
    """(True, "") when the graph runs channels-last inside, else (False, why)."""
    convs = 0
    for op in ops:
        if type(op) is L.ConvTranspose:
            return False, f"ConvTranspose node {op._node!r} has no channels-last kernel"
        if type(op) in (L.Conv, L.FusedConv):
            w = (op.fused if type(op) is L.FusedConv else op).weight.data
            groups = (op.fused if type(op) is L.FusedConv else op).groups
            if w.ndim != 4:
                return False, f"Conv node {op._node!r} is not 2-D"
            depthwise = groups > 1 and w.shape[1] == 1   # groups == C_in: its NHWC kernels
            if not depthwise and not _plan.nhwc_layer_ok(w.shape[0] // groups, "zeros", w.dtype):
                return False, (f"Conv node {op._node!r} has {w.shape[0] // groups} output "
                               f"channel(s) per group: too few for the channels-last kernel")
            convs += 1
    if not convs:
        return False, "the graph has no convolution"
    return True, ""


def axis_last(axis, rank):
    """The NHWC axis holding what NCHW axis `axis` (normalised) holds."""
    return 0 if axis == 0 else rank - 1 if axis == 1 else axis - 1


def relaid(x, rank):
    """An NCHW-broadcast operand (rank <= rank) as a view broadcasting the
    same way against an NHWC value of that rank."""
    x = np.asarray(x)
    return np.moveaxis(x.reshape((1,) * (rank - x.ndim) + x.shape), 1, -1)


def _is_spatial(x):
    return isinstance(x, np.ndarray) and x.ndim in RANKS and x.dtype.kind == "f"


class _Fallback(Exception):
    """A rule that cannot run this call's values: run the operator on NCHW."""


# ------------------------------------------------------------- native rules

def _conv(op, x, *unused):
    pads = op._pads(_first_view(x))
    return (getattr(F, f"conv{op.nd}d")(x, op.weight.data,
                                        None if op.bias is None else op.bias.data, op.stride,
                                        pads, op.dilation, op.groups,
                                        data_format="channels_last"),)


def _conv_transpose(op, x, *unused):
    return (getattr(F, f"conv_transpose{op.nd}d")(
        x, op.weight.data, None if op.bias is None else op.bias.data,
        **op._args(_first_view(x)), data_format="channels_last"),)


def _pool(op, x):
    pads = op._pads(_first_view(x))
    if op.kind == "max":
        return (getattr(F, f"max_pool{op.nd}d")(x, op.kernel_size, op.stride, pads, op.dilation,
                                                op.ceil_mode, data_format="channels_last"),)
    return (getattr(F, f"avg_pool{op.nd}d")(x, op.kernel_size, op.stride, pads, op.ceil_mode,
                                            op.count_include_pad,
                                            data_format="channels_last"),)


def _global_pool(op, x):
    if x.ndim == 4:
        fn = F.global_avg_pool2d if op.kind == "avg" else F.global_max_pool2d
        return (fn(x, keepdims=True, data_format="channels_last"),)
    axes = tuple(range(1, x.ndim - 1))
    return (x.mean(axis=axes, keepdims=True, dtype=x.dtype) if op.kind == "avg"
            else x.max(axis=axes, keepdims=True),)


def _batch_norm(op, x, *unused):
    """Eval mode's per-channel affine map, over the last axis."""
    scale = op.weight.data.astype(np.float64) / np.sqrt(
        op.running_var.astype(np.float64) + op.eps)
    shift = op.bias.data.astype(np.float64) - op.running_mean.astype(np.float64) * scale
    y = x * scale.astype(x.dtype)
    y += shift.astype(x.dtype)
    return (y,)


def _fused_conv(op, *xs):
    return op(*xs)   # its FusedConv2d has data_format="channels_last" (plan's __init__)


_GLOBAL_POOLS = {"ReduceMean": F.global_avg_pool2d, "ReduceMax": F.global_max_pool2d}
NATIVE = {L.FusedConv: _fused_conv, L.Conv: _conv, L.ConvTranspose: _conv_transpose,
          L.Pool: _pool, L.GlobalPool: _global_pool, L.BatchNorm: _batch_norm}
FOLLOW = (O.Activation, O.Clip, O.Identity, O.Dropout, O.Cast, O.Unary)
BROADCAST = (O.Binary, O.Where, O.PRelu)
AXIS = (O.Concat, O.Split, O.Softmax, O.LogSoftmax, O.Reduce, L.Pad, L.Resize)


def rule_of(op):
    kind = type(op)   # exact types: BiasAdd (a Binary) holds an NCHW-ordered constant
    if kind in NATIVE:
        return "native"
    if kind in FOLLOW:
        return "follow"
    if kind in BROADCAST:
        return "broadcast"
    if kind in AXIS:
        return "axis"
    if kind is O.Shape:
        return "shape"
    if kind is O.Transpose:
        return "transpose"
    return None


class LayoutPlan:
    """The rules of one fused graph and its executor (OnnxModel.forward in
    eval mode calls run)."""

    def __init__(self, model):
        self.rules = [rule_of(op) for op in model._ops]
        for op in model._ops:
            if type(op) is L.FusedConv:
                op.fused.data_format = "channels_last"
        self._variants = {}
        self.conversions = []

    # ----------------------------------------------------------- helpers
    def _variant(self, op, **attrs):
        """A copy of op with its axis attributes for NHWC values (cached)."""
        key = (id(op),) + tuple(sorted(attrs.items()))
        entry = self._variants.get(key)
        if entry is None or entry[0] is not op:   # (a copied plan's ids are stale)
            v = copy.copy(op)
            for name, value in attrs.items():
                setattr(v, name, value)
            entry = self._variants[key] = (op, v)
        return entry[1]

    def _relayout(self, env, last, name, to_last, node):
        """env[name] converted in place (later readers see the new layout)."""
        x = env[name]
        spatial = x.shape[1:-1] if not to_last else x.shape[2:]
        channels = x.shape[-1] if not to_last else x.shape[1]
        free = math.prod(spatial) == 1 or channels == 1
        if to_last:
            env[name] = _to_last(np.ascontiguousarray(x))
            last.add(name)
        else:
            env[name] = _to_first(x)
            last.discard(name)
        self.conversions.append((node, name, TO_LAST if to_last else TO_FIRST,
                                 "free" if free else "copy"))
        return env[name]

    # ----------------------------------------------------------------- run
    def run(self, model, inputs):
        """model's outputs (in its data_format) for checked inputs: a list
        of (array, is_channels_last)."""
        self.conversions = []
        env = dict(model._consts)
        last = set()
        for name, (x, is_last) in zip(model._input_names, inputs):
            env[name] = x
            if is_last:
                last.add(name)
        op = None
        try:
            for op, args, outs, frees, rule in zip(model._ops, model._args, model._outs,
                                                   model._frees, self.rules):
                values, out_last = self._step(op, rule, args, env, last)
                env.update(zip(outs, values))
                last.update(n for n, f in zip(outs, out_last) if f)
                last.difference_update(n for n, f in zip(outs, out_last) if not f)
                for name in frees:
                    del env[name]
                    last.discard(name)
        except (ValueError, TypeError, IndexError) as e:
            from ._model import _op_label
            raise ValueError(f"{_op_label(op)}: {e}") from e
        outputs = []
        for name in model._output_names:
            want_last = model.data_format == "channels_last"
            if name in last and not want_last:
                self._relayout(env, last, name, False, "(graph output)")
            elif name not in last and want_last and _is_spatial(env[name]):
                self._relayout(env, last, name, True, "(graph output)")
            outputs.append(env[name])
        return outputs

    def _step(self, op, rule, args, env, last):
        node = op._node
        flagged = [bool(n) and n in last for n in args]
        if rule == "native":
            x = env[args[0]]
            if x.ndim == op_rank(op, x):
                for n in args:
                    if n and n not in last and _is_spatial(env[n]):
                        self._relayout(env, last, n, True, node)
                xs = [env[n] if n else None for n in args]
                ys = NATIVE[type(op)](op, *xs)
                return ys, [y.ndim in RANKS for y in ys]
        elif rule is not None and (any(flagged) or rule == "transpose"):
            try:
                return getattr(self, "_" + rule)(op, args, env, last)
            except _Fallback:
                pass
        for n, f in zip(args, flagged):   # NCHW semantics: NHWC inputs go back
            if f:
                self._relayout(env, last, n, False, node)
        ys = op(*[env[n] if n else None for n in args])
        return ys, [False] * len(ys)

    def _follow(self, op, args, env, last):
        x = env[args[0]]
        ys = op(x, *[env[n] if n else None for n in args[1:]])
        return ys, [isinstance(y, np.ndarray) and y.ndim == x.ndim for y in ys]

    def _same_rank_last(self, args, env, last, node, rank):
        """Make every full-rank NCHW float input NHWC (Concat's parts)."""
        for n in args:
            if n and n not in last and _is_spatial(env[n]):
                if env[n].ndim != rank:
                    raise _Fallback
                self._relayout(env, last, n, True, node)

    def _broadcast(self, op, args, env, last):
        ranks = {env[n].ndim for n in args if n and n in last}
        if len(ranks) != 1:
            raise _Fallback
        rank = ranks.pop()
        xs = []
        for n in args:
            x = env[n] if n else None
            if n and n not in last and isinstance(x, np.ndarray):
                if x.ndim > rank:
                    raise _Fallback
                if x.ndim == rank and math.prod(x.shape[2:]) > 1 and x.shape[1] > 1:
                    x = self._relayout(env, last, n, True, op._node)   # full-size: a copy
                else:
                    x = relaid(x, rank)
            xs.append(x)
        if type(op) is O.PRelu:
            x = env[args[0]]
            s = relaid(op.slope.data.reshape(op.shape), rank)
            return (np.where(x > 0, x, x * s),), [True]
        ys = op(*xs)
        return ys, [y.ndim == rank for y in ys]

    def _axis(self, op, args, env, last):
        x = env[args[0]]
        rank = x.ndim
        kind = type(op)
        if kind is O.Concat:
            self._same_rank_last(args, env, last, op._node, rank)
            v = self._variant(op, axis=axis_last(O.norm_axis(op.axis, rank, "Concat"), rank))
            return v(*[env[n] for n in args]), [True]
        if kind is O.Split:
            v = self._variant(op, axis=axis_last(O.norm_axis(op.axis, rank, "Split"), rank))
            ys = v(*[env[n] if n else None for n in args])
            return ys, [True] * len(ys)
        if kind in (O.Softmax, O.LogSoftmax):
            axis = O.norm_axis(op.axis, rank, "Softmax")
            if op.flatten:   # over the dims from axis on: the same set in NHWC for 0 and 1
                if axis > 1:
                    raise _Fallback
                return op(x), [True]
            return self._variant(op, axis=axis_last(axis, rank))(x), [True]
        if kind is O.Reduce:
            return self._reduce(op, args, env, rank)
        if kind is L.Pad:
            return self._pad(op, args, env, rank)
        axes = range(rank) if op.axes is None else [a % rank for a in op.axes]   # Resize
        v = self._variant(op, axes=tuple(axis_last(a, rank) for a in axes))
        return v(*[env[n] if n else None for n in args]), [True]

    def _reduce(self, op, args, env, rank):
        x = env[args[0]]
        given = env[args[1]] if len(args) > 1 and args[1] else None
        axes = op.axes if given is None else O.ints(given, "axes")
        if not axes:
            if op.noop:
                return (x,), [True]
            axes = range(rank)
        axes = {O.norm_axis(a, rank, op.kind) for a in axes}
        # without keepdims the kept dims come out in NCHW order only when the
        # channel axis or every spatial axis is reduced
        if not op.keepdims and 1 not in axes and not set(range(2, rank)) <= axes:
            raise _Fallback
        pool = _GLOBAL_POOLS.get(op.kind)
        if rank == 4 and axes == {2, 3} and pool is not None and x.dtype.kind == "f":
            # a classifier head's mean over H, W: the global pooling kernel
            return (pool(x, keepdims=bool(op.keepdims), data_format="channels_last"),), \
                [bool(op.keepdims)]
        v = self._variant(op, axes=tuple(sorted(axis_last(a, rank) for a in axes)))
        y = v(x)
        return y, [bool(op.keepdims)]

    def _pad(self, op, args, env, rank):
        xs = [env[n] if n else None for n in args] + [None] * (4 - len(args))
        axes = op.axes if xs[3] is None else O.ints(xs[3], "axes")
        axes = range(rank) if axes is None else [O.norm_axis(a, rank, "Pad") for a in axes]
        mapped = np.array([axis_last(a, rank) for a in axes], np.int64)
        return op(xs[0], xs[1], xs[2], mapped), [True]

    def _transpose(self, op, args, env, last):
        """A Transpose between the layouts (NCHW -> NHWC as opset-11 softmax
        exports and tf2onnx write it, or back) moves no data: an NHWC value
        transposed to NHWC order is that array, an NHWC-ordered array
        transposed to NCHW is that array as an NHWC value. Others read the
        NHWC value as its NCHW view (one copy, the Transpose's own)."""
        x = env[args[0]]
        rank = x.ndim
        if rank not in RANKS or op.perm is None:
            raise _Fallback
        perm = tuple(p % rank for p in op.perm)
        to_first = (0, rank - 1) + tuple(range(1, rank - 1))
        if args[0] in last:
            y = _first_view(x).transpose(perm)
            return (y if y.flags.c_contiguous else np.ascontiguousarray(y),), [False]
        if perm == to_first and _is_spatial(x):
            return (x,), [True]
        raise _Fallback

    def _shape(self, op, args, env, last):
        shape = _shape_first(env[args[0]].shape)
        return (np.array(shape[op.start:op.end], dtype=np.int64),), [False]


def op_rank(op, x):
    """The input rank a native operator's channels-last call takes."""
    if type(op) in (L.GlobalPool, L.BatchNorm):
        return x.ndim if x.ndim in RANKS else -1
    nd = op.fused._nd if type(op) is L.FusedConv else op.nd
    return nd + 2 if nd + 2 in RANKS else -1
