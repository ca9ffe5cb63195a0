"""The thread count of the benchmark's timed blocks.

torch.set_num_threads (the PyTorch column) lowers the OpenMP limit of the
libgomp it shares with cnnfast, and cnnfast follows OpenMP's limit when it is
lowered (threadpoolctl's convention, docs/API.md): without this, the cnnfast
column of a 2-thread row that follows a 1-thread PyTorch timing would run on
one thread.
"""
from __future__ import annotations

import contextlib

import cnnfast


@contextlib.contextmanager
def cnnfast_threads(threads: int):
    """cnnfast at `threads` threads, OpenMP's limit set to the same for the block."""
    from threadpoolctl import threadpool_limits

    with cnnfast.num_threads(threads), threadpool_limits(limits=threads, user_api="openmp"):
        yield
