"""Valid calls of every public op, for the validation tests to break one
argument at a time (tests/ is on pytest's pythonpath): tests/test_validation.py
(the array arguments and thread settings of every op) and
tests/test_pool_validation.py (the pooling window arguments)."""
import re

import numpy as np
import pytest

from cnnfast import functional, reference

MODULES = [pytest.param(functional, id="functional"), pytest.param(reference, id="reference")]
DIMS = [1, 2, 3]

CONV = [f"conv{nd}d" for nd in DIMS]
MAX = [f"max_pool{nd}d" for nd in DIMS]
AVG = [f"avg_pool{nd}d" for nd in DIMS]
ADAPTIVE = ["adaptive_avg_pool2d", "adaptive_max_pool2d"]
GLOBAL = ["global_avg_pool2d", "global_max_pool2d"]
POOL_FORWARD = MAX + AVG + ADAPTIVE + GLOBAL
POOL_BACKWARD = [f"{op}_backward" for op in POOL_FORWARD]
POOL_OPS = POOL_FORWARD + POOL_BACKWARD
CONV_BACKWARD = [f"{op}_backward" for op in CONV]
FORWARD_OPS = CONV + POOL_FORWARD
BACKWARD_OPS = CONV_BACKWARD + POOL_BACKWARD
ALL_OPS = FORWARD_OPS + BACKWARD_OPS
# backward functions that take `indices`
INDEXED_BACKWARD = [f"{op}_backward" for op in MAX + ["adaptive_max_pool2d", "global_max_pool2d"]]
# pooling ops with kernel_size / stride / padding (/ dilation for max) geometry
WINDOW_OPS = MAX + AVG + [f"{op}_backward" for op in AVG]
AVG_OPS = AVG + [f"{op}_backward" for op in AVG]

# base geometry: non-square sizes; pooling kernel_size with stride=None (= kernel)
N, C = 2, 3
SPATIAL = {1: (10,), 2: (8, 11), 3: (5, 6, 7)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
OUT_HW = (3, 4)        # adaptive output size
K, G = 4, 1            # conv out channels, groups ...
CONV_C, CONV_G = 4, 2  # ... and the grouped variant used for conv (C=4, groups=2)


def nd_of(op):
    """Spatial dims of an op: max_pool3d -> 3, conv1d_backward -> 1."""
    if op.startswith("conv"):
        return int(op[4])
    return int(op.split("_pool")[1][0])


def forward_of(op):
    return op[:-len("_backward")] if op.endswith("_backward") else op


def is_backward(op):
    return op.endswith("_backward")


def is_conv(op):
    return op.startswith("conv")


def forward_kwargs(op):
    """The non-array arguments of the forward op in the base geometry."""
    fwd = forward_of(op)
    if fwd in CONV:
        return dict(groups=CONV_G)
    if fwd in MAX + AVG:
        return dict(kernel_size=KERNEL[nd_of(op)])
    if fwd in ADAPTIVE:
        return dict(output_size=OUT_HW)
    return {}


def array_names(op):
    """The array arguments of op, in signature order."""
    if is_conv(op):
        return ["grad_out", "x", "weight"] if is_backward(op) else ["x", "weight", "bias"]
    if not is_backward(op):
        return ["x"]
    return ["grad_out", "indices"] if op in INDEXED_BACKWARD else ["grad_out"]


def float_names(op):
    """The array arguments that carry the call's float dtype (not indices)."""
    return [name for name in array_names(op) if name != "indices"]


def _conv_args(op, dtype, n, rng):
    nd = nd_of(op)
    x = rng.standard_normal((n, CONV_C) + SPATIAL[nd]).astype(dtype)
    w = rng.standard_normal((K, CONV_C // CONV_G) + KERNEL[nd]).astype(dtype)
    if not is_backward(op):
        b = rng.standard_normal(K).astype(dtype)
        return dict(x=x, weight=w, bias=b, groups=CONV_G)
    y = getattr(reference, forward_of(op))(x, w, groups=CONV_G)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    return dict(grad_out=grad_out, x=x, weight=w, groups=CONV_G)


def base_args(op, dtype=np.float64, n=N, seed=0):
    """Valid keyword arguments of `op` in the base geometry (fresh arrays)."""
    rng = np.random.default_rng(seed)
    if is_conv(op):
        return _conv_args(op, dtype, n, rng)
    nd = nd_of(op)
    x = rng.standard_normal((n, C) + SPATIAL[nd]).astype(dtype)
    kwargs = forward_kwargs(op)
    if not is_backward(op):
        return dict(x=x, **kwargs)
    fwd = getattr(reference, forward_of(op))
    if op in INDEXED_BACKWARD:
        y, indices = fwd(x, **kwargs, return_indices=True)
        grad_out = rng.standard_normal(y.shape).astype(dtype)
        return dict(grad_out=grad_out, indices=np.ascontiguousarray(indices, dtype=np.int64),
                    input_shape=x.shape)
    y = fwd(x, **kwargs)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    kwargs.pop("output_size", None)  # adaptive backward reads it from grad_out
    return dict(grad_out=grad_out, input_shape=x.shape, **kwargs)


def call(mod, op, args):
    return getattr(mod, op)(**args)


def esc(value):
    return re.escape(repr(value))


def shape_re(shape):
    return re.escape(str(tuple(shape)))


def cast(a, dtype):
    """a as another dtype (bool: a > 0; str and datetime: from the rounded values)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return a > 0
    if dtype.kind in "UM":
        return np.round(a).astype(np.int64).astype(dtype)
    return a.astype(dtype)


def set_last(value, nd):
    """A tuple of nd entries: 1-entries (ints) except the last, which is value."""
    return (1,) * (nd - 1) + (value,)
