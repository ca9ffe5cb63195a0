/* Depthwise convolution (groups == C): every pass, both data formats.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_depthwise_kernels.h), with CF_T and FN() defined.
 *
 * Geometry (cf_geom): C input channels, K = C*M outputs (output channel k
 * reads input channel k / M), no per-group view. Nothing is copied: padding
 * is read where it lies (edges peeled), so the interior of a row or of a
 * pixel's taps runs without a bounds check, and the few border outputs
 * compute what the padded input holds there (zero padding: the value 0,
 * multiplied as the reference multiplies it, so a NaN or infinite weight
 * gives NaN at the border as it does there; the input gradient skips taps
 * that fall outside, as the reference's col2im never forms those products).
 *
 * Channels-first: one output plane per work item (or a block of its rows),
 * vectors along rows. A row is a sum over a tap list (row pointer, offset,
 * weight): the forward's KD*KH*KW taps, or the input gradient's taps of one
 * stride phase, so the stride-2 input gradient is two stride-1 rows.
 * Channels-last: channels in the vector lanes, each output pixel the sum
 * over taps of x[pixel + tap][c..c+VW] * w[tap][c..c+VW], weights packed
 * [m][tap][C] by the driver (XNNPACK's and MLAS's NHWC depthwise layout). */

/* A vector in the work arrays the driver allocates (NumPy aligns them to
 * 16 bytes, not 64): the typedef lowers the alignment GCC may assume. */
typedef CF_V FN(dw_vu) __attribute__((aligned(sizeof(CF_T))));

/* One term of a row sum: out[j] += row[j*s + off] * w. */
typedef struct {
    const CF_T *row;
    cf_idx off;
    CF_T w;
} FN(dw_tap);

/* Elements a vector load at stride s reads (cf_load_strided). */
CF_INLINE cf_idx FN(dw_footprint)(cf_idx s) {
    return s == 1 ? CF_VW : s == 2 ? 2 * CF_VW : (CF_VW - 1) * s + 1;
}

/* Position idx of a row of W elements as the padded input holds it: the
 * element, or the padding of `mode` (zeros: 0). */
CF_INLINE CF_T FN(dw_at)(const CF_T *row, cf_idx idx, cf_idx W, int mode) {
    if (idx >= 0 && idx < W) return row[idx];
    if (mode == CF_PAD_ZEROS) return 0;
    return row[cf_pad_index(idx, W, mode)];
}

/* Output j of a row sum with bounds checks (the peeled edges); skip: taps
 * outside the row add nothing instead of the padding's value. */
CF_INLINE CF_T FN(dw_row_edge)(const FN(dw_tap) *taps, int nt, cf_idx W, cf_idx s, cf_idx j,
                               CF_T bias, int mode, int skip) {
    CF_T acc = bias;
    for (int t = 0; t < nt; t++) {
        const cf_idx idx = j * s + taps[t].off;
        if (idx >= 0 && idx < W) acc += taps[t].row[idx] * taps[t].w;
        else if (!skip) acc += FN(dw_at)(taps[t].row, idx, W, mode) * taps[t].w;
    }
    return acc;
}

/* NCH vectors of outputs, vector q from min(j + q*VW, last) (the last one
 * may overlap the one before: the same values): every load inside the
 * rows; NCH independent accumulator chains. */
CF_INLINE void FN(dw_row_chunk)(const FN(dw_tap) *taps, int nt, cf_idx s, CF_T *out, cf_idx os,
                                cf_idx j, cf_idx last, CF_T bias, const int S, const int NCH) {
    CF_V acc[4];
    cf_idx at[4];
#pragma GCC unroll 4
    for (int q = 0; q < NCH; q++) {
        acc[q] = FN(cf_splat)(bias);
        at[q] = cf_min(j + q * CF_VW, last);
    }
    const cf_idx step = S ? S : s;
    for (int t = 0; t < nt; t++) {
        const CF_T *p = taps[t].row + taps[t].off;
        const CF_T w = taps[t].w;
#pragma GCC unroll 4
        for (int q = 0; q < NCH; q++)
            acc[q] += FN(cf_load_strided)(p + at[q] * step, step) * w;
    }
#pragma GCC unroll 4
    for (int q = 0; q < NCH; q++) {
        CF_T *o = out + at[q] * os;
        if (os == 1) {
            memcpy(o, &acc[q], sizeof(CF_V));
        } else {
            CF_T lanes[CF_VW];
            memcpy(lanes, &acc[q], sizeof lanes);
            for (cf_idx l = 0; l < CF_VW; l++) o[l * os] = lanes[l];
        }
    }
}

/* out[j*os] = bias + sum over taps of row[j*s + off] * w for j < n, rows of
 * W elements. The interior (every tap inside its row) runs four vectors at a
 * time, then one; its last vector ends at the interior's end, recomputing a
 * few outputs of the one before (the same values) rather than running
 * scalar; the edges and rows too short for a vector run scalar. S: the
 * stride as a constant (1, 2) or 0 (any, gathered). */
