/* dtype-generic convolution micro-kernels; included once per dtype by
 * conv_common.h with CF_T (float/double), CF_SFX (f32/f64) and CF_ITYPE (an
 * integer type of CF_T's width, for shuffle masks) defined.
 *
 * Each function writes only memory its caller owns (see _conv.pyx for the partitioning).
 * CF_VW (lanes per vector) is exported as direct_vector_width_<sfx>(). */

#include "cf_vector_impl.h"

/* ----------------------------------------------------------------- padding */

/* dst[r][q][j] = src[r - pd][q - ph][j - pw] inside src, else 0: one plane,
 * padded so the direct kernels need no bounds checks. src [D][H][W], dst
 * [Dp][Hp][Wp]; negative offsets crop. */
static void FN(pad_plane)(const CF_T *src, cf_idx D, cf_idx H, cf_idx W,
                          CF_T *dst, cf_idx Dp, cf_idx Hp, cf_idx Wp,
                          cf_idx pd, cf_idx ph, cf_idx pw) {
    memset(dst, 0, (size_t)(Dp * Hp * Wp) * sizeof(CF_T));
    const cf_idx lo = cf_max(0, -pw), hi = cf_min(W, Wp - pw); /* columns that land */
    if (hi <= lo) return;
    for (cf_idx d = cf_max(0, -pd); d < cf_min(D, Dp - pd); d++)
        for (cf_idx h = cf_max(0, -ph); h < cf_min(H, Hp - ph); h++)
            memcpy(dst + ((d + pd) * Hp + h + ph) * Wp + pw + lo, src + (d * H + h) * W + lo,
                   (size_t)(hi - lo) * sizeof(CF_T));
}

/* ---------------------------------------------------------------- direct */

/* NB output channels x NCH vector chunks of one output row (od, oh), from
 * output column ow0: NB*NCH accumulators stay in registers while all
 * C*KD*KH*KW taps stream past. x is padded (pads 0 in g, g->W is the padded
 * row length) and wide enough that every load is a full vector. */
CF_INLINE void FN(cf_forward_tile)(const CF_T *x, const CF_T *w, cf_idx wstride,
                                   const CF_T *bias, CF_T *out, cf_idx ostride,
                                   cf_idx od, cf_idx oh, cf_idx ow0, const cf_geom *g,
                                   const int NB, const int NCH) {
    const cf_idx KVOL = g->KD * g->KH * g->KW;
    const cf_idx HW = g->H * g->W, DHW = g->D * HW;
    const cf_idx cstep = CF_VW * g->sw;
    const CF_T *x0 = x + od * g->sd * HW + oh * g->sh * g->W + ow0 * g->sw;
    CF_V acc[8]; /* NB*NCH <= 8; fixed sizes (not VLAs) let GCC keep them in registers */
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 8
        for (int q = 0; q < NCH; q++) acc[b * NCH + q] = FN(cf_splat)(bias ? bias[b] : (CF_T)0);
    for (cf_idx c = 0; c < g->C; c++) {
        for (cf_idx kd = 0; kd < g->KD; kd++) {
            for (cf_idx kh = 0; kh < g->KH; kh++) {
                const CF_T *xr = x0 + c * DHW + kd * g->dd * HW + kh * g->dh * g->W;
                const CF_T *wr = w + c * KVOL + (kd * g->KH + kh) * g->KW;
                for (cf_idx kw = 0; kw < g->KW; kw++) {
                    CF_V xv[4];
#pragma GCC unroll 8
                    for (int q = 0; q < NCH; q++)
                        xv[q] = FN(cf_load_strided)(xr + kw * g->dw + q * cstep, g->sw);
#pragma GCC unroll 8
                    for (int b = 0; b < NB; b++) {
                        const CF_T wv = wr[b * wstride + kw];
#pragma GCC unroll 8
                        for (int q = 0; q < NCH; q++) acc[b * NCH + q] += xv[q] * wv;
                    }
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
#pragma GCC unroll 8
        for (int q = 0; q < NCH; q++) {
            const cf_idx o0 = ow0 + q * CF_VW;
            const cf_idx cnt = cf_min(CF_VW, g->OW - o0);
            CF_T *o = out + b * ostride + o0;
            if (cnt == CF_VW) {
                memcpy(o, &acc[b * NCH + q], sizeof(CF_V));
            } else {
                CF_T lanes[CF_VW];
                memcpy(lanes, &acc[b * NCH + q], sizeof lanes);
                for (cf_idx j = 0; j < cnt; j++) o[j] = lanes[j];
            }
        }
    }
}

/* The row for NB channels: NCH chunks at a time, then single chunks. */
CF_INLINE void FN(cf_forward_row_block)(const CF_T *x, const CF_T *w, cf_idx wstride,
                                        const CF_T *bias, CF_T *out, cf_idx ostride,
                                        cf_idx od, cf_idx oh, const cf_geom *g,
                                        const int NB, const int NCH) {
    cf_idx ow0 = 0;
    for (; ow0 + (NCH - 1) * CF_VW < g->OW; ow0 += NCH * CF_VW)
        FN(cf_forward_tile)(x, w, wstride, bias, out, ostride, od, oh, ow0, g, NB, NCH);
    for (; ow0 < g->OW; ow0 += CF_VW)
        FN(cf_forward_tile)(x, w, wstride, bias, out, ostride, od, oh, ow0, g, NB, 1);
}

/* Forward output row (od, oh) for nb <= CF_KB output channels of one group.
 * x: the group's padded input planes of one image, [C][D][H][W] of g;
 * w: weights of the first channel, [nb][C][KD][KH][KW];
 * bias: nb values or NULL; out: &out[k0][od][oh][0], planes OD*OH*OW apart.
 * Blocks of 8 channels x 1 chunk, 4 x 2, 2 x 4 and 1 x 4 keep eight (four)
 * independent accumulator chains in flight whatever nb is. */
CF_DISPATCH void FN(direct_forward_row)(const CF_T *x, const CF_T *w, const CF_T *bias,
                                        CF_T *out, cf_idx nb, cf_idx od, cf_idx oh,
                                        const cf_geom *g) {
    const cf_idx wstride = g->C * g->KD * g->KH * g->KW;
    const cf_idx ostride = g->OD * g->OH * g->OW;
    cf_idx b = 0;
#define CF_FWD_BLOCK(NB, NCH)                                                          \
    FN(cf_forward_row_block)(x, w + b * wstride, wstride, bias ? bias + b : NULL,      \
                             out + b * ostride, ostride, od, oh, g, NB, NCH);          \
    b += NB
    if (nb - b >= 8) { CF_FWD_BLOCK(8, 1); }
    if (nb - b >= 4) { CF_FWD_BLOCK(4, 2); }
    if (nb - b >= 2) { CF_FWD_BLOCK(2, 4); }
    if (nb - b >= 1) { CF_FWD_BLOCK(1, 4); }
#undef CF_FWD_BLOCK
}

/* ------------------------------------------- direct, channels in lanes */

/* Stride-1 forward with the output channels in the vector lanes: the packed
 * weights give one vector of channels per tap, the input value of each pixel
 * is a broadcast operand, so nothing is copied into columns (for few output
 * channels im2col's packing costs as much as its GEMM). The pixels of a tile
 * are consecutive positions q of the padded input plane: output (od, oh, ow)
 * sits at q = (od*H + oh)*W + ow (g: padded extents, pads 0), and tap
 * (kd, kh, kw) reads x[q + (kd*dd*H + kh*dh)*W + kw*dw], so a tile spans rows
 * without any index arithmetic; positions with ow >= OW (or oh >= OH) are
 * computed but not stored. */

/* Output channels per block of the channel-vectorised kernel: NV vectors. */
CF_INLINE int FN(cf_cv_vectors)(int level) { return level >= 4 ? 4 : 2; }

/* Pixels per tile for NV vectors of channels: at most 24 (AVX-512) or 12
 * (two-register vectors) accumulators, at least 4 pixels. */
CF_INLINE int FN(cf_cv_pixels)(int level, int nv) {
    if (level >= 4) return nv == 1 ? 24 : nv == 2 ? 12 : nv == 3 ? 8 : 6;
    return nv == 1 ? 6 : 3;
}

/* acc[i][v] = bias + sum over taps of x[q0 + i + tap] * w[tap][v], stored to
 * tmp[i*NV + v]. xq: &x[q0] of the group's first padded plane; w: [R][NV*VW]. */
CF_INLINE void FN(cf_cv_tile)(const CF_T *xq, const CF_T *w, const CF_T *bias, CF_V *tmp,
                              const cf_geom *g, const int NV, const int NC) {
    const cf_idx HW = g->H * g->W, DHW = g->D * HW;
    CF_V acc[24]; /* NV*NC <= 24 */
#pragma GCC unroll 24
    for (int i = 0; i < NC; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            if (bias) memcpy(&acc[i * NV + v], bias + v * CF_VW, sizeof(CF_V));
            else acc[i * NV + v] = FN(cf_splat)(0);
        }
    for (cf_idx c = 0; c < g->C; c++)
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++) {
        const CF_T *xr = xq + c * DHW + kd * g->dd * HW + kh * g->dh * g->W;
        for (cf_idx kw = 0; kw < g->KW; kw++, w += NV * CF_VW) {
            const CF_T *xs = xr + kw * g->dw;
            CF_V wv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) memcpy(&wv[v], w + v * CF_VW, sizeof wv[v]);
#pragma GCC unroll 24
            for (int i = 0; i < NC; i++) {
                const CF_T xi = xs[i];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i * NV + v] += wv[v] * xi;
            }
        }
    }
#pragma GCC unroll 24
    for (int i = 0; i < NV * NC; i++) tmp[i] = acc[i];
}

