"""Property test: random valid convolution configurations equal the reference."""
import numpy as np
from helpers import tolerance
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnfast
from cnnfast import reference


@st.composite
def conv_configs(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    C = groups * draw(st.integers(1, 3))
    K = groups * draw(st.integers(1, 4))
    N = draw(st.integers(0, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    if draw(st.booleans()):
        padding = draw(st.sampled_from(["same", "valid"]))
        pad = (0,) * nd
    else:
        pad = tuple(draw(st.integers(0, 2)) for _ in range(nd))
        padding = pad
    # the smallest input the window fits in, plus a random extra
    spatial = tuple(max((k - 1) * d + 1 - 2 * p, 1) + draw(st.integers(0, 20 if nd == 1 else 6))
                    for k, d, p in zip(kernel, dilation, pad))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    algorithm = draw(st.sampled_from(["direct", "im2col", "auto"]
                                     + (["1x1"] if all(k == 1 for k in kernel) else [])))
    seed = draw(st.integers(0, 2**31))
    return nd, N, C, K, spatial, kernel, stride, padding, dilation, groups, dtype, algorithm, seed


@settings(max_examples=150, deadline=None, derandomize=True)
@given(conv_configs())
def test_random_configs_match_reference(config):
    nd, N, C, K, spatial, kernel, stride, padding, dilation, groups, dtype, algorithm, seed = config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C) + spatial).astype(dtype)
    w = rng.standard_normal((K, C // groups) + kernel).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    fwd = getattr(cnnfast, f"conv{nd}d")
    bwd = getattr(cnnfast, f"conv{nd}d_backward")
    expected = getattr(reference, f"conv{nd}d")(x, w, b, **args)
    got = fwd(x, w, b, **args, algorithm=algorithm)
    tol = tolerance(dtype, C * int(np.prod(kernel)))
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    grad_out = rng.standard_normal(expected.shape).astype(dtype)
    ref = getattr(reference, f"conv{nd}d_backward")(grad_out, x, w, **args)
    grads = bwd(grad_out, x, w, **args, algorithm=algorithm)
    big = tolerance(dtype, max(N, 1) * int(np.prod(expected.shape[2:], dtype=np.int64)) + K * 64)
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=big, atol=big)
