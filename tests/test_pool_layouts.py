"""Memory layouts, empty batches and threads of the pooling ops.

For every op family (max 1/2/3-D with and without indices, avg 1/2/3-D,
adaptive avg/max, global avg/max, and every backward) and both float dtypes,
inputs that are Fortran-ordered, transposed or strided views, negatively
strided, zero-strided (broadcast), read-only, memory-mapped, byte-swapped or
misaligned give results bit-identical (values and indices) to the same call on
C-contiguous native copies; the results are new C-contiguous arrays of the
native dtype, and the inputs are never modified. A zero batch gives empty
results of the right shape; any OpenMP thread count gives the same bits (pooling
has no cross-thread reductions). Python threads calling at once:
tests/test_concurrency.py.
"""

import numpy as np
import pytest

import cnnfast
from layouts import LAYOUTS, check_unmodified, native_copy, relayout, snapshot
from cnnfast import functional as F

DTYPES = [np.float32, np.float64]

# name -> (forward op, x shape, forward arguments): odd, non-square sizes with
# padding, ceil_mode overhang, dilation and overlapping windows
CASES = {
    "max1d": ("max_pool1d", (2, 3, 17), dict(kernel_size=3, stride=2, padding=1, dilation=2,
                                             ceil_mode=True)),
    "max2d": ("max_pool2d", (2, 3, 9, 11), dict(kernel_size=(3, 2), stride=(2, 1),
                                                padding=(1, 1), ceil_mode=True)),
    "max2d_dilated": ("max_pool2d", (1, 4, 10, 13), dict(kernel_size=3, stride=(1, 2),
                                                         padding=(0, 1), dilation=(2, 3))),
    "max3d": ("max_pool3d", (2, 2, 5, 6, 7), dict(kernel_size=(2, 3, 2), stride=(1, 2, 2),
                                                  padding=(1, 1, 0), dilation=(1, 1, 2))),
    "avg1d": ("avg_pool1d", (2, 3, 17), dict(kernel_size=3, stride=2, padding=1,
                                             ceil_mode=True, count_include_pad=False)),
    "avg2d": ("avg_pool2d", (2, 3, 9, 11), dict(kernel_size=(3, 2), stride=(2, 1),
                                                padding=(1, 1), ceil_mode=True)),
    "avg2d_divisor": ("avg_pool2d", (1, 4, 10, 13), dict(kernel_size=(2, 3), stride=1,
                                                         padding=(1, 0), divisor_override=5)),
    "avg3d": ("avg_pool3d", (2, 2, 5, 6, 7), dict(kernel_size=(2, 3, 2), stride=(1, 2, 2),
                                                  padding=(1, 1, 0), count_include_pad=False)),
    "adaptive_avg": ("adaptive_avg_pool2d", (2, 3, 9, 11), dict(output_size=(4, 3))),
    "adaptive_max": ("adaptive_max_pool2d", (2, 3, 9, 11), dict(output_size=(4, 3))),
    "global_avg": ("global_avg_pool2d", (2, 3, 9, 11), dict()),
    "global_avg_keepdims": ("global_avg_pool2d", (2, 3, 9, 11), dict(keepdims=True)),
    "global_max": ("global_max_pool2d", (2, 3, 9, 11), dict()),
    "global_max_keepdims": ("global_max_pool2d", (2, 3, 9, 11), dict(keepdims=True)),
}
INDEXED = {"max1d", "max2d", "max2d_dilated", "max3d", "adaptive_max", "global_max",
           "global_max_keepdims"}

# forward calls: every case, and the indexed ones also with return_indices=True
FORWARD = [(case, False) for case in CASES] + [(case, True) for case in CASES
                                               if case in INDEXED]
FORWARD_IDS = [f"{case}{'-indices' if idx else ''}" for case, idx in FORWARD]
# backward calls: every case (the keepdims ones take an (N, C, 1, 1) grad_out)
BACKWARD = list(CASES)


@pytest.fixture(autouse=True)
def serial_kernels():
    """One kernel thread unless a test asks for more: results never depend on
    it, and tiny calls with idle OpenMP threads are slow on a loaded machine."""
    with cnnfast.num_threads(1):
        yield


@pytest.fixture
def restore_threads(serial_kernels):
    before = cnnfast.get_num_threads()
    yield before
    cnnfast.set_num_threads(before)


# ----------------------------------------------------------------- helpers

def forward_call(case, dtype, *, return_indices=False, n=None, c=None, seed=1):
    """(op, arrays, other arguments) of a forward call of `case`."""
    op, shape, kwargs = CASES[case]
    shape = (shape[0] if n is None else n, shape[1] if c is None else c) + shape[2:]
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    kwargs = dict(kwargs)
    if return_indices:
        kwargs["return_indices"] = True
    return getattr(F, op), {"x": x}, kwargs


