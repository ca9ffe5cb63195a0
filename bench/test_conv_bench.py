"""pytest-benchmark suite for conv2d, on the shapes shared with `python -m cnnfast.bench`.

    pytest bench --benchmark-only                 # time them
    pytest bench --benchmark-disable              # smoke-run each once (CI)
"""
import numpy as np
import pytest

import cnnfast
from cnnfast import reference
from cnnfast.bench.shapes import CONV_ALGORITHMS, CONV_SHAPES

CASES = [(s, a) for s in CONV_SHAPES for a in CONV_ALGORITHMS + ("reference",)
         if a != "1x1" or s.kernel == 1]


def _arrays(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape.x_shape, dtype=np.float32)
    w = rng.standard_normal(shape.w_shape, dtype=np.float32) * 0.1
    b = rng.standard_normal(shape.K, dtype=np.float32)
    go = rng.standard_normal((shape.N, shape.K) + shape.out_hw, dtype=np.float32)
    return x, w, b, go


@pytest.fixture(params=[1], ids=lambda n: f"threads{n}")
def one_thread(request):
    with cnnfast.num_threads(request.param):
        yield


@pytest.mark.parametrize("shape, algorithm", CASES, ids=lambda v: getattr(v, "name", v))
def test_conv2d_forward(benchmark, one_thread, shape, algorithm):
    x, w, b, _ = _arrays(shape)
    args = dict(stride=shape.stride, padding=shape.padding)
    if algorithm == "reference":
        y = benchmark(reference.conv2d, x, w, b, **args)
    else:
        y = benchmark(cnnfast.conv2d, x, w, b, **args, algorithm=algorithm)
    assert y.shape == (shape.N, shape.K) + shape.out_hw
    benchmark.extra_info["gflop"] = shape.flops / 1e9


@pytest.mark.parametrize("shape, algorithm", CASES, ids=lambda v: getattr(v, "name", v))
def test_conv2d_backward(benchmark, one_thread, shape, algorithm):
    x, w, _, go = _arrays(shape)
    args = dict(stride=shape.stride, padding=shape.padding)
    if algorithm == "reference":
        gx, gw, gb = benchmark(reference.conv2d_backward, go, x, w, **args)
    else:
        gx, gw, gb = benchmark(cnnfast.conv2d_backward, go, x, w, **args, algorithm=algorithm)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (shape.K,)
    benchmark.extra_info["gflop"] = 2 * shape.flops / 1e9
