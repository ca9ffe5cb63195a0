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

/* ------------------------------------------------ channels-last forward
 * One output row per call. Its KD*KH tap rows are found once (dw_rows_last):
 * a row of the input with a pixel step of C, or a row of zero padding as the
 * `zero` pixel with step 0, so padded rows need no test in the loops. The
 * outputs whose windows lie inside the input's width (the interior) read
 * tap row + column * step directly; the few whose windows cross the width's
 * edges read a table of one pointer per tap (XNNPACK's indirection buffer:
 * `zero` for the padding), built once per row. Then, for each vector of
 * channels, the bias (and for the edges the 3x3 weights) loaded once, the
 * row's pixels run in tiles of CF_DW_PIXELS side by side (independent
 * accumulator chains): a 3x3 tile loads each input column of a tap row once
 * and adds it to every pixel whose window holds it (stride 1: PX + 2 loads
 * for 3*PX FMAs per tap row, stride 2: 2*PX + 1; the one-pixel-at-a-time
 * kernel before it loaded a vector per FMA and ran 1.3-1.7x slower). The
 * fused epilogue (residual, clamp) runs on the accumulators before the only
 * store. Every output sums bias + its taps in (kd, kh, kw) order, as the
 * reference lays out its columns. */

/* What the tiles of one output row read and write. */
typedef struct {
    const CF_T *const *rp; /* tap rows: pixel 0 of each (dw_rows_last) */
    const cf_idx *ps;      /* ...and the step between their pixels: C, or 0 */
    const CF_T *const *edge; /* KVOL pointers per edge output (dw_edge_pointers) */
    const CF_T *wpk, *bpk;   /* packed weights [M][KVOL][Cp], bias [M][Cp] */
    CF_T *out;               /* the row's output pixel 0, [OW][K] */
    const CF_T *res;         /* the residual laid out as out, or NULL */
    cf_idx KW, KVOL, Cp, K, M, sw, pw, dw;
    cf_idx lo, hi, OW;       /* the interior outputs [lo, hi) of [0, OW) */
    int clamp;
    CF_T clo, chi;
    CF_V clov, chiv;         /* clo and chi in every lane */
} FN(dw_row_last);

/* The KD*KH tap rows of output row (n, od, oh): rp[r] the input row's pixel
 * 0 (the row itself, or the one a non-zero padding mode copies) and ps[r] =
 * C, or for a row of zero padding rp[r] = zero and ps[r] = 0. */
CF_INLINE void FN(dw_rows_last)(const CF_T *x, cf_idx n, cf_idx od, cf_idx oh, const cf_geom *g,
                                const CF_T *zero, const CF_T **rp, cf_idx *ps) {
    const CF_T *img = x + n * g->D * g->H * g->W * g->C;
    cf_idx r = 0;
    for (cf_idx kd = 0; kd < g->KD; kd++) {
        const cf_idx id = FN(dw_source)(od * g->sd - g->pd + kd * g->dd, g->D, g->pad_mode);
        for (cf_idx kh = 0; kh < g->KH; kh++, r++) {
            const cf_idx ih = FN(dw_source)(oh * g->sh - g->ph + kh * g->dh, g->H, g->pad_mode);
            const int pad = id < 0 || ih < 0;
            rp[r] = pad ? zero : img + (id * g->H + ih) * g->W * g->C;
            ps[r] = pad ? 0 : g->C;
        }
    }
}

/* Output e of the row's edges: [0, lo), then [hi, OW). */
CF_INLINE cf_idx FN(dw_edge_output)(const FN(dw_row_last) *rl, cf_idx e) {
    return e < rl->lo ? e : rl->hi + (e - rl->lo);
}

/* The tap pointers of each edge output (KVOL per output, to channel 0):
 * the input pixel, the one a non-zero padding mode copies, or `zero`. */
CF_INLINE void FN(dw_edge_pointers)(const FN(dw_row_last) *rl, const cf_geom *g,
                                    const CF_T *zero, const CF_T **edge) {
    const cf_idx nr = g->KD * g->KH, nedge = rl->OW - (rl->hi - rl->lo);
    for (cf_idx e = 0; e < nedge; e++) {
        const cf_idx w0 = FN(dw_edge_output)(rl, e) * g->sw - g->pw;
        for (cf_idx r = 0; r < nr; r++)
            for (cf_idx kw = 0; kw < g->KW; kw++) {
                const cf_idx iw = FN(dw_source)(w0 + kw * g->dw, g->W, g->pad_mode);
                *edge++ = (rl->ps[r] == 0 || iw < 0) ? zero : rl->rp[r] + iw * g->C;
            }
    }
}

/* Output pixel ow, the cnt lanes of channels from c (multiplier index m)
 * of y: the residual added and the clamp applied as conv_epilogue does
 * (`<= lo ? lo : >= hi ? hi`, NaN kept), then stored. ONE: M == 1. */
