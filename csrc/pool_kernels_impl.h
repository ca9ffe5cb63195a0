/* dtype-generic pooling kernels; included once per dtype by pool_common.h with
 * CF_T (float/double), CF_SFX (f32/f64) and CF_ITYPE (an integer type of
 * CF_T's width) defined.
 *
 * Every function works on one (D, H, W) plane: the caller (_pool.pyx) hands
 * each plane to exactly one thread, so nothing here is shared or raced.
 *
 * Max pooling follows torch's scan exactly: taps in row-major window order,
 * `v > max || isnan(v)` replaces the running maximum, so ties keep the first
 * maximum and a NaN always wins (the last NaN of the window gives the index). */

#include "cf_vector_impl.h"

/* ------------------------------------------------------------- padded copy */

static void FN(pool_fill)(CF_T *buf, cf_idx n, CF_T value) {
    for (cf_idx i = 0; i < n; i++) buf[i] = value;
}

/* Copy plane x into the interior of buf. The border keeps the pad value that
 * pool_fill wrote once per thread, since no plane ever writes there. */
static void FN(pool_copy_interior)(const CF_T *x, CF_T *buf, const cf_pool_geom *g) {
    for (cf_idx d = 0; d < g->D; d++)
        for (cf_idx h = 0; h < g->H; h++)
            memcpy(buf + ((d + g->pd) * g->Hp + h + g->ph) * g->Wp + g->pw,
                   x + (d * g->H + h) * g->W, (size_t)g->W * sizeof(CF_T));
}

