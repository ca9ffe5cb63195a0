"""The graph's light operators: activations, broadcasting arithmetic and the
shape family (Shape, Gather, Slice, Reshape, Concat, ...), in NumPy.

Each operator is a Module with forward(*inputs) -> tuple of outputs and
backward(grad of its first output) -> one gradient (or None) per input.
The same forward folds constant subgraphs at load time (cnnfast.onnx._build)
and runs whatever could not be folded (a dynamic batch's Shape chain).
Integer and boolean values never receive gradients.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from .. import _validation as V
from .. import functional as F
from .._ops.activation import tanh
from ..nn.module import Module

_TANH_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))   # the C kernel's

# A folded or computed constant larger than this (elements) is refused: a
# hostile file's ConstantOfShape/Expand/Range could otherwise ask for any size.
CONST_MAX = 2**26


def is_float(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def unbroadcast(grad, shape):
    """The gradient of an input of `shape` that broadcasting stretched to grad.shape."""
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def ints(a, what="value"):
    """A runtime integer tensor (shape, axes, indices) as a tuple of Python ints."""
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise ValueError(f"{what} must be an integer tensor, got dtype {a.dtype}")
    return tuple(int(v) for v in a.reshape(-1))


def check_size(shape, op, limit=CONST_MAX):
    """Before allocating a result whose shape came from the file's values."""
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims) or math.prod(dims) > limit:
        raise ValueError(f"{op}: a result of shape {dims} is refused (negative, or more "
                         f"than {limit} elements)")


def norm_axis(axis, ndim, op):
    if not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of rank {ndim}")
    return axis % ndim if ndim else 0


class Op(Module):
    """A graph node. `node` names it in messages; the executor (OnnxModel)
    knows its input and output names. `size_limit`: the most elements an
    operator that sizes its result from values (ConstantOfShape, Expand,
    Range) may allocate: CONST_MAX while folding at load time, what NumPy
    can index at run time (where the values come from the caller's inputs)."""

    size_limit = V.ARRAY_MAX

    def __init__(self, node=""):
        super().__init__()
        self._node = node

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def _keep(self, value):
        if self.training:
            self._cache = value

    def extra_repr(self):
        return repr(self._node)


# ------------------------------------------------------------- activations

def _relu6_mask(x, lo, hi):
    # torch's hardtanh (ReLU6) passes gradients strictly inside the bounds
    mask = np.ones(x.shape, bool)
    if lo is not None:
        mask &= x > lo
    if hi is not None:
        mask &= x < hi
    return mask


class Activation(Op):
    """An elementwise function with its derivative: kind names one of
    Relu, LeakyRelu, Elu, Sigmoid, Tanh, HardSigmoid, HardSwish."""

    def __init__(self, node, kind, alpha=0.0, beta=0.0):
        super().__init__(node)
        self.kind, self.alpha, self.beta = kind, float(alpha), float(beta)

    def forward(self, x):
        k, a, b = self.kind, self.alpha, self.beta
        if k == "Relu":
            y = F.relu(x) if x.dtype.kind == "f" else np.maximum(x, 0)
        elif k == "LeakyRelu":
            y = np.where(x > 0, x, x * x.dtype.type(a))
        elif k == "Elu":
            y = np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))).astype(x.dtype)
        elif k == "Sigmoid":
            y = expit(x)
        elif k == "Tanh":
            y = tanh(x) if x.dtype in _TANH_DTYPES else np.tanh(x)
        elif k == "HardSigmoid":
            y = np.clip(x * x.dtype.type(a) + x.dtype.type(b), 0, 1)
        else:   # HardSwish: x * HardSigmoid(x) with alpha 1/6, beta 1/2
            y = x * np.clip(x / x.dtype.type(6) + x.dtype.type(0.5), 0, 1)
        self._keep((x, y))
        return (y,)

    def backward(self, g):
        x, y = self._saved()
        k, a = self.kind, self.alpha
        if k == "Relu":
            return (F.relu_backward(g, y),)
        if k == "LeakyRelu":
            return (np.where(x > 0, g, g * g.dtype.type(a)),)
        if k == "Elu":
            return (np.where(x > 0, g, g * (y + g.dtype.type(a))),)
        if k == "Sigmoid":
            return (g * y * (1 - y),)
        if k == "Tanh":
            return (g * (1 - y * y),)
        if k == "HardSigmoid":
            inner = x * x.dtype.type(a) + x.dtype.type(self.beta)
            return (np.where((inner > 0) & (inner < 1), g * g.dtype.type(a), 0).astype(g.dtype),)
        # HardSwish, as torch: 0 below -3, g above 3, g * (2x + 3) / 6 between
        mid = np.where(x < 3, g * (2 * x + 3) / 6, g)
        return (np.where(x <= -3, 0, mid).astype(g.dtype),)

    def extra_repr(self):
        args = {"LeakyRelu": f", alpha={self.alpha}", "Elu": f", alpha={self.alpha}",
                "HardSigmoid": f", alpha={self.alpha}, beta={self.beta}"}.get(self.kind, "")
        return f"{self.kind}{args}, {self._node!r}"


