"""ONNX nodes -> cnnfast operators, at load time.

Walks the (topologically sorted) graph once. A node whose inputs are all
constants is evaluated right away (constant folding: the Shape, Gather,
Cast, Concat ... chains exporters write for static shapes, Identity copies
of merged initializers, Constant nodes); every other node becomes an
operator (cnnfast.onnx._ops, _layers). Each operator's attributes are read
in the forms of every opset from 9 on, and anything cnnfast cannot run
raises ValueError here, naming the node, never at call time.

Parameters: the constants a node consumes as Conv/ConvTranspose weight and
bias, Gemm/MatMul matrix and bias, BatchNormalization scale and bias and
PRelu slope become Parameters keyed by the name the node uses for them
(an initializer's name, or an Identity's output name where the exporter
merged equal initializers: so layers that were separate stay separate).
Two nodes naming the same constant share one Parameter (tied weights).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from ..nn.module import Parameter
from . import _layers as L
from . import _ops as O
from ._read import _DTYPES, FLOAT_TYPES, static_shape, to_array

_ACTIVATIONS = {"Relu": (), "Sigmoid": (), "Tanh": (), "HardSwish": (),
                "LeakyRelu": (("alpha", 0.01),), "Elu": (("alpha", 1.0),),
                "HardSigmoid": (("alpha", 0.2), ("beta", 0.5))}
# operators that fold to a reshaped view of their first input
_RESHAPES = ("Unsqueeze", "Squeeze", "Reshape", "Flatten")
_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                  "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def node_label(node):
    return f"{node.op_type} node {node.name!r}" if node.name else \
        f"{node.op_type} node (unnamed, output {node.output[0]!r})"


class Refused(ValueError):
    pass


def refuse(node, why):
    raise Refused(f"{node_label(node)}: {why}")


def attributes(node) -> dict:
    out = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS,
                      onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS):
            refuse(node, f"attribute {a.name!r} holds a graph or sparse tensor")
        v = onnx.helper.get_attribute_value(a)
        if a.type == onnx.AttributeProto.FLOAT:
            v = _intended(v)
        elif a.type == onnx.AttributeProto.FLOATS:
            v = [_intended(x) for x in v]
        out[a.name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return out


def _intended(v):
    """A float attribute (stored as float32) as the number the exporter
    wrote: the shortest decimal that rounds to it (eps 1e-5, not
    9.99999974738e-06), so float64 models match their source exactly."""
    return float(str(np.float32(v)))


class Builder:
    """Collects the operators, constants and state of one graph."""

    def __init__(self, proto, dtype):
        graph = proto.graph
        self.dtype = dtype
        self.opset = next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))
        self.consts = {}
        self.origin = {}        # folded reshape of an initializer -> (its name, shape)
        self.params = {}        # name -> Parameter (one per name: tied when shared)
        self.state = []         # (key, op, attribute) in graph order
        self.ops = []           # (op, argument names (None: a parameter slot), output names)
        self.producers = {}     # value name -> the operator computing it at run time
        self.shapes = {}
        for v in list(graph.value_info) + list(graph.input) + list(graph.output):
            self.shapes[v.name] = static_shape(v.type)
        for t in graph.initializer:
            self.consts[t.name] = self.convert(to_array(t, f"initializer {t.name!r}"))
        self.inputs = [v.name for v in graph.input if v.name not in self.consts]
        self.outputs = [v.name for v in graph.output]
        self.available = set(self.consts) | set(self.inputs)
        self.consumers = {}
        for node in graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for name in self.outputs:
            self.consumers[name] = self.consumers.get(name, 0) + 1
        for node in graph.node:
            self.add(node)
        missing = [n for n in self.outputs if n not in self.available]
        if missing:
            raise ValueError(f"f: the graph's outputs {missing} are produced by no node")

    # ------------------------------------------------------------ values
    def convert(self, a):
        """A constant in the model's arithmetic: floats in its dtype."""
        return a.astype(self.dtype) if a.dtype.kind == "f" else a

    def const(self, node, i):
        """Input i of node as a constant array, None when absent (optional)."""
        if i >= len(node.input) or not node.input[i]:
            return None
        return self.consts.get(node.input[i])

    def is_const(self, node, i):
        return i < len(node.input) and node.input[i] in self.consts

    def param(self, node, i, attr, role=None, reshaped=False):
        """Input i as a Parameter (None when absent), entered in the state
        under its name as the node's operator's `attr` once it is built.
        reshaped=True: an input folded from a reshape of an initializer
        (torch writes PRelu's slope as Unsqueeze(prelu.weight)) is the
        initializer itself, in its own shape (the operator reshapes it)."""
        if i >= len(node.input) or not node.input[i]:
            return None
        name = node.input[i]
        if reshaped and name in self.origin:
            name = self.origin[name][0]
        value = self._state_const(node, name, role or attr)
        if value.dtype.kind != "f":
            refuse(node, f"its {role or attr} {name!r} has dtype {value.dtype}, not float")
        if name not in self.params:
            self.params[name] = Parameter(value.copy())
        self.pending.append((name, attr))
        return self.params[name]

    def buffer(self, node, i, attr):
        """Input i as a new buffer array of the node's operator (state key: its name)."""
        name = node.input[i]
        value = self._state_const(node, name, attr)
        self.pending.append((name, attr))
        return value.copy()

    def _state_const(self, node, name, role):
        if name not in self.consts:
            refuse(node, f"its {role} {name!r} must be a constant (an initializer), not a "
                         f"value computed at run time")
        return self.consts[name]

    def spatial(self, node, i=0):
        """The static spatial size of input i, or None where unknown."""
        shape = self.shapes.get(node.input[i])
        if shape is None or len(shape) < 3 or any(not isinstance(d, int) for d in shape[2:]):
            return None
        return shape[2:]

    # ------------------------------------------------------------- nodes
    def add(self, node):
        for name in node.input:
            if name and name not in self.available:
                refuse(node, f"its input {name!r} is produced by no earlier node (the graph "
                             f"is not sorted, or an output cnnfast does not compute is used)")
        if node.op_type == "Constant":
            self.consts[node.output[0]] = self._constant(node)
            self.available.add(node.output[0])
            return
        if node.op_type == "Shape" and self._fold_shape(node):
            return
        build = BUILDERS.get(node.op_type)
        if build is None:
            raise Refused(f"{node_label(node)}: operator {node.op_type!r} is not supported by "
                          f"cnnfast.onnx; supported: {', '.join(supported_operators())}")
        at = attributes(node)
        fold = all(not n or n in self.consts for n in node.input) and node.input
        self.pending = []
        op, args, produced = build(self, node, at)
        op._node = node.name or node.output[0]
        op._op_type = node.op_type
        for i, name in enumerate(node.output):
            if name and i >= produced and self.consumers.get(name):
                refuse(node, f"its output {i} ({name!r}) is used, but cnnfast computes only "
                             f"the first {produced} output(s) of {node.op_type}")
        outputs = list(node.output[:produced])
        if fold:   # a constant subgraph: its constants stay constants
            op.eval()
            op.size_limit = O.CONST_MAX
            try:
                values = op(*[self.consts.get(n) if n else None for n in node.input])
            except (ValueError, TypeError, IndexError) as e:
                refuse(node, f"cannot be evaluated on its constant inputs: {e}")
            for name, v in zip(outputs, values):
                v = np.asarray(v)
                O.check_size(v.shape, node_label(node))
                self.consts[name] = v
            if node.op_type in _RESHAPES:
                source = node.input[0]
                self.origin[outputs[0]] = self.origin.get(
                    source, (source, self.consts[source].shape))
        else:
            self.state += [(name, op, attr) for name, attr in self.pending]
            self.ops.append((op, args, outputs))
            self.producers.update((name, op) for name in outputs)
        self.available.update(outputs)

    def _fold_shape(self, node):
        """Shape of a value whose shape is static (the graph's inputs are
        checked against their declared shapes at every call): a constant."""
        shape = self.shapes.get(node.input[0])
        if shape is None or not all(isinstance(d, int) for d in shape):
            return False
        at = attributes(node)
        value = np.array(shape, dtype=np.int64)[at.get("start", 0):at.get("end")]
        self.consts[node.output[0]] = value
        self.available.add(node.output[0])
        return True

    def _constant(self, node):
        at = attributes(node)
        if "value" in at:
            return self.convert(to_array(at["value"], f"attribute 'value' of "
                                         f"{node_label(node)}"))
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in at:
                return self.convert(np.array(at[key], dtype=dtype))
        refuse(node, f"a Constant with {sorted(at)} is not supported (value, value_float(s), "
                     f"value_int(s) are)")