CF_INLINE void FN(dw_put_last)(const FN(dw_row_last) *rl, cf_idx ow, cf_idx c, cf_idx cnt,
                               cf_idx m, CF_V y, const int ONE) {
    const cf_idx M = ONE ? 1 : rl->M, at = ow * rl->K + c * M + m;
    if (rl->res) y += FN(dw_load_lanes)(rl->res + at, M, cnt);
    if (rl->clamp) {
        /* two selects: lo <= hi (clamp_bounds), so the second can only
         * replace a lo by an equal hi */
        const CF_M below = (CF_M)(y <= rl->clo);
        y = (CF_V)(((CF_M)y & ~below) | ((CF_M)rl->clov & below));
        const CF_M above = (CF_M)(y >= rl->chi);
        y = (CF_V)(((CF_M)y & ~above) | ((CF_M)rl->chiv & above));
    }
    FN(dw_store_lanes)(rl->out + at, M, cnt, y);
}

/* Tap t's weight vector: held in registers (wr, KV taps) or loaded. */
#define DW_WEIGHT(t) (KV ? wr[t] : FN(dw_load_lanes)(w + (t) * rl->Cp, 1, CF_VW))

/* NPX edge outputs from e through their pointer tables. */
CF_INLINE void FN(dw_edge_tile)(const FN(dw_row_last) *rl, cf_idx e, cf_idx c, cf_idx cnt,
                                cf_idx m, const CF_T *w, const CF_V *wr, CF_V b, const int KV,
                                const int ONE, const int NPX) {
    const cf_idx KVOL = KV ? KV : rl->KVOL;
    const CF_T *const *p = rl->edge + e * KVOL;
    CF_V acc[2];
    for (int j = 0; j < NPX; j++) acc[j] = b;
    for (cf_idx t = 0; t < KVOL; t++) {
        const CF_V wt = DW_WEIGHT(t);
#pragma GCC unroll 2
        for (int j = 0; j < NPX; j++)
            acc[j] += FN(dw_load_lanes)(p[j * KVOL + t] + c, 1, cnt) * wt;
    }
#pragma GCC unroll 2
    for (int j = 0; j < NPX; j++)
        FN(dw_put_last)(rl, FN(dw_edge_output)(rl, e + j), c, cnt, m, acc[j], ONE);
}

/* NPX interior outputs from ow0. KV == 9 (3 tap rows of 3, dilation 1,
 * stride S): the columns of each tap row loaded once, its 3 weights with
 * them (holding all 9 across tiles ran no faster). KV == 0: any kernel,
 * tap by tap, each weight loaded once. */
CF_INLINE void FN(dw_inner_tile)(const FN(dw_row_last) *rl, cf_idx ow0, cf_idx c, cf_idx cnt,
                                 cf_idx m, const CF_T *w, const CF_V *wr, CF_V b, const int KV,
                                 const int S, const int ONE, const int NPX) {
    CF_V acc[CF_DW_PIXELS];
#pragma GCC unroll 16
    for (int j = 0; j < NPX; j++) acc[j] = b;
    if (KV) {
#pragma GCC unroll 3
        for (int r = 0; r < 3; r++) {
            const cf_idx step = rl->ps[r];
            const CF_T *p = rl->rp[r] + (ow0 * S - rl->pw) * step + c;
            CF_V w0, w1, w2;
            memcpy(&w0, w + (r * 3) * rl->Cp, sizeof w0);
            memcpy(&w1, w + (r * 3 + 1) * rl->Cp, sizeof w0);
            memcpy(&w2, w + (r * 3 + 2) * rl->Cp, sizeof w0);
#pragma GCC unroll 40
            for (int col = 0; col < (NPX - 1) * S + 3; col++) {
                CF_V v;
                memcpy(&v, p + col * step, sizeof v);
#if CF_LEVEL >= 4
                /* keep the column in a register: GCC otherwise folds the
                 * load into each of its (up to 3) FMAs, and the load port
                 * bounds the tile (16 x 112 x 112: 58.7 -> 52.4 us) */
                __asm__("" : "+v"(v));
#endif
#pragma GCC unroll 16
                for (int j = 0; j < NPX; j++) {
                    const int kw = col - j * S;
                    if (kw >= 0 && kw < 3) acc[j] += v * (kw == 0 ? w0 : kw == 1 ? w1 : w2);
                }
            }
        }
    } else {
        const cf_idx nr = rl->KVOL / rl->KW;
        for (cf_idx r = 0, t = 0; r < nr; r++) {
            const cf_idx step = rl->ps[r], pstep = rl->sw * step;
            for (cf_idx kw = 0; kw < rl->KW; kw++, t++) {
                const CF_V wt = DW_WEIGHT(t);
                const CF_T *p = rl->rp[r] + (ow0 * rl->sw - rl->pw + kw * rl->dw) * step + c;
#pragma GCC unroll 16
                for (int j = 0; j < NPX; j++)
                    acc[j] += FN(dw_load_lanes)(p + j * pstep, 1, cnt) * wt;
            }
        }
    }
#pragma GCC unroll 16
    for (int j = 0; j < NPX; j++) FN(dw_put_last)(rl, ow0 + j, c, cnt, m, acc[j], ONE);
}