/* Scatter a tile's pixels (tmp from cf_cv_tile) to out[k][p] for the nk
 * channels and the positions that are outputs. */
CF_INLINE void FN(cf_cv_store)(const CF_V *tmp, cf_idx q0, int nc, int nv, cf_idx nk,
                               CF_T *out, const cf_geom *g) {
    const cf_idx HW = g->H * g->W, P = g->OD * g->OH * g->OW;
    cf_idx od = q0 / HW, oh = q0 % HW / g->W, ow = q0 % g->W;
    const CF_T *t = (const CF_T *)tmp;
    for (int i = 0; i < nc; i++) {
        if (ow < g->OW && oh < g->OH) {
            CF_T *o = out + (od * g->OH + oh) * g->OW + ow;
            const CF_T *ti = t + (cf_idx)i * nv * CF_VW;
            for (cf_idx k = 0; k < nk; k++) o[k * P] = ti[k];
        }
        if (++ow == g->W) { ow = 0; if (++oh == g->H) { oh = 0; od++; } }
    }
}

/* Tiles of NC pixels over [q0, q1); the last one ends at q1, recomputing a
 * few pixels of its neighbour (same values, same owner) rather than running
 * a narrow tile. Needs q1 - q0 >= NC. */
CF_INLINE void FN(cf_cv_span)(const CF_T *x, const CF_T *w, const CF_T *bias, CF_T *out,
                              cf_idx q0, cf_idx q1, cf_idx nk, const cf_geom *g,
                              const int NV, const int NC) {
    CF_V tmp[24];
    for (cf_idx q = q0; q < q1; q += NC) {
        const cf_idx qs = cf_min(q, q1 - NC);
        FN(cf_cv_tile)(x + qs, w, bias, tmp, g, NV, NC);
        FN(cf_cv_store)(tmp, qs, NC, NV, nk, out, g);
    }
}

/* The same over the output rows that start in [q0, q1), tile by tile within
 * each row: no positions past a row's end are computed, so when a row is not
 * much wider than a tile this wastes less than running across rows (Inception
 * 5x5 at 14x14: 16 positions computed per 14 instead of 18 plus overlap).
 * Needs OW >= NC. */
CF_INLINE void FN(cf_cv_rows)(const CF_T *x, const CF_T *w, const CF_T *bias, CF_T *out,
                              cf_idx q0, cf_idx q1, cf_idx nk, const cf_geom *g,
                              const int NV, const int NC) {
    for (cf_idx q = (q0 + g->W - 1) / g->W * g->W; q < q1; q += g->W)
        if (q / g->W % g->H < g->OH)
            FN(cf_cv_span)(x, w, bias, out, q, q + g->OW, nk, g, NV, NC);
}

/* Forward of positions [q0, q1) for nk output channels (one block, at most
 * cf_cv_vectors(level) vectors) of one image and group, across rows or row
 * by row, whichever computes fewer tiles.
 * x: the group's padded planes [C][D][H][W] of g (stride 1, pads 0);
 * w: the block's packed weights [R][ceil(nk/VW)*VW], channels past nk zero;
 * bias: as many values, or NULL; out: &out[n, k0, 0], planes OD*OH*OW apart.
 * q0 is a multiple of g->W; q1 is at most the position after the last output. */
