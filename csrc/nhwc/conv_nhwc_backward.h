/* Weight gradient of a convolution on channels-last (NHWC / NDHWC)
 * activations, any kernel size, stride, dilation and zero padding. A family
 * header, compiled with conv_nhwc.h through nhwc_family.h.
 * (The input gradient needs no kernel of its own: it is the forward kernel
 * of conv_nhwc.h run on grad_out with the flipped, transposed weights, one
 * stride phase at a time; see cnnfast/_nhwc_backward.py.)
 *
 * The register tile is oneDNN's backward-weights one on NHWC: accumulators
 * over KWB kernel columns x CS input channels, each one vector of VW output
 * channels of dW. Per output pixel: one vector load of grad_out, KWB*CS
 * broadcasts of input values, KWB*CS FMAs. A work item accumulates into its
 * own rows of a partial-sum buffer laid out [c][tap][VW] (one vector per
 * (channel, tap)), so no two items write the same memory and the sum order
 * is fixed by the partition alone. Output rows are taken in blocks of about
 * CF_WG_BLOCK_PIXELS pixels; every (tap, channel step) sweeps the block
 * while its grad_out rows are in L1. A tap outside the input reads a zero
 * row (0 * inf is NaN, as the reference's zero padding gives); only pixels
 * at the row ends and rows outside the input take that path. */

#if CF_LEVEL >= 4
#define CF_WG_CS 8 /* 3 kernel columns x 8 channels: 24 of the 32 zmm registers */
#else
#define CF_WG_CS 2 /* 3 x 2 vectors of two or four registers each */
#endif
/* With at most 3 input channels per item (an RGB stem) a tile takes up to 7
 * kernel columns x all the channels instead (21 accumulators), on AVX-512:
 * 3 columns x 3 channels would leave the FMA chains latency-bound. */
#define CF_WG_KWMAX 7

/* One pass of the tile (KWB columns from kw0, channels [c, c + CS)) over
 * the output rows [r0, r1) of the flattened (N, OD, OH), for kernel row
 * (kd, kh). go: grad_out at (pixel 0, the item's first output channel),
 * pixels gs apart, go_end its array's end (a vector load never passes
 * it); x: the input at (pixel 0, the group's channel 0), pixels xs apart;
 * acc: the partial sums of the group and output-channel vector. */
