/* Max and average pooling forward read in place (no padded copy) for planes with a wide
 * interior.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* Planes whose rows hold at least a vector of "interior" outputs (windows
 * whose columns all lie inside the input: ow in [lo, hi), from the caller)
 * are read in place, without the padded copy: tap rows outside the input are
 * skipped per row, the interior runs in vector chunks (the last one shifted
 * left to end at hi, recomputing a few outputs), and the few outputs whose
 * windows reach into the left/right padding take a bounds-checked scalar
 * path with the same tap order. */

/* Lanes j hold row[j*s], reading exactly the elements needed (no slack past
 * the last one, unlike cf_load_strided's two full loads for s == 2). */
CF_INLINE CF_V FN(cf_load_strided_exact)(const CF_T *row, cf_idx s) {
    if (s != 2) return FN(cf_load_strided)(row, s);
    CF_V lo, hi;
    CF_M pick;
    memcpy(&lo, row, sizeof lo);
    memcpy(&hi, row + CF_VW - 1, sizeof hi); /* hi[k] = row[VW - 1 + k] */
    for (int j = 0; j < (int)CF_VW; j++) pick[j] = j < (int)CF_VW / 2 ? 2 * j : 2 * j + 1;
    return __builtin_shuffle(lo, hi, pick);
}

/* One output by torch's scalar scan over the taps inside the input. */
CF_INLINE void FN(max_pool_one)(const CF_T *x, CF_T *out, int64_t *idx,
                                cf_idx od, cf_idx oh, cf_idx ow, const cf_pool_geom *g) {
    const cf_idx d0 = od * g->sd - g->pd, h0 = oh * g->sh - g->ph, w0 = ow * g->sw - g->pw;
    CF_T m = -INFINITY;
    cf_idx at = -1;
    for (cf_idx a = 0; a < g->KD; a++) {
        const cf_idx d = d0 + a * g->dd;
        if (d < 0 || d >= g->D) continue;
        for (cf_idx i = 0; i < g->KH; i++) {
            const cf_idx h = h0 + i * g->dh;
            if (h < 0 || h >= g->H) continue;
            for (cf_idx j = 0; j < g->KW; j++) {
                const cf_idx w = w0 + j * g->dw;
                if (w < 0 || w >= g->W) continue;
                const cf_idx p = (d * g->H + h) * g->W + w;
                if (x[p] > m || x[p] != x[p]) {
                    m = x[p];
                    at = p;
                }
            }
        }
    }
    *out = m;
    if (idx) *idx = at >= 0 ? at : cf_first_inside_flat(od, oh, ow, g);
}

/* nc (1 or 2) chunks of VW adjacent interior outputs from ow0, for windows kw
 * taps wide. Two chunks give two independent compare-select chains (the
 * chain's latency, not throughput, bounds one chunk); a constant kw lets the
 * tap loop unroll. */
CF_INLINE void FN(max_pool_chunks)(const CF_T *x, CF_T *out, int64_t *idx,
                                   const int64_t *tap_offset, cf_idx od, cf_idx oh,
                                   cf_idx ow0, const cf_pool_geom *g, const int need_index,
                                   const int nc, const cf_idx kw) {
    const cf_idx d0 = od * g->sd - g->pd, h0 = oh * g->sh - g->ph, w0 = ow0 * g->sw - g->pw;
    const cf_idx step = CF_VW * g->sw; /* input distance between chunks */
    CF_V m[2];
    CF_M t[2], tap = {0};
    const CF_M one = tap + 1;
    for (int c = 0; c < nc; c++) {
        m[c] = FN(cf_splat)(-INFINITY);
        t[c] = tap;
    }
    for (cf_idx a = 0; a < g->KD; a++) {
        const cf_idx d = d0 + a * g->dd;
        for (cf_idx i = 0; i < g->KH; i++) {
            const cf_idx h = h0 + i * g->dh;
            if (d < 0 || d >= g->D || h < 0 || h >= g->H) {
                tap += one * (CF_ITYPE)kw; /* a row in the padding: skip its taps */
                continue;
            }
            const CF_T *row = x + (d * g->H + h) * g->W + w0;
#pragma GCC unroll 4
            for (cf_idx j = 0; j < kw; j++) {
#pragma GCC unroll 2
                for (int c = 0; c < nc; c++) {
                    const CF_V v = FN(cf_load_strided_exact)(row + j * g->dw + c * step, g->sw);
                    const CF_M upd = FN(cf_max_update)(v, m[c]);
                    m[c] = FN(cf_select)(upd, v, m[c]);
                    if (need_index) t[c] = (tap & upd) | (t[c] & ~upd);
                }
                tap += one;
            }
        }
    }
    for (int c = 0; c < nc; c++) {
        memcpy(out + c * CF_VW, &m[c], sizeof m[c]);
        if (!need_index) continue;
        CF_ITYPE taps[CF_VW];
        CF_T vals[CF_VW];
        memcpy(taps, &t[c], sizeof t[c]);
        memcpy(vals, &m[c], sizeof m[c]);
        int64_t *ix = idx + c * CF_VW;
        const cf_idx origin = (d0 * g->H + h0) * g->W + w0 + c * step;
        int any_ninf = 0;
        for (cf_idx l = 0; l < CF_VW; l++) { /* vectorisable: a gather and adds */
            ix[l] = origin + l * g->sw + tap_offset[taps[l]];
            any_ninf |= vals[l] == -INFINITY;
        }
        if (any_ninf) /* rare: nothing beat -inf, and tap 0 may lie in the padding */
            for (cf_idx l = 0; l < CF_VW; l++)
                if (vals[l] == -INFINITY)
                    ix[l] = cf_first_inside_flat(od, oh, ow0 + c * CF_VW + l, g);
    }
}

