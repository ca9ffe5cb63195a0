/* The depthwise convolution kernels (conv_depthwise.h) as one table per
 * (ISA level, dtype), looked up with cf_depthwise_kernels_for(is_double) by
 * the driver (_depthwise.pyx). A table of its own, beside cf_conv_kernels:
 * the depthwise driver is a module of its own and compiles only these. Data
 * pointers are void * holding CF_T of the table's dtype; every kernel writes
 * only the rows, planes or partial sums its caller hands it. */
#ifndef CNNFAST_CONV_DEPTHWISE_KERNELS_H
#define CNNFAST_CONV_DEPTHWISE_KERNELS_H

#include <stdint.h>

#include "cf_base.h"
#include "cf_isa.h"
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

#define CF_FAMILY "conv_depthwise_family.h"
#include "cf_instantiate.h"
#undef CF_FAMILY

CF_DEFINE_TABLE_FOR(cf_depthwise_kernels, cf_depthwise_kernels_for, cf_depthwise_table)

#endif