class Clip(Op):
    """min(max(x, lo), hi); the bounds come from attributes (opset < 11) or
    inputs (constants folded at load, or runtime scalars)."""

    def __init__(self, node, lo=None, hi=None):
        super().__init__(node)
        self.lo, self.hi = lo, hi

    def forward(self, x, lo=None, hi=None):
        lo = self.lo if lo is None else lo.item()
        hi = self.hi if hi is None else hi.item()
        if lo is None and hi is None:
            y = x.copy()
        else:   # one pass; NaN stays NaN
            y = np.clip(x, None if lo is None else x.dtype.type(lo),
                        None if hi is None else x.dtype.type(hi))
        self._keep((x, lo, hi))
        return (y,)

    def backward(self, g):
        x, lo, hi = self._saved()
        return (g * _relu6_mask(x, lo, hi), None, None)

    def extra_repr(self):
        return f"min={self.lo}, max={self.hi}, {self._node!r}"


class PRelu(Op):
    """x where x > 0, slope * x elsewhere; slope a trainable parameter
    broadcast against x (ONNX's unidirectional broadcasting)."""

    def __init__(self, node, slope, shape):
        super().__init__(node)
        self.slope = slope   # Parameter, in its initializer's shape
        self.shape = shape   # the shape the graph broadcasts it in

    def forward(self, x, slope=None):
        s = self.slope.data.reshape(self.shape)
        y = np.where(x > 0, x, x * s)
        self._keep(x)
        return (y,)

    def backward(self, g):
        x = self._saved()
        s = self.slope.data.reshape(self.shape)
        if self._needs_grad(self.slope):
            self.slope.accumulate(unbroadcast(np.where(x > 0, 0, g * x), s.shape)
                                  .reshape(self.slope.shape).astype(s.dtype))
        return (np.where(x > 0, g, g * s), None)


class Softmax(Op):
    """Softmax over `axis` (opset >= 13) or over the dims from `axis` on
    (opset < 13: the input seen as a 2-D matrix)."""

    def __init__(self, node, axis, flatten):
        super().__init__(node)
        self.axis, self.flatten = axis, flatten

    def _view(self, x):
        axis = norm_axis(self.axis, x.ndim, "Softmax")
        if self.flatten:
            return x.reshape(int(np.prod(x.shape[:axis])), -1), 1
        return x, axis

    def forward(self, x):
        v, axis = self._view(x)
        e = np.exp(v - v.max(axis=axis, keepdims=True))
        y = (e / e.sum(axis=axis, keepdims=True)).reshape(x.shape)
        self._keep(y)
        return (y,)

    def backward(self, g):
        y = self._saved()
        yv, axis = self._view(y)
        gv = g.reshape(yv.shape)
        return ((yv * (gv - (gv * yv).sum(axis=axis, keepdims=True))).reshape(y.shape),)


