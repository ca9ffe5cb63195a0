"""explain_model: a dry run of a whole model (nothing computed, no activation
allocated), the plan of every layer call.

While a trace is active (cnnfast.nn.module.TRACE), Module.__call__ hands each
call to the Tracer instead of running forward. A layer with a rule
(cnnfast._explain_layers.RULES, or its own `_explain(tracer, *inputs)`)
validates its input exactly as its forward would (the same validation
functions, on zero-stride views: no memory), records a Row with the plan of
each pass it would run, and returns a DryArray: a stand-in that has a shape
and a dtype but no values. A container without a rule runs its own forward on
the stand-ins, so Sequential, residual blocks (`y += x`), Inception's
np.concatenate and the like trace unchanged; their arithmetic becomes
rows named for what it does. Anything that would need the values (np.sum,
float(x), comparisons) raises DryRunError, a TypeError naming the module.

Conventions of the non-convolution passes (convolutions: cnnfast._plan):
flops count one per element and elementary operation (a ReLU 1, an add 1,
ReLU(a + b) 2, a batch norm's affine map 2 per element and its batch
statistics 3 more, its backward 8), pooling one per window tap of each
output, a dense layer 2 * M * N * K per product; workspace_bytes is the
work arrays a pass needs beyond its inputs and outputs (0 where a kernel
needs none). Steps NumPy runs (LeakyReLU, Tanh, Sigmoid, Dropout, concat,
user arithmetic) have threads 1.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _plan as P
from . import _validation as V
from ._validation import ghost
from ._threads import num_threads
from .nn import module as _module


class DryRunError(TypeError):
    """Something a dry run cannot do without the values (np.sum of a stand-in,
    float(x), an operator no rule describes)."""


class Row(NamedTuple):
    """One layer call (or internal step) of a ModelPlan."""
    name: str            # dotted path as in named_modules(); steps: "<where>.(<what>)"
    op: str              # the layer's class name, or the step ("add", "concat", ...)
    in_shape: tuple      # in the model's data_format; a tuple of shapes for several inputs
    out_shape: tuple
    layout: str          # "channels_first" or "channels_last": the activations inside
    passes: dict         # "forward" / "x" / "weight" / "bias" -> cnnfast._plan.PassPlan
    note: str = ""       # why a channels-last layer runs channels-first between copies

    @property
    def flops(self) -> int:
        return sum(p.flops for p in self.passes.values())

    @property
    def workspace_bytes(self) -> int:
        return max((p.workspace_bytes for p in self.passes.values()), default=0)


class ModelPlan(NamedTuple):
    """explain_model's result: rows in call order, and the totals."""
    rows: list
    data_format: str
    training: bool
    threads: int

    @property
    def flops(self) -> int:
        """Every pass of every row."""
        return sum(r.flops for r in self.rows)

    @property
    def workspace_bytes(self) -> int:
        """The model's work-array need: the largest of any one pass (passes run
        one after another and each frees its work arrays), as ConvPlan's."""
        return max((r.workspace_bytes for r in self.rows), default=0)

    def __str__(self):
        """A table: a line per row (its forward kernel and threads, the passes
        it plans, its FLOPs over all of them, its largest work array), then
        the totals."""
        titles = ("name", "op", "in", "out", "layout", "kernel", "thr", "passes")
        cols = [(r.name, r.op, _fmt(r.in_shape), _fmt(r.out_shape), r.layout,
                 r.passes["forward"].kernel, str(r.passes["forward"].threads),
                 ",".join(_PASS_ABBREV.get(p, p) for p in r.passes)) for r in self.rows]
        widths = [max([len(t)] + [len(c[i]) for c in cols]) for i, t in enumerate(titles)]

        def left(values):
            return " ".join(f"{v:<{w}}" for v, w in zip(values, widths))

        lines = [f"model plan: {'train' if self.training else 'eval'}, {self.data_format}, "
                 f"{self.threads} thread(s)",
                 f"{left(titles)} {'MFLOP':>10} {'work MB':>8}"]
        for r, c in zip(self.rows, cols):
            lines.append(f"{left(c)} {r.flops / 1e6:>10.2f} {r.workspace_bytes / 1e6:>8.3f}"
                         + (f"  ({r.note})" if r.note else ""))
        lines.append(f"total: {len(self.rows)} rows, {self.flops / 1e9:.3f} GFLOP, "
                     f"workspace {self.workspace_bytes / 1e6:.3f} MB")
        return "\n".join(lines)


