/* Weight gradient of a convolution on channels-last (NHWC / NDHWC)
 * activations, any kernel size, stride, dilation and zero padding. A family
 * header, compiled with conv_nhwc.h through nhwc_family.h.
 * (The input gradient needs no kernel of its own: it is the forward kernel
 * of conv_nhwc.h run on grad_out with the flipped, transposed weights, one
 * stride phase at a time; see cnnfast/_nhwc_backward.py.)
 *
 * The register tile is oneDNN's backward-weights one on NHWC, widened:
 * accumulators over NV vectors of VW output channels x KWB kernel columns x
 * CS input channels. Per output pixel: NV vector loads of grad_out, KWB*CS
 * broadcasts of input values, NV*KWB*CS FMAs (AVX-512: 4 x 3 x 2, 10 loads
 * for 24 FMAs; one vector x 3 x 8 took 25). A work item accumulates into
 * its own rows of a partial-sum buffer laid out [vector][c][tap][VW], so no
 * two items write the same memory and the sum order is fixed by the
 * partition alone (the driver then moves each vector's lanes to dW's
 * rows). Output rows are taken in blocks of about 256 / NV pixels (the
 * caller's rows_per_block); every (tap, channel step) sweeps the block
 * while its grad_out rows are in L1. The driver hands the kernel a
 * zero-padded copy of x, so every tap of every pixel is inside and the rows
 * are walked without bounds tests; without one (a caller's choice) a tap
 * outside the input reads a zero row (0 * inf is NaN, as the reference's
 * zero padding gives) on a slower path. */

#if CF_LEVEL >= 4
#define CF_WG_CS 8 /* 3 kernel columns x 8 channels: 24 of the 32 zmm registers */
#define CF_WG_NV 4 /* vectors of output channels per tile: 4 x 3 columns x 2 channels */
#else
#define CF_WG_CS 2 /* 3 x 2 vectors of two or four registers each */
#define CF_WG_NV 1
#endif
/* With at most 3 input channels per item (an RGB stem) a tile takes up to 7
 * kernel columns x all the channels instead (21 accumulators), on AVX-512:
 * 3 columns x 3 channels would leave the FMA chains latency-bound. */
#define CF_WG_KWMAX 7
/* channels per step of a tile of 4 and of 2 vectors (at least 1) */
#define CF_WG_CS4 (CF_WG_CS / 4 > 0 ? CF_WG_CS / 4 : 1)
#define CF_WG_CS2 (CF_WG_CS / 2 > 0 ? CF_WG_CS / 2 : 1)

/* One pass of the tile (NV vectors of output channels x KWB columns from
 * kw0 x channels [c, c + CS)) over the output rows [r0, r1) of the
 * flattened (N, OD, OH), for kernel row (kd, kh). Per output pixel: NV
 * vector loads of grad_out, KWB*CS broadcasts of input values and
 * NV*KWB*CS FMAs: with NV = 4 (3 x 2 channels) 10 loads feed 24 FMAs, where
 * one vector (3 x 8) needed 25. go: grad_out at (pixel 0, the tile's first
 * output channel), pixels gs apart, go_end its array's end (a vector load
 * never passes it); x: the input at (pixel 0, the group's channel 0),
 * pixels xs apart; acc: the partial sums of the group and first vector, the
 * next vector's vstride elements on. */
