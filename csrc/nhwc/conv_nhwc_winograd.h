/* Winograd F(4x4, 3x3) on channels-last activations: 3x3 kernels, stride 1,
 * dilation 1, zero padding, one group, channels a multiple of the vector.
 * A family header (nhwc_family.h), after conv_nhwc.h, whose direct kernel
 * runs the 36 products as 1x1 convolutions over the tiles.
 *
 * Y = A^T [ sum_c (G g G^T) .* (B^T d B) ] A per 4x4 output tile: 36
 * multiplications per tile, input and output channel instead of 144. On NHWC
 * the vector lanes are channels, so every transform is whole-vector loads,
 * adds and stores with no shuffles (the channels-first kernel interleaves
 * tiles in the lanes). The driver (_conv_nhwc.pyx) runs, per block of T
 * tiles (of a round of images, numbered image after image): the input
 * transform into V[36][T][C]; then per block of output channels the 36
 * products M[p] = V[p] U[p] (T x block) on the direct kernel, and the
 * output transform, which adds the bias, the residual
 * and clamps (a fused layer's epilogue) before the only store of the output.
 *
 * Non-finite values: a tile mixes its 36 inputs (inf - inf is NaN), so the
 * transforms report any non-finite value and the driver recomputes the call
 * with the direct kernel. */

#include "winograd_transforms.h"

/* F(2x2, 3x3): 16 positions (4x4 input patches, 2x2 output tiles), points 0,
 * +-1 and infinity. 2.25x fewer multiplications than direct, against F(4,3)'s
 * 4x, but transformed weights of 16 positions instead of 36: for 7x7 planes
 * at batch 1 (ResNet's last stage) F(4,3) streams 37.7 MB of weights per
 * 512-channel layer and is bound by memory on two threads. */
CF_INLINE void FN(cf_wino2_bt)(const CF_V *d, CF_V *o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
}

CF_INLINE void FN(cf_wino2_g)(const CF_V *g, CF_V *o) {
    const CF_V h = (g[0] + g[2]) * (CF_T)0.5, d = g[1] * (CF_T)0.5;
    o[0] = g[0];
    o[1] = h + d;
    o[2] = h - d;
    o[3] = g[2];
}

CF_INLINE void FN(cf_wino2_at)(const CF_V *m, CF_V *o) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
}

/* The 1-D transforms of F(M x M, 3x3), M = 4 or 2 (a constant after inlining):
 * B^T on A = M + 2 inputs, G on 3, A^T on A. */
CF_INLINE void FN(cf_wino_bt_m)(const CF_V *d, CF_V *o, const int M) {
    if (M == 4) FN(cf_wino_bt)(d, o);
    else FN(cf_wino2_bt)(d, o);
}

CF_INLINE void FN(cf_wino_g_m)(const CF_V *g, CF_V *o, const int M) {
    if (M == 4) FN(cf_wino_g)(g, o);
    else FN(cf_wino2_g)(g, o);
}

CF_INLINE void FN(cf_wino_at_m)(const CF_V *m, CF_V *o, const int M) {
    if (M == 4) FN(cf_wino_at)(m, o);
    else FN(cf_wino2_at)(m, o);
}

/* Transformed weights U[p] for each of the A*A positions p, packed as
 * nhwc_pack packs a 1x1 convolution's (K, C): block b of output channels at
 * u + p*pos_stride + b*BLOCK*C, [C][lanes] inside. The 3x3 kernel of output
 * channel k and input channel c at w + k*ks + c*cs, its 9 taps contiguous,
 * read in reverse when flip is set: w [K][C][3][3] (one group) has ks = 9C,
 * cs = 9; the input gradient's flipped, transposed weights are read from
 * the forward's [C][K][3][3] with ks = 9, cs = 9K, flip = 1 (no copy).
 * Returns 0 if a transformed weight is not finite. */