def _nd_tuple(node, at, key, nd, default):
    v = tuple(at.get(key, (default,) * nd))
    if len(v) != nd:
        refuse(node, f"attribute {key}={list(v)} must have {nd} entries")
    if any(x < default for x in v):
        refuse(node, f"attribute {key}={list(v)} must hold ints >= {default}")
    return v


def _padding(b, node, at, nd, kernel, stride, dilation):
    """(fixed (before, after) pairs or None, auto_pad)."""
    auto_pad = at.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        refuse(node, f"auto_pad={auto_pad!r} is not an ONNX padding mode")
    if auto_pad == "NOTSET":
        pads = tuple(at.get("pads", (0,) * 2 * nd))
        if len(pads) != 2 * nd or any(p < 0 for p in pads):
            refuse(node, f"pads={list(pads)} must be {2 * nd} non-negative ints")
        return tuple((pads[i], pads[i + nd]) for i in range(nd)), auto_pad
    spatial = b.spatial(node)
    if auto_pad == "VALID" or spatial is not None:
        return L.auto_pads(auto_pad, spatial or (1,) * nd, kernel, stride, dilation), auto_pad
    return None, auto_pad


def _conv(b, node, at):
    """Conv and ConvTranspose, 1-D to 3-D."""
    w = b.const(node, 1)
    if w is None:
        refuse(node, "its weight must be a constant (an initializer)")
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        refuse(node, f"a weight of shape {w.shape}: cnnfast runs 1-D, 2-D and 3-D "
                     f"convolutions")
    kernel = tuple(w.shape[2:])
    if "kernel_shape" in at and tuple(at["kernel_shape"]) != kernel:
        refuse(node, f"kernel_shape={at['kernel_shape']} disagrees with the weight's shape "
                     f"{w.shape}")
    stride = _nd_tuple(node, at, "strides", nd, 1)
    dilation = _nd_tuple(node, at, "dilations", nd, 1)
    groups = int(at.get("group", 1))
    if groups < 1:
        refuse(node, f"group={groups} must be positive")
    args = [node.input[0], None, None]
    weight, bias = b.param(node, 1, "weight"), b.param(node, 2, "bias")
    if node.op_type == "Conv":
        if w.shape[0] % groups:
            refuse(node, f"group={groups} must divide the {w.shape[0]} output channels")
        padding, auto_pad = _padding(b, node, at, nd, kernel, stride, dilation)
        return L.Conv(node.name, weight, bias, stride, dilation, groups, padding,
                      auto_pad), args, 1
    auto_pad = at.get("auto_pad", "NOTSET")
    padding = None
    if auto_pad in ("NOTSET", "VALID"):
        padding, _ = _padding(b, node, at, nd, kernel, stride, dilation)
    elif auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        refuse(node, f"auto_pad={auto_pad!r} is not an ONNX padding mode")
    out_pad = _nd_tuple(node, at, "output_padding", nd, 0) if "output_padding" in at \
        else (0,) * nd
    for r, s, d in zip(out_pad, stride, dilation):
        if r < 0 or (r >= s and r >= d):
            refuse(node, f"output_padding={list(out_pad)} must be smaller than the stride "
                         f"or the dilation")
    out_shape = at.get("output_shape")
    if out_shape is not None:
        out_shape = tuple(out_shape)[-nd:]
    return L.ConvTranspose(node.name, weight, bias, stride, dilation, groups, padding,
                           auto_pad, out_pad, out_shape), args, 1


