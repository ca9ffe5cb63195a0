"""The one place for argument checking, dtype rules and shape arithmetic.

Every public op calls into here before any kernel runs, so bad input always
surfaces as a ValueError/TypeError that names the argument and the value.
Sizes are computed with Python integers (floor division, no overflow).
"""
from __future__ import annotations

import functools
import math
import numbers
import reprlib
from typing import NamedTuple

import numpy as np

from ._cache import geometry, memoized

CONV_ALGORITHMS = ("auto", "direct", "im2col", "1x1", "winograd")
DATA_FORMATS = ("channels_first", "channels_last")
# torch's padding_mode values, in the order of the kernels' CF_PAD_* codes
PAD_MODES = ("zeros", "reflect", "replicate", "circular")
NEEDS = ("x", "weight", "bias")
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


def positive_int(value, name: str, maximum: int | None = None) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return int(value)


def channels_last(data_format) -> bool:
    """The data_format argument (Keras' names): True for "channels_last"
    (N, *spatial, C), False for "channels_first" (N, C, *spatial)."""
    if not isinstance(data_format, str):
        raise TypeError(f"data_format must be one of {DATA_FORMATS}, got "
                        f"{type(data_format).__name__} {_SHORT.repr(data_format)}")
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    return data_format == "channels_last"


def thread_count(n) -> int:
    """A kernel thread count: 1 <= n <= THREADS_MAX."""
    return positive_int(n, "n", THREADS_MAX)


# ----------------------------------------------------------------- arrays

_SHORT = reprlib.Repr()  # values in messages: a few entries of a list, 40 characters
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple = 2, 4, 4
_SHORT.maxstring = _SHORT.maxother = 40


def check_array(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        # the value, shortened: a list of a million floats must not become the message
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__} "
                        f"{_SHORT.repr(a)}")
    return a


def check_result_size(shape: tuple, what: str) -> None:
    """A result NumPy can index: beyond ARRAY_MAX elements np.empty fails
    with a ValueError that names no argument (or the kernels' offsets wrap)."""
    if math.prod(shape) > ARRAY_MAX:
        raise ValueError(f"{what}: a result of shape {tuple(shape)} has "
                         f"{math.prod(shape)} elements, more than cnnfast supports "
                         f"(2**59)")


_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


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


def expect_shape(a: np.ndarray, shape: tuple, name: str, what: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)} ({what})")


# ------------------------------------------------------------ convolution

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
                             f"got {padding!r}")
        before = ntuple([p[0] for p in padding], nd, "padding", minimum=0)
        after = ntuple([p[1] for p in padding], nd, "padding", minimum=0)
        return before, after
    pad = ntuple(padding, nd, "padding", minimum=0)
    return pad, pad


def conv_padding_arg(padding, nd):
    """A conv layer's padding, checked without an input: a string kept as is,
    otherwise the (before, after) pairs collapsed to a tuple of ints when
    symmetric."""
    if isinstance(padding, str):
        _conv_padding(padding, nd, (1,) * nd, (1,) * nd, (1,) * nd, (1,) * nd)
        return padding
    before, after = _padding_pairs(padding, nd)
    return before if before == after else tuple(zip(before, after))


def _conv_forms(nd):
    return (f"an int, a tuple of {nd} ints, {nd} (before, after) pairs, "
            + ("'causal', " if nd == 1 else "") + "'valid' or 'same'")


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


def _conv_padding(padding, nd, in_size, kernel, stride, dilation):
    """Conv padding in any form -> (before, after) tuples."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nd, (0,) * nd
        if padding == "same":
            return same_padding(in_size, kernel, stride, dilation)
        if padding == "causal":
            if nd != 1:
                raise ValueError(f"padding='causal' is for conv1d only (Keras' causal 1-D "
                                 f"convolution), got it for a {nd}-D convolution")
            return ((kernel[0] - 1) * dilation[0],), (0,)
        raise ValueError(f"padding must be {_conv_forms(nd)}, got {padding!r}")
    return _padding_pairs(padding, nd)


def padding_mode_arg(mode) -> str:
    """One of torch's padding_mode names."""
    if not isinstance(mode, str):
        raise TypeError(f"padding_mode must be a str, got {type(mode).__name__} {mode!r}")
    if mode not in PAD_MODES:
        raise ValueError(f"padding_mode must be one of {PAD_MODES}, got {mode!r}")
    return mode


def _padding_mode(mode, op, padding, in_size, before, after):
    """torch's padding_mode, with its size rules: 'reflect' needs each padding
    smaller than its input dim, 'circular' at most that dim. No padding at
    all is zero padding whatever the mode (nothing to fill)."""
    padding_mode_arg(mode)
    for i, (n, b, a) in enumerate(zip(in_size, before, after)):
        if (mode == "reflect" and max(b, a) >= n) or (mode == "circular" and max(b, a) > n):
            rule = "smaller than" if mode == "reflect" else "at most"
            raise ValueError(f"{op}: padding_mode={mode!r} needs each padding {rule} the input "
                             f"size, got padding={padding!r} (before {before}, after {after}) "
                             f"for input size {tuple(in_size)} in spatial dim {i}")
    return mode if any(before + after) else "zeros"