CF_INLINE void FN(dw_row_s)(const FN(dw_tap) *taps, int nt, cf_idx W, cf_idx s, CF_T *out,
                            cf_idx os, cf_idx n, CF_T bias, int mode, int skip, const int S) {
    if (S) s = S; /* a constant: the divisions below fold */
    const cf_idx foot = FN(dw_footprint)(s);
    cf_idx lo = 0, hi = n, vhi = n; /* interior [lo, hi); vectors may start up to vhi */
    for (int t = 0; t < nt; t++) {
        const cf_idx off = taps[t].off;
        lo = cf_max(lo, cf_ceil_div(-off, s));
        hi = cf_min(hi, cf_floor_div(W - 1 - off, s) + 1);
        vhi = cf_min(vhi, cf_floor_div(W - foot - off, s));
    }
    lo = cf_min(lo, n);
    if (hi < lo) hi = lo;
    cf_idx j = 0;
    for (; j < lo; j++) out[j * os] = FN(dw_row_edge)(taps, nt, W, s, j, bias, mode, skip);
    for (; j + 4 * CF_VW <= hi && j + 3 * CF_VW <= vhi; j += 4 * CF_VW)
        FN(dw_row_chunk)(taps, nt, s, out, os, j, hi, bias, S, 4);
    const cf_idx last = hi - CF_VW;
    if (j < hi && last >= lo && last <= vhi) {
        /* the rest, fewer than four vectors, in one go: the last ends at hi */
        const cf_idx nch = (hi - j + CF_VW - 1) / CF_VW;
        if (nch == 1) FN(dw_row_chunk)(taps, nt, s, out, os, j, last, bias, S, 1);
        else if (nch == 2) FN(dw_row_chunk)(taps, nt, s, out, os, j, last, bias, S, 2);
        else if (nch == 3) FN(dw_row_chunk)(taps, nt, s, out, os, j, last, bias, S, 3);
        else FN(dw_row_chunk)(taps, nt, s, out, os, j, last, bias, S, 4);
        j = hi;
    }
    for (; j + CF_VW <= hi && j <= vhi; j += CF_VW)
        FN(dw_row_chunk)(taps, nt, s, out, os, j, hi, bias, S, 1);
    for (; j < n; j++) out[j * os] = FN(dw_row_edge)(taps, nt, W, s, j, bias, mode, skip);
}

static void FN(dw_row)(const FN(dw_tap) *taps, int nt, cf_idx W, cf_idx s, CF_T *out,
                       cf_idx os, cf_idx n, CF_T bias, int mode, int skip) {
    if (s == 1) FN(dw_row_s)(taps, nt, W, s, out, os, n, bias, mode, skip, 1);
    else if (s == 2) FN(dw_row_s)(taps, nt, W, s, out, os, n, bias, mode, skip, 2);
    else FN(dw_row_s)(taps, nt, W, s, out, os, n, bias, mode, skip, 0);
}

/* The input row a tap row reaches along one dim: i itself, the row the
 * padding copies (non-zero modes) or -1 (zero padding). */
CF_INLINE cf_idx FN(dw_source)(cf_idx i, cf_idx n, int mode) {
    return (i >= 0 && i < n) ? i : cf_pad_index(i, n, mode);
}

/* ------------------------------------------------------- channels-first */

/* The input row tap (kd, kh) of output row (od, oh) reads in plane x: the
 * row itself, the one the padding copies, or `zero` (zero padding). */
CF_INLINE const CF_T *FN(dw_tap_row)(const CF_T *x, cf_idx od, cf_idx oh, cf_idx kd, cf_idx kh,
                                     const cf_geom *g, const void *zero) {
    const cf_idx id = FN(dw_source)(od * g->sd - g->pd + kd * g->dd, g->D, g->pad_mode);
    const cf_idx ih = FN(dw_source)(oh * g->sh - g->ph + kh * g->dh, g->H, g->pad_mode);
    return (id < 0 || ih < 0) ? (const CF_T *)zero : x + (id * g->H + ih) * g->W;
}

/* Forward rows [r0, r1) (r = od*OH + oh) of one output plane.
 * x: the input plane it reads, [D][H][W]; w: its KD*KH*KW taps; bias: one
 * value or NULL; out: the plane [OD][OH][OW]; zero: W zeros (the rows of
 * zero padding); taps: KD*KH*KW dw_tap of work. */
static void FN(dw_forward_planes)(const void *x_, const void *w_, const void *bias_,
                                  void *out_, cf_idx r0, cf_idx r1, const cf_geom *g,
                                  const void *zero, void *taps_) {
    const CF_T *x = (const CF_T *)x_, *w = (const CF_T *)w_;
    const CF_T bias = bias_ ? *(const CF_T *)bias_ : (CF_T)0;
    FN(dw_tap) *taps = (FN(dw_tap) *)taps_;
    for (cf_idx r = r0; r < r1; r++) {
        const cf_idx od = r / g->OH, oh = r % g->OH;
        int nt = 0;
        for (cf_idx kd = 0; kd < g->KD; kd++) {
            for (cf_idx kh = 0; kh < g->KH; kh++) {
                const CF_T *row = FN(dw_tap_row)(x, od, oh, kd, kh, g, zero);
                for (cf_idx kw = 0; kw < g->KW; kw++, nt++) {
                    taps[nt].row = row;
                    taps[nt].off = kw * g->dw - g->pw;
                    taps[nt].w = w[(kd * g->KH + kh) * g->KW + kw];
                }
            }
        }
        FN(dw_row)(taps, nt, g->W, g->sw, (CF_T *)out_ + r * g->OW, 1, g->OW, bias,
                   g->pad_mode, 0);
    }
}