/* The interior outputs [lo, hi) in tiles of PX, the rest in tiles of 4, 2
 * and 1 (no output computed twice: MobileNetV2's 14x14 rows have 12
 * interior outputs, 7x7 rows 5). */
CF_INLINE void FN(dw_inner_run)(const FN(dw_row_last) *rl, cf_idx c, cf_idx cnt, cf_idx m,
                                const CF_T *w, const CF_V *wr, CF_V b, const int KV,
                                const int S, const int ONE) {
    const int PX = CF_DW_PIXELS;
    cf_idx ow = rl->lo;
#define DW_INNER(npx) FN(dw_inner_tile)(rl, ow, c, cnt, m, w, wr, b, KV, S, ONE, npx)
    for (; ow + PX <= rl->hi; ow += PX) DW_INNER(PX);
    if (PX > 4 && ow + 4 <= rl->hi) {
        DW_INNER(4);
        ow += 4;
    }
    if (ow + 2 <= rl->hi) {
        DW_INNER(2);
        ow += 2;
    }
    if (ow < rl->hi) DW_INNER(1);
#undef DW_INNER
}

/* The whole row for the vector of channels from c (cnt lanes), multiplier
 * index m: bias and weights loaded once, the edge outputs in pairs, then
 * the interior. */
CF_INLINE void FN(dw_row_vector_last)(const FN(dw_row_last) *rl, cf_idx c, cf_idx cnt, cf_idx m,
                                      const int KV, const int S, const int ONE) {
    const cf_idx Cp = rl->Cp, KVOL = KV ? KV : rl->KVOL;
    const CF_T *w = rl->wpk + m * KVOL * Cp + c;
    CF_V b, wr[9];
    memcpy(&b, rl->bpk + m * Cp + c, sizeof b);
#pragma GCC unroll 9
    for (int t = 0; t < KV; t++) memcpy(&wr[t], w + t * Cp, sizeof(CF_V));
    const cf_idx nedge = rl->OW - (rl->hi - rl->lo);
    cf_idx e = 0;
    for (; e + 2 <= nedge; e += 2) FN(dw_edge_tile)(rl, e, c, cnt, m, w, wr, b, KV, ONE, 2);
    if (e < nedge) FN(dw_edge_tile)(rl, e, c, cnt, m, w, wr, b, KV, ONE, 1);
    FN(dw_inner_run)(rl, c, cnt, m, w, wr, b, KV, S, ONE);
}
#undef DW_WEIGHT

/* Forward of one output row from its KD*KH tap rows, channels [c0, c1) of
 * the input (all their M outputs each), with a fused layer's epilogue: res
 * (the row's residual, laid out as out, or NULL) added, then clamped to
 * [lo, hi] when clamp. work: the tap rows as dw_rows_last gives them,
 * rp[KD*KH] (pixel 0 of tap row kd*KH + kh, or `zero` for a row of zero
 * padding) then ps[KD*KH] (the step between their pixels: C, or 0), then
 * room for KVOL*(edge outputs) pointers (_plan.depthwise_arrays): a caller
 * holding the input rows anywhere (the inverted-residual block's ring of
 * expanded rows) fills rp and ps itself. wpk: packed weights [M][KVOL][Cp]
 * (Cp: C rounded up to whole vectors); bpk: packed bias [M][Cp] (zeros
 * without a bias); out: the row's output pixel 0, [OW][C*M]; zero: Cp
 * zeros. Of g only C, W, OW, KD*KH and the kernel, stride, padding and
 * dilation along W are read. Channels run a vector at a time, the last
 * ending at c1 (recomputing lanes, the same values) unless [c0, c1) is
 * narrower than a vector. */