/* ---------------------------------------------------------- max, forward */

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
static void FN(max_pool_plane)(const CF_T *buf, CF_T *out, int64_t *idx,
                                           const int64_t *tap_offset,
                                           const cf_pool_geom *g) {
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

/* ------------------------------------------------- forward, read in place */

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
static void FN(max_pool_plane_inplace)(const CF_T *x, CF_T *out, int64_t *idx,
                                       const int64_t *tap_offset, cf_idx lo, cf_idx hi,
                                       const cf_pool_geom *g) {
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
static void FN(avg_pool_plane_inplace)(const CF_T *x, CF_T *out, const CF_T *dcount,
                                       const CF_T *hcount, const CF_T *wcount, cf_idx lo,
                                       cf_idx hi, const cf_pool_geom *g) {
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

/* --------------------------------------------------------- max, backward */

/* grad_x plane = scatter-add of grad_out through the indices. Each index is
 * range-checked right where it is used (an unchecked index is a write
 * anywhere; checking here also holds if another thread changes the array
 * meanwhile): returns the position of the first bad index, or -1. */
static cf_idx FN(max_pool_backward_plane)(const CF_T *go, const int64_t *idx, cf_idx n_out,
                                          CF_T *gx, cf_idx plane) {
    memset(gx, 0, (size_t)plane * sizeof(CF_T));
    for (cf_idx p = 0; p < n_out; p++) {
        const int64_t at = idx[p];
        if ((uint64_t)at >= (uint64_t)plane) return p;
        gx[at] += go[p];
    }
    return -1;
}

/* ---------------------------------------------------------- avg, forward */

/* Average pooling of one zero-padded plane. The divisor of output (od, oh, ow)
 * is dcount[od] * hcount[oh] * wcount[ow] (the caller applies torch's
 * count_include_pad / divisor_override rules; wcount is padded to a whole
 * number of vectors). The sum runs in row-major window order, as torch's. */
static void FN(avg_pool_plane)(const CF_T *buf, CF_T *out, const CF_T *dcount,
                                           const CF_T *hcount, const CF_T *wcount,
                                           const cf_pool_geom *g) {
    for (cf_idx od = 0; od < g->OD; od++)
        for (cf_idx oh = 0; oh < g->OH; oh++) {
            const CF_T *base = buf + (od * g->sd * g->Hp + oh * g->sh) * g->Wp;
            CF_T *o = out + (od * g->OH + oh) * g->OW;
            const CF_V row_div = FN(cf_splat)(dcount[od] * hcount[oh]);
            for (cf_idx ow0 = 0; ow0 < g->OW; ow0 += CF_VW) {
                CF_V sum = FN(cf_splat)(0);
                const CF_T *chunk = base + ow0 * g->sw;
                for (cf_idx a = 0; a < g->KD; a++)
                    for (cf_idx i = 0; i < g->KH; i++) {
                        const CF_T *row = chunk + (a * g->Hp + i) * g->Wp;
                        for (cf_idx j = 0; j < g->KW; j++)
                            sum += FN(cf_load_strided)(row + j, g->sw);
                    }
                CF_V wdiv;
                memcpy(&wdiv, wcount + ow0, sizeof wdiv);
                const CF_V avg = sum / (row_div * wdiv);
                CF_T vals[CF_VW];
                memcpy(vals, &avg, sizeof avg);
                memcpy(o + ow0, vals, (size_t)cf_min(CF_VW, g->OW - ow0) * sizeof(CF_T));
            }
        }
}

/* --------------------------------------------------------- avg, backward */

/* grad_x plane of average pooling: each output's gradient, divided as in the
 * forward pass, is added to every tap of its window in the zero-filled padded
 * buffer gbuf (overlapping windows sum), whose interior is then copied out.
 * The divided row is first spread to input resolution (spread[ow*sw], zeros
 * between; scratch of OW*sw values) so every tap is one contiguous,
 * vectorisable add instead of a strided scatter. */
static void FN(avg_pool_backward_plane)(const CF_T *go, CF_T *gbuf, CF_T *spread, CF_T *gx,
                                        const CF_T *dcount, const CF_T *hcount,
                                        const CF_T *wcount, const cf_pool_geom *g) {
    const cf_idx span = g->OW * g->sw;
    memset(gbuf, 0, (size_t)(g->Dp * g->Hp * g->Wp) * sizeof(CF_T));
    memset(spread, 0, (size_t)span * sizeof(CF_T));
    for (cf_idx od = 0; od < g->OD; od++)
        for (cf_idx oh = 0; oh < g->OH; oh++) {
            const CF_T *gor = go + (od * g->OH + oh) * g->OW;
            const CF_T row_div = dcount[od] * hcount[oh];
            for (cf_idx ow = 0; ow < g->OW; ow++)
                spread[ow * g->sw] = gor[ow] / (row_div * wcount[ow]);
            CF_T *base = gbuf + (od * g->sd * g->Hp + oh * g->sh) * g->Wp;
            for (cf_idx a = 0; a < g->KD; a++)
                for (cf_idx i = 0; i < g->KH; i++)
                    for (cf_idx j = 0; j < g->KW; j++) {
                        CF_T *row = base + (a * g->Hp + i) * g->Wp + j;
                        for (cf_idx k = 0; k < span; k++) row[k] += spread[k];
                    }
        }
    for (cf_idx d = 0; d < g->D; d++)
        for (cf_idx h = 0; h < g->H; h++)
            memcpy(gx + (d * g->H + h) * g->W,
                   gbuf + ((d + g->pd) * g->Hp + h + g->ph) * g->Wp + g->pw,
                   (size_t)g->W * sizeof(CF_T));
}

/* --------------------------------------------------------------- adaptive */

/* Sum of n contiguous values, VW lanes then a fixed-order lane sum. */
CF_INLINE CF_T FN(cf_sum)(const CF_T *x, cf_idx n) {
    CF_V acc = FN(cf_splat)(0);
    cf_idx i = 0;
    for (; i + CF_VW <= n; i += CF_VW) {
        CF_V v;
        memcpy(&v, x + i, sizeof v);
        acc += v;
    }
    /* lanes summed as a tree (fixed order, so still deterministic): a
     * sequential lane sum is a 16-add latency chain, which dominates small
     * planes such as 7x7 */
    CF_T lanes[CF_VW];
    memcpy(lanes, &acc, sizeof lanes);
    for (cf_idx half = CF_VW / 2; half >= 1; half /= 2)
        for (cf_idx j = 0; j < half; j++) lanes[j] += lanes[j + half];
    CF_T s = lanes[0];
    for (; i < n; i++) s += x[i];
    return s;
}

/* Adaptive pooling of one (H, W) plane: output (oh, ow) covers rows
 * [hs[oh], he[oh]) and columns [ws[ow], we[ow]) (torch's window rule, computed
 * by the caller). Global pooling is the 1x1 case. */
static void FN(adaptive_avg_plane)(const CF_T *x, CF_T *out, cf_idx H, cf_idx W,
                                               cf_idx OH, cf_idx OW,
                                               const int64_t *hs, const int64_t *he,
                                               const int64_t *ws, const int64_t *we) {
    for (cf_idx oh = 0; oh < OH; oh++)
        for (cf_idx ow = 0; ow < OW; ow++) {
            const cf_idx w0 = ws[ow], w1 = we[ow];
            CF_T sum = 0;
            if (w0 == 0 && w1 == W) {
                /* full rows: the window is one contiguous run */
                sum = FN(cf_sum)(x + hs[oh] * W, (he[oh] - hs[oh]) * W);
            } else {
                for (cf_idx h = hs[oh]; h < he[oh]; h++) sum += FN(cf_sum)(x + h * W + w0, w1 - w0);
            }
            out[oh * OW + ow] = sum / (CF_T)((he[oh] - hs[oh]) * (w1 - w0));
        }
    (void)H;
}

/* Global max of n contiguous values by torch's scan (last NaN, else first
 * maximum), VW lanes at a time: each lane keeps its own scan result and the
 * chunk it came from; the lanes are then merged in position order. */
CF_INLINE void FN(global_max)(const CF_T *x, cf_idx n, CF_T *out, int64_t *idx) {
    CF_T m = -INFINITY;
    cf_idx at = 0, i = 0;
    if (!idx && n >= 4 * CF_VW) {
        /* value only: NaN if any, else the maximum, so the order of merging
         * does not matter and four independent chains hide the latency */
        CF_V acc[4];
        for (int k = 0; k < 4; k++) acc[k] = FN(cf_splat)(-INFINITY);
        for (; i + 4 * CF_VW <= n; i += 4 * CF_VW)
            for (int k = 0; k < 4; k++) {
                CF_V v;
                memcpy(&v, x + i + k * CF_VW, sizeof v);
                acc[k] = FN(cf_select)(FN(cf_max_update)(v, acc[k]), v, acc[k]);
            }
        for (int k = 1; k < 4; k++)
            acc[0] = FN(cf_select)(FN(cf_max_update)(acc[k], acc[0]), acc[k], acc[0]);
        CF_T lanes[CF_VW];
        memcpy(lanes, &acc[0], sizeof lanes);
        for (cf_idx l = 0; l < CF_VW; l++)
            if (lanes[l] > m || lanes[l] != lanes[l]) m = lanes[l];
    } else if (n >= 2 * CF_VW) {
        CF_V mv = FN(cf_splat)(-INFINITY);
        CF_M chunk = {0}, from = {0};
        const CF_M one = chunk + 1;
        for (; i + CF_VW <= n; i += CF_VW, chunk += one) {
            CF_V v;
            memcpy(&v, x + i, sizeof v);
            const CF_M upd = FN(cf_max_update)(v, mv);
            mv = FN(cf_select)(upd, v, mv);
            from = (chunk & upd) | (from & ~upd);
        }
        CF_T lane_m[CF_VW];
        CF_ITYPE lane_c[CF_VW];
        memcpy(lane_m, &mv, sizeof mv);
        memcpy(lane_c, &from, sizeof from);
        /* merge without data-dependent branches: the latest NaN if any lane
         * holds one, else the earliest position of the largest value */
        cf_idx nan_at = -1, best_at = n;
        CF_T best = -INFINITY;
        for (cf_idx l = 0; l < CF_VW; l++) {
            const cf_idx pos = (cf_idx)lane_c[l] * CF_VW + l;
            nan_at = lane_m[l] != lane_m[l] && pos > nan_at ? pos : nan_at;
            best = lane_m[l] > best ? lane_m[l] : best;
        }
        for (cf_idx l = 0; l < CF_VW; l++) {
            const cf_idx pos = (cf_idx)lane_c[l] * CF_VW + l;
            best_at = lane_m[l] == best && pos < best_at ? pos : best_at;
        }
        if (nan_at >= 0) {
            at = nan_at;
            m = x[nan_at];
        } else {
            at = best_at;
            m = best;
        }
    }
    for (; i < n; i++) /* the tail comes after every lane's position */
        if (x[i] > m || x[i] != x[i]) {
            m = x[i];
            at = i;
        }
    *out = m;
    if (idx) *idx = at;
}

static void FN(adaptive_max_plane)(const CF_T *x, CF_T *out, int64_t *idx, cf_idx W,
                                   cf_idx OH, cf_idx OW, const int64_t *hs, const int64_t *he,
                                   const int64_t *ws, const int64_t *we) {
    if (OH == 1 && OW == 1 && ws[0] == 0 && we[0] == W) { /* global: one contiguous run */
        FN(global_max)(x + hs[0] * W, (he[0] - hs[0]) * W, out, idx);
        if (idx) idx[0] += hs[0] * W;
        return;
    }
    for (cf_idx oh = 0; oh < OH; oh++)
        for (cf_idx ow = 0; ow < OW; ow++) {
            CF_T m = -INFINITY;
            cf_idx at = hs[oh] * W + ws[ow];
            for (cf_idx h = hs[oh]; h < he[oh]; h++)
                for (cf_idx w = ws[ow]; w < we[ow]; w++) {
                    const CF_T v = x[h * W + w];
                    if (v > m || v != v) {
                        m = v;
                        at = h * W + w;
                    }
                }
            out[oh * OW + ow] = m;
            if (idx) idx[oh * OW + ow] = at;
        }
}

static void FN(adaptive_avg_backward_plane)(const CF_T *go, CF_T *gx, cf_idx H, cf_idx W,
                                            cf_idx OH, cf_idx OW,
                                            const int64_t *hs, const int64_t *he,
                                            const int64_t *ws, const int64_t *we) {
    if (OH == 1 && OW == 1 && hs[0] == 0 && he[0] == H && ws[0] == 0 && we[0] == W) {
        const CF_T share = go[0] / (CF_T)(H * W); /* global: one value everywhere */
        for (cf_idx i = 0; i < H * W; i++) gx[i] = share;
        return;
    }
    memset(gx, 0, (size_t)(H * W) * sizeof(CF_T));
    for (cf_idx oh = 0; oh < OH; oh++)
        for (cf_idx ow = 0; ow < OW; ow++) {
            const CF_T share = go[oh * OW + ow] / (CF_T)((he[oh] - hs[oh]) * (we[ow] - ws[ow]));
            for (cf_idx h = hs[oh]; h < he[oh]; h++)
                for (cf_idx w = ws[ow]; w < we[ow]; w++) gx[h * W + w] += share;
        }
}

static cf_idx FN(pool_vector_width)(void) { return CF_VW; }
