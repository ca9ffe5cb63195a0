"""Convolution kernels against the NumPy reference, finite differences and
(when installed) torch.nn.functional, for every algorithm and both dtypes."""

import numpy as np
import pytest
from helpers import numeric_gradient, tolerance

import cnnfast
from cnnfast import reference

FORWARD = {1: cnnfast.conv1d, 2: cnnfast.conv2d, 3: cnnfast.conv3d}
BACKWARD = {1: cnnfast.conv1d_backward, 2: cnnfast.conv2d_backward, 3: cnnfast.conv3d_backward}
REF_FORWARD = {1: reference.conv1d, 2: reference.conv2d, 3: reference.conv3d}
REF_BACKWARD = {1: reference.conv1d_backward, 2: reference.conv2d_backward,
                3: reference.conv3d_backward}
DTYPES = [np.float32, np.float64]

# (N, C, spatial, K, kernel, stride, padding, dilation, groups)
CASES_2D = [
    (2, 3, (9, 11), 4, (3, 3), 1, 1, 1, 1),            # odd sizes, pad 1
    (1, 4, (10, 7), 6, (3, 2), (2, 1), (1, 0), 1, 2),  # rectangular kernel/stride, groups 2
    (3, 4, (8, 8), 4, (3, 3), 1, "same", 2, 4),        # depthwise, same, dilation 2
    (2, 16, (12, 13), 32, (3, 3), 2, 1, 1, 1),         # stride 2, K > KB
    (2, 8, (7, 7), 16, (1, 1), 1, 0, 1, 1),            # 1x1
    (2, 8, (7, 9), 12, (1, 1), 2, 1, 1, 2),            # strided, padded 1x1 with groups
    (2, 3, (15, 15), 5, (5, 5), 3, 2, 2, 1),           # stride 3, dilation 2
    (1, 2, (40, 37), 9, (2, 5), (3, 1), (1, 2), (2, 1), 1),
    (2, 6, (5, 33), 12, (3, 3), (1, 2), "same", 1, 3),  # same with stride 2 on W
    (2, 5, (6, 6), 7, (6, 6), 1, "valid", 1, 1),        # kernel == input
    (0, 3, (9, 8), 4, (3, 3), 1, 1, 1, 1),              # empty batch
    (1, 1, (32, 32), 6, (5, 5), 1, 0, 1, 1),            # LeNet c1, batch 1
    (3, 6, (14, 14), 16, (5, 5), 1, 0, 1, 1),           # LeNet c2
    (2, 3, (23, 23), 8, (11, 11), 4, 0, 1, 1),          # AlexNet-like
    (2, 6, (9, 10), 9, (3, 3), 3, "same", 1, 3),        # same, stride 3, groups 3
    (2, 3, (5, 40), 17, (1, 7), 1, (0, 3), 1, 1),       # 1x7 kernel, W >> vector width
    (1, 2, (4, 70), 3, (3, 3), (1, 3), (2, 1), (1, 2), 1),
    # stride 1 with >= 12 channels per group: the direct kernel with channels
    # in the vector lanes, forward (K) and input gradient (C)
    (2, 12, (9, 11), 20, (3, 3), 1, 1, 1, 1),           # two vectors of channels
    (1, 16, (6, 5), 70, (3, 3), 1, (2, 0), (1, 2), 1),  # 70 channels: two blocks
    (2, 24, (7, 8), 36, (3, 3), 1, "same", 1, 2),       # groups
    (1, 12, (5, 6), 13, (2, 2), 1, 2, 1, 1),            # padding past the kernel
    (2, 12, (3, 3), 16, (3, 3), 1, 0, 1, 1),            # one output position
    (2, 12, (4, 5), 16, (3, 3), 1, 0, 1, 1),            # fewer positions than a tile
    (2, 12, (5, 5), 16, (1, 1), 1, 1, 1, 1),            # padded 1x1
    (2, 4, (14, 14), 48, (5, 5), 1, 2, 1, 1),           # Inception 5x5: tiles row by row
    # small planes of >= 16 images: images in the tile (any stride)
    (17, 3, (6, 7), 20, (3, 3), 2, 1, 1, 1),
    (20, 8, (5, 5), 40, (3, 2), 1, (1, 0), (1, 2), 2),
    (16, 12, (4, 4), 70, (2, 2), 1, 0, 1, 1),
    (33, 2, (5, 5), 16, (5, 5), 1, 0, 1, 1),            # one position
]
CASES_1D = [
    (2, 3, (17,), 5, (3,), 1, 1, 1, 1),
    (3, 4, (40,), 6, (5,), 2, "same", 2, 2),
    (1, 6, (9,), 6, (1,), 3, 1, 1, 6),
    (0, 2, (9,), 3, (2,), 1, 0, 1, 1),
    (2, 8, (50,), 16, (7,), 3, 3, 1, 1),
    (2, 12, (30,), 16, (5,), 1, 2, 2, 1),
    (18, 4, (9,), 16, (3,), 2, 1, 1, 1),
]
CASES_3D = [
    (2, 3, (5, 6, 7), 4, (3, 3, 3), 1, 1, 1, 1),
    (1, 4, (6, 5, 9), 6, (2, 3, 1), (2, 1, 2), (1, 0, 1), (1, 2, 1), 2),
    (2, 4, (4, 4, 4), 4, (3, 3, 3), 1, "same", 1, 4),
    (0, 2, (3, 4, 5), 2, (1, 1, 1), 1, 0, 1, 1),
    (1, 2, (3, 5, 4), 3, (1, 1, 1), (1, 2, 2), 0, 1, 1),
    (1, 12, (4, 5, 6), 14, (3, 2, 3), 1, (1, 0, 1), (1, 2, 1), 1),
    (2, 26, (3, 4, 3), 24, (1, 3, 2), 1, "same", 1, 2),
    (1, 3, (3, 9, 12), 24, (2, 3, 3), 1, (0, 1, 1), 1, 1),  # row by row, rows between planes
    (16, 2, (3, 4, 4), 13, (2, 2, 2), (1, 2, 1), (1, 0, 1), 1, 1),  # images in the tile
]