/* Input-gradient rows [r0, r1) (r = id*H + ih) of one input plane c: the
 * sum over its M output planes of their transposed correlations. Along
 * each dim a tap reaches input i from output (i + p - t*d) / s when that
 * divides; along rows the inputs of one phase (i % s) share their taps and
 * read consecutive outputs: a stride-1 row sum stored every s-th element.
 * go: the M output planes [OD][OH][OW] of c; w: their taps [M][KVOL];
 * bias: one value added (a transposed convolution's) or NULL; gx: the plane
 * [D][H][W]; taps: M*KD*KH*KW dw_tap of work. Zero padding only (the
 * caller folds other modes' padding gradients). */
static void FN(dw_backward_input_planes)(const void *go_, const void *w_, const void *bias_,
                                         void *gx_, cf_idx r0, cf_idx r1, cf_idx M,
                                         const cf_geom *g, void *taps_) {
    const CF_T *go = (const CF_T *)go_, *w = (const CF_T *)w_;
    const CF_T bias = bias_ ? *(const CF_T *)bias_ : (CF_T)0;
    FN(dw_tap) *taps = (FN(dw_tap) *)taps_;
    const cf_idx P = g->OD * g->OH * g->OW, KVOL = g->KD * g->KH * g->KW;
    for (cf_idx r = r0; r < r1; r++) {
        const cf_idx id = r / g->H, ih = r % g->H;
        CF_T *gx = (CF_T *)gx_ + r * g->W;
        for (cf_idx phase = 0; phase < cf_min(g->sw, g->W); phase++) {
            int nt = 0;
            for (cf_idx m = 0; m < M; m++)
            for (cf_idx kd = 0; kd < g->KD; kd++) {
                const cf_idx td = id + g->pd - kd * g->dd;
                const cf_idx od = cf_floor_div(td, g->sd);
                if (od * g->sd != td || od < 0 || od >= g->OD) continue;
                for (cf_idx kh = 0; kh < g->KH; kh++) {
                    const cf_idx th = ih + g->ph - kh * g->dh;
                    const cf_idx oh = cf_floor_div(th, g->sh);
                    if (oh * g->sh != th || oh < 0 || oh >= g->OH) continue;
                    for (cf_idx kw = 0; kw < g->KW; kw++) {
                        const cf_idx tw = phase + g->pw - kw * g->dw;
                        const cf_idx off = cf_floor_div(tw, g->sw);
                        if (off * g->sw != tw) continue;
                        taps[nt].row = go + m * P + (od * g->OH + oh) * g->OW;
                        taps[nt].off = off;
                        taps[nt].w = w[m * KVOL + (kd * g->KH + kh) * g->KW + kw];
                        nt++;
                    }
                }
            }
            FN(dw_row)(taps, nt, g->OW, 1, gx + phase, g->sw,
                       (g->W - phase + g->sw - 1) / g->sw, bias, CF_PAD_ZEROS, 1);
        }
    }
}

/* sum over j < n of go[j] * (row as padded)[j*s + off], added to *accv
 * (vectors over the interior) and *accs (the edges and the rest). */
CF_INLINE void FN(dw_row_dot_s)(const CF_T *row, cf_idx W, cf_idx s, cf_idx off,
                                const CF_T *go, cf_idx n, int mode, FN(dw_vu) *accv,
                                CF_T *accs, const int S) {
    if (S) s = S; /* a constant: the divisions below fold */
    const cf_idx step = s;
    cf_idx lo = cf_min(cf_max(0, cf_ceil_div(-off, s)), n);
    cf_idx hi = cf_max(lo, cf_min(n, cf_floor_div(W - 1 - off, s) + 1));
    const cf_idx vhi = cf_floor_div(W - FN(dw_footprint)(s) - off, s);
    CF_T sc = 0;
    cf_idx j = 0;
    for (; j < lo; j++) sc += go[j] * FN(dw_at)(row, j * s + off, W, mode);
    CF_V a0 = FN(cf_splat)(0), a1 = FN(cf_splat)(0);
    for (; j + 2 * CF_VW <= hi && j + CF_VW <= vhi; j += 2 * CF_VW) {
        CF_V g0, g1;
        memcpy(&g0, go + j, sizeof g0);
        memcpy(&g1, go + j + CF_VW, sizeof g1);
        a0 += g0 * FN(cf_load_strided)(row + j * step + off, step);
        a1 += g1 * FN(cf_load_strided)(row + (j + CF_VW) * step + off, step);
    }
    for (; j + CF_VW <= hi && j <= vhi; j += CF_VW) {
        CF_V g0;
        memcpy(&g0, go + j, sizeof g0);
        a0 += g0 * FN(cf_load_strided)(row + j * step + off, step);
    }
    *accv += a0 + a1;
    for (; j < hi; j++) sc += go[j] * row[j * s + off];
    for (; j < n; j++) sc += go[j] * FN(dw_at)(row, j * s + off, W, mode);
    *accs += sc;
}

static void FN(dw_row_dot)(const CF_T *row, cf_idx W, cf_idx s, cf_idx off, const CF_T *go,
                           cf_idx n, int mode, FN(dw_vu) *accv, CF_T *accs) {
    if (s == 1) FN(dw_row_dot_s)(row, W, s, off, go, n, mode, accv, accs, 1);
    else if (s == 2) FN(dw_row_dot_s)(row, W, s, off, go, n, mode, accv, accs, 2);
    else FN(dw_row_dot_s)(row, W, s, off, go, n, mode, accv, accs, 0);
}