_FORWARD = object()  # grad_out's default: a forward call (None is a user error)


def _stride_dilation(op, nd, stride, dilation):
    """stride and dilation of a conv-family op: positive, at most 2**31 - 1."""
    stride = ntuple(stride, nd, "stride", minimum=1)
    dilation = ntuple(dilation, nd, "dilation", minimum=1)
    for name, values in (("stride", stride), ("dilation", dilation)):
        if any(v > SIZE_MAX for v in values):
            raise ValueError(f"{op}: {name} must be at most 2**31 - 1, got {values!r}")
    return stride, dilation


def _conv_arrays(nd, op, x, weight, bias, grad_out, x_layout, w_layout):
    """The array checks every conv-family op shares: arrays, one float dtype,
    ranks, and no empty dimension but the batch. Returns (dtype, grad_out or
    None for a forward call)."""
    check_array(x, "x")
    check_array(weight, "weight")
    if bias is not None:
        check_array(bias, "bias")
    if grad_out is _FORWARD:
        grad_out = None
    else:
        check_array(grad_out, "grad_out")
    dtype = common_float_dtype(x=x, weight=weight, bias=bias, grad_out=grad_out)
    if x.ndim != nd + 2:
        raise ValueError(f"x must be a {nd + 2}-D array ({x_layout}, {_SPATIAL[nd]}) for {op}, "
                         f"got shape {x.shape}")
    if weight.ndim != nd + 2:
        raise ValueError(f"weight must be a {nd + 2}-D array ({w_layout}, {_SPATIAL[nd]}) "
                         f"for {op}, got shape {weight.shape}")
    if 0 in x.shape[1:]:
        raise ValueError(f"x has shape {x.shape}: only the batch dimension may be 0")
    if 0 in weight.shape:
        raise ValueError(f"weight has shape {weight.shape}: no dimension may be 0")
    return dtype, grad_out


@memoized
def conv_geometry(nd, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                  grad_out=_FORWARD, padding_mode="zeros") -> ConvGeometry:
    """Validate a conv{nd}d call (or its backward when grad_out is given)."""
    op = f"conv{nd}d"
    backward = grad_out is not _FORWARD
    dtype, grad_out = _conv_arrays(nd, op, x, weight, bias, grad_out, "N, C", "K, C // groups")
    groups = positive_int(groups, "groups")
    N, C, *in_size = x.shape
    K, Cg, *kernel = weight.shape
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
    stride, dilation = _stride_dilation(op, nd, stride, dilation)
    pad_before, pad_after = _conv_padding(padding, nd, in_size, kernel, stride, dilation)
    if any(p > SIZE_MAX for p in pad_before + pad_after):
        raise ValueError(f"{op}: padding must be at most 2**31 - 1, got {padding!r} "
                         f"(before {pad_before}, after {pad_after})")
    # the direct kernels read a zero-padded copy of each plane: its size must be sane
    padded = math.prod(n + pb + pa for n, pb, pa in zip(in_size, pad_before, pad_after))
    if padded > PLANE_MAX:
        raise ValueError(f"{op}: padding={padding!r} pads an input plane of size "
                         f"{tuple(in_size)} to {padded} elements, more than the kernels "
                         f"support (2**48)")
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
    pad_mode = _padding_mode(padding_mode, op, padding, in_size, pad_before, pad_after)
    geom = ConvGeometry(nd, dtype, N, C, K, groups, tuple(in_size), tuple(kernel), stride,
                        dilation, pad_before, pad_after, tuple(out_size), pad_mode)
    check_result_size(geom.out_shape, op)
    if backward:
        expect_shape(grad_out, geom.out_shape, "grad_out", f"the output shape of this {op}")
    return geom


def _transpose_padding(padding, nd):
    """conv_transpose padding: an int, a tuple of nd ints, or nd (before, after)
    pairs (ONNX's asymmetric pads) -> (before, after) tuples."""
    if isinstance(padding, str):
        raise ValueError(f"padding of a transposed convolution must be an int, a tuple of "
                         f"{nd} ints or {nd} (before, after) pairs; strings such as "
                         f"{padding!r} are not accepted (as torch)")
    return _padding_pairs(padding, nd)


@geometry
class TransposeGeometry(NamedTuple):
    """A conv_transpose call, and the convolution whose input gradient it is:
    conv_transpose(x, w) = conv_backward_input(grad_out=x, w) for the conv
    `conv` mapping the transposed output (conv's input) to x (conv's output)."""
    conv: ConvGeometry
    output_padding: tuple

    @property
    def out_shape(self):
        return self.conv.x5_shape[:2] + tuple(self.conv.in_size)

    @property
    def in_shape(self):
        return self.conv.out_shape