def _algorithms(kernel):
    algs = ["direct", "im2col", "auto"]
    if all(k == 1 for k in kernel):
        algs.append("1x1")
    return algs


def _make(rng, case, dtype, bias=True):
    N, C, spatial, K, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal((N, C) + spatial).astype(dtype)
    w = rng.standard_normal((K, C // groups) + kernel).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if bias else None
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, w, b, args


def _reduction(case):
    N, C, spatial, K, kernel, *_, groups = case
    return C // groups * int(np.prod(kernel))


def _all_cases():
    for nd, cases in ((1, CASES_1D), (2, CASES_2D), (3, CASES_3D)):
        for case in cases:
            for alg in _algorithms(case[4]):
                yield pytest.param(nd, case, alg, id=f"{nd}d-{case}-{alg}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd, case, algorithm", list(_all_cases()))
def test_forward_and_backward_match_reference(rng, nd, case, algorithm, dtype):
    x, w, b, args = _make(rng, case, dtype)
    expected = REF_FORWARD[nd](x, w, b, **args)
    got = FORWARD[nd](x, w, b, **args, algorithm=algorithm)
    assert got.dtype == dtype and got.shape == expected.shape and got.flags.c_contiguous
    tol = tolerance(dtype, _reduction(case))
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)

    grad_out = rng.standard_normal(expected.shape).astype(dtype)
    ref_grads = REF_BACKWARD[nd](grad_out, x, w, **args)
    grads = BACKWARD[nd](grad_out, x, w, **args, algorithm=algorithm)
    N, K = x.shape[0], w.shape[0]
    sum_size = N * int(np.prod(expected.shape[2:])) if N else 1
    for name, g, r, size in zip(("x", "weight", "bias"), grads, ref_grads,
                                (w.shape[0] * int(np.prod(case[4])), sum_size, sum_size)):
        assert g.dtype == dtype and g.shape == r.shape, name
        t = tolerance(dtype, size)
        np.testing.assert_allclose(g, r, rtol=t, atol=t, err_msg=f"grad_{name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES_2D[:9], ids=str)
def test_algorithms_agree(rng, case, dtype):
    x, w, b, args = _make(rng, case, dtype)
    results = {alg: cnnfast.conv2d(x, w, b, **args, algorithm=alg) for alg in _algorithms(case[4])}
    grad_out = rng.standard_normal(results["auto"].shape).astype(dtype)
    grads = {alg: cnnfast.conv2d_backward(grad_out, x, w, **args, algorithm=alg)
             for alg in results}
    tol = tolerance(dtype, 4 * _reduction(case))
    for alg in results:
        np.testing.assert_allclose(results[alg], results["direct"], rtol=tol, atol=tol)
        for g, g0 in zip(grads[alg], grads["direct"]):
            np.testing.assert_allclose(g, g0, rtol=tol * 10, atol=tol * 10)


def test_no_bias_equals_zero_bias(rng):
    x, w, b, args = _make(rng, CASES_2D[0], np.float64)
    for alg in ("direct", "im2col"):
        np.testing.assert_array_equal(cnnfast.conv2d(x, w, None, **args, algorithm=alg),
                                      cnnfast.conv2d(x, w, np.zeros_like(b), **args,
                                                     algorithm=alg))


def test_same_padding_output_size_and_split():
    # TensorFlow's rule: out = ceil(in / stride); the larger half of the padding after.
    x = np.arange(1 * 1 * 6, dtype=np.float64).reshape(1, 1, 6)
    w = np.ones((1, 1, 4))
    y = cnnfast.conv1d(x, w, padding="same")                 # total pad 3: 1 before, 2 after
    np.testing.assert_array_equal(y[0, 0], [0 + 1 + 2, 0 + 1 + 2 + 3, 1 + 2 + 3 + 4,
                                            2 + 3 + 4 + 5, 3 + 4 + 5, 4 + 5])
    y2 = cnnfast.conv1d(x, w, stride=4, padding="same")      # out 2, total pad 2: 1/1
    np.testing.assert_array_equal(y2[0, 0], [0 + 1 + 2, 3 + 4 + 5])


# ------------------------------------------------------------ finite differences

FD_CASES = [
    (1, (2, 3, (5, 6), 4, (3, 2), (2, 1), (1, 0), (1, 2), 1)),
    (2, (2, 4, (5, 5), 4, (3, 3), 1, "same", 1, 2)),
    (3, (1, 2, (7,), 4, (3,), 2, 1, 2, 2)),
    (4, (1, 2, (3, 4, 3), 2, (2, 2, 1), 1, (1, 0, 0), 1, 1)),
    (5, (1, 12, (4, 5), 13, (3, 2), 1, (1, 2), (1, 2), 1)),   # channels in lanes
]


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "auto", "reference"])
@pytest.mark.parametrize("key, case", FD_CASES, ids=lambda c: str(c))
def test_backward_matches_finite_differences(rng, key, case, algorithm):
    nd = len(case[2])
    x, w, b, args = _make(rng, case, np.float64)
    y = REF_FORWARD[nd](x, w, b, **args)
    grad_out = rng.standard_normal(y.shape)
    if algorithm == "reference":
        forward, backward = REF_FORWARD[nd], REF_BACKWARD[nd]
        kw = {}
    else:
        forward, backward = FORWARD[nd], BACKWARD[nd]
        kw = {"algorithm": algorithm}

    def loss():
        return float(np.sum(forward(x, w, b, **args, **kw) * grad_out))

    gx, gw, gb = backward(grad_out, x, w, **args, **kw)
    np.testing.assert_allclose(gx, numeric_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_gradient(loss, b), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ threads

def test_thread_counts_agree_and_runs_are_reproducible(rng):
    x, w, b, args = _make(rng, (4, 8, (20, 19), 16, (3, 3), 1, 1, 1, 1), np.float32)
    grad_out = rng.standard_normal((4, 16, 20, 19)).astype(np.float32)
    for alg in ("direct", "im2col"):
        results = {}
        for n in (1, 2, 3):
            with cnnfast.num_threads(n):
                first = (cnnfast.conv2d(x, w, b, **args, algorithm=alg),
                         *cnnfast.conv2d_backward(grad_out, x, w, **args, algorithm=alg))
                again = (cnnfast.conv2d(x, w, b, **args, algorithm=alg),
                         *cnnfast.conv2d_backward(grad_out, x, w, **args, algorithm=alg))
            for a, c in zip(first, again):
                np.testing.assert_array_equal(a, c)          # bit-identical run to run
            results[n] = first
        for n in (2, 3):
            for a, c in zip(results[n], results[1]):
                np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-3)


