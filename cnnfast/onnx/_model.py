"""OnnxModel: a loaded ONNX graph as a cnnfast Module.

forward runs the operators in the file's (topological) order over a table
of named values, dropping each value after its last use; backward walks
them in reverse, summing the gradients of values used more than once (a
fan-out). State-dict keys are the initializers' names (cnnfast.onnx._build).
fuse() folds Conv -> BatchNormalization (-> Relu / Clip(0, 6) / residual
Add (-> Relu)) into cnnfast's fused convolutions (cnnfast.nn.fuse).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._ops.data_format import _shape_first, _shape_last, _to_first, _to_last
from ..nn.module import Module, Parameter
from . import _layers as L
from . import _layout
from . import _ops as O


def _op_label(op):
    return f"{getattr(op, '_op_type', type(op).__name__)} node {op._node!r}"


class OnnxModel(Module):
    """What cnnfast.onnx.load returns: model(*inputs) -> one array (one graph
    output) or a tuple; backward(grad or tuple of grads) -> the inputs'
    gradients (one array or a tuple)."""

    owns_layout = True   # fuse() lays the graph out itself (cnnfast.nn.fuse.InferenceModel)

    def __init__(self, builder, input_shapes, data_format):
        super().__init__()
        self._ops = [op for op, _, _ in builder.ops]
        self._args = [args for _, args, _ in builder.ops]
        self._outs = [outs for _, _, outs in builder.ops]
        self._consts = {k: v for k, v in builder.consts.items()}
        self._state = builder.state
        self._input_names = list(builder.inputs)
        self._output_names = list(builder.outputs)
        self._input_shapes = input_shapes
        self._dtype = np.dtype(builder.dtype)
        self.data_format = data_format
        self._layout_plan = None   # fuse(): the channels-last plan (cnnfast.onnx._layout)
        self.layout_reason = "not fused: only fuse() lays the graph out channels-last"
        self._plan_lifetimes()

    def _plan_lifetimes(self):
        """For each operator, the values it is the last user of (forward frees them)."""
        last = {}
        for i, outs in enumerate(self._outs):   # a value nobody reads goes at once
            last.update((name, i) for name in outs)
        for i, args in enumerate(self._args):
            for name in args:
                if name and name not in self._consts:
                    last[name] = i
        keep = set(self._output_names)
        self._frees = [[] for _ in self._ops]
        for name, i in last.items():
            if name not in keep:
                self._frees[i].append(name)

    # ---------------------------------------------------------- structure
    def named_children(self):
        return [(str(i), op) for i, op in enumerate(self._ops)]

    def named_parameters(self, prefix=""):
        out, seen = [], set()
        for key, op, attr in self._state:
            p = getattr(op, attr)
            if isinstance(p, Parameter) and id(p) not in seen:
                seen.add(id(p))
                out.append((key, p))
        return out

    def named_buffers(self):
        seen = set()
        out = []
        for key, op, attr in self._state:
            b = getattr(op, attr)
            if not isinstance(b, Parameter) and key not in seen:
                seen.add(key)
                out.append((key, b))
        return out

    def _slots(self):
        slots = {}
        for key, op, attr in self._state:
            slots.setdefault(key, (op, attr))
        return slots

    def state_dict(self):
        out = OrderedDict()
        for key, (op, attr) in self._slots().items():
            value = getattr(op, attr)
            out[key] = (value.data if isinstance(value, Parameter) else value).copy()
        return out

    def load_state_dict(self, state_dict, strict=True, assign=False):
        result = super().load_state_dict(state_dict, strict, assign)
        self._retie()
        return result

    def _retie(self):
        """Buffers registered under one key by several operators stay one array."""
        slots = self._slots()
        for key, op, attr in self._state:
            owner, owner_attr = slots[key]
            if owner is not op and not isinstance(getattr(op, attr), Parameter):
                setattr(op, attr, getattr(owner, owner_attr))

    def to(self, dtype):
        super().to(dtype)
        self._retie()
        self._dtype = np.dtype(dtype)
        self._consts = {k: v.astype(dtype) if v.dtype.kind == "f" else v
                        for k, v in self._consts.items()}
        for op in self._ops:
            for name in ("value",):
                v = getattr(op, name, None)
                if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                    setattr(op, name, v.astype(dtype))
            if isinstance(op, O.Cast) and op.dtype.kind == "f":
                op.dtype = np.dtype(dtype)
        return self

    def _first_layer(self):
        """skip_input_grad's layer: the convolution or Gemm that is the one
        reader of the model's one input."""
        if len(self._input_names) != 1:
            return None
        name = self._input_names[0]
        readers = [op for op, args in zip(self._ops, self._args) if name in args]
        if len(readers) == 1 and isinstance(readers[0], (L.Conv, L.ConvTranspose, L.Gemm)) \
                and self._args[self._ops.index(readers[0])][0] == name:
            return readers[0]
        return None

    @property
    def input_names(self):
        return list(self._input_names)

    @property
    def output_names(self):
        return list(self._output_names)

    # ------------------------------------------------------------ compute
    def _checked_input(self, name, x, shape):
        """(x, is_channels_last) after the checks: x as given."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"input {name!r} must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype.newbyteorder("=") != self._dtype:
            raise TypeError(f"input {name!r} has dtype {x.dtype} but the model computes in "
                            f"{self._dtype}; convert one of them (model.to(dtype) or "
                            f"x.astype(...))")
        last = self.data_format == "channels_last" and x.ndim in (4, 5)
        first_shape = _shape_first(x.shape) if last else x.shape
        if shape is not None and (len(shape) != x.ndim or any(
                isinstance(d, int) and d != n for d, n in zip(shape, first_shape))):
            want = tuple(d if isinstance(d, int) else "?" for d in shape)
            if last:
                want = _shape_last(want)
            raise ValueError(f"input {name!r} must have shape {want} (? any size), got "
                             f"{x.shape}")
        return x, last

    def _take_input(self, name, x, shape):
        x, last = self._checked_input(name, x, shape)
        return _to_first(x) if last else x

    def _check_input(self, name, x, shape) -> bool:
        """Validate input `name` (explain_model's dry run); True if it is
        channels-last and converted to channels-first."""
        return self._checked_input(name, x, shape)[1]

    @property
    def layout(self):
        """The layout of the 4-D/5-D activations inside: "channels_last" once
        fuse() laid the graph out (see layout_conversions), else
        "channels_first"."""
        return "channels_first" if self._layout_plan is None else "channels_last"

    @property
    def layout_conversions(self):
        """The layout copies of the last call of a channels-last (fused)
        model: (node, value, "NCHW->NHWC" or "NHWC->NCHW", "copy" or "free"
        (1x1 spatial or one channel: the same memory order, a reshape))."""
        return [] if self._layout_plan is None else list(self._layout_plan.conversions)

    def forward(self, *inputs):
        if len(inputs) != len(self._input_names):
            raise TypeError(f"the model takes {len(self._input_names)} input(s) "
                            f"({', '.join(self._input_names)}), got {len(inputs)}")
        if self._layout_plan is not None:   # fused: inference only, whatever the mode
            outputs = self._layout_plan.run(self, [
                self._checked_input(name, x, self._input_shapes.get(name))
                for name, x in zip(self._input_names, inputs)])
            return outputs[0] if len(outputs) == 1 else tuple(outputs)
        env = dict(self._consts)
        for name, x in zip(self._input_names, inputs):
            env[name] = self._take_input(name, x, self._input_shapes.get(name))
        op = None
        try:
            for op, args, outs, frees in zip(self._ops, self._args, self._outs, self._frees):
                values = op(*[env[n] if n else None for n in args])
                env.update(zip(outs, values))
                for name in frees:
                    del env[name]
        except (ValueError, TypeError, IndexError) as e:
            raise ValueError(f"{_op_label(op)}: {e}") from e
        outputs = []
        for name in self._output_names:
            y = env[name]
            if self.data_format == "channels_last" and y.ndim in (4, 5):
                y = _to_last(np.ascontiguousarray(y))
            outputs.append(y)
        if self.training:
            self._cache = [env[n].shape if n in env else None for n in self._output_names]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def backward(self, grad_out):
        shapes = self._saved()
        grads = (grad_out,) if len(self._output_names) == 1 else tuple(grad_out)
        if len(grads) != len(self._output_names):
            raise ValueError(f"backward needs {len(self._output_names)} gradients (one per "
                             f"output), got {len(grads)}")
        table = {}
        for name, g in zip(self._output_names, grads):
            if g is None:
                continue
            g = np.asarray(g)
            if self.data_format == "channels_last" and g.ndim in (4, 5):
                g = _to_first(g)
            table[name] = g.astype(self._dtype, copy=False)
        for op, args, outs in zip(reversed(self._ops), reversed(self._args),
                                  reversed(self._outs)):
            if getattr(op, "multi_output", False):
                g = tuple(table.pop(name, None) for name in outs)
                if all(x is None for x in g):
                    continue
            else:
                g = table.pop(outs[0], None)
                if g is None:
                    continue
            for name, gi in zip(args, op.backward(g)):
                if not name or gi is None or name in self._consts:
                    continue
                table[name] = table[name] + gi if name in table else gi
        result = []
        for name in self._input_names:
            g = table.get(name)
            if g is not None and self.data_format == "channels_last" and g.ndim in (4, 5):
                g = _to_last(np.ascontiguousarray(g))
            result.append(g)
        del shapes
        return result[0] if len(result) == 1 else tuple(result)

    # --------------------------------------------------------------- fuse
    def _fused(self):
        """Module.fuse()'s rewrite of this private copy: Conv (2-D, padding
        fixed) -> BatchNormalization -> Relu | Clip(0, hi) | Add (-> Relu)
        chains become FusedConv operators (cnnfast.nn.fuse.FusedConv2d);
        then, when every convolution has a channels-last kernel, the layout
        pass (cnnfast.onnx._layout): the graph runs NHWC inside."""
        producer = {}
        users = {}
        for i, (args, outs) in enumerate(zip(self._args, self._outs)):
            for name in outs:
                producer[name] = i
            for name in args:
                if name:
                    users.setdefault(name, []).append(i)
        outputs = set(self._output_names)
        nhwc, self.layout_reason = _layout.channels_last_pays(self._ops)

        def only_user(name):
            """The one operator reading name, if exactly one does and it is no output."""
            u = users.get(name, [])
            return u[0] if len(u) == 1 and name not in outputs else None

        dropped = set()
        for i, op in enumerate(self._ops):
            if not (type(op) is L.Conv and op.nd == 2 and op.padding is not None):
                continue
            chain, out, bn, relu, clip, residual = [i], self._outs[i][0], None, False, None, None
            j = only_user(out)
            if j is not None and type(self._ops[j]) is L.BatchNorm:
                bn, chain, out = self._ops[j], chain + [j], self._outs[j][0]
                j = only_user(out)
            if (j is not None and j not in dropped and type(self._ops[j]) is O.Binary
                    and self._ops[j].kind == "Add"):   # (not one another chain took)
                other = [n for n in self._args[j] if n != out]
                k = only_user(self._outs[j][0])
                if len(other) != 1 or other[0] in self._consts:
                    pass   # x + x, or a constant bias: not a residual
                elif k is not None and _is_relu(self._ops[k]):
                    residual, relu = other[0], True
                    chain, out = chain + [j, k], self._outs[k][0]
                else:   # a linear bottleneck's shortcut (MobileNetV2): no activation
                    residual, chain, out = other[0], chain + [j], self._outs[j][0]
            elif j is not None and _is_relu(self._ops[j]):
                relu, chain, out = True, chain + [j], self._outs[j][0]
            elif j is not None and _is_relu6(self._ops[j]):
                relu, clip = True, self._ops[j].hi
                chain, out = chain + [j], self._outs[j][0]
            if len(chain) == 1 and not nhwc:
                continue   # (channels-last: a lone Conv too, for its packed NHWC weights)
            fused = L.FusedConv(op._node, op, bn, relu, clip)
            fused._op_type = "FusedConv"
            last = chain[-1]
            self._ops[last] = fused
            self._args[last] = [self._args[i][0]] + ([residual] if residual else [])
            self._outs[last] = [out]
            dropped.update(chain[:-1])
        keep = [k for k in range(len(self._ops)) if k not in dropped]
        self._ops = [self._ops[k] for k in keep]
        self._args = [self._args[k] for k in keep]
        self._outs = [self._outs[k] for k in keep]
        kept = {id(op) for op in self._ops}
        self._state = [(key, op, attr) for key, op, attr in self._state if id(op) in kept]
        self._plan_lifetimes()
        self.eval()
        if nhwc:
            self._layout_plan = _layout.LayoutPlan(self)
        return self

    def extra_repr(self):
        return (f"inputs={self._input_names}, outputs={self._output_names}"
                + (", data_format='channels_last'" if self.data_format == "channels_last"
                   else ""))


def _is_relu(op):
    return type(op) is O.Activation and op.kind == "Relu"


def _is_relu6(op):
    return type(op) is O.Clip and op.lo == 0 and op.hi is not None and op.hi > 0