class LogSoftmax(Softmax):
    """log(softmax(x)), with Softmax's axis rules by opset."""

    def forward(self, x):
        v, axis = self._view(x)
        shifted = v - v.max(axis=axis, keepdims=True)
        y = (shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).reshape(x.shape)
        self._keep(y)
        return (y,)

    def backward(self, g):
        y = self._saved()
        yv, axis = self._view(y)
        gv = g.reshape(yv.shape)
        return ((gv - np.exp(yv) * gv.sum(axis=axis, keepdims=True)).reshape(y.shape),)


class Split(Op):
    """Split along an axis into given sizes (attribute before opset 13, input
    after), or into num_outputs (opset 18) / as many equal parts as outputs."""

    multi_output = True   # backward receives one gradient (or None) per output

    def __init__(self, node, axis, sizes, count):
        super().__init__(node)
        self.axis, self.sizes, self.count = axis, sizes, count

    def forward(self, x, split=None):
        axis = norm_axis(self.axis, x.ndim, "Split")
        sizes = self.sizes if split is None else ints(split, "split")
        n = x.shape[axis]
        if sizes is None:   # equal parts, the last one smaller (opset 18's rule)
            step = -(-n // self.count)
            sizes = [min(step, n - i * step) for i in range(self.count)]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise ValueError(f"Split {self._node!r}: sizes {list(sizes)} do not add up to "
                             f"{n} along axis {axis}")
        self._keep((x.shape, axis, sizes))
        return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))

    def backward(self, grads):
        shape, axis, sizes = self._saved()
        parts = []
        for g, size in zip(grads, sizes):
            if g is None:
                part_shape = list(shape)
                part_shape[axis] = size
                g = np.zeros(part_shape, next(x for x in grads if x is not None).dtype)
            parts.append(g)
        return (np.concatenate(parts, axis=axis), None)


class Dropout(Op):
    """Identity in eval mode; in training mode as torch.nn.Dropout (the
    ratio from the attribute or a constant input)."""

    def __init__(self, node, ratio=0.5, mask=False):
        super().__init__(node)
        self.ratio = float(ratio)
        self.mask = mask   # the graph reads the mask output

    def forward(self, x, ratio=None, training_mode=None):
        p = self.ratio if ratio is None else float(ratio)
        if not self.training or p == 0 or not is_float(x):
            self._keep(None)
            return (x, np.ones(x.shape, bool)) if self.mask else (x,)
        keep = np.random.random_sample(x.shape) >= p
        scale = x.dtype.type(1 / (1 - p)) if p < 1 else x.dtype.type(0)
        self._keep((keep, scale))
        return (x * keep * scale, keep)

    def backward(self, g):
        saved = self._saved() if self._cache is not None else None
        if saved is None:
            return (g, None, None)
        keep, scale = saved
        return (g * keep * scale, None, None)


class Identity(Op):
    def forward(self, x):
        return (x,)

    def backward(self, g):
        return (g,)


# ------------------------------------------------------------- arithmetic

def _int_div(a, b):
    q = np.abs(a) // np.abs(b)   # ONNX's integer Div truncates toward zero
    return (q * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
           "Equal": np.equal, "Less": np.less, "Greater": np.greater,
           "And": np.logical_and, "Or": np.logical_or}


class Binary(Op):
    """Add, Sub, Mul, Div with NumPy broadcasting (ONNX's multidirectional
    rule), gradients summed back over broadcast axes; Equal, Less,
    Greater, And, Or (no gradient) for shape computations."""

    def __init__(self, node, kind):
        super().__init__(node)
        self.kind = kind

    def forward(self, a, b):
        if self.kind == "Div":
            y = _int_div(a, b) if a.dtype.kind in "iu" and b.dtype.kind in "iu" else a / b
        else:
            y = _BINARY[self.kind](a, b)
        if is_float(a) and is_float(b) and y.dtype != a.dtype:
            y = y.astype(a.dtype)
        self._keep((a, b) if self.kind in ("Mul", "Div") else (a.shape, b.shape))
        return (y,)

    def backward(self, g):
        k = self.kind
        if k not in ("Add", "Sub", "Mul", "Div"):
            return (None, None)
        if k in ("Add", "Sub"):
            sa, sb = self._saved()
            return unbroadcast(g, sa), unbroadcast(-g if k == "Sub" else g, sb)
        a, b = self._saved()
        if k == "Mul":
            ga, gb = g * b, g * a
        else:
            ga = g / b
            gb = -ga * a / b
        return (unbroadcast(ga, a.shape) if is_float(a) else None,
                unbroadcast(gb, b.shape) if is_float(b) else None)

    def extra_repr(self):
        return f"{self.kind}, {self._node!r}"