static void FN(dw_forward_last_rows)(void *work, const void *wpk_, const void *bpk_, void *out_,
                                     const void *res_, cf_idx c0, cf_idx c1, cf_idx M,
                                     const cf_geom *g, const void *zero_, int clamp, double lo,
                                     double hi) {
    const CF_T *zero = (const CF_T *)zero_;
    const cf_idx nr = g->KD * g->KH, K = g->C * M;
    const CF_T **rp = (const CF_T **)work;
    cf_idx *ps = (cf_idx *)(rp + nr);
    const CF_T **edge = (const CF_T **)(ps + nr);
    const CF_T *inside = NULL;   /* a row of the input, for the alignment phase */
    for (cf_idx r = 0; r < nr && !inside; r++)
        if (ps[r]) inside = rp[r];
    FN(dw_row_last) rl = {
        .rp = rp, .ps = ps, .edge = edge, .wpk = (const CF_T *)wpk_,
        .bpk = (const CF_T *)bpk_, .out = (CF_T *)out_,
        .res = (const CF_T *)res_,
        .KW = g->KW, .KVOL = nr * g->KW, .Cp = cf_ceil_div(g->C, CF_VW) * CF_VW, .K = K, .M = M,
        .sw = g->sw, .pw = g->pw, .dw = g->dw, .OW = g->OW, .clamp = clamp,
        .clo = (CF_T)lo, .chi = (CF_T)hi, .clov = FN(cf_splat)((CF_T)lo),
        .chiv = FN(cf_splat)((CF_T)hi)};
    cf_out_range(0, g->sw, g->pw, 1, g->OW, g->W - (g->KW - 1) * g->dw, &rl.lo, &rl.hi);
    rl.lo = cf_min(rl.lo, g->OW); /* padding wider than the row: lo may pass OW */
    rl.hi = cf_max(cf_min(rl.hi, g->OW), rl.lo);
    FN(dw_edge_pointers)(&rl, g, zero, edge);
    if (c1 - c0 < CF_VW) { /* part of one vector */
        for (cf_idx m = 0; m < M; m++) FN(dw_row_vector_last)(&rl, c0, c1 - c0, m, 0, 0, 0);
        return;
    }
    /* NumPy aligns arrays to 16 bytes, so a vector load of x mostly
     * straddles two cache lines. When every pixel starts at the same
     * 64-byte phase (C*sizeof(T) a multiple of 64), the vectors start
     * where x's loads are aligned, after one vector at c0 (overlapping the
     * next), if there are 3 vectors or more (the extra one costs what
     * alignment saves on 2): at a 16-byte offset 960 x 7 x 7 took 23 -> 17
     * us, 96 x 112 x 112 stride 2 215 -> 145 us. */
    cf_idx phase = 0;
    if (inside && g->C * (cf_idx)sizeof(CF_T) % (cf_idx)sizeof(CF_V) == 0) {
        const cf_idx at = (cf_idx)((uintptr_t)(inside + c0) % sizeof(CF_V));
        if (at % (cf_idx)sizeof(CF_T) == 0) phase = (CF_VW - at / (cf_idx)sizeof(CF_T)) % CF_VW;
        if (c1 - c0 < 3 * CF_VW) phase = 0;
    }
    const int three = nr == 3 && g->KW == 3 && g->dw == 1 && M == 1;
    for (cf_idx m = 0; m < M; m++)
        for (cf_idx c = c0; c < c1; c = c == c0 && phase ? c0 + phase : c + CF_VW) {
            const cf_idx cs = cf_min(c, c1 - CF_VW);
            if (three && g->sw == 1) FN(dw_row_vector_last)(&rl, cs, CF_VW, 0, 9, 1, 1);
            else if (three && g->sw == 2) FN(dw_row_vector_last)(&rl, cs, CF_VW, 0, 9, 2, 1);
            else FN(dw_row_vector_last)(&rl, cs, CF_VW, m, 0, 0, 0);
        }
}

/* Forward of output row r (r = (n*OD + od)*OH + oh) of x [N][D][H][W][C]
 * into out [N][OD][OH][OW][C*M] (res laid out as out, or NULL): its tap
 * rows found in x (dw_rows_last), then dw_forward_last_rows. */
static void FN(dw_forward_last)(const void *x_, const void *wpk_, const void *bpk_, void *out_,
                                cf_idx r, cf_idx c0, cf_idx c1, cf_idx M, const cf_geom *g,
                                const void *zero_, void *work, const void *res_, int clamp,
                                double lo, double hi) {
    const cf_idx rows = g->OD * g->OH, nr = g->KD * g->KH, K = g->C * M;
    const CF_T **rp = (const CF_T **)work;
    FN(dw_rows_last)((const CF_T *)x_, r / rows, r % rows / g->OH, r % g->OH, g,
                     (const CF_T *)zero_, rp, (cf_idx *)(rp + nr));
    FN(dw_forward_last_rows)(work, wpk_, bpk_, (CF_T *)out_ + r * g->OW * K,
                             res_ ? (const CF_T *)res_ + r * g->OW * K : NULL, c0, c1, M, g,
                             zero_, clamp, lo, hi);
}

/* ------------------------------------------- channels-last input gradient
 * One input row per call, channels [c0, c1): gx[pixel][c] = bias[c] + the
 * sum over m < M and the taps that reach the pixel from an output (i + p -
 * t*d divisible by s, inside the output) of go[output][c*M + m] *
 * w[c*M + m][t]; taps that reach no output add nothing (the reference's
 * col2im forms no product there, so a NaN weight stays out of the border).
 * Along depth and height the output rows the taps reach are found once per
 * row (dw_input_rows). A 3-wide kernel of dilation 1, multiplier 1, stride
 * 1 or 2 (MobileNetV2's) runs its interior in tiles (dw_input_tile): for
 * stride 1 this is the forward's tile with the kernel flipped, for stride 2
 * its polyphase transpose (an input pixel of one parity takes the middle
 * tap from one output, of the other the outer two from two), with no
 * scatter: every pixel is one sum, written once. Other kernels, and the
 * pixels near the row's ends, run pixel by pixel through a tap list. */

