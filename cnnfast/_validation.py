"""The one place for argument checking, dtype rules and shape arithmetic.

Every public op calls into here before any kernel runs, so bad input always
surfaces as a ValueError/TypeError that names the argument and the value.
Sizes are computed with Python integers (floor division, no overflow).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

CONV_ALGORITHMS = ("auto", "direct", "im2col", "1x1")
NEEDS = ("x", "weight", "bias")
BLAS_INT_MAX = 2**31 - 1
_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


# ------------------------------------------------------------- arguments

def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def ntuple(value, n: int, name: str, minimum: int) -> tuple:
    """An int or a length-n tuple/list of ints -> tuple of n ints >= minimum."""
    if _is_int(value):
        values = (int(value),) * n
    elif isinstance(value, (tuple, list)):
        if len(value) != n or not all(_is_int(v) for v in value):
            raise (ValueError if all(_is_int(v) for v in value) else TypeError)(
                f"{name} must be an int or a tuple of {n} ints, got {value!r}")
        values = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, "
                        f"got {type(value).__name__} {value!r}")
    if any(v < minimum for v in values):
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return values


def positive_int(value, name: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


# ----------------------------------------------------------------- arrays

def check_array(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    return a


def common_float_dtype(**arrays) -> np.dtype:
    """All arrays share one of float32/float64 (any byte order) -> native dtype."""
    found = {name: a.dtype for name, a in arrays.items() if a is not None}
    native = {name: (np.dtype(f"f{dt.itemsize}") if dt.kind == "f" and dt.itemsize in (4, 8)
                     else None) for name, dt in found.items()}
    listing = ", ".join(f"{name}={dt}" for name, dt in found.items())
    if any(dt is None for dt in native.values()):
        raise TypeError(f"cnnfast computes in float32 or float64 only; dtypes found: {listing}")
    if len(set(native.values())) > 1:
        raise TypeError(f"all arrays of one call must share a dtype (float32 or float64); "
                        f"dtypes found: {listing}")
    return next(iter(native.values()))


def kernel_array(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """What a kernel may read through a raw pointer: C-contiguous, aligned,
    native byte order. Copies only when the input is not already so."""
    return np.require(a, dtype=dtype, requirements=("C_CONTIGUOUS", "ALIGNED"))


def expect_shape(a: np.ndarray, shape: tuple, name: str, what: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)} ({what})")


# ------------------------------------------------------------ convolution

class ConvGeometry(NamedTuple):
    nd: int
    dtype: np.dtype
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple
    kernel: tuple
    stride: tuple
    dilation: tuple
    pad_before: tuple
    pad_after: tuple
    out_size: tuple

    def as3d(self, t: tuple, fill: int) -> tuple:
        """Spatial tuple padded to 3 dims: the kernels are 3-D, 1-D/2-D use unit dims."""
        return (fill,) * (3 - self.nd) + tuple(t)

    @property
    def x5_shape(self):
        return (self.batch, self.in_channels) + self.as3d(self.in_size, 1)

    @property
    def w5_shape(self):
        return (self.out_channels, self.in_channels // self.groups) + self.as3d(self.kernel, 1)

    @property
    def out_shape(self):
        return (self.batch, self.out_channels) + tuple(self.out_size)

    @property
    def out5_shape(self):
        return (self.batch, self.out_channels) + self.as3d(self.out_size, 1)

    @property
    def kernel_args(self):
        """(stride, padding-before, dilation) as 3-tuples for the kernels."""
        return (self.as3d(self.stride, 1), self.as3d(self.pad_before, 0),
                self.as3d(self.dilation, 1))

    @property
    def is_pointwise(self):
        return all(k == 1 for k in self.kernel)


def _conv_padding(padding, nd, in_size, kernel, stride, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nd, (0,) * nd
        if padding == "same":
            before, after = [], []
            for n, k, s, d in zip(in_size, kernel, stride, dilation):
                out = -(-n // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
                before.append(total // 2)
                after.append(total - total // 2)
            return tuple(before), tuple(after)
        raise ValueError(f"padding must be an int, a tuple of {nd} ints, 'valid' or 'same', "
                         f"got {padding!r}")
    pad = ntuple(padding, nd, "padding", minimum=0)
    return pad, pad


_FORWARD = object()  # grad_out's default: a forward call (None is a user error)


def conv_geometry(nd, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                  grad_out=_FORWARD) -> ConvGeometry:
    """Validate a conv{nd}d call (or its backward when grad_out is given)."""
    op = f"conv{nd}d"
    backward = grad_out is not _FORWARD
    check_array(x, "x")
    check_array(weight, "weight")
    if bias is not None:
        check_array(bias, "bias")
    if backward:
        check_array(grad_out, "grad_out")
    else:
        grad_out = None
    dtype = common_float_dtype(x=x, weight=weight, bias=bias, grad_out=grad_out)
    if x.ndim != nd + 2:
        raise ValueError(f"x must be a {nd + 2}-D array (N, C, {_SPATIAL[nd]}) for {op}, "
                         f"got shape {x.shape}")
    if weight.ndim != nd + 2:
        raise ValueError(f"weight must be a {nd + 2}-D array (K, C // groups, {_SPATIAL[nd]}) "
                         f"for {op}, got shape {weight.shape}")
    groups = positive_int(groups, "groups")
    N, C, *in_size = x.shape
    K, Cg, *kernel = weight.shape
    if 0 in x.shape[1:]:
        raise ValueError(f"x has shape {x.shape}: only the batch dimension may be 0")
    if 0 in weight.shape:
        raise ValueError(f"weight has shape {weight.shape}: no dimension may be 0")
    if K % groups:
        raise ValueError(f"weight.shape[0] (out channels) = {K} must be divisible by "
                         f"groups = {groups}")
    if C % groups:
        raise ValueError(f"x.shape[1] (in channels) = {C} must be divisible by groups = {groups}")
    if Cg * groups != C:
        raise ValueError(f"x has {C} channels but weight expects weight.shape[1] * groups = "
                         f"{Cg} * {groups} = {Cg * groups}")
    if bias is not None and bias.shape != (K,):
        raise ValueError(f"bias must have shape ({K},) to match weight.shape[0], "
                         f"got {bias.shape}")
    stride = ntuple(stride, nd, "stride", minimum=1)
    dilation = ntuple(dilation, nd, "dilation", minimum=1)
    pad_before, pad_after = _conv_padding(padding, nd, in_size, kernel, stride, dilation)
    out_size = []
    for i, (n, k, s, d, pb, pa) in enumerate(zip(in_size, kernel, stride, dilation,
                                                 pad_before, pad_after)):
        eff = (k - 1) * d + 1
        o = (n + pb + pa - eff) // s + 1
        if o < 1:
            raise ValueError(f"{op}: kernel of effective size {eff} (kernel_size={k}, "
                             f"dilation={d}) does not fit input size {n} with padding "
                             f"({pb}, {pa}) in spatial dim {i}: output size would be {o}")
        out_size.append(o)
    geom = ConvGeometry(nd, dtype, N, C, K, groups, tuple(in_size), tuple(kernel), stride,
                        dilation, pad_before, pad_after, tuple(out_size))
    if backward:
        expect_shape(grad_out, geom.out_shape, "grad_out", f"the output shape of this {op}")
    return geom


def conv_algorithm(algorithm, geom: ConvGeometry) -> str:
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, got {type(algorithm).__name__} {algorithm!r}")
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {CONV_ALGORITHMS}, got {algorithm!r}")
    if algorithm == "1x1" and not geom.is_pointwise:
        raise ValueError(f"algorithm='1x1' needs a kernel of all ones, got kernel size "
                         f"{geom.kernel}")
    if algorithm in ("im2col", "1x1") and not fits_blas(geom):
        raise ValueError(f"algorithm={algorithm!r}: this shape exceeds the 32-bit sizes of the "
                         f"BLAS interface; use algorithm='direct'")
    return algorithm


def fits_blas(geom: ConvGeometry) -> bool:
    """GEMM dimensions and leading dimensions must fit BLAS's 32-bit ints."""
    rows = geom.in_channels // geom.groups * int(np.prod(geom.kernel))
    return max(rows, geom.out_channels, int(np.prod(geom.in_size)),
               int(np.prod(geom.out_size))) <= BLAS_INT_MAX


def conv_need(need) -> frozenset:
    if isinstance(need, str):
        need = (need,)
    try:
        items = list(need)
    except TypeError:
        raise TypeError(f"need must be a tuple of names from {NEEDS}, got {need!r}") from None
    bad = [n for n in items if n not in NEEDS]
    if bad:
        raise ValueError(f"need must name gradients from {NEEDS}, got {need!r}")
    return frozenset(items)