def _batch_norm(b, node, at):
    if at.get("spatial", 1) != 1:
        refuse(node, "spatial=0 (per-activation statistics) is not supported")
    weight, bias = b.param(node, 1, "weight", "scale"), b.param(node, 2, "bias", "bias")
    mean, var = b.buffer(node, 3, "running_mean"), b.buffer(node, 4, "running_var")
    momentum = 1 - float(at.get("momentum", 0.9))
    op = L.BatchNorm(node.name, weight, bias, mean, var, at.get("epsilon", 1e-5), momentum)
    return op, [node.input[0], None, None, None, None], 1


def _pool(b, node, at):
    kind = "max" if node.op_type == "MaxPool" else "avg"
    kernel = tuple(at.get("kernel_shape", ()))
    nd = len(kernel)
    if nd not in (1, 2, 3):
        refuse(node, f"kernel_shape={list(kernel)}: cnnfast pools 1-D, 2-D and 3-D windows")
    stride = _nd_tuple(node, at, "strides", nd, 1)
    dilation = _nd_tuple(node, at, "dilations", nd, 1)
    if kind == "avg" and any(d != 1 for d in dilation):
        refuse(node, f"dilations={list(dilation)}: cnnfast's average pooling has no dilation")
    if at.get("storage_order", 0) != 0 and b.consumers.get(node.output[1] if
                                                          len(node.output) > 1 else ""):
        refuse(node, "storage_order=1 indices are not supported")
    padding, auto_pad = _padding(b, node, at, nd, kernel, stride, dilation)
    op = L.Pool(node.name, kind, kernel, stride, dilation, padding, auto_pad,
                bool(at.get("ceil_mode", 0)), bool(at.get("count_include_pad", 0)))
    return op, [node.input[0]], 1


