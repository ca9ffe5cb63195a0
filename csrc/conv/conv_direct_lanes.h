/* Convolution, direct, output channels in the vector lanes (stride 1 over padded planes,
 * or any stride with the batch in the tile).
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* Stride-1 forward with the output channels in the vector lanes: the packed
 * weights give one vector of channels per tap, the input value of each pixel
 * is a broadcast operand, so nothing is copied into columns (for few output
 * channels im2col's packing costs as much as its GEMM). The pixels of a tile
 * are consecutive positions q of the padded input plane: output (od, oh, ow)
 * sits at q = (od*H + oh)*W + ow (g: padded extents, pads 0), and tap
 * (kd, kh, kw) reads x[q + (kd*dd*H + kh*dh)*W + kw*dw], so a tile spans rows
 * without any index arithmetic; positions with ow >= OW (or oh >= OH) are
 * computed but not stored. */

/* Tile sizes: CF_LANES_NVMAX vectors of output channels per block,
 * CF_LANES_PIXELS(nv) pixels per tile (cf_tiles.h). */

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
 * CF_LANES_NVMAX vectors) of one image and group, across rows or row
 * by row, whichever computes fewer tiles.
 * x: the group's padded planes [C][D][H][W] of g (stride 1, pads 0);
 * w: the block's packed weights [R][ceil(nk/VW)*VW], channels past nk zero;
 * bias: as many values, or NULL; out: &out[n, k0, 0], planes OD*OH*OW apart.
 * q0 is a multiple of g->W; q1 is at most the position after the last output. */
static void FN(direct_forward_cv)(const void *x_, const void *w_, const void *bias_,
                                  void *out_, cf_idx q0, cf_idx q1, cf_idx nk,
                                  const cf_geom *g) {
    const CF_T *x = (const CF_T *)x_;
    const CF_T *w = (const CF_T *)w_;
    const CF_T *bias = (const CF_T *)bias_;
    CF_T *out = (CF_T *)out_;
    const int nv = (int)((nk + CF_VW - 1) / CF_VW);
    const cf_idx nc = CF_LANES_PIXELS(nv);
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
    if (nv == 1) { CF_CV_NV(1, CF_LANES_PIXELS(1)); }
#if CF_LANES_NVMAX > 2
    else if (nv == 2) { CF_CV_NV(2, CF_LANES_PIXELS(2)); }
    else if (nv == 3) { CF_CV_NV(3, CF_LANES_PIXELS(3)); }
    else { CF_CV_NV(4, CF_LANES_PIXELS(4)); }
#else
    else { CF_CV_NV(2, CF_LANES_PIXELS(2)); }
#endif
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
static void FN(direct_forward_cv_batch)(const void *xt_, cf_idx N, const void *w_,
                                        const void *bias_, void *out_, cf_idx out_nstride,
                                        cf_idx p0, cf_idx p1, cf_idx nk, const cf_geom *g) {
    const CF_T *xt = (const CF_T *)xt_;
    const CF_T *w = (const CF_T *)w_;
    const CF_T *bias = (const CF_T *)bias_;
    CF_T *out = (CF_T *)out_;
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
#define CF_PICK_NV(NV) CF_PICK(NV, CF_LANES_IMAGES(NV, 0), CF_LANES_IMAGES(NV, 1),       \
                               CF_LANES_IMAGES(NV, 2))
        if (nv == 1) CF_PICK_NV(1);
#if CF_LANES_NVMAX > 2
        else if (nv == 2) CF_PICK_NV(2);
        else if (nv == 3) CF_PICK_NV(3);
        else CF_PICK_NV(4);
#else
        else CF_PICK_NV(2);
#endif
#undef CF_PICK_NV
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
static double FN(direct_cv_waste)(cf_idx nk, cf_idx N, const cf_geom *g, int batch) {
    const int nv = (int)((cf_min(nk, CF_LANES_NVMAX * CF_VW) + CF_VW - 1) / CF_VW);
    const cf_idx nc = CF_LANES_PIXELS(nv);
    if (batch) {
        /* the candidate widths direct_forward_cv_batch picks from */
        cf_idx best = N * N + N; /* the 1-wide fallback computes N, any width at most this */
        for (int c = 0; c < 3; c++) {
            const cf_idx w = CF_LANES_IMAGES(nv, c);
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
 * CF_LANES_NVMAX vectors: block b at dst + b*NVmax*VW*R holds
 * [R][ceil(nk_b/VW)*VW], zero past channel K. Bias likewise, block b at
 * bias_dst + b*NVmax*VW (when bias is not NULL). */
static int FN(direct_cv_pack)(const void *w_, const void *bias_, cf_idx K, cf_idx R,
                              void *dst_, void *bias_dst_) {
    const CF_T *w = (const CF_T *)w_;
    const CF_T *bias = (const CF_T *)bias_;
    CF_T *dst = (CF_T *)dst_;
    CF_T *bias_dst = (CF_T *)bias_dst_;
    const cf_idx kb = CF_LANES_NVMAX * CF_VW;
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
