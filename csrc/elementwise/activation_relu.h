/* ReLU, ReLU6 and Hardtanh (one clamp), their backward, and the residual add
 * fused with ReLU.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (elementwise_kernels.h), with CF_T and FN() defined. Plain loops: GCC
 * vectorises them (compare + blend) at every ISA level.
 *
 * NaN semantics follow torch: clamp(NaN) = NaN (`x <= lo ? lo : x >= hi ? hi
 * : x`: both compares are false for NaN), so relu(NaN) = NaN as torch.relu.
 * relu's backward passes the gradient wherever the output is not <= 0 (NaN
 * outputs included), as torch's threshold_backward; the clamp's backward
 * passes it only strictly inside (lo, hi), so NaN inputs get 0, as torch's
 * vectorised hardtanh_backward. */

/* y = min(max(x, lo), hi) with NaN kept; relu is [0, inf]. lo and hi
 * arrive as double and are rounded to CF_T (torch's scalar conversion). */
static void FN(clamp)(const void *x_, void *y_, cf_idx n, double lo_, double hi_) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *y = (CF_T *)y_;
    const CF_T lo = (CF_T)lo_, hi = (CF_T)hi_;
    for (cf_idx i = 0; i < n; i++) y[i] = x[i] <= lo ? lo : x[i] >= hi ? hi : x[i];
}

/* gx = go where lo < x < hi, else 0 (at the bounds, outside, at NaN). */
static void FN(clamp_backward)(const void *go_, const void *x_, void *gx_, cf_idx n, double lo_,
                               double hi_) {
    const CF_T *go = (const CF_T *)go_;
    const CF_T *x = (const CF_T *)x_;
    CF_T *gx = (CF_T *)gx_;
    const CF_T lo = (CF_T)lo_, hi = (CF_T)hi_;
    for (cf_idx i = 0; i < n; i++) gx[i] = x[i] > lo && x[i] < hi ? go[i] : (CF_T)0;
}

static void FN(relu_backward)(const void *go_, const void *y_, void *gx_, cf_idx n) {
    const CF_T *go = (const CF_T *)go_;
    const CF_T *y = (const CF_T *)y_;
    CF_T *gx = (CF_T *)gx_;
    for (cf_idx i = 0; i < n; i++) gx[i] = y[i] <= 0 ? (CF_T)0 : go[i];
}

/* y = relu(a + b): a residual block's sum and activation in one pass. */
static void FN(add_relu)(const void *a_, const void *b_, void *y_, cf_idx n) {
    const CF_T *a = (const CF_T *)a_;
    const CF_T *b = (const CF_T *)b_;
    CF_T *y = (CF_T *)y_;
    for (cf_idx i = 0; i < n; i++) {
        const CF_T s = a[i] + b[i];
        y[i] = s <= 0 ? (CF_T)0 : s;
    }
}
