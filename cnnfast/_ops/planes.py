"""A prepared channels-first pooling forward (a _pool.PlanesForward, kept by
the max, average and adaptive poolings' prepared calls) run on x: the
result, and indices when prepared with return_indices, allocated here and
filled by one _pool.pool_planes call. Allocating in Python, not in the
driver, keeps every allocation and kernel call of a model's run visible
(np.empty and a driver function), as recorded runs need."""
from __future__ import annotations

import numpy as np

from .._ext import _pool


def run_planes(plan, x):
    out = np.empty(plan.out_shape, dtype=plan.dtype)
    if not plan.return_indices:
        _pool.pool_planes(plan, x, out, None)
        return out
    indices = np.empty(plan.out_shape, dtype=np.int64)
    _pool.pool_planes(plan, x, out, indices)
    return out, indices