/* Weight gradient of one output channel over the batch rows [r0, r1)
 * (r = (n*OD + od)*OH + oh): gw[t] = the sum, over those rows, of go times
 * the padded input under tap t (zero padding's zeros multiplied, as the
 * reference's columns hold them), written (not added). x: the input plane
 * the channel reads in image 0, images x_nstride apart; go: its output
 * plane in image 0, images go_nstride apart; zero: W zeros; acc: work of
 * KVOL vectors and KVOL values. Sums in a fixed order (row by row, tap by
 * tap; lanes summed last): the same for any thread count. */
static void FN(dw_backward_weight_planes)(const void *x_, cf_idx x_nstride, const void *go_,
                                          cf_idx go_nstride, void *gw_, cf_idx r0, cf_idx r1,
                                          const cf_geom *g, const void *zero, void *acc_) {
    const cf_idx KVOL = g->KD * g->KH * g->KW;
    FN(dw_vu) *accv = (FN(dw_vu) *)acc_;
    CF_T *accs = (CF_T *)(accv + KVOL);
    CF_T *gw = (CF_T *)gw_;
    for (cf_idx t = 0; t < KVOL; t++) {
        accv[t] = FN(cf_splat)(0);
        accs[t] = 0;
    }
    const cf_idx rows = g->OD * g->OH;
    for (cf_idx r = r0; r < r1; r++) {
        const cf_idx n = r / rows, od = r % rows / g->OH, oh = r % g->OH;
        const CF_T *x = (const CF_T *)x_ + n * x_nstride;
        const CF_T *go = (const CF_T *)go_ + n * go_nstride + (od * g->OH + oh) * g->OW;
        for (cf_idx kd = 0; kd < g->KD; kd++) {
            for (cf_idx kh = 0; kh < g->KH; kh++) {
                const CF_T *row = FN(dw_tap_row)(x, od, oh, kd, kh, g, zero);
                const cf_idx t0 = (kd * g->KH + kh) * g->KW;
                for (cf_idx kw = 0; kw < g->KW; kw++)
                    FN(dw_row_dot)(row, g->W, g->sw, kw * g->dw - g->pw, go, g->OW,
                                   g->pad_mode, &accv[t0 + kw], &accs[t0 + kw]);
            }
        }
    }
    for (cf_idx t = 0; t < KVOL; t++) gw[t] = FN(cf_hsum)(accv[t]) + accs[t];
}

/* -------------------------------------------------------- channels-last */

/* Lanes j < cnt of p[j*stride], the rest 0 (cnt == VW, stride 1: one load). */
CF_INLINE CF_V FN(dw_load_lanes)(const CF_T *p, cf_idx stride, cf_idx cnt) {
    CF_V v;
    if (cnt == CF_VW && stride == 1) {
        memcpy(&v, p, sizeof v);
    } else {
        CF_T lanes[CF_VW];
        for (cf_idx j = 0; j < CF_VW; j++) lanes[j] = j < cnt ? p[j * stride] : (CF_T)0;
        memcpy(&v, lanes, sizeof v);
    }
    return v;
}

/* Lanes j < cnt of v to p[j*stride]. */
CF_INLINE void FN(dw_store_lanes)(CF_T *p, cf_idx stride, cf_idx cnt, CF_V v) {
    if (cnt == CF_VW && stride == 1) {
        memcpy(p, &v, sizeof v);
    } else {
        CF_T lanes[CF_VW];
        memcpy(lanes, &v, sizeof lanes);
        for (cf_idx j = 0; j < cnt; j++) p[j * stride] = lanes[j];
    }
}

/* The output o that tap t reaches input i from along one dim (o*s - p + t*d
 * == i), or -1 if none inside [0, n). */
CF_INLINE cf_idx FN(dw_tap_output)(cf_idx i, cf_idx t, cf_idx s, cf_idx p, cf_idx d, cf_idx n) {
    const cf_idx u = i + p - t * d;
    if (s == 1) return (u >= 0 && u < n) ? u : -1;
    const cf_idx o = cf_floor_div(u, s);
    return (o * s == u && o >= 0 && o < n) ? o : -1;
}

/* Element offsets of the KVOL taps from a window's first pixel
 * (channels-last, C channels): toff[t], filled once per kernel call. */
CF_INLINE void FN(dw_tap_offsets)(const cf_geom *g, cf_idx *toff) {
    cf_idx t = 0;
    for (cf_idx kd = 0; kd < g->KD; kd++)
        for (cf_idx kh = 0; kh < g->KH; kh++)
            for (cf_idx kw = 0; kw < g->KW; kw++, t++)
                toff[t] = ((kd * g->dd * g->H + kh * g->dh) * g->W + kw * g->dw) * g->C;
}

/* The input pixels the KVOL taps of output pixel (n, od, oh, ow) read, as
 * pointers to their channel 0 (the padding's source pixel in a non-zero
 * mode, `zero` for zero padding). A window inside the input (the common
 * case) is its first pixel plus toff (dw_tap_offsets). */