/* The output rows the (kd, kh) taps reach input row r from (r = (n*D +
 * id)*H + ih): prow[i] their pixel 0 in go, trow[i] the packed index of
 * their tap (kd, kh, 0); returns how many. */
CF_INLINE cf_idx FN(dw_input_rows)(const CF_T *go, cf_idx r, const cf_geom *g, cf_idx K,
                                   const CF_T **prow, cf_idx *trow) {
    const cf_idx n = r / (g->D * g->H), id = r / g->H % g->D, ih = r % g->H;
    cf_idx nrow = 0;
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
    return nrow;
}

/* NPX input pixels from iw0 ((iw0 + pw) % S == 0), multiplier 1, stride
 * S, every tap inside the output, channels [c0, c1): pixel j takes tap kw
 * of each tap row from output column (iw0 + pw + j - kw*dw) / S when S
 * divides j - kw*dw. prow[r] + ow0*K: the tile's first output column of
 * tap row r, `back` columns before the first pixel's (iw0 + pw) / S;
 * trow[r]: the packed index of its first tap. KW3 (a 3-wide kernel,
 * dilation 1, back = 3 - S): each output column is loaded once and added
 * to every pixel it reaches (stride 1: NPX + 2 loads for 3*NPX FMAs per
 * tap row, the forward's tile with the kernel flipped; stride 2: NPX/2 + 2
 * for 3*NPX/2, its polyphase transpose), kw descending. Otherwise (stride
 * 1, back = (KW-1)*dw): tap by tap, each weight loaded once for the NPX
 * pixels, kw ascending. Each pixel sums bias, then tap rows in order.
 * Channels innermost: the tile's pixels are read and written as they lie
 * (a vector of channels at a time along the whole row instead, reading and
 * writing at a stride of C, ran 144 x 56 x 56, batch 8, at 1.75 against
 * 1.24-1.32 ms; blocks of 4 or 8 vectors along the row ran within 5% of
 * this on every MobileNetV2 shape). FULL: [c0, c1)
 * is a vector or more (the last ending at c1, recomputing lanes), else
 * part of one. */
CF_INLINE void FN(dw_input_tile)(const CF_T *const *prow, const cf_idx *trow, cf_idx nrow,
                                 cf_idx ow0, cf_idx KW, cf_idx dw, cf_idx back, cf_idx K,
                                 cf_idx Cp, const CF_T *wpk, const CF_T *bpk, CF_T *o,
                                 cf_idx C, cf_idx c0, cf_idx c1, const int FULL,
                                 const int KW3, const int S, const int NPX) {
    const cf_idx cnt = FULL ? CF_VW : c1 - c0;
    for (cf_idx c = c0; c < c1; c += CF_VW) {
        const cf_idx cs = FULL ? cf_min(c, c1 - CF_VW) : c;
        CF_V acc[CF_DW_PIXELS], b;
        memcpy(&b, bpk + cs, sizeof b);
#pragma GCC unroll 16
        for (int j = 0; j < NPX; j++) acc[j] = b;
        for (cf_idx r = 0; r < nrow; r++) {
            const CF_T *p = prow[r] + ow0 * K + cs, *w = wpk + trow[r] * Cp + cs;
            if (!KW3) {
                for (cf_idx kw = 0; kw < KW; kw++) {
                    CF_V wv;
                    memcpy(&wv, w + kw * Cp, sizeof wv);
                    const CF_T *pk = p + (back - kw * dw) * K;
#pragma GCC unroll 16
                    for (int j = 0; j < NPX; j++)
                        acc[j] += FN(dw_load_lanes)(pk + j * K, 1, cnt) * wv;
                }
                continue;
            }
            CF_V w0, w1, w2;
            memcpy(&w0, w, sizeof w0);
            memcpy(&w1, w + Cp, sizeof w1);
            memcpy(&w2, w + 2 * Cp, sizeof w2);
            const int BACK = 3 - S;
#pragma GCC unroll 16
            for (int col = 0; col < (NPX - 1) / S + BACK + 1; col++) {
                CF_V v = FN(dw_load_lanes)(p + col * K, 1, cnt);
#if CF_LEVEL >= 4
                __asm__("" : "+v"(v)); /* one load per column (dw_inner_tile) */
#endif
#pragma GCC unroll 16
                for (int j = 0; j < NPX; j++) {
                    const int kw = j - S * (col - BACK);
                    if (kw >= 0 && kw < 3) acc[j] += v * (kw == 0 ? w0 : kw == 1 ? w1 : w2);
                }
            }
        }
#pragma GCC unroll 16
        for (int j = 0; j < NPX; j++) FN(dw_store_lanes)(o + j * C + cs, 1, cnt, acc[j]);
    }
}