CF_DISPATCH void FN(direct_forward_cv)(const CF_T *x, const CF_T *w, const CF_T *bias,
                                       CF_T *out, cf_idx q0, cf_idx q1, cf_idx nk,
                                       const cf_geom *g, int level) {
    const int nv = (int)((nk + CF_VW - 1) / CF_VW);
    const cf_idx nc = FN(cf_cv_pixels)(level, nv);
    const cf_idx across = (q1 - q0 + nc - 1) / nc;
    const cf_idx by_row = (q1 - q0 + g->W - 1) / g->W * ((g->OW + nc - 1) / nc);
    const int rows = g->OW >= nc && by_row < across;
#define CF_CV_SPAN(NV, NC)                                                             \
    if (rows) FN(cf_cv_rows)(x, w, bias, out, q0, q1, nk, g, NV, NC);                  \
    else FN(cf_cv_span)(x, w, bias, out, q0, q1, nk, g, NV, NC)
#define CF_CV_NV(NV, NC)                                                               \
    if (q1 - q0 >= NC) { CF_CV_SPAN(NV, NC); }                                         \
    else if (q1 - q0 >= 2) FN(cf_cv_span)(x, w, bias, out, q0, q1, nk, g, NV, 2);      \
    else FN(cf_cv_span)(x, w, bias, out, q0, q1, nk, g, NV, 1)
    if (level >= 4) {
        if (nv == 1) { CF_CV_NV(1, 24); }
        else if (nv == 2) { CF_CV_NV(2, 12); }
        else if (nv == 3) { CF_CV_NV(3, 8); }
        else { CF_CV_NV(4, 6); }
    } else {
        if (nv == 1) { CF_CV_NV(1, 6); }
        else { CF_CV_NV(2, 3); }
    }
#undef CF_CV_NV
#undef CF_CV_SPAN
}

/* Tiles of NC images at one output position, the last ending at image N
 * (recomputing a few, as cf_cv_span does). Needs N >= NC. */
CF_INLINE void FN(cf_cv_images)(const CF_T *xq, cf_idx N, const CF_T *w, const CF_T *bias,
                                CF_T *out, cf_idx out_nstride, cf_idx nk, cf_idx P,
                                const cf_geom *gb, const int NV, const int NC) {
    CF_V tmp[24];
    for (cf_idx n = 0; n < N; n += NC) {
        const cf_idx n0 = cf_min(n, N - NC);
        FN(cf_cv_tile)(xq + n0, w, bias, tmp, gb, NV, NC);
        const CF_T *t = (const CF_T *)tmp;
        for (int i = 0; i < NC; i++)
            for (cf_idx k = 0; k < nk; k++)
                out[(n0 + i) * out_nstride + k * P] = t[(cf_idx)i * NV * CF_VW + k];
    }
}

/* Forward with the images of the batch in the tile instead of positions:
 * for small planes, where rows leave few positions per tile and the padding
 * columns would be a large share of them. xt: one group's padded input with
 * the batch innermost, [C][D][H][W][N] (g: padded extents, any stride);
 * pixel i of a tile is image n0 + i at one output position, so the taps are
 * again consecutive broadcasts (a row of the plane is W*N long, tap kw
 * steps dw*N). Output positions [p0, p1) of nk channels (one block);
 * out: &out[0, k0, 0], images out_nstride apart. Of three tile widths the
 * one that recomputes fewest images runs (batch 64: 16, not 24). */
CF_DISPATCH void FN(direct_forward_cv_batch)(const CF_T *xt, cf_idx N, const CF_T *w,
                                             const CF_T *bias, CF_T *out, cf_idx out_nstride,
                                             cf_idx p0, cf_idx p1, cf_idx nk,
                                             const cf_geom *g, int level) {
    const int nv = (int)((nk + CF_VW - 1) / CF_VW);
    const cf_idx P = g->OD * g->OH * g->OW;
    cf_geom gb = *g;
    gb.W = g->W * N;
    gb.dw = g->dw * N;
    for (cf_idx p = p0; p < p1; p++) {
        const cf_idx od = p / (g->OH * g->OW), oh = p / g->OW % g->OH, ow = p % g->OW;
        const CF_T *xq = xt + ((od * g->sd * g->H + oh * g->sh) * g->W + ow * g->sw) * N;
        CF_T *o = out + p;
#define CF_IMAGES(NV, NC) FN(cf_cv_images)(xq, N, w, bias, o, out_nstride, nk, P, &gb, NV, NC)
#define CF_COST(NC) ((N + (NC) - 1) / (NC) * (NC))
#define CF_PICK(NV, A, B, C)                                                           \
        do {                                                                           \
            if (N >= A && CF_COST(A) <= CF_COST(B) && CF_COST(A) <= CF_COST(C))        \
                CF_IMAGES(NV, A);                                                      \
            else if (N >= B && CF_COST(B) <= CF_COST(C)) CF_IMAGES(NV, B);             \
            else if (N >= C) CF_IMAGES(NV, C);                                         \
            else CF_IMAGES(NV, 1);                                                     \
        } while (0)
        if (level >= 4) {
            if (nv == 1) CF_PICK(1, 24, 16, 8);
            else if (nv == 2) CF_PICK(2, 12, 8, 4);
            else if (nv == 3) CF_PICK(3, 8, 6, 4);
            else CF_PICK(4, 6, 4, 2);
        } else {
            if (nv == 1) CF_PICK(1, 6, 4, 2);
            else CF_PICK(2, 3, 2, 1);
        }
#undef CF_PICK
#undef CF_COST
#undef CF_IMAGES
    }
}

/* Positions computed per output the channels-in-lanes kernel needs for nk
 * channels (the first block): tiling the padded plane of one image (stride
 * 1; g: padded extents, as direct_forward_cv gets it) or, with batch, tiling
 * the N images (as direct_forward_cv_batch picks its width). The driver
 * runs whichever wastes less. */