def _global_pool(b, node, at):
    kind = "max" if node.op_type == "GlobalMaxPool" else "avg"
    return L.GlobalPool(node.name, kind), [node.input[0]], 1


def _activation(b, node, at):
    extra = {k: float(at.get(k, d)) for k, d in _ACTIVATIONS[node.op_type]}
    return O.Activation(node.name, node.op_type, **extra), [node.input[0]], 1


def _clip(b, node, at):
    if b.opset < 11:
        lo, hi = at.get("min"), at.get("max")
        lo = None if lo is None or lo <= -3.4e38 else lo
        hi = None if hi is None or hi >= 3.4e38 else hi
        return O.Clip(node.name, lo, hi), [node.input[0]], 1
    args, bounds = [node.input[0]], []
    for i in (1, 2):
        value = b.const(node, i)
        bounds.append(None if value is None else value.item())
        args.append(node.input[i] if i < len(node.input) and node.input[i]
                    and value is None else None)
    return O.Clip(node.name, *bounds), args, 1


def _prelu(b, node, at):
    slope = b.param(node, 1, "slope", reshaped=True)
    return O.PRelu(node.name, slope, b.consts[node.input[1]].shape), [node.input[0], None], 1


def _softmax(b, node, at):
    flatten = b.opset < 13
    axis = int(at.get("axis", 1 if flatten else -1))
    return O.Softmax(node.name, axis, flatten), [node.input[0]], 1


def _log_softmax(b, node, at):
    flatten = b.opset < 13
    axis = int(at.get("axis", 1 if flatten else -1))
    return O.LogSoftmax(node.name, axis, flatten), [node.input[0]], 1


def _split(b, node, at):
    axis, count = int(at.get("axis", 0)), len(node.output)
    if "num_outputs" in at and at["num_outputs"] != count:
        refuse(node, f"num_outputs={at['num_outputs']} but {count} outputs")
    if b.opset < 13:
        sizes = at.get("split")
        return O.Split(node.name, axis, None if sizes is None else tuple(sizes), count), \
            [node.input[0]], count
    sizes = b.const(node, 1)
    if sizes is not None:
        return O.Split(node.name, axis, O.ints(sizes), count), [node.input[0], None], count
    slot = node.input[1] if len(node.input) > 1 and node.input[1] else None
    return O.Split(node.name, axis, None, count), [node.input[0], slot], count


def _dropout(b, node, at):
    ratio = at.get("ratio", 0.5)
    if b.opset >= 12 and b.is_const(node, 1):
        ratio = float(b.const(node, 1).item())
    elif b.opset >= 12 and len(node.input) > 1 and node.input[1]:
        refuse(node, "its ratio must be a constant")
    if not 0 <= ratio <= 1:
        refuse(node, f"ratio={ratio} must lie in [0, 1]")
    mask = len(node.output) > 1 and bool(b.consumers.get(node.output[1]))
    return O.Dropout(node.name, ratio, mask), [node.input[0]], 2 if mask else 1


def _gemm(b, node, at):
    weight = b.param(node, 1, "weight") if b.is_const(node, 1) else None
    bias = b.param(node, 2, "bias") if b.is_const(node, 2) else None
    args = [node.input[0], None if weight is not None else node.input[1],
            None if bias is not None or len(node.input) < 3 or not node.input[2]
            else node.input[2]]
    op = L.Gemm(node.name, weight, bias, at.get("alpha", 1.0), at.get("beta", 1.0),
                at.get("transA", 0), at.get("transB", 0))
    return op, args, 1


def _matmul(b, node, at):
    if b.is_const(node, 1) and b.const(node, 1).dtype.kind == "f" \
            and not b.is_const(node, 0):
        return L.MatMul(node.name, b.param(node, 1, "weight")), [node.input[0], None], 1
    return L.MatMul(node.name), list(node.input[:2]), 1