/* The tiles of one input row from lo ((lo + pw) % S == 0) while their
 * output columns lie inside [0, OW) and their pixels inside [0, W):
 * CF_DW_PIXELS at a time, then 4, 2 (stride 1: and 1), so a tile keeps
 * the parity. Returns the end of the pixels done. */
CF_INLINE cf_idx FN(dw_input_run)(const CF_T *const *prow, const cf_idx *trow, cf_idx nrow,
                                  cf_idx lo, const cf_geom *g, cf_idx back, cf_idx K,
                                  cf_idx Cp, const CF_T *wpk, const CF_T *bpk, CF_T *grow,
                                  cf_idx c0, cf_idx c1, const int FULL, const int KW3,
                                  const int S) {
    const int PX = CF_DW_PIXELS;
    const cf_idx C = g->C, pw = g->pw;
    cf_idx iw = lo;
#define DW_FITS(npx) \
    (iw + (npx) <= g->W && (iw + pw) / S + ((npx) - 1) / S < g->OW)
#define DW_TILE(npx)                                                                       \
    FN(dw_input_tile)(prow, trow, nrow, (iw + pw) / S - back, g->KW, g->dw, back, K, Cp,   \
                      wpk, bpk, grow + iw * C, C, c0, c1, FULL, KW3, S, npx)
    for (; DW_FITS(PX); iw += PX) DW_TILE(PX);
    if (PX > 4 && DW_FITS(4)) {
        DW_TILE(4);
        iw += 4;
    }
    if (DW_FITS(2)) {
        DW_TILE(2);
        iw += 2;
    }
    if (S == 1 && DW_FITS(1)) {
        DW_TILE(1);
        iw += 1;
    }
#undef DW_TILE
#undef DW_FITS
    return iw;
}

/* Input pixel iw through its tap list (any kernel, stride, multiplier):
 * channels [c0, c1) a vector at a time, the last ending at c1 unless the
 * span is shorter than a vector. Taps summed in (kw, kd, kh) order. */
