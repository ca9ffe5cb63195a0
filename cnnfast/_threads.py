"""Process-wide thread count for the kernels, and BLAS pinning.

cnnfast parallelises with its own OpenMP loops and calls BLAS (SciPy's
OpenBLAS) from inside them, so BLAS is held at one thread while a kernel runs;
OpenMP threads x BLAS threads never exceed the configured count.
"""
from __future__ import annotations

import contextlib
import os
import threading

from ._ext import _runtime
from ._validation import THREADS_MAX, thread_count


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), THREADS_MAX)
    try:
        return min(max(len(os.sched_getaffinity(0)), 1), THREADS_MAX)
    except AttributeError:  # not on Linux
        return min(os.cpu_count() or 1, THREADS_MAX)


_num_threads = _default_threads()
_forked_child = False


def _after_fork_in_child():
    # GNU libgomp's thread pool is unusable in a forked child (GCC bug 60035):
    # a child runs the kernels serially, without entering an OpenMP region.
    global _forked_child
    _forked_child = True
    # Another thread of the parent may have held the BLAS pin's lock (or been
    # inside a kernel) at the fork: that thread does not exist in the child,
    # so its lock would stay taken forever.
    blas_pinned._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n) -> None:
    """Set the number of threads every cnnfast kernel uses (process-wide),
    1 <= n <= 1024."""
    global _num_threads
    _num_threads = thread_count(n)


_OPENMP = _runtime.openmp_enabled()


def get_num_threads() -> int:
    """cnnfast's thread count: 1 without OpenMP or in a forked child (the
    kernels run kernel_threads(), which an OpenMP limit may lower)."""
    if _forked_child or not _OPENMP:
        return 1
    return _num_threads


# OpenMP's own default limit: OMP_NUM_THREADS, else the usable cores (as
# libgomp computes it), the same source as cnnfast's default count.
_OPENMP_DEFAULT = _default_threads()


def kernel_threads() -> int:
    """Threads a kernel runs with: get_num_threads(), capped by OpenMP's
    limit in the calling thread (omp_get_max_threads()) once something set
    that limit below its default: threadpoolctl's threadpool_limits(n,
    user_api="openmp"), omp_set_num_threads, or torch.set_num_threads when
    torch shares cnnfast's OpenMP runtime. scikit-learn's rule (the smaller
    of its own setting and OpenMP's limit); a limit left at its default does
    not cap, so set_num_threads(n) above the core count still runs n."""
    n = get_num_threads()
    if n == 1:
        return 1
    limit = _runtime.max_threads()
    return min(n, limit) if limit < _OPENMP_DEFAULT else n


@contextlib.contextmanager
def num_threads(n):
    """Context manager: run the enclosed kernels with n threads."""
    global _num_threads
    n = thread_count(n)
    saved = _num_threads
    _num_threads = n
    try:
        yield
    finally:
        _num_threads = saved


def _blas_libraries(scipy_only):
    from threadpoolctl import ThreadpoolController

    import scipy.linalg.cython_blas  # noqa: F401  loads the BLAS the kernels call

    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    if not scipy_only:
        return blas
    scipy_own = [lib for lib in blas
                 if "scipy" in os.path.basename(os.path.dirname(lib.filepath))]
    return scipy_own or blas


class _BlasLimit:
    """Holds BLAS libraries at `threads()` threads while any Python thread is
    inside (reference-counted across Python threads; the first to enter sets
    the count, the last to leave restores it)."""

    def __init__(self, scipy_only, threads):
        self._scipy_only = scipy_only
        self._threads = threads
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = []
        self._libs = None

    def libraries(self):
        if self._libs is None:
            self._libs = _blas_libraries(self._scipy_only)
        return self._libs

    def _after_fork(self):
        self._lock = threading.Lock()
        self._depth = 0

    def __enter__(self):
        libs = self.libraries()
        with self._lock:
            if self._depth == 0:
                n = self._threads()
                self._saved = [lib.num_threads for lib in libs]
                for lib, old in zip(libs, self._saved):
                    if old != n:
                        lib.set_num_threads(n)
            self._depth += 1

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, old in zip(self.libraries(), self._saved):
                    if lib.num_threads != old:
                        lib.set_num_threads(old)


# SciPy's BLAS at one thread while a kernel runs (the kernels parallelise
# around their BLAS calls themselves).
blas_pinned = _BlasLimit(scipy_only=True, threads=lambda: 1)


def blas_info() -> list:
    return [f"{lib.internal_api} {lib.version or ''} ({lib.architecture if hasattr(lib, 'architecture') else ''}) "
            f"{os.path.basename(lib.filepath)}".replace("  ", " ")
            for lib in blas_pinned.libraries()]
