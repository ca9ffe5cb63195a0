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