static double FN(direct_cv_waste)(int level, cf_idx nk, cf_idx N, const cf_geom *g, int batch) {
    const int nv = (int)((cf_min(nk, FN(cf_cv_vectors)(level) * CF_VW) + CF_VW - 1) / CF_VW);
    const cf_idx nc = FN(cf_cv_pixels)(level, nv);
    if (batch) {
        /* the candidate widths of direct_forward_cv_batch's CF_PICK */
        static const int wide[2][4][3] = {{{6, 4, 2}, {3, 2, 1}, {3, 2, 1}, {3, 2, 1}},
                                          {{24, 16, 8}, {12, 8, 4}, {8, 6, 4}, {6, 4, 2}}};
        cf_idx best = N * N + N; /* the 1-wide fallback computes N, any width at most this */
        for (int c = 0; c < 3; c++) {
            const cf_idx w = wide[level >= 4][nv - 1][c];
            if (N >= w) best = cf_min(best, (N + w - 1) / w * w);
        }
        /* one image per tile leaves only NV accumulator chains: latency-bound */
        return best > N * N ? 4.0 : (double)best / (double)N;
    }
    const cf_idx P = g->OD * g->OH * g->OW;
    const cf_idx qend = ((g->OD - 1) * g->H + g->OH - 1) * g->W + g->OW;
    if (qend < nc) return 4.0; /* narrow tiles: latency-bound */
    const cf_idx across = (qend + nc - 1) / nc;
    const cf_idx by_row = (qend + g->W - 1) / g->W * ((g->OW + nc - 1) / nc);
    const cf_idx tiles = g->OW >= nc && by_row < across ? by_row : across;
    return (double)(tiles * nc) / (double)P;
}

/* Pack weights [K][R] (rows R = C*KVOL apart) into channel blocks of
 * cf_cv_vectors(level) vectors: block b at dst + b*NVmax*VW*R holds
 * [R][ceil(nk_b/VW)*VW], zero past channel K. Bias likewise, block b at
 * bias_dst + b*NVmax*VW (when bias is not NULL). */
static int FN(direct_cv_pack)(const CF_T *w, const CF_T *bias, cf_idx K, cf_idx R,
                              CF_T *dst, CF_T *bias_dst, int level) {
    const cf_idx kb = FN(cf_cv_vectors)(level) * CF_VW;
    int finite = 1;
    for (cf_idx k0 = 0; k0 < K; k0 += kb) {
        const cf_idx nk = cf_min(kb, K - k0), width = (nk + CF_VW - 1) / CF_VW * CF_VW;
        CF_T *d = dst + k0 * R;
        for (cf_idx r = 0; r < R; r++)
            for (cf_idx k = 0; k < width; k++) {
                const CF_T v = k < nk ? w[(k0 + k) * R + r] : (CF_T)0;
                finite &= v - v == 0;  /* false for NaN and +-inf */
                d[r * width + k] = v;
            }
        if (bias)
            for (cf_idx k = 0; k < width; k++) bias_dst[k0 + k] = k < nk ? bias[k0 + k] : (CF_T)0;
    }
    return finite;
}

static cf_idx FN(direct_cv_block)(int level) { return FN(cf_cv_vectors)(level) * CF_VW; }
static cf_idx FN(direct_cv_pixels)(int level, cf_idx nk) {
    return FN(cf_cv_pixels)(level, (int)((nk + CF_VW - 1) / CF_VW));
}

/* Weight gradient of NB output channels x one input channel for the taps
 * (kd, kh, kw0 .. kw0+NKW-1), summed over the batch:
 * gw[b, tap] = sum_n,o go[n, b, o] * x[n, o*s + tap*d]. Each go vector is
 * loaded once for NKW taps, each x vector once for NB channels.
 * x: &xpad[0, g*C + c] (padded planes, images x_nstride apart);
 * go: &gopad[0, g*K + k0], rows padded to gow >= OW with zeros (images
 * go_nstride apart); gw: &grad_weight[g*K + k0, c], rows C*KVOL apart. */
