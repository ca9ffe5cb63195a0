/* The pooling kernels as one table per (ISA level, dtype), as
 * conv_kernels.h does for convolution. Every kernel works on one (D, H, W)
 * plane (global_avg_planes: on a range of them): the driver (_pool.pyx) hands
 * each plane to exactly one thread, so nothing here is shared or raced. */
#ifndef CNNFAST_POOL_KERNELS_H
#define CNNFAST_POOL_KERNELS_H

#include "cf_base.h"
#include "cf_isa.h"
#include "pool_geom.h"

typedef struct {
    int isa;                 /* ISA level the table's kernels are compiled for */
    cf_idx vector_width;     /* lanes of one 64-byte vector */
    /* pool_copy.h */
    void (*pool_copy_interior)(const void *x, void *buf, const cf_pool_geom *g);
    /* pool_max.h */
    void (*max_pool_plane)(const void *buf, void *out, int64_t *idx, const int64_t *tap_offset,
                           const cf_pool_geom *g);
    cf_idx (*max_pool_backward_plane)(const void *go, const int64_t *idx, cf_idx n_out,
                                      void *gx, cf_idx plane);
    /* pool_in_place.h */
    void (*max_pool_plane_inplace)(const void *x, void *out, int64_t *idx,
                                   const int64_t *tap_offset, cf_idx lo, cf_idx hi,
                                   const cf_pool_geom *g);
    void (*avg_pool_plane_inplace)(const void *x, void *out, const void *dcount,
                                   const void *hcount, const void *wcount, cf_idx lo, cf_idx hi,
                                   const cf_pool_geom *g);
    /* pool_avg.h */
    void (*avg_pool_plane)(const void *buf, void *out, const void *dcount, const void *hcount,
                           const void *wcount, const cf_pool_geom *g);
    void (*avg_pool_plane_narrow)(const void *x, void *out, const void *dcount,
                                  const void *hcount, const void *wcount,
                                  const cf_pool_geom *g);
    void (*avg_pool_backward_plane)(const void *go, void *gbuf, void *spread, void *gx,
                                    const void *dcount, const void *hcount, const void *wcount,
                                    const cf_pool_geom *g);
    /* pool_adaptive.h */
    /* one (D, H, W) volume; windows [ds, de) x [hs, he) x [ws, we) per output */
    void (*adaptive_avg_plane)(const void *x, void *out, cf_idx D, cf_idx H, cf_idx W,
                               cf_idx OD, cf_idx OH, cf_idx OW, const int64_t *ds,
                               const int64_t *de, const int64_t *hs, const int64_t *he,
                               const int64_t *ws, const int64_t *we);
    /* planes [p0, p1) of n values each to their means (adaptive to 1x1x1) */
    void (*global_avg_planes)(const void *x, void *out, cf_idx p0, cf_idx p1, cf_idx n);
    void (*adaptive_max_plane)(const void *x, void *out, int64_t *idx, cf_idx H, cf_idx W,
                               cf_idx OD, cf_idx OH, cf_idx OW, const int64_t *ds,
                               const int64_t *de, const int64_t *hs, const int64_t *he,
                               const int64_t *ws, const int64_t *we);
    void (*adaptive_avg_backward_plane)(const void *go, void *gx, cf_idx D, cf_idx H, cf_idx W,
                                        cf_idx OD, cf_idx OH, cf_idx OW, const int64_t *ds,
                                        const int64_t *de, const int64_t *hs,
                                        const int64_t *he, const int64_t *ws,
                                        const int64_t *we);
} cf_pool_kernels;

#define CF_FAMILY "pool_family.h"
#include "cf_instantiate.h"
#undef CF_FAMILY

CF_DEFINE_TABLE_FOR(cf_pool_kernels, cf_pool_kernels_for, cf_pool_table)

#endif