CF_INLINE void FN(cf_wg_tile)(const CF_T *go, cf_idx gs, const CF_T *go_end, const CF_T *x,
                              cf_idx xs, CF_T *acc, cf_idx vstride, cf_idx r0, cf_idx r1,
                              cf_idx kd, cf_idx kh, cf_idx kw0, cf_idx c, const CF_T *zeros,
                              const cf_geom *g, const int NV, const int KWB, const int CS) {
    const cf_idx kvol = g->KD * g->KH * g->KW, tap0 = (kd * g->KH + kh) * g->KW + kw0;
    CF_V a[24]; /* NV*KWB*CS <= 24 */
#define CF_WG_A(v, t, j) a[((v) * KWB + (t)) * CS + (j)]
#define CF_WG_ACC(v, t, j) (acc + (v) * vstride + ((c + (j)) * kvol + tap0 + (t)) * CF_VW)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
#pragma GCC unroll 8
        for (int t = 0; t < KWB; t++)
#pragma GCC unroll 8
            for (int j = 0; j < CS; j++) memcpy(&CF_WG_A(v, t, j), CF_WG_ACC(v, t, j), sizeof(CF_V));
    const cf_idx pstep = g->sw * xs;
/* `count` pixels from gpx with every tap's pointer xq[t] inside x, stepped
 * by pstep, and whole grad_out vectors (both walks below) */
#define CF_WG_WALK(count)                                                              \
    for (cf_idx ow_ = 0; ow_ < (count); ow_++, gpx += gs) {                            \
        CF_V gv[4];                                                                    \
        _Pragma("GCC unroll 4")                                                        \
        for (int v = 0; v < NV; v++) memcpy(&gv[v], gpx + v * CF_VW, sizeof(CF_V));    \
        _Pragma("GCC unroll 8")                                                        \
        for (int t = 0; t < KWB; t++) {                                                \
            _Pragma("GCC unroll 8")                                                    \
            for (int j = 0; j < CS; j++) {                                             \
                const CF_T xv = xq[t][j];                                              \
                _Pragma("GCC unroll 4")                                                \
                for (int v = 0; v < NV; v++) CF_WG_A(v, t, j) += gv[v] * xv;           \
            }                                                                          \
            xq[t] += pstep;                                                            \
        }                                                                              \
    }
    /* Every tap of every pixel inside x (no padding: the driver pads x for
     * this) and whole grad_out vectors to the last pixel: rows are walked
     * without a division or an edge test each. On 4x4 planes a row is 4
     * pixels, and the general path's per-row index arithmetic took longer
     * than the row's FMAs. */
    if (g->pd == 0 && g->ph == 0 && g->pw == 0 && (g->OD - 1) * g->sd + (g->KD - 1) * g->dd < g->D
        && (g->OH - 1) * g->sh + (g->KH - 1) * g->dh < g->H
        && (g->OW - 1) * g->sw + (g->KW - 1) * g->dw < g->W
        && go + ((r1 * g->OW - 1) * gs + NV * CF_VW) <= go_end) {
        cf_idx oh = r0 % g->OH, od = r0 / g->OH % g->OD, n = r0 / (g->OH * g->OD);
        const CF_T *gpx = go + r0 * g->OW * gs;
        for (cf_idx r = r0; r < r1; r++) {
            const CF_T *xrow = x + ((n * g->D + od * g->sd + kd * g->dd) * g->H + oh * g->sh
                                    + kh * g->dh) * g->W * xs + c;
            const CF_T *xq[CF_WG_KWMAX];
#pragma GCC unroll 8
            for (int t = 0; t < KWB; t++) xq[t] = xrow + (kw0 + t) * g->dw * xs;
            CF_WG_WALK(g->OW);
            if (++oh == g->OH) {
                oh = 0;
                if (++od == g->OD) { od = 0; n++; }
            }
        }
        goto store;
    }
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
         * array, whose vectors would pass its end, go with the edges */
        const cf_idx room = go_end - gp - NV * CF_VW, whole = room < 0 ? 0 : room / gs + 1;
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
            CF_V gv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                const cf_idx left = go_end - (gpx + v * CF_VW);
                gv[v] = FN(cf_splat)(0);
                if (left > 0) memcpy(&gv[v], gpx + v * CF_VW, (size_t)cf_min(CF_VW, left) * sizeof(CF_T));
            }
#pragma GCC unroll 8
            for (int t = 0; t < KWB; t++)
#pragma GCC unroll 8
                for (int j = 0; j < CS; j++)
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) CF_WG_A(v, t, j) += gv[v] * xt[t][j];
        }
        if (rlo >= rhi) continue;
        /* the interior: one pointer per tap, stepped (constant offsets per channel) */
        const CF_T *xq[CF_WG_KWMAX];
#pragma GCC unroll 8
        for (int t = 0; t < KWB; t++)
            xq[t] = xrow + (rlo * g->sw - g->pw + (kw0 + t) * g->dw) * xs;
        const CF_T *gpx = gp + rlo * gs;
        CF_WG_WALK(rhi - rlo);
    }
store:
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
#pragma GCC unroll 8
        for (int t = 0; t < KWB; t++)
#pragma GCC unroll 8
            for (int j = 0; j < CS; j++) memcpy(CF_WG_ACC(v, t, j), &CF_WG_A(v, t, j), sizeof(CF_V));
#undef CF_WG_A
#undef CF_WG_ACC
#undef CF_WG_WALK
}

