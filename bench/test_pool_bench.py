"""pytest-benchmark suite for pooling, on the shapes shared with `python -m cnnfast.bench`.

    pytest bench --benchmark-only                 # time them
    pytest bench --benchmark-disable              # smoke-run each once (CI)
"""
import numpy as np
import pytest

import cnnfast
from cnnfast import reference
from cnnfast.bench.__main__ import _pool_calls
from cnnfast.bench.shapes import POOL_SHAPES, pool_ops

CASES = [(shape, op, passage, lib) for shape in POOL_SHAPES for op, passage in pool_ops(shape)
         for lib in ("cnnfast", "reference")]


@pytest.mark.parametrize("shape, op, passage, lib", CASES,
                         ids=lambda v: getattr(v, "name", v))
def test_pool(benchmark, shape, op, passage, lib):
    x = np.random.default_rng(0).standard_normal(shape.x_shape).astype(np.float32)
    with cnnfast.num_threads(1):
        call = _pool_calls(cnnfast if lib == "cnnfast" else reference, shape, x)[(op, passage)]
        result = benchmark(call)
    first = result[0] if isinstance(result, tuple) else result
    if passage == "backward":
        expected = shape.x_shape
    elif shape.is_global:
        expected = shape.x_shape[:2]
    else:
        expected = cnnfast.max_pool2d(x, shape.kernel, shape.stride, shape.padding).shape
    assert first.shape == expected
