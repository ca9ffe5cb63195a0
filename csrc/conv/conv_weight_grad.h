/* Convolution weight gradient, direct kernel (used when algorithm="direct").
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

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
static void FN(direct_backward_weight)(const void *x_, cf_idx x_nstride, const void *go_,
                                       cf_idx go_nstride, cf_idx gow, cf_idx N, cf_idx nb,
                                       void *gw_, const cf_geom *g) {
    const CF_T *x = (const CF_T *)x_;
    const CF_T *go = (const CF_T *)go_;
    CF_T *gw = (CF_T *)gw_;
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

