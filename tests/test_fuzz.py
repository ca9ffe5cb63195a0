"""Hypothesis fuzzing of every op with valid and invalid arguments.

Each example draws an op (conv 1-D/2-D/3-D forward or backward with an
algorithm; max/avg pooling 1-D/2-D/3-D, adaptive or global pooling, forward
or backward), shapes (zero sizes and wrong ranks included), window arguments
(in range, zero, negative, beyond 2**31, floats, bools, strings, tuples of the
wrong length), dtypes (float32/float64, mixed, ints, float16, complex, bool,
object) and a memory layout per array (C, Fortran, transposed, strided,
reversed, zero-stride, read-only, byte-swapped, misaligned). The test decides
validity itself, from the rules of docs/API.md (`conv_violations`, `pool_violations`; it
never asks cnnfast), then asserts:

* valid -> the result equals cnnfast.reference on C-contiguous native copies
  (max pooling exactly, indices included; sums to the usual tolerance), is a
  new C-contiguous native array, and the inputs are unchanged;
* invalid -> ValueError or TypeError, nothing else (no other exception, no
  crash, no result).

Budget: CNNFAST_FUZZ_EXAMPLES examples per test (default 150; CI runs the
default, derandomized). For long local runs: CNNFAST_FUZZ_EXAMPLES=20000
CNNFAST_FUZZ_RANDOM=1 pytest tests/test_fuzz.py --hypothesis-show-statistics
(and scripts/fuzz_atheris.py for coverage-guided fuzzing).
"""
import math
import os

import numpy as np
import pytest
from helpers import tolerance
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from layouts import check_unmodified, native_copy, relayout, snapshot

import cnnfast
from cnnfast import reference

EXAMPLES = int(os.environ.get("CNNFAST_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize=os.environ.get("CNNFAST_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

INT_MAX = 2**31 - 1
LAYOUTS = ["C", "C", "C", "fortran", "transposed", "strided", "negative", "broadcast",
           "readonly", "byteswapped", "misaligned"]
GOOD_DTYPES = [np.float32, np.float64]
BAD_DTYPES = [np.int32, np.int64, np.float16, np.complex64, np.bool_, object]


@pytest.fixture(autouse=True)
def serial_kernels():
    """One kernel thread (tiny shapes); test_concurrency covers the threads."""
    with cnnfast.num_threads(1), np.errstate(all="ignore"):
        yield


# ------------------------------------------------------------- strategies

BAD_INTS = [0, -1, -3, 2**31, 2**40, 2**63]
BAD_SPELLINGS = [1.0, 2.5, "2", None, True, ()]


def _rare(draw, percent):
    """True in about `percent` % of the draws (shrinks towards False)."""
    return draw(st.integers(0, 99)) >= 100 - percent


@st.composite
def _int(draw, lo=1, hi=4, bad=4):
    """A small int in [lo, hi]; in `bad` % of draws 0, negative or beyond 2**31."""
    if _rare(draw, bad):
        return draw(st.sampled_from(BAD_INTS))
    return draw(st.integers(lo, hi))


@st.composite
def _arg(draw, nd, lo=1, hi=4, bad=4):
    """A window argument: an int, a tuple or list of nd entries, or (rarely) a
    bad spelling: a float, a str, None, a bool, a tuple of the wrong length or
    of non-ints."""
    if _rare(draw, bad):
        return draw(st.sampled_from(BAD_SPELLINGS + [(1,) * (nd + 1), [2] * (nd - 1),
                                                     (1.0,) * nd, ("1",) * nd, (True,) * nd]))
    form = draw(st.sampled_from(["int", "tuple", "list"]))
    if form == "int":
        return draw(_int(lo, hi))
    entries = [draw(_int(lo, hi, bad=2)) for _ in range(nd)]
    return tuple(entries) if form == "tuple" else entries


@st.composite
def _flag(draw):
    if _rare(draw, 4):
        return draw(st.sampled_from([2, -1, None, "yes", 1.0, (True,)]))
    return draw(st.sampled_from([True, False, 0, 1, np.bool_(True)]))


@st.composite
def _dtypes(draw, names):
    """One dtype per float array: shared and valid most of the time."""
    base = draw(st.sampled_from(GOOD_DTYPES))
    dtypes = {name: base for name in names}
    if names and _rare(draw, 4):      # one array of an unsupported dtype
        dtypes[draw(st.sampled_from(names))] = draw(st.sampled_from(BAD_DTYPES))
    elif len(names) > 1 and _rare(draw, 4):  # float32 mixed with float64
        dtypes[draw(st.sampled_from(names))] = (np.float64 if base is np.float32
                                                else np.float32)
    return dtypes


def _layout(draw, a):
    """The values of `a` in a drawn memory layout (object arrays stay C)."""
    layout = draw(st.sampled_from(LAYOUTS))
    if (a.dtype == object or layout == "C"
            or (layout == "broadcast" and not any(n > 1 for n in a.shape))):
        return a
    return relayout(a, layout, None)


def _make(draw, shape, dtype, seed):
    """Random values of `shape` and `dtype` in a drawn layout."""
    a = np.random.default_rng(seed).standard_normal(shape)
    if dtype is np.bool_:
        a = a > 0
    elif np.dtype(dtype).kind == "i":
        a = np.round(a * 3).astype(dtype)
    else:
        a = a.astype(dtype)
    return _layout(draw, a)


@st.composite
def _shape(draw, rank, hi=6, zero=2):
    """Sizes in [1, hi]; each 0 in `zero` % of draws."""
    return tuple(0 if _rare(draw, zero) else draw(st.integers(1, hi)) for _ in range(rank))


def _rank_change(draw):
    """0, or in 4 % of draws one dim more or less."""
    return draw(st.sampled_from([-1, 1])) if _rare(draw, 4) else 0


# ------------------------------------------------------------- the rules

def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _tuple(value, nd, name, minimum, problems):
    """docs/API.md: an int or a tuple with one entry per spatial dim; None if bad."""
    if _is_int(value):
        values = (int(value),) * nd
    elif isinstance(value, (tuple, list)) and len(value) == nd and all(map(_is_int, value)):
        values = tuple(int(v) for v in value)
    else:
        problems.append(f"{name} spelling")
        return None
    if any(v < minimum or v > INT_MAX for v in values):
        problems.append(f"{name} range")
        return None
    return values


def _flag_ok(value, name, problems):
    if not (isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1))):
        problems.append(f"{name} not a bool")


