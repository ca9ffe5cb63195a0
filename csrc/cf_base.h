/* Shared C basics of every cnnfast kernel family: 64-bit index type, index
 * arithmetic and the runtime ISA dispatch attribute. */
#ifndef CNNFAST_CF_BASE_H
#define CNNFAST_CF_BASE_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef ptrdiff_t cf_idx;

/* The default build is portable: hot kernels are compiled several times and the
 * loader picks the best clone for the CPU it runs on (GCC function multiversioning).
 * A native build (CNNFAST_NATIVE=1) already targets the host and needs no clones. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(CNNFAST_NO_DISPATCH)
#define CF_DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CF_DISPATCH
#endif

#define CF_INLINE static inline __attribute__((always_inline))

/* Manual ISA dispatch, for kernels whose vector comparisons GCC would lower to
 * scalar code under target_clones (it lowers them before cloning): the kernel
 * header is compiled three times, inside `#pragma GCC target` regions for
 * x86-64-v4 and -v3 and once for the baseline, and a wrapper picks one per
 * call from cf_isa_level() (4, 3 or 0). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(CNNFAST_NO_DISPATCH)
#define CF_ISA_VARIANTS 1
static inline int cf_isa_level(void) {
    /* probed once per process (kernels call this per plane); relaxed atomics
     * make the benign first-call race well defined */
    static int level = -1;
    int l = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (l < 0) {
        __builtin_cpu_init();
        l = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 0;
        /* CNNFAST_ISA=3 or 0 caps the level, so the tests can run the AVX2
         * and baseline variants on an AVX-512 machine (never raises it) */
        const char *cap = getenv("CNNFAST_ISA");
        if (cap && (cap[0] == '0' || cap[0] == '3') && cap[1] == 0 && cap[0] - '0' < l)
            l = cap[0] - '0';
        __atomic_store_n(&level, l, __ATOMIC_RELAXED);
    }
    return l;
}
#else
#define CF_ISA_VARIANTS 0
static inline int cf_isa_level(void) { return 0; }
#endif


CF_INLINE cf_idx cf_min(cf_idx a, cf_idx b) { return a < b ? a : b; }
CF_INLINE cf_idx cf_max(cf_idx a, cf_idx b) { return a > b ? a : b; }

/* Floor division for b > 0 and any sign of a (C's '/' truncates toward zero). */
CF_INLINE cf_idx cf_floor_div(cf_idx a, cf_idx b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}
CF_INLINE cf_idx cf_ceil_div(cf_idx a, cf_idx b) { return -cf_floor_div(-a, b); }

/* Taps t in [*lo, *hi) of a size-k kernel whose input position o*s - p + t*d
 * lies inside [0, n). */
CF_INLINE void cf_tap_range(cf_idx o, cf_idx s, cf_idx p, cf_idx d, cf_idx k,
                            cf_idx n, cf_idx *lo, cf_idx *hi) {
    const cf_idx base = o * s - p;
    *lo = cf_max(0, cf_ceil_div(-base, d));
    *hi = cf_min(k, cf_floor_div(n - 1 - base, d) + 1);
    if (*hi < *lo) *hi = *lo;
}

/* Outputs o in [*lo, *hi) of [0, m) whose input position o*s + t*d - p, for a
 * fixed tap t, lies inside [0, n). */
CF_INLINE void cf_out_range(cf_idx t, cf_idx s, cf_idx p, cf_idx d, cf_idx m,
                            cf_idx n, cf_idx *lo, cf_idx *hi) {
    const cf_idx off = t * d - p;
    *lo = cf_max(0, cf_ceil_div(-off, s));
    *hi = cf_min(m, cf_floor_div(n - 1 - off, s) + 1);
    if (*hi < *lo) *hi = *lo;
}

#endif