_PASS_ABBREV = {"forward": "fwd", "weight": "w", "bias": "b"}


def _fmt(shape):
    if shape and isinstance(shape[0], tuple):
        return "+".join("x".join(map(str, s)) for s in shape)
    return "x".join(map(str, shape)) if shape else "()"


def numpy_pass(kernel, flops, threads=1, layout="images", workspace=0):
    """The PassPlan of a non-convolution pass."""
    return P.PassPlan("direct", kernel, layout, threads, 0, False, int(workspace), int(flops))


# ------------------------------------------------------------- stand-ins

def _shape_only(shape):
    """An array of shape whose elements take no bytes (a field-less
    structured dtype): NumPy's shape rules on it cost nothing."""
    return np.empty(shape, dtype=[])


_UFUNC_NAMES = {np.add: "add", np.subtract: "sub", np.multiply: "mul", np.true_divide: "div",
                np.negative: "neg", np.maximum: "maximum", np.minimum: "minimum"}


def _operator(ufunc, reflected=False, inplace=False):
    """DryArray's operator method for ufunc (x + y, y + x, x += y)."""
    def method(self, other):
        if reflected:
            return self.__array_ufunc__(ufunc, "__call__", other, self)
        if inplace:
            return self.__array_ufunc__(ufunc, "__call__", self, other, out=(self,))
        return self.__array_ufunc__(ufunc, "__call__", self, other)
    return method


