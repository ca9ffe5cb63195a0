"""Validation of the array arguments of every op, and of the thread settings.

For every public op (conv1d/2d/3d, pooling max/avg 1-D/2-D/3-D, adaptive and
global, and the backward function of each), on cnnfast.functional and on
cnnfast.reference (which shares cnnfast._validation): every array argument
that is not an ndarray (list, tuple, scalar, None, str, bytes, memoryview),
of an unsupported dtype (ints, float16, longdouble, complex, bool, object,
str, datetime) or of a mixed float dtype, of the wrong rank, or empty in a
non-batch dimension; every backward's grad_out of the wrong shape and
input_shape of the wrong length, sign, type or size; max-pooling indices of
the wrong dtype, shape or range (negative, >= the plane size); and
set_num_threads / num_threads with a bad count. Each case asserts the
exception type (TypeError for types, ValueError for values) and that the
message names the argument and the offending value.

The window arguments of each family (groups, stride, padding, dilation,
kernel_size, ceil_mode, divisor_override, output_size, algorithm, need) are
checked in tests/test_conv_validation.py and tests/test_pool_validation.py,
with the "rejected before any kernel runs" and "failed calls leave the inputs
untouched" tests.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from validation_cases import (ADAPTIVE, ALL_OPS, AVG, BACKWARD_OPS, CONV, CONV_BACKWARD,
                              FORWARD_OPS, GLOBAL, INDEXED_BACKWARD, KERNEL, MAX, MODULES, N,
                              SPATIAL, C, array_names, base_args, call, cast, esc, float_names,
                              forward_of, is_conv, nd_of, shape_re)

import cnnfast
from cnnfast import reference
from cnnfast._ext import _runtime


@pytest.fixture(autouse=True)
def serial_kernels():
    """One kernel thread: the few valid calls here are tiny."""
    with cnnfast.num_threads(1):
        yield


def _pairs(ops, names_of):
    return [(op, name) for op in ops for name in names_of(op)]


# ---------------------------------------------------------- valid baseline

@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_base_arguments_are_valid(mod, op, dtype):
    """The unmodified arguments of every test below are accepted, so each
    error comes from the one change a test makes."""
    result = call(mod, op, base_args(op, dtype))
    results = [r for r in (result if isinstance(result, tuple) else (result,))
               if r is not None]
    assert results and all(r.dtype == np.dtype(dtype) for r in results)


# ------------------------------------------------------- not an ndarray

NON_ARRAYS = ["list", "tuple", "float", "int", "numpy_scalar", "none", "str", "bytes",
              "memoryview"]


def _non_array(kind, a):
    return {"list": lambda: a.tolist(), "tuple": lambda: tuple(a.tolist()),
            "float": lambda: 1.0, "int": lambda: 3, "numpy_scalar": lambda: a.dtype.type(2),
            "none": lambda: None, "str": lambda: "x", "bytes": lambda: a.tobytes()[:16],
            "memoryview": lambda: memoryview(a)}[kind]()


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, name", _pairs(ALL_OPS, array_names))
@pytest.mark.parametrize("kind", NON_ARRAYS)
def test_not_an_ndarray(mod, op, name, kind):
    if name == "bias" and kind == "none":
        pytest.skip("bias=None means no bias")
    args = base_args(op)
    value = args[name] = _non_array(kind, args[name])
    with pytest.raises(TypeError) as info:
        call(mod, op, args)
    message = str(info.value)
    prefix = f"{name} must be a numpy.ndarray, got {type(value).__name__} "
    assert message.startswith(prefix), message
    shown = message[len(prefix):]
    if len(repr(value)) <= 40:  # short values in full
        assert shown == repr(value)
    else:                       # long ones shortened, from their start
        assert shown[:3] == repr(value)[:3] and len(shown) < 200, shown


# ----------------------------------------------------------------- dtypes

BAD_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.float16, np.longdouble, np.complex64,
              np.complex128, np.bool_, object, "U3", "M8[s]"]


def _dtype_targets(op):
    names = float_names(op)
    return names + (["all"] if len(names) > 1 else [])


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, target", _pairs(ALL_OPS, _dtype_targets))
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
def test_unsupported_dtype(mod, op, target, dtype):
    """Object arrays included: a float-valued object array is still refused."""
    args = base_args(op)
    names = float_names(op) if target == "all" else [target]
    for name in names:
        args[name] = cast(args[name], dtype)
    bad = re.escape(str(np.dtype(dtype)))
    with pytest.raises(TypeError, match=rf"^cnnfast computes in float32 or float64 only; "
                                        rf"dtypes found: .*\b{names[0]}={bad}"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, odd_one", _pairs(CONV + CONV_BACKWARD, float_names))
@pytest.mark.parametrize("base", [np.float32, np.float64])
def test_mixed_float_dtypes(mod, op, odd_one, base):
    other = np.float64 if base is np.float32 else np.float32
    args = base_args(op, dtype=base)
    args[odd_one] = args[odd_one].astype(other)
    with pytest.raises(TypeError, match="^all arrays of one call must share a dtype") as info:
        call(mod, op, args)
    message = str(info.value)
    for name in float_names(op):
        assert f"{name}={np.dtype(other if name == odd_one else base)}" in message


# ------------------------------------------------------------------- rank

def _rank_targets(op):
    names = [n for n in array_names(op) if n != "weight"]  # weight: test_conv_validation
    return names


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, name", _pairs(ALL_OPS, _rank_targets))
@pytest.mark.parametrize("change", ["extra_dim", "merged_dims", "0-d"])
def test_wrong_rank(mod, op, name, change):
    args = base_args(op)
    a = args[name]
    if change == "merged_dims" and a.ndim == 1:
        pytest.skip("bias has one dim: extra_dim and 0-d change its rank")
    if change == "extra_dim":
        a = a[..., None]
    elif change == "merged_dims":
        a = a.reshape(a.shape[:-2] + (-1,))
    else:
        a = a.reshape(-1)[:1].reshape(())
    args[name] = a
    with pytest.raises(ValueError) as info:
        call(mod, op, args)
    message = str(info.value)
    assert re.match(rf"^{name} (must be|has shape|must have shape)", message), message
    assert str(a.shape) in message
    if name == "x":
        nd = nd_of(op)
        assert re.match(rf"^x must be a {nd + 2}-D array .*for {forward_of(op)}, got shape "
                        rf"{shape_re(a.shape)}$", message), message


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", FORWARD_OPS + CONV_BACKWARD)
@pytest.mark.parametrize("axis", [1, 2, 3, 4])
def test_x_zero_size_non_batch_dim(mod, op, axis):
    """A zero batch is valid (test_conv_validation, test_pool_layouts); a zero
    channel or spatial size is an error."""
    nd = nd_of(op)
    axis = min(axis, nd + 1)
    args = base_args(op)
    shape = list(args["x"].shape)
    shape[axis] = 0
    args["x"] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^x has shape {shape_re(shape)}: only the batch "
                                         rf"dimension may be 0$"):
        call(mod, op, args)


# --------------------------------------------------- grad_out of backward

def _conv_grad_out_shapes(good):
    n, k, *sp = good
    return {
        "batch": (n + 1, k, *sp),
        "channels": (n, k - 1, *sp),
        "last_spatial": (n, k, *sp[:-1], sp[-1] + 1),
        "swapped": (n, k, *sp[::-1]),      # non-square: the transposed output
        "merged": (n * k, *sp),            # same size, other rank
        "zero_spatial": (n, k, *sp[:-1], 0),
    }


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", CONV_BACKWARD)
@pytest.mark.parametrize("case", list(_conv_grad_out_shapes((1, 2, 3))))
def test_conv_grad_out_not_the_output_shape(mod, op, case):
    args = base_args(op)
    good = args["grad_out"].shape
    shape = _conv_grad_out_shapes(good)[case]
    if shape == good:  # swapping a single (1-D) spatial size
        shape = good[:-1] + (good[-1] + 2,)
    args["grad_out"] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^grad_out has shape {shape_re(shape)}, "
                                         rf"expected {shape_re(good)}"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", CONV_BACKWARD)
def test_conv_grad_out_shape_follows_stride_padding_dilation(mod, op):
    args = base_args(op)
    stride1 = args["grad_out"].shape
    args.update(stride=2, padding=1, dilation=2)
    geometry = {k: v for k, v in args.items() if k not in ("grad_out", "x", "weight")}
    good = getattr(reference, forward_of(op))(args["x"], args["weight"], **geometry).shape
    assert good != stride1
    with pytest.raises(ValueError, match=rf"^grad_out has shape {shape_re(stride1)}, expected "
                                         rf"{shape_re(good)}"):
        call(mod, op, args)
    args["grad_out"] = np.ones(good)
    grads = call(mod, op, args)
    assert [g.shape for g in grads] == [args["x"].shape, args["weight"].shape,
                                        args["weight"].shape[:1]]


def _avg_grad_out_shapes(good):
    n, c, *sp = good
    return {
        "batch": (n + 1, c, *sp),
        "batch_smaller": (n - 1, c, *sp),
        "channels": (n, c - 1, *sp),
        "last_spatial": (n, c, *sp[:-1], sp[-1] + 1),
        "first_spatial": (n, c, sp[0] - 1, *sp[1:]),
        "extra_dim": (n, c, *sp, 1),
        "missing_dim": (n, c, *sp[:-1]),
        "merged": (n * c, *sp),
        "swapped": (n, c, *sp[::-1]),
        "input_sized": None,  # the input's own shape (stride 1 lookalike)
    }


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", [f"{op}_backward" for op in AVG])
@pytest.mark.parametrize("case", list(_avg_grad_out_shapes((2, 3, 4, 5))))
def test_avg_grad_out_not_the_forward_output_shape(mod, op, case):
    args = base_args(op)
    good = args["grad_out"].shape
    shape = _avg_grad_out_shapes(good)[case]
    if case == "input_sized":
        shape = tuple(args["input_shape"])
    if case == "swapped" and shape == good:  # 1-D or symmetric output
        shape = good[:-1] + (good[-1] + 2,)
    assert shape != good
    args["grad_out"] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^grad_out has shape {shape_re(shape)}, expected "
                                         rf"{shape_re(good)}"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", [f"{op}_backward" for op in AVG])
@pytest.mark.parametrize("change", ["stride", "padding", "ceil_mode", "input_shape"])
def test_avg_grad_out_shape_follows_the_geometry(mod, op, change):
    """grad_out of the base geometry is wrong once stride, padding, ceil_mode or
    input_shape change the forward output shape."""
    nd = nd_of(op)
    args = base_args(op)
    if change == "stride":
        args["stride"] = 1
    elif change == "padding":
        args["padding"] = 1
    elif change == "ceil_mode":
        args["ceil_mode"] = True
    else:
        shape = list(args["input_shape"])
        shape[-1] += KERNEL[nd][-1]
        args["input_shape"] = tuple(shape)
    geometry = {k: v for k, v in args.items() if k not in ("grad_out", "input_shape")}
    good = getattr(reference, forward_of(op))(np.zeros(args["input_shape"]), **geometry).shape
    assert good != args["grad_out"].shape
    with pytest.raises(ValueError, match=rf"^grad_out has shape "
                                         rf"{shape_re(args['grad_out'].shape)}, expected "
                                         rf"{shape_re(good)}"):
        call(mod, op, args)
    args["grad_out"] = np.ones(good)
    assert call(mod, op, args).shape == tuple(args["input_shape"])


def _max_grad_out_shapes(good):
    n, c, *sp = good
    return {
        "batch": (n + 1, c, *sp),
        "channels": (n, c + 1, *sp),
        "extra_dim": (n, c, *sp, 1),
        "missing_dim": (n, c, *sp[:-1]),
        "merged": (n * c, *sp),
        "zero_spatial": (n, c, *sp[:-1], 0),
    }


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", [f"{op}_backward" for op in MAX + ADAPTIVE])
@pytest.mark.parametrize("case", list(_max_grad_out_shapes((2, 3, 4, 5))))
def test_grad_out_wrong_n_c_or_rank(mod, op, case):
    """max/adaptive backward: grad_out must be (N, C) of input_shape followed by
    nd positive output sizes (indices follow grad_out, so only grad_out is wrong)."""
    args = base_args(op)
    shape = _max_grad_out_shapes(args["grad_out"].shape)[case]
    args["grad_out"] = np.zeros(shape)
    if "indices" in args:
        args["indices"] = np.zeros(shape, dtype=np.int64)
    with pytest.raises(ValueError, match=rf"^grad_out has shape {shape_re(shape)}"):
        call(mod, op, args)


GLOBAL_GRAD_SHAPES = [(N, C, 1), (N, C, 2, 2), (N, C, 1, 2), (N + 1, C), (N, C - 1),
                      (N, C + 1, 1, 1), (N * C,), (N, C, 1, 1, 1), (C, N), (1, N, C)]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", [f"{op}_backward" for op in GLOBAL])
@pytest.mark.parametrize("shape", GLOBAL_GRAD_SHAPES, ids=str)
def test_global_grad_out_not_n_c_or_n_c_1_1(mod, op, shape):
    args = base_args(op)
    args["grad_out"] = np.zeros(shape)
    if "indices" in args:
        args["indices"] = np.zeros(shape, dtype=np.int64)
    with pytest.raises(ValueError, match=rf"^grad_out has shape {shape_re(shape)}, expected "
                                         rf"\({N}, {C}\) or \({N}, {C}, 1, 1\)"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", [f"{op}_backward" for op in GLOBAL])
def test_global_grad_out_both_shapes_accepted(mod, op):
    args = base_args(op)
    flat = call(mod, op, args)
    args["grad_out"] = args["grad_out"].reshape(N, C, 1, 1)
    if "indices" in args:
        args["indices"] = args["indices"].reshape(N, C, 1, 1)
    np.testing.assert_array_equal(call(mod, op, args), flat)


# ------------------------------------------------------------ input_shape

POOL_BACKWARD = [op for op in BACKWARD_OPS if not is_conv(op)]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", POOL_BACKWARD)
@pytest.mark.parametrize("delta", [-1, 1, -2])
def test_input_shape_wrong_length(mod, op, delta):
    nd = nd_of(op)
    args = base_args(op)
    shape = tuple(args["input_shape"])
    shape = shape + (1,) * delta if delta > 0 else shape[:delta]
    args["input_shape"] = shape
    with pytest.raises(ValueError, match=rf"^input_shape must have {nd + 2} entries for {op}, "
                                         rf"got {shape_re(shape)}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", POOL_BACKWARD)
@pytest.mark.parametrize("axis, value", [(0, -1), (1, -3), (1, 0), (2, 0), (-1, 0),
                                         (-1, -5)])
def test_input_shape_not_positive(mod, op, axis, value):
    args = base_args(op)
    shape = list(args["input_shape"])
    shape[axis] = value
    shape = tuple(shape)
    args["input_shape"] = shape
    with pytest.raises(ValueError, match=rf"^input_shape {shape_re(shape)}: sizes must be "
                                         rf"positive \(only the batch may be 0\) for {op}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", POOL_BACKWARD)
@pytest.mark.parametrize("bad", [5, None, 2.5, "float_entry", "str_entry", "bool_entry",
                                 "none_entry"])
def test_input_shape_not_ints(mod, op, bad):
    nd = nd_of(op)
    args = base_args(op)
    entry = {"float_entry": 2.0, "str_entry": "2", "bool_entry": True,
             "none_entry": None}.get(bad, "scalar")
    if entry != "scalar":
        bad = tuple(args["input_shape"])[:-1] + (entry,)
    args["input_shape"] = bad
    with pytest.raises(TypeError, match=rf"^input_shape must be a tuple of {nd + 2} ints for "
                                        rf"{op}, got {esc(bad)}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", POOL_BACKWARD)
def test_input_shape_too_large_for_any_array(mod, op):
    """2**62 x 2**62 planes: refused by name, not by NumPy's nameless "array is
    too big" while allocating grad_x."""
    args = base_args(op)
    shape = tuple(args["input_shape"][:2]) + (2**62,) * nd_of(op)
    args["input_shape"] = shape
    with pytest.raises(ValueError) as info:
        call(mod, op, args)
    if op in [f"{o}_backward" for o in AVG]:  # the padded plane is checked first
        assert re.match(rf"^{forward_of(op)}: an input plane of size "
                        rf"{shape_re(shape[2:])} with kernel_size=.* spans \d+ elements",
                        str(info.value)), info.value
    else:
        assert re.match(rf"^input_shape {shape_re(shape)} has {np.prod(shape, dtype=object)} "
                        rf"elements, more than cnnfast supports \(2\*\*59\) for {op}$",
                        str(info.value)), info.value


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", POOL_BACKWARD)
def test_input_shape_as_list_or_array(mod, op):
    args = base_args(op)
    expected = call(mod, op, args)
    for spelling in (list(args["input_shape"]), np.array(args["input_shape"]),
                     tuple(np.int32(s) for s in args["input_shape"])):
        got = call(mod, op, {**args, "input_shape": spelling})
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- indices

