"""The arguments of conv{1,2,3}d and conv_transpose{1,2,3}d (and their
backward): array checks, padding in all its forms, padding_mode, stride and
dilation, groups, the algorithm and `need` -> a validated ConvGeometry (or
TransposeGeometry) with the output size. ConvGeometry itself lives in
cnnfast._validation: the planner and the NHWC kernels below the ops read it."""
from __future__ import annotations

import math
from typing import NamedTuple

from .._cache import geometry, memoized
from .._validation import (
    PAD_MODES, PLANE_MAX, SIZE_MAX, _NO_ELEMENTS, _SPATIAL, ConvGeometry, _is_int,
    _padding_pairs, check_array, check_result_size, common_float_dtype, expect_shape,
    fits_blas, ntuple, positive_int, same_padding, shown,
)


CONV_ALGORITHMS = ("auto", "direct", "im2col", "1x1", "winograd")


NEEDS = ("x", "weight", "bias")


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
        raise ValueError(f"padding must be {_conv_forms(nd)}, got {shown(padding)}")
    return _padding_pairs(padding, nd)


def padding_mode_arg(mode) -> str:
    """One of torch's padding_mode names."""
    if not isinstance(mode, str):
        raise TypeError(f"padding_mode must be a str, got {type(mode).__name__} {shown(mode)}")
    if mode not in PAD_MODES:
        raise ValueError(f"padding_mode must be one of {PAD_MODES}, got {shown(mode)}")
    return mode


def _padding_mode(mode, op, padding, in_size, before, after):
    """torch's padding_mode, with its size rules: 'reflect' needs each padding
    smaller than its input dim, 'circular' at most that dim. No padding at
    all is zero padding whatever the mode (nothing to fill)."""
    padding_mode_arg(mode)
    for i, (n, b, a) in enumerate(zip(in_size, before, after)):
        if (mode == "reflect" and max(b, a) >= n) or (mode == "circular" and max(b, a) > n):
            rule = "smaller than" if mode == "reflect" else "at most"
            raise ValueError(f"{op}: padding_mode={shown(mode)} needs each padding {rule} the "
                             f"input size, got padding={shown(padding)} (before {before}, "
                             f"after {after}) for input size {tuple(in_size)} in spatial dim "
                             f"{i}")
    return mode if any(before + after) else "zeros"


_FORWARD = object()  # grad_out's default: a forward call (None is a user error)


def _stride_dilation(op, nd, stride, dilation):
    """stride and dilation of a conv-family op: positive, at most 2**31 - 1."""
    stride = ntuple(stride, nd, "stride", minimum=1)
    dilation = ntuple(dilation, nd, "dilation", minimum=1)
    for name, values in (("stride", stride), ("dilation", dilation)):
        if any(v > SIZE_MAX for v in values):
            raise ValueError(f"{op}: {name} must be at most 2**31 - 1, got {shown(values)}")
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
        raise ValueError(f"{op}: padding must be at most 2**31 - 1, got {shown(padding)} "
                         f"(before {pad_before}, after {pad_after})")
    # the direct kernels read a zero-padded copy of each plane: its size must be sane
    padded = math.prod(n + pb + pa for n, pb, pa in zip(in_size, pad_before, pad_after))
    if padded > PLANE_MAX:
        raise ValueError(f"{op}: padding={shown(padding)} pads an input plane of size "
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
                         f"{shown(padding)} are not accepted (as torch)")
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
        raise TypeError(f"output_size must be a tuple of ints, got {shown(output_size)}")
    size = tuple(int(v) for v in output_size)
    if len(size) == nd + 2:
        size = size[2:]
    if len(size) != nd:
        raise ValueError(f"{op}: output_size must have {nd} (or {nd + 2}) entries, "
                         f"got {shown(output_size)}")
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
        raise ValueError(f"{op}: padding must be at most 2**31 - 1, got {shown(padding)}")
    output_padding = ntuple(output_padding, nd, "output_padding", minimum=0)
    for i, (r, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if r >= s and r >= d:
            raise ValueError(f"output_padding must be smaller than either stride or dilation "
                             f"(as torch), got output_padding={shown(output_padding)} with "
                             f"stride={shown(stride)}, dilation={shown(dilation)} (dim {i})")
    out_size = []
    for i, (n, k, s, d, pb, pa, r) in enumerate(zip(in_size, kernel, stride, dilation, before,
                                                    after, output_padding)):
        o = (n - 1) * s - pb - pa + d * (k - 1) + r + 1
        if o < 1:
            raise ValueError(f"{op}: padding {shown(padding)} removes the whole output in spatial "
                             f"dim {i}: (in - 1)*stride - before - after + dilation*(k - 1) "
                             f"+ output_padding + 1 = {o} for input size {n}")
        out_size.append(o)
    # the padded extent the conv view reads must be sane, as for conv
    padded = math.prod(o + pb for o, pb in zip(out_size, before))
    if padded > PLANE_MAX:
        raise ValueError(f"{op}: the output plane {tuple(out_size)} with padding {shown(padding)} "
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
        raise TypeError(f"algorithm must be a str, got {type(algorithm).__name__} "
                        f"{shown(algorithm)}")
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {CONV_ALGORITHMS}, got {shown(algorithm)}")
    if algorithm == "1x1" and not geom.is_pointwise:
        raise ValueError(f"algorithm='1x1' needs a kernel of all ones, got kernel size "
                         f"{geom.kernel}")
    if algorithm == "winograd":
        winograd_shape(geom)
    if algorithm in ("im2col", "1x1") and not fits_blas(geom):
        raise ValueError(f"algorithm={shown(algorithm)}: this shape exceeds the 32-bit sizes of "
                         f"the BLAS interface; use algorithm='direct'")
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
        raise TypeError(f"need must be a tuple of names from {NEEDS}, got {shown(need)}") from None
    bad = [n for n in items if n not in NEEDS]
    if bad:
        raise ValueError(f"need must name gradients from {NEEDS}, got {shown(need)}")
    return frozenset(items)
