/* The one ISA mechanism of every kernel family.
 *
 * A family's kernels are written once, dtype- and ISA-generic, in its
 * headers. cf_instantiate.h compiles them once per (ISA level, dtype): inside
 * `#pragma GCC target` regions for x86-64-v4 (AVX-512) and x86-64-v3
 * (AVX2+FMA), and once with the command line's flags (the baseline). Each
 * instantiation ends in a kernel table (the family's struct of function
 * pointers and tile sizes, as NNPACK's hwinfo), and the family's
 * *_kernels_for(dtype) picks the table of cf_isa_level() at run time.
 *
 * Why not GCC's target_clones: it lowers vector comparisons before cloning,
 * so every clone got scalar compare code (max pooling ran 5x slower), and a
 * clone's ISA cannot be chosen by the tests (CNNFAST_ISA below).
 *
 * Builds without the x86 dispatch (CNNFAST_NATIVE=1, CNNFAST_DISPATCH=0, any
 * non-x86 or non-GCC compiler) compile the baseline instantiation alone, and
 * its level is what the command line's flags enable. */
#ifndef CNNFAST_CF_ISA_H
#define CNNFAST_CF_ISA_H

#include <stdlib.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(CNNFAST_NO_DISPATCH)
#define CF_ISA_VARIANTS 1
#else
#define CF_ISA_VARIANTS 0
#endif

/* Level of the baseline instantiation: what the compiler flags enable. */
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#define CF_BASE_LEVEL 4
#elif defined(__AVX2__) && defined(__FMA__)
#define CF_BASE_LEVEL 3
#else
#define CF_BASE_LEVEL 0
#endif

/* ISA level of the kernels this process runs: 4, 3 or 0. */
static inline int cf_isa_level(void) {
#if CF_ISA_VARIANTS
    /* probed once per process; relaxed atomics make the benign first-call
     * race well defined */
    static int level = -1;
    int l = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (l < 0) {
        __builtin_cpu_init();
        l = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3
                                                                                          : 0;
        if (l < CF_BASE_LEVEL) l = CF_BASE_LEVEL;
        /* CNNFAST_ISA=3 or 0 caps the level, so the tests can run the AVX2
         * and baseline variants on an AVX-512 machine (never raises it) */
        const char *cap = getenv("CNNFAST_ISA");
        if (cap && (cap[0] == '0' || cap[0] == '3') && cap[1] == 0 && cap[0] - '0' < l)
            l = cap[0] - '0' < CF_BASE_LEVEL ? CF_BASE_LEVEL : cap[0] - '0';
        __atomic_store_n(&level, l, __ATOMIC_RELAXED);
    }
    return l;
#else
    return CF_BASE_LEVEL;
#endif
}

#endif
