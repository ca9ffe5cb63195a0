/* Convolution, direct, pixels in the vector lanes: register-blocked rows of NB output
 * channels (any stride and dilation; the polyphase input gradient runs on it too).
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

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
static void FN(direct_forward_row)(const void *x_, const void *w_, const void *bias_,
                                   void *out_, cf_idx nb, cf_idx od, cf_idx oh,
                                   const cf_geom *g) {
    const CF_T *x = (const CF_T *)x_;
    const CF_T *w = (const CF_T *)w_;
    const CF_T *bias = (const CF_T *)bias_;
    CF_T *out = (CF_T *)out_;
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

