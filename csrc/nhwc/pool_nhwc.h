/* Pooling on channels-last activations for inference (no indices): max
 * pooling with any window, stride, padding, dilation and ceil_mode, and the
 * global average. A family header (nhwc_family.h).
 *
 * Lanes are channels, so a window is a run of whole-vector loads and
 * compares; a tap outside the input is skipped (never selected), so nothing
 * is copied into a padded buffer (the plane kernels padded each image: 0.68
 * ms of ResNet-18's 3x3/2 max pool at batch 1 was mostly that copy). */

/* v where it beats m or is NaN while m is not, else m: the first maximum in
 * window order wins ties (-0.0 vs +0.0 too), and a NaN, once taken, stays. */
CF_INLINE CF_V FN(cf_max_nan)(CF_V m, CF_V v) {
    const CF_M take = (CF_M)(v > m) | ((CF_M)(v != v) & ~(CF_M)(m != m));
    return (CF_V)(((CF_M)v & take) | ((CF_M)m & ~take));
}

/* Max pooling of output rows [oh0, oh1) of one image (2-D; 1-D as H = 1):
 * out[oh][ow][c] = max over the window's taps inside the input. x, out:
 * the image, C channels per pixel. The caller guarantees every window
 * holds at least one input element (pooling validation). */
static void FN(nhwc_max_pool)(const void *x_, void *out_, cf_idx C, cf_idx H, cf_idx W,
                              cf_idx OW, cf_idx kh, cf_idx kw, cf_idx sh, cf_idx sw,
                              cf_idx ph, cf_idx pw, cf_idx dh, cf_idx dw, cf_idx oh0,
                              cf_idx oh1) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_;
    for (cf_idx oh = oh0; oh < oh1; oh++) {
        cf_idx h0, h1;
        cf_tap_range(oh, sh, ph, dh, kh, H, &h0, &h1);
        for (cf_idx ow = 0; ow < OW; ow++) {
            cf_idx w0, w1;
            cf_tap_range(ow, sw, pw, dw, kw, W, &w0, &w1);
            const CF_T *first = x + ((oh * sh - ph + h0 * dh) * W + ow * sw - pw + w0 * dw) * C;
            CF_T *o = out + (oh * OW + ow) * C;
            cf_idx c = 0;
            for (; c + CF_VW <= C; c += CF_VW) { /* whole vectors: constant-size copies */
                CF_V m, v;
                memcpy(&m, first + c, sizeof m);
                for (cf_idx i = h0; i < h1; i++)
                    for (cf_idx j = i == h0 ? w0 + 1 : w0; j < w1; j++) {
                        memcpy(&v, first + ((i - h0) * dh * W + (j - w0) * dw) * C + c, sizeof v);
                        m = FN(cf_max_nan)(m, v);
                    }
                memcpy(o + c, &m, sizeof m);
            }
            if (c < C) { /* the last channels, through a partial copy */
                const size_t len = (size_t)(C - c) * sizeof(CF_T);
                CF_V m = FN(cf_splat)(0), v = m;
                memcpy(&m, first + c, len);
                for (cf_idx i = h0; i < h1; i++)
                    for (cf_idx j = i == h0 ? w0 + 1 : w0; j < w1; j++) {
                        memcpy(&v, first + ((i - h0) * dh * W + (j - w0) * dw) * C + c, len);
                        m = FN(cf_max_nan)(m, v);
                    }
                memcpy(o + c, &m, len);
            }
        }
    }
}

/* Mean over the P pixels of one image for the channels [c0, c1), into out
 * (C values): sums in the pixels' order, then one division (as the
 * reference's mean, to rounding). */
static void FN(nhwc_global_avg)(const void *x_, void *out_, cf_idx C, cf_idx P, cf_idx c0,
                                cf_idx c1) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_;
    for (cf_idx c = c0; c < c1; c += CF_VW) {
        const int whole = c + CF_VW <= c1;
        const size_t len = (size_t)cf_min(CF_VW, c1 - c) * sizeof(CF_T);
        CF_V s = FN(cf_splat)(0), v = s;
        for (cf_idx p = 0; p < P; p++) {
            if (whole) memcpy(&v, x + p * C + c, sizeof v);   /* constant size: one load */
            else memcpy(&v, x + p * C + c, len);
            s += v;
        }
        s /= FN(cf_splat)((CF_T)P);
        memcpy(out + c, &s, len);
    }
}