def _binary(b, node, at):
    if at.get("broadcast") == 1 and "axis" in at:
        refuse(node, "the legacy broadcast axis attribute is not supported")
    if node.op_type == "Add":
        for slot in (0, 1):
            other = node.input[1 - slot]
            product = b.producers.get(other)
            value = b.const(node, slot)
            if value is not None and value.dtype.kind == "f" and \
                    isinstance(product, L.MatMul) and product.weight is not None \
                    and b.consumers.get(other) == 1:
                args = [None, None]
                args[1 - slot] = other
                return O.BiasAdd(node.name, b.param(node, slot, "bias"), slot), args, 1
    return O.Binary(node.name, node.op_type), list(node.input), 1


def _unary(b, node, at):
    return O.Unary(node.name, node.op_type), list(node.input), 1


def _where(b, node, at):
    return O.Where(node.name), list(node.input), 1


def _identity(b, node, at):
    return O.Identity(node.name), [node.input[0]], 1


def _shape(b, node, at):
    return O.Shape(node.name, at.get("start", 0), at.get("end")), [node.input[0]], 1


def _cast(b, node, at):
    to = at.get("to")
    if to in FLOAT_TYPES:
        dtype = b.dtype
    elif to in _DTYPES:
        dtype = _DTYPES[to]
    else:
        name = TensorProto.DataType.Name(to) if to in TensorProto.DataType.values() else to
        refuse(node, f"Cast to {name} is not supported")
    return O.Cast(node.name, dtype), [node.input[0]], 1


def _constant_of_shape(b, node, at):
    value = at.get("value")
    value = np.zeros(1, np.float32) if value is None else to_array(value, node_label(node))
    if value.size != 1:
        refuse(node, "its value must hold one element")
    return O.ConstantOfShape(node.name, b.convert(value)), [node.input[0]], 1


def _range(b, node, at):
    return O.Range(node.name), list(node.input), 1


def _reshape(b, node, at):
    allowzero = bool(at.get("allowzero", 0))
    shape = b.const(node, 1)
    if shape is not None:
        return O.Reshape(node.name, allowzero, O.ints(shape)), [node.input[0], None], 1
    return O.Reshape(node.name, allowzero), list(node.input[:2]), 1


def _flatten(b, node, at):
    return O.Flatten(node.name, int(at.get("axis", 1))), [node.input[0]], 1


def _transpose(b, node, at):
    perm = at.get("perm")
    return O.Transpose(node.name, None if perm is None else tuple(perm)), [node.input[0]], 1


def _squeeze(b, node, at):
    unsqueeze = node.op_type == "Unsqueeze"
    if b.opset < 13:
        axes = at.get("axes")
        if unsqueeze and axes is None:
            refuse(node, "Unsqueeze needs axes")
        return O.Squeeze(node.name, unsqueeze, None if axes is None else tuple(axes)), \
            [node.input[0]], 1
    axes = b.const(node, 1)
    if axes is not None:
        return O.Squeeze(node.name, unsqueeze, O.ints(axes)), [node.input[0], None], 1
    if len(node.input) > 1 and node.input[1]:
        return O.Squeeze(node.name, unsqueeze), list(node.input[:2]), 1
    if unsqueeze:
        refuse(node, "Unsqueeze needs axes")
    return O.Squeeze(node.name, False), [node.input[0]], 1


def _concat(b, node, at):
    return O.Concat(node.name, int(at["axis"])), list(node.input), 1


def _gather(b, node, at):
    return O.Gather(node.name, int(at.get("axis", 0))), list(node.input), 1


def _slice(b, node, at):
    if b.opset < 10:
        return O.Slice(node.name, tuple(at["starts"]), tuple(at["ends"]),
                       None if "axes" not in at else tuple(at["axes"])), [node.input[0]], 1
    return O.Slice(node.name), list(node.input), 1


def _expand(b, node, at):
    return O.Expand(node.name), list(node.input), 1


def _reduce(b, node, at):
    axes_as_input = b.opset >= (13 if node.op_type == "ReduceSum" else 18)
    keepdims = bool(at.get("keepdims", 1))
    noop = bool(at.get("noop_with_empty_axes", 0))
    if not axes_as_input:
        axes = at.get("axes")
        return O.Reduce(node.name, node.op_type, None if axes is None else tuple(axes),
                        keepdims), [node.input[0]], 1
    axes = b.const(node, 1)
    if axes is not None:
        return O.Reduce(node.name, node.op_type, O.ints(axes), keepdims, noop), \
            [node.input[0], None], 1
    if len(node.input) > 1 and node.input[1]:
        return O.Reduce(node.name, node.op_type, None, keepdims, noop), \
            list(node.input[:2]), 1
    return O.Reduce(node.name, node.op_type, None, keepdims, noop), [node.input[0]], 1