CF_INLINE void FN(dw_input_pixel)(const CF_T *const *prow, const cf_idx *trow, cf_idx nrow,
                                  cf_idx iw, const cf_geom *g, cf_idx M, const CF_T *wpk,
                                  const CF_T *bpk, cf_idx c0, cf_idx c1, CF_T *o,
                                  const CF_T **pg, cf_idx *tap) {
    const cf_idx KVOL = g->KD * g->KH * g->KW, Cp = cf_ceil_div(g->C, CF_VW) * CF_VW;
    const cf_idx K = g->C * M;
    cf_idx nt = 0;
    for (cf_idx kw = 0; kw < g->KW; kw++) {
        const cf_idx ow = FN(dw_tap_output)(iw, kw, g->sw, g->pw, g->dw, g->OW);
        if (ow < 0) continue;
        for (cf_idx i = 0; i < nrow; i++) {
            pg[nt] = prow[i] + ow * K;
            tap[nt++] = trow[i] + kw;
        }
    }
    const cf_idx span = c1 - c0;
    for (cf_idx c = c0; c < c1; c += CF_VW) {
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

/* Input gradient of input row r (r = (n*D + id)*H + ih), channels [c0,
 * c1). wpk: [M][KVOL][Cp]; bpk: [Cp] (zeros: no bias); go:
 * [N][OD][OH][OW][C*M]; gx: [N][D][H][W][C]; work: 4*KVOL pointers. Zero
 * padding only. */
static void FN(dw_backward_input_last)(const void *go_, const void *wpk_, const void *bpk_,
                                       void *gx_, cf_idx r, cf_idx c0, cf_idx c1, cf_idx M,
                                       const cf_geom *g, void *work) {
    const CF_T *wpk = (const CF_T *)wpk_, *bpk = (const CF_T *)bpk_;
    const cf_idx KVOL = g->KD * g->KH * g->KW, Cp = cf_ceil_div(g->C, CF_VW) * CF_VW;
    const cf_idx C = g->C, K = C * M;
    /* work: pg, tap (a pixel's taps), prow, trow (the row's tap rows); KVOL each */
    const CF_T **pg = (const CF_T **)work, **prow = pg + 2 * KVOL;
    cf_idx *tap = (cf_idx *)(pg + KVOL), *trow = tap + 2 * KVOL;
    CF_T *grow = (CF_T *)gx_ + r * g->W * C;
    const cf_idx nrow = FN(dw_input_rows)((const CF_T *)go_, r, g, K, prow, trow);
    /* the tiled interior [lo, hi): pixels whose every tap lands inside the
     * output (the first, at `back` output columns before the pixel's own,
     * inside: lo >= S*back - pw; the last checked per tile), multiplier 1,
     * a 3-wide kernel of dilation 1 at stride 1 or 2, or any kernel at
     * stride 1 */
    const cf_idx S = g->sw;
    const int kw3 = g->KW == 3 && g->dw == 1 && (S == 1 || S == 2);
    cf_idx lo = 0, hi = 0;
    if (M == 1 && (kw3 || S == 1)) {
        const cf_idx back = kw3 ? 3 - S : (g->KW - 1) * g->dw;
        lo = cf_max(0, S * back - g->pw);
        lo += (lo + g->pw) % S;
        hi = lo;
        const int full = c1 - c0 >= CF_VW;
        const CF_T *const *pr = prow;
#define DW_RUN(F, KW3, S_) \
    FN(dw_input_run)(pr, trow, nrow, lo, g, back, K, Cp, wpk, bpk, grow, c0, c1, F, KW3, S_)
        if (full) {
            if (kw3 && S == 1) hi = DW_RUN(1, 1, 1);
            else if (kw3) hi = DW_RUN(1, 1, 2);
            else hi = DW_RUN(1, 0, 1);
        } else {
            if (kw3 && S == 1) hi = DW_RUN(0, 1, 1);
            else if (kw3) hi = DW_RUN(0, 1, 2);
            else hi = DW_RUN(0, 0, 1);
        }
#undef DW_RUN
    }
    for (cf_idx iw = 0; iw < g->W; iw++)
        if (iw < lo || iw >= hi)
            FN(dw_input_pixel)(prow, trow, nrow, iw, g, M, wpk, bpk, c0, c1, grow + iw * C,
                               pg, tap);
}

/* The channels-last weight gradient: an item is a block of output rows,
 * all channels; each pixel's channels are read as they lie (consecutive),
 * and its partial sums, part[(m*KVOL + t)*Cp + c] for all taps and
 * channels (a few KB, cache-resident), are the item's own. Going a vector
 * of channels at a time over the whole image instead (the kernel before
 * this one) read x and grad_out at a stride of C elements and ran 2-3x
 * slower than PyTorch on MobileNetV2 (144 x 56 x 56: 0.52 vs 0.23 ms).
 * Every partial sums its pixels in order (rows, then ow ascending), taps in
 * order: the same sums for any thread count. */

/* NPX pixels from ow0 of one row whose windows lie inside the row's width,
 * a 3x3 kernel of dilation 1 along the row, multiplier 1, stride S; the 3
 * tap rows as dw_rows_last gives them (rp, ps: a row of zero padding reads
 * `zero` at step 0). For each vector of channels the nine partial sums stay
 * in registers across the pixels, and each input column of a tap row is
 * loaded once for the (up to 3) pixels whose windows hold it, as in the
 * forward. FULL: C a multiple of the vector width. */
CF_INLINE void FN(dw_weight_last_tile)(const CF_T *const *rp, const cf_idx *ps, cf_idx ow0,
                                       cf_idx pw, const CF_T *grow, cf_idx C, cf_idx Cp,
                                       CF_T *part, const int S, const int FULL, const int NPX) {
    for (cf_idx c = 0; c < C; c += CF_VW) {
        const cf_idx cnt = FULL ? CF_VW : cf_min(CF_VW, C - c);
        CF_V a[9], gv[CF_DW_PIXELS];
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++) memcpy(&a[t], part + t * Cp + c, sizeof(CF_V));
#pragma GCC unroll 8
        for (int j = 0; j < NPX; j++) gv[j] = FN(dw_load_lanes)(grow + j * C + c, 1, cnt);
#pragma GCC unroll 3
        for (int r = 0; r < 3; r++) {
            const cf_idx step = ps[r];
            const CF_T *xr = rp[r] + (ow0 * S - pw) * step + c;
#pragma GCC unroll 20
            for (int col = 0; col < (NPX - 1) * S + 3; col++) {
                CF_V v = FN(dw_load_lanes)(xr + col * step, 1, cnt);
#if CF_LEVEL >= 4
                __asm__("" : "+v"(v)); /* one load per column (dw_inner_tile) */
#endif
#pragma GCC unroll 8
                for (int j = 0; j < NPX; j++) {
                    const int kw = col - j * S;
                    if (kw >= 0 && kw < 3) a[3 * r + kw] += gv[j] * v;
                }
            }
        }
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++) memcpy(part + t * Cp + c, &a[t], sizeof(CF_V));
    }
}

/* The tiles of the row's inside outputs [lo, hi): CF_DW_PIXELS at a time,
 * then one by one (pixels in order). */
CF_INLINE void FN(dw_weight_last_run)(const CF_T *const *rp, const cf_idx *ps, cf_idx pw,
                                      const CF_T *grow, cf_idx lo, cf_idx hi, cf_idx C,
                                      cf_idx Cp, CF_T *part, const int S, const int FULL) {
    const int PX = CF_DW_PIXELS;
    cf_idx ow = lo;
    for (; ow + PX <= hi; ow += PX)
        FN(dw_weight_last_tile)(rp, ps, ow, pw, grow + ow * C, C, Cp, part, S, FULL, PX);
    for (; ow < hi; ow++)
        FN(dw_weight_last_tile)(rp, ps, ow, pw, grow + ow * C, C, Cp, part, S, FULL, 1);
}