def backward_call(case, dtype, *, n=None, c=None, seed=2):
    """(op, arrays, other arguments) of the backward call of `case`, with the
    indices of a real forward pass and random grad_out."""
    op, shape, kwargs = CASES[case]
    _, arrays, _ = forward_call(case, dtype, n=n, c=c, seed=seed)
    x = arrays["x"]
    rng = np.random.default_rng(seed + 100)
    backward = getattr(F, op + "_backward")
    if case in INDEXED:
        y, indices = getattr(F, op)(x, **kwargs, return_indices=True)
        grad_out = rng.standard_normal(y.shape).astype(dtype)
        return backward, {"grad_out": grad_out, "indices": indices}, dict(input_shape=x.shape)
    y = getattr(F, op)(x, **kwargs)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    rest = {k: v for k, v in kwargs.items() if k not in ("output_size", "keepdims")}
    return backward, {"grad_out": grad_out}, dict(input_shape=x.shape, **rest)


def as_list(result):
    return list(result) if isinstance(result, tuple) else [result]


def check_results(got, expected, dtype, inputs):
    """Equal bits, same shapes; new C-contiguous writeable arrays of the native
    dtype (int64 for indices) that share no memory with the inputs."""
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert isinstance(g, np.ndarray)
        assert g.shape == e.shape
        np.testing.assert_array_equal(g, e)
        want = np.dtype(dtype) if i == 0 else np.dtype(np.int64)
        assert g.dtype == want and g.dtype.isnative
        assert g.flags.c_contiguous and g.flags.writeable
        for a in inputs:
            assert not np.shares_memory(g, a)


def bits(a):
    """The raw bytes of a (so NaNs and -0.0 compare exactly)."""
    return np.ascontiguousarray(a).tobytes()


# ------------------------------------------------------------------- tests

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES + [np.int64])
def test_layouts_are_what_they_claim(layout, dtype, files):
    a = np.arange(3 * 4 * 9 * 11).reshape(3, 4, 9, 11).astype(dtype)
    v = relayout(a, layout, files())
    assert v.shape == a.shape and v.dtype.kind == a.dtype.kind
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


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, return_indices", FORWARD, ids=FORWARD_IDS)
def test_forward(case, return_indices, dtype, layout, files):
    op, arrays, kwargs = forward_call(case, dtype, return_indices=return_indices)
    x = relayout(arrays["x"], layout, files())
    keep = snapshot([x])
    expected = as_list(op(native_copy(x), **kwargs))
    got = as_list(op(x, **kwargs))
    assert len(got) == (2 if return_indices else 1)
    check_results(got, expected, dtype, [x])
    check_unmodified(keep)


def _backward_params():
    """(case, target): grad_out, indices and both for max_pool2d; all inputs
    at once for the other families."""
    params = []
    for case in BACKWARD:
        targets = ["all"]
        if case == "max2d":
            targets = ["grad_out", "indices", "all"]
        elif case in ("avg2d", "adaptive_avg", "global_avg"):
            targets = ["grad_out"]
        params += [(case, t) for t in targets]
    return params


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, target", _backward_params())
def test_backward(case, target, dtype, layout, files):
    op, arrays, kwargs = backward_call(case, dtype)
    names = list(arrays) if target == "all" else [target]
    for name in names:
        arrays[name] = relayout(arrays[name], layout, files())
    keep = snapshot(arrays.values())
    expected = op(**{k: native_copy(v) for k, v in arrays.items()}, **kwargs)
    got = op(**arrays, **kwargs)
    assert got.shape == tuple(kwargs["input_shape"])
    check_results([got], [expected], dtype, arrays.values())
    check_unmodified(keep)