CF_INLINE int FN(cf_nhwc_wino_pack)(const void *w_, cf_idx K, cf_idx C, cf_idx ks, cf_idx cs,
                                    int flip, void *u_, cf_idx pos_stride, const int M) {
    const int A = M + 2;
    const CF_T *w = (const CF_T *)w_;
    CF_T *u = (CF_T *)u_;
    const cf_idx kb = CF_LANES_NVMAX * CF_VW;
    CF_M bad = {0};
    const CF_M all = FN(cf_lane_mask)(CF_VW);
    for (cf_idx k0 = 0; k0 < K; k0 += kb) {
        const cf_idx nk = cf_min(kb, K - k0), width = (nk + CF_VW - 1) / CF_VW * CF_VW;
        for (cf_idx c = 0; c < C; c++)
            for (cf_idx kv = 0; kv < width; kv += CF_VW) {
                CF_T lanes[9][CF_VW];
                for (cf_idx j = 0; j < CF_VW; j++)
                    for (int e = 0; e < 9; e++)
                        lanes[e][j] = kv + j < nk ? w[(k0 + kv + j) * ks + c * cs
                                                      + (flip ? 8 - e : e)] : (CF_T)0;
                CF_V g[9], t[6][3];
                memcpy(g, lanes, sizeof g);
                for (int j = 0; j < 3; j++) { /* columns of g: G g */
                    CF_V col[3] = {g[j], g[3 + j], g[6 + j]}, gc[6];
                    FN(cf_wino_g_m)(col, gc, M);
                    for (int i = 0; i < A; i++) t[i][j] = gc[i];
                }
                for (int i = 0; i < A; i++) { /* rows: (G g) G^T */
                    CF_V o[6];
                    FN(cf_wino_g_m)(t[i], o, M);
                    for (int j = 0; j < A; j++) {
                        FN(cf_wino_note)(o[j], all, &bad);
                        memcpy(u + (i * A + j) * pos_stride + k0 * C + c * width + kv, &o[j],
                               sizeof o[j]);
                    }
                }
            }
    }
    return !FN(cf_wino_any)(bad);
}

/* Input transform of the tiles [t0, t1) of consecutive images, per_image
 * tiles each (tile t of image t / per_image, at row (t % per_image) / tw,
 * column (t % per_image) % tw; its A x A patch starts at (M*row - ph,
 * M*col - pw)), for the channels [c0, c1) (multiples of the vector):
 * V[p][t - t0][c] at v + (p*T + t - t0)*C + c. x: the first image, pixels
 * xs apart, images H*W pixels apart; a patch element outside H x W reads
 * zero. A block of tiles may span images: on small planes in a batch the
 * products then read each block of transformed weights once for several
 * images. Returns 1 if a transformed value is not finite. */
CF_INLINE int FN(cf_nhwc_wino_input)(const void *x_, cf_idx xs, cf_idx H, cf_idx W,
                                     cf_idx ph, cf_idx pw, cf_idx tw, cf_idx per_image,
                                     cf_idx t0, cf_idx t1,
                                     cf_idx c0, cf_idx c1, void *v_, cf_idx T, cf_idx C,
                                     const int M) {
    const int A = M + 2;
    const CF_T *x0 = (const CF_T *)x_;
    CF_T *v = (CF_T *)v_;
    const CF_M all = FN(cf_lane_mask)(CF_VW);
    CF_M bad = {0};
    for (cf_idx t = t0; t < t1; t++) {
        const cf_idx n = t / per_image, tl = t - n * per_image;
        const CF_T *x = x0 + n * H * W * xs;
        const cf_idx ih0 = tl / tw * M - ph, iw0 = tl % tw * M - pw;
        const int inside = ih0 >= 0 && ih0 + A <= H && iw0 >= 0 && iw0 + A <= W;
        for (cf_idx c = c0; c < c1; c += CF_VW) {
            CF_V rows[6][6];
            for (int i = 0; i < A; i++) { /* rows: d B */
                CF_V d[6];
                for (int s = 0; s < A; s++) {
                    const cf_idx ih = ih0 + i, iw = iw0 + s;
                    if (inside || (ih >= 0 && ih < H && iw >= 0 && iw < W))
                        memcpy(&d[s], x + (ih * W + iw) * xs + c, sizeof d[s]);
                    else
                        d[s] = FN(cf_splat)(0);
                }
                FN(cf_wino_bt_m)(d, rows[i], M);
            }
            for (int j = 0; j < A; j++) { /* columns: B^T (d B) */
                CF_V col[6], o[6];
                for (int i = 0; i < A; i++) col[i] = rows[i][j];
                FN(cf_wino_bt_m)(col, o, M);
                for (int i = 0; i < A; i++) {
                    FN(cf_wino_note)(o[i], all, &bad);
                    memcpy(v + ((i * A + j) * T + t - t0) * C + c, &o[i], sizeof o[i]);
                }
            }
        }
    }
    return FN(cf_wino_any)(bad);
}