CF_INLINE void FN(cf_backward_weight_taps)(const CF_T *x, cf_idx x_nstride,
                                           const CF_T *go, cf_idx go_nstride, cf_idx gow,
                                           cf_idx N, CF_T *gw, const cf_geom *g,
                                           cf_idx kd, cf_idx kh, cf_idx kw0,
                                           const int NB, const int NKW) {
    const cf_idx HW = g->H * g->W;
    const cf_idx P = g->OD * g->OH * gow;
    const cf_idx wstride = g->C * g->KD * g->KH * g->KW;
    CF_V acc[8 * 3]; /* NB <= 8, NKW <= 3; fixed sizes stay in registers */
    const cf_idx last = (g->OW - 1) / CF_VW * CF_VW;       /* start of the last chunk */
    const CF_M tail = FN(cf_lane_mask)(g->OW - last);
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
        for (int t = 0; t < NKW; t++) acc[b * NKW + t] = FN(cf_splat)(0);
    for (cf_idx n = 0; n < N; n++) {
        for (cf_idx od = 0; od < g->OD; od++) {
            for (cf_idx oh = 0; oh < g->OH; oh++) {
                const CF_T *xr = x + n * x_nstride + (od * g->sd + kd * g->dd) * HW
                                   + (oh * g->sh + kh * g->dh) * g->W + kw0 * g->dw;
                const CF_T *gr = go + n * go_nstride + (od * g->OH + oh) * gow;
                for (cf_idx ow0 = 0; ow0 < g->OW; ow0 += CF_VW) {
                    CF_V xv[3];
#pragma GCC unroll 4
                    for (int t = 0; t < NKW; t++) {
                        xv[t] = FN(cf_load_strided)(xr + t * g->dw + ow0 * g->sw, g->sw);
                        if (ow0 == last) xv[t] = (CF_V)((CF_M)xv[t] & tail);
                    }
#pragma GCC unroll 8
                    for (int b = 0; b < NB; b++) {
                        CF_V gv;
                        memcpy(&gv, gr + b * P + ow0, sizeof gv);
#pragma GCC unroll 4
                        for (int t = 0; t < NKW; t++) acc[b * NKW + t] += xv[t] * gv;
                    }
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
        for (int t = 0; t < NKW; t++)
            gw[b * wstride + (kd * g->KH + kh) * g->KW + kw0 + t] = FN(cf_hsum)(acc[b * NKW + t]);
}

CF_INLINE void FN(cf_backward_weight_block)(const CF_T *x, cf_idx x_nstride,
                                            const CF_T *go, cf_idx go_nstride, cf_idx gow,
                                            cf_idx N, CF_T *gw, const cf_geom *g,
                                            const int NB) {
    for (cf_idx kd = 0; kd < g->KD; kd++) {
        for (cf_idx kh = 0; kh < g->KH; kh++) {
            cf_idx kw = 0;
            for (; kw + 3 <= g->KW; kw += 3)
                FN(cf_backward_weight_taps)(x, x_nstride, go, go_nstride, gow, N, gw, g,
                                            kd, kh, kw, NB, 3);
            if (g->KW - kw == 2)
                FN(cf_backward_weight_taps)(x, x_nstride, go, go_nstride, gow, N, gw, g,
                                            kd, kh, kw, NB, 2);
            else if (g->KW - kw == 1)
                FN(cf_backward_weight_taps)(x, x_nstride, go, go_nstride, gow, N, gw, g,
                                            kd, kh, kw, NB, 1);
        }
    }
}

/* Weight gradient of nb <= CF_KB output channels x one input channel. */
CF_DISPATCH void FN(direct_backward_weight)(const CF_T *x, cf_idx x_nstride,
                                            const CF_T *go, cf_idx go_nstride, cf_idx gow,
                                            cf_idx N, cf_idx nb, CF_T *gw, const cf_geom *g) {
    const cf_idx P = g->OD * g->OH * gow;
    const cf_idx wstride = g->C * g->KD * g->KH * g->KW;
    cf_idx b = 0;
#define CF_BW_BLOCK(NB)                                                                \
    FN(cf_backward_weight_block)(x, x_nstride, go + b * P, go_nstride, gow, N,         \
                                 gw + b * wstride, g, NB);                             \
    b += NB
    if (nb - b >= 8) { CF_BW_BLOCK(8); }
    if (nb - b >= 4) { CF_BW_BLOCK(4); }
    if (nb - b >= 2) { CF_BW_BLOCK(2); }
    if (nb - b >= 1) { CF_BW_BLOCK(1); }
#undef CF_BW_BLOCK
}

/* ------------------------------------------------------- im2col / col2im */

/* Column tile for output positions [p0, p0 + cnt) of one image and group:
 * col[(c, kd, kh, kw)][j] = x[c, od*sd - pd + kd*dd, ...] or 0 in the padding.
 * x: the group's [C][D][H][W] planes; col: C*KVOL rows of cnt. The tile is
 * walked in output-row segments; coordinates advance without divisions. */
CF_DISPATCH void FN(vol2col)(const CF_T *x, CF_T *col, cf_idx p0, cf_idx cnt, const cf_geom *g) {
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW;
    const cf_idx od0 = p0 / OHW, oh0 = (p0 % OHW) / g->OW, ow0 = p0 % g->OW;
    CF_T *dst = col;
    for (cf_idx c = 0; c < g->C; c++)
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++)
    for (cf_idx kw = 0; kw < g->KW; kw++, dst += cnt) {
        cf_idx wlo, whi;
        cf_out_range(kw, g->sw, g->pw, g->dw, g->OW, g->W, &wlo, &whi);
        const cf_idx off = kw * g->dw - g->pw;
        cf_idx od = od0, oh = oh0, ow = ow0;
        for (cf_idx j = 0; j < cnt;) {
            const cf_idx len = cf_min(g->OW - ow, cnt - j);
            const cf_idx id = od * g->sd - g->pd + kd * g->dd;
            const cf_idx ih = oh * g->sh - g->ph + kh * g->dh;
            CF_T *d = dst + j;                   /* d[o - ow] is output column o */
            if (id < 0 || id >= g->D || ih < 0 || ih >= g->H) {
                memset(d, 0, (size_t)len * sizeof(CF_T));
            } else {
                const CF_T *xr = x + c * DHW + id * HW + ih * g->W;
                const cf_idx a = cf_max(ow, wlo), e = cf_max(a, cf_min(ow + len, whi));
                for (cf_idx o = ow; o < a; o++) d[o - ow] = 0;
                if (g->sw == 1) {
                    memcpy(d + (a - ow), xr + a + off, (size_t)(e - a) * sizeof(CF_T));
                } else {
                    for (cf_idx o = a; o < e; o++) d[o - ow] = xr[o * g->sw + off];
                }
                for (cf_idx o = e; o < ow + len; o++) d[o - ow] = 0;
            }
            j += len;
            ow = 0;
            if (++oh == g->OH) { oh = 0; od++; }
        }
    }
}

/* Adjoint of vol2col: gx[c, id, ih, iw] += col[(c, kd, kh, kw)][j]. The caller
 * owns the group's gx planes of this image and zeroes them beforehand.
 * Dispatched: the adds vectorise on the wider ISAs. */
CF_DISPATCH void FN(col2vol)(const CF_T *col, CF_T *gx, cf_idx p0, cf_idx cnt, const cf_geom *g) {
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW;
    const cf_idx od0 = p0 / OHW, oh0 = (p0 % OHW) / g->OW, ow0 = p0 % g->OW;
    const CF_T *src = col;
    for (cf_idx c = 0; c < g->C; c++)
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++)
    for (cf_idx kw = 0; kw < g->KW; kw++, src += cnt) {
        cf_idx wlo, whi;
        cf_out_range(kw, g->sw, g->pw, g->dw, g->OW, g->W, &wlo, &whi);
        const cf_idx off = kw * g->dw - g->pw;
        cf_idx od = od0, oh = oh0, ow = ow0;
        for (cf_idx j = 0; j < cnt;) {
            const cf_idx len = cf_min(g->OW - ow, cnt - j);
            const cf_idx id = od * g->sd - g->pd + kd * g->dd;
            const cf_idx ih = oh * g->sh - g->ph + kh * g->dh;
            if (id >= 0 && id < g->D && ih >= 0 && ih < g->H) {
                const CF_T *sj = src + j;        /* sj[o - ow] is output column o */
                CF_T *xr = gx + c * DHW + id * HW + ih * g->W;
                const cf_idx a = cf_max(ow, wlo), e = cf_min(ow + len, whi);
                if (g->sw == 1) {
                    for (cf_idx o = a; o < e; o++) xr[o + off] += sj[o - ow];
                } else {
                    for (cf_idx o = a; o < e; o++) xr[o * g->sw + off] += sj[o - ow];
                }
            }
            j += len;
            ow = 0;
            if (++oh == g->OH) { oh = 0; od++; }
        }
    }
}

/* ------------------------------------------------------------ packed GEMM */

/* The im2col forward runs its own GEMM rather than BLAS: SciPy's sgemm would
 * copy each column tile once more into its own panel order and repack the
 * weights on every call (about a fifth of the time on the 3x3 layers). Here
 * the weights are packed once per call and the columns are gathered straight
 * into panel order, so each input value is copied once.
 *
 * Register tile: MR rows (output channels) x NCH vectors of columns (output
 * positions), MR*NCH accumulators. The column vectors are loaded, each row's
 * weight is a broadcast operand of the FMA. Tile shapes per ISA level (the
 * vectors are 64 bytes: 1 zmm, 2 ymm or 4 xmm registers): AVX-512 12 x 2
 * (24 of 32 zmm), otherwise 4 x 1. */
CF_INLINE cf_idx FN(cf_gemm_mr)(int level) { return level >= 4 ? 12 : 4; }
CF_INLINE cf_idx FN(cf_gemm_nch)(int level) { return level >= 4 ? 2 : 1; }

static cf_idx FN(gemm_tile_rows)(int level) { return FN(cf_gemm_mr)(level); }
static cf_idx FN(gemm_tile_cols)(int level) { return FN(cf_gemm_nch)(level) * CF_VW; }

/* Rows of row block b when m rows are cut into blocks of mr; the last block is
 * rounded up to a multiple of 4 so a narrow tile runs it instead of a padded
 * full one (K = 64 on 12-row tiles would waste an eighth). */
CF_INLINE cf_idx FN(cf_block_rows)(cf_idx m, cf_idx mr, cf_idx b) {
    const cf_idx rest = m - b * mr;
    return rest >= mr ? mr : (rest + 3) / 4 * 4;
}

/* Pack an m x depth matrix, element (i, k) at src[i*row_stride + k*depth_stride],
 * into row blocks [block][depth][rows of the block], zero rows past m. The
 * packed size is (m rounded up to 4) * depth. */
static void FN(gemm_pack_rows)(const CF_T *src, cf_idx m, cf_idx depth, cf_idx row_stride,
                               cf_idx depth_stride, CF_T *dst, int level) {
    const cf_idx mr = FN(cf_gemm_mr)(level);
    for (cf_idx b = 0; b * mr < m; b++) {
        const cf_idx rows = FN(cf_block_rows)(m, mr, b);
        CF_T *d = dst + b * mr * depth;
        for (cf_idx k = 0; k < depth; k++)
            for (cf_idx i = 0; i < rows; i++)
                d[k * rows + i] = b * mr + i < m
                    ? src[(b * mr + i) * row_stride + k * depth_stride] : (CF_T)0;
    }
}

/* Lanes j hold row[j*S] for the strides the column packing meets most (1, 2
 * and 4, as shuffles of full loads: AlexNet's stride 4 gathered lane by lane
 * cost a fifth of its forward time); others lane by lane. Reads S*CF_VW
 * elements at most. */
CF_INLINE CF_V FN(cf_load_every)(const CF_T *row, cf_idx s) {
    if (s != 4) return FN(cf_load_strided)(row, s);
    CF_V v[4], lo, hi, out;
    CF_M pick, halves;
    memcpy(v, row, sizeof v);
    for (int j = 0; j < (int)CF_VW; j++) {
        pick[j] = (4 * j) % (2 * CF_VW);          /* every 4th of a pair, twice */
        halves[j] = j < CF_VW / 2 ? j : CF_VW + j; /* low half of lo, high half of hi */
    }
    lo = __builtin_shuffle(v[0], v[1], pick);
    hi = __builtin_shuffle(v[2], v[3], pick);
    out = __builtin_shuffle(lo, hi, halves);
    return out;
}

/* One run of `len` output positions along an output row, at column `col` of
 * the panel, for the taps of one input channel: d[r*nr + t] = xs[off(r) + t*S]
 * with r = (kd, kh, kw). Full-vector loads and stores; a last partial vector
 * is stored ending at the run's end when the run is at least a vector long,
 * else past it into later runs of the same row (packed after this one) when
 * the row has room, else lane by lane, so no store reaches another row. Loads
 * that would pass x_end go lane by lane. S = 0 reads the stride from g. */
CF_INLINE void FN(cf_pack_run)(const CF_T *xs, const CF_T *x_end, CF_T *d, cf_idx col,
                               cf_idx len, cf_idx nr, const cf_geom *g, const int S) {
    const cf_idx sw = S ? S : g->sw, need = CF_VW * sw;
    const cf_idx HW = g->H * g->W;
    const cf_idx full = len / CF_VW * CF_VW;
    /* where the partial vector goes: -1 none, else its first column */
    const cf_idx tail = full == len ? -1
                      : len >= CF_VW ? len - CF_VW
                      : col + full + CF_VW <= nr ? full : -2;
    d += col;
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++) {
        const CF_T *xr = xs + kd * g->dd * HW + kh * g->dh * g->W;
        for (cf_idx kw = 0; kw < g->KW; kw++, d += nr) {
            const CF_T *src = xr + kw * g->dw;
            cf_idx t = 0;
            for (; t < full; t += CF_VW) {
                if (src + t * sw + need > x_end) break;
                const CF_V v = FN(cf_load_every)(src + t * sw, sw);
                memcpy(d + t, &v, sizeof v);
            }
            if (t == full && tail >= 0 && src + tail * sw + need <= x_end) {
                const CF_V v = FN(cf_load_every)(src + tail * sw, sw);
                memcpy(d + tail, &v, sizeof v);
            } else {
                for (; t < len; t++) d[t] = src[t * sw];
            }
        }
    }
}

/* Column panels of im2col for output positions [p0, p0 + cnt) of one image and
 * group, in panel order: dst[panel][r][j] = col[r][p0 + panel*nr + j], r =
 * (c, kd, kh, kw). x holds the group's planes with the padding already applied
 * (pads 0 in g, g->D/H/W the padded extent); x_end is the end of readable
 * memory after it. A panel's positions fall into runs along output rows; the
 * runs of all panels are listed first (runs: scratch of 3*cnt + cnt/nr + 2),
 * then packed. Columns past cnt are zero. */
CF_DISPATCH void FN(gemm_pack_columns)(const CF_T *x, const CF_T *x_end, CF_T *dst, cf_idx p0,
                                       cf_idx cnt, cf_idx nr, cf_idx *runs, const cf_geom *g) {
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW;
    const cf_idx KVOL = g->KD * g->KH * g->KW, R = g->C * KVOL;
    const cf_idx npanels = (cnt + nr - 1) / nr;
    cf_idx *first = runs;                 /* first[p] .. first[p+1]: runs of panel p */
    cf_idx *run_col = runs + npanels + 1, *run_len = run_col + cnt, *run_base = run_len + cnt;
    cf_idx nruns = 0;
    for (cf_idx pn = 0; pn < npanels; pn++) {
        const cf_idx j0 = pn * nr, width = cf_min(nr, cnt - j0);
        cf_idx p = p0 + j0, od = p / OHW, oh = (p % OHW) / g->OW, ow = p % g->OW;
        first[pn] = nruns;
        for (cf_idx j = 0; j < width; nruns++) {
            run_col[nruns] = j;
            run_len[nruns] = cf_min(g->OW - ow, width - j);
            run_base[nruns] = od * g->sd * HW + oh * g->sh * g->W + ow * g->sw;
            j += run_len[nruns];
            ow = 0;
            if (++oh == g->OH) { oh = 0; od++; }
        }
    }
    first[npanels] = nruns;
    /* 1x1 kernels: channel by channel (each panel reads only a vector or two
     * per plane); larger kernels read several rows per plane and panel, and
     * packing panel by panel keeps the writes in one panel (measured faster) */
    const int by_channel = KVOL == 1;
    for (cf_idx outer = 0; outer < (by_channel ? g->C : npanels); outer++) {
        for (cf_idx inner = 0; inner < (by_channel ? npanels : g->C); inner++) {
            const cf_idx c = by_channel ? outer : inner, pn = by_channel ? inner : outer;
            CF_T *rows = dst + pn * nr * R + c * KVOL * nr;
            for (cf_idx q = first[pn]; q < first[pn + 1]; q++) {
                const CF_T *xs = x + c * DHW + run_base[q];
                if (g->sw == 1) FN(cf_pack_run)(xs, x_end, rows, run_col[q], run_len[q], nr, g, 1);
                else if (g->sw == 2) FN(cf_pack_run)(xs, x_end, rows, run_col[q], run_len[q], nr, g, 2);
                else if (g->sw == 4) FN(cf_pack_run)(xs, x_end, rows, run_col[q], run_len[q], nr, g, 4);
                else FN(cf_pack_run)(xs, x_end, rows, run_col[q], run_len[q], nr, g, 0);
            }
        }
    }
    const cf_idx width = cnt - (npanels - 1) * nr;
    if (width < nr)
        for (cf_idx r = 0; r < R; r++)
            memset(dst + (npanels - 1) * nr * R + r * nr + width, 0,
                   (size_t)(nr - width) * sizeof(CF_T));
}

/* Register-tile accumulators: bias[i] (rows i < rows) or zero. */
CF_INLINE void FN(cf_gemm_init)(CF_V *acc, const CF_T *bias, cf_idx rows, const int MR,
                                const int NCH) {
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 2
        for (int q = 0; q < NCH; q++)
            acc[i * NCH + q] = FN(cf_splat)(bias && i < rows ? bias[i] : (CF_T)0);
}

/* The tile's rows < rows and columns < cols to C (row stride ldc), added to
 * what C holds when accumulate. */
CF_INLINE void FN(cf_gemm_store)(CF_V *acc, CF_T *c, cf_idx ldc, cf_idx rows, cf_idx cols,
                                 int accumulate, const int MR, const int NCH) {
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        if (i >= rows) break;
#pragma GCC unroll 2
        for (int q = 0; q < NCH; q++) {
            const cf_idx n = cf_min(CF_VW, cols - q * CF_VW);
            CF_T *o = c + i * ldc + q * CF_VW;
            if (n == CF_VW) {
                if (accumulate) {
                    CF_V old;
                    memcpy(&old, o, sizeof old);
                    acc[i * NCH + q] += old;
                }
                memcpy(o, &acc[i * NCH + q], sizeof(CF_V));
            } else if (n > 0) {
                CF_T lanes[CF_VW];
                memcpy(lanes, &acc[i * NCH + q], sizeof lanes);
                for (cf_idx j = 0; j < n; j++) o[j] = accumulate ? o[j] + lanes[j] : lanes[j];
            }
        }
    }
}

