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
    int pad_mode;         /* CF_PAD_*: what the padding holds (padded copies, vol2col) */
} cf_geom;

/* Padding modes (torch's padding_mode): what a position outside the input holds. */
#define CF_PAD_ZEROS 0
#define CF_PAD_REFLECT 1     /* mirrored about the edge element, which is not repeated */
#define CF_PAD_REPLICATE 2   /* the edge element */
#define CF_PAD_CIRCULAR 3    /* the input wrapped around */

/* The input position that position i of a padded dim of input size n holds
 * in mode `mode` (i itself inside [0, n)); -1 for zero padding. Every mode
 * is defined for any i (reflect and circular extend periodically), so the
 * slack of a padded buffer beyond the real padding is always a valid read. */
CF_INLINE cf_idx cf_pad_index(cf_idx i, cf_idx n, int mode) {
    if (i >= 0 && i < n) return i;
    switch (mode) {
    case CF_PAD_REFLECT: {
        if (i < 0 && -i < n) return -i;            /* the usual case: no division */
        if (i >= n && i < 2 * n - 1) return 2 * (n - 1) - i;
        if (n == 1) return 0;
        const cf_idx period = 2 * (n - 1);
        cf_idx r = i % period;
        if (r < 0) r += period;
        return r < n ? r : period - r;
    }
    case CF_PAD_REPLICATE:
        return i < 0 ? 0 : n - 1;
    case CF_PAD_CIRCULAR: {
        if (i < 0 && i >= -n) return i + n;
        if (i >= n && i < 2 * n) return i - n;
        cf_idx r = i % n;
        return r < 0 ? r + n : r;
    }
    default:
        return -1;
    }
}

/* Output channels computed together by the pixels-in-lanes direct kernels
 * (register blocking; the driver hands them blocks of at most CF_KB). */
#define CF_KB 8

#endif