def test_thread_settings_round_trip():
    before = cnnfast.get_num_threads()
    with cnnfast.num_threads(1):
        assert cnnfast.get_num_threads() == 1
    assert cnnfast.get_num_threads() == before
    cnnfast.set_num_threads(before)
    assert cnnfast.get_num_threads() == before


def test_show_config_prints_the_build(capsys):
    cnnfast.show_config()
    out = capsys.readouterr().out
    for key in ("cnnfast", "compiler", "OpenMP", "kernels", "BLAS", "threads"):
        assert key in out
    from cnnfast._ext import _runtime
    # one ISA answer, and it names the level the kernel tables run
    assert out.count("x86-64-v") + out.count("baseline") >= 1
    assert {4: "x86-64-v4", 3: "x86-64-v3", 0: "baseline"}[_runtime.isa_level()] in out



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_vectors_are_one_register_where_the_level_has_them(dtype):
    """Every family's vectors are one register at levels 4 and 3 (64 and 32
    bytes): GCC keeps vector variables wider than the level's registers in
    memory, and 64-byte vectors ran the AVX2 kernels at 1-7 GFLOP/s. The
    baseline keeps four-register vectors (its Winograd shuffles need 4
    lanes of doubles). The drivers size their work from these widths."""
    from cnnfast._ext import _conv, _conv_nhwc, _depthwise, _pool, _runtime
    want = {4: 64, 3: 32, 0: 64}[_runtime.isa_level()] // np.dtype(dtype).itemsize
    assert _conv_nhwc.vector_width(dtype) == want
    assert _depthwise.kernel_info(dtype)["vector_width"] == want
    assert _conv.kernel_tiles(dtype)["vector_width"] == want
    assert _pool.VECTOR_WIDTH[np.dtype(dtype).char] == want

