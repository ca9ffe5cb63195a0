# cython: language_level=3
"""What the compiled extension was built with and which kernels it runs."""
from cython.parallel cimport prange

from ._omp cimport cf_max_threads, cf_openmp_enabled, cf_team_size

cdef extern from "cf_isa.h":
    int cf_isa_level()
    int CF_ISA_VARIANTS

cdef extern from *:
    """
    #ifndef CNNFAST_BUILD_FLAGS
    #define CNNFAST_BUILD_FLAGS "unknown"
    #endif
    #if defined(__clang__)
    #define CF_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define CF_COMPILER "gcc " __VERSION__
    #else
    #define CF_COMPILER "unknown"
    #endif
    """
    const char *CF_COMPILER
    const char *CNNFAST_BUILD_FLAGS

_ISA_NAMES = {4: "x86-64-v4 (AVX-512)", 3: "x86-64-v3 (AVX2+FMA)", 0: "baseline"}


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cf_openmp_enabled())


def max_threads():
    """omp_get_max_threads() of the calling thread (1 without OpenMP): the
    OpenMP limit that threadpoolctl's threadpool_limits(user_api="openmp"),
    omp_set_num_threads and, through a shared runtime, torch.set_num_threads
    set. cnnfast runs at most this many threads (cnnfast._threads)."""
    return cf_max_threads()


def compiler():
    return CF_COMPILER.decode()


def build_flags():
    """The extra compiler flags cnnfast's build used (OpenMP, optimisation, opt-ins)."""
    return CNNFAST_BUILD_FLAGS.decode()


def isa_level():
    """ISA level of the kernel tables this process runs: 4 (x86-64-v4,
    AVX-512), 3 (x86-64-v3, AVX2+FMA) or 0 (the baseline: what the build's
    flags enable, SSE2 on a default x86-64 build)."""
    return cf_isa_level()


def isa_dispatch():
    """True when the build holds every x86-64 ISA variant and picks one at
    run time (CNNFAST_ISA=3|0 caps it); False for a single-variant build
    (CNNFAST_NATIVE=1, CNNFAST_DISPATCH=0, non-x86 machines)."""
    return bool(CF_ISA_VARIANTS)


def isa_description():
    """One line for show_config and the benchmark report."""
    level = cf_isa_level()
    name = _ISA_NAMES.get(level, str(level))
    if CF_ISA_VARIANTS:
        return f"{name}, chosen at run time of x86-64-v4/v3/baseline"
    return f"{name}, the only variant built (no runtime dispatch)"


def team_size(int threads):
    """Threads the OpenMP runtime actually gives a region that asks for
    `threads`, the way every kernel asks (prange with num_threads): a
    runtime loaded by another library first (torch bundles its own libgomp)
    or its settings (OMP_THREAD_LIMIT, omp_set_dynamic) could give fewer."""
    cdef int i
    cdef int seen[1]  # written through a pointer: a prange scalar would be lastprivate
    seen[0] = 1
    if threads <= 1:
        return 1
    with nogil:
        for i in prange(threads, num_threads=threads, schedule='static'):
            if i == 0:
                (&seen[0])[0] = cf_team_size()
    return seen[0]
