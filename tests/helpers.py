"""Shared helpers for the cnnfast tests (tests/ is on pytest's pythonpath)."""
import numpy as np


def tolerance(dtype, reduction_size):
    """Absolute tolerance for sums of `reduction_size` products of O(1) values."""
    eps = 1e-6 if np.dtype(dtype) == np.float32 else 1e-13
    return eps * max(reduction_size, 1) * 10


def numeric_gradient(loss, a, eps=1e-6):
    """Central finite differences of the scalar loss() wrt every element of a
    (perturbed in place and restored)."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        plus = loss()
        a[idx] = old - eps
        minus = loss()
        a[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def to_last(a):
    """A channels-first array (N, C, *spatial) as a C-contiguous channels-last one."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def to_first(a):
    """A channels-last array as a channels-first view (None passes through)."""
    return None if a is None else np.moveaxis(a, -1, 1)


def op_modules():
    """The modules of cnnfast._ops (each binds the drivers and layout
    helpers it calls under its own names: a test that stands in for one
    patches it in every module that has it)."""
    import importlib
    import pkgutil

    import cnnfast._ops
    return [importlib.import_module(f"cnnfast._ops.{m.name}")
            for m in pkgutil.iter_modules(cnnfast._ops.__path__)]
