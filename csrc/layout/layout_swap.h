/* Layout copies: one square block of a (N, A, B) -> (N, B, A) transposition
 * (channels-first <-> channels-last). Plain C for every dtype the copies
 * move (float, double, int64 indices); not an ISA family: the loop is bound
 * by memory, and within a block both sides stay in L1. */
#ifndef CNNFAST_LAYOUT_SWAP_H
#define CNNFAST_LAYOUT_SWAP_H

#include <stddef.h>
#include <stdint.h>

#define CF_SWAP_BLOCK 32

/* dst[b*A + a] = src[a*B + b] for a in [a0, a0 + BLOCK), b in [b0, b0 + BLOCK),
 * clipped to A x B; src and dst are one image's (A, B) and (B, A) planes. */
#define CF_DEFINE_SWAP_BLOCK(NAME, T)                                                  \
    static void NAME(const T *restrict src, T *restrict dst, ptrdiff_t A, ptrdiff_t B,  \
                     ptrdiff_t a0, ptrdiff_t b0) {                                      \
        const ptrdiff_t a1 = a0 + CF_SWAP_BLOCK < A ? a0 + CF_SWAP_BLOCK : A;           \
        const ptrdiff_t b1 = b0 + CF_SWAP_BLOCK < B ? b0 + CF_SWAP_BLOCK : B;           \
        for (ptrdiff_t b = b0; b < b1; b++) {                                           \
            T *restrict d = dst + b * A;                                                \
            const T *restrict s = src + b;                                              \
            for (ptrdiff_t a = a0; a < a1; a++) d[a] = s[a * B];                        \
        }                                                                               \
    }

CF_DEFINE_SWAP_BLOCK(cf_swap_block_float, float)
CF_DEFINE_SWAP_BLOCK(cf_swap_block_double, double)
CF_DEFINE_SWAP_BLOCK(cf_swap_block_int64, int64_t)

#endif