def _array_problems(arrays, problems):
    """Every float array float32 or float64 (any byte order), all the same."""
    kinds = set()
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            problems.append(f"{name} not an array")
            continue
        if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
            problems.append(f"{name} dtype")
        kinds.add(a.dtype.itemsize)
    if len(kinds) > 1:
        problems.append("mixed dtypes")


def _spatial_ok(x, nd, problems, name="x"):
    if x.ndim != nd + 2:
        problems.append(f"{name} rank")
        return False
    if 0 in x.shape[1:]:
        problems.append(f"{name} zero size")
        return False
    return True


def conv_violations(c):
    """The rules of docs/API.md for a conv{nd}d call c (a dict); [] when valid.
    Also stores the output shape in c['out_shape'] when the geometry is valid."""
    p = []
    nd, x, w = c["nd"], c["x"], c["weight"]
    arrays = {"x": x, "weight": w}
    if c.get("bias") is not None:
        arrays["bias"] = c["bias"]
    if c["backward"]:
        arrays["grad_out"] = c["grad_out"]
    _array_problems(arrays, p)
    if p:
        return p
    if not _spatial_ok(x, nd, p):
        return p
    if w.ndim != nd + 2 or 0 in w.shape:
        return p + ["weight shape"]
    g = c["groups"]
    if not _is_int(g) or g < 1:
        return p + ["groups"]
    N, C = x.shape[:2]
    K, Cg = w.shape[:2]
    if K % g or C % g or Cg * g != C:
        return p + ["channels/groups"]
    if "bias" in arrays and arrays["bias"].shape != (K,):
        return p + ["bias shape"]
    stride = _tuple(c["stride"], nd, "stride", 1, p)
    dilation = _tuple(c["dilation"], nd, "dilation", 1, p)
    if p:
        return p
    n_in, k = x.shape[2:], w.shape[2:]
    if isinstance(c["padding"], str):
        if c["padding"] not in ("same", "valid"):
            return p + ["padding string"]
        out = (tuple(-(-n // s) for n, s in zip(n_in, stride)) if c["padding"] == "same"
               else tuple((n - d * (kk - 1) - 1) // s + 1
                          for n, kk, s, d in zip(n_in, k, stride, dilation)))
    else:
        pad = _tuple(c["padding"], nd, "padding", 0, p)
        if p:
            return p
        out = tuple((n + 2 * q - d * (kk - 1) - 1) // s + 1
                    for n, kk, s, d, q in zip(n_in, k, stride, dilation, pad))
        if math.prod(n + 2 * q for n, q in zip(n_in, pad)) > 2**48:
            return p + ["padded plane"]
    if min(out) < 1:
        return p + ["window does not fit"]
    algorithm = c["algorithm"]
    if algorithm not in ("auto", "direct", "im2col", "1x1"):
        return p + ["algorithm"]
    if algorithm == "1x1" and any(kk != 1 for kk in k):
        return p + ["1x1 on a wider kernel"]
    c["out_shape"] = (N, K) + out
    if c["backward"]:
        need = c["need"]
        names = (need,) if isinstance(need, str) else need
        if not isinstance(names, (tuple, list)) or any(n not in ("x", "weight", "bias")
                                                       for n in names):
            return p + ["need"]
        if c["grad_out"].shape != c["out_shape"]:
            return p + ["grad_out shape"]
    return p


def _pool_out(n, k, s, q, d, ceil):
    o = (n + 2 * q - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (o - 1) * s >= n + q:
        o -= 1
    return o


def _input_shape_ok(shape, ndim, p):
    if not (isinstance(shape, (tuple, list)) and len(shape) == ndim
            and all(map(_is_int, shape))):
        p.append("input_shape")
        return False
    if shape[0] < 0 or min(shape[1:]) < 1:
        p.append("input_shape sizes")
        return False
    return True


def pool_violations(c):
    """The rules of docs/API.md for a pooling call c; [] when valid. Stores
    c['out_shape'] for forward calls with a valid geometry."""
    p = []
    kind, nd, backward = c["kind"], c["nd"], c["backward"]
    arrays = {"grad_out": c["grad_out"]} if backward else {"x": c["x"]}
    _array_problems(arrays, p)
    if "indices" in c:
        ind = c["indices"]
        if not isinstance(ind, np.ndarray):
            p.append("indices not an array")
        elif ind.dtype.kind != "i" or ind.dtype.itemsize != 8:
            p.append("indices dtype")
    if p:
        return p
    if backward:
        if not _input_shape_ok(c["input_shape"], nd + 2, p):
            return p
        in_shape = tuple(c["input_shape"])
    else:
        if not _spatial_ok(c["x"], nd, p):
            return p
        in_shape = c["x"].shape
    N, C, spatial = in_shape[0], in_shape[1], in_shape[2:]
    if kind == "avg" or (kind == "max" and not backward):  # window arguments
        kernel = _tuple(c["kernel_size"], nd, "kernel_size", 1, p)
        stride = kernel if c["stride"] is None else _tuple(c["stride"], nd, "stride", 1, p)
        pad = _tuple(c["padding"], nd, "padding", 0, p)
        dil = _tuple(c.get("dilation", 1), nd, "dilation", 1, p)
        _flag_ok(c["ceil_mode"], "ceil_mode", p)
        if kind == "avg":
            _flag_ok(c["count_include_pad"], "count_include_pad", p)
            dv = c["divisor_override"]
            if dv is not None and (not _is_int(dv) or dv < 1):
                p.append("divisor_override")
        if not backward and kind == "max":
            _flag_ok(c["return_indices"], "return_indices", p)
        if p:
            return p
        if any(q > kk // 2 for q, kk in zip(pad, kernel)):
            return p + ["padding > kernel // 2"]
        out = tuple(_pool_out(n, kk, s, q, d, bool(c["ceil_mode"]))
                    for n, kk, s, q, d in zip(spatial, kernel, stride, pad, dil))
        if min(out) < 1:
            return p + ["window does not fit"]
        if math.prod(max(n + q, (o - 1) * s + (kk - 1) * d + 1) + q for n, o, kk, s, q, d
                     in zip(spatial, out, kernel, stride, pad, dil)) > 2**48:
            return p + ["padded plane"]
        fwd_out = (N, C) + out
    elif kind == "adaptive":
        if not backward:
            size = c["output_size"]
            if isinstance(size, (tuple, list)):
                if len(size) != 2:
                    return p + ["output_size length"]
                size = tuple(n if s is None else s for s, n in zip(size, spatial))
            out = _tuple(size, 2, "output_size", 1, p)
            if p:
                return p
            fwd_out = (N, C) + out
        else:
            fwd_out = None
    elif kind == "global":
        if not backward:
            _flag_ok(c["keepdims"], "keepdims", p)
        fwd_out = None
    else:  # max backward: no window arguments
        fwd_out = None
    if not backward and c["op"] in ("adaptive_max_pool2d", "global_max_pool2d"):
        _flag_ok(c["return_indices"], "return_indices", p)
    if p:
        return p
    if not backward:
        c["out_shape"] = fwd_out
        return p
    # backward: grad_out against input_shape (and the geometry), indices against both
    go = c["grad_out"]
    if kind == "avg":
        if go.shape != fwd_out:
            return p + ["grad_out shape"]
    elif kind in ("global",):
        if go.shape not in ((N, C), (N, C, 1, 1)):
            return p + ["grad_out shape"]
    else:  # max and adaptive: (N, C) then nd positive sizes
        if go.ndim != nd + 2 or go.shape[:2] != (N, C) or 0 in go.shape[2:]:
            return p + ["grad_out shape"]
    if "indices" in c:
        ind = c["indices"]
        if ind.shape != go.shape:
            return p + ["indices shape"]
        plane = math.prod(spatial)
        if ind.size and (int(ind.min()) < 0 or int(ind.max()) >= plane):
            return p + ["indices range"]
    return p


# ----------------------------------------------------------- conv example

@st.composite
def conv_calls(draw):
    nd = draw(st.integers(1, 3))
    backward = draw(st.booleans())
    groups = (draw(st.sampled_from([0, -1, 2.0, True, None])) if _rare(draw, 4)
              else draw(st.sampled_from([1, 1, 1, 2, 3])))
    g = groups if _is_int(groups) and groups >= 1 else 1
    N = draw(st.integers(0, 3))
    Cg, Kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    C, K = Cg * g, Kg * g
    if _rare(draw, 4):  # channels that disagree with the weight or the groups
        C, K = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    algorithm = draw(st.sampled_from(["auto", "direct", "im2col"]))
    if _rare(draw, 15):
        algorithm = "1x1"
    elif _rare(draw, 3):
        algorithm = draw(st.sampled_from(["fft", "Direct", "", None]))
    kernel = draw(_shape(nd, hi=4, zero=2))
    if algorithm == "1x1" and not _rare(draw, 30):
        kernel = (1,) * nd
    spatial = draw(_shape(nd, hi=8))
    x_shape = ((N, C) + spatial + (2,))[:nd + 2 + _rank_change(draw)]
    w_shape = (K, Cg) + kernel
    names = ["x", "weight"] + (["grad_out"] if backward else ["bias"])
    dtypes = draw(_dtypes(names))
    seed = draw(st.integers(0, 2**32 - 1))
    padding = (draw(st.sampled_from(["same", "valid"])) if _rare(draw, 20)
               else draw(st.sampled_from(["full", "SAME", ""])) if _rare(draw, 2)
               else draw(_arg(nd, 0, 2)))
    c = dict(nd=nd, backward=backward, groups=groups, stride=draw(_arg(nd, 1, 3)),
             dilation=draw(_arg(nd, 1, 2)), padding=padding, algorithm=algorithm)
    c["x"] = _make(draw, x_shape, dtypes["x"], seed)
    c["weight"] = _make(draw, w_shape, dtypes["weight"], seed + 1)
    if _rare(draw, 3):  # a non-array argument
        c[draw(st.sampled_from(["x", "weight"]))] = draw(st.sampled_from(
            [None, 1.0, [[1.0]], "x", np.float64(1)]))
    if backward:
        c["need"] = (draw(st.sampled_from([("x", "w"), None, 5, ["X"]])) if _rare(draw, 3)
                     else draw(st.sampled_from([("x", "weight", "bias"), ("x",), "bias", (),
                                                ["weight", "bias"]])))
        probe = dict(c, backward=False, bias=None)
        conv_violations(probe)  # the output shape, if the geometry is valid
        shape = probe.get("out_shape") or (N, K) + (2,) * nd
        if _rare(draw, 4):
            shape = shape[:-1] + (shape[-1] + draw(st.sampled_from([-1, 1])),)
        c["grad_out"] = _make(draw, shape, dtypes["grad_out"], seed + 2)
    else:
        bias = "wrong" if _rare(draw, 3) else draw(st.sampled_from(["none", "ok"]))
        c["bias"] = (None if bias == "none" else
                     _make(draw, (K + (bias == "wrong"),), dtypes["bias"], seed + 3))
    return c


def _check_result(got, expected, dtype, tol, inputs):
    assert isinstance(got, np.ndarray) and got.shape == expected.shape
    assert got.dtype == np.dtype(dtype).newbyteorder("=") and got.flags.c_contiguous
    for a in inputs:
        assert not np.shares_memory(got, a)
    if got.dtype.kind == "i":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def _args(c, names):
    return {k: c[k] for k in names if k in c}


@FUZZ
@given(conv_calls())
def test_fuzz_conv(c):
    problems = conv_violations(c)
    nd = c["nd"]
    kw = _args(c, ["stride", "padding", "dilation", "groups", "algorithm"])
    if c["backward"]:
        op = getattr(cnnfast, f"conv{nd}d_backward")
        arrays = [c["grad_out"], c["x"], c["weight"]]
        kw["need"] = c["need"]
    else:
        op = getattr(cnnfast, f"conv{nd}d")
        arrays = [c["x"], c["weight"], c["bias"]]
    if problems:
        event(f"conv invalid: {problems[0]}")
        with pytest.raises((ValueError, TypeError)):
            op(*arrays, **kw)
        return
    event(f"conv{nd}d {'backward' if c['backward'] else 'forward'} valid")
    present = [a for a in arrays if a is not None]
    keep = snapshot(present)
    got = op(*arrays, **kw)
    kw.pop("algorithm")
    ref = getattr(reference, op.__name__)(*[None if a is None else native_copy(a)
                                            for a in arrays], **kw)
    dtype = c["x"].dtype.newbyteorder("=")
    w = c["weight"]
    if c["backward"]:
        big = tolerance(dtype, max(c["x"].shape[0], 1) * math.prod(c["grad_out"].shape[2:])
                        + w.shape[0] * 64 + math.prod(w.shape[1:]))
        for g, r in zip(got, ref):
            assert (g is None) == (r is None)
            if g is not None:
                _check_result(g, r, dtype, big, present)
    else:
        _check_result(got, ref, dtype, tolerance(dtype, math.prod(w.shape[1:])), present)
    check_unmodified(keep)


# -------------------------------------------------------- pooling example

@st.composite
def pool_calls(draw):
    op = draw(st.sampled_from(
        [f"{k}_pool{nd}d" for k in ("max", "avg") for nd in (1, 2, 3)]
        + ["adaptive_avg_pool2d", "adaptive_max_pool2d", "global_avg_pool2d",
           "global_max_pool2d"]))
    nd = int(op.split("_pool")[1][0])
    kind = ("adaptive" if op.startswith("adaptive") else "global" if op.startswith("global")
            else op[:3])
    backward = draw(st.booleans())
    spatial = draw(_shape(nd, hi=9))
    N, C = draw(st.integers(0, 3)), 0 if _rare(draw, 3) else draw(st.integers(1, 3))
    dtypes = draw(_dtypes(["grad_out" if backward else "x"]))
    seed = draw(st.integers(0, 2**32 - 1))
    c = dict(op=op, nd=nd, kind=kind, backward=backward)
    fwd = {}
    if kind in ("max", "avg"):
        fwd = dict(kernel_size=draw(_arg(nd, 1, 4)),
                   stride=None if _rare(draw, 30) else draw(_arg(nd, 1, 3)),
                   padding=draw(_arg(nd, 0, 2)), ceil_mode=draw(_flag()))
        if kind == "max":
            fwd["dilation"] = draw(_arg(nd, 1, 2))
        else:
            fwd["count_include_pad"] = draw(_flag())
            fwd["divisor_override"] = (draw(st.sampled_from([0, -2, 2.0, True, "3"]))
                                       if _rare(draw, 4)
                                       else draw(st.sampled_from([None, None, 1, 3])))
    elif kind == "adaptive":
        fwd = dict(output_size=(
            draw(st.sampled_from([(2,), (1, 2, 3), 2.0, None, (2, 2.0), 0, (3, -1)]))
            if _rare(draw, 4) else draw(st.one_of(
                st.integers(1, 5), st.tuples(st.integers(1, 5), st.integers(1, 12)),
                st.tuples(st.none(), st.integers(1, 4)),
                st.lists(st.integers(1, 5), min_size=2, max_size=2)))))
    x_shape = (N, C) + spatial
    if not backward:
        c["x"] = _make(draw, (x_shape + (2,))[:nd + 2 + _rank_change(draw)], dtypes["x"],
                       seed)
        if _rare(draw, 3):
            c["x"] = draw(st.sampled_from([None, [[[1.0]]], 2.0]))
        c.update(fwd)
        if kind == "max" or op in ("adaptive_max_pool2d", "global_max_pool2d"):
            c["return_indices"] = draw(_flag())
        if kind == "global":
            c["keepdims"] = draw(_flag())
        return c
    # backward: input_shape, then a grad_out (and indices) that mostly fit it
    input_shape = x_shape
    if _rare(draw, 2):
        input_shape = x_shape[:-1]
    elif _rare(draw, 2):
        input_shape = x_shape[:1] + (-1,) + x_shape[2:]
    elif _rare(draw, 2):
        input_shape = x_shape[:-1] + (2.0,)
    elif _rare(draw, 20):
        input_shape = list(x_shape)
    c["input_shape"] = input_shape
    if kind == "avg":
        c.update(fwd)
        probe = dict(c, backward=False, x=np.zeros(x_shape))
        pool_violations(probe)  # the forward output of the geometry, when it is valid
        out = probe.get("out_shape") or (N, C) + (2,) * nd
    elif kind == "global":
        out = (N, C) + draw(st.sampled_from([(), (1, 1)]))
    else:  # max and adaptive backward take any positive output size
        out = (N, C) + tuple(draw(st.integers(1, 5)) for _ in range(nd))
    if _rare(draw, 4):
        out = out[:-1] + (max(out[-1] + draw(st.sampled_from([-1, 1])), 0),)
    c["grad_out"] = _make(draw, out, dtypes["grad_out"], seed + 1)
    if kind == "max" or op in ("adaptive_max_pool2d", "global_max_pool2d"):
        plane = max(math.prod(spatial), 1)
        ind = np.random.default_rng(seed).integers(0, plane, size=out)
        if _rare(draw, 5) and ind.size:
            ind.reshape(-1)[-1] = draw(st.sampled_from([-1, plane, 2**62, -2**63]))
        elif _rare(draw, 3):
            ind = ind.astype(draw(st.sampled_from([np.int32, np.uint64, np.float64])))
        elif _rare(draw, 3) and ind.ndim:
            ind = ind[..., :-1]
        c["indices"] = _layout(draw, ind)
    return c


@FUZZ
@given(pool_calls())
def test_fuzz_pool(c):
    problems = pool_violations(c)
    op = c["op"] + ("_backward" if c["backward"] else "")
    kw = {k: v for k, v in c.items() if k not in ("op", "nd", "kind", "backward", "out_shape")}
    if c["backward"] and c["kind"] == "max":
        kw = _args(c, ["grad_out", "indices", "input_shape"])
    if problems:
        event(f"pool invalid: {problems[0]}")
        with pytest.raises((ValueError, TypeError)):
            getattr(cnnfast, op)(**kw)
        return
    event(f"{op} valid")
    arrays = [v for v in kw.values() if isinstance(v, np.ndarray)]
    keep = snapshot(arrays)
    got = getattr(cnnfast, op)(**kw)
    ref = getattr(reference, op)(**{k: native_copy(v) if isinstance(v, np.ndarray) else v
                                    for k, v in kw.items()})
    dtype = (c["grad_out"] if c["backward"] else c["x"]).dtype.newbyteorder("=")
    got = got if isinstance(got, tuple) else (got,)
    ref = ref if isinstance(ref, tuple) else (ref,)
    assert len(got) == len(ref)
    tol = tolerance(dtype, 64)
    for g, r in zip(got, ref):
        want = dtype if r.dtype.kind == "f" else np.dtype(np.int64)
        _check_result(g, r, want, 0 if c["kind"] == "max" and not c["backward"] else tol,
                      arrays)
    check_unmodified(keep)