CF_INLINE void FN(dw_tap_pixels)(const CF_T *x, cf_idx n, cf_idx od, cf_idx oh, cf_idx ow,
                                 const cf_geom *g, const CF_T *zero, const cf_idx *toff,
                                 const CF_T **px) {
    const cf_idx C = g->C, KVOL = g->KD * g->KH * g->KW;
    const cf_idx d0 = od * g->sd - g->pd, h0 = oh * g->sh - g->ph, w0 = ow * g->sw - g->pw;
    const CF_T *img = x + n * g->D * g->H * g->W * C;
    if (d0 >= 0 && d0 + (g->KD - 1) * g->dd < g->D && h0 >= 0
        && h0 + (g->KH - 1) * g->dh < g->H && w0 >= 0 && w0 + (g->KW - 1) * g->dw < g->W) {
        const CF_T *base = img + ((d0 * g->H + h0) * g->W + w0) * C;
        for (cf_idx t = 0; t < KVOL; t++) px[t] = base + toff[t];
        return;
    }
    cf_idx t = 0;
    for (cf_idx kd = 0; kd < g->KD; kd++) {
        const cf_idx id = FN(dw_source)(d0 + kd * g->dd, g->D, g->pad_mode);
        for (cf_idx kh = 0; kh < g->KH; kh++) {
            const cf_idx ih = FN(dw_source)(h0 + kh * g->dh, g->H, g->pad_mode);
            const CF_T *rowp = (id < 0 || ih < 0) ? NULL : img + (id * g->H + ih) * g->W * C;
            for (cf_idx kw = 0; kw < g->KW; kw++, t++) {
                const cf_idx iw = FN(dw_source)(w0 + kw * g->dw, g->W, g->pad_mode);
                px[t] = (rowp == NULL || iw < 0) ? zero : rowp + iw * C;
            }
        }
    }
}

/* NCH vectors of channels from c of one output pixel, multiplier index m. */
CF_INLINE void FN(dw_last_chunk)(const CF_T *const *px, cf_idx KVOL, const CF_T *wpk,
                                 const CF_T *bpk, cf_idx Cp, cf_idx c, cf_idx cnt, CF_T *o,
                                 cf_idx M, const int NCH) {
    CF_V acc[4];
#pragma GCC unroll 4
    for (int q = 0; q < NCH; q++) memcpy(&acc[q], bpk + c + q * CF_VW, sizeof(CF_V));
    for (cf_idx t = 0; t < KVOL; t++) {
        const CF_T *wt = wpk + t * Cp + c;
#pragma GCC unroll 4
        for (int q = 0; q < NCH; q++) {
            CF_V wv;
            memcpy(&wv, wt + q * CF_VW, sizeof wv);
            acc[q] += FN(dw_load_lanes)(px[t] + c + q * CF_VW, 1, cnt) * wv;
        }
    }
#pragma GCC unroll 4
    for (int q = 0; q < NCH; q++)
        FN(dw_store_lanes)(o + (c + q * CF_VW) * M, M, cnt, acc[q]);
}

/* The channels [c0, c1) of one pixel: vectors four at a time, then one, the
 * last ending at c1 (recomputing a few lanes, the same values) when c1 - c0
 * is not a multiple of VW; fewer than VW channels: part of one vector. */
CF_INLINE void FN(dw_last_channels)(const CF_T *const *px, cf_idx KVOL, const CF_T *wpk,
                                    const CF_T *bpk, cf_idx Cp, cf_idx c0, cf_idx c1, CF_T *o,
                                    cf_idx M) {
    if (c1 - c0 < CF_VW) {
        FN(dw_last_chunk)(px, KVOL, wpk, bpk, Cp, c0, c1 - c0, o, M, 1);
        return;
    }
    cf_idx c = c0;
    for (; c + 4 * CF_VW <= c1; c += 4 * CF_VW)
        FN(dw_last_chunk)(px, KVOL, wpk, bpk, Cp, c, CF_VW, o, M, 4);
    for (; c + CF_VW <= c1; c += CF_VW)
        FN(dw_last_chunk)(px, KVOL, wpk, bpk, Cp, c, CF_VW, o, M, 1);
    if (c < c1) FN(dw_last_chunk)(px, KVOL, wpk, bpk, Cp, c1 - CF_VW, CF_VW, o, M, 1);
}

/* PX output pixels side by side, all windows inside the input (pixel j's
 * window starts at base + j*pstep), the vector of channels from c (a full
 * one, or cnt lanes): PX independent accumulator chains share each weight
 * load (one pixel's nine taps would be one dependent chain, bound by the
 * FMA latency). */
CF_INLINE void FN(dw_last_pixels)(const CF_T *base, cf_idx pstep, const cf_idx *toff,
                                  cf_idx KVOL, const CF_T *wpk, const CF_T *bpk, cf_idx Cp,
                                  cf_idx c, cf_idx cnt, CF_T *o, cf_idx ostep, cf_idx M,
                                  const int PX) {
    CF_V acc[4], b;
    memcpy(&b, bpk + c, sizeof b);
#pragma GCC unroll 4
    for (int j = 0; j < PX; j++) acc[j] = b;
    const CF_T *xc = base + c;
    for (cf_idx t = 0; t < KVOL; t++) {
        CF_V wv;
        memcpy(&wv, wpk + t * Cp + c, sizeof wv);
        const CF_T *xt = xc + toff[t];
#pragma GCC unroll 4
        for (int j = 0; j < PX; j++) acc[j] += FN(dw_load_lanes)(xt + j * pstep, 1, cnt) * wv;
    }
#pragma GCC unroll 4
    for (int j = 0; j < PX; j++) FN(dw_store_lanes)(o + j * ostep + c * M, M, cnt, acc[j]);
}

