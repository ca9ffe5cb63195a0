/* Max pooling over a padded plane (forward, with torch's index rule) and its backward
 * scatter.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* Max pooling follows torch's scan exactly: taps in row-major window order,
 * `v > max || isnan(v)` replaces the running maximum, so ties keep the first
 * maximum and a NaN always wins (the last NaN of the window gives the index). */

/* Lane-wise `v > m || isnan(v)`: where the running maximum is replaced. */
CF_INLINE CF_M FN(cf_max_update)(CF_V v, CF_V m) {
    return (CF_M)(v > m) | (CF_M)(v != v);
}

CF_INLINE CF_V FN(cf_select)(CF_M mask, CF_V a, CF_V b) {
    return (CF_V)(((CF_M)a & mask) | ((CF_M)b & ~mask));
}

/* One output row (od, oh) of max pooling from the -inf padded plane buf.
 * Lanes are VW adjacent outputs; each lane tracks its maximum and the
 * window tap that gave it, turned into a flat plane index at the end. */
CF_INLINE void FN(max_pool_row)(const CF_T *buf, CF_T *out, int64_t *idx,
                                const int64_t *tap_offset, cf_idx od, cf_idx oh,
                                const cf_pool_geom *g, const int need_index) {
    const cf_idx HW = g->H * g->W;
    const cf_idx row_origin = (od * g->sd - g->pd) * HW + (oh * g->sh - g->ph) * g->W;
    const CF_T *base = buf + (od * g->sd * g->Hp + oh * g->sh) * g->Wp;
    for (cf_idx ow0 = 0; ow0 < g->OW; ow0 += CF_VW) {
        CF_V m = FN(cf_splat)(-INFINITY);
        CF_M t = {0}, tap = {0};
        const CF_M one = tap + 1;
        const CF_T *chunk = base + ow0 * g->sw;
        for (cf_idx a = 0; a < g->KD; a++)
            for (cf_idx i = 0; i < g->KH; i++) {
                const CF_T *row = chunk + (a * g->dd * g->Hp + i * g->dh) * g->Wp;
                for (cf_idx j = 0; j < g->KW; j++) {
                    const CF_V v = FN(cf_load_strided)(row + j * g->dw, g->sw);
                    const CF_M upd = FN(cf_max_update)(v, m);
                    m = FN(cf_select)(upd, v, m);
                    if (need_index) {
                        t = (tap & upd) | (t & ~upd);
                        tap += one;
                    }
                }
            }
        const cf_idx cnt = cf_min(CF_VW, g->OW - ow0);
        CF_T vals[CF_VW];
        memcpy(vals, &m, sizeof m);
        memcpy(out + ow0, vals, (size_t)cnt * sizeof(CF_T));
        if (need_index) {
            CF_ITYPE taps[CF_VW];
            memcpy(taps, &t, sizeof t);
            for (cf_idx l = 0; l < cnt; l++) {
                const cf_idx ow = ow0 + l;
                if (vals[l] == -INFINITY) {
                    /* no tap beat -inf (padding may have been the first tap):
                     * torch's index is the first tap inside the input */
                    idx[ow] = cf_first_inside_flat(od, oh, ow, g);
                } else {
                    idx[ow] = row_origin + ow * g->sw - g->pw + tap_offset[taps[l]];
                }
            }
        }
    }
}

/* Max pooling of one padded plane; idx (int64 flat plane index) may be NULL. */
static void FN(max_pool_plane)(const void *buf_, void *out_, int64_t *idx,
                               const int64_t *tap_offset, const cf_pool_geom *g) {
    const CF_T *buf = (const CF_T *)buf_;
    CF_T *out = (CF_T *)out_;
    const cf_idx OHW = g->OH * g->OW;
    for (cf_idx od = 0; od < g->OD; od++)
        for (cf_idx oh = 0; oh < g->OH; oh++) {
            const cf_idx r = od * OHW + oh * g->OW;
            if (idx)
                FN(max_pool_row)(buf, out + r, idx + r, tap_offset, od, oh, g, 1);
            else
                FN(max_pool_row)(buf, out + r, NULL, tap_offset, od, oh, g, 0);
        }
}

/* --------------------------------------------------------- max, backward */

/* grad_x plane = scatter-add of grad_out through the indices. Each index is
 * range-checked right where it is used (an unchecked index is a write
 * anywhere; checking here also holds if another thread changes the array
 * meanwhile): returns the position of the first bad index, or -1. */
static cf_idx FN(max_pool_backward_plane)(const void *go_, const int64_t *idx, cf_idx n_out,
                                          void *gx_, cf_idx plane) {
    const CF_T *go = (const CF_T *)go_;
    CF_T *gx = (CF_T *)gx_;
    memset(gx, 0, (size_t)plane * sizeof(CF_T));
    for (cf_idx p = 0; p < n_out; p++) {
        const int64_t at = idx[p];
        if ((uint64_t)at >= (uint64_t)plane) return p;
        gx[at] += go[p];
    }
    return -1;
}

