/* The elementwise kernels (batch norm, activations, SGD's update) as one table per (ISA
 * level, dtype), as conv_kernels.h does for convolution. Scalars of the
 * table's dtype travel as double (exact for both dtypes) and are rounded to
 * it inside. Every kernel writes only the channel or span its caller hands
 * it: the driver (_elementwise.pyx) gives each to exactly one thread. */
#ifndef CNNFAST_ELEMENTWISE_KERNELS_H
#define CNNFAST_ELEMENTWISE_KERNELS_H

#include "cf_base.h"
#include "cf_isa.h"

typedef struct {
    int isa;                 /* ISA level the table's kernels are compiled for */
    cf_idx vector_width;     /* lanes of one 64-byte vector */
    /* norm_batch.h */
    void (*bn_channel_stats)(const void *x, cf_idx N, cf_idx nstride, cf_idx S, double *mean,
                             double *var);
    void (*channel_affine)(const void *x, void *y, cf_idx S, double scale, double shift);
    /* relu_y: the output of a ReLU right after the batch norm (its mask
     * applied to go), or NULL */
    void (*bn_channel_grad_sums)(const void *go, const void *relu_y, const void *x, cf_idx N,
                                 cf_idx nstride, cf_idx S, double mean, double *sum_go,
                                 double *sum_gox);
    void (*bn_grad_input_plane)(const void *go, const void *relu_y, const void *x, void *gx,
                                cf_idx S, double a, double b, double c, double mean);
    /* activation_relu.h */
    void (*clamp)(const void *x, void *y, cf_idx n, double lo, double hi);
    void (*clamp_backward)(const void *go, const void *x, void *gx, cf_idx n, double lo,
                           double hi);
    void (*relu_backward)(const void *go, const void *y, void *gx, cf_idx n);
    void (*add_relu)(const void *a, const void *b, void *y, cf_idx n);
    void (*tanh_values)(const void *x, void *y, cf_idx n);
    /* optim_sgd.h */
    void (*sgd_update)(void *p, const void *g, void *buf, cf_idx n, double lr, double momentum,
                       double dampening, double weight_decay, int nesterov, int first);
    /* optim_adam.h */
    void (*adam_update)(void *p, const void *g, void *m, void *v, cf_idx n, double beta1,
                        double beta2, double eps, double weight_decay, double step_size,
                        double bc2_sqrt);
    /* norm_batch_last.h: channels-last x seen as (rows, C); the reductions
     * write one block's per-channel sums (double) to s1 and s2 */
    void (*bnl_stats_rows)(const void *x, cf_idx rows, cf_idx C, const double *shift,
                           double *s1, double *s2);
    void (*bnl_affine_rows)(const void *x, void *y, cf_idx rows, cf_idx C, const void *scale,
                            const void *shift);
    void (*bnl_grad_sums_rows)(const void *go, const void *relu_y, const void *x, cf_idx rows,
                               cf_idx C, const double *mean, double *s1, double *s2);
    void (*bnl_grad_input_rows)(const void *go, const void *relu_y, const void *x, void *gx,
                                cf_idx rows, cf_idx C, const void *coef);
} cf_elementwise_kernels;

#define CF_FAMILY "elementwise_family.h"
#include "cf_instantiate.h"
#undef CF_FAMILY

CF_DEFINE_TABLE_FOR(cf_elementwise_kernels, cf_elementwise_kernels_for, cf_elementwise_table)

#endif
