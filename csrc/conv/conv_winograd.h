/* Winograd F(4x4, 3x3) convolution: 2-D 3x3 kernels, stride 1, dilation 1.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h), with CF_T, FN() and the tile sizes of cf_tiles.h defined;
 * it uses gemm_packed.h's GEMM, included before it.
 *
 * Each 4x4 output tile is Y = A^T [ sum_c (G g_kc G^T) .* (B^T d_c B) ] A
 * over the 6x6 input patches d_c: 36 multiplications per tile, channel and
 * output channel instead of 144. The interpolation points are 0, +-sqrt(2),
 * +-sqrt(2)/2 and infinity (ncnn's better-conditioned choice): the float32
 * error, max|err|/max|ref| against float64, is about 4x smaller than with
 * the textbook 0, +-1, +-2 (measured 3.9e-6 vs 1.7e-5 over 512 channels).
 *
 * Schedule (oneDNN's old W_SGD, MNN): the weights are transformed once per
 * call into U[36][K][C]; then per block of CF_GEMM_NR tiles (the GEMM's
 * column panel) a work item transforms the input patches of the block into
 * V[36][C][NR], runs the 36 GEMMs M[p] = U[p]^T V[p] for its output
 * channels, and transforms M back into the output, while all three stay in
 * L2. Tiles are numbered across the batch (n, tile row, tile column) so
 * small planes still fill the panel; within a tile row, consecutive tiles
 * sit in consecutive vector lanes and are read with stride-4 loads.
 *
 * Non-finite values: a tile mixes its 36 inputs (inf - inf is NaN), so the
 * transforms report any non-finite transformed value and the driver then
 * recomputes the call with the direct algorithm. */

#include "winograd_transforms.h"

/* Store the first len lanes of v at dst (the lanes after them keep their
 * values; dst has room for a full vector). */
CF_INLINE void FN(cf_wino_store)(CF_T *dst, CF_V v, CF_M keep, cf_idx len) {
    if (len == CF_VW) {
        memcpy(dst, &v, sizeof v);
        return;
    }
    CF_M old, nv;
    memcpy(&old, dst, sizeof old);
    memcpy(&nv, &v, sizeof nv);
    old = (old & ~keep) | (nv & keep);
    memcpy(dst, &old, sizeof old);
}

/* U[p][k][c] = (G w[k][c] G^T)[p] for k in [ka, kb) and every c < C, from
 * w [K][C][3][3] (one group); U has K*C elements per position p. Vectors
 * hold CF_VW input channels of one output channel, so the loads walk w in
 * order and the stores are whole vectors. Returns 1 if a transformed weight
 * is not finite (then U is incomplete). */
static int FN(winograd_weights)(const void *w_, cf_idx K, cf_idx C, cf_idx ka, cf_idx kb,
                                void *u_) {
    const CF_T *w = (const CF_T *)w_;
    CF_T *u = (CF_T *)u_;
    const cf_idx CK = C * K;
    CF_M bad = {0};
    (void)K;
    for (cf_idx k = ka; k < kb; k++)
        for (cf_idx c0 = 0; c0 < C; c0 += CF_VW) {
            const cf_idx len = cf_min(CF_VW, C - c0);
            const CF_M keep = FN(cf_lane_mask)(len);
            const CF_T *src = w + (k * C + c0) * 9;
            CF_T lanes[9][CF_VW];
            for (cf_idx j = 0; j < CF_VW; j++)
                for (int e = 0; e < 9; e++) lanes[e][j] = j < len ? src[j * 9 + e] : (CF_T)0;
            CF_V g[9], col[3], t[6][3], row[3], o[6];
            memcpy(g, lanes, sizeof g);
            for (int j = 0; j < 3; j++) { /* columns of g: G g */
                CF_V gc[6];
                col[0] = g[j], col[1] = g[3 + j], col[2] = g[6 + j];
                FN(cf_wino_g)(col, gc);
                for (int i = 0; i < 6; i++) t[i][j] = gc[i];
            }
            for (int i = 0; i < 6; i++) { /* rows: (G g) G^T */
                row[0] = t[i][0], row[1] = t[i][1], row[2] = t[i][2];
                FN(cf_wino_g)(row, o);
                for (int j = 0; j < 6; j++) {
                    FN(cf_wino_note)(o[j], keep, &bad);
                    CF_T *dst = u + (i * 6 + j) * CK + k * C + c0;
                    if (len == CF_VW) {
                        memcpy(dst, &o[j], sizeof o[j]);
                    } else {
                        CF_T out[CF_VW];
                        memcpy(out, &o[j], sizeof out);
                        for (cf_idx q = 0; q < len; q++) dst[q] = out[q];
                    }
                }
            }
        }
    return FN(cf_wino_any)(bad);
}