def _pad(b, node, at):
    mode = at.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        refuse(node, f"mode={mode!r} is not supported (constant, reflect, edge, wrap are)")
    if b.opset < 11:
        pads = tuple(at.get("pads", ()))
        return L.Pad(node.name, mode, pads, float(at.get("value", 0.0))), [node.input[0]], 1
    args = list(node.input) + [""] * (4 - len(node.input))
    pads, value, axes = b.const(node, 1), b.const(node, 2), b.const(node, 3)
    op = L.Pad(node.name, mode, None if pads is None else O.ints(pads),
               0.0 if value is None or value.size == 0 else float(value.item()),
               None if axes is None else O.ints(axes))
    return op, [args[0]] + [None if b.is_const(node, i) else (args[i] or None)
                            for i in (1, 2, 3)], 1


def _resize(b, node, at):
    """Resize (opset 10: Upsample's semantics; 11+: the coordinate modes)
    and Upsample."""
    mode = at.get("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        refuse(node, f"mode={mode!r} is not supported (nearest and linear are)")
    mode = "linear" if mode == "bilinear" else mode
    legacy = node.op_type == "Upsample" or b.opset < 11
    if legacy:
        coord, nearest = "asymmetric", "simple"
        scale_input = 1
    else:
        coord = at.get("coordinate_transformation_mode", "half_pixel")
        nearest = at.get("nearest_mode", "round_prefer_floor")
        if coord not in _RESIZE_COORDS:
            refuse(node, f"coordinate_transformation_mode={coord!r} is not supported "
                         f"({', '.join(_RESIZE_COORDS)} are)")
        if mode == "nearest" and nearest not in _NEAREST_MODES:
            refuse(node, f"nearest_mode={nearest!r} is not an ONNX mode")
        if at.get("antialias", 0):
            refuse(node, "antialias=1 is not supported")
        if at.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            refuse(node, "keep_aspect_ratio_policy other than 'stretch' is not supported")
        scale_input = 2
    if node.op_type == "Upsample" and "scales" in at:
        scales, scale_slot = tuple(at["scales"]), None
    else:
        value = b.const(node, scale_input)
        scales = None if value is None or value.size == 0 else \
            tuple(float(s) for s in value.reshape(-1))
        scale_slot = None if value is not None else \
            (node.input[scale_input] if scale_input < len(node.input) else None)
    sizes_value = None if legacy else b.const(node, 3)
    sizes = None if sizes_value is None or sizes_value.size == 0 else O.ints(sizes_value)
    size_slot = None if legacy or sizes_value is not None or len(node.input) < 4 \
        else (node.input[3] or None)
    axes = at.get("axes")
    op = L.Resize(node.name, mode, coord, nearest, scales, sizes,
                  None if axes is None else tuple(axes))
    if legacy:
        return op, [node.input[0], None, scale_slot, None], 1
    return op, [node.input[0], None, scale_slot or None, size_slot], 1


BUILDERS = {"Conv": _conv, "ConvTranspose": _conv, "BatchNormalization": _batch_norm,
            "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool,
            "GlobalMaxPool": _global_pool, "Clip": _clip, "PRelu": _prelu,
            "Softmax": _softmax, "LogSoftmax": _log_softmax, "Split": _split,
            "Dropout": _dropout, "Gemm": _gemm, "MatMul": _matmul,
            "Identity": _identity, "Shape": _shape, "Cast": _cast,
            "ConstantOfShape": _constant_of_shape, "Range": _range, "Reshape": _reshape,
            "Flatten": _flatten, "Transpose": _transpose, "Squeeze": _squeeze,
            "Unsqueeze": _squeeze, "Concat": _concat, "Gather": _gather, "Slice": _slice,
            "Expand": _expand, "Where": _where, "Pad": _pad, "Resize": _resize,
            "Upsample": _resize}
BUILDERS.update({k: _activation for k in _ACTIVATIONS})
BUILDERS.update({k: _binary for k in ("Add", "Sub", "Mul", "Div", "Equal", "Less",
                                      "Greater", "And", "Or")})
BUILDERS.update({k: _unary for k in ("Not", "Floor", "Ceil", "Neg", "Sqrt", "Abs")})
BUILDERS.update({k: _reduce for k in ("ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin")})


def supported_operators():
    return sorted(set(BUILDERS) | {"Constant"})
