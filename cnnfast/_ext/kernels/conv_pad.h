/* Convolution: zero-padded copies of input planes (the direct kernels read them without
 * bounds checks).
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* dst[r][q][j] = src[r - pd][q - ph][j - pw] inside src, else 0: one plane,
 * padded so the direct kernels need no bounds checks. src [D][H][W], dst
 * [Dp][Hp][Wp]; negative offsets crop. */
static void FN(pad_plane)(const void *src_, cf_idx D, cf_idx H, cf_idx W, void *dst_,
                          cf_idx Dp, cf_idx Hp, cf_idx Wp, cf_idx pd, cf_idx ph, cf_idx pw) {
    const CF_T *src = (const CF_T *)src_;
    CF_T *dst = (CF_T *)dst_;
    memset(dst, 0, (size_t)(Dp * Hp * Wp) * sizeof(CF_T));
    const cf_idx lo = cf_max(0, -pw), hi = cf_min(W, Wp - pw); /* columns that land */
    if (hi <= lo) return;
    for (cf_idx d = cf_max(0, -pd); d < cf_min(D, Dp - pd); d++)
        for (cf_idx h = cf_max(0, -ph); h < cf_min(H, Hp - ph); h++)
            memcpy(dst + ((d + pd) * Hp + h + ph) * Wp + pw + lo, src + (d * H + h) * W + lo,
                   (size_t)(hi - lo) * sizeof(CF_T));
}