/* Output row order of 4 vectors y[j] (lanes: tiles): o[4*l + j] = y[j][l],
 * as o[0..4) of CF_VW lanes each (two rounds of two-vector shuffles). */
CF_INLINE void FN(cf_wino_interleave4)(const CF_V *y, CF_V *o) {
    CF_M lo, hi, pick[4];
    for (int l = 0; l < (int)CF_VW; l++) { /* pairs: y0[l], y1[l] */
        lo[l] = (l >> 1) + (l & 1) * CF_VW;
        hi[l] = CF_VW / 2 + (l >> 1) + (l & 1) * CF_VW;
    }
    const CF_V lo01 = __builtin_shuffle(y[0], y[1], lo), hi01 = __builtin_shuffle(y[0], y[1], hi);
    const CF_V lo23 = __builtin_shuffle(y[2], y[3], lo), hi23 = __builtin_shuffle(y[2], y[3], hi);
    for (int q = 0; q < 2; q++) /* quads: a pair from 01, the same pair from 23 */
        for (int l = 0; l < (int)CF_VW; l++) {
            const int pair = q * (int)CF_VW / 4 + l / 4, e = l & 3;
            pick[q][l] = e < 2 ? 2 * pair + e : CF_VW + 2 * pair + e - 2;
        }
    o[0] = __builtin_shuffle(lo01, lo23, pick[0]);
    o[1] = __builtin_shuffle(lo01, lo23, pick[1]);
    o[2] = __builtin_shuffle(hi01, hi23, pick[0]);
    o[3] = __builtin_shuffle(hi01, hi23, pick[1]);
}

/* A run: consecutive tiles of one tile row of one image, within one block. */
typedef struct {
    cf_idx n, ty, tx, col, len;
} FN(cf_wino_run);

/* Next run of the block [t, t_end) of tiles numbered (n, ty, tx) over tiles
 * th x tw per image, starting at tile t; at most CF_VW long. */
CF_INLINE FN(cf_wino_run) FN(cf_wino_next)(cf_idx t, cf_idx t_end, cf_idx t0, cf_idx th,
                                           cf_idx tw) {
    FN(cf_wino_run) r;
    r.tx = t % tw;
    r.ty = (t / tw) % th;
    r.n = t / (tw * th);
    r.col = t - t0;
    r.len = cf_min(cf_min(CF_VW, tw - r.tx), t_end - t);
    return r;
}

/* One work item: tiles [t0, t0 + nt) (nt <= CF_GEMM_NR) of one group, output
 * channels [k0, k0 + nk).
 *   xp   the group's padded input: image n, channel c at
 *        xp + n*x_nstride + c*Hp*Wp, planes Hp = 4*th + 2, Wp = 4*tw + 2
 *        (the padding applied), readable 4*CF_VW elements past the end
 *   u    the group's transformed weights (winograd_weights)
 *   bias the group's bias or NULL; out: the group's output, image n,
 *        channel k at out + n*out_nstride + k*OH*OW
 *   v    work: 36*C*NR + CF_VW elements; m: 36*nk*NR + CF_VW; work: 4*C
 * g: C, K, OH, OW of the group (H, W: Hp, Wp). Returns 1 if a transformed
 * input is not finite (the output is then incomplete). */