/* Output transform of the tiles [t0, t1) of consecutive images (numbered as
 * cf_nhwc_wino_input's) for nk output channels (one block): m holds
 * M[p][t - t0][k] at m + (p*T + t - t0)*ms + k. Y = A^T M A, plus bias (nk
 * values padded to whole vectors, or NULL), plus res (when not NULL; laid
 * out as out), clamped to [lo, hi] when clamp is set, stored to the pixels
 * inside OH x OW: out and res point at (the first image's pixel 0, the
 * block's first channel), pixels os apart, images OH*OW pixels apart.
 * Returns 1 if a value is not finite (the output is then incomplete). */
CF_INLINE int FN(cf_nhwc_wino_output)(const void *m_, cf_idx T, cf_idx ms, cf_idx tw,
                                      cf_idx per_image, cf_idx t0, cf_idx t1, cf_idx OH,
                                      cf_idx OW, cf_idx nk, const void *bias_, void *out_,
                                      cf_idx os, const void *res_, int clamp, double lo,
                                      double hi, const int M) {
    const int A = M + 2;
    const CF_T *m = (const CF_T *)m_, *bias = (const CF_T *)bias_, *res = (const CF_T *)res_;
    CF_T *out = (CF_T *)out_;
    const CF_M all = FN(cf_lane_mask)(CF_VW);
    const CF_V lov = FN(cf_splat)((CF_T)lo), hiv = FN(cf_splat)((CF_T)hi);
    CF_M bad = {0};
    for (cf_idx t = t0; t < t1; t++) {
        const cf_idx n = t / per_image, tl = t - n * per_image;
        const cf_idx oh0 = tl / tw * M, ow0 = tl % tw * M, image = n * OH * OW * os;
        const cf_idx rows = cf_min(M, OH - oh0), cols = cf_min(M, OW - ow0);
        for (cf_idx k = 0; k < nk; k += CF_VW) {
            const size_t len = (size_t)cf_min(CF_VW, nk - k) * sizeof(CF_T);
            const int whole = k + CF_VW <= nk;
            CF_V tm[6][4];
            for (int i = 0; i < A; i++) { /* rows: m A */
                CF_V mr[6];
                for (int j = 0; j < A; j++)
                    memcpy(&mr[j], m + ((i * A + j) * T + t - t0) * ms + k, sizeof mr[j]);
                FN(cf_wino_at_m)(mr, tm[i], M);
            }
            CF_V b = FN(cf_splat)(0);
            if (bias) memcpy(&b, bias + k, sizeof b);
            for (int j = 0; j < M; j++) { /* columns: A^T (m A) */
                CF_V col[6], o[4];
                for (int i = 0; i < A; i++) col[i] = tm[i][j];
                FN(cf_wino_at_m)(col, o, M);
                if (j >= cols) continue;
                for (cf_idx i = 0; i < rows; i++) {
                    CF_V y = o[i] + b;
                    FN(cf_wino_note)(y, all, &bad);
                    const cf_idx at = image + ((oh0 + i) * OW + ow0 + j) * os + k;
                    if (res) {
                        CF_V r = FN(cf_splat)(0);
                        if (whole) memcpy(&r, res + at, sizeof r);  /* constant size: one load */
                        else memcpy(&r, res + at, len);
                        y += r;
                    }
                    if (clamp) y = FN(cf_clamp)(y, lov, hiv);
                    if (whole) memcpy(out + at, &y, sizeof y);
                    else memcpy(out + at, &y, len);
                }
            }
        }
    }
    return FN(cf_wino_any)(bad);
}

/* The weight gradient on the same transforms. The forward is
 * Y = A^T [(G w G^T) .* (B^T d B)] A per tile, linear in U = G w G^T, so
 * dW = G^T [ sum over tiles of (A dY A^T) .* (B^T d B) ] G: the input tiles'
 * transform is the forward's (cf_nhwc_wino_input), grad_out's 4x4 (2x2)
 * tiles go through A (A^T's transpose: A + 2 values from M), the sums over
 * tiles are one GEMM per position (the driver's, on BLAS), and G^T turns
 * each position's sums back into the 3x3 taps. */