/* Weight gradient of one work item: the output rows [r0, r1) of the
 * flattened (N, OD, OH), nv (<= CF_WG_NV) vectors of output channels (go
 * points at the first), the group's input channels [c0, c1), added to acc
 * ([C][KVOL][VW] for the group and first vector, the next vstride elements
 * on; other arguments as cf_wg_tile). rows_per_block: output rows swept by
 * every tap and channel step before the next block. */
static void FN(nhwc_weight_grad)(const void *go_, cf_idx gs, const void *go_end_,
                                 const void *x_, cf_idx xs, void *acc_, cf_idx vstride,
                                 cf_idx nv, cf_idx r0, cf_idx r1, cf_idx c0, cf_idx c1,
                                 cf_idx rows_per_block, const void *zeros_, const cf_geom *g) {
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
            if (small) {   /* one vector at a time: 7 x 3 accumulators */
                for (cf_idx v = 0; v < nv; v++) {
                    const CF_T *gov = go + v * CF_VW;
                    CF_T *accv = acc + v * vstride;
#define CF_WG_STILE(KWB, CS)                                                           \
    FN(cf_wg_tile)(gov, gs, go_end, x, xs, accv, vstride, b0, b1, kd, kh, kw0, c0, zeros, g, \
                   1, KWB, CS)
#define CF_WG_SMALL(CS)                                                                \
    switch (kwb) {                                                                     \
    case 1: CF_WG_STILE(1, CS); break;                                                 \
    case 2: CF_WG_STILE(2, CS); break;                                                 \
    case 3: CF_WG_STILE(3, CS); break;                                                 \
    case 4: CF_WG_STILE(4, CS); break;                                                 \
    case 5: CF_WG_STILE(5, CS); break;                                                 \
    case 6: CF_WG_STILE(6, CS); break;                                                 \
    default: CF_WG_STILE(7, CS);                                                       \
    }
                    if (c1 - c0 == 3) { CF_WG_SMALL(3) }
                    else if (c1 - c0 == 2) { CF_WG_SMALL(2) }
                    else { CF_WG_SMALL(1) }
#undef CF_WG_SMALL
#undef CF_WG_STILE
                }
                continue;
            }
            /* vectors in groups of CF_WG_NV, then 2, then 1 (nv = 3: 2 + 1) */
            for (cf_idx v = 0; v < nv;) {
                const cf_idx vleft = nv - v;
                const CF_T *gov = go + v * CF_VW;
                CF_T *accv = acc + v * vstride;
#define CF_WG_TILE(NV, KWB, CS)                                                        \
    FN(cf_wg_tile)(gov, gs, go_end, x, xs, accv, vstride, b0, b1, kd, kh, kw0, c, zeros, g, \
                   NV, KWB, CS)
/* channel steps of CSMAX, then halves, down to 1 */
#define CF_WG_CSTEP(NV, KWB, CSMAX)                                                    \
    for (cf_idx c = c0; c < c1;) {                                                     \
        const cf_idx left = c1 - c;                                                    \
        if (left >= (CSMAX)) { CF_WG_TILE(NV, KWB, CSMAX); c += (CSMAX); }             \
        else if ((CSMAX) > 4 && left >= 4) { CF_WG_TILE(NV, KWB, ((CSMAX) > 4 ? 4 : 1)); c += 4; } \
        else if ((CSMAX) > 2 && left >= 2) { CF_WG_TILE(NV, KWB, ((CSMAX) > 2 ? 2 : 1)); c += 2; } \
        else { CF_WG_TILE(NV, KWB, 1); c += 1; }                                       \
    }
#define CF_WG_KW(NV, CSMAX)                                                            \
    if (kwb == 3) { CF_WG_CSTEP(NV, 3, CSMAX) }                                        \
    else if (kwb == 2) { CF_WG_CSTEP(NV, 2, CSMAX) }                                   \
    else { CF_WG_CSTEP(NV, 1, CSMAX) }
                if (CF_WG_NV >= 4 && vleft >= 4) { CF_WG_KW(4, CF_WG_CS4) v += 4; }
                else if (CF_WG_NV >= 2 && vleft >= 2) { CF_WG_KW(2, CF_WG_CS2) v += 2; }
                else { CF_WG_KW(1, CF_WG_CS) v += 1; }
#undef CF_WG_KW
#undef CF_WG_CSTEP
#undef CF_WG_TILE
            }
        }
    }
}

#undef CF_WG_CS
#undef CF_WG_NV
#undef CF_WG_KWMAX
#undef CF_WG_CS4
#undef CF_WG_CS2
