"""Memory layouts of the conv inputs.

For every algorithm and both float dtypes, inputs that are Fortran-ordered,
transposed or strided views, negatively strided, zero-strided (broadcast),
read-only, memory-mapped, byte-swapped or misaligned give results bit-identical
to the same call on C-contiguous native copies; the results are new C-contiguous
arrays of the native dtype, and the inputs are never modified. Also: an empty
batch in every layout, and one buffer passed as several arguments.
"""

import numpy as np
import pytest

import cnnfast
from layouts import LAYOUTS, check_unmodified, native_copy, relayout, snapshot

DTYPES = [np.float32, np.float64]

# name -> (nd, x shape, weight shape, conv arguments)
CASES = {
    "2d": (2, (3, 4, 9, 11), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), groups=2)),
    "2d_1x1": (2, (2, 4, 7, 5), (6, 4, 1, 1), dict()),
    "2d_1x1_strided": (2, (2, 4, 7, 6), (6, 2, 1, 1),
                       dict(stride=(1, 2), padding=(0, 1), groups=2)),
    "1d": (1, (3, 4, 17), (6, 2, 3), dict(stride=2, padding=1, dilation=2, groups=2)),
    "3d": (3, (2, 4, 5, 6, 7), (6, 2, 3, 2, 1),
           dict(stride=(1, 2, 1), padding=(1, 0, 1), groups=2)),
}
FORWARD = {1: cnnfast.conv1d, 2: cnnfast.conv2d, 3: cnnfast.conv3d}
BACKWARD = {1: cnnfast.conv1d_backward, 2: cnnfast.conv2d_backward,
            3: cnnfast.conv3d_backward}


def _algorithms(case):
    kernel = CASES[case][2][2:]
    return ["direct", "im2col", "auto"] + (["1x1"] if all(k == 1 for k in kernel) else [])


def _params(targets):
    """(case, algorithm, target): each input alone and all at once for the main 2-D
    case, all inputs at once for the others."""
    return [(case, algorithm, target)
            for case in CASES for algorithm in _algorithms(case)
            for target in (targets if case == "2d" else ["all"])]


# ----------------------------------------------------------------- helpers

def make_inputs(case, dtype, seed):
    nd, xshape, wshape, _ = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal(wshape).astype(dtype)
    b = rng.standard_normal(wshape[0]).astype(dtype)
    return x, w, b


def check_results(got, expected, dtype, inputs):
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
        assert g.shape == e.shape
        assert g.flags.c_contiguous
        assert g.dtype == np.dtype(dtype) and g.dtype.isnative
        assert g.flags.writeable
        for a in inputs:
            assert not np.shares_memory(g, a)


# ------------------------------------------------------------------- tests

@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_are_what_they_claim(layout, files):
    a = np.random.default_rng(0).standard_normal((3, 4, 9, 11))
    v = relayout(a, layout, files())
    assert v.shape == a.shape
    if layout != "broadcast":
        np.testing.assert_array_equal(v, a)
    claims = {
        "fortran": v.flags.f_contiguous and not v.flags.c_contiguous,
        "transposed": not v.flags.c_contiguous and not v.flags.f_contiguous,
        "strided": v.strides[-1] == 2 * v.itemsize,
        "negative": all(s < 0 for s in v.strides),
        "broadcast": v.strides[-1] == 0,
        "readonly": not v.flags.writeable,
        "memmap": isinstance(v, np.memmap) and not v.flags.writeable,
        "byteswapped": not v.dtype.isnative,
        "misaligned": not v.flags.aligned,
    }
    assert claims[layout]
    for dtype in DTYPES:  # the misaligned float32/float64 views really are misaligned
        if layout == "misaligned":
            assert not relayout(a.astype(dtype), layout, None).flags.aligned


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, algorithm, target", _params(["x", "weight", "bias", "all"]))
def test_forward(case, algorithm, target, dtype, layout, files):
    nd, _, _, args = CASES[case]
    x, w, b = make_inputs(case, dtype, seed=1)
    names = ["x", "weight", "bias"] if target == "all" else [target]
    inputs = {"x": x, "weight": w, "bias": b}
    for name in names:
        inputs[name] = relayout(inputs[name], layout, files())
    arrays = [inputs["x"], inputs["weight"], inputs["bias"]]
    keep = snapshot(arrays)
    expected = FORWARD[nd](*[native_copy(a) for a in arrays], **args, algorithm=algorithm)
    got = FORWARD[nd](*arrays, **args, algorithm=algorithm)
    check_results([got], [expected], dtype, arrays)
    check_unmodified(keep)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, algorithm, target",
                         _params(["grad_out", "x", "weight", "all"]))