/* PX pixels over the channels [c0, c1): whole vectors, the last ending at
 * c1 (fewer than VW channels: part of one). */
CF_INLINE void FN(dw_last_pixels_channels)(const CF_T *base, cf_idx pstep, const cf_idx *toff,
                                           cf_idx KVOL, const CF_T *wpk, const CF_T *bpk,
                                           cf_idx Cp, cf_idx c0, cf_idx c1, CF_T *o,
                                           cf_idx ostep, cf_idx M, const int PX) {
    if (c1 - c0 < CF_VW) {
        FN(dw_last_pixels)(base, pstep, toff, KVOL, wpk, bpk, Cp, c0, c1 - c0, o, ostep, M, PX);
        return;
    }
    for (cf_idx c = c0; c < c1; c += CF_VW)
        FN(dw_last_pixels)(base, pstep, toff, KVOL, wpk, bpk, Cp, cf_min(c, c1 - CF_VW), CF_VW,
                           o, ostep, M, PX);
}

/* The outputs [*lo, *hi) of output row (n, od, oh) whose windows lie inside
 * the input (channels-last), and the address output 0's window would start
 * at: output ow's window starts ow*sw*C further. */
CF_INLINE const CF_T *FN(dw_inside_run)(const CF_T *x, cf_idx n, cf_idx od, cf_idx oh,
                                        const cf_geom *g, cf_idx *lo, cf_idx *hi) {
    const cf_idx d0 = od * g->sd - g->pd, h0 = oh * g->sh - g->ph;
    *lo = *hi = 0;
    if (!(d0 >= 0 && d0 + (g->KD - 1) * g->dd < g->D && h0 >= 0
          && h0 + (g->KH - 1) * g->dh < g->H))
        return x; /* no window of the row is inside */
    cf_out_range(0, g->sw, g->pw, 1, g->OW, g->W - (g->KW - 1) * g->dw, lo, hi);
    /* the pixel before x's row start when pw > 0: only ever offset forward */
    return x + (((n * g->D + d0) * g->H + h0) * g->W - g->pw) * g->C;
}

/* Forward of output row r (r = (n*OD + od)*OH + oh), channels [c0, c1) of
 * the input (all their M outputs each). x: [N][D][H][W][C]; wpk: packed
 * weights [M][KVOL][Cp] (Cp: C rounded up to whole vectors); bpk: packed
 * bias [M][Cp] (zeros without a bias); out: [N][OD][OH][OW][C*M]; zero: Cp
 * zeros; px: 2*KVOL pointers of work. */
static void FN(dw_forward_last)(const void *x_, const void *wpk_, const void *bpk_, void *out_,
                                cf_idx r, cf_idx c0, cf_idx c1, cf_idx M, const cf_geom *g,
                                const void *zero, void *px_) {
    const CF_T *x = (const CF_T *)x_, *wpk = (const CF_T *)wpk_, *bpk = (const CF_T *)bpk_;
    const CF_T **px = (const CF_T **)px_;
    const cf_idx KVOL = g->KD * g->KH * g->KW, Cp = cf_ceil_div(g->C, CF_VW) * CF_VW;
    const cf_idx rows = g->OD * g->OH, n = r / rows, od = r % rows / g->OH, oh = r % g->OH;
    CF_T *orow = (CF_T *)out_ + r * g->OW * g->C * M;
    cf_idx *toff = (cf_idx *)(px + KVOL);
    FN(dw_tap_offsets)(g, toff);
    /* the outputs whose windows lie inside the input: four at a time */
    cf_idx lo, hi;
    const CF_T *base = FN(dw_inside_run)(x, n, od, oh, g, &lo, &hi);
    const cf_idx pstep = g->sw * g->C, ostep = g->C * M;
    for (cf_idx ow = lo; ow + 4 <= hi; ow += 4)
        for (cf_idx m = 0; m < M; m++)
            FN(dw_last_pixels_channels)(base + ow * pstep, pstep, toff, KVOL,
                                        wpk + m * KVOL * Cp, bpk + m * Cp, Cp, c0, c1,
                                        orow + ow * ostep + m, ostep, M, 4);
    const cf_idx done = lo + (hi - lo) / 4 * 4;
    for (cf_idx ow = 0; ow < g->OW; ow++) {
        if (ow >= lo && ow < done) continue;
        FN(dw_tap_pixels)(x, n, od, oh, ow, g, (const CF_T *)zero, toff, px);
        for (cf_idx m = 0; m < M; m++)
            FN(dw_last_channels)(px, KVOL, wpk + m * KVOL * Cp, bpk + m * Cp, Cp, c0, c1,
                                 orow + ow * g->C * M + m, M);
    }
}

/* Input gradient of input row r (r = (n*D + id)*H + ih), channels [c0,
 * c1): gx[pixel][c] = bias[c] + the sum over m < M and the taps that reach
 * the pixel from an output (i + p - t*d divisible by s, inside the output)
 * of go[output][c*M + m] * w[c*M + m][t]. wpk: [M][KVOL][Cp]; bpk: [Cp]
 * (zeros: no bias); go: [N][OD][OH][OW][C*M]; gx: [N][D][H][W][C]; work:
 * 4*KVOL pointers. Zero padding only. Taps are summed in (kw, kd, kh)
 * order. */
