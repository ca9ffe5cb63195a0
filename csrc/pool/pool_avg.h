/* Average pooling over a padded plane, forward and backward.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* Average pooling of one zero-padded plane. The divisor of output (od, oh, ow)
 * is dcount[od] * hcount[oh] * wcount[ow] (the caller applies torch's
 * count_include_pad / divisor_override rules; wcount is padded to a whole
 * number of vectors). The sum runs in row-major window order, as torch's. */
static void FN(avg_pool_plane)(const void *buf_, void *out_, const void *dcount_,
                               const void *hcount_, const void *wcount_,
                               const cf_pool_geom *g) {
    const CF_T *buf = (const CF_T *)buf_;
    CF_T *out = (CF_T *)out_;
    const CF_T *dcount = (const CF_T *)dcount_;
    const CF_T *hcount = (const CF_T *)hcount_;
    const CF_T *wcount = (const CF_T *)wcount_;
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

/* Average pooling of one plane without padding read in place, one output at
 * a time: planes whose rows hold less than a vector of outputs (LeNet's:
 * 10x10 and 28x28, 2x2 stride 2). The padded copy and one part-used vector
 * per output row cost LeNet's 10x10 planes 124 ns each, most of it in the
 * copy's and the row stores' variable-length memcpy calls and the general
 * tap loops. avg_pool_plane's sum order (from 0, taps row-major) and
 * divisor product: the same bits. */
static void FN(avg_pool_plane_narrow)(const void *x_, void *out_, const void *dcount_,
                                      const void *hcount_, const void *wcount_,
                                      const cf_pool_geom *g) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_;
    const CF_T *dcount = (const CF_T *)dcount_;
    const CF_T *hcount = (const CF_T *)hcount_;
    const CF_T *wcount = (const CF_T *)wcount_;
    const int two = g->KD == 1 && g->KH == 2 && g->KW == 2 && g->sw == 2;
    for (cf_idx od = 0; od < g->OD; od++)
        for (cf_idx oh = 0; oh < g->OH; oh++) {
            const CF_T *base = x + (od * g->sd * g->H + oh * g->sh) * g->W;
            CF_T *o = out + (od * g->OH + oh) * g->OW;
            const CF_T row_div = dcount[od] * hcount[oh];
            if (two) {   /* constant taps: GCC unrolls and vectorizes the row */
                const CF_T *r0 = base, *r1 = base + g->W;
                for (cf_idx ow = 0; ow < g->OW; ow++) {
                    const CF_T sum = (CF_T)0 + r0[2 * ow] + r0[2 * ow + 1] + r1[2 * ow]
                                     + r1[2 * ow + 1];
                    o[ow] = sum / (row_div * wcount[ow]);
                }
                continue;
            }
            for (cf_idx ow = 0; ow < g->OW; ow++) {
                CF_T sum = 0;
                for (cf_idx a = 0; a < g->KD; a++)
                    for (cf_idx i = 0; i < g->KH; i++) {
                        const CF_T *row = base + (a * g->H + i) * g->W + ow * g->sw;
                        for (cf_idx j = 0; j < g->KW; j++) sum += row[j];
                    }
                o[ow] = sum / (row_div * wcount[ow]);
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
static void FN(avg_pool_backward_plane)(const void *go_, void *gbuf_, void *spread_, void *gx_,
                                        const void *dcount_, const void *hcount_,
                                        const void *wcount_, const cf_pool_geom *g) {
    const CF_T *go = (const CF_T *)go_;
    CF_T *gbuf = (CF_T *)gbuf_;
    CF_T *spread = (CF_T *)spread_;
    CF_T *gx = (CF_T *)gx_;
    const CF_T *dcount = (const CF_T *)dcount_;
    const CF_T *hcount = (const CF_T *)hcount_;
    const CF_T *wcount = (const CF_T *)wcount_;
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

