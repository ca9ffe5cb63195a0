# cython: language_level=3
"""What the compiled extension was built with and what the CPU offers."""
from _omp cimport cf_openmp_enabled, cf_max_threads


cdef extern from "cf_base.h":
    int cf_isa_level()

cdef extern from *:
    """
    static const char *cf_simd_level(void) {
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) return "AVX-512";
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "AVX2+FMA";
        if (__builtin_cpu_supports("sse4.2")) return "SSE4.2";
        return "SSE2";
    #elif defined(__aarch64__)
        return "NEON";
    #else
        return "generic";
    #endif
    }
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
    const char *cf_simd_level()
    const char *CF_COMPILER
    const char *CNNFAST_BUILD_FLAGS


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cf_openmp_enabled())


def openmp_max_threads():
    return cf_max_threads()


def simd_level():
    """Widest vector ISA the CPU offers to the dispatched kernels."""
    return cf_simd_level().decode()


def compiler():
    return CF_COMPILER.decode()


def build_flags():
    """The extra compiler flags cnnfast's build used (OpenMP, optimisation, opt-ins)."""
    return CNNFAST_BUILD_FLAGS.decode()


def isa_level():
    """ISA level the manually dispatched kernels run: 4 (x86-64-v4, AVX-512),
    3 (x86-64-v3, AVX2+FMA) or 0 (baseline); CNNFAST_ISA=3|0 caps it."""
    return cf_isa_level()