CF_INLINE void FN(cf_wg_tile)(const CF_T *go, cf_idx gs, const CF_T *go_end, const CF_T *x,
                              cf_idx xs, CF_T *acc, cf_idx r0, cf_idx r1, cf_idx kd, cf_idx kh,
                              cf_idx kw0, cf_idx c, const CF_T *zeros, const cf_geom *g,
                              const int KWB, const int CS) {
    const cf_idx kvol = g->KD * g->KH * g->KW, tap0 = (kd * g->KH + kh) * g->KW + kw0;
    CF_V a[24]; /* KWB*CS <= 24 */
#pragma GCC unroll 8
    for (int t = 0; t < KWB; t++)
#pragma GCC unroll 8
        for (int j = 0; j < CS; j++)
            memcpy(&a[t * CS + j], acc + ((c + j) * kvol + tap0 + t) * CF_VW, sizeof(CF_V));
    const cf_idx pstep = g->sw * xs;
    /* output columns whose KWB taps all fall inside the input: [lo, hi) */
    const cf_idx m = g->pw - kw0 * g->dw, M = g->W - 1 + g->pw - (kw0 + KWB - 1) * g->dw;
    cf_idx lo = m <= 0 ? 0 : (m + g->sw - 1) / g->sw;
    cf_idx hi = M < 0 ? 0 : M / g->sw + 1;
    lo = cf_min(lo, g->OW);
    hi = cf_min(cf_max(hi, lo), g->OW);
    for (cf_idx r = r0; r < r1; r++) {
        const cf_idx oh = r % g->OH, od = r / g->OH % g->OD, n = r / (g->OH * g->OD);
        const cf_idx id = od * g->sd - g->pd + kd * g->dd, ih = oh * g->sh - g->ph + kh * g->dh;
        const int row_in = id >= 0 && id < g->D && ih >= 0 && ih < g->H;
        const CF_T *gp = go + r * g->OW * gs;
        const CF_T *xrow = row_in ? x + ((n * g->D + id) * g->H + ih) * g->W * xs + c : zeros;
        /* the interior loads whole grad_out vectors: the last pixels of the
         * array, whose vector would pass its end, go with the edges */
        const cf_idx room = go_end - gp - CF_VW, whole = room < 0 ? 0 : room / gs + 1;
        const cf_idx rlo = row_in ? lo : g->OW;
        const cf_idx rhi = row_in ? cf_max(rlo, cf_min(hi, whole)) : g->OW;
        /* the edges [0, rlo) and [rhi, OW): a pointer per tap, zeros outside */
        for (cf_idx ow = 0; ow < g->OW; ow++) {
            if (ow == rlo) ow = rhi;
            if (ow >= g->OW) break;
            const CF_T *xt[CF_WG_KWMAX];
#pragma GCC unroll 8
            for (int t = 0; t < KWB; t++) {
                const cf_idx iw = ow * g->sw - g->pw + (kw0 + t) * g->dw;
                xt[t] = row_in && iw >= 0 && iw < g->W ? xrow + iw * xs : zeros;
            }
            const CF_T *gpx = gp + ow * gs;
            CF_V gv = FN(cf_splat)(0);
            memcpy(&gv, gpx, (size_t)cf_min(CF_VW, go_end - gpx) * sizeof(CF_T));
#pragma GCC unroll 8
            for (int t = 0; t < KWB; t++)
#pragma GCC unroll 8
                for (int j = 0; j < CS; j++) a[t * CS + j] += gv * xt[t][j];
        }
        if (rlo >= rhi) continue;
        /* the interior: one pointer per tap, stepped (constant offsets per channel) */
        const CF_T *xq[CF_WG_KWMAX];
#pragma GCC unroll 8
        for (int t = 0; t < KWB; t++)
            xq[t] = xrow + (rlo * g->sw - g->pw + (kw0 + t) * g->dw) * xs;
        const CF_T *gpx = gp + rlo * gs;
        for (cf_idx ow = rlo; ow < rhi; ow++, gpx += gs) {
            CF_V gv;
            memcpy(&gv, gpx, sizeof gv);
#pragma GCC unroll 8
            for (int t = 0; t < KWB; t++) {
#pragma GCC unroll 8
                for (int j = 0; j < CS; j++) a[t * CS + j] += gv * xq[t][j];
                xq[t] += pstep;
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < KWB; t++)
#pragma GCC unroll 8
        for (int j = 0; j < CS; j++)
            memcpy(acc + ((c + j) * kvol + tap0 + t) * CF_VW, &a[t * CS + j], sizeof(CF_V));
}

/* Weight gradient of one work item: the output rows [r0, r1) of the
 * flattened (N, OD, OH), one vector of output channels (go points at its
 * first), the group's input channels [c0, c1), added to acc ([C][KVOL][VW]
 * for the group and vector; arguments as cf_wg_tile). rows_per_block:
 * output rows swept by every tap and channel step before the next block. */
static void FN(nhwc_weight_grad)(const void *go_, cf_idx gs, const void *go_end_,
                                 const void *x_, cf_idx xs, void *acc_, cf_idx r0, cf_idx r1,
                                 cf_idx c0, cf_idx c1, cf_idx rows_per_block,
                                 const void *zeros_, const cf_geom *g) {
    const CF_T *go = (const CF_T *)go_, *go_end = (const CF_T *)go_end_;
    const CF_T *x = (const CF_T *)x_, *zeros = (const CF_T *)zeros_;
    CF_T *acc = (CF_T *)acc_;
    const int small = CF_WG_CS > 4 && c1 - c0 <= 3;
    const cf_idx kwstep = small ? CF_WG_KWMAX : 3;
    for (cf_idx b0 = r0; b0 < r1; b0 += rows_per_block) {
        const cf_idx b1 = cf_min(r1, b0 + rows_per_block);
        for (cf_idx kd = 0; kd < g->KD; kd++)
        for (cf_idx kh = 0; kh < g->KH; kh++)
        for (cf_idx kw0 = 0; kw0 < g->KW; kw0 += kwstep) {
            const int kwb = (int)cf_min(kwstep, g->KW - kw0);
#define CF_WG_TILE(KWB, CS)                                                            \
    FN(cf_wg_tile)(go, gs, go_end, x, xs, acc, b0, b1, kd, kh, kw0, c, zeros, g, KWB, CS)
            if (small) {
#define CF_WG_SMALL(CS)                                                                \
    switch (kwb) {                                                                     \
    case 1: CF_WG_TILE(1, CS); break;                                                  \
    case 2: CF_WG_TILE(2, CS); break;                                                  \
    case 3: CF_WG_TILE(3, CS); break;                                                  \
    case 4: CF_WG_TILE(4, CS); break;                                                  \
    case 5: CF_WG_TILE(5, CS); break;                                                  \
    case 6: CF_WG_TILE(6, CS); break;                                                  \
    default: CF_WG_TILE(7, CS);                                                        \
    }
                const cf_idx c = c0;
                if (c1 - c0 == 3) { CF_WG_SMALL(3) }
                else if (c1 - c0 == 2) { CF_WG_SMALL(2) }
                else { CF_WG_SMALL(1) }
#undef CF_WG_SMALL
                continue;
            }
            for (cf_idx c = c0; c < c1;) {
                const cf_idx left = c1 - c;
#define CF_WG_CSTEP(KWB)                                                               \
    if (left >= CF_WG_CS) { CF_WG_TILE(KWB, CF_WG_CS); c += CF_WG_CS; }                \
    else if (CF_WG_CS > 4 && left >= 4) { CF_WG_TILE(KWB, 4); c += 4; }                \
    else if (CF_WG_CS > 2 && left >= 2) { CF_WG_TILE(KWB, 2); c += 2; }                \
    else { CF_WG_TILE(KWB, 1); c += 1; }
                if (kwb == 3) { CF_WG_CSTEP(3) }
                else if (kwb == 2) { CF_WG_CSTEP(2) }
                else { CF_WG_CSTEP(1) }
#undef CF_WG_CSTEP
            }
        }
    }
#undef CF_WG_TILE
}

#undef CF_WG_CS
#undef CF_WG_KWMAX