/* A g for one M-vector g: M + 2 outputs (F(4,3): A is 6 x 4). */
CF_INLINE void FN(cf_wino_a_m)(const CF_V *g, CF_V *o, const int M) {
    if (M == 4) {
        const CF_T s = CF_WINO_SQRT2, h = CF_WINO_HALF_SQRT2;
        const CF_V e12 = g[0] + g[2] * (CF_T)2, d12 = g[1] * s + g[3] * (2 * s);
        const CF_V e34 = g[0] + g[2] * (CF_T)0.5, d34 = g[1] * h + g[3] * (h * (CF_T)0.5);
        o[0] = g[0];
        o[1] = e12 + d12;
        o[2] = e12 - d12;
        o[3] = e34 + d34;
        o[4] = e34 - d34;
        o[5] = g[3];
    } else {   /* F(2,3): A is 4 x 2 */
        o[0] = g[0];
        o[1] = g[0] + g[1];
        o[2] = g[0] - g[1];
        o[3] = -g[1];
    }
}

/* G^T m for one (M + 2)-vector m: the 3 taps. */
CF_INLINE void FN(cf_wino_gt_m)(const CF_V *m, CF_V *o, const int M) {
    if (M == 4) {
        const CF_T s6 = CF_WINO_SQRT2 / 6, s3 = CF_WINO_SQRT2 / 3;
        const CF_V p12 = m[1] + m[2], d12 = m[1] - m[2], p34 = m[3] + m[4], d34 = m[4] - m[3];
        o[0] = m[0] + p12 * ((CF_T)1 / 6) - p34 * ((CF_T)2 / 3);
        o[1] = d12 * s6 + d34 * s3;
        o[2] = (p12 - p34) * ((CF_T)1 / 3) + m[5];
    } else {
        const CF_V p12 = (m[1] + m[2]) * (CF_T)0.5;
        o[0] = m[0] + p12;
        o[1] = (m[1] - m[2]) * (CF_T)0.5;
        o[2] = p12 + m[3];
    }
}

/* grad_out's transform for the tiles [t0, t1) of one image (tile t at row
 * t / tw, column t % tw of M x M outputs) and the output channels [k0, k1)
 * (multiples of the vector): U[p][t - t0][k] = (A g A^T)[p] at
 * u + (p*T + t - t0)*K + k. go: the image's grad_out, pixels gs apart; an
 * output outside OH x OW reads zero. Returns 1 if a value is not finite. */
CF_INLINE int FN(cf_nhwc_wino_grad_out)(const void *go_, cf_idx gs, cf_idx OH, cf_idx OW,
                                        cf_idx tw, cf_idx t0, cf_idx t1, cf_idx k0, cf_idx k1,
                                        void *u_, cf_idx T, cf_idx K, const int M) {
    const int A = M + 2;
    const CF_T *go = (const CF_T *)go_;
    CF_T *u = (CF_T *)u_;
    const CF_M all = FN(cf_lane_mask)(CF_VW);
    CF_M bad = {0};
    for (cf_idx t = t0; t < t1; t++) {
        const cf_idx oh0 = t / tw * M, ow0 = t % tw * M;
        for (cf_idx k = k0; k < k1; k += CF_VW) {
            CF_V rows[4][6];
            for (int i = 0; i < M; i++) { /* rows: g A^T */
                CF_V g[4];
                for (int j = 0; j < M; j++) {
                    if (oh0 + i < OH && ow0 + j < OW)
                        memcpy(&g[j], go + ((oh0 + i) * OW + ow0 + j) * gs + k, sizeof g[j]);
                    else
                        g[j] = FN(cf_splat)(0);
                }
                FN(cf_wino_a_m)(g, rows[i], M);
            }
            for (int j = 0; j < A; j++) { /* columns: A (g A^T) */
                CF_V col[4], o[6];
                for (int i = 0; i < M; i++) col[i] = rows[i][j];
                FN(cf_wino_a_m)(col, o, M);
                for (int i = 0; i < A; i++) {
                    FN(cf_wino_note)(o[i], all, &bad);
                    memcpy(u + ((i * A + j) * T + t - t0) * K + k, &o[i], sizeof o[i]);
                }
            }
        }
    }
    return FN(cf_wino_any)(bad);
}

/* The taps from the positions' sums, output channels [k0, k1):
 * dwt[(i*3 + j)*K*C + k*C + c] = (G^T M G)[i][j] with M[p] at
 * mp + p*K*C + k*C + c; C a multiple of the vector. */