/* One register tile: C[0:rows, 0:cols] (+)= A B (+ bias) over `depth` steps.
 * A's element (i, k) is at a[i + k*stride] (RC = 1: packed rows, stride MR,
 * or the transposed weights of the input gradient read in place) or at
 * a[i*stride + k] (RC = 0: the forward's weights read in place); b: [depth][nr]
 * packed columns, of which the first NCH*CF_VW are used; c: row stride ldc.
 * Only rows < rows and columns < cols are written. */
CF_INLINE void FN(cf_gemm_tile_strided)(const CF_T *a, cf_idx stride, const CF_T *b,
                                        cf_idx nr, cf_idx depth, CF_T *c, cf_idx ldc,
                                        cf_idx rows, cf_idx cols, const CF_T *bias,
                                        int accumulate, const int MR, const int NCH,
                                        const int RC) {
    CF_V acc[24]; /* MR*NCH <= 24; fixed size keeps them in registers */
    FN(cf_gemm_init)(acc, bias, rows, MR, NCH);
    for (cf_idx k = 0; k < depth; k++) {
        CF_V bv[2];
#pragma GCC unroll 2
        for (int q = 0; q < NCH; q++) memcpy(&bv[q], b + k * nr + q * CF_VW, sizeof bv[q]);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const CF_T av = RC ? a[k * stride + i] : a[i * stride + k];
#pragma GCC unroll 2
            for (int q = 0; q < NCH; q++) acc[i * NCH + q] += bv[q] * av;
        }
    }
    FN(cf_gemm_store)(acc, c, ldc, rows, cols, accumulate, MR, NCH);
}

