/* Batch normalisation of channels-last activations, in place of the layout
 * copies to and from channels-first planes that norm_batch.h needs (a
 * MobileNetV2 training step spent ~119 ms in them at batch 16, 112x112).
 * A family header: compiled once per ISA level and dtype through its bundle
 * (elementwise_kernels.h), with CF_T and FN() defined.
 *
 * x is seen as (rows, C): rows = N * prod(spatial), the C channels of one
 * position contiguous, so a channel is a column. Every kernel walks a block
 * of whole rows with the channels in the inner loop: plain loops over c that
 * GCC vectorises (the channels in the vector lanes, any C, the tail
 * included). The reductions write a block's per-channel sums (in double)
 * to the block's own slot; the driver (_elementwise.pyx) adds the slots in
 * block order, so the result depends on the block size only, never on the
 * thread count. Within a block each channel adds its rows in row order. */

/* Over `rows` rows: s1[c] = sum of (x - shift[c]) and s2[c] = sum of
 * (x - shift[c])^2 per channel. shift is the channel's first value (as
 * norm_batch.h's bn_channel_stats), so the variance is not the difference
 * of two large sums when |mean| >> std. Four rows per sweep over the
 * channels: the accumulators are loaded and stored once per four rows
 * (each channel still adds its rows one by one, in row order). */
static void FN(bnl_stats_rows)(const void *x_, cf_idx rows, cf_idx C,
                               const double *restrict shift, double *restrict s1,
                               double *restrict s2) {
    const CF_T *x = (const CF_T *)x_;
    for (cf_idx c = 0; c < C; c++) s1[c] = s2[c] = 0;
    cf_idx r = 0;
    for (; r + 4 <= rows; r += 4) {
        const CF_T *restrict x0 = x + r * C;
        const CF_T *restrict x1 = x0 + C;
        const CF_T *restrict x2 = x1 + C;
        const CF_T *restrict x3 = x2 + C;
        for (cf_idx c = 0; c < C; c++) {
            const double d0 = (double)x0[c] - shift[c], d1 = (double)x1[c] - shift[c];
            const double d2 = (double)x2[c] - shift[c], d3 = (double)x3[c] - shift[c];
            double a = s1[c], b = s2[c];
            a += d0; b += d0 * d0;
            a += d1; b += d1 * d1;
            a += d2; b += d2 * d2;
            a += d3; b += d3 * d3;
            s1[c] = a;
            s2[c] = b;
        }
    }
    for (; r < rows; r++) {
        const CF_T *restrict xr = x + r * C;
        for (cf_idx c = 0; c < C; c++) {
            const double d = (double)xr[c] - shift[c];
            s1[c] += d;
            s2[c] += d * d;
        }
    }
}

/* y = x * scale[c] + shift[c] along `rows` rows; scale and shift already in
 * CF_T (rounded from double, as norm_batch.h's channel_affine), so each
 * element is computed as the channels-first kernel computes it. */
static void FN(bnl_affine_rows)(const void *x_, void *y_, cf_idx rows, cf_idx C,
                                const void *scale_, const void *shift_) {
    const CF_T *restrict scale = (const CF_T *)scale_;
    const CF_T *restrict shift = (const CF_T *)shift_;
    for (cf_idx r = 0; r < rows; r++) {
        const CF_T *restrict x = (const CF_T *)x_ + r * C;
        CF_T *restrict y = (CF_T *)y_ + r * C;
        for (cf_idx c = 0; c < C; c++) y[c] = x[c] * scale[c] + shift[c];
    }
}

/* The gradient's reductions over `rows` rows: s1[c] = sum of go and
 * s2[c] = sum of go * (x - mean[c]) in double; go is taken as 0 where
 * relu_y <= 0 (the output of a ReLU right after the batch norm, or NULL:
 * torch's threshold_backward, as norm_batch.h's cf_relu_masked). */
