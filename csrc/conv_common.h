/* Shared C helpers for the convolution kernels: geometry, index arithmetic and
 * the runtime ISA dispatch attribute. Everything is 64-bit (ptrdiff_t). */
#ifndef CNNFAST_CONV_COMMON_H
#define CNNFAST_CONV_COMMON_H

#include "cf_base.h"

/* One group's view of a 3-D convolution (1-D and 2-D use unit dims). */
typedef struct {
    cf_idx C, D, H, W;    /* input channels per group, input size */
    cf_idx K, OD, OH, OW; /* output channels per group, output size */
    cf_idx KD, KH, KW;    /* kernel size */
    cf_idx sd, sh, sw;    /* stride */
    cf_idx pd, ph, pw;    /* padding before; negative in the transposed geometry */
    cf_idx dd, dh, dw;    /* dilation */
} cf_geom;

/* Output channels computed together by the direct kernels (register blocking). */
#define CF_KB 8

/* ISA level of the code the dispatched kernels run (4: AVX-512, 3: AVX2, 0):
 * the packed GEMM sizes its register tile by it. */
static inline int cf_gemm_level(void) {
#if CF_ISA_VARIANTS
    return cf_isa_level();
#elif defined(__AVX512F__)
    return 4;
#elif defined(__AVX2__)
    return 3;
#else
    return 0;
#endif
}

/* Instantiate the dtype-generic kernels once per dtype. */
#define CF_T float
#define CF_SFX f32
#define CF_ITYPE int
#include "conv_kernels_impl.h"
#undef CF_T
#undef CF_SFX
#undef CF_ITYPE

#define CF_T double
#define CF_SFX f64
#define CF_ITYPE long long
#include "conv_kernels_impl.h"
#undef CF_T
#undef CF_SFX
#undef CF_ITYPE

#endif