/* The tile on packed rows: a is [depth][MR]. */
CF_INLINE void FN(cf_gemm_tile)(const CF_T *a, const CF_T *b, cf_idx nr, cf_idx depth,
                                CF_T *c, cf_idx ldc, cf_idx rows, cf_idx cols,
                                const CF_T *bias, int accumulate, const int MR, const int NCH) {
    FN(cf_gemm_tile_strided)(a, MR, b, nr, depth, c, ldc, rows, cols, bias, accumulate,
                             MR, NCH, 1);
}

/* C (+)= A B (+ bias per row) for m x n, reduction depth, with A packed by
 * gemm_pack_rows and B by gemm_pack_columns (panels of the level's tile
 * width). The reduction runs in chunks of at most kc steps so a chunk of A
 * stays in L2 and a panel chunk of B in L1 across the row blocks; later
 * chunks add into C. */
CF_DISPATCH void FN(gemm_packed)(const CF_T *apk, const CF_T *bpk, cf_idx m, cf_idx n,
                                 cf_idx depth, CF_T *c, cf_idx ldc, const CF_T *bias,
                                 int accumulate, cf_idx kc, int level) {
    const cf_idx mr = FN(cf_gemm_mr)(level), nch = FN(cf_gemm_nch)(level);
    const cf_idx nr = nch * CF_VW;
    const cf_idx nchunks = kc > 0 ? (depth + kc - 1) / kc : 1;
    const cf_idx step = (depth + nchunks - 1) / nchunks;
    for (cf_idx k0 = 0; k0 < depth; k0 += step) {
        const cf_idx len = cf_min(step, depth - k0);
        const int acc = accumulate || k0 > 0;
        for (cf_idx j0 = 0; j0 < n; j0 += nr) {
            const CF_T *b = bpk + j0 * depth + k0 * nr;
            for (cf_idx i0 = 0; i0 < m; i0 += mr) {
                const cf_idx rows = FN(cf_block_rows)(m, mr, i0 / mr);
                const CF_T *a = apk + i0 * depth + k0 * rows;
                const CF_T *bi = bias && k0 == 0 ? bias + i0 : NULL;
                CF_T *ct = c + i0 * ldc + j0;
                const cf_idx rm = cf_min(rows, m - i0), cn = cf_min(nr, n - j0);
#define CF_TILE(MR, NCH) FN(cf_gemm_tile)(a, b, nr, len, ct, ldc, rm, cn, bi, acc, MR, NCH)
                if (nch == 2 && cn > CF_VW) {
                    if (rows == 12) CF_TILE(12, 2);
                    else if (rows == 8) CF_TILE(8, 2);
                    else CF_TILE(4, 2);
                } else if (nch == 2) { /* a last panel at most one vector wide */
                    if (rows == 12) CF_TILE(12, 1);
                    else if (rows == 8) CF_TILE(8, 1);
                    else CF_TILE(4, 1);
                } else {
                    CF_TILE(4, 1);
                }
#undef CF_TILE
            }
        }
    }
}