def test_backward(case, algorithm, target, dtype, layout, files):
    nd, _, _, args = CASES[case]
    x, w, _ = make_inputs(case, dtype, seed=2)
    out_shape = FORWARD[nd](x, w, **args).shape
    grad_out = np.random.default_rng(3).standard_normal(out_shape).astype(dtype)
    names = ["grad_out", "x", "weight"] if target == "all" else [target]
    inputs = {"grad_out": grad_out, "x": x, "weight": w}
    for name in names:
        inputs[name] = relayout(inputs[name], layout, files())
    arrays = [inputs["grad_out"], inputs["x"], inputs["weight"]]
    keep = snapshot(arrays)
    expected = BACKWARD[nd](*[native_copy(a) for a in arrays], **args, algorithm=algorithm)
    got = BACKWARD[nd](*arrays, **args, algorithm=algorithm)
    assert all(g is not None for g in got)
    check_results(got, expected, dtype, arrays)
    check_unmodified(keep)


@pytest.mark.parametrize("layout", ["strided", "negative", "broadcast", "byteswapped",
                                    "misaligned"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need", [("x",), ("weight",), ("bias",)], ids=str)
def test_backward_need_subsets(need, dtype, layout, files):
    nd, _, _, args = CASES["2d"]
    x, w, _ = make_inputs("2d", dtype, seed=4)
    out_shape = FORWARD[nd](x, w, **args).shape
    grad_out = np.random.default_rng(5).standard_normal(out_shape).astype(dtype)
    arrays = [relayout(a, layout, files())
              for i, a in enumerate((grad_out, x, w))]
    keep = snapshot(arrays)
    expected = BACKWARD[nd](*[native_copy(a) for a in arrays], **args, need=need)
    got = BACKWARD[nd](*arrays, **args, need=need)
    for name, g, e in zip(("x", "weight", "bias"), got, expected):
        assert (g is None) == (name not in need) == (e is None)
    check_results([g for g in got if g is not None], [e for e in expected if e is not None],
                  dtype, arrays)
    check_unmodified(keep)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_zero_batch_in_every_layout(case, dtype, layout, files):
    """An empty batch (N = 0) stored any way: empty results of the right shape,
    zero weight and bias gradients, inputs untouched, for every algorithm."""
    nd, xshape, wshape, args = CASES[case]
    x, w, b = make_inputs(case, dtype, seed=6)
    empty = "fortran" if layout == "memmap" else layout  # NumPy cannot map 0 bytes
    x = relayout(x[:0], empty, files())
    w, b = relayout(w, layout, files()), relayout(b, layout, files())
    out_shape = FORWARD[nd](x, w, **args).shape
    assert out_shape[0] == 0
    grad_out = relayout(np.zeros(out_shape, dtype), empty, files())
    keep = snapshot([x, w, b, grad_out])
    for algorithm in _algorithms(case):
        y = FORWARD[nd](x, w, b, **args, algorithm=algorithm)
        assert y.shape == out_shape and y.dtype == np.dtype(dtype) and y.flags.c_contiguous
        gx, gw, gb = BACKWARD[nd](grad_out, x, w, **args, algorithm=algorithm)
        assert gx.shape == x.shape and gx.flags.c_contiguous
        np.testing.assert_array_equal(gw, np.zeros(wshape, dtype))
        np.testing.assert_array_equal(gb, np.zeros(wshape[0], dtype))
    check_unmodified(keep)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "1x1", "auto"])
def test_one_array_passed_as_several_arguments(algorithm, dtype):
    """x also given as grad_out (a 1x1 kernel with K == C keeps the shapes
    equal), and a weight that is a view of x's buffer: the same results as
    separate copies, new arrays, nothing written into the shared buffer."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    w = x[0, :, :4, 0].copy().reshape(4, 4, 1, 1)
    shared = x[0, :, :4, :1, None]  # (4, 4, 1, 1), a view into x
    np.testing.assert_array_equal(shared, w)
    keep = snapshot([x])
    expected = cnnfast.conv2d_backward(x.copy(), x.copy(), w, algorithm=algorithm)
    got = cnnfast.conv2d_backward(x, x, shared, algorithm=algorithm)
    check_results(got, expected, dtype, [x])
    np.testing.assert_array_equal(cnnfast.conv2d(x, shared, algorithm=algorithm),
                                  cnnfast.conv2d(x.copy(), w, algorithm=algorithm))
    check_unmodified(keep)
