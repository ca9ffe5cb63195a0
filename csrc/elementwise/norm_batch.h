/* Batch normalisation: per-channel statistics, the per-channel affine map
 * (normalise with any statistics, or a folded scale/shift) and the
 * training-mode gradient's two passes.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (elementwise_kernels.h), with CF_T, FN() and cf_vector.h defined.
 *
 * A channel is N planes of S elements, nstride apart (x viewed as (N, C, S)).
 * Sums are accumulated in double, in a fixed order (deterministic). */

typedef double FN(cf_dvec) __attribute__((vector_size(8 * CF_VW)));

/* Mean and biased variance of one channel in one pass. The values are
 * shifted by the channel's first value before summing, so the variance is
 * not the difference of two large sums when |mean| >> std. A NaN or an
 * infinity makes both NaN (as torch's batch statistics). */
static void FN(bn_channel_stats)(const void *x_, cf_idx N, cf_idx nstride, cf_idx S,
                                 double *mean, double *var) {
    const CF_T *x = (const CF_T *)x_;
    const cf_idx full = S / CF_VW * CF_VW, m = N * S;
    if (m == 0) { *mean = 0; *var = 1; return; }
    const double shift = x[0];
    const FN(cf_dvec) sh = (FN(cf_dvec)){0} + shift;
    FN(cf_dvec) s1 = {0}, s2 = {0};
    double r1 = 0, r2 = 0;
    for (cf_idx n = 0; n < N; n++) {
        const CF_T *row = x + n * nstride;
        for (cf_idx p = 0; p < full; p += CF_VW) {
            CF_V v;
            memcpy(&v, row + p, sizeof v);
            const FN(cf_dvec) d = __builtin_convertvector(v, FN(cf_dvec)) - sh;
            s1 += d;
            s2 += d * d;
        }
        for (cf_idx p = full; p < S; p++) {
            const double d = (double)row[p] - shift;
            r1 += d;
            r2 += d * d;
        }
    }
    double t1 = r1, t2 = r2;
    for (int j = 0; j < (int)CF_VW; j++) { t1 += s1[j]; t2 += s2[j]; }
    const double dm = t1 / (double)m;
    double v = t2 / (double)m - dm * dm;
    if (v < 0) v = 0; /* rounding; NaN stays NaN */
    *mean = shift + dm;
    *var = v;
}

/* y = x * scale + shift over one plane of S elements. */
static void FN(channel_affine)(const void *x_, void *y_, cf_idx S, double scale_,
                               double shift_) {
    const CF_T *x = (const CF_T *)x_;
    const CF_T scale = (CF_T)scale_, shift = (CF_T)shift_;
    CF_T *y = (CF_T *)y_;
    for (cf_idx p = 0; p < S; p++) y[p] = x[p] * scale + shift;
}

/* go, or with a ReLU after the batch norm (relu_y: that ReLU's output, else
 * NULL) the gradient through it: 0 where relu_y <= 0 (torch's
 * threshold_backward), so BatchNorm + ReLU backward is one pair of passes. */
CF_INLINE CF_V FN(cf_relu_masked)(CF_V g, const CF_T *relu_y) {
    if (!relu_y) return g;
    CF_V y;
    memcpy(&y, relu_y, sizeof y);
    const CF_M off = y <= FN(cf_splat)(0);
    return (CF_V)((CF_M)g & ~off);
}

CF_INLINE CF_T FN(cf_relu_masked1)(CF_T g, const CF_T *relu_y) {
    return relu_y && *relu_y <= 0 ? (CF_T)0 : g;
}

/* The gradient's reductions over one channel: sum of go and of
 * go * (x - mean), in double (go masked by relu_y, see above). */
static void FN(bn_channel_grad_sums)(const void *go_, const void *relu_y_, const void *x_,
                                     cf_idx N, cf_idx nstride, cf_idx S, double mean,
                                     double *sum_go, double *sum_gox) {
    const CF_T *go = (const CF_T *)go_;
    const CF_T *relu_y = (const CF_T *)relu_y_;
    const CF_T *x = (const CF_T *)x_;
    const cf_idx full = S / CF_VW * CF_VW;
    const FN(cf_dvec) mv = (FN(cf_dvec)){0} + mean;
    FN(cf_dvec) s1 = {0}, s2 = {0};
    double r1 = 0, r2 = 0;
    for (cf_idx n = 0; n < N; n++) {
        const CF_T *gr = go + n * nstride, *xr = x + n * nstride;
        const CF_T *yr = relu_y ? relu_y + n * nstride : NULL;
        for (cf_idx p = 0; p < full; p += CF_VW) {
            CF_V g, v;
            memcpy(&g, gr + p, sizeof g);
            memcpy(&v, xr + p, sizeof v);
            g = FN(cf_relu_masked)(g, yr ? yr + p : NULL);
            const FN(cf_dvec) gd = __builtin_convertvector(g, FN(cf_dvec));
            s1 += gd;
            s2 += gd * (__builtin_convertvector(v, FN(cf_dvec)) - mv);
        }
        for (cf_idx p = full; p < S; p++) {
            const CF_T g = FN(cf_relu_masked1)(gr[p], yr ? yr + p : NULL);
            r1 += g;
            r2 += (double)g * ((double)xr[p] - mean);
        }
    }
    double t1 = r1, t2 = r2;
    for (int j = 0; j < (int)CF_VW; j++) { t1 += s1[j]; t2 += s2[j]; }
    *sum_go = t1;
    *sum_gox = t2;
}

/* gx = a * go + b * (x - mean) + c over one plane of S elements: the
 * training-mode input gradient with a = gamma * invstd,
 * b = -a * invstd^2 * sum_gox / m, c = -a * sum_go / m. */
static void FN(bn_grad_input_plane)(const void *go_, const void *relu_y_, const void *x_,
                                    void *gx_, cf_idx S, double a_, double b_, double c_,
                                    double mean_) {
    const CF_T a = (CF_T)a_, b = (CF_T)b_, c = (CF_T)c_, mean = (CF_T)mean_;
    const CF_T *go = (const CF_T *)go_;
    const CF_T *relu_y = (const CF_T *)relu_y_;
    const CF_T *x = (const CF_T *)x_;
    CF_T *gx = (CF_T *)gx_;
    if (relu_y)
        for (cf_idx p = 0; p < S; p++)
            gx[p] = a * (relu_y[p] <= 0 ? (CF_T)0 : go[p]) + b * (x[p] - mean) + c;
    else
        for (cf_idx p = 0; p < S; p++) gx[p] = a * go[p] + b * (x[p] - mean) + c;
}