/* C (+)= A B (+ bias per row) as gemm_packed, with A (m x depth) read in
 * place rather than packed: element (i, k) at a[i*rs + k*ks], rs == 1 or
 * ks == 1. For few column panels, where packing A would cost more passes
 * over it than the product (ResNet-18's 2x2 layers: 9.4 MB of weights, 32
 * columns). Row blocks of the level's tile height while they are full, then
 * 8 and 4; the last 1-3 rows go through a zero-padded packed copy (work:
 * 4*depth elements), so no read passes A's last row. */
CF_DISPATCH void FN(gemm_in_place)(const CF_T *a, cf_idx rs, cf_idx ks, const CF_T *bpk,
                                   cf_idx m, cf_idx n, cf_idx depth, CF_T *c, cf_idx ldc,
                                   const CF_T *bias, int accumulate, cf_idx kc, int level,
                                   CF_T *work) {
    const cf_idx mr = FN(cf_gemm_mr)(level), nch = FN(cf_gemm_nch)(level);
    const cf_idx nr = nch * CF_VW;
    const int rc = rs == 1;
    const cf_idx stride = rc ? ks : rs;
    const cf_idx nchunks = kc > 0 ? (depth + kc - 1) / kc : 1;
    const cf_idx step = (depth + nchunks - 1) / nchunks;
    for (cf_idx k0 = 0; k0 < depth; k0 += step) {
        const cf_idx len = cf_min(step, depth - k0);
        const int acc = accumulate || k0 > 0;
        for (cf_idx j0 = 0; j0 < n; j0 += nr) {
            const CF_T *b = bpk + j0 * depth + k0 * nr;
            const cf_idx cn = cf_min(nr, n - j0);
            cf_idx i0 = 0;
            while (m - i0 >= 4) {
                const cf_idx rows = m - i0 >= mr ? mr : m - i0 >= 8 ? 8 : 4;
                const CF_T *ai = a + i0 * rs + k0 * ks;
                const CF_T *bi = bias && k0 == 0 ? bias + i0 : NULL;
                CF_T *ct = c + i0 * ldc + j0;
#define CF_TILE(MR, NCH)                                                                \
    do {                                                                                \
        if (rc) FN(cf_gemm_tile_strided)(ai, stride, b, nr, len, ct, ldc, MR, cn, bi,  \
                                         acc, MR, NCH, 1);                              \
        else FN(cf_gemm_tile_strided)(ai, stride, b, nr, len, ct, ldc, MR, cn, bi, acc, \
                                      MR, NCH, 0);                                      \
    } while (0)
                if (nch == 2 && cn > CF_VW) {
                    if (rows == 12) CF_TILE(12, 2);
                    else if (rows == 8) CF_TILE(8, 2);
                    else CF_TILE(4, 2);
                } else if (nch == 2) {
                    if (rows == 12) CF_TILE(12, 1);
                    else if (rows == 8) CF_TILE(8, 1);
                    else CF_TILE(4, 1);
                } else {
                    CF_TILE(4, 1);
                }
#undef CF_TILE
                i0 += rows;
            }
            if (i0 < m) { /* 1-3 rows left */
                const cf_idx rm = m - i0;
                for (cf_idx k = 0; k < len; k++)
                    for (cf_idx i = 0; i < 4; i++)
                        work[k * 4 + i] = i < rm ? a[(i0 + i) * rs + (k0 + k) * ks] : (CF_T)0;
                const CF_T *bi = bias && k0 == 0 ? bias + i0 : NULL;
                CF_T *ct = c + i0 * ldc + j0;
                if (nch == 2 && cn > CF_VW)
                    FN(cf_gemm_tile)(work, b, nr, len, ct, ldc, rm, cn, bi, acc, 4, 2);
                else
                    FN(cf_gemm_tile)(work, b, nr, len, ct, ldc, rm, cn, bi, acc, 4, 1);
            }
        }
    }
}

/* Sum of one channel's planes over the batch, in double: a[n*nstride + p] for
 * n < N, p < P. Two vectors of doubles per vector of CF_T, lanes summed in a
 * fixed order at the end (deterministic). */
CF_DISPATCH double FN(channel_sum)(const CF_T *a, cf_idx N, cf_idx nstride, cf_idx P) {
    typedef double dvec __attribute__((vector_size(8 * CF_VW)));
    dvec acc = {0};
    double rest = 0;
    const cf_idx full = P / CF_VW * CF_VW;
    for (cf_idx n = 0; n < N; n++) {
        const CF_T *row = a + n * nstride;
        for (cf_idx p = 0; p < full; p += CF_VW) {
            CF_V v;
            memcpy(&v, row + p, sizeof v);
            acc += __builtin_convertvector(v, dvec);
        }
        for (cf_idx p = full; p < P; p++) rest += row[p];
    }
    double s = 0;
    for (int j = 0; j < (int)CF_VW; j++) s += acc[j];
    return s + rest;
}

static cf_idx FN(direct_vector_width)(void) { return CF_VW; }

#undef CF_VW
#undef CF_M
#undef CF_V
#undef FN
#undef CF_CAT
#undef CF_CAT2