/* PX input pixels side by side of a stride-1 multiplier-1 input gradient,
 * each reached by the same nt taps (pointers pg[t] + shift for pixel 0,
 * pstep further per pixel), channels from c (cnt lanes): PX independent
 * chains share each weight load. */
CF_INLINE void FN(dw_input_last_pixels)(const CF_T *const *pg, const cf_idx *tap, cf_idx nt,
                                        cf_idx shift, cf_idx pstep, const CF_T *wpk,
                                        const CF_T *bpk, cf_idx Cp, cf_idx c, cf_idx cnt,
                                        CF_T *o, const int PX) {
    CF_V acc[4], b;
    memcpy(&b, bpk + c, sizeof b);
#pragma GCC unroll 4
    for (int j = 0; j < PX; j++) acc[j] = b;
    for (cf_idx t = 0; t < nt; t++) {
        CF_V wv;
        memcpy(&wv, wpk + tap[t] * Cp + c, sizeof wv);
        const CF_T *xt = pg[t] + shift + c;
#pragma GCC unroll 4
        for (int j = 0; j < PX; j++) acc[j] += FN(dw_load_lanes)(xt + j * pstep, 1, cnt) * wv;
    }
#pragma GCC unroll 4
    for (int j = 0; j < PX; j++) FN(dw_store_lanes)(o + j * pstep + c, 1, cnt, acc[j]);
}

static void FN(dw_backward_input_last)(const void *go_, const void *wpk_, const void *bpk_,
                                       void *gx_, cf_idx r, cf_idx c0, cf_idx c1, cf_idx M,
                                       const cf_geom *g, void *work) {
    const CF_T *go = (const CF_T *)go_, *wpk = (const CF_T *)wpk_, *bpk = (const CF_T *)bpk_;
    const CF_T **pg = (const CF_T **)work;
    const cf_idx KVOL = g->KD * g->KH * g->KW, Cp = cf_ceil_div(g->C, CF_VW) * CF_VW;
    cf_idx *tap = (cf_idx *)(pg + KVOL);
    const cf_idx n = r / (g->D * g->H), id = r / g->H % g->D, ih = r % g->H, K = g->C * M;
    CF_T *grow = (CF_T *)gx_ + r * g->W * g->C;
    /* the output rows the (kd, kh) taps reach this input row from: once per row */
    cf_idx nrow = 0;
    const CF_T **prow = pg + 2 * KVOL; /* work: pg, tap, prow, trow; KVOL each */
    cf_idx *trow = tap + 2 * KVOL;
    for (cf_idx kd = 0; kd < g->KD; kd++) {
        const cf_idx od = FN(dw_tap_output)(id, kd, g->sd, g->pd, g->dd, g->OD);
        if (od < 0) continue;
        for (cf_idx kh = 0; kh < g->KH; kh++) {
            const cf_idx oh = FN(dw_tap_output)(ih, kh, g->sh, g->ph, g->dh, g->OH);
            if (oh < 0) continue;
            prow[nrow] = go + ((n * g->OD + od) * g->OH + oh) * g->OW * K;
            trow[nrow++] = (kd * g->KH + kh) * g->KW;
        }
    }
    /* stride 1, multiplier 1: the pixels every kw tap reaches from inside
     * the output share one tap list (shifted a pixel each), four at a time */
    cf_idx lo = 0, done = 0;
    if (g->sw == 1 && M == 1) {
        lo = cf_max(0, (g->KW - 1) * g->dw - g->pw);
        const cf_idx hi = cf_min(g->W, g->OW - g->pw);
        cf_idx nt = 0;
        for (cf_idx kw = 0; kw < g->KW; kw++)
            for (cf_idx r = 0; r < nrow; r++) {
                pg[nt] = prow[r] + (lo + g->pw - kw * g->dw) * K;
                tap[nt++] = trow[r] + kw;
            }
        for (done = lo; done + 4 <= hi; done += 4) {
            CF_T *o = grow + done * g->C;
            if (c1 - c0 < CF_VW) {
                FN(dw_input_last_pixels)(pg, tap, nt, (done - lo) * K, K, wpk, bpk, Cp, c0,
                                         c1 - c0, o, 4);
                continue;
            }
            for (cf_idx c = c0; c < c1; c += CF_VW)
                FN(dw_input_last_pixels)(pg, tap, nt, (done - lo) * K, K, wpk, bpk, Cp,
                                         cf_min(c, c1 - CF_VW), CF_VW, o, 4);
        }
    }
    for (cf_idx iw = 0; iw < g->W; iw++) {
        if (iw >= lo && iw < done) continue;
        cf_idx nt = 0;
        for (cf_idx kw = 0; kw < g->KW; kw++) {
            const cf_idx ow = FN(dw_tap_output)(iw, kw, g->sw, g->pw, g->dw, g->OW);
            if (ow < 0) continue;
            for (cf_idx r = 0; r < nrow; r++) {
                pg[nt] = prow[r] + ow * K;
                tap[nt++] = trow[r] + kw;
            }
        }
        CF_T *o = grow + iw * g->C;
        const cf_idx span = c1 - c0;
        for (cf_idx c = c0; c < c1; c += CF_VW) {
            /* the last vector ends at c1 (recomputing lanes) unless the span
             * is shorter than a vector */
            const cf_idx cs = span >= CF_VW ? cf_min(c, c1 - CF_VW) : c;
            const cf_idx cnt = cf_min(CF_VW, c1 - cs);
            CF_V acc;
            memcpy(&acc, bpk + cs, sizeof acc);
            for (cf_idx m = 0; m < M; m++)
                for (cf_idx t = 0; t < nt; t++) {
                    CF_V wv;
                    memcpy(&wv, wpk + (m * KVOL + tap[t]) * Cp + cs, sizeof wv);
                    acc += FN(dw_load_lanes)(pg[t] + cs * M + m, M, cnt) * wv;
                }
            FN(dw_store_lanes)(o + cs, 1, cnt, acc);
        }
    }
}