CF_INLINE void FN(cf_nhwc_wino_taps)(const void *mp_, cf_idx K, cf_idx C, cf_idx k0,
                                     cf_idx k1, void *dwt_, const int M) {
    const int A = M + 2;
    const CF_T *mp = (const CF_T *)mp_;
    CF_T *dwt = (CF_T *)dwt_;
    const cf_idx KC = K * C;
    for (cf_idx k = k0; k < k1; k++)
        for (cf_idx c = 0; c < C; c += CF_VW) {
            CF_V rows[6][3];
            for (int a = 0; a < A; a++) { /* rows: M G */
                CF_V mr[6];
                for (int b = 0; b < A; b++)
                    memcpy(&mr[b], mp + (a * A + b) * KC + k * C + c, sizeof mr[b]);
                FN(cf_wino_gt_m)(mr, rows[a], M);
            }
            for (int j = 0; j < 3; j++) { /* columns: G^T (M G) */
                CF_V col[6], o[3];
                for (int a = 0; a < A; a++) col[a] = rows[a][j];
                FN(cf_wino_gt_m)(col, o, M);
                for (int i = 0; i < 3; i++)
                    memcpy(dwt + (i * 3 + j) * KC + k * C + c, &o[i], sizeof o[i]);
            }
        }
}

/* The table's entries: m = 4 (F(4x4, 3x3)) or 2 (F(2x2, 3x3)), each a
 * constant inside the body it selects. */
static int FN(nhwc_wino_grad_out)(const void *go, cf_idx gs, cf_idx OH, cf_idx OW, cf_idx tw,
                                  cf_idx t0, cf_idx t1, cf_idx k0, cf_idx k1, void *u,
                                  cf_idx T, cf_idx K, int m) {
    return m == 2 ? FN(cf_nhwc_wino_grad_out)(go, gs, OH, OW, tw, t0, t1, k0, k1, u, T, K, 2)
                  : FN(cf_nhwc_wino_grad_out)(go, gs, OH, OW, tw, t0, t1, k0, k1, u, T, K, 4);
}

static void FN(nhwc_wino_taps)(const void *mp, cf_idx K, cf_idx C, cf_idx k0, cf_idx k1,
                               void *dwt, int m) {
    if (m == 2) FN(cf_nhwc_wino_taps)(mp, K, C, k0, k1, dwt, 2);
    else FN(cf_nhwc_wino_taps)(mp, K, C, k0, k1, dwt, 4);
}

static int FN(nhwc_wino_pack)(const void *w, cf_idx K, cf_idx C, cf_idx ks, cf_idx cs,
                              int flip, void *u, cf_idx pos_stride, int m) {
    return m == 2 ? FN(cf_nhwc_wino_pack)(w, K, C, ks, cs, flip, u, pos_stride, 2)
                  : FN(cf_nhwc_wino_pack)(w, K, C, ks, cs, flip, u, pos_stride, 4);
}

static int FN(nhwc_wino_input)(const void *x, cf_idx xs, cf_idx H, cf_idx W, cf_idx ph,
                               cf_idx pw, cf_idx tw, cf_idx per_image, cf_idx t0, cf_idx t1,
                               cf_idx c0, cf_idx c1, void *v, cf_idx T, cf_idx C, int m) {
    return m == 2 ? FN(cf_nhwc_wino_input)(x, xs, H, W, ph, pw, tw, per_image, t0, t1, c0, c1,
                                           v, T, C, 2)
                  : FN(cf_nhwc_wino_input)(x, xs, H, W, ph, pw, tw, per_image, t0, t1, c0, c1,
                                           v, T, C, 4);
}

static int FN(nhwc_wino_output)(const void *mp, cf_idx T, cf_idx ms, cf_idx tw,
                                cf_idx per_image, cf_idx t0, cf_idx t1, cf_idx OH, cf_idx OW,
                                cf_idx nk, const void *bias, void *out, cf_idx os,
                                const void *res, int clamp, double lo, double hi, int m) {
    return m == 2 ? FN(cf_nhwc_wino_output)(mp, T, ms, tw, per_image, t0, t1, OH, OW, nk, bias,
                                            out, os, res, clamp, lo, hi, 2)
                  : FN(cf_nhwc_wino_output)(mp, T, ms, tw, per_image, t0, t1, OH, OW, nk, bias,
                                            out, os, res, clamp, lo, hi, 4);
}

#undef CF_WINO_SQRT2
#undef CF_WINO_HALF_SQRT2