INDEX_DTYPES = [np.int32, np.uint64, np.int16, np.uint32, np.float64, np.float32, np.bool_,
                object]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", INDEXED_BACKWARD)
@pytest.mark.parametrize("dtype", INDEX_DTYPES)
def test_indices_not_int64(mod, op, dtype):
    args = base_args(op)
    args["indices"] = cast(args["indices"], dtype)
    with pytest.raises(TypeError, match=rf"^indices must be int64 .*for {op}, got "
                                        rf"{re.escape(str(np.dtype(dtype)))}$"):
        call(mod, op, args)


def _plane(args):
    return int(np.prod(args["input_shape"][2:]))


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", INDEXED_BACKWARD)
@pytest.mark.parametrize("bad", ["-1", "plane", "plane+1", "2**62", "-2**63", "2**63-1"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_indices_out_of_plane(mod, op, bad, where):
    args = base_args(op)
    plane = _plane(args)
    value = {"-1": -1, "plane": plane, "plane+1": plane + 1, "2**62": 2**62,
             "-2**63": -2**63, "2**63-1": 2**63 - 1}[bad]
    indices = args["indices"]
    indices.reshape(-1)[0 if where == "first" else -1] = value
    with pytest.raises(ValueError, match=rf"^indices must lie in \[0, {plane}\) \(the input "
                                         rf"plane of shape .*\) for {op}, found {value}$"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", INDEXED_BACKWARD)
def test_indices_at_the_plane_edges_are_valid(mod, op):
    args = base_args(op)
    plane = _plane(args)
    args["indices"][...] = plane - 1
    args["indices"].reshape(N * C, -1)[:, ::2] = 0  # (a view: indices is C-contiguous)
    grad_x = call(mod, op, args).reshape(N * C, plane)
    go = args["grad_out"].reshape(N * C, -1)
    np.testing.assert_allclose(grad_x[:, 0], go[:, ::2].sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(grad_x[:, -1], go[:, 1::2].sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", INDEXED_BACKWARD)
@pytest.mark.parametrize("case", ["longer", "shorter", "extra_dim", "missing_dim", "flat",
                                  "swapped_n_c", "keepdims_other"])
def test_indices_shape_differs_from_grad_out(mod, op, case):
    args = base_args(op)
    good = args["grad_out"].shape
    n, c, *sp = good
    shape = {
        "longer": (n, c, *sp[:-1], sp[-1] + 1) if sp else (n, c + 1),
        "shorter": (n, c - 1, *sp),
        "extra_dim": good + (1,),
        "missing_dim": good[:-1],
        "flat": (int(np.prod(good)),),
        "swapped_n_c": (c, n, *sp),
        # global: the other accepted grad_out shape; others: (N, C) alone
        "keepdims_other": good + (1, 1) if len(good) == 2 else good[:2],
    }[case]
    assert shape != good
    args["indices"] = np.zeros(shape, dtype=np.int64)
    with pytest.raises(ValueError, match=rf"^indices has shape {shape_re(shape)}, expected "
                                         rf"{shape_re(good)}"):
        call(mod, op, args)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op, input_shape", [
    ("max_pool2d_backward", (1, 1, 2**33, 2**31)),
    ("global_max_pool2d_backward", (1, 1, 2**40, 2**40)),
    ("max_pool3d_backward", (1, 1, 2**22, 2**21, 2**21))])
def test_indices_check_of_a_plane_beyond_int64(mod, op, input_shape):
    """Such a grad_x cannot be allocated; the call may fail for that, but not
    by misreporting the plane as empty."""
    shape = (1, 1) + (1,) * (len(input_shape) - 2) if not op.startswith("global") else (1, 1)
    with pytest.raises((ValueError, MemoryError)) as info:
        call(mod, op, dict(grad_out=np.zeros(shape), indices=np.zeros(shape, dtype=np.int64),
                           input_shape=input_shape))
    assert "[0, 0)" not in str(info.value)


# ---------------------------------------------------------------- threads

@pytest.fixture
def restore_threads(serial_kernels):
    before = cnnfast.get_num_threads()
    yield before
    cnnfast.set_num_threads(before)


def _effective(n):
    """What get_num_threads reports after asking for n threads."""
    return n if _runtime.openmp_enabled() else 1


@pytest.mark.parametrize("n, error, rule", [
    (0, ValueError, "positive"), (-1, ValueError, "positive"), (-8, ValueError, "positive"),
    (1025, ValueError, "max"), (2**31, ValueError, "max"), (2**63, ValueError, "max"),
    ("2", TypeError, "int"), (2.0, TypeError, "int"), (None, TypeError, "int"),
    (True, TypeError, "int"), (1.5, TypeError, "int"), (np.float64(2), TypeError, "int"),
    ((2,), TypeError, "int")], ids=repr)
def test_set_num_threads_rejects(restore_threads, n, error, rule):
    cnnfast.set_num_threads(1)
    match = {"positive": rf"^n must be a positive int, got {esc(n)}$",
             "max": rf"^n must be at most 1024, got {esc(n)}$",
             "int": rf"^n must be an int, got {type(n).__name__} {esc(n)}$"}[rule]
    with pytest.raises(error, match=match):
        cnnfast.set_num_threads(n)
    assert cnnfast.get_num_threads() == 1  # unchanged by the failed call
    with pytest.raises(error, match=match):
        with cnnfast.num_threads(n):
            pass
    assert cnnfast.get_num_threads() == 1


def test_set_num_threads_accepts_numpy_ints_up_to_the_maximum(restore_threads):
    cnnfast.set_num_threads(np.int64(2))
    assert cnnfast.get_num_threads() == _effective(2)
    assert type(cnnfast.get_num_threads()) is int
    cnnfast.set_num_threads(1024)  # accepted (no kernel is run with it here)
    assert cnnfast.get_num_threads() == _effective(1024)


@pytest.mark.parametrize("env, expected", [("5000", 1024), ("3", 3), ("0", None),
                                           ("x", None)])
def test_omp_num_threads_default_is_capped(env, expected, tmp_path):
    """The default honours OMP_NUM_THREADS (docs/API.md) up to the same maximum
    (beyond it libgomp aborts the process when it cannot create the threads);
    unusable values fall back to the core count."""
    code = "import cnnfast, os; print(cnnfast.get_num_threads(), len(os.sched_getaffinity(0)))"
    env_vars = dict(os.environ, OMP_NUM_THREADS=env,
                    PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env_vars, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    got, cores = map(int, out.stdout.split())
    assert got == _effective(expected if expected is not None else min(cores, 1024))


def test_num_threads_restores_after_exception(restore_threads):
    cnnfast.set_num_threads(2)
    args = base_args("conv2d")
    with pytest.raises(ZeroDivisionError):
        with cnnfast.num_threads(1):
            assert cnnfast.get_num_threads() == _effective(1)
            cnnfast.conv2d(**args)
            1 / 0
    assert cnnfast.get_num_threads() == _effective(2)
    # a cnnfast error inside the block restores it too
    with pytest.raises(ValueError, match="stride"):
        with cnnfast.num_threads(3):
            assert cnnfast.get_num_threads() == _effective(3)
            cnnfast.conv2d(**args, stride=0)
    assert cnnfast.get_num_threads() == _effective(2)


def test_num_threads_nested_restore(restore_threads):
    cnnfast.set_num_threads(2)
    with cnnfast.num_threads(1):
        with pytest.raises(RuntimeError):
            with cnnfast.num_threads(3):
                assert cnnfast.get_num_threads() == _effective(3)
                raise RuntimeError
        assert cnnfast.get_num_threads() == _effective(1)
    assert cnnfast.get_num_threads() == _effective(2)


# --------------------------------------------------- results beyond 2**59

@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("op", CONV + ADAPTIVE)
def test_result_too_large_for_any_array(mod, op):
    """A zero-stride x of 2**40 images whose result would have more than 2**59
    elements: refused by name before any allocation."""
    nd = nd_of(op)
    spatial = SPATIAL[nd]
    args = base_args(op)
    x = np.broadcast_to(args["x"].reshape(-1)[0], (2**40, args["x"].shape[1]) + spatial)
    args["x"] = x
    if op in ADAPTIVE:
        args["output_size"] = (2**10, 2**10)
    else:
        args["weight"] = np.zeros((2**12,) + args["weight"].shape[1:])
        args["bias"] = None
        args["padding"] = 2**9
    with pytest.raises(ValueError, match=r"a result of shape .* has \d+ elements, more than "
                                         r"cnnfast supports \(2\*\*59\)"):
        call(mod, op, args)


# --------------------------------------------------- arrays where ints belong

def test_an_array_for_a_shape_or_size_is_named_not_printed():
    """An array passed where a shape, size or int belongs: the message names
    the argument and shows the array's shape and dtype, not its repr (a
    repr of a large array ran to megabytes)."""
    big = np.zeros((64, 64, 64))
    cases = [
        lambda: cnnfast.explain_conv(big, (8, 3, 3, 3)),
        lambda: cnnfast.explain_conv((1, 3, 8, 8), big),
        lambda: cnnfast.avg_pool2d_backward(np.zeros((1, 1, 2, 2)), big, 2),
        lambda: cnnfast.max_pool2d(np.zeros((1, 1, 4, 4)), big),
        lambda: cnnfast.conv2d(np.zeros((1, 3, 8, 8)), np.zeros((4, 3, 3, 3)), stride=big),
        lambda: cnnfast.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), big),
    ]
    for case in cases:
        with pytest.raises((TypeError, ValueError)) as info:
            case()
        message = str(info.value)
        assert len(message) < 400, message
        assert "(64, 64, 64)" in message and "float64" in message, message


def test_explain_conv_shape_arguments():
    with pytest.raises(TypeError, match=r"x_shape must be a tuple of ints, got 'abc'"):
        cnnfast.explain_conv("abc", (8, 3, 3, 3))
    with pytest.raises(TypeError,
                       match=r"weight_shape must be a tuple of ints, got \(8, 3, 3\.0, 3\)"):
        cnnfast.explain_conv((1, 3, 8, 8), (8, 3, 3.0, 3))
    with pytest.raises(ValueError,
                       match=r"x_shape must not have negative sizes, got \(1, 3, -8, 8\)"):
        cnnfast.explain_conv((1, 3, -8, 8), (8, 3, 3, 3))
    # numpy integers are ints
    plan = cnnfast.explain_conv(np.array([1, 3, 8, 8]), tuple(np.int64(v) for v in (8, 3, 3, 3)))
    assert plan.out_shape == (1, 8, 6, 6)