class BiasAdd(Binary):
    """A constant added to a MatMul's product (how tf2onnx and others write
    a dense layer's bias): a trainable Parameter, as Gemm's C."""

    def __init__(self, node, bias, slot):
        super().__init__(node, "Add")
        self.bias, self.slot = bias, slot   # slot: the input position the bias fills

    def forward(self, a, b):
        args = [a, b]
        args[self.slot] = self.bias.data
        return super().forward(*args)

    def backward(self, g):
        grads = list(super().backward(g))
        if self._needs_grad(self.bias):
            self.bias.accumulate(np.array(grads[self.slot], copy=True)
                                 .reshape(self.bias.shape))
        grads[self.slot] = None
        return tuple(grads)


class Unary(Op):
    """Functions of the shape family without gradients: Not, Floor, Ceil,
    Neg (Neg and Sqrt keep a gradient for completeness)."""

    _FUNCS = {"Not": np.logical_not, "Floor": np.floor, "Ceil": np.ceil, "Neg": np.negative,
              "Sqrt": np.sqrt, "Abs": np.abs}

    def __init__(self, node, kind):
        super().__init__(node)
        self.kind = kind

    def forward(self, x):
        y = self._FUNCS[self.kind](x)
        self._keep((x, y))
        return (y,)

    def backward(self, g):
        x, y = self._saved()
        if self.kind == "Neg":
            return (-g,)
        if self.kind == "Sqrt":
            return (g / (2 * y),)
        if self.kind == "Abs":
            return (g * np.sign(x),)
        return (None,)


class Where(Op):
    def forward(self, cond, a, b):
        y = np.where(cond, a, b)
        self._keep((cond, a.shape, b.shape))
        return (y,)

    def backward(self, g):
        cond, sa, sb = self._saved()
        zero = g.dtype.type(0)
        return (None, unbroadcast(np.where(cond, g, zero), sa),
                unbroadcast(np.where(cond, zero, g), sb))


# ----------------------------------------------------------- shape family

class Shape(Op):
    def __init__(self, node, start=0, end=None):
        super().__init__(node)
        self.start, self.end = start, end

    def forward(self, x):
        return (np.array(x.shape[self.start:self.end], dtype=np.int64),)

    def backward(self, g):
        return (None,)


class Cast(Op):
    """Cast; to a float type means the model's float dtype (cnnfast runs the
    whole model in one)."""

    def __init__(self, node, dtype):
        super().__init__(node)
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        return (x.astype(self.dtype),)

    def backward(self, g):
        return (g,)


class ConstantOfShape(Op):
    def __init__(self, node, value):
        super().__init__(node)
        self.value = value   # a one-element array

    def forward(self, shape):
        dims = ints(shape, "ConstantOfShape's shape")
        check_size(dims, "ConstantOfShape", self.size_limit)
        return (np.full(dims, self.value.reshape(-1)[0], dtype=self.value.dtype),)

    def backward(self, g):
        return (None,)


class Range(Op):
    def forward(self, start, limit, delta):
        start, limit, delta = start.item(), limit.item(), delta.item()
        if delta == 0:
            raise ValueError("Range: delta must be nonzero")
        n = max(int(np.ceil((limit - start) / delta)), 0)
        check_size((n,), "Range", self.size_limit)
        return (np.arange(n, dtype=np.asarray(start).dtype) * delta + start,)

    def backward(self, g):
        return (None, None, None)


