/* One plane's pooling geometry, shared by every pooling kernel family and
 * the driver (_pool.pyx). 3-D throughout: 1-D and 2-D use unit dims. */
#ifndef CNNFAST_POOL_GEOM_H
#define CNNFAST_POOL_GEOM_H

#include <math.h>
#include <stdint.h>

#include "cf_base.h"

/* A 3-D pooling window over one (D, H, W) plane. The sliding-window kernels
 * read a padded copy of the plane, (Dp, Hp, Wp), holding the input at offset
 * (pd, ph, pw) and the pad value elsewhere. */
typedef struct {
    cf_idx D, H, W;       /* input plane */
    cf_idx OD, OH, OW;    /* output plane */
    cf_idx KD, KH, KW;    /* window */
    cf_idx sd, sh, sw;    /* stride */
    cf_idx pd, ph, pw;    /* padding before */
    cf_idx dd, dh, dw;    /* dilation (1 for average pooling) */
    cf_idx Dp, Hp, Wp;    /* padded buffer */
} cf_pool_geom;

/* Position (within [0, n)) of the first window tap that lies inside the
 * input: torch's "start, stepped past the padding" rule, clamped for a
 * window that lies wholly in the padding (its value is -inf; the index must
 * still be valid to read). */
CF_INLINE cf_idx cf_first_inside(cf_idx o, cf_idx s, cf_idx p, cf_idx d, cf_idx n) {
    cf_idx start = o * s - p;
    if (start < 0) start += cf_ceil_div(-start, d) * d;
    return start < n ? start : n - 1;
}

/* Flat plane index of a window's first tap inside the input (torch's index
 * for a window where nothing beats -inf). Compiled for the default target,
 * like everything outside the ISA regions, so every variant may call it. */
static inline cf_idx cf_first_inside_flat(cf_idx od, cf_idx oh, cf_idx ow, const cf_pool_geom *g) {
    return (cf_first_inside(od, g->sd, g->pd, g->dd, g->D) * g->H
            + cf_first_inside(oh, g->sh, g->ph, g->dh, g->H)) * g->W
           + cf_first_inside(ow, g->sw, g->pw, g->dw, g->W);
}

#endif
