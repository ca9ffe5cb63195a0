/* Shared C basics of every cnnfast kernel family: the 64-bit index type and
 * index arithmetic. Compiled for the default target (no ISA pragma), so every
 * ISA variant of a kernel can inline these. */
#ifndef CNNFAST_CF_BASE_H
#define CNNFAST_CF_BASE_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef ptrdiff_t cf_idx;

#define CF_INLINE static inline __attribute__((always_inline))

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
