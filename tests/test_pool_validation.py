"""Argument validation of the pooling ops and their backward functions: the
window arguments (kernel_size, stride, padding, dilation, ceil_mode and the
other flags, divisor_override, adaptive output_size). The array arguments
(x, grad_out, indices, input_shape) of every op are checked in
tests/test_validation.py.

Every bad input listed in docs/API.md ("Conventions", "Pooling") and docs/EDGE_CASES.md
("Arguments") raises exactly the documented exception type (ValueError for values,
TypeError for types) with a message that names the argument and, where practical,
the offending value -- before any kernel runs and without touching the inputs.
cnnfast.reference shares cnnfast._validation, so every rule is checked on both
cnnfast.functional and cnnfast.reference.

Ops: max/avg pool 1d/2d/3d, adaptive avg/max 2d, global avg/max 2d, and the
backward function of each.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import cnnfast
from cnnfast import functional, reference

from validation_cases import (ADAPTIVE, AVG, AVG_OPS, GLOBAL, INDEXED_BACKWARD, KERNEL, MAX,
                              MODULES, SPATIAL, WINDOW_OPS, C, N, base_args, call, esc,
                              forward_kwargs, forward_of, is_backward, nd_of, shape_re)
from validation_cases import POOL_OPS as ALL_OPS
from validation_cases import set_last as _set_last


@pytest.fixture(autouse=True)
def serial_kernels():
    """One kernel thread: the few valid calls here are tiny, and idle OpenMP
    threads make tiny calls slow on a loaded machine."""
    with cnnfast.num_threads(1):
        yield


# ------------------------------------------------------------ spellings

@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", WINDOW_OPS)
def test_valid_argument_spellings(mod, op):
    """Lists, NumPy ints, 0/1 and numpy bools are accepted like ints and bools."""
    nd = nd_of(op)
    args = base_args(op)
    expected = call(mod, op, args)
    kernel = KERNEL[nd]
    variants = [
        dict(kernel_size=list(kernel)),
        dict(kernel_size=tuple(np.int64(k) for k in kernel)),
        dict(kernel_size=tuple(np.int32(k) for k in kernel), stride=list(kernel)),
        dict(stride=tuple(np.uint8(k) for k in kernel), padding=np.int64(0)),
        dict(ceil_mode=0, padding=[0] * nd),
        dict(ceil_mode=np.bool_(False)),
    ]
    if nd == 1:
        variants.append(dict(kernel_size=kernel[0], stride=(kernel[0],)))
    if op in MAX:
        variants += [dict(dilation=np.int64(1)), dict(dilation=[1] * nd),
                     dict(return_indices=0)]
    if op in AVG_OPS:
        variants += [dict(count_include_pad=1), dict(count_include_pad=np.bool_(True)),
                     dict(divisor_override=None)]
    for change in variants:
        got = call(mod, op, {**args, **change})
        np.testing.assert_array_equal(got, expected, err_msg=str(change))


# ---------------------------------------- kernel_size, stride, padding, dilation

def _geometry_names(op):
    return ["kernel_size", "stride", "padding"] + (["dilation"] if op in MAX else [])


GEOMETRY_PARAMS = [(op, name) for op in WINDOW_OPS for name in _geometry_names(op)]
POSITIVE_PARAMS = [(op, name) for op, name in GEOMETRY_PARAMS if name != "padding"]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, name", POSITIVE_PARAMS)
@pytest.mark.parametrize("bad", [0, -1, "one_zero", "one_negative"])
def test_kernel_stride_dilation_not_positive(mod, op, name, bad):
    nd = nd_of(op)
    if bad == "one_zero":
        bad = _set_last(0, nd)
    elif bad == "one_negative":
        bad = (-2,) + (1,) * (nd - 1)
    args = base_args(op)
    args[name] = bad
    with pytest.raises(ValueError, match=rf"^{name} must be positive, got {esc(bad)}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", WINDOW_OPS)
@pytest.mark.parametrize("bad", [-1, -7, "tuple"])
def test_padding_negative(mod, op, bad):
    nd = nd_of(op)
    if bad == "tuple":
        bad = (0,) * (nd - 1) + (-1,)
    args = base_args(op)
    args["padding"] = bad
    with pytest.raises(ValueError, match=rf"^padding must be >= 0, got {esc(bad)}$"):
        call(mod, op, args)


HALF_KERNEL_CASES = [
    (3, 2, 1),   # 2 > 3 // 2
    (1, 1, 1),   # a 1-wide kernel takes no padding
    (4, 3, 1),   # 3 > 4 // 2
    (2, 2, 1),
    (3, 2, 2),   # the rule is on kernel_size (docs/API.md, torch), dilation does not relax it
]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, kernel, padding, dilation", [
    (op, *case) for op in WINDOW_OPS for case in HALF_KERNEL_CASES
    if case[2] == 1 or op in MAX])
def test_padding_larger_than_half_the_kernel(mod, op, kernel, padding, dilation):
    nd = nd_of(op)
    args = base_args(op)
    kernel_t = _set_last(kernel, nd)
    padding_t = (0,) * (nd - 1) + (padding,)
    args.update(kernel_size=kernel_t, padding=padding_t, stride=1)
    if op in MAX:
        args["dilation"] = dilation
    if is_backward(op):  # a large input, so that only the padding is wrong
        args["input_shape"] = tuple(args["input_shape"][:2]) + (20,) * nd
    else:
        args["x"] = np.zeros(args["x"].shape[:2] + (20,) * nd)
    with pytest.raises(ValueError, match=rf"^{forward_of(op)}: padding must be at most half "
                                         rf"of kernel_size, got padding={shape_re(padding_t)} "
                                         rf"for kernel_size={shape_re(kernel_t)}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", WINDOW_OPS)
def test_padding_of_exactly_half_the_kernel_is_valid(mod, op):
    nd = nd_of(op)
    args = base_args(op)
    args.update(kernel_size=(3,) * nd, padding=(1,) * nd, stride=(2,) * nd)
    if is_backward(op):
        shape = tuple(args["input_shape"])
        args["grad_out"] = np.ones(getattr(reference, forward_of(op))(
            np.zeros(shape), kernel_size=3, padding=1, stride=2).shape)
        assert call(mod, op, args).shape == shape
    else:
        assert call(mod, op, args).shape[2:] == tuple(
            (n + 2 - 3) // 2 + 1 for n in args["x"].shape[2:])


WINDOW_MISFITS = [
    # n, k, stride, padding, dilation, ceil_mode
    (2, 3, 1, 0, 1, False),   # kernel larger than the input
    (1, 4, 1, 1, 1, False),   # larger than the padded input too
    (3, 4, 2, 0, 1, False),   # (3 - 4) // 2 + 1 == 0; C's truncating division gives 1
    (2, 3, 1, 0, 1, True),    # ceil_mode does not rescue it: (2 - 3) // 1 + 1 == 0
    (5, 3, 1, 0, 3, False),   # dilation: effective size 7
    (4, 3, 3, 0, 2, False),   # (4 - 5) // 3 + 1 == 0
    (6, 4, 1, 1, 3, True),    # effective 10 > 6 + 2
]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, n, k, stride, padding, dilation, ceil_mode", [
    (op, *case) for op in WINDOW_OPS for case in WINDOW_MISFITS if case[4] == 1 or op in MAX])
def test_window_does_not_fit(mod, op, n, k, stride, padding, dilation, ceil_mode):
    nd = nd_of(op)
    eff = (k - 1) * dilation + 1
    o = (n + 2 * padding - eff + (stride - 1 if ceil_mode else 0)) // stride + 1
    assert o < 1
    args = base_args(op)
    spatial = tuple(SPATIAL[nd][:-1]) + (n,)
    if is_backward(op):
        args["input_shape"] = (N, C) + spatial
    else:
        args["x"] = np.zeros((N, C) + spatial)
    # the bad dim is the last one; the others keep valid values
    args.update(kernel_size=_set_last(k, nd), stride=_set_last(stride, nd),
                padding=(0,) * (nd - 1) + (padding,), ceil_mode=ceil_mode)
    if op in MAX:
        args["dilation"] = _set_last(dilation, nd)
    with pytest.raises(ValueError, match=rf"^{forward_of(op)}: window of effective size {eff} "
                                         rf"\(kernel_size={k}, dilation={dilation}\) does not "
                                         rf"fit input size {n} with padding {padding} in "
                                         rf"spatial dim {nd - 1}: output size would be {o}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, name", GEOMETRY_PARAMS)
@pytest.mark.parametrize("length", ["shorter", "longer", "empty"])
def test_tuple_of_wrong_length(mod, op, name, length):
    nd = nd_of(op)
    n = {"shorter": nd - 1, "longer": nd + 1, "empty": 0}[length]
    bad = (1,) * n
    if name == "padding":
        bad = (0,) * n
    args = base_args(op)
    args[name] = bad
    with pytest.raises(ValueError, match=rf"^{name} must be an int or a tuple of {nd} ints, "
                                         rf"got {esc(bad)}$"):
        call(mod, op, args)


NON_INTS = [2.0, 1.5, "2", b"2", np.float64(2), True, "float_entry", "str_entry",
            "bool_entry", "none_entry", "array"]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, name, bad", [
    (op, name, bad) for op, name in GEOMETRY_PARAMS for bad in NON_INTS + [None]
    if not (bad is None and name == "stride")  # stride=None means stride = kernel_size
    and not (bad == "2" and name == "padding")])  # an unknown padding string: ValueError
                                                  # (tests/test_padding.py)
def test_non_int_geometry(mod, op, name, bad):
    nd = nd_of(op)
    if isinstance(bad, str) and bad.endswith("_entry"):
        entry = {"float_entry": 1.0, "str_entry": "1", "bool_entry": True,
                 "none_entry": None}[bad]
        bad = (1,) * (nd - 1) + (entry,)
    elif isinstance(bad, str) and bad == "array":
        bad = np.ones(nd, dtype=np.int64)
    args = base_args(op)
    args[name] = bad
    shown = re.escape(repr(bad)) if not isinstance(bad, np.ndarray) else r"array\(.*\)"
    with pytest.raises(TypeError, match=rf"^{name} must be an int or a tuple of {nd} ints, "
                                        rf"got .*{shown}$"):
        call(mod, op, args)


# ---------------------------------------------------------- bool flags

FLAG_PARAMS = ([(op, "ceil_mode") for op in WINDOW_OPS]
               + [(op, "return_indices") for op in MAX + ["adaptive_max_pool2d",
                                                          "global_max_pool2d"]]
               + [(op, "count_include_pad") for op in AVG_OPS]
               + [(op, "keepdims") for op in GLOBAL])
NON_BOOLS = [2, -1, None, 1.0, 0.0, "yes", "False", "", np.float64(1), np.int64(2), (True,),
             [False]]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, name", FLAG_PARAMS)
@pytest.mark.parametrize("value", NON_BOOLS, ids=repr)
def test_flag_not_a_bool(mod, op, name, value):
    args = base_args(op)
    args[name] = value
    with pytest.raises(TypeError, match=rf"^{name} must be a bool, got "
                                        rf"{type(value).__name__} {esc(value)}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, name", FLAG_PARAMS)
@pytest.mark.parametrize("value", [True, False, 0, 1, np.bool_(True), np.int64(0)], ids=repr)
def test_flag_values_accepted(mod, op, name, value):
    args = base_args(op)
    args[name] = value
    if is_backward(op):  # ceil_mode=True changes the output shape of the base geometry
        geometry = {k: v for k, v in args.items() if k not in ("grad_out", "input_shape")}
        args["grad_out"] = np.ones(getattr(reference, forward_of(op))(
            np.zeros(args["input_shape"]), **geometry).shape)
    call(mod, op, args)


# ------------------------------------------------------ divisor_override

@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", AVG_OPS)
@pytest.mark.parametrize("value", [0, np.int64(0)], ids=repr)
def test_divisor_override_zero(mod, op, value):
    # any nonzero int is valid, negative ones too (as torch; tests/test_parity.py)
    args = base_args(op)
    args["divisor_override"] = value
    with pytest.raises(ValueError, match=rf"^divisor_override must be a nonzero int, "
                                         rf"got {esc(value)}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", AVG_OPS)
@pytest.mark.parametrize("value", [2.0, 0.5, "2", True, False, np.float32(2), (2,), [3]],
                         ids=repr)
def test_divisor_override_not_an_int(mod, op, value):
    args = base_args(op)
    args["divisor_override"] = value
    with pytest.raises(TypeError, match=rf"^divisor_override must be None or an int, got "
                                        rf"{type(value).__name__} {esc(value)}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", AVG)
def test_divisor_override_accepted(mod, op):
    args = base_args(op)
    k = int(np.prod(KERNEL[nd_of(op)]))
    plain = call(mod, op, args)
    for value in (k, np.int64(k), np.uint8(k)):
        got = call(mod, op, {**args, "divisor_override": value})
        np.testing.assert_allclose(got, plain, rtol=1e-12, atol=1e-15)
    halved = call(mod, op, {**args, "divisor_override": 2 * k})
    np.testing.assert_allclose(halved, plain / 2, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------- adaptive output_size

@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", ADAPTIVE)
@pytest.mark.parametrize("value", [0, -1, (0, 2), (2, -3), [1, 0], (None, 0), (-1, None)],
                         ids=repr)
def test_adaptive_output_size_not_positive(mod, op, value):
    args = base_args(op)
    args["output_size"] = value
    with pytest.raises(ValueError, match=r"^output_size must be positive, got "):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", ADAPTIVE)
@pytest.mark.parametrize("value", [(2,), (2, 2, 2), (), [1, 2, 3], (None,), (None, None, 1)],
                         ids=repr)
def test_adaptive_output_size_wrong_length(mod, op, value):
    args = base_args(op)
    args["output_size"] = value
    with pytest.raises(ValueError, match=rf"^output_size must be an int or a tuple of 2, "
                                         rf"got {esc(value)}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", ADAPTIVE)
@pytest.mark.parametrize("value", [2.0, "2", None, True, np.float64(3), (2, 2.0), (2, "2"),
                                   (True, 2), b"22", {2, 3}], ids=repr)
def test_adaptive_output_size_not_ints(mod, op, value):
    args = base_args(op)
    args["output_size"] = value
    with pytest.raises(TypeError, match=r"^output_size must be an int or a tuple of 2 ints, "
                                        r"got "):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", ADAPTIVE)
def test_adaptive_output_size_spellings(mod, op):
    args = base_args(op)
    H, W = args["x"].shape[2:]
    for value, hw in [(3, (3, 3)), ((3, 4), (3, 4)), ([3, 4], (3, 4)), ((None, 4), (H, 4)),
                      ((3, None), (3, W)), (np.int64(2), (2, 2)), ((H + 3, W + 1), (H + 3, W + 1))]:
        assert call(mod, op, {**args, "output_size": value}).shape == (N, C) + hw


# ------------------------------------------ validation before any kernel

HUGE_N = 2**47


def _huge_spatial(nd):
    return {1: (64,), 2: (8, 8), 3: (4, 4, 4)}[nd]


def _huge(op):
    """A zero-stride x of 2**47 * C * 64 float32 elements (96 PiB, no memory
    behind it). Copying it, or even allocating an (N, C) result, is impossible
    (more than the 47-bit address space), so a bad argument must be rejected
    before any work: anything else fails fast with MemoryError instead."""
    return np.broadcast_to(np.float32(0), (HUGE_N, C) + _huge_spatial(nd_of(op)))


HUGE_BAD = {
    "kernel_size": dict(kernel_size=0),
    "stride": dict(stride=-1),
    "padding": dict(padding=-1),
    "half": dict(kernel_size=2, padding=2),
    "too_big": dict(kernel_size=65),
}


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", MAX + AVG)
@pytest.mark.parametrize("bad", sorted(HUGE_BAD))
def test_forward_validation_before_any_kernel(mod, op, bad):
    args = dict(x=_huge(op), kernel_size=2)
    args.update(HUGE_BAD[bad])
    match = {"half": "padding must be at most", "too_big": "does not fit",
             "kernel_size": "kernel_size"}.get(bad, bad)
    with pytest.raises(ValueError, match=match):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", ADAPTIVE)
def test_adaptive_validation_before_any_kernel(mod, op):
    with pytest.raises(ValueError, match="output_size"):
        call(mod, op, dict(x=_huge(op), output_size=(0, 3)))


# pairs where cnnfast.reference would check a flag only after pooling
REFERENCE_LATE_FLAGS = set()  # (op, flag) pairs once recorded here are fixed


def _flag_before_kernel_params():
    params = []
    for op, name in FLAG_PARAMS:
        for mod in (functional, reference):
            marks = ()
            if mod is reference and (op, name) in REFERENCE_LATE_FLAGS:
                marks = pytest.mark.xfail(strict=True, raises=MemoryError, reason=(
                    f"GAP (reference only): cnnfast.reference.{op} validates {name} after "
                    f"computing the pooled values, so a bad {name} on a large input costs the "
                    f"full computation (here: MemoryError) before the TypeError"))
            params.append(pytest.param(mod, op, name, marks=marks,
                                       id=f"{mod.__name__.split('.')[-1]}-{op}-{name}"))
    return params


@pytest.mark.parametrize("mod, op, name", _flag_before_kernel_params())
def test_flags_validated_before_any_kernel(mod, op, name):
    nd = nd_of(op)
    if is_backward(op):  # avg backward of a huge input
        spatial = _huge_spatial(nd)
        args = dict(grad_out=np.broadcast_to(np.float32(0), (HUGE_N, C) + tuple(
                        n // 2 for n in spatial)),
                    input_shape=(HUGE_N, C) + spatial, kernel_size=2)
    else:
        args = dict(x=_huge(op), **forward_kwargs(op))
    args[name] = "yes"
    with pytest.raises(TypeError, match=rf"^{name} must be a bool"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", INDEXED_BACKWARD)
@pytest.mark.parametrize("bad", ["indices_dtype", "indices_shape", "input_shape", "grad_out"])
def test_max_backward_validation_before_any_kernel(mod, op, bad):
    nd = nd_of(op)
    big = (HUGE_N, C) + ((8,) * nd if not op.startswith("global") else ())
    grad_out = np.broadcast_to(np.float32(0), big)
    indices = np.broadcast_to(np.int64(0), big)
    input_shape = (HUGE_N, C) + (16,) * nd
    if bad == "indices_dtype":
        indices = np.broadcast_to(np.int32(0), big)
    elif bad == "indices_shape":
        indices = indices[:, :-1]
    elif bad == "input_shape":
        input_shape = input_shape[:-1] + (-1,)
    else:
        grad_out = np.broadcast_to(np.float16(0), big)
    match = {"grad_out": "grad_out=float16"}.get(bad, bad.split("_")[0])
    with pytest.raises((ValueError, TypeError), match=match):
        call(mod, op, dict(grad_out=grad_out, indices=indices, input_shape=input_shape))


# ------------------------------------------ failed calls leave inputs alone

BAD_CALLS = {
    "max": [dict(stride=0), dict(padding=-1), dict(kernel_size=(1, 2, 3, 4)),
            dict(dilation=0), dict(return_indices="y"), dict(kernel_size=50)],
    "avg": [dict(stride=0), dict(padding=5), dict(divisor_override=0),
            dict(count_include_pad=None), dict(ceil_mode=2)],
    "adaptive": [dict(output_size=0), dict(output_size=(1, 2, 3))],
    "global": [dict(keepdims="y")],
    "max_backward": [dict(indices="negative"), dict(indices="int32"),
                     dict(input_shape="zero_c"), dict(grad_out="wrong_c")],
    "avg_backward": [dict(stride=0), dict(grad_out="wrong_c"), dict(input_shape="zero_c"),
                     dict(divisor_override=0)],
    "plain_backward": [dict(grad_out="wrong_c"), dict(input_shape="zero_c")],
}


def _family(op):
    if op in INDEXED_BACKWARD:
        return "max_backward"
    if op in [f"{o}_backward" for o in AVG]:
        return "avg_backward"
    if is_backward(op):
        return "plain_backward"
    for family in ("max", "avg", "adaptive", "global"):
        if op.startswith(family):
            return family
    raise AssertionError(op)


FAILED_PARAMS = [(op, i) for op in ALL_OPS for i in range(len(BAD_CALLS[_family(op)]))]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, which", FAILED_PARAMS)
def test_failed_calls_leave_inputs_unmodified(mod, op, which):
    args = base_args(op, dtype=np.float32, seed=7)
    change = dict(BAD_CALLS[_family(op)][which])
    if change.get("indices") == "negative":
        bad = args["indices"].copy()
        bad.reshape(-1)[-1] = -1
        change["indices"] = bad
    elif change.get("indices") == "int32":
        change["indices"] = args["indices"].astype(np.int32)
    if change.get("input_shape") == "zero_c":
        shape = list(args["input_shape"])
        shape[1] = 0
        change["input_shape"] = tuple(shape)
    if change.get("grad_out") == "wrong_c":
        go = args["grad_out"]
        change["grad_out"] = np.ascontiguousarray(go[:, :-1] * 1)
        if "indices" in args:
            change["indices"] = np.ascontiguousarray(args["indices"][:, :-1])
    args.update(change)
    arrays = {k: v for k, v in args.items() if isinstance(v, np.ndarray)}
    saved = {k: (v.copy(), v.flags.writeable, v.flags.c_contiguous, v.dtype)
             for k, v in arrays.items()}
    with pytest.raises((ValueError, TypeError)):
        call(mod, op, args)
    for k, v in arrays.items():
        copy, writeable, contiguous, dtype = saved[k]
        np.testing.assert_array_equal(v, copy, err_msg=k)
        assert (v.flags.writeable, v.flags.c_contiguous, v.dtype) == (writeable, contiguous,
                                                                       dtype)


# ------------------------------------------------- outside the int64 range

@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, name, value", [
    (op, name, value) for op in ("max_pool2d", "avg_pool2d")
    for name, value in (("stride", (1, 2**63)), ("kernel_size", (2, 2**31)),
                        ("dilation", (2**40, 1)))
    if not (op == "avg_pool2d" and name == "dilation")])   # avg pooling has no dilation
def test_window_arguments_beyond_32_bits_are_rejected(mod, op, name, value):
    """Sizes the kernels' index arithmetic cannot hold are refused by name
    (not an OverflowError from the Cython call, not a wrapped buffer size)."""
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6))
    args = dict(x=x, kernel_size=2)
    args[name] = value
    with pytest.raises(ValueError, match=name):
        call(mod, op, args)


CRASH_SCRIPT = """
import numpy as np
import cnnfast
k, p = 2**60 - 2, 2**59 - 2      # padding <= k // 2; the window just fits 2 + 2p = k
try:
    if {backward}:
        got = cnnfast.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2, 2), k,
                                          padding=p, count_include_pad=False)
        expected = np.full((1, 1, 2, 2), 0.25)
    else:
        got = cnnfast.avg_pool2d(np.arange(1.0, 5.0).reshape(1, 1, 2, 2), k, padding=p,
                                 count_include_pad=False)
        expected = np.full((1, 1, 1, 1), 2.5)
except (ValueError, TypeError, MemoryError, OverflowError) as error:
    print("raised", type(error).__name__, error)
else:
    assert np.array_equal(got, expected), got
    print("ok")
"""


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_huge_window_does_not_crash(backward, tmp_path):
    """Run in a child process: the call must end in a result or a clean
    Python exception, never a signal. The child starts outside the source
    tree (python -c puts its working directory first on sys.path) and finds
    the same cnnfast this process imported."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__)),
               OMP_NUM_THREADS="1")
    child = subprocess.run([sys.executable, "-c", CRASH_SCRIPT.format(backward=backward)],
                           capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    assert child.stdout.startswith(("ok", "raised")), child.stdout


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_adaptive_output_size_beyond_32_bits_is_rejected_at_once(mod, op):
    """Used to loop in Python over 2**40 windows before failing."""
    with pytest.raises(ValueError, match="output_size"):
        call(mod, op, dict(x=np.zeros((1, 1, 4, 4)), output_size=2**40))
