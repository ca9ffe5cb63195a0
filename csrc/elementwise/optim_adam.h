/* Adam's update (torch.optim.Adam's rule, not AdamW; one element at a time)
 * in one pass over the parameter, its gradient and the two moment buffers.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (elementwise_kernels.h), with CF_T and FN() defined. Plain loops: GCC
 * vectorises them at every ISA level.
 *
 * d = g + weight_decay * p; m += (1 - beta1) * (d - m) (torch's lerp);
 * v = beta2 * v + (1 - beta2) * d * d; p -= step_size * m / (sqrt(v) /
 * bc2_sqrt + eps), where step_size = lr / (1 - beta1^t) and bc2_sqrt =
 * sqrt(1 - beta2^t) come from the caller (computed once per step in double).
 * Without errno (v >= 0, NaN propagates either way) the square roots
 * vectorise. */
__attribute__((optimize("no-math-errno")))
static void FN(adam_update)(void *p_, const void *g_, void *m_, void *v_, cf_idx n,
                            double beta1, double beta2, double eps_, double weight_decay_,
                            double step_size_, double bc2_sqrt_) {
    CF_T *p = (CF_T *)p_, *m = (CF_T *)m_, *v = (CF_T *)v_;
    const CF_T *g = (const CF_T *)g_;
    const CF_T w1 = (CF_T)(1 - beta1), b2 = (CF_T)beta2, w2 = (CF_T)(1 - beta2);
    const CF_T eps = (CF_T)eps_, wd = (CF_T)weight_decay_;
    const CF_T step_size = (CF_T)step_size_, bc2_sqrt = (CF_T)bc2_sqrt_;
    for (cf_idx i = 0; i < n; i++) {
        const CF_T d = g[i] + wd * p[i];
        const CF_T mi = m[i] + w1 * (d - m[i]);
        const CF_T vi = b2 * v[i] + w2 * d * d;
        m[i] = mi;
        v[i] = vi;
        const CF_T root = sizeof(CF_T) == 4 ? (CF_T)__builtin_sqrtf((float)vi)
                                            : (CF_T)__builtin_sqrt((double)vi);
        p[i] -= step_size * (mi / (root / bc2_sqrt + eps));
    }
}
