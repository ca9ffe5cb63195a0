/* One group's view of a convolution, shared by every conv kernel family and
 * the driver (_conv.pyx). 3-D throughout: 1-D and 2-D use unit dims. */
#ifndef CNNFAST_CONV_GEOM_H
#define CNNFAST_CONV_GEOM_H

#include "cf_base.h"

typedef struct {
    cf_idx C, D, H, W;    /* input channels per group, input size */
    cf_idx K, OD, OH, OW; /* output channels per group, output size */
    cf_idx KD, KH, KW;    /* kernel size */
    cf_idx sd, sh, sw;    /* stride */
    cf_idx pd, ph, pw;    /* padding before; negative in the transposed geometry */
    cf_idx dd, dh, dw;    /* dilation */
} cf_geom;

/* Output channels computed together by the pixels-in-lanes direct kernels
 * (register blocking; the driver hands them blocks of at most CF_KB). */
#define CF_KB 8

#endif
