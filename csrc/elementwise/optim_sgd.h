/* SGD's update (torch.optim.SGD's rule, one element at a time) in one pass
 * over the parameter, its gradient and its momentum buffer.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (elementwise_kernels.h), with CF_T and FN() defined. Plain loops: GCC
 * vectorises them at every ISA level.
 *
 * d = g + weight_decay * p; with momentum: buf = d on the first step, else
 * buf = momentum * buf + (1 - dampening) * d, and d = nesterov ? d +
 * momentum * buf : buf; then p -= lr * d. buf may be NULL without momentum. */
static void FN(sgd_update)(void *p_, const void *g_, void *buf_, cf_idx n, double lr_,
                           double momentum_, double dampening_, double weight_decay_,
                           int nesterov, int first) {
    CF_T *p = (CF_T *)p_;
    const CF_T *g = (const CF_T *)g_;
    CF_T *buf = (CF_T *)buf_;
    const CF_T lr = (CF_T)lr_, m = (CF_T)momentum_, keep = (CF_T)(1 - dampening_);
    const CF_T wd = (CF_T)weight_decay_;
    if (!buf) {
        for (cf_idx i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
        return;
    }
    for (cf_idx i = 0; i < n; i++) {
        const CF_T d = g[i] + wd * p[i];
        const CF_T b = first ? d : m * buf[i] + keep * d;
        buf[i] = b;
        p[i] -= lr * (nesterov ? d + m * b : b);
    }
}
