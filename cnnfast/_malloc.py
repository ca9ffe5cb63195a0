"""Keep freed memory in the process for the next training step (glibc only).

glibc returns large blocks to the OS as soon as they are freed (mmap above
128 KiB, heap trimming above twice that), so each step's fresh activations and
gradients fault in their pages again: about 800 page faults per LeNet-5 step,
7.6 vs 8.9 ms. Importing cnnfast raises both thresholds (so nobody has to set
MALLOC_MMAP_THRESHOLD_=33554432 and MALLOC_TRIM_THRESHOLD_=134217728), unless
the user set either of those variables, or CNNFAST_KEEP_FREED_MEMORY=0 (then
the process keeps glibc's defaults). The cost: up to TRIM_THRESHOLD of freed
memory stays mapped in the process for reuse, as PyTorch's caching allocator
does.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1     # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 128 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds unless the user set either (or
    CNNFAST_KEEP_FREED_MEMORY=0); True when applied. A no-op elsewhere (musl,
    macOS, Windows)."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    if os.environ.get("CNNFAST_KEEP_FREED_MEMORY", "").strip() == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