class Reshape(Op):
    def __init__(self, node, allowzero=False, shape=None):
        super().__init__(node)
        self.allowzero, self.shape = allowzero, shape

    def target(self, x, shape):
        dims = list(self.shape if shape is None else ints(shape, "Reshape's shape"))
        if not self.allowzero:
            dims = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(dims)]
        if dims.count(-1) > 1 or any(d < -1 for d in dims):
            raise ValueError(f"Reshape {self._node!r}: invalid shape {dims}")
        return tuple(dims)

    def forward(self, x, shape=None):
        y = x.reshape(self.target(x, shape))
        self._keep(x.shape)
        return (y,)

    def backward(self, g):
        return (g.reshape(self._saved()), None)


class Flatten(Op):
    def __init__(self, node, axis):
        super().__init__(node)
        self.axis = axis

    def forward(self, x):
        axis = self.axis + x.ndim if self.axis < 0 else self.axis
        if not 0 <= axis <= x.ndim:
            raise ValueError(f"Flatten {self._node!r}: axis {self.axis} out of range for "
                             f"rank {x.ndim}")
        self._keep(x.shape)
        return (x.reshape(int(np.prod(x.shape[:axis])), -1) if x.size
                else x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))),)

    def backward(self, g):
        return (g.reshape(self._saved()),)


class Transpose(Op):
    def __init__(self, node, perm=None):
        super().__init__(node)
        self.perm = perm

    def forward(self, x):
        perm = tuple(reversed(range(x.ndim))) if self.perm is None else self.perm
        self._keep(perm)
        return (np.ascontiguousarray(x.transpose(perm)),)

    def backward(self, g):
        return (np.ascontiguousarray(g.transpose(np.argsort(self._saved()))),)


class Squeeze(Op):
    """Squeeze and Unsqueeze: axes from the attribute (opset < 13) or input."""

    def __init__(self, node, unsqueeze, axes=None):
        super().__init__(node)
        self.unsqueeze, self.axes = unsqueeze, axes

    def forward(self, x, axes=None):
        axes = self.axes if axes is None else ints(axes, "axes")
        if self.unsqueeze:
            rank = x.ndim + len(axes)
            y = x.reshape(_unsqueezed(x.shape, [norm_axis(a, rank, "Unsqueeze") for a in axes]))
        elif axes is None:
            y = x.reshape([d for d in x.shape if d != 1])
        else:
            drop = {norm_axis(a, x.ndim, "Squeeze") for a in axes}
            if any(x.shape[a] != 1 for a in drop):
                raise ValueError(f"Squeeze {self._node!r}: axes {axes} of shape {x.shape} are "
                                 f"not all 1")
            y = x.reshape([d for i, d in enumerate(x.shape) if i not in drop])
        self._keep(x.shape)
        return (y,)

    def backward(self, g):
        return (g.reshape(self._saved()), None)


def _unsqueezed(shape, axes):
    out, it = [], iter(shape)
    for i in range(len(shape) + len(axes)):
        out.append(1 if i in axes else next(it))
    return out


class Concat(Op):
    def __init__(self, node, axis):
        super().__init__(node)
        self.axis = axis

    def forward(self, *xs):
        axis = norm_axis(self.axis, xs[0].ndim, "Concat")
        y = np.concatenate(xs, axis=axis)
        if all(is_float(x) for x in xs) and y.dtype != xs[0].dtype:
            y = y.astype(xs[0].dtype)
        self._keep((axis, [x.shape[axis] for x in xs]))
        return (y,)

    def backward(self, g):
        axis, sizes = self._saved()
        return tuple(np.split(g, np.cumsum(sizes)[:-1], axis=axis))


class Gather(Op):
    def __init__(self, node, axis):
        super().__init__(node)
        self.axis = axis

    def forward(self, x, indices):
        axis = norm_axis(self.axis, x.ndim, "Gather")
        idx = np.asarray(indices, dtype=np.int64)
        n = x.shape[axis]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ValueError(f"Gather {self._node!r}: indices out of range for size {n}")
        idx = np.where(idx < 0, idx + n, idx)
        self._keep((x.shape, axis, idx))
        return (np.take(x, idx, axis=axis),)

    def backward(self, g):
        shape, axis, idx = self._saved()
        out = np.zeros(shape, g.dtype)
        moved = np.moveaxis(out, axis, 0)
        gm = g.reshape(shape[:axis] + idx.shape + shape[axis + 1:])
        gm = np.moveaxis(gm.reshape(shape[:axis] + (idx.size,) + shape[axis + 1:]), axis, 0)
        np.add.at(moved, idx.reshape(-1), gm)
        return (out, None)


