"""The dense layers' matrix products (nn.Linear, ONNX Gemm/MatMul) on
cnnfast's threads."""
from __future__ import annotations

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._ext import _dense
from .._threads import blas_pinned


def _dense_matmul(a, b, trans_a=False, trans_b=False, bias=None):
    """op(a) @ op(b) (+ bias) for the dense layers, on cnnfast's threads (never
    NumPy's BLAS pool, see _ext/_dense.pyx). a and b: 2-D arrays of one float
    dtype; bias: None or op(b)'s column count of values (rounded to a and
    b's dtype, then added)."""
    dtype = V.common_float_dtype(a=a, b=b)
    a, b = V.kernel_array(a, dtype), V.kernel_array(b, dtype)
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    k = a.shape[0] if trans_a else a.shape[1]
    out = np.empty((m, n), dtype=dtype)
    if bias is not None:
        bias = V.kernel_array(bias.reshape(-1), dtype)
    with blas_pinned:
        _dense.matmul(a, b, out, trans_a, trans_b, P.dense_threads(m * n * k, n * k), bias)
    return out