static int FN(winograd_forward_block)(const void *xp_, cf_idx x_nstride, const void *u_,
                                      const void *bias_, void *out_, cf_idx out_nstride,
                                      cf_idx t0, cf_idx nt, cf_idx k0, cf_idx nk, void *v_,
                                      void *m_, void *work, cf_idx kc, const cf_geom *g) {
    const CF_T *xp = (const CF_T *)xp_, *u = (const CF_T *)u_, *bias = (const CF_T *)bias_;
    CF_T *out = (CF_T *)out_, *v = (CF_T *)v_, *m = (CF_T *)m_;
    const cf_idx nr = CF_GEMM_NR, C = g->C, K = g->K, OH = g->OH, OW = g->OW;
    const cf_idx Hp = g->H, Wp = g->W, th = (OH + 3) / 4, tw = (OW + 3) / 4;
    const cf_idx t_end = t0 + nt, PV = C * nr, PM = nk * nr;
    CF_M bad = {0};
    /* input transform: V[p][c][col] */
    for (cf_idx t = t0; t < t_end;) {
        const FN(cf_wino_run) r = FN(cf_wino_next)(t, t_end, t0, th, tw);
        const CF_M keep = FN(cf_lane_mask)(r.len);
        const CF_T *base = xp + r.n * x_nstride + r.ty * 4 * Wp + r.tx * 4;
        for (cf_idx c = 0; c < C; c++) {
            const CF_T *pc = base + c * Hp * Wp;
            CF_V t6[6][6];
            for (int i = 0; i < 6; i++) { /* rows: d B */
                CF_V d[6];
                for (int s = 0; s < 6; s++) d[s] = FN(cf_load_every)(pc + i * Wp + s, 4);
                FN(cf_wino_bt)(d, t6[i]);
            }
            for (int j = 0; j < 6; j++) { /* columns: B^T (d B) */
                CF_V col[6], o[6];
                for (int i = 0; i < 6; i++) col[i] = t6[i][j];
                FN(cf_wino_bt)(col, o);
                for (int i = 0; i < 6; i++) {
                    FN(cf_wino_note)(o[i], keep, &bad);
                    FN(cf_wino_store)(v + (i * 6 + j) * PV + c * nr + r.col, o[i], keep, r.len);
                }
            }
        }
        t += r.len;
    }
    if (FN(cf_wino_any)(bad)) return 1;
    if (nt < nr) /* keep the unused columns finite (and not denormal) */
        for (cf_idx q = 0; q < 36 * C; q++)
            memset(v + q * nr + nt, 0, (size_t)(nr - nt) * sizeof(CF_T));
    /* the 36 GEMMs: M[p][k][col] = sum_c U[p][k0 + k][c] V[p][c][col], U read in place */
    for (int p = 0; p < 36; p++)
        FN(gemm_in_place)(u + p * C * K + k0 * C, C, 1, v + p * PV, nk, nt, C, m + p * PM, nr,
                          NULL, 0, kc, work);
    /* output transform: Y = A^T M A, cropped to OH x OW */
    for (cf_idx t = t0; t < t_end;) {
        const FN(cf_wino_run) r = FN(cf_wino_next)(t, t_end, t0, th, tw);
        const cf_idx rows = cf_min(4, OH - 4 * r.ty), cols = cf_min(4 * r.len, OW - 4 * r.tx);
        for (cf_idx k = 0; k < nk; k++) {
            CF_V t4[6][4], y[4][4];
            for (int i = 0; i < 6; i++) { /* rows: m A */
                CF_V mr[6];
                for (int j = 0; j < 6; j++)
                    memcpy(&mr[j], m + (i * 6 + j) * PM + k * nr + r.col, sizeof mr[j]);
                FN(cf_wino_at)(mr, t4[i]);
            }
            const CF_V b = FN(cf_splat)(bias ? bias[k0 + k] : (CF_T)0);
            for (int j = 0; j < 4; j++) { /* columns: A^T (m A) */
                CF_V col[6], o[4];
                for (int i = 0; i < 6; i++) col[i] = t4[i][j];
                FN(cf_wino_at)(col, o);
                for (int i = 0; i < 4; i++) y[i][j] = bias ? o[i] + b : o[i];
            }
            CF_T *ok = out + r.n * out_nstride + (k0 + k) * OH * OW + r.ty * 4 * OW + r.tx * 4;
            for (cf_idx i = 0; i < rows; i++) {
                CF_V row[4];
                FN(cf_wino_interleave4)(y[i], row);
                CF_T *orow = ok + i * OW;
                cf_idx e = 0;
                for (int q = 0; q < 4 && e + CF_VW <= cols; q++, e += CF_VW)
                    memcpy(orow + e, &row[q], sizeof row[q]);
                if (e < cols) { /* the row's last partial vector, exactly */
                    CF_T lanes[4 * CF_VW];
                    memcpy(lanes, row, sizeof lanes);
                    memcpy(orow + e, lanes + e, (size_t)(cols - e) * sizeof(CF_T));
                }
            }
        }
        t += r.len;
    }
    return 0;
}

#undef CF_WINO_SQRT2
#undef CF_WINO_HALF_SQRT2