/* Partial weight gradient of the input channels [c, c + VW) (lanes past C
 * held at zero) over the output rows [r0, r1) (r = (n*OD + od)*OH + oh):
 * part[(m*KVOL + t)*Cp + c + j] = the sum over those pixels of
 * go[pixel][(c+j)*M + m] * (padded input under tap t)[c+j], written (not
 * added). acc: M*KVOL vectors of work; px: 2*KVOL pointers; zero: Cp zeros.
 * Pixels in order, taps in order: the same sums for any thread count. */
CF_INLINE void FN(dw_weight_last_rows)(const CF_T *x, const CF_T *go, cf_idx r0, cf_idx r1,
                                       cf_idx c, cf_idx M, const cf_geom *g, const CF_T *zero,
                                       FN(dw_vu) *acc, const CF_T **px, const int KV,
                                       const int FULL) {
    const cf_idx KVOL = KV ? KV : g->KD * g->KH * g->KW;
    /* FULL: a whole vector of channels, loads without a lane count */
    const cf_idx cnt = FULL ? CF_VW : cf_min(CF_VW, g->C - c), K = g->C * M;
    const cf_idx rows = g->OD * g->OH;
    CF_V a[9]; /* KV == 9 (3x3, multiplier 1): the accumulators stay in registers */
    for (int t = 0; t < KV; t++) a[t] = FN(cf_splat)(0);
    for (cf_idx t = 0; t < M * KVOL; t++) acc[t] = FN(cf_splat)(0);
    cf_idx *toff = (cf_idx *)(px + KVOL);
    FN(dw_tap_offsets)(g, toff);
    for (cf_idx r = r0; r < r1; r++) {
        const cf_idx n = r / rows, od = r % rows / g->OH, oh = r % g->OH;
        const CF_T *grow = go + r * g->OW * K;
        cf_idx lo, hi;
        const CF_T *base = FN(dw_inside_run)(x, n, od, oh, g, &lo, &hi);
        for (cf_idx ow = 0; ow < g->OW; ow++) {
            if (KV && ow >= lo && ow < hi) {
                /* a window inside the input: its taps at base + toff */
                const CF_V gv = FN(dw_load_lanes)(grow + ow * K + c, 1, cnt);
                const CF_T *xb = base + ow * g->sw * g->C + c;
#pragma GCC unroll 9
                for (int t = 0; t < KV; t++) a[t] += gv * FN(dw_load_lanes)(xb + toff[t], 1, cnt);
                continue;
            }
            FN(dw_tap_pixels)(x, n, od, oh, ow, g, zero, toff, px);
            for (cf_idx m = 0; m < M; m++) {
                const CF_V gv = FN(dw_load_lanes)(grow + ow * K + c * M + m, M, cnt);
                if (KV) {
#pragma GCC unroll 9
                    for (int t = 0; t < KV; t++) a[t] += gv * FN(dw_load_lanes)(px[t] + c, 1, cnt);
                    continue;
                }
                FN(dw_vu) *am = acc + m * KVOL;
                for (cf_idx t = 0; t < KVOL; t++)
                    am[t] += gv * FN(dw_load_lanes)(px[t] + c, 1, cnt);
            }
        }
    }
    for (int t = 0; t < KV; t++) acc[t] = a[t];
}

static void FN(dw_backward_weight_last)(const void *x_, const void *go_, void *part_,
                                        cf_idx r0, cf_idx r1, cf_idx c, cf_idx M,
                                        const cf_geom *g, const void *zero, void *acc_,
                                        void *px_) {
    const CF_T *x = (const CF_T *)x_, *go = (const CF_T *)go_;
    const CF_T **px = (const CF_T **)px_;
    FN(dw_vu) *acc = (FN(dw_vu) *)acc_;
    CF_T *part = (CF_T *)part_;
    const cf_idx KVOL = g->KD * g->KH * g->KW, Cp = cf_ceil_div(g->C, CF_VW) * CF_VW;
    const CF_T *z = (const CF_T *)zero;
    if (KVOL == 9 && M == 1 && c + CF_VW <= g->C)
        FN(dw_weight_last_rows)(x, go, r0, r1, c, M, g, z, acc, px, 9, 1);
    else if (KVOL == 9 && M == 1)
        FN(dw_weight_last_rows)(x, go, r0, r1, c, M, g, z, acc, px, 9, 0);
    else
        FN(dw_weight_last_rows)(x, go, r0, r1, c, M, g, z, acc, px, 0, 0);
    for (cf_idx t = 0; t < M * KVOL; t++) memcpy(part + t * Cp + c, &acc[t], sizeof(CF_V));
}