def transpose_output_padding(output_size, nd, in_size, kernel, stride, padding, dilation,
                             op):
    """torch's rule for ConvTranspose*d.forward(x, output_size): the requested
    spatial size (an (N, C, *spatial) shape is accepted too) must lie between
    the smallest output size and that plus stride - 1, per dim; returns the
    output_padding that gives it."""
    if not isinstance(output_size, (tuple, list)) or not all(_is_int(v) for v in output_size):
        raise TypeError(f"output_size must be a tuple of ints, got {output_size!r}")
    size = tuple(int(v) for v in output_size)
    if len(size) == nd + 2:
        size = size[2:]
    if len(size) != nd:
        raise ValueError(f"{op}: output_size must have {nd} (or {nd + 2}) entries, "
                         f"got {output_size!r}")
    before, after = _transpose_padding(padding, nd)
    result = []
    for i, (want, n, k, s, pb, pa, d) in enumerate(zip(size, in_size, kernel, stride, before,
                                                       after, dilation)):
        smallest = (n - 1) * s - pb - pa + d * (k - 1) + 1
        if not smallest <= want <= smallest + s - 1:
            raise ValueError(f"{op}: output_size {tuple(size)} is not reachable: dim {i} must "
                             f"lie in [{smallest}, {smallest + s - 1}] for input size {n}, "
                             f"got {want}")
        result.append(want - smallest)
    return tuple(result)


