/* The type of the depthwise kernel table (conv_depthwise_kernels.h), on its
 * own: a driver of another module that is handed a table (the inverted-
 * residual block in _conv_nhwc.pyx, from _depthwise.kernel_table) includes
 * this and not the kernels, which compile in their own module only. */
#ifndef CNNFAST_CONV_DEPTHWISE_TABLE_H
#define CNNFAST_CONV_DEPTHWISE_TABLE_H

#include "cf_base.h"
#include "conv_geom.h"

typedef struct {
    int isa;                /* ISA level the table's kernels are compiled for */
    cf_idx vector_width;    /* lanes of one 64-byte vector */
    cf_idx tap_bytes;       /* bytes of one row-sum term (the *_planes kernels' work) */
    void (*forward_planes)(const void *x, const void *w, const void *bias, void *out,
                           cf_idx r0, cf_idx r1, const cf_geom *g, const void *zero,
                           void *taps);
    void (*backward_input_planes)(const void *go, const void *w, const void *bias, void *gx,
                                  cf_idx r0, cf_idx r1, cf_idx M, const cf_geom *g,
                                  void *taps);
    void (*backward_weight_planes)(const void *x, cf_idx x_nstride, const void *go,
                                   cf_idx go_nstride, void *gw, cf_idx r0, cf_idx r1,
                                   const cf_geom *g, const void *zero, void *acc);
    void (*forward_last)(const void *x, const void *wpk, const void *bpk, void *out, cf_idx r,
                         cf_idx c0, cf_idx c1, cf_idx M, const cf_geom *g, const void *zero,
                         void *work, const void *res, int clamp, double lo, double hi);
    /* the same from tap rows the caller found (the inverted-residual block's
     * ring of expanded rows): work begins with them, see conv_depthwise.h */
    void (*forward_last_rows)(void *work, const void *wpk, const void *bpk, void *out,
                              const void *res, cf_idx c0, cf_idx c1, cf_idx M, const cf_geom *g,
                              const void *zero, int clamp, double lo, double hi);
    void (*backward_input_last)(const void *go, const void *wpk, const void *bpk, void *gx,
                                cf_idx r, cf_idx c0, cf_idx c1, cf_idx M, const cf_geom *g,
                                void *work);
    void (*backward_weight_last)(const void *x, const void *go, void *part, cf_idx r0,
                                 cf_idx r1, cf_idx M, const cf_geom *g, const void *zero,
                                 void *px);
    /* conv_epilogue.h: a fused layer's residual add and clamp (ReLU, ReLU6, Hardtanh) */
    void (*epilogue)(void *out, const void *res, cf_idx rows, cf_idx row_stride, cf_idx len,
                     int clamp, double lo, double hi);
} cf_depthwise_kernels;

#endif