/* One pixel through its tap pointers px (any kernel, multiplier, padding):
 * part[(m*KVOL + t)*Cp + c] += go[pixel][c*M + m] * (input under tap t)[c]. */
CF_INLINE void FN(dw_weight_last_pixel)(const CF_T *const *px, const CF_T *gp, cf_idx KVOL,
                                        cf_idx C, cf_idx Cp, cf_idx M, CF_T *part) {
    for (cf_idx m = 0; m < M; m++)
        for (cf_idx c = 0; c < C; c += CF_VW) {
            const cf_idx cnt = cf_min(CF_VW, C - c);
            const CF_V gv = FN(dw_load_lanes)(gp + c * M + m, M, cnt);
            CF_T *pm = part + m * KVOL * Cp + c;
            for (cf_idx t = 0; t < KVOL; t++) {
                CF_V a;
                memcpy(&a, pm + t * Cp, sizeof a);
                a += gv * FN(dw_load_lanes)(px[t] + c, 1, cnt);
                memcpy(pm + t * Cp, &a, sizeof a);
            }
        }
}

/* Partial weight gradient over the output rows [r0, r1) (r = (n*OD + od)*OH
 * + oh), all channels: part[(m*KVOL + t)*Cp + c] = the sum over those
 * pixels of go[pixel][c*M + m] * (padded input under tap t)[c], written
 * (not added); lanes past C hold whatever (the caller reads c < C). px:
 * 2*KVOL + 2*KD*KH pointers of work; zero: Cp zeros. */
static void FN(dw_backward_weight_last)(const void *x_, const void *go_, void *part_,
                                        cf_idx r0, cf_idx r1, cf_idx M, const cf_geom *g,
                                        const void *zero, void *px_) {
    const CF_T *x = (const CF_T *)x_, *go = (const CF_T *)go_;
    const CF_T **px = (const CF_T **)px_;
    CF_T *part = (CF_T *)part_;
    const cf_idx KVOL = g->KD * g->KH * g->KW, Cp = cf_ceil_div(g->C, CF_VW) * CF_VW;
    const cf_idx C = g->C, K = C * M, rows = g->OD * g->OH;
    memset(part, 0, (size_t)(M * KVOL * Cp) * sizeof(CF_T));
    cf_idx *toff = (cf_idx *)(px + KVOL);
    FN(dw_tap_offsets)(g, toff);
    const cf_idx nr = g->KD * g->KH;
    const CF_T **rp = px + 2 * KVOL; /* work: px, toff, then the tap rows */
    cf_idx *ps = (cf_idx *)(rp + nr);
    const int three = nr == 3 && g->KW == 3 && g->dw == 1 && M == 1
                      && (g->sw == 1 || g->sw == 2);
    const int full = C % CF_VW == 0;
    /* the outputs whose windows lie inside the row's width (zero padding
     * rows included: they read `zero`) */
    cf_idx lo = 0, hi = 0;
    if (three) {
        cf_out_range(0, g->sw, g->pw, 1, g->OW, g->W - (g->KW - 1) * g->dw, &lo, &hi);
        lo = cf_min(lo, g->OW); /* padding wider than the row: lo may pass OW */
        hi = cf_max(cf_min(hi, g->OW), lo);
    }
    for (cf_idx r = r0; r < r1; r++) {
        const cf_idx n = r / rows, od = r % rows / g->OH, oh = r % g->OH;
        const CF_T *grow = go + r * g->OW * K;
        /* pixels in order: the edge before, the inside run, the edge after */
        for (cf_idx ow = 0; ow < lo; ow++) {
            FN(dw_tap_pixels)(x, n, od, oh, ow, g, (const CF_T *)zero, toff, px);
            FN(dw_weight_last_pixel)(px, grow + ow * K, KVOL, C, Cp, M, part);
        }
        if (lo < hi) {
            FN(dw_rows_last)(x, n, od, oh, g, (const CF_T *)zero, rp, ps);
            if (g->sw == 1 && full)
                FN(dw_weight_last_run)(rp, ps, g->pw, grow, lo, hi, C, Cp, part, 1, 1);
            else if (g->sw == 1)
                FN(dw_weight_last_run)(rp, ps, g->pw, grow, lo, hi, C, Cp, part, 1, 0);
            else if (full)
                FN(dw_weight_last_run)(rp, ps, g->pw, grow, lo, hi, C, Cp, part, 2, 1);
            else
                FN(dw_weight_last_run)(rp, ps, g->pw, grow, lo, hi, C, Cp, part, 2, 0);
        }
        for (cf_idx ow = hi; ow < g->OW; ow++) {
            FN(dw_tap_pixels)(x, n, od, oh, ow, g, (const CF_T *)zero, toff, px);
            FN(dw_weight_last_pixel)(px, grow + ow * K, KVOL, C, Cp, M, part);
        }
    }
}
