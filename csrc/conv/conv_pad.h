/* Convolution: padded copies of input planes (the direct kernels read them without
 * bounds checks), in any padding mode, and their adjoint (the fold of a padded
 * plane's gradient back onto the input it was copied from).
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* o[j] = s[cf_pad_index(j - pw, W, mode)] for j in [j0, j1), a border of one row in a
 * non-zero mode: the mode chosen once per run and the common (single reflection or
 * wrap) positions without divisions, so the border costs about a copy. */
static void FN(pad_border)(CF_T *o, const CF_T *s, cf_idx j0, cf_idx j1, cf_idx pw, cf_idx W,
                           int mode) {
    cf_idx j = j0;
    if (mode == CF_PAD_REPLICATE) {
        for (; j < j1 && j < pw; j++) o[j] = s[0];
        for (; j < j1; j++) o[j] = s[W - 1];
        return;
    }
    if (mode == CF_PAD_REFLECT) {
        for (; j < j1 && j < pw && pw - j < W; j++) o[j] = s[pw - j];
        for (; j < j1 && j < pw; j++) o[j] = s[cf_pad_index(j - pw, W, mode)];
        for (; j < j1 && j - pw < 2 * W - 1; j++) o[j] = s[2 * (W - 1) - (j - pw)];
    } else if (mode == CF_PAD_CIRCULAR) {
        for (; j < j1 && j < pw && pw - j <= W; j++) o[j] = s[j - pw + W];
        for (; j < j1 && j < pw; j++) o[j] = s[cf_pad_index(j - pw, W, mode)];
        for (; j < j1 && j - pw < 2 * W; j++) o[j] = s[j - pw - W];
    }
    for (; j < j1; j++) o[j] = s[cf_pad_index(j - pw, W, mode)];
}

/* dst[r][q][j] = src[r - pd][q - ph][j - pw] inside src; outside it 0
 * (CF_PAD_ZEROS) or the element cf_pad_index maps it to (the other modes).
 * One plane, padded so the direct kernels need no bounds checks. src
 * [D][H][W], dst [Dp][Hp][Wp]; negative offsets crop (zero mode only: the
 * transposed geometry). One pass: rows copied with memcpy, only the border
 * columns element by element. */
static void FN(pad_plane)(const void *src_, cf_idx D, cf_idx H, cf_idx W, void *dst_,
                          cf_idx Dp, cf_idx Hp, cf_idx Wp, cf_idx pd, cf_idx ph, cf_idx pw,
                          int mode) {
    const CF_T *src = (const CF_T *)src_;
    CF_T *dst = (CF_T *)dst_;
    if (mode != CF_PAD_ZEROS) {
        const cf_idx lo = cf_min(pw, Wp), hi = cf_min(pw + W, Wp); /* columns copied as a run */
        for (cf_idx r = 0; r < Dp; r++) {
            const cf_idx d = cf_pad_index(r - pd, D, mode);
            for (cf_idx q = 0; q < Hp; q++) {
                const CF_T *s = src + (d * H + cf_pad_index(q - ph, H, mode)) * W;
                CF_T *o = dst + (r * Hp + q) * Wp;
                FN(pad_border)(o, s, 0, lo, pw, W, mode);
                if (hi > lo) memcpy(o + lo, s + (lo - pw), (size_t)(hi - lo) * sizeof(CF_T));
                FN(pad_border)(o, s, cf_max(lo, hi), Wp, pw, W, mode);
            }
        }
        return;
    }
    memset(dst, 0, (size_t)(Dp * Hp * Wp) * sizeof(CF_T));
    const cf_idx lo = cf_max(0, -pw), hi = cf_min(W, Wp - pw); /* columns that land */
    if (hi <= lo) return;
    for (cf_idx d = cf_max(0, -pd); d < cf_min(D, Dp - pd); d++)
        for (cf_idx h = cf_max(0, -ph); h < cf_min(H, Hp - ph); h++)
            memcpy(dst + ((d + pd) * Hp + h + ph) * Wp + pw + lo, src + (d * H + h) * W + lo,
                   (size_t)(hi - lo) * sizeof(CF_T));
}

/* The adjoint of pad_plane for pd, ph, pw >= 0: gx[D][H][W] = the sum of the
 * gradient gpad[Dp][Hp][Wp] of every padded position holding that input
 * element (the element itself and, in the non-zero modes, the border
 * positions copied from it); zero padding drops the border. gx is
 * overwritten. Positions are visited in row-major order (deterministic). */
static void FN(fold_plane)(const void *gpad_, cf_idx Dp, cf_idx Hp, cf_idx Wp, void *gx_,
                           cf_idx D, cf_idx H, cf_idx W, cf_idx pd, cf_idx ph, cf_idx pw,
                           int mode) {
    const CF_T *gpad = (const CF_T *)gpad_;
    CF_T *gx = (CF_T *)gx_;
    memset(gx, 0, (size_t)(D * H * W) * sizeof(CF_T));
    const cf_idx lo = cf_min(pw, Wp), hi = cf_min(pw + W, Wp);
    for (cf_idx r = 0; r < Dp; r++) {
        const cf_idx d = cf_pad_index(r - pd, D, mode);
        if (d < 0) continue;
        for (cf_idx q = 0; q < Hp; q++) {
            const cf_idx h = cf_pad_index(q - ph, H, mode);
            if (h < 0) continue;
            CF_T *o = gx + (d * H + h) * W;
            const CF_T *s = gpad + (r * Hp + q) * Wp;
            for (cf_idx j = 0; j < lo; j++) {
                const cf_idx w = cf_pad_index(j - pw, W, mode);
                if (w >= 0) o[w] += s[j];
            }
            for (cf_idx j = lo; j < hi; j++) o[j - pw] += s[j];
            for (cf_idx j = cf_max(lo, hi); j < Wp; j++) {
                const cf_idx w = cf_pad_index(j - pw, W, mode);
                if (w >= 0) o[w] += s[j];
            }
        }
    }
}
