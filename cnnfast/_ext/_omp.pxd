# The only place that knows about OpenMP: every kernel module builds with or
# without it (the build probes the compiler and drops -fopenmp if it fails).
# Avoids `cimport openmp`, which includes <omp.h> unconditionally.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int cf_openmp_enabled(void) { return 1; }
    static int cf_thread_num(void) { return omp_get_thread_num(); }
    static int cf_max_threads(void) { return omp_get_max_threads(); }
    static int cf_team_size(void) { return omp_get_num_threads(); }
    #else
    static int cf_openmp_enabled(void) { return 0; }
    static int cf_thread_num(void) { return 0; }
    static int cf_max_threads(void) { return 1; }
    static int cf_team_size(void) { return 1; }
    #endif
    """
    int cf_openmp_enabled() noexcept nogil
    int cf_thread_num() noexcept nogil
    int cf_max_threads() noexcept nogil
    int cf_team_size() noexcept nogil
