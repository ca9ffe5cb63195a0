/* Convolution epilogue: what a fused inference layer (Module.fuse()) applies
 * to an output tile right after the kernel stored it, while it is in cache:
 * the residual add (ResNet's shortcut) and the activation, a clamp to
 * [lo, hi] (ReLU [0, inf], ReLU6 [0, 6], Hardtanh).
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h), with CF_T and FN() defined. Plain loops: GCC vectorises
 * them at every ISA level. */

/* rows spans of len outputs, row_stride apart, from out: out += res (when res
 * is not NULL; res laid out as out), then out = clamp(out, lo, hi) when clamp
 * is set (`<= lo ? lo : >= hi ? hi`: NaN stays NaN, as torch.relu and
 * torch.clamp; lo and hi rounded to CF_T). */
static void FN(conv_epilogue)(void *out_, const void *res_, cf_idx rows, cf_idx row_stride,
                              cf_idx len, int clamp, double lo_, double hi_) {
    const CF_T lo = (CF_T)lo_, hi = (CF_T)hi_;
    for (cf_idx r = 0; r < rows; r++) {
        CF_T *o = (CF_T *)out_ + r * row_stride;
        if (res_) {
            const CF_T *s = (const CF_T *)res_ + r * row_stride;
            if (clamp)
                for (cf_idx i = 0; i < len; i++) {
                    const CF_T v = o[i] + s[i];
                    o[i] = v <= lo ? lo : v >= hi ? hi : v;
                }
            else
                for (cf_idx i = 0; i < len; i++) o[i] += s[i];
        } else if (clamp) {
            for (cf_idx i = 0; i < len; i++) o[i] = o[i] <= lo ? lo : o[i] >= hi ? hi : o[i];
        }
    }
}
