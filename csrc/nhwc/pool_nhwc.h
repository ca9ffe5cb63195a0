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

/* n <= VW elements at p as a vector (lanes past n: 0), and its store; with
 * `whole` (a constant where they are inlined) one full-vector load or store */
CF_INLINE CF_V FN(cf_pool_load)(const CF_T *p, cf_idx n, const int whole) {
    CF_V v = FN(cf_splat)(0);
    if (whole) memcpy(&v, p, sizeof v);
    else memcpy(&v, p, (size_t)n * sizeof(CF_T));
    return v;
}

CF_INLINE void FN(cf_pool_store)(CF_T *p, CF_V v, cf_idx n, const int whole) {
    if (whole) memcpy(p, &v, sizeof v);
    else memcpy(p, &v, (size_t)n * sizeof(CF_T));
}

/* out[0:n] = max over rows i < nrows and taps j < taps (i == 0: from j = 1)
 * of in[i * rs + j * ts + 0:n], first maximum in that order; n = VW when
 * `whole` (the function is inlined twice: whole vectors, then the tail). */
CF_INLINE void FN(cf_pool_window)(const CF_T *in, CF_T *out, cf_idx n, cf_idx nrows,
                                  cf_idx rs, cf_idx taps, cf_idx ts, const int whole) {
    CF_V m = FN(cf_pool_load)(in, n, whole);
    for (cf_idx i = 0; i < nrows; i++)
        for (cf_idx j = i == 0; j < taps; j++)
            m = FN(cf_max_nan)(m, FN(cf_pool_load)(in + i * rs + j * ts, n, whole));
    FN(cf_pool_store)(out, m, n, whole);
}

/* The window maxima of `count` values (vectors along them): whole vectors,
 * then the tail. */
CF_INLINE void FN(cf_pool_windows)(const CF_T *in, CF_T *out, cf_idx count, cf_idx nrows,
                                   cf_idx rs, cf_idx taps, cf_idx ts) {
    cf_idx c = 0;
    for (; c + CF_VW <= count; c += CF_VW)
        FN(cf_pool_window)(in + c, out + c, CF_VW, nrows, rs, taps, ts, 1);
    if (c < count) FN(cf_pool_window)(in + c, out + c, count - c, nrows, rs, taps, ts, 0);
}

/* out[ow][c] = max over the window columns (inside the input) of row[w][c]:
 * the horizontal pass of one input row, in window order. cols: per output
 * column, the offset of its first tap in the row and its tap count. */
static void FN(cf_pool_row_max)(const CF_T *row, CF_T *out, cf_idx C, cf_idx OW, cf_idx dw,
                                const cf_idx *cols) {
    for (cf_idx ow = 0; ow < OW; ow++)
        FN(cf_pool_windows)(row + cols[2 * ow], out + ow * C, C, 1, 0, cols[2 * ow + 1],
                            dw * C);
}

/* One output row directly: each window's taps one by one, rows then
 * columns (the first maximum in window order wins): h1 - h0 rows from
 * x's row top + h0 * dh, dh apart. */
static void FN(cf_pool_direct_row)(const CF_T *x, CF_T *out, cf_idx C, cf_idx W, cf_idx OW,
                                   cf_idx top, cf_idx h0, cf_idx h1, cf_idx dh, cf_idx dw,
                                   const cf_idx *cols) {
    const CF_T *row = x + (top + h0 * dh) * W * C;
    for (cf_idx ow = 0; ow < OW; ow++)
        FN(cf_pool_windows)(row + cols[2 * ow], out + ow * C, C, h1 - h0, dh * W * C,
                            cols[2 * ow + 1], dw * C);
}

