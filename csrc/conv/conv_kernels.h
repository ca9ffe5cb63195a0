/* The convolution kernels as one table per (ISA level, dtype): the table
 * type, each family compiled per instantiation (cf_instantiate.h,
 * conv_family.h) and the lookup cf_conv_kernels_for(is_double) that the
 * driver (_conv.pyx) calls. Each kernel's signature is stated here once for
 * both dtypes: data pointers are void * and hold CF_T of the table's dtype.
 * Every kernel writes only memory its caller owns (see _conv.pyx for the
 * partitioning). */
#ifndef CNNFAST_CONV_KERNELS_H
#define CNNFAST_CONV_KERNELS_H

#include "cf_base.h"
#include "cf_isa.h"
#include "conv_geom.h"

typedef struct {
    int isa;                 /* ISA level the table's kernels are compiled for */
    cf_idx vector_width;     /* lanes of one 64-byte vector */
    cf_idx gemm_mr, gemm_nr; /* packed GEMM register tile: rows x columns */
    cf_idx lanes_block;      /* output channels per block of the channels-in-lanes kernel */
    /* conv_pad.h */
    void (*pad_plane)(const void *src, cf_idx D, cf_idx H, cf_idx W, void *dst, cf_idx Dp,
                      cf_idx Hp, cf_idx Wp, cf_idx pd, cf_idx ph, cf_idx pw, int mode);
    void (*fold_plane)(const void *gpad, cf_idx Dp, cf_idx Hp, cf_idx Wp, void *gx, cf_idx D,
                       cf_idx H, cf_idx W, cf_idx pd, cf_idx ph, cf_idx pw, int mode);
    /* conv_direct.h */
    void (*direct_forward_row)(const void *x, const void *w, const void *bias, void *out,
                               cf_idx nb, cf_idx od, cf_idx oh, const cf_geom *g);
    /* conv_direct_lanes.h */
    void (*direct_forward_cv)(const void *x, const void *w, const void *bias, void *out,
                              cf_idx q0, cf_idx q1, cf_idx nk, const cf_geom *g);
    void (*direct_forward_cv_batch)(const void *xt, cf_idx N, const void *w, const void *bias,
                                    void *out, cf_idx out_nstride, cf_idx p0, cf_idx p1,
                                    cf_idx nk, const cf_geom *g);
    double (*direct_cv_waste)(cf_idx nk, cf_idx N, const cf_geom *g, int batch);
    int (*direct_cv_pack)(const void *w, const void *bias, cf_idx K, cf_idx R, void *dst,
                          void *bias_dst);
    /* conv_weight_grad.h, conv_bias_grad.h */
    void (*direct_backward_weight)(const void *x, cf_idx x_nstride, const void *go,
                                   cf_idx go_nstride, cf_idx gow, cf_idx N, cf_idx nb, void *gw,
                                   const cf_geom *g);
    double (*channel_sum)(const void *a, cf_idx N, cf_idx nstride, cf_idx P);
    /* conv_im2col.h */
    void (*vol2col)(const void *x, void *col, cf_idx p0, cf_idx cnt, const cf_geom *g);
    void (*col2vol)(const void *col, void *gx, cf_idx p0, cf_idx cnt, const cf_geom *g);
    /* gemm_packed.h */
    void (*gemm_pack_rows)(const void *src, cf_idx m, cf_idx depth, cf_idx row_stride,
                           cf_idx depth_stride, void *dst);
    void (*gemm_pack_columns)(const void *x, const void *x_end, void *dst, cf_idx p0,
                              cf_idx cnt, cf_idx *runs, const cf_geom *g);
    void (*gemm_packed)(const void *apk, const void *bpk, cf_idx m, cf_idx n, cf_idx depth,
                        void *c, cf_idx ldc, const void *bias, int accumulate, cf_idx kc);
    void (*gemm_in_place)(const void *a, cf_idx rs, cf_idx ks, const void *bpk, cf_idx m,
                          cf_idx n, cf_idx depth, void *c, cf_idx ldc, const void *bias,
                          int accumulate, cf_idx kc, void *work);
    /* conv_epilogue.h */
    void (*conv_epilogue)(void *out, const void *res, cf_idx rows, cf_idx row_stride,
                          cf_idx len, int clamp, double lo, double hi);
    /* conv_winograd.h */
    int (*winograd_weights)(const void *w, cf_idx K, cf_idx C, cf_idx ka, cf_idx kb, void *u);
    int (*winograd_forward_block)(const void *xp, cf_idx x_nstride, const void *u,
                                  const void *bias, void *out, cf_idx out_nstride, cf_idx t0,
                                  cf_idx nt, cf_idx k0, cf_idx nk, void *v, void *m, void *work,
                                  cf_idx kc, const cf_geom *g);
} cf_conv_kernels;

#define CF_FAMILY "conv_family.h"
#include "cf_instantiate.h"
#undef CF_FAMILY

CF_DEFINE_TABLE_FOR(cf_conv_kernels, cf_conv_kernels_for, cf_conv_table)

#endif
