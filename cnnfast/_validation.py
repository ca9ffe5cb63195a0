"""The checks every op shares: scalar and int-tuple arguments, arrays and
their dtype, data_format, the limits cnnfast supports, and the convolution
geometry that validation produces and the planner (cnnfast._plan) and the
NHWC kernels read.

Each op family's own checks sit beside it in cnnfast._ops
(conv_validation, pool_validation, and at the top of batch_norm and
activation). Every public op calls them before any kernel runs, so bad input
always surfaces as a ValueError/TypeError that names the argument and the
value. Sizes are computed with Python integers (floor division, no overflow).
"""
from __future__ import annotations

import math
import numbers
import reprlib
from typing import NamedTuple

import numpy as np

from ._cache import geometry

DATA_FORMATS = ("channels_first", "channels_last")
# torch's padding_mode values, in the order of the kernels' CF_PAD_* codes
PAD_MODES = ("zeros", "reflect", "replicate", "circular")
BLAS_INT_MAX = 2**31 - 1
POOL_SIZE_MAX = 2**31 - 1        # per-dim window arguments and output sizes
POOL_BUFFER_MAX = 2**48          # elements of a padded pooling plane
SIZE_MAX = POOL_SIZE_MAX         # conv stride/padding/dilation, as pooling's window arguments
PLANE_MAX = POOL_BUFFER_MAX      # elements of a padded conv plane, as pooling's
ARRAY_MAX = 2**59                # elements of any result (NumPy cannot index 2**60 doubles)
THREADS_MAX = 1024               # kernel threads: libgomp aborts the process when it
                                 # cannot create the threads a region asks for
_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


# ------------------------------------------------------------- arguments

def _is_int(v) -> bool:
    return type(v) is int or (isinstance(v, numbers.Integral)
                              and not isinstance(v, (bool, np.bool_)))


def shown(value) -> str:
    """A value as an error message shows it: an array of more than
    SHOWN_ELEMENTS elements by its shape and dtype, anything else by its
    repr shortened by _SHORT (a few entries of a list, 40 characters; a list
    of a million floats must not become the message)."""
    if isinstance(value, np.ndarray) and value.size > SHOWN_ELEMENTS:
        return f"<array of shape {value.shape}, dtype {value.dtype}>"
    return _SHORT.repr(value)


SHOWN_ELEMENTS = 16
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple = 2, 6, 6   # 5-D shapes, 3-D padding pairs
_SHORT.maxstring = _SHORT.maxother = 40


def ntuple(value, n: int, name: str, minimum: int) -> tuple:
    """An int or a length-n tuple/list of ints -> tuple of n ints >= minimum."""
    if _is_int(value):
        values = (int(value),) * n
    elif isinstance(value, (tuple, list)):
        if len(value) != n or not all(_is_int(v) for v in value):
            raise (ValueError if all(_is_int(v) for v in value) else TypeError)(
                f"{name} must be an int or a tuple of {n} ints, got {shown(value)}")
        values = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, "
                        f"got {type(value).__name__} {shown(value)}")
    if any(v < minimum for v in values):
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {what}, got {shown(value)}")
    return values