static void FN(bnl_grad_sums_rows)(const void *go_, const void *relu_y_, const void *x_,
                                   cf_idx rows, cf_idx C, const double *restrict mean,
                                   double *restrict s1, double *restrict s2) {
    const CF_T *go = (const CF_T *)go_;
    const CF_T *relu_y = (const CF_T *)relu_y_;
    const CF_T *x = (const CF_T *)x_;
    for (cf_idx c = 0; c < C; c++) s1[c] = s2[c] = 0;
    for (cf_idx r = 0; r < rows; r++) {
        const CF_T *restrict gr = go + r * C;
        const CF_T *restrict xr = x + r * C;
        if (relu_y) {
            /* explicit vectors: GCC kept the masked loop scalar and
             * branchy (8x the pass without a ReLU) */
            const CF_T *restrict yr = relu_y + r * C;
            cf_idx c = 0;
            for (; c + CF_VW <= C; c += CF_VW) {
                CF_V gv, xv;
                memcpy(&gv, gr + c, sizeof gv);
                memcpy(&xv, xr + c, sizeof xv);
                const FN(cf_dvec) gd = __builtin_convertvector(FN(cf_relu_masked)(gv, yr + c),
                                                               FN(cf_dvec));
                FN(cf_dvec) a1, a2, m;
                memcpy(&a1, s1 + c, sizeof a1);
                memcpy(&a2, s2 + c, sizeof a2);
                memcpy(&m, mean + c, sizeof m);
                a1 += gd;
                a2 += gd * (__builtin_convertvector(xv, FN(cf_dvec)) - m);
                memcpy(s1 + c, &a1, sizeof a1);
                memcpy(s2 + c, &a2, sizeof a2);
            }
            for (; c < C; c++) {
                const CF_T g = FN(cf_relu_masked1)(gr[c], yr + c);
                s1[c] += g;
                s2[c] += (double)g * ((double)xr[c] - mean[c]);
            }
        } else {
            for (cf_idx c = 0; c < C; c++) {
                s1[c] += gr[c];
                s2[c] += (double)gr[c] * ((double)xr[c] - mean[c]);
            }
        }
    }
}

/* gx = a * go + b * (x - mean) + c along `rows` rows, coef (4, C) in CF_T:
 * rows a, b, c, mean (as norm_batch.h's bn_grad_input_plane), go masked
 * by relu_y <= 0 unless NULL. */
static void FN(bnl_grad_input_rows)(const void *go_, const void *relu_y_, const void *x_,
                                    void *gx_, cf_idx rows, cf_idx C, const void *coef_) {
    const CF_T *restrict ca = (const CF_T *)coef_;
    const CF_T *restrict cb = ca + C;
    const CF_T *restrict cc = cb + C;
    const CF_T *restrict cm = cc + C;
    for (cf_idx r = 0; r < rows; r++) {
        const CF_T *restrict go = (const CF_T *)go_ + r * C;
        const CF_T *restrict x = (const CF_T *)x_ + r * C;
        CF_T *restrict gx = (CF_T *)gx_ + r * C;
        if (relu_y_) {
            const CF_T *restrict ry = (const CF_T *)relu_y_ + r * C;
            cf_idx c = 0;
            for (; c + CF_VW <= C; c += CF_VW) {   /* explicit vectors, as above */
                CF_V g, xv, a, b, cv, m;
                memcpy(&g, go + c, sizeof g);
                memcpy(&xv, x + c, sizeof xv);
                memcpy(&a, ca + c, sizeof a);
                memcpy(&b, cb + c, sizeof b);
                memcpy(&cv, cc + c, sizeof cv);
                memcpy(&m, cm + c, sizeof m);
                const CF_V r_ = a * FN(cf_relu_masked)(g, ry + c) + b * (xv - m) + cv;
                memcpy(gx + c, &r_, sizeof r_);
            }
            for (; c < C; c++)
                gx[c] = ca[c] * FN(cf_relu_masked1)(go[c], ry + c) + cb[c] * (x[c] - cm[c])
                        + cc[c];
        } else {
            for (cf_idx c = 0; c < C; c++)
                gx[c] = ca[c] * go[c] + cb[c] * (x[c] - cm[c]) + cc[c];
        }
    }
}
