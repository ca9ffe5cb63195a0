/* ReLU forward and backward, and the residual add fused with ReLU.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (elementwise_kernels.h), with CF_T and FN() defined. Plain loops: GCC
 * vectorises them (compare + blend) at every ISA level.
 *
 * NaN semantics follow torch: relu(NaN) = NaN (`x <= 0 ? 0 : x`, not
 * `x > 0 ? x : 0`), and the backward passes the gradient wherever the output
 * is not <= 0 (NaN outputs included), as torch's threshold_backward. */

static void FN(relu)(const void *x_, void *y_, cf_idx n) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *y = (CF_T *)y_;
    for (cf_idx i = 0; i < n; i++) y[i] = x[i] <= 0 ? (CF_T)0 : x[i];
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