def positive_int(value, name: str, maximum: int | None = None) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {shown(value)}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {shown(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {shown(value)}")
    return int(value)


def flag(value, name: str) -> bool:
    """A bool argument (0/1 accepted, as torch does)."""
    if isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {shown(value)}")


def channels_last(data_format) -> bool:
    """The data_format argument (Keras' names): True for "channels_last"
    (N, *spatial, C), False for "channels_first" (N, C, *spatial)."""
    if not isinstance(data_format, str):
        raise TypeError(f"data_format must be one of {DATA_FORMATS}, got "
                        f"{type(data_format).__name__} {shown(data_format)}")
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {shown(data_format)}")
    return data_format == "channels_last"


def thread_count(n) -> int:
    """A kernel thread count: 1 <= n <= THREADS_MAX."""
    return positive_int(n, "n", THREADS_MAX)


# ----------------------------------------------------------------- arrays

def check_array(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__} {shown(a)}")
    return a


def check_result_size(shape: tuple, what: str) -> None:
    """A result NumPy can index: beyond ARRAY_MAX elements np.empty fails
    with a ValueError that names no argument (or the kernels' offsets wrap)."""
    if math.prod(shape) > ARRAY_MAX:
        raise ValueError(f"{what}: a result of shape {tuple(shape)} has "
                         f"{math.prod(shape)} elements, more than cnnfast supports "
                         f"(2**59)")


_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
NATIVE_FLOATS = frozenset(_NATIVE_FLOATS)   # the kernel dtypes, for a fast membership test


def common_float_dtype(**arrays) -> np.dtype:
    """All arrays share one of float32/float64 (any byte order) -> native dtype."""
    dtypes = [a.dtype for a in arrays.values() if a is not None]
    if dtypes and dtypes[0] in _NATIVE_FLOATS and all(d == dtypes[0] for d in dtypes):
        return dtypes[0]  # the common case, without building the error listing
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


def _read_only_empty(dtype) -> np.ndarray:
    a = np.empty(0, dtype)
    a.flags.writeable = False
    return a


# An empty array per float dtype: stands for an array of that dtype in a
# dtype check, without allocating one per call.
_NO_ELEMENTS = {dt: _read_only_empty(dt) for dt in _NATIVE_FLOATS}


def kernel_array(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """What a kernel may read through a raw pointer: C-contiguous, aligned,
    native byte order. Copies only when the input is not already so."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned and a.dtype == dtype:
        return a   # what np.require returns then, in a tenth of its time
    return np.require(a, dtype=dtype, requirements=("C_CONTIGUOUS", "ALIGNED"))


def ghost(shape, dtype) -> np.ndarray:
    """A zero-stride array of shape and dtype (one element of memory): what
    the validation functions see in place of an activation (explain_model's
    dry run, an intermediate the fused inverted-residual block never makes)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), tuple(shape), (0,) * len(shape))


def expect_shape(a: np.ndarray, shape: tuple, name: str, what: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)} ({what})")


# ------------------------------------------- convolution geometry, padding

@geometry
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
    pad_mode: str = "zeros"   # "zeros" whenever there is no padding at all

    def as3d(self, t: tuple, fill: int) -> tuple:
        """Spatial tuple padded to 3 dims: the kernels are 3-D, 1-D/2-D use unit dims."""
        return (fill,) * (3 - self.nd) + tuple(t)

    @property
    def pad_mode_code(self) -> int:
        """The kernels' CF_PAD_* code of pad_mode."""
        return PAD_MODES.index(self.pad_mode)

    @property
    def padded_input(self) -> "ConvGeometry":
        """The same convolution over the input already padded (no padding of
        its own): a non-zero padding mode's input gradient is this one's,
        folded back onto the input."""
        size = tuple(n + b + a for n, b, a in zip(self.in_size, self.pad_before, self.pad_after))
        zeros = (0,) * self.nd
        return self._replace(in_size=size, pad_before=zeros, pad_after=zeros, pad_mode="zeros")

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


def _padding_pairs(padding, nd):
    """An int, a tuple of nd ints, or nd (before, after) pairs (asymmetric, as
    ONNX/TensorFlow pads) -> (before, after) tuples of ints >= 0."""
    if (isinstance(padding, (tuple, list)) and len(padding) == nd and padding
            and all(isinstance(p, (tuple, list)) for p in padding)):
        if not all(len(p) == 2 for p in padding):
            raise ValueError(f"padding pairs must be (before, after), one per spatial dim, "
                             f"got {shown(padding)}")
        before = ntuple([p[0] for p in padding], nd, "padding", minimum=0)
        after = ntuple([p[1] for p in padding], nd, "padding", minimum=0)
        return before, after
    pad = ntuple(padding, nd, "padding", minimum=0)
    return pad, pad


def same_padding(in_size, kernel, stride, dilation):
    """TensorFlow's "same": output ceil(in / stride), total padding
    max((out - 1)*stride + (k - 1)*dilation + 1 - in, 0), the smaller half
    before -> (before, after) tuples."""
    before, after = [], []
    for n, k, s, d in zip(in_size, kernel, stride, dilation):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return tuple(before), tuple(after)


def is_winograd_shape(geom: ConvGeometry) -> bool:
    return (geom.nd == 2 and tuple(geom.kernel) == (3, 3) and tuple(geom.stride) == (1, 1)
            and tuple(geom.dilation) == (1, 1))


def fits_blas(geom: ConvGeometry) -> bool:
    """GEMM dimensions and leading dimensions must fit BLAS's 32-bit ints."""
    # math.prod of Python ints: exact, and ~20x cheaper per call than np.prod
    rows = geom.in_channels // geom.groups * math.prod(geom.kernel)
    return max(rows, geom.out_channels, math.prod(geom.in_size),
               math.prod(geom.out_size)) <= BLAS_INT_MAX