# ------------------------------------------------------------------- torch

TORCH_CASES = [
    (2, 3, (9, 11), 4, (3, 3), 1, 1, 1, 1),
    (1, 4, (10, 7), 6, (3, 2), (2, 1), (1, 0), 1, 2),
    (3, 4, (8, 8), 4, (3, 3), 1, "same", 2, 4),
    (2, 8, (7, 9), 12, (1, 1), 2, 1, 1, 2),
    (2, 3, (23, 23), 8, (11, 11), 4, 0, 1, 1),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, args = _make(rng, case, np.float64)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = F.conv2d(tx, tw, tb, **args)
    grad_out = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(grad_out))
    for alg in _algorithms(case[4]):
        y = cnnfast.conv2d(x, w, b, **args, algorithm=alg)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        gx, gw, gb = cnnfast.conv2d_backward(grad_out, x, w, **args, algorithm=alg)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd, x_shape, k", [
    (2, (64, 16, 5, 5), 120),        # LeNet's conv3: one output per image
    (1, (7, 3, 9), 4),
    (3, (5, 2, 3, 4, 2), 6),
    (2, (3, 2, 1, 1), 5),            # 1x1 input and kernel
])
def test_full_window_convolution_matches_reference(nd, x_shape, k, dtype, rng):
    """auto runs a kernel covering the whole input as one GEMM over the batch."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((k,) + x_shape[1:]).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y = FORWARD[nd](x, w, b)
    reduction = int(np.prod(x_shape[1:]))
    np.testing.assert_allclose(y, REF_FORWARD[nd](x, w, b), rtol=0,
                               atol=tolerance(dtype, reduction))
    assert y.shape == (x_shape[0], k) + (1,) * nd and y.flags.c_contiguous
    g = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(BACKWARD[nd](g, x, w), REF_BACKWARD[nd](g, x, w)):
        assert got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(dtype, max(reduction, 64)))
    for algorithm in ("direct", "im2col"):      # the per-image kernels agree
        np.testing.assert_allclose(FORWARD[nd](x, w, b, algorithm=algorithm), y, rtol=0,
                                   atol=tolerance(dtype, reduction))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("x_shape, k, kernel, stride, padding, groups", [
    ((6, 8, 7, 7), 12, 3, 1, 1, 1),          # ResNet-like 7x7: the batch is stacked
    ((5, 6, 2, 3), 4, 3, 1, 1, 2),           # 2x3 with groups
    ((6, 8, 2, 2), 10, 3, 1, 1, 1),          # 2x2: backward stacked on any thread count
    ((4, 9, 9, 11), 8, (3, 2), (2, 1), (1, 0), 1),
    ((3, 4, 13), 6, 3, 2, 1, 2),             # 1-D
    ((4, 16, 5, 5), 8, 1, 1, 0, 1),          # pointwise
])
def test_small_planes_stacked_along_depth_match_reference(x_shape, k, kernel, stride, padding,
                                                          groups, threads, dtype, rng):
    """auto stacks a batch of small images into one (depth = batch) image."""
    nd = len(x_shape) - 2
    kernel = (kernel,) * nd if isinstance(kernel, int) else kernel
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((k, x_shape[1] // groups) + kernel).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    args = dict(stride=stride, padding=padding, groups=groups)
    reduction = x_shape[1] // groups * int(np.prod(kernel))
    with cnnfast.num_threads(threads):
        y = FORWARD[nd](x, w, b, **args)
        g = rng.standard_normal(y.shape).astype(dtype)
        grads = BACKWARD[nd](g, x, w, **args)
    np.testing.assert_allclose(y, REF_FORWARD[nd](x, w, b, **args), rtol=0,
                               atol=tolerance(dtype, reduction))
    for got, want in zip(grads, REF_BACKWARD[nd](g, x, w, **args)):
        assert got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(dtype, max(reduction, 64)))


# The GEMMs read the weights in place when few column tiles meet them and
# pack them otherwise; run both ways on shapes whose row counts (K forward,
# C*kernel for the input gradient) leave remainders of every size.
@pytest.mark.parametrize("in_place_tiles", [0, 1 << 30], ids=["packed", "in-place"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    (2, 6, (5, 6), 13, (3, 3), 1, 1, 1, 1),      # 13 = 12 + 1 rows; 54 = 4*12 + 4 + 2
    (3, 5, (7, 4), 10, (3, 2), (2, 1), 1, 1, 1),  # 10 = 8 + 2; 30 = 2*12 + 4 + 2
    (2, 4, (6, 6), 27, (1, 1), 1, 1, 1, 1),       # padded 1x1: 27 = 2*12 + 3
    (2, 8, (4, 4), 32, (3, 3), 1, 1, 1, 2),       # groups
    (1, 3, (9, 9), 4, (2, 2), 1, 0, 1, 1),        # 4 rows; 12 = one tile
], ids=str)
def test_packed_and_in_place_weights_agree(rng, monkeypatch, case, dtype, in_place_tiles):
    from cnnfast import _plan
    monkeypatch.setattr(_plan, "IN_PLACE_TILES", in_place_tiles)
    x, w, b, args = _make(rng, case, dtype)
    expected = reference.conv2d(x, w, b, **args)
    got = cnnfast.conv2d(x, w, b, **args, algorithm="im2col")
    tol = tolerance(dtype, _reduction(case))
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    grad_out = rng.standard_normal(expected.shape).astype(dtype)
    gx = cnnfast.conv2d_backward(grad_out, x, w, **args, algorithm="im2col", need=("x",))[0]
    ref_gx = reference.conv2d_backward(grad_out, x, w, **args)[0]
    t = tolerance(dtype, w.shape[0] * int(np.prod(case[4])))
    np.testing.assert_allclose(gx, ref_gx, rtol=t, atol=t)


# ------------------------------------------------ padding only after the input

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("nd, x_shape, kernel, stride, dilation", [
    (2, (1, 2, 2, 1), (2, 1), 2, 2),          # found by tests/test_fuzz.py
    (1, (2, 3, 6), (2,), 2, 2),
    (1, (2, 3, 4), (2,), 3, 1),
    (2, (2, 2, 5, 6), (2, 2), 2, (1, 2)),
    (3, (1, 2, 3, 2, 4), (2, 1, 2), (2, 2, 3), 1),
])
def test_same_padding_entirely_after_the_input(nd, x_shape, kernel, stride, dilation,
                                               algorithm, dtype, rng):
    """'same' with stride and dilation can put all the padding after the input
    (pad_before 0, pad_after > 0): windows reach past the end of each plane.
    im2col's forward packed such windows straight from the input, as if there
    were no padding, and read the next plane (or, for the last one, past the
    end of the array) instead of zeros."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((3, x_shape[1]) + kernel).astype(dtype)
    args = dict(stride=stride, padding="same", dilation=dilation)
    geom = cnnfast._ops.conv_validation.conv_geometry(nd, x, w, None, **args)
    assert not any(geom.pad_before) and any(geom.pad_after)
    expected = REF_FORWARD[nd](x, w, **args)
    got = FORWARD[nd](x, w, **args, algorithm=algorithm)
    tol = tolerance(dtype, x_shape[1] * int(np.prod(kernel)))
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    grad_out = rng.standard_normal(expected.shape).astype(dtype)
    for g, r in zip(BACKWARD[nd](grad_out, x, w, **args, algorithm=algorithm),
                    REF_BACKWARD[nd](grad_out, x, w, **args)):
        np.testing.assert_allclose(g, r, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("channels", [4, 12], ids=["pixels-in-lanes", "channels-in-lanes"])
def test_direct_input_gradient_with_infinite_weight_matches_reference(rng, channels):
    # the direct input gradient convolves grad_out's zero padding with the
    # weights; an inf weight must not turn those zeros into NaN
    x = rng.standard_normal((2, channels, 6, 7))
    w = rng.standard_normal((16, channels, 3, 3))
    w[3, 1, 0, 2] = np.inf
    grad_out = rng.standard_normal((2, 16, 6, 7))
    expected = reference.conv2d_backward(grad_out, x, w, padding=1)[0]
    got = cnnfast.conv2d_backward(grad_out, x, w, padding=1, algorithm="direct", need=("x",))[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    assert finite.any()
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-10)


# Rows for the stride-2 column copies and adds of im2col
# (csrc/conv/conv_im2col.h: cf_gather_even, col2vol_stride2), vectors and
# their scalar heads and tails: odd widths, padding that puts a tap's first
# read before the row (offset < 0), dilation, 1-D and 3-D rows.
WIDE_STRIDE_2 = [
    (1, (2, 3, (70,), 4, (4,), 2, 1, 1, 1)),
    (1, (1, 2, (97,), 3, (3,), 2, 3, 2, 1)),
    (2, (2, 3, (5, 67), 5, (4, 4), 2, 1, 1, 1)),
    (2, (1, 4, (6, 129), 4, (3, 5), (1, 2), (1, 2), 1, 2)),
    (2, (1, 2, (4, 64), 3, (2, 2), 2, 0, 1, 1)),
    (3, (1, 2, (3, 4, 66), 3, (2, 3, 4), (1, 1, 2), (0, 1, 1), 1, 1)),
    (2, (3, 2, (5, 5), 2, (4, 4), 2, 1, 1, 1)),        # rows shorter than a vector
    (2, (2, 3, (6, 23), 4, (3, 3), 2, 2, 3, 1)),       # dilation 3: taps of both parities
    (2, (2, 4, (8, 16), 6, (4, 4), 2, 1, 1, 2)),       # DCGAN-like rows of 16, groups
    (1, (2, 2, (40,), 3, (17,), 2, 8, 1, 1)),          # wider than the row-wise adds take
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd, case", WIDE_STRIDE_2, ids=str)
def test_wide_stride_2_rows_match_reference(rng, nd, case, dtype):
    x, w, b, args = _make(rng, case, dtype)
    expected = REF_FORWARD[nd](x, w, b, **args)
    got = FORWARD[nd](x, w, b, **args, algorithm="im2col")
    tol = tolerance(dtype, _reduction(case))
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    grad_out = rng.standard_normal(expected.shape).astype(dtype)
    for name, g, r in zip(("x", "weight"), BACKWARD[nd](grad_out, x, w, **args,
                                                        algorithm="im2col")[:2],
                          REF_BACKWARD[nd](grad_out, x, w, **args)[:2]):
        t = tolerance(dtype, int(np.prod(expected.shape)))
        np.testing.assert_allclose(g, r, rtol=t, atol=t, err_msg=f"grad_{name}")


# With fewer images x groups than two per thread (batch 1, or a batch
# stacked along depth) the input gradient's GEMM is cut into channel chunks,
# each thread owning its chunks' planes (_conv.input_grad_channel_chunks).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, args", [
    ((1, 10, 9, 9), (7, 10, 3, 3), dict(stride=2, padding=1)),
    ((1, 13, 8, 12), (6, 13, 4, 4), dict(stride=2, padding=1)),       # DCGAN-like, last chunk short
    ((1, 8, 6, 7), (8, 4, 3, 3), dict(groups=2, padding=(0, 1))),
    ((6, 9, 7, 7), (12, 9, 3, 3), dict(padding=1)),                   # stacked along depth
    ((1, 5, 11), (4, 5, 3), dict(stride=2)),                          # 1-D
    ((1, 4, 5, 6, 7), (3, 4, 2, 3, 3), dict(padding=1)),              # 3-D
])
def test_input_gradient_channel_chunks_match_reference(rng, x_shape, w_shape, args, dtype):
    nd = len(x_shape) - 2
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    go = rng.standard_normal(REF_FORWARD[nd](x, w, **args).shape).astype(dtype)
    expected = REF_BACKWARD[nd](go, x, w, **args)[0]
    by_threads = {}
    for threads in (1, 2, 3):
        with cnnfast.num_threads(threads):
            for algorithm in ("auto", "im2col"):
                got = BACKWARD[nd](go, x, w, **args, need=("x",), algorithm=algorithm)[0]
                t = tolerance(dtype, int(np.prod(w_shape)))
                np.testing.assert_allclose(got, expected, rtol=t, atol=t)
                by_threads.setdefault(algorithm, []).append(got)
    # With im2col's plan otherwise the same at every thread count (same column
    # tiles) the chunks change who adds, not the order: bit for bit equal.
    # (auto's plan itself changes with the thread count: stacking, tiles.)
    plans = {cnnfast.explain_conv(x_shape, w_shape, **args, algorithm="im2col", dtype=dtype,
                                  need=("x",), threads=threads).passes["x"].tile
             for threads in (1, 2, 3)}
    assert len(plans) == 1
    for got in by_threads["im2col"][1:]:
        np.testing.assert_array_equal(got, by_threads["im2col"][0])
