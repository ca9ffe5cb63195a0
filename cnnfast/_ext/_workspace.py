"""Work arrays the convolution kernels reuse from call to call.

A fresh NumPy array above glibc's mmap threshold (128 KiB) is mapped anew on
each call and faults every page in, which can cost more than the kernel:
LeNet c2's batch-innermost copy (300 KB) took the forward from 0.39 to
0.65 ms. Each Python thread keeps one array per name, so calls from several
threads never share one; arrays above KEEP_BYTES are not kept.
"""
from __future__ import annotations

import threading

import numpy as np

KEEP_BYTES = 16 << 20
_local = threading.local()


def work_array(name: str, size: int, dtype) -> np.ndarray:
    """A 1-D array of max(size, 1) elements of dtype, contents undefined,
    valid until this thread asks for `name` again."""
    size = max(int(size), 1)
    dtype = np.dtype(dtype)
    cache = getattr(_local, "arrays", None)
    if cache is None:
        cache = _local.arrays = {}
    key = (name, dtype.char)
    a = cache.get(key)
    if a is None or a.size < size:
        a = np.empty(size, dtype)
        if a.nbytes <= KEEP_BYTES:
            cache[key] = a
        else:
            cache.pop(key, None)
    return a[:size]


def kept_bytes() -> int:
    """Bytes this thread keeps in work arrays."""
    return sum(a.nbytes for a in getattr(_local, "arrays", {}).values())
