/* Shared C declarations of the pooling kernels: one plane's geometry and the
 * per-dtype instantiation of pool_kernels_impl.h. Everything is 64-bit. */
#ifndef CNNFAST_POOL_COMMON_H
#define CNNFAST_POOL_COMMON_H

#include <math.h>
#include <stdint.h>

#include "cf_base.h"

/* A 3-D pooling window over one (D, H, W) plane; 1-D and 2-D use unit dims.
 * The sliding-window kernels read a padded copy of the plane, (Dp, Hp, Wp),
 * holding the input at offset (pd, ph, pw) and the pad value elsewhere. */
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

/* Every kernel is compiled per dtype and per ISA level (see cf_base.h); the
 * plain names (max_pool_plane_f32, ...) are wrappers in pool_dispatch_impl.h
 * that call the variant for the running CPU. */
#if CF_ISA_VARIANTS
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
/* Flat plane index of a window's first tap inside the input (torch's index
 * for a window where nothing beats -inf). Plain inline: it is called from the
 * per-ISA regions, where GCC refuses to force-inline a default-target body. */
static inline cf_idx cf_first_inside_flat(cf_idx od, cf_idx oh, cf_idx ow, const cf_pool_geom *g) {
    return (cf_first_inside(od, g->sd, g->pd, g->dd, g->D) * g->H
            + cf_first_inside(oh, g->sh, g->ph, g->dh, g->H)) * g->W
           + cf_first_inside(ow, g->sw, g->pw, g->dw, g->W);
}

#define CF_T float
#define CF_SFX f32_v4
#define CF_ITYPE int
#include "pool_kernels_impl.h"
#undef CF_T
#undef CF_SFX
#undef CF_ITYPE
#define CF_T double
#define CF_SFX f64_v4
#define CF_ITYPE long long
#include "pool_kernels_impl.h"
#undef CF_T
#undef CF_SFX
#undef CF_ITYPE
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define CF_T float
#define CF_SFX f32_v3
#define CF_ITYPE int
#include "pool_kernels_impl.h"
#undef CF_T
#undef CF_SFX
#undef CF_ITYPE
#define CF_T double
#define CF_SFX f64_v3
#define CF_ITYPE long long
#include "pool_kernels_impl.h"
#undef CF_T
#undef CF_SFX
#undef CF_ITYPE
#pragma GCC pop_options
#endif

#define CF_T float
#define CF_SFX f32_base
#define CF_ITYPE int
#include "pool_kernels_impl.h"
#undef CF_SFX
#define CF_SFX f32
#include "pool_dispatch_impl.h"
#undef CF_T
#undef CF_SFX
#undef CF_ITYPE

#define CF_T double
#define CF_SFX f64_base
#define CF_ITYPE long long
#include "pool_kernels_impl.h"
#undef CF_SFX
#define CF_SFX f64
#include "pool_dispatch_impl.h"
#undef CF_T
#undef CF_SFX
#undef CF_ITYPE

#endif