/* Max pooling of output rows [oh0, oh1) of one image (2-D; 1-D as H = 1):
 * out[oh][ow][c] = max over the window's taps inside the input. x, out:
 * the image, C channels per pixel. The caller guarantees every window
 * holds at least one input element (pooling validation). ring: room for
 * R = (kh - 1) * dh + 1 rows of OW * C values; tags: R + 2 * OW entries.
 *
 * Stride-1 windows are separable: each input row's maxima over the window
 * columns are computed once (cf_pool_row_max, into a ring of the R input
 * rows one window spans), then each output is the maximum of its window
 * rows' entries: 4 compares per output of a 3x3 window instead of 8
 * (GoogLeNet's inception pools at one thread, 28x28x192: 0.15 -> 0.08-0.09 ms,
 * 14x14x480: 0.09 -> 0.05-0.06). Columns within a row, then rows, each in order,
 * so the first maximum in window order still wins ties (-0.0 vs +0.0) and
 * the first NaN stays, as taking the taps one by one does. Other windows
 * run directly (cf_pool_direct_row). */
static void FN(nhwc_max_pool)(const void *x_, void *out_, cf_idx C, cf_idx H, cf_idx W,
                              cf_idx OW, cf_idx kh, cf_idx kw, cf_idx sh, cf_idx sw,
                              cf_idx ph, cf_idx pw, cf_idx dh, cf_idx dw, cf_idx oh0,
                              cf_idx oh1, void *ring_, cf_idx *tags) {
    /* each output column's taps, found once (two divisions each: per input
     * row they cost more than the compares of 64 channels) */
    cf_idx *cols = tags + (kh - 1) * dh + 1;
    for (cf_idx ow = 0; ow < OW; ow++) {
        cf_idx w0, w1;
        cf_tap_range(ow, sw, pw, dw, kw, W, &w0, &w1);
        cols[2 * ow] = (ow * sw - pw + w0 * dw) * C;
        cols[2 * ow + 1] = w1 - w0;
    }
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_, *ring = (CF_T *)ring_;
    const cf_idx R = (kh - 1) * dh + 1;   /* window rows lie in R consecutive input rows */
    /* Row maxima are reused by the kh output rows a stride-1 window spans;
     * with a stride the ring's extra pass lost where the input streams from
     * memory (ResNet's 3x3/2 pool, batch 8: 2.2 -> 2.5 ms; 2x2/2: 1.4 -> 2.3) */
    const int separable = sh == 1 && kh > 1 && kh <= 64;
    for (cf_idx r = 0; r < R; r++) tags[r] = -1;   /* the input row each ring slot holds */
    for (cf_idx oh = oh0; oh < oh1; oh++) {
        cf_idx h0, h1;
        cf_tap_range(oh, sh, ph, dh, kh, H, &h0, &h1);
        const cf_idx top = oh * sh - ph;
        if (!separable) {
            FN(cf_pool_direct_row)(x, out + oh * OW * C, C, W, OW, top, h0, h1, dh, dw, cols);
            continue;
        }
        for (cf_idx i = h0; i < h1; i++) {
            const cf_idx h = top + i * dh, slot = h % R;
            if (tags[slot] != h) {
                FN(cf_pool_row_max)(x + h * W * C, ring + slot * OW * C, C, OW, dw, cols);
                tags[slot] = h;
            }
        }
        CF_T *o = out + oh * OW * C;
        const CF_T *rows[64];   /* the window's rows in the ring (kh <= 64 here) */
        const cf_idx nrows = h1 - h0;
        for (cf_idx i = 0; i < nrows; i++) rows[i] = ring + (top + (h0 + i) * dh) % R * OW * C;
        cf_idx p = 0;   /* OW * C values: the pixels of a row */
        for (; p + CF_VW <= OW * C; p += CF_VW) {
            CF_V m = FN(cf_pool_load)(rows[0] + p, CF_VW, 1);
            for (cf_idx i = 1; i < nrows; i++)
                m = FN(cf_max_nan)(m, FN(cf_pool_load)(rows[i] + p, CF_VW, 1));
            FN(cf_pool_store)(o + p, m, CF_VW, 1);
        }
        if (p < OW * C) {
            const cf_idx n = OW * C - p;
            CF_V m = FN(cf_pool_load)(rows[0] + p, n, 0);
            for (cf_idx i = 1; i < nrows; i++)
                m = FN(cf_max_nan)(m, FN(cf_pool_load)(rows[i] + p, n, 0));
            FN(cf_pool_store)(o + p, m, n, 0);
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
