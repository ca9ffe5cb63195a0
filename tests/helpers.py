"""Shared helpers for the cnnfast tests (tests/ is on pytest's pythonpath)."""
import numpy as np


def tolerance(dtype, reduction_size):
    """Absolute tolerance for sums of `reduction_size` products of O(1) values."""
    eps = 1e-6 if np.dtype(dtype) == np.float32 else 1e-13
    return eps * max(reduction_size, 1) * 10