/* max_pool_chunks with the common window widths as constants. */
CF_INLINE void FN(max_pool_chunks_kw)(const CF_T *x, CF_T *out, int64_t *idx,
                                      const int64_t *tap_offset, cf_idx od, cf_idx oh,
                                      cf_idx ow0, const cf_pool_geom *g, const int need_index,
                                      const int nc) {
    if (g->KW == 2)
        FN(max_pool_chunks)(x, out, idx, tap_offset, od, oh, ow0, g, need_index, nc, 2);
    else if (g->KW == 3)
        FN(max_pool_chunks)(x, out, idx, tap_offset, od, oh, ow0, g, need_index, nc, 3);
    else
        FN(max_pool_chunks)(x, out, idx, tap_offset, od, oh, ow0, g, need_index, nc, g->KW);
}

/* Max pooling of one plane read in place; interior outputs [lo, hi), with
 * hi - lo >= VW. idx may be NULL. */
static void FN(max_pool_plane_inplace)(const void *x_, void *out_, int64_t *idx,
                                       const int64_t *tap_offset, cf_idx lo, cf_idx hi,
                                       const cf_pool_geom *g) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_;
    for (cf_idx od = 0; od < g->OD; od++)
        for (cf_idx oh = 0; oh < g->OH; oh++) {
            const cf_idx r = (od * g->OH + oh) * g->OW;
            CF_T *o = out + r;
            int64_t *ix = idx ? idx + r : NULL;
            for (cf_idx ow = 0; ow < lo; ow++)
                FN(max_pool_one)(x, o + ow, ix ? ix + ow : NULL, od, oh, ow, g);
            cf_idx ow0 = lo;
            for (; ow0 + 2 * CF_VW <= hi; ow0 += 2 * CF_VW) {
                if (ix)
                    FN(max_pool_chunks_kw)(x, o + ow0, ix + ow0, tap_offset, od, oh, ow0, g, 1, 2);
                else
                    FN(max_pool_chunks_kw)(x, o + ow0, NULL, tap_offset, od, oh, ow0, g, 0, 2);
            }
            for (; ow0 < hi; ow0 += CF_VW) {
                if (ow0 + CF_VW > hi) ow0 = hi - CF_VW; /* last chunk ends at hi */
                if (ix)
                    FN(max_pool_chunks_kw)(x, o + ow0, ix + ow0, tap_offset, od, oh, ow0, g, 1, 1);
                else
                    FN(max_pool_chunks_kw)(x, o + ow0, NULL, tap_offset, od, oh, ow0, g, 0, 1);
            }
            for (cf_idx ow = hi; ow < g->OW; ow++)
                FN(max_pool_one)(x, o + ow, ix ? ix + ow : NULL, od, oh, ow, g);
        }
}

CF_INLINE CF_T FN(avg_pool_one_sum)(const CF_T *x, cf_idx od, cf_idx oh, cf_idx ow,
                                    const cf_pool_geom *g) {
    const cf_idx d0 = od * g->sd - g->pd, h0 = oh * g->sh - g->ph, w0 = ow * g->sw - g->pw;
    CF_T sum = 0;
    for (cf_idx d = cf_max(d0, 0); d < cf_min(d0 + g->KD, g->D); d++)
        for (cf_idx h = cf_max(h0, 0); h < cf_min(h0 + g->KH, g->H); h++)
            for (cf_idx w = cf_max(w0, 0); w < cf_min(w0 + g->KW, g->W); w++)
                sum += x[(d * g->H + h) * g->W + w];
    return sum;
}