INDEX_LAYOUTS = ["byteswapped", "strided", "negative", "transposed", "fortran", "misaligned",
                 "readonly", "broadcast", "byteswapped_strided", "longlong", "stepped_view"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", INDEX_LAYOUTS)
def test_max_pool2d_backward_indices_layouts(layout, dtype, files):
    """indices as a byte-swapped or non-contiguous int64 array (or any other
    layout) give the gradient of the same indices as a native C array, which
    is the reference's scatter of them."""
    _, arrays, kwargs = backward_call("max2d", dtype, n=3, c=2, seed=5)
    grad_out, indices = arrays["grad_out"], arrays["indices"]
    if layout == "byteswapped_strided":
        view = relayout(indices.astype(">i8"), "strided", None)
        assert not view.dtype.isnative and not view.flags.c_contiguous
    elif layout == "longlong":
        view = indices.astype(np.longlong)
    elif layout == "stepped_view":  # a view of every other row of a larger array
        big = np.full(indices.shape[:2] + (2 * indices.shape[2], indices.shape[3]), -2**62,
                      dtype=np.int64)
        big[:, :, 1::2] = indices
        view = big[:, :, 1::2]
    else:
        view = relayout(indices, layout, files())
    expected_indices = native_copy(view)
    keep = snapshot([grad_out, view])
    expected = F.max_pool2d_backward(grad_out, expected_indices, **kwargs)
    got = F.max_pool2d_backward(grad_out, view, **kwargs)
    check_results([got], [expected], dtype, [grad_out, view])
    check_unmodified(keep)
    ref = cnnfast.reference.max_pool2d_backward(grad_out, view, **kwargs)
    np.testing.assert_allclose(got, ref, rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, return_indices", FORWARD, ids=FORWARD_IDS)
def test_layout_results_match_reference(case, return_indices, dtype):
    """One awkward layout at once (byte-swapped, reversed, strided) still gives
    the reference's values: the layout tests compare against cnnfast itself."""
    op, arrays, kwargs = forward_call(case, dtype, return_indices=return_indices)
    x = arrays["x"].astype(np.dtype(dtype).newbyteorder())[..., ::-1].copy()[..., ::-1]
    ref = as_list(getattr(cnnfast.reference, op.__name__)(native_copy(x), **kwargs))
    got = as_list(op(x, **kwargs))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got[0], ref[0], rtol=tol, atol=tol)
    if return_indices:
        np.testing.assert_array_equal(got[1], ref[1])


# -------------------------------------------------------------- zero batch

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, return_indices", FORWARD, ids=FORWARD_IDS)
def test_forward_zero_batch(case, return_indices, dtype):
    op, arrays, kwargs = forward_call(case, dtype, return_indices=return_indices)
    full = as_list(op(arrays["x"], **kwargs))
    x0 = arrays["x"][:0]
    assert x0.shape[0] == 0
    got = as_list(op(x0, **kwargs))
    assert len(got) == len(full)
    for i, (g, f) in enumerate(zip(got, full)):
        assert g.shape == (0,) + f.shape[1:]
        assert g.dtype == (np.dtype(dtype) if i == 0 else np.dtype(np.int64))
        assert g.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BACKWARD)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_backward_zero_batch(case, dtype, layout):
    op, arrays, kwargs = backward_call(case, dtype)
    kwargs["input_shape"] = (0,) + tuple(kwargs["input_shape"][1:])
    empty = {name: a[:0] for name, a in arrays.items()}
    if layout == "strided":  # empty views of non-contiguous arrays
        empty = {name: relayout(a, "strided", None)[:0] for name, a in arrays.items()}
    got = op(**empty, **kwargs)
    assert got.shape == kwargs["input_shape"]
    assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["global_avg_pool2d_backward", "global_max_pool2d_backward"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_backward_zero_batch_both_grad_shapes(op, keepdims, dtype):
    shape = (0, 3, 1, 1) if keepdims else (0, 3)
    args = dict(grad_out=np.zeros(shape, dtype=dtype), input_shape=(0, 3, 5, 4))
    if "max" in op:
        args["indices"] = np.zeros(shape, dtype=np.int64)
    got = getattr(F, op)(**args)
    assert got.shape == (0, 3, 5, 4) and got.dtype == np.dtype(dtype)


# ----------------------------------------------------------------- threads

def _all_calls():
    return ([(case, "forward", idx) for case, idx in FORWARD]
            + [(case, "backward", False) for case in BACKWARD])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, kind, return_indices", _all_calls(),
                         ids=[f"{c}-{k}{'-indices' if i else ''}" for c, k, i in _all_calls()])
def test_thread_counts_give_identical_bits(case, kind, return_indices, dtype,
                                           restore_threads):
    """num_threads(1), (2) and (7) give the same bits: every plane is pooled
    by one thread, with no reduction across threads (N * C = 15 planes)."""
    if kind == "forward":
        op, arrays, kwargs = forward_call(case, dtype, return_indices=return_indices,
                                          n=3, c=5, seed=21)
    else:
        op, arrays, kwargs = backward_call(case, dtype, n=3, c=5, seed=22)
    results = {}
    for n in (1, 2, 7):
        with cnnfast.num_threads(n):
            results[n] = as_list(op(**arrays, **kwargs))
    for n in (2, 7):
        assert len(results[n]) == len(results[1])
        for got, expected in zip(results[n], results[1]):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert bits(got) == bits(expected), n


def test_thread_count_is_restored_by_the_context_manager(restore_threads):
    cnnfast.set_num_threads(2)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    with cnnfast.num_threads(7):
        cnnfast.max_pool2d(x, 2)
    assert cnnfast.get_num_threads() in (1, 2)  # 1 without OpenMP
