"""The arguments of every pooling op: window, stride, padding (ints,
pairs, "valid", "same"), dilation and ceil_mode -> a PoolGeometry with the
output size; avg pooling's divisors, adaptive windows and output sizes; the
grad_out, indices and input_shape of the backward calls."""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from .._cache import geometry, memoized
from .._ext import _pool
from .._validation import (
    ARRAY_MAX, POOL_BUFFER_MAX, POOL_SIZE_MAX, _SPATIAL, _is_int, _padding_pairs, check_array,
    check_result_size, common_float_dtype, expect_shape, flag, ntuple, same_padding, shown,
)


@memoized
def input_shape_arg(input_shape, ndim: int, op: str) -> tuple:
    """The input_shape of a backward call: ndim ints, only the batch may be 0."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of {ndim} ints for {op}, "
                        f"got {shown(input_shape)}") from None
    if not all(_is_int(s) for s in shape):
        raise TypeError(f"input_shape must be a tuple of {ndim} ints for {op}, "
                        f"got {shown(input_shape)}")
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
        raise ValueError(f"{op}: padding must be {forms}, got {shown(padding)}")
    is_pairs = isinstance(padding, (tuple, list)) and any(
        isinstance(p, (tuple, list)) for p in padding)
    before, after = _padding_pairs(padding, nd)
    if not is_pairs:
        for p, k in zip(before, kernel):
            if p > k // 2:
                raise ValueError(f"{op}: padding must be at most half of kernel_size, got "
                                 f"padding={shown(padding)} for kernel_size={shown(kernel)}")
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
                raise ValueError(f"{op}: padding={shown(padding)} makes window {w} of spatial dim "
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
            raise ValueError(f"{op}: {name} must be at most 2**31 - 1, got {shown(values)}")
    before, after, counts_padding = _pool_padding(op, padding, nd, in_size, kernel, stride,
                                                  dilation)
    if any(v > POOL_SIZE_MAX for v in before + after):
        raise ValueError(f"{op}: padding must be at most 2**31 - 1, got {shown(padding)}")
    # "same" fixes the output size at ceil(in / stride): ceil_mode changes nothing
    ceil_mode = ceil_mode and counts_padding
    out_size = []
    for i, (n, k, s, pb, pa, d) in enumerate(zip(in_size, kernel, stride, before, after,
                                                 dilation)):
        o = pool_output_size(n, k, s, pb, d, ceil_mode, pa)
        if o < 1:
            pair = pb if pb == pa else (pb, pa)
            raise ValueError(f"{op}: window of effective size {(k - 1) * d + 1} "
                             f"(kernel_size={k}, dilation={d}) does not fit input size {n} "
                             f"with padding {pair} in spatial dim {i}: output size would "
                             f"be {o}")
        out_size.append(o)
    _check_windows(op, padding, in_size, out_size, kernel, stride, before, dilation)
    # the kernels may pool through a padded copy of one plane: its size must be sane
    padded = math.prod(max(n + pb, (o - 1) * s + (k - 1) * d + 1) + pb
                       for n, o, k, s, pb, d in zip(in_size, out_size, kernel, stride, before,
                                                    dilation))
    if padded > POOL_BUFFER_MAX:
        raise ValueError(f"{op}: an input plane of size {tuple(in_size)} with "
                         f"kernel_size={shown(kernel)}, padding={shown(padding)} and "
                         f"dilation={shown(dilation)} spans {padded} elements per plane, "
                         f"more than the kernels support ({POOL_BUFFER_MAX})")
    return in_size, kernel, stride, before, dilation, tuple(out_size), after, counts_padding


def divisor_override_arg(divisor_override):
    """None or any nonzero int (negative ones too, as torch: the sums are
    divided by it)."""
    if divisor_override is None:
        return None
    if not _is_int(divisor_override):
        raise TypeError(f"divisor_override must be None or an int, got "
                        f"{type(divisor_override).__name__} {shown(divisor_override)}")
    if divisor_override == 0:
        raise ValueError(f"divisor_override must be a nonzero int, got {shown(divisor_override)}")
    if abs(divisor_override) > POOL_SIZE_MAX:
        raise ValueError(f"divisor_override must lie within +-(2**31 - 1), got "
                         f"{shown(divisor_override)}")
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


@functools.lru_cache(maxsize=256)
def divisor_array(dtype: np.dtype, divisors: tuple) -> np.ndarray:
    """The kernels' form of avg_pool_divisors' per-dim factors (D, H, W): one
    read-only array [D | H | W] in dtype, W padded with ones to a whole
    number of vectors (the kernels load it a vector at a time). Cached:
    converting the factors on every call cost a tiny average pooling ~5 us,
    three times its kernel."""
    vw = _pool.VECTOR_WIDTH[np.dtype(dtype).char]
    od, oh, ow = map(len, divisors)
    packed = np.ones(od + oh + -(-ow // vw) * vw, dtype=dtype)
    packed[:od] = divisors[0]
    packed[od:od + oh] = divisors[1]
    packed[od + oh:od + oh + ow] = divisors[2]
    packed.flags.writeable = False
    return packed


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
def adaptive_windows3(in_size: tuple, out_size: tuple) -> np.ndarray:
    """The kernels' windows, one int64 array [ds | de | hs | he | ws | we]:
    each dim's window starts and ends, 1-D and 2-D padded to 3-D with one
    window [0, 1) per unit dim; read-only (cached)."""
    lead = ((1, 1),) * (3 - len(in_size))
    windows = np.concatenate([a for n, o in lead + tuple(zip(in_size, out_size))
                              for a in adaptive_windows(n, o)])
    windows.flags.writeable = False
    return windows


def adaptive_output_size(output_size, in_size: tuple) -> tuple:
    """An int or a tuple of nd = len(in_size) (None entries keep the input
    size) -> nd ints >= 1."""
    nd = len(in_size)
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != nd:
            raise ValueError(f"output_size must be an int or a tuple of {nd}, "
                             f"got {shown(output_size)}")
        output_size = tuple(n if s is None else s for s, n in zip(output_size, in_size))
    sizes = ntuple(output_size, nd, "output_size", minimum=1)
    if any(s > POOL_SIZE_MAX for s in sizes):
        raise ValueError(f"output_size must be at most 2**31 - 1, got {shown(output_size)}")
    return sizes


@memoized
def adaptive_geometry(x, output_size, op: str, nd: int = 2):
    dtype = _input_array(x, nd, op)
    sizes = adaptive_output_size(output_size, x.shape[2:])
    check_result_size(x.shape[:2] + sizes, f"{op} with output_size={shown(output_size)}")
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