class Slice(Op):
    """Slice: starts/ends/axes/steps from attributes (opset < 10) or inputs."""

    def __init__(self, node, starts=None, ends=None, axes=None):
        super().__init__(node)
        self.starts, self.ends, self.axes = starts, ends, axes

    def forward(self, x, starts=None, ends=None, axes=None, steps=None):
        starts = self.starts if starts is None else ints(starts, "starts")
        ends = self.ends if ends is None else ints(ends, "ends")
        axes = (self.axes if self.axes is not None else range(len(starts))) if axes is None \
            else ints(axes, "axes")
        steps = (1,) * len(starts) if steps is None else ints(steps, "steps")
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            if st == 0:
                raise ValueError(f"Slice {self._node!r}: a step of 0")
            a = norm_axis(a, x.ndim, "Slice")
            n = x.shape[a]
            # ONNX clamps out-of-range bounds (INT64_MAX for "to the end")
            s, e = max(min(s, n), -n - 1), max(min(e, n), -n - 1)
            if st < 0:
                s, e = (s if s < n else n - 1), (None if e < -n else e)
            index[a] = slice(s, e, st)
        index = tuple(index)
        self._keep((x.shape, index))
        return (x[index],)

    def backward(self, g):
        shape, index = self._saved()
        out = np.zeros(shape, g.dtype)
        out[index] = g
        return (out, None, None, None, None)


class Expand(Op):
    def forward(self, x, shape):
        dims = ints(shape, "Expand's shape")
        target = np.broadcast_shapes(x.shape, tuple(dims))
        check_size(target, "Expand", self.size_limit)
        self._keep(x.shape)
        return (np.ascontiguousarray(np.broadcast_to(x, target)),)

    def backward(self, g):
        return (unbroadcast(g, self._saved()), None)


class Reduce(Op):
    """ReduceMean, ReduceMax, ReduceSum, ReduceMin: axes from the attribute
    (before opset 18; 13 for ReduceSum) or the second input."""

    def __init__(self, node, kind, axes, keepdims, noop_with_empty_axes=False):
        super().__init__(node)
        self.kind, self.axes, self.keepdims = kind, axes, keepdims
        self.noop = noop_with_empty_axes

    def forward(self, x, axes=None):
        axes = self.axes if axes is None else ints(axes, "axes")
        if not axes:
            if self.noop:
                self._keep(None)
                return (x,)
            axes = tuple(range(x.ndim))
        axes = tuple(sorted({norm_axis(a, x.ndim, self.kind) for a in axes}))
        fn = {"ReduceMean": np.mean, "ReduceMax": np.max, "ReduceSum": np.sum,
              "ReduceMin": np.min}[self.kind]
        y = fn(x, axis=axes, keepdims=True)
        if y.dtype != x.dtype:
            y = y.astype(x.dtype)
        self._keep((x, y, axes))
        return (y if self.keepdims else y.reshape([d for i, d in enumerate(x.shape)
                                                    if i not in axes]),)

    def backward(self, g):
        saved = self._saved()
        if saved is None:
            return (g, None)
        x, y, axes = saved
        g = g.reshape(y.shape)
        if self.kind == "ReduceSum":
            return (np.broadcast_to(g, x.shape).copy(), None)
        if self.kind == "ReduceMean":
            n = int(np.prod([x.shape[a] for a in axes]))
            return (np.broadcast_to(g / g.dtype.type(n), x.shape).copy(), None)
        # max/min: shared evenly among the ties, as torch.amax
        hit = x == y
        return ((g * hit / hit.sum(axis=axes, keepdims=True)).astype(g.dtype), None)

    def extra_repr(self):
        return f"{self.kind}, axes={self.axes}, keepdims={self.keepdims}, {self._node!r}"