class DryArray:
    """A stand-in activation: shape and dtype, no values. Shape-only
    operations (indexing, reshape, transpose) give new stand-ins; arithmetic
    and np.concatenate record a step row; anything reading values raises
    DryRunError."""

    __array_priority__ = 1000

    def __init__(self, shape, dtype, tracer):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._tracer = tracer

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: math.prod(self.shape))
    T = property(lambda self: self.transpose())

    def __repr__(self):
        return f"DryArray(shape={self.shape}, dtype={self.dtype})"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def ghost(self):
        return ghost(self.shape, self.dtype)

    def _view(self, fn):
        """A stand-in for fn(self), a shape-only function (indexing, reshape,
        transpose): fn is applied to an array of this shape whose elements
        take no bytes, so even an advanced index allocates nothing."""
        return DryArray(fn(_shape_only(self.shape)).shape, self.dtype, self._tracer)

    def __getitem__(self, index):
        if isinstance(index, DryArray) or (isinstance(index, tuple)
                                           and any(isinstance(i, DryArray) for i in index)):
            raise DryRunError("indexing with an array of values")
        return self._view(lambda g: g[index])

    def reshape(self, *shape, **kwargs):
        return self._view(lambda g: g.reshape(*shape, **kwargs))

    def transpose(self, *axes):
        return self._view(lambda g: g.transpose(*axes))

    def swapaxes(self, a, b):
        return self._view(lambda g: g.swapaxes(a, b))

    def squeeze(self, axis=None):
        return self._view(lambda g: g.squeeze(axis))

    def astype(self, dtype, copy=True):
        out = DryArray(self.shape, dtype, self._tracer)
        if copy or np.dtype(dtype) != self.dtype:
            self._tracer.step("cast", [self], out, 0)
        return out

    def copy(self):
        out = DryArray(self.shape, self.dtype, self._tracer)
        self._tracer.step("copy", [self], out, 0)
        return out

    # values: refused
    def __array__(self, *args, **kwargs):
        raise DryRunError("converting an activation to a NumPy array needs its values")

    def _values(self, *args):
        raise DryRunError("this operation needs the activation's values")

    __bool__ = __float__ = __int__ = __index__ = item = tolist = __iter__ = _values

    def _reduce(self, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        """A reduction (sum, mean, max, min): its shape, and a step row."""
        if out is not None or kwargs:
            raise DryRunError("a reduction into an array or with extra arguments")
        axes = range(self.ndim) if axis is None else (
            (axis,) if isinstance(axis, int) else tuple(axis))
        axes = {a % self.ndim for a in axes} if self.ndim else set()
        shape = tuple(1 if i in axes else n for i, n in enumerate(self.shape)
                      if keepdims or i not in axes)
        result = DryArray(shape, self.dtype if dtype is None else dtype, self._tracer)
        self._tracer.step("reduce", [self], result, self.size)
        return result

    sum = mean = max = min = _reduce

    # arithmetic
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or ufunc.nout != 1:
            raise DryRunError(f"np.{ufunc.__name__}.{method} on an activation")
        if ufunc is np.matmul:
            return _matmul(self._tracer, *inputs, **kwargs)
        out = kwargs.pop("out", None)
        if kwargs:
            raise DryRunError(f"np.{ufunc.__name__} with {sorted(kwargs)}")
        shapes = [np.shape(a) if not isinstance(a, DryArray) else a.shape for a in inputs]
        dtypes = [a.dtype if isinstance(a, (DryArray, np.ndarray)) else np.asarray(a).dtype
                  for a in inputs]
        shape = np.broadcast_shapes(*shapes)
        # the result dtype NumPy's type resolution gives, on empty operands
        dtype = ufunc(*[np.empty(0, d) if isinstance(a, (DryArray, np.ndarray)) else a
                        for a, d in zip(inputs, dtypes)]).dtype
        result = DryArray(shape, dtype, self._tracer)
        if out is not None:
            target = out[0] if isinstance(out, tuple) else out
            if not isinstance(target, DryArray) or target.shape != shape:
                raise DryRunError(f"np.{ufunc.__name__} into an array that is no activation "
                                  f"of the result's shape")
            result = DryArray(shape, target.dtype, self._tracer)
        name = _UFUNC_NAMES.get(ufunc, ufunc.__name__)
        self._tracer.step(name, [a for a in inputs if isinstance(a, DryArray)], result,
                          result.size)
        return result

    __add__, __radd__, __iadd__ = (_operator(np.add), _operator(np.add, True),
                                   _operator(np.add, inplace=True))
    __sub__, __rsub__, __isub__ = (_operator(np.subtract), _operator(np.subtract, True),
                                   _operator(np.subtract, inplace=True))
    __mul__, __rmul__, __imul__ = (_operator(np.multiply), _operator(np.multiply, True),
                                   _operator(np.multiply, inplace=True))
    __truediv__, __rtruediv__, __itruediv__ = (_operator(np.true_divide),
                                               _operator(np.true_divide, True),
                                               _operator(np.true_divide, inplace=True))
    __lt__, __le__ = _operator(np.less), _operator(np.less_equal)
    __gt__, __ge__ = _operator(np.greater), _operator(np.greater_equal)

    def __matmul__(self, other):
        return _matmul(self._tracer, self, other)

    def __rmatmul__(self, other):
        return _matmul(self._tracer, other, self)

    def __neg__(self):
        return self.__array_ufunc__(np.negative, "__call__", self)

    def __array_function__(self, func, types, args, kwargs):
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise DryRunError(f"np.{func.__name__} on an activation")
        return handler(self._tracer, *args, **kwargs)


def _concatenate(tracer, arrays, axis=0, **kwargs):
    if kwargs:
        raise DryRunError(f"np.concatenate with {sorted(kwargs)}")
    arrays = [tracer.dry(a) for a in arrays]
    # shapes checked by NumPy, as the real call's
    shape = np.concatenate([_shape_only(a.shape) for a in arrays], axis=axis).shape
    result = DryArray(shape, np.result_type(*[a.dtype for a in arrays]), tracer)
    tracer.step("concat", arrays, result, 0)
    return result


def _matmul(tracer, a, b, **kwargs):
    """a @ b (NumPy's matmul rules): a step of 2 * M * N * K flops."""
    if kwargs:
        raise DryRunError(f"np.matmul with {sorted(kwargs)}")
    sa, sb = np.shape(a) if not isinstance(a, DryArray) else a.shape, \
        np.shape(b) if not isinstance(b, DryArray) else b.shape
    if not sa or not sb:
        raise ValueError("matmul: Input operand does not have enough dimensions")
    a2, b2 = (1,) + sa if len(sa) == 1 else sa, sb + (1,) if len(sb) == 1 else sb
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul: Input operand 1 has a mismatch in its core dimension 0, "
                         f"with gufunc signature (n?,k),(k,m?)->(n?,m?) (size {b2[-2]} is "
                         f"different from {a2[-1]})")
    shape = np.broadcast_shapes(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    shape = shape[:-2] + shape[-2:][len(sa) == 1:] if len(sa) == 1 else shape
    shape = shape[:-1] if len(sb) == 1 else shape
    dtype = np.result_type(*[x.dtype if isinstance(x, (DryArray, np.ndarray))
                             else np.asarray(x).dtype for x in (a, b)])
    result = DryArray(shape, dtype, tracer)
    tracer.step("matmul", [x for x in (a, b) if isinstance(x, DryArray)], result,
                2 * math.prod(shape) * a2[-1])
    return result


def _take(tracer, a, indices, axis=None, **kwargs):
    if kwargs or isinstance(indices, DryArray):
        raise DryRunError("np.take with an index of values or extra arguments")
    return tracer.dry(a)._view(lambda g: np.take(g, indices, axis=axis))


def _view_function(fn):
    def handler(tracer, a, *args, **kwargs):
        return tracer.dry(a)._view(lambda g: fn(g, *args, **kwargs))
    return handler


def _broadcasting(what):
    """np.where / np.clip: a broadcast elementwise step."""
    def handler(tracer, *args, **kwargs):
        if kwargs:
            raise DryRunError(f"np.{what} with {sorted(kwargs)}")
        operands = [a for a in args if a is not None]
        shape = np.broadcast_shapes(*[np.shape(a) if not isinstance(a, DryArray) else a.shape
                                      for a in operands])
        values = operands[1:] if what == "where" else operands[:1]
        dtype = np.result_type(*[a.dtype if isinstance(a, (DryArray, np.ndarray))
                                 else np.asarray(a).dtype for a in values])
        result = DryArray(shape, dtype, tracer)
        tracer.step(what, [a for a in operands if isinstance(a, DryArray)], result,
                    result.size)
        return result
    return handler


def _reduction(name):
    def handler(tracer, a, *args, **kwargs):
        return getattr(tracer.dry(a), name)(*args, **kwargs)
    return handler


_FUNCTIONS = {np.concatenate: _concatenate, np.where: _broadcasting("where"),
              np.matmul: _matmul, np.take: _take,
              np.clip: _broadcasting("clip"),
              **{f: _reduction(n) for f, n in ((np.sum, "sum"), (np.mean, "mean"),
                                               (np.max, "max"), (np.min, "min"),
                                               (np.amax, "max"), (np.amin, "min"))},
              **{f: _view_function(f) for f in (np.moveaxis, np.transpose, np.reshape,
                                                np.swapaxes, np.squeeze, np.expand_dims,
                                                np.ascontiguousarray)},
              np.shape: lambda tracer, a: a.shape, np.ndim: lambda tracer, a: a.ndim}


# ---------------------------------------------------------------- tracer

class Tracer:
    """Collects the rows of one dry run (see the module docstring)."""

    def __init__(self, model, data_format):
        self.model = model
        self.data_format = data_format       # the model's: the rows' shapes are in it
        self.rows = []
        self.names, self.modules = {}, {}
        for name, m in model.named_modules():
            self.names.setdefault(id(m), name)
            self.modules.setdefault(name, m)
        self.scope = [""]                    # the module whose forward runs
        self.scope_modules = [None]
        self._layouts = []                   # pushed by a model converting its layout
        self.leaf = None                     # [flops] of a user leaf layer running
        self.producers = {}                  # id(DryArray) -> row index
        self.edges = []                      # row index -> ids of its input stand-ins
        self._alive = []                     # the stand-ins behind those ids

    def dry(self, a):
        """An input as a stand-in (an array a container made, e.g. a constant)."""
        if isinstance(a, DryArray):
            return a
        if isinstance(a, np.ndarray):
            return DryArray(a.shape, a.dtype, self)
        raise DryRunError(f"expected an activation, got {type(a).__name__}")

    def new(self, shape, dtype):
        return DryArray(shape, dtype, self)

    def name_of(self, module):
        return self.names.get(id(module), f"<{type(module).__name__}>")

    def _shape(self, shape, layout):
        """A shape in the layout `layout` as the model's data_format writes it."""
        if layout == self.data_format or len(shape) < 3:
            return tuple(shape)
        if layout == "channels_last":
            return (shape[0], shape[-1]) + tuple(shape[1:-1])
        return (shape[0],) + tuple(shape[2:]) + (shape[1],)

    def record(self, name, op, inputs, outputs, layout, passes, in_shape=None,
               out_shape=None, note=""):
        """Append a row; inputs/outputs: stand-ins (their shapes are the row's
        unless given, in the model's data_format)."""
        ins = [self._shape(a.shape, layout) for a in inputs]
        outs = [self._shape(a.shape, layout) for a in outputs]
        row = Row(name, op,
                  in_shape or (ins[0] if len(ins) == 1 else tuple(ins)),
                  out_shape or (outs[0] if len(outs) == 1 else tuple(outs)), layout, passes,
                  note)
        index = len(self.rows)
        self.rows.append(row)
        self.edges.append([id(a) for a in inputs])
        self._alive += list(inputs) + list(outputs)   # so that no id is reused
        for a in outputs:
            self.producers[id(a)] = index
        return row

    def step(self, what, inputs, output, flops):
        """A step that is no layer (arithmetic, concat, a cast) on stand-ins:
        its own row, or counted into the user layer it runs in."""
        if self.leaf is not None:
            self.leaf[0] += flops
            return
        scope = self.scope[-1]
        self.record(f"{scope}.({what})" if scope else f"({what})", what, inputs, [output],
                    self.current_layout(), {"forward": numpy_pass(f"numpy_{what}", flops)})

    def current_layout(self):
        return self._layouts[-1] if self._layouts else self.data_format

    def push_layout(self, layout):
        self._layouts.append(layout)

    def pop_layout(self):
        self._layouts.pop()

    def call(self, module, args, kwargs, method="forward"):
        """Module.__call__ (or ReLU.forward_sum) during a trace. The module's
        backward cache is left as it was: a dry run changes nothing."""
        from ._explain_layers import rule_for
        name = self.name_of(module)
        rule = rule_for(module, method)
        self.scope.append(name)
        self.scope_modules.append(module)
        cache = getattr(module, "_cache", None)
        try:
            if rule is not None:
                return rule(self, module, *args, **kwargs)
            if method != "forward":
                raise self._cannot(module, name, DryRunError(f"no rule for {method}"))
            if module.named_children():
                return self._run_forward(module, name, args, kwargs)
            return self._user_leaf(module, name, args, kwargs)
        finally:
            if cache is not None or getattr(module, "_cache", None) is not None:
                module._cache = cache
            self.scope.pop()
            self.scope_modules.pop()

    def _run_forward(self, module, name, args, kwargs):
        try:
            return module.forward(*args, **kwargs)
        except DryRunError as e:
            if getattr(e, "named", False):
                raise
            raise self._cannot(module, name, e) from None
        except TypeError as e:
            if "DryArray" not in str(e):
                raise
            # a function that needs an ndarray got a stand-in
            raise self._cannot(module, name, e) from None

    def _cannot(self, module, name, e):
        err = DryRunError(f"{name or 'the model'} ({type(module).__name__}) cannot be dry-run: "
                          f"{e}; give it an `_explain(self, tracer, *inputs)` method "
                          f"(cnnfast._explain) or run it for real")
        err.named = True
        return err

    def _user_leaf(self, module, name, args, kwargs):
        """A layer cnnfast has no rule for: its forward on the stand-ins, its
        NumPy arithmetic counted into one row (a backward cnnfast cannot see:
        its "x" pass is the layer's own NumPy, flops not known: 0)."""
        if self.leaf is not None:
            return self._run_forward(module, name, args, kwargs)
        self.leaf = [0]
        try:
            out = self._run_forward(module, name, args, kwargs)
        finally:
            flops, self.leaf = self.leaf[0], None
        inputs = [a for a in args if isinstance(a, DryArray)]
        outputs = list(out) if isinstance(out, tuple) else [out]
        if not inputs or not all(isinstance(o, DryArray) for o in outputs):
            raise self._cannot(module, name, DryRunError(
                "its forward takes or returns something that is no activation"))
        passes = {"forward": numpy_pass("numpy", flops)}
        if module.training:
            passes["x"] = numpy_pass("numpy_backward", 0)
        self.record(name, type(module).__name__, inputs, outputs, self.current_layout(),
                    passes)
        return out

    def finish(self, outputs):
        """Drop the "x" pass of steps whose output no gradient reaches (e.g.
        GoogLeNet's input transform when the first conv skips its input
        gradient): the backward runs them only for a gradient."""
        reached = {id(o) for o in outputs}
        produced = [[] for _ in self.rows]
        for k, i in self.producers.items():
            produced[i].append(k)
        for i in range(len(self.rows) - 1, -1, -1):
            row = self.rows[i]
            if "x" not in row.passes and row.name.endswith(")") and any(
                    k in reached for k in produced[i]) and self.model.training:
                row.passes["x"] = _step_backward(row)
            if "x" in row.passes:
                reached.update(self.edges[i])


def _step_backward(row):
    """The gradient pass of a step: a layout copy back, a split (views) for a
    concat, else one NumPy operation per element."""
    if row.op.startswith("to_channels"):
        return row.passes["forward"]
    if row.op == "concat":
        return numpy_pass("numpy_split", 0)
    return numpy_pass(f"numpy_{row.op}_backward", math.prod(_flat(row.out_shape)))


def _flat(shape):
    return shape[0] if shape and isinstance(shape[0], tuple) else shape


def _outputs(out):
    if isinstance(out, DryArray):
        return [out]
    if isinstance(out, tuple):
        return [o for o in out if isinstance(o, DryArray)]
    return []


def _input_shapes(x_shape):
    """x_shape: one shape, or a tuple of shapes (a model of several inputs)."""
    if isinstance(x_shape, (tuple, list)) and x_shape and all(
            isinstance(s, (tuple, list)) for s in x_shape):
        shapes = [tuple(s) for s in x_shape]
    elif isinstance(x_shape, (tuple, list)):
        shapes = [tuple(x_shape)]
    else:
        raise TypeError(f"x_shape must be a tuple of ints (or a tuple of such tuples), got "
                        f"{type(x_shape).__name__} {x_shape!r}")
    for s in shapes:
        if not s or not all(V._is_int(n) and n >= 0 for n in s):
            raise ValueError(f"x_shape must hold non-negative ints, got {x_shape!r}")
    return [tuple(int(n) for n in s) for s in shapes]


def model_dtype(model):
    params = model.parameters()
    return params[0].dtype if params else np.dtype(getattr(model, "_dtype", np.float32))


def explain_model(model, x_shape, *, threads=None) -> ModelPlan:
    """How cnnfast would run model(x) for an x of shape x_shape (the model's
    data_format), in the mode the model is in, without running it: a
    ModelPlan with one row per layer call (see the module docstring and
    docs/API.md). Validation errors are those the real call raises."""
    if not isinstance(model, _module.Module):
        raise TypeError(f"model must be a cnnfast.nn.Module, got {type(model).__name__}")
    shapes = _input_shapes(x_shape)
    from .nn.fuse import _data_format
    data_format = getattr(model, "data_format", None) or _data_format(model) or "channels_first"
    if threads is not None:
        if isinstance(threads, bool) or not V._is_int(threads):
            raise TypeError(f"threads must be None or an int, got {type(threads).__name__} "
                            f"{threads!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
    tracer = Tracer(model, data_format)
    dtype = model_dtype(model)
    inputs = [DryArray(s, dtype, tracer) for s in shapes]
    if _module.TRACE.tracer is not None:
        raise RuntimeError("explain_model cannot run inside another explain_model")
    _module.TRACE.tracer = tracer
    try:
        if threads is None:
            out = model(*inputs)
        else:
            with num_threads(threads):
                out = model(*inputs)
        tracer.finish(_outputs(out))
    finally:
        _module.TRACE.tracer = None
    if threads is None:   # the effective count (an OpenMP limit included)
        from ._threads import kernel_threads
        threads = kernel_threads()
    return ModelPlan(tracer.rows, data_format, bool(model.training), int(threads))