@memoized
def conv_transpose_geometry(nd, x, weight, bias=None, stride=1, padding=0, output_padding=0,
                            groups=1, dilation=1, grad_out=_FORWARD) -> TransposeGeometry:
    """Validate a conv_transpose{nd}d call (or its backward when grad_out is
    given). weight is (C_in, C_out // groups, *kernel); output size per dim
    (in - 1)*stride - before - after + dilation*(kernel - 1) + output_padding + 1."""
    op = f"conv_transpose{nd}d"
    backward = grad_out is not _FORWARD
    dtype, grad_out = _conv_arrays(nd, op, x, weight, bias, grad_out, "N, C_in",
                                   "C_in, C_out // groups")
    groups = positive_int(groups, "groups")
    N, C_in, *in_size = x.shape
    Cw, K_per_group, *kernel = weight.shape
    if Cw != C_in:
        raise ValueError(f"x has {C_in} channels but weight.shape[0] (in channels) = {Cw}")
    if C_in % groups:
        raise ValueError(f"x.shape[1] (in channels) = {C_in} must be divisible by "
                         f"groups = {groups}")
    C_out = K_per_group * groups
    if bias is not None and bias.shape != (C_out,):
        raise ValueError(f"bias must have shape ({C_out},) = (weight.shape[1] * groups,), "
                         f"got {bias.shape}")
    stride, dilation = _stride_dilation(op, nd, stride, dilation)
    before, after = _transpose_padding(padding, nd)
    if any(p > SIZE_MAX for p in before + after):
        raise ValueError(f"{op}: padding must be at most 2**31 - 1, got {padding!r}")
    output_padding = ntuple(output_padding, nd, "output_padding", minimum=0)
    for i, (r, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if r >= s and r >= d:
            raise ValueError(f"output_padding must be smaller than either stride or dilation "
                             f"(as torch), got output_padding={output_padding!r} with "
                             f"stride={stride!r}, dilation={dilation!r} (dim {i})")
    out_size = []
    for i, (n, k, s, d, pb, pa, r) in enumerate(zip(in_size, kernel, stride, dilation, before,
                                                    after, output_padding)):
        o = (n - 1) * s - pb - pa + d * (k - 1) + r + 1
        if o < 1:
            raise ValueError(f"{op}: padding {padding!r} removes the whole output in spatial "
                             f"dim {i}: (in - 1)*stride - before - after + dilation*(k - 1) "
                             f"+ output_padding + 1 = {o} for input size {n}")
        out_size.append(o)
    # the padded extent the conv view reads must be sane, as for conv
    padded = math.prod(o + pb for o, pb in zip(out_size, before))
    if padded > PLANE_MAX:
        raise ValueError(f"{op}: the output plane {tuple(out_size)} with padding {padding!r} "
                         f"is larger than the kernels support (2**48 elements)")
    # The conv whose input gradient this is: input = the transposed output,
    # output = x. Only the padding before matters to it (its output count is
    # fixed to x's size); the after-padding is the rest of its input extent.
    conv_after = tuple((n - 1) * s + d * (k - 1) + 1 - o - pb for n, s, d, k, o, pb in
                       zip(in_size, stride, dilation, kernel, out_size, before))
    conv = ConvGeometry(nd, dtype, N, C_out, C_in, groups, tuple(out_size), tuple(kernel),
                        stride, dilation, before, conv_after, tuple(in_size))
    check_result_size(conv.x5_shape, op)
    geom = TransposeGeometry(conv, output_padding)
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
    if algorithm == "winograd":
        winograd_shape(geom)
    if algorithm in ("im2col", "1x1") and not fits_blas(geom):
        raise ValueError(f"algorithm={algorithm!r}: this shape exceeds the 32-bit sizes of the "
                         f"BLAS interface; use algorithm='direct'")
    return algorithm


def winograd_shape(geom: ConvGeometry) -> None:
    """algorithm='winograd' runs F(4x4, 3x3): 2-D, 3x3 kernel, stride 1, dilation 1."""
    if geom.nd != 2:
        raise ValueError(f"algorithm='winograd' needs a 2-D convolution with a 3x3 kernel, "
                         f"got a {geom.nd}-D convolution (kernel size {geom.kernel})")
    for name, value, want in (("kernel size", geom.kernel, (3, 3)), ("stride", geom.stride, (1, 1)),
                              ("dilation", geom.dilation, (1, 1))):
        if tuple(value) != want:
            raise ValueError(f"algorithm='winograd' needs {name} {want}, got {name} "
                             f"{tuple(value)}")


def is_winograd_shape(geom: ConvGeometry) -> bool:
    return (geom.nd == 2 and tuple(geom.kernel) == (3, 3) and tuple(geom.stride) == (1, 1)
            and tuple(geom.dilation) == (1, 1))


def fits_blas(geom: ConvGeometry) -> bool:
    """GEMM dimensions and leading dimensions must fit BLAS's 32-bit ints."""
    # math.prod of Python ints: exact, and ~20x cheaper per call than np.prod
    rows = geom.in_channels // geom.groups * math.prod(geom.kernel)
    return max(rows, geom.out_channels, math.prod(geom.in_size),
               math.prod(geom.out_size)) <= BLAS_INT_MAX


def conv_residual(residual, geom: ConvGeometry) -> None:
    """A fused convolution's residual: an array of the output's shape and dtype."""
    if residual is None:
        return
    check_array(residual, "residual")
    expect_shape(residual, geom.out_shape, "residual", "the convolution's output shape")
    common_float_dtype(x=_NO_ELEMENTS[geom.dtype], residual=residual)


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


# ---------------------------------------------------------------- pooling

def flag(value, name: str) -> bool:
    """A bool argument (0/1 accepted, as torch does)."""
    if isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


@memoized
def input_shape_arg(input_shape, ndim: int, op: str) -> tuple:
    """The input_shape of a backward call: ndim ints, only the batch may be 0."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of {ndim} ints for {op}, "
                        f"got {input_shape!r}") from None
    if not all(_is_int(s) for s in shape):
        raise TypeError(f"input_shape must be a tuple of {ndim} ints for {op}, "
                        f"got {input_shape!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim:
        raise ValueError(f"input_shape must have {ndim} entries for {op}, got {shape}")
    if shape[0] < 0 or any(s < 1 for s in shape[1:]):
        raise ValueError(f"input_shape {shape}: sizes must be positive (only the batch may "
                         f"be 0) for {op}")
    return shape


def input_shape_size(input_shape: tuple, op: str) -> None:
    """grad_x of input_shape must be an array NumPy can index (checked after
    the shape's agreement with grad_out and indices, just before allocating)."""
    if math.prod(input_shape) > ARRAY_MAX:
        raise ValueError(f"input_shape {input_shape} has {math.prod(input_shape)} elements, "
                         f"more than cnnfast supports (2**59) for {op}")


def _input_array(x, nd: int, op: str) -> np.dtype:
    check_array(x, "x")
    dtype = common_float_dtype(x=x)
    if x.ndim != nd + 2:
        raise ValueError(f"x must be a {nd + 2}-D array (N, C, {_SPATIAL[nd]}) for {op}, "
                         f"got shape {x.shape}")
    if 0 in x.shape[1:]:
        raise ValueError(f"x has shape {x.shape}: only the batch dimension may be 0")
    return dtype


@geometry
class PoolGeometry(NamedTuple):
    nd: int
    dtype: np.dtype
    batch: int
    channels: int
    in_size: tuple
    kernel: tuple
    stride: tuple
    padding: tuple          # padding before (what the kernels offset by)
    dilation: tuple
    out_size: tuple
    pad_after: tuple
    counts_padding: bool    # explicit padding (ints, pairs), which count_include_pad
                            # may count; False for "same" (TensorFlow never counts it)

    def as3d(self, t: tuple, fill: int) -> tuple:
        return (fill,) * (3 - self.nd) + tuple(t)

    @property
    def in_shape(self):
        return (self.batch, self.channels) + tuple(self.in_size)

    @property
    def out_shape(self):
        return (self.batch, self.channels) + tuple(self.out_size)

    @property
    def planes_shape(self):
        """The input as (N*C, D, H, W) planes: what the kernels iterate over."""
        return (self.batch * self.channels,) + self.as3d(self.in_size, 1)

    @property
    def out_planes_shape(self):
        return (self.batch * self.channels,) + self.as3d(self.out_size, 1)

    @property
    def kernel_args(self):
        """(kernel, stride, padding, dilation) as 3-tuples for the kernels."""
        return (self.as3d(self.kernel, 1), self.as3d(self.stride, 1),
                self.as3d(self.padding, 0), self.as3d(self.dilation, 1))

    # Channels-last pooling runs on the same 3-D plane kernels: an image
    # (*spatial, C) is one plane (D, H, W) = (1-D: 1, L, C; 2-D: H, W, C)
    # pooled with a window of 1 along C, so the kernels' vector lanes run
    # across channels. (3-D pooling would need a fourth dim.)

    @property
    def last_planes_shape(self):
        return (self.batch,) + (1,) * (2 - self.nd) + tuple(self.in_size) + (self.channels,)

    @property
    def last_out_planes_shape(self):
        return (self.batch,) + (1,) * (2 - self.nd) + tuple(self.out_size) + (self.channels,)

    @property
    def last_kernel_args(self):
        """kernel_args for last_planes_shape."""
        unit = (1,) * (2 - self.nd)
        return (unit + tuple(self.kernel) + (1,), unit + tuple(self.stride) + (1,),
                (0,) * (2 - self.nd) + tuple(self.padding) + (0,),
                unit + tuple(self.dilation) + (1,))

    def last_divisors(self, divisors):
        """avg_pool_divisors' per-dim factors (D, H, W of kernel_args) for the
        dims of last_planes_shape (the C dim divides by 1)."""
        unit = ((1,),) * (2 - self.nd)
        return unit + tuple(divisors[3 - self.nd:]) + ((1,) * self.channels,)


def pool_output_size(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool,
                     p_after: int | None = None) -> int:
    """torch's rule: floor (or ceil) of the window count, and with ceil_mode a
    last window that would start inside the right padding is dropped. p: the
    padding before; p_after: after (default p)."""
    p_after = p if p_after is None else p_after
    o = (n + p + p_after - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


@memoized
def pool_geometry(nd: int, kind: str, x=None, kernel_size=None, stride=None, padding=0,
                  dilation=1, ceil_mode=False, *, input_shape=None,
                  dtype=None) -> PoolGeometry:
    """Validate a {kind}_pool{nd}d call on array x, or on input_shape (backward)."""
    op = f"{kind}_pool{nd}d"
    if input_shape is None:
        dtype = _input_array(x, nd, op)
        shape = x.shape
    else:
        shape = input_shape
    args = (nd, op, tuple(shape[2:]), kernel_size, stride, padding, dilation, ceil_mode)
    try:
        key = _typed_key(args)
        sizes = _POOL_SIZES.get(key)
    except TypeError:  # an unhashable argument: validated below, not cached
        key = sizes = None
    if sizes is None:
        sizes = _pool_sizes(*args)
        if key is not None:
            if len(_POOL_SIZES) > 512:
                _POOL_SIZES.clear()
            _POOL_SIZES[key] = sizes
    geom = PoolGeometry(nd, dtype, shape[0], shape[1], *sizes)
    if input_shape is None:
        check_result_size(geom.out_shape, op)
    else:
        input_shape_size(input_shape, f"{op}_backward")
    return geom


# Shape arithmetic only (no arrays) is cached, because training repeats the
# same layer geometry every step and it is most of a small call's overhead.
# Keys carry each value's type: 2, 2.0 and True are equal in a dict, but only
# the int is valid.
_POOL_SIZES: dict = {}


def _typed_key(value):
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_typed_key(v) for v in value))
    hash(value)
    return (type(value), value)


def _pool_padding(op, padding, nd, in_size, kernel, stride, dilation):
    """Pooling padding -> (before, after, counts_padding). Ints (torch's form)
    keep torch's limit of half the kernel; "same" (TensorFlow's rule, never
    counted in averages) and (before, after) pairs need none beyond every
    window holding an input element (_check_windows): "same" pads up to
    (k - 1) * dilation in total, more than half the kernel with dilation."""
    forms = f"an int, a tuple of {nd} ints, {nd} (before, after) pairs, 'valid' or 'same'"
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nd, (0,) * nd, True
        if padding == "same":
            return same_padding(in_size, kernel, stride, dilation) + (False,)
        raise ValueError(f"{op}: padding must be {forms}, got {padding!r}")
    is_pairs = isinstance(padding, (tuple, list)) and any(
        isinstance(p, (tuple, list)) for p in padding)
    before, after = _padding_pairs(padding, nd)
    if not is_pairs:
        for p, k in zip(before, kernel):
            if p > k // 2:
                raise ValueError(f"{op}: padding must be at most half of kernel_size, got "
                                 f"padding={padding!r} for kernel_size={kernel!r}")
    return before, after, True


def pool_padding_arg(padding, nd, kernel, op):
    """A pooling layer's padding, checked without an input (kernel: the
    validated kernel_size): a string kept, pairs collapsed to ints when
    symmetric."""
    unit = (1,) * nd
    before, after, _ = _pool_padding(op, padding, nd, unit, kernel, unit, unit)
    if isinstance(padding, str):
        return padding
    return before if before == after else tuple(zip(before, after))


def _check_windows(op, padding, in_size, out_size, kernel, stride, before, dilation):
    """Every window must hold at least one input element: a window made only
    of padding has no maximum and no average (ValueError)."""
    for i, (n, o, k, s, b, d) in enumerate(zip(in_size, out_size, kernel, stride, before,
                                               dilation)):
        starts = [0, o - 1]
        if d > n:  # taps can step over the whole input: every window that starts before it
            starts = range(min(o, -(-b // s) + 1))
            starts = list(starts) + [o - 1]
        for w in starts:
            start = w * s - b
            first = start if start >= 0 else start + -(-(-start) // d) * d
            if not (first <= start + (k - 1) * d and first < n):
                raise ValueError(f"{op}: padding={padding!r} makes window {w} of spatial dim "
                                 f"{i} (input size {n}, kernel_size={k}, stride={s}, "
                                 f"dilation={d}, padding before {b}) consist only of padding")


def _pool_sizes(nd, op, in_size, kernel_size, stride, padding, dilation, ceil_mode):
    """(in_size, kernel, stride, padding before, dilation, out_size, padding
    after, counts_padding), validated."""
    kernel = ntuple(kernel_size, nd, "kernel_size", minimum=1)
    stride = kernel if stride is None else ntuple(stride, nd, "stride", minimum=1)
    dilation = ntuple(dilation, nd, "dilation", minimum=1)
    ceil_mode = flag(ceil_mode, "ceil_mode")
    for name, values in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        if any(v > POOL_SIZE_MAX for v in values):
            raise ValueError(f"{op}: {name} must be at most 2**31 - 1, got {values!r}")
    before, after, counts_padding = _pool_padding(op, padding, nd, in_size, kernel, stride,
                                                  dilation)
    if any(v > POOL_SIZE_MAX for v in before + after):
        raise ValueError(f"{op}: padding must be at most 2**31 - 1, got {padding!r}")
    # "same" fixes the output size at ceil(in / stride): ceil_mode changes nothing
    ceil_mode = ceil_mode and counts_padding
    out_size = []
    for i, (n, k, s, pb, pa, d) in enumerate(zip(in_size, kernel, stride, before, after,
                                                 dilation)):
        o = pool_output_size(n, k, s, pb, d, ceil_mode, pa)
        if o < 1:
            shown = pb if pb == pa else (pb, pa)
            raise ValueError(f"{op}: window of effective size {(k - 1) * d + 1} "
                             f"(kernel_size={k}, dilation={d}) does not fit input size {n} "
                             f"with padding {shown} in spatial dim {i}: output size would "
                             f"be {o}")
        out_size.append(o)
    _check_windows(op, padding, in_size, out_size, kernel, stride, before, dilation)
    # the kernels may pool through a padded copy of one plane: its size must be sane
    padded = math.prod(max(n + pb, (o - 1) * s + (k - 1) * d + 1) + pb
                       for n, o, k, s, pb, d in zip(in_size, out_size, kernel, stride, before,
                                                    dilation))
    if padded > POOL_BUFFER_MAX:
        raise ValueError(f"{op}: an input plane of size {tuple(in_size)} with "
                         f"kernel_size={kernel!r}, padding={padding!r} and "
                         f"dilation={dilation!r} spans {padded} elements per plane, "
                         f"more than the kernels support ({POOL_BUFFER_MAX})")
    return in_size, kernel, stride, before, dilation, tuple(out_size), after, counts_padding


def divisor_override_arg(divisor_override):
    """None or any nonzero int (negative ones too, as torch: the sums are
    divided by it)."""
    if divisor_override is None:
        return None
    if not _is_int(divisor_override):
        raise TypeError(f"divisor_override must be None or an int, got "
                        f"{type(divisor_override).__name__} {divisor_override!r}")
    if divisor_override == 0:
        raise ValueError(f"divisor_override must be a nonzero int, got {divisor_override!r}")
    if abs(divisor_override) > POOL_SIZE_MAX:
        raise ValueError(f"divisor_override must lie within +-(2**31 - 1), got "
                         f"{divisor_override!r}")
    return int(divisor_override)


@functools.lru_cache(maxsize=256)
def avg_pool_divisors(geom: PoolGeometry, count_include_pad: bool, divisor_override):
    """Per-dim factors (D, H, W) whose product is each output's divisor, by
    torch's rules: the window clipped to the padded input (ceil_mode's
    overhang never counts), and also to the input unless count_include_pad.
    A window with no input element sums to 0 and gets divisor 1 (0, not NaN)."""
    kernel, stride, padding, _ = geom.kernel_args
    in3 = geom.as3d(geom.in_size, 1)
    out3 = geom.as3d(geom.out_size, 1)
    after3 = geom.as3d(geom.pad_after, 0)
    if divisor_override is not None:
        return (1,) * out3[0], (1,) * out3[1], (divisor_override,) * out3[2]
    count_include_pad = count_include_pad and geom.counts_padding
    factors = []
    for n, o_size, k, s, p, pa in zip(in3, out3, kernel, stride, padding, after3):
        dim = []
        for o in range(o_size):
            start = o * s - p
            end = min(start + k, n + pa)
            inside = max(min(end, n) - max(start, 0), 0)
            count = (end - start) if count_include_pad else inside
            dim.append(count if count > 0 and inside > 0 else 1)
        factors.append(tuple(dim))
    return tuple(factors)


def max_pool_indices(grad_out, indices, input_shape, nd: int, op: str, check_range=True):
    """Validate (grad_out, indices, input_shape) of a max-pooling backward:
    indices are int64, shaped like grad_out, inside [0, plane size) -- an
    unchecked index would be a write anywhere in memory. Without the range
    check (the kernels check as they scatter) the result is cached: the
    rest reads shapes and dtypes only."""
    if check_range:
        return _max_pool_indices(grad_out, indices, input_shape, nd, op, True)
    return _max_pool_indices_shapes(grad_out, indices, input_shape, nd, op, False)


def _max_pool_indices(grad_out, indices, input_shape, nd: int, op: str, check_range):
    check_array(grad_out, "grad_out")
    dtype = common_float_dtype(grad_out=grad_out)
    input_shape = input_shape_arg(input_shape, nd + 2, op)
    if grad_out.ndim != nd + 2 or tuple(grad_out.shape[:2]) != input_shape[:2]:
        raise ValueError(f"grad_out has shape {grad_out.shape}, expected (N, C) = "
                         f"{input_shape[:2]} followed by {nd} output sizes for {op}")
    if 0 in grad_out.shape[2:]:
        raise ValueError(f"grad_out has shape {grad_out.shape}: output sizes must be positive")
    check_indices(indices, grad_out, input_shape, op, check_range)
    input_shape_size(input_shape, op)
    return dtype, input_shape


_max_pool_indices_shapes = memoized(_max_pool_indices)


def check_indices(indices, grad_out, input_shape: tuple, op: str, check_range=True) -> None:
    """int64, shaped like grad_out, inside [0, plane size): an unchecked index
    would be a write anywhere in memory. The kernels check the range as they
    scatter (check_range=False), the NumPy reference here."""
    check_array(indices, "indices")
    if indices.dtype.kind != "i" or indices.dtype.itemsize != 8:
        raise TypeError(f"indices must be int64 (as returned with return_indices=True) for "
                        f"{op}, got {indices.dtype}")
    expect_shape(indices, grad_out.shape, "indices", "the shape of grad_out")
    # one pass: viewed as unsigned, a negative index is huge, so the maximum
    # alone finds anything outside [0, plane)
    plane = math.prod(input_shape[2:])
    if (check_range and indices.size
            and int(indices.view(indices.dtype.str.replace("i", "u")).max()) >= plane):
        lo, hi = int(indices.min()), int(indices.max())
        raise index_out_of_range(lo if lo < 0 else hi, input_shape, op)


def index_out_of_range(value, input_shape: tuple, op: str) -> ValueError:
    return ValueError(f"indices must lie in [0, {math.prod(input_shape[2:])}) (the input "
                      f"plane of shape {input_shape[2:]}) for {op}, found {value}")


def adaptive_windows(n: int, o: int):
    """torch's adaptive windows: [floor(i*n/o), ceil((i+1)*n/o)) for i < o."""
    i = np.arange(o, dtype=np.int64)
    return (i * n) // o, -((-(i + 1) * n) // o)


@memoized
def adaptive_windows3(in_size: tuple, out_size: tuple) -> tuple:
    """The kernels' (ds, de, hs, he, ws, we): each dim's windows, 1-D and 2-D
    padded to 3-D with one window [0, 1) per unit dim; read-only (cached)."""
    lead = ((1, 1),) * (3 - len(in_size))
    windows = tuple(a for n, o in lead + tuple(zip(in_size, out_size))
                    for a in adaptive_windows(n, o))
    for a in windows:
        a.flags.writeable = False
    return windows


def adaptive_output_size(output_size, in_size: tuple) -> tuple:
    """An int or a tuple of nd = len(in_size) (None entries keep the input
    size) -> nd ints >= 1."""
    nd = len(in_size)
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != nd:
            raise ValueError(f"output_size must be an int or a tuple of {nd}, "
                             f"got {output_size!r}")
        output_size = tuple(n if s is None else s for s, n in zip(output_size, in_size))
    sizes = ntuple(output_size, nd, "output_size", minimum=1)
    if any(s > POOL_SIZE_MAX for s in sizes):
        raise ValueError(f"output_size must be at most 2**31 - 1, got {output_size!r}")
    return sizes


@memoized
def adaptive_geometry(x, output_size, op: str, nd: int = 2):
    dtype = _input_array(x, nd, op)
    sizes = adaptive_output_size(output_size, x.shape[2:])
    check_result_size(x.shape[:2] + sizes, f"{op} with output_size={output_size!r}")
    return dtype, sizes


@memoized
def pooled_grad(grad_out, input_shape, op: str, out_size=None, keepdims_ok=False, nd=2):
    """Validate grad_out of an avg-type backward against input_shape: (N, C) +
    out_size, or for global pooling (N, C) or (N, C, 1, 1)."""
    check_array(grad_out, "grad_out")
    dtype = common_float_dtype(grad_out=grad_out)
    input_shape = input_shape_arg(input_shape, nd + 2, op)
    N, C = input_shape[:2]
    if keepdims_ok:
        if tuple(grad_out.shape) not in ((N, C), (N, C, 1, 1)):
            raise ValueError(f"grad_out has shape {grad_out.shape}, expected {(N, C)} or "
                             f"{(N, C, 1, 1)} for {op} of input_shape {input_shape}")
    elif out_size is None:
        if (grad_out.ndim != nd + 2 or tuple(grad_out.shape[:2]) != (N, C)
                or 0 in grad_out.shape[2:]):
            raise ValueError(f"grad_out has shape {grad_out.shape}, expected (N, C) = {(N, C)} "
                             f"followed by {nd} positive output sizes for {op}")
    input_shape_size(input_shape, op)
    return dtype, input_shape


# ------------------------------------------------- batch norm, activations

def _real_number(value, name: str, minimum: float | None = None) -> float:
    """A finite real number (not a bool), optionally >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got "
                        f"{type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def _channel_vector(a, name: str, channels: int, x_shape: tuple) -> None:
    if a is None:
        return
    check_array(a, name)
    if a.shape != (channels,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({channels},): one value per "
                         f"channel of x (shape {x_shape}, channels on axis 1)")


def _channels_input(x, op: str) -> None:
    check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dims (N, C, *) for {op}, got shape {x.shape}")


class NormShape(NamedTuple):
    """x of any (N, C, *) shape seen as (N, C, S) for the kernels."""
    dtype: np.dtype
    shape: tuple
    count: int      # values per channel, N * S

    @property
    def as3d(self):
        n, c = self.shape[:2]
        return (n, c, math.prod(self.shape[2:]))


@memoized
def batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """cnnfast.batch_norm's arguments -> (NormShape, training, momentum, eps)."""
    op = "batch_norm"
    _channels_input(x, op)
    training = flag(training, "training")
    momentum = _real_number(momentum, "momentum")
    eps = _real_number(eps, "eps", minimum=0)
    C = x.shape[1]
    for name, a in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _channel_vector(a, name, C, x.shape)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be arrays or both be None, "
                         f"got running_mean={'None' if running_mean is None else 'an array'}, "
                         f"running_var={'None' if running_var is None else 'an array'}")
    if not training and running_mean is None:
        raise ValueError("batch_norm with training=False normalises with running_mean and "
                         "running_var: they must be arrays, got None")
    dtype = common_float_dtype(x=x, running_mean=running_mean, running_var=running_var,
                               weight=weight, bias=bias)
    if training and running_mean is not None:
        for name, a in (("running_mean", running_mean), ("running_var", running_var)):
            if not a.flags.writeable:
                raise ValueError(f"{name} must be writeable: training=True updates it in "
                                 f"place")
    count = x.shape[0] * math.prod(x.shape[2:])
    if training and count == 1:
        raise ValueError(f"batch_norm with training=True needs more than one value per "
                         f"channel to compute batch statistics, got x of shape {x.shape}")
    return NormShape(dtype, tuple(x.shape), count), training, momentum, eps


@memoized
def batch_norm_backward_args(grad_out, x, weight, mean, invstd, relu_out=None) -> NormShape:
    op = "batch_norm_backward"
    check_array(grad_out, "grad_out")
    _channels_input(x, op)
    expect_shape(grad_out, x.shape, "grad_out", "the shape of x")
    if relu_out is not None:
        check_array(relu_out, "relu_out")
        expect_shape(relu_out, x.shape, "relu_out", "the shape of x")
    C = x.shape[1]
    for name, a in (("weight", weight), ("mean", mean), ("invstd", invstd)):
        _channel_vector(a, name, C, x.shape)
    if mean is None or invstd is None:
        raise TypeError(f"mean and invstd must be arrays (the batch statistics of the "
                        f"forward), got mean={type(mean).__name__}, "
                        f"invstd={type(invstd).__name__}")
    dtype = common_float_dtype(grad_out=grad_out, x=x, weight=weight, mean=mean, invstd=invstd,
                               relu_out=relu_out)
    return NormShape(dtype, tuple(x.shape), x.shape[0] * math.prod(x.shape[2:]))


def elementwise_args(op: str, **arrays) -> np.dtype:
    """Arrays of one shape and one float dtype (relu, relu_backward, add_relu)."""
    first = None
    for name, a in arrays.items():
        check_array(a, name)
        if first is None:
            first = (name, a.shape)
        elif a.shape != first[1]:
            raise ValueError(f"{name} has shape {a.shape}, expected {first[1]} (the shape of "
                             f"{first[0]}) for {op}")
    return common_float_dtype(**arrays)


def _real(value, name: str) -> float:
    """A real number (int or float, not bool) as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def clamp_bounds(min_val, max_val) -> tuple[float, float]:
    """hardtanh's bounds: numbers, not NaN, min_val <= max_val (torch's rule;
    equal bounds are a constant)."""
    lo, hi = _real(min_val, "min_val"), _real(max_val, "max_val")
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"min_val and max_val must not be NaN, got min_val={min_val!r}, "
                         f"max_val={max_val!r}")
    if lo > hi:
        raise ValueError(f"min_val must be <= max_val, got min_val={min_val!r}, "
                         f"max_val={max_val!r}")
    return lo, hi


def epilogue_clamp(clamp) -> tuple[float, float] | None:
    """A fused convolution's activation: None/False (none), True (ReLU,
    [0, inf]) or (lo, hi) -> the (lo, hi) the kernel's epilogue takes."""
    if clamp is None or clamp is False:
        return None
    if clamp is True:
        return (0.0, math.inf)
    if not isinstance(clamp, tuple) or len(clamp) != 2:
        raise TypeError(f"clamp must be None, a bool or a (lo, hi) pair, got {clamp!r}")
    return clamp_bounds(*clamp)