/* nc (1 or 2) chunks of averaged interior outputs from ow0 (two independent
 * add chains, as in max_pool_chunks), windows kw taps wide. */
CF_INLINE void FN(avg_pool_chunks)(const CF_T *x, CF_T *out, const CF_T *wcount, CF_V rdiv,
                                   cf_idx od, cf_idx oh, cf_idx ow0, const cf_pool_geom *g,
                                   const int nc, const cf_idx kw) {
    const cf_idx d0 = od * g->sd - g->pd, h0 = oh * g->sh - g->ph;
    const cf_idx step = CF_VW * g->sw;
    CF_V sum[2];
    for (int c = 0; c < nc; c++) sum[c] = FN(cf_splat)(0);
    for (cf_idx d = cf_max(d0, 0); d < cf_min(d0 + g->KD, g->D); d++)
        for (cf_idx h = cf_max(h0, 0); h < cf_min(h0 + g->KH, g->H); h++) {
            const CF_T *row = x + (d * g->H + h) * g->W + ow0 * g->sw - g->pw;
#pragma GCC unroll 4
            for (cf_idx j = 0; j < kw; j++)
#pragma GCC unroll 2
                for (int c = 0; c < nc; c++)
                    sum[c] += FN(cf_load_strided_exact)(row + j + c * step, g->sw);
        }
    for (int c = 0; c < nc; c++) {
        CF_V wdiv;
        memcpy(&wdiv, wcount + ow0 + c * CF_VW, sizeof wdiv);
        const CF_V avg = sum[c] / (rdiv * wdiv);
        memcpy(out + c * CF_VW, &avg, sizeof avg);
    }
}

CF_INLINE void FN(avg_pool_chunks_kw)(const CF_T *x, CF_T *out, const CF_T *wcount, CF_V rdiv,
                                      cf_idx od, cf_idx oh, cf_idx ow0, const cf_pool_geom *g,
                                      const int nc) {
    if (g->KW == 2)
        FN(avg_pool_chunks)(x, out, wcount, rdiv, od, oh, ow0, g, nc, 2);
    else if (g->KW == 3)
        FN(avg_pool_chunks)(x, out, wcount, rdiv, od, oh, ow0, g, nc, 3);
    else
        FN(avg_pool_chunks)(x, out, wcount, rdiv, od, oh, ow0, g, nc, g->KW);
}

/* Average pooling of one plane read in place (see max_pool_plane_inplace;
 * divisors as in avg_pool_plane). */
static void FN(avg_pool_plane_inplace)(const void *x_, void *out_, const void *dcount_,
                                       const void *hcount_, const void *wcount_, cf_idx lo,
                                       cf_idx hi, const cf_pool_geom *g) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_;
    const CF_T *dcount = (const CF_T *)dcount_;
    const CF_T *hcount = (const CF_T *)hcount_;
    const CF_T *wcount = (const CF_T *)wcount_;
    for (cf_idx od = 0; od < g->OD; od++)
        for (cf_idx oh = 0; oh < g->OH; oh++) {
            CF_T *o = out + (od * g->OH + oh) * g->OW;
            const CF_T row_div = dcount[od] * hcount[oh];
            for (cf_idx ow = 0; ow < lo; ow++)
                o[ow] = FN(avg_pool_one_sum)(x, od, oh, ow, g) / (row_div * wcount[ow]);
            const CF_V rdiv = FN(cf_splat)(row_div);
            cf_idx ow0 = lo;
            for (; ow0 + 2 * CF_VW <= hi; ow0 += 2 * CF_VW)
                FN(avg_pool_chunks_kw)(x, o + ow0, wcount, rdiv, od, oh, ow0, g, 2);
            for (; ow0 < hi; ow0 += CF_VW) {
                if (ow0 + CF_VW > hi) ow0 = hi - CF_VW; /* last chunk ends at hi */
                FN(avg_pool_chunks_kw)(x, o + ow0, wcount, rdiv, od, oh, ow0, g, 1);
            }
            for (cf_idx ow = hi; ow < g->OW; ow++)
                o[ow] = FN(avg_pool_one_sum)(x, od, oh, ow, g) / (row_div * wcount[ow]);
        }
}

