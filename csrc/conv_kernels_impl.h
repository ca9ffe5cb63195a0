/* dtype-generic convolution micro-kernels; included once per dtype by
 * conv_common.h with CF_T (float/double), CF_SFX (f32/f64) and CF_ITYPE (an
 * integer type of CF_T's width, for shuffle masks) defined.
 *
 * Vectors are GCC vector extensions of 64 bytes: one AVX-512 register, two AVX2
 * registers or four SSE registers, whichever clone the CPU runs. Each function
 * writes only memory its caller owns (see _conv.pyx for the partitioning).
 * CF_VW (lanes per vector) is exported as direct_vector_width_<sfx>(). */

#define CF_CAT2(a, b) a##_##b
#define CF_CAT(a, b) CF_CAT2(a, b)
#define FN(name) CF_CAT(name, CF_SFX)
#define CF_V FN(cf_vec)
#define CF_M FN(cf_mask)
#define CF_VW ((cf_idx)(sizeof(CF_V) / sizeof(CF_T)))

typedef CF_T CF_V __attribute__((vector_size(64)));
typedef CF_ITYPE CF_M __attribute__((vector_size(64)));

CF_INLINE CF_V FN(cf_splat)(CF_T a) {
    CF_V v = {0};
    return v + a;
}

/* Lanes j hold row[j*s]. The direct kernels read only from padded buffers
 * (cf_pad_planes) that are wide enough for every full-width load, so there
 * are no bounds checks here; for s == 2 the two loads cover 2*VW elements. */
CF_INLINE CF_V FN(cf_load_strided)(const CF_T *row, cf_idx s) {
    CF_V v;
    if (s == 1) {
        memcpy(&v, row, sizeof v);
    } else if (s == 2) {
        CF_V lo, hi;
        CF_M even;
        memcpy(&lo, row, sizeof lo);
        memcpy(&hi, row + CF_VW, sizeof hi);
        for (int j = 0; j < (int)CF_VW; j++) even[j] = 2 * j;
        v = __builtin_shuffle(lo, hi, even);
    } else {
        for (cf_idx j = 0; j < CF_VW; j++) v[j] = row[j * s];
    }
    return v;
}

/* Lanes j >= cnt cleared bit-wise (exact zeros even for Inf/NaN inputs). */
CF_INLINE CF_V FN(cf_keep_lanes)(CF_V v, cf_idx cnt) {
    CF_M keep;
    for (int j = 0; j < (int)CF_VW; j++) keep[j] = j < cnt ? (CF_ITYPE)-1 : 0;
    return (CF_V)((CF_M)v & keep);
}

CF_INLINE CF_T FN(cf_hsum)(CF_V v) {
    CF_T s = 0;
    for (int j = 0; j < (int)CF_VW; j++) s += v[j]; /* fixed order: deterministic */
    return s;
}

/* ----------------------------------------------------------------- padding */

/* dst[r][q][j] = src[(r-pd)/ud][(q-ph)/uh][(j-pw)/uw] where the position maps
 * exactly onto a source element, else 0. Pads (and with u > 1 spreads out) one
 * plane so the direct kernels need no bounds checks: src [D][H][W], dst
 * [Dp][Hp][Wp]. Offsets may be negative (cropping). */
static void FN(pad_plane)(const CF_T *src, cf_idx D, cf_idx H, cf_idx W,
                          CF_T *dst, cf_idx Dp, cf_idx Hp, cf_idx Wp,
                          cf_idx pd, cf_idx ph, cf_idx pw,
                          cf_idx ud, cf_idx uh, cf_idx uw) {
    memset(dst, 0, (size_t)(Dp * Hp * Wp) * sizeof(CF_T));
    for (cf_idx d = 0; d < D; d++) {
        const cf_idx r = pd + d * ud;
        if (r < 0 || r >= Dp) continue;
        for (cf_idx h = 0; h < H; h++) {
            const cf_idx q = ph + h * uh;
            if (q < 0 || q >= Hp) continue;
            const CF_T *s = src + (d * H + h) * W;
            CF_T *o = dst + (r * Hp + q) * Wp;
            /* columns w with 0 <= pw + w*uw < Wp */
            const cf_idx lo = cf_max(0, cf_ceil_div(-pw, uw));
            const cf_idx hi = cf_min(W, cf_floor_div(Wp - 1 - pw, uw) + 1);
            if (uw == 1) {
                if (hi > lo) memcpy(o + pw + lo, s + lo, (size_t)(hi - lo) * sizeof(CF_T));
            } else {
                for (cf_idx w = lo; w < hi; w++) o[pw + w * uw] = s[w];
            }
        }
    }
}

/* ---------------------------------------------------------------- direct */

/* NB output channels x one output row (od, oh): NB vector accumulators stay in
 * registers while all C*KD*KH*KW taps stream past. x is padded (pads 0 in g,
 * g->W is the padded row length), so every load is a full vector. */
CF_INLINE void FN(cf_forward_rows_block)(const CF_T *x, const CF_T *w, cf_idx wstride,
                                         const CF_T *bias, CF_T *out, cf_idx ostride,
                                         cf_idx od, cf_idx oh, const cf_geom *g,
                                         const int NB) {
    const cf_idx KVOL = g->KD * g->KH * g->KW;
    const cf_idx HW = g->H * g->W, DHW = g->D * HW;
    const CF_T *x0 = x + od * g->sd * HW + oh * g->sh * g->W;
    for (cf_idx ow0 = 0; ow0 < g->OW; ow0 += CF_VW) {
        const cf_idx cnt = cf_min(CF_VW, g->OW - ow0);
        CF_V acc[NB];
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[b] = FN(cf_splat)(bias ? bias[b] : (CF_T)0);
        for (cf_idx c = 0; c < g->C; c++) {
            for (cf_idx kd = 0; kd < g->KD; kd++) {
                for (cf_idx kh = 0; kh < g->KH; kh++) {
                    const CF_T *xr = x0 + c * DHW + kd * g->dd * HW + kh * g->dh * g->W
                                        + ow0 * g->sw;
                    const CF_T *wr = w + c * KVOL + (kd * g->KH + kh) * g->KW;
                    for (cf_idx kw = 0; kw < g->KW; kw++) {
                        const CF_V xv = FN(cf_load_strided)(xr + kw * g->dw, g->sw);
#pragma GCC unroll 8
                        for (int b = 0; b < NB; b++) acc[b] += xv * wr[b * wstride + kw];
                    }
                }
            }
        }
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            CF_T *o = out + b * ostride + ow0;
            if (cnt == CF_VW) {
                memcpy(o, &acc[b], sizeof acc[b]);
            } else {
                for (cf_idx j = 0; j < cnt; j++) o[j] = acc[b][j];
            }
        }
    }
}

/* Forward output row (od, oh) for nb <= CF_KB output channels of one group.
 * x: the group's padded input planes of one image, [C][D][H][W] of g;
 * w: weights of the first channel, [nb][C][KD][KH][KW];
 * bias: nb values or NULL; out: &out[k0][od][oh][0], planes OD*OH*OW apart. */
CF_DISPATCH void FN(direct_forward_row)(const CF_T *x, const CF_T *w, const CF_T *bias,
                                        CF_T *out, cf_idx nb, cf_idx od, cf_idx oh,
                                        const cf_geom *g) {
    const cf_idx wstride = g->C * g->KD * g->KH * g->KW;
    const cf_idx ostride = g->OD * g->OH * g->OW;
    if (nb == CF_KB) {
        FN(cf_forward_rows_block)(x, w, wstride, bias, out, ostride, od, oh, g, CF_KB);
    } else {
        for (cf_idx b = 0; b < nb; b++)
            FN(cf_forward_rows_block)(x, w + b * wstride, wstride, bias ? bias + b : NULL,
                                      out + b * ostride, ostride, od, oh, g, 1);
    }
}

/* Weight gradient of nb output channels x one input channel, summed over the
 * batch: gw[b, tap] = sum_n,o go[n, b, o] * x[n, o*s + tap*d].
 * x: &xpad[0, g*C + c] (padded planes, images x_nstride apart);
 * go: &gopad[0, g*K + k0], rows padded to gow >= OW with zeros (images
 * go_nstride apart); gw: &grad_weight[g*K + k0, c], rows C*KVOL apart. */
CF_INLINE void FN(cf_backward_weight_block)(const CF_T *x, cf_idx x_nstride,
                                            const CF_T *go, cf_idx go_nstride, cf_idx gow,
                                            cf_idx N, CF_T *gw, const cf_geom *g,
                                            const int NB) {
    const cf_idx HW = g->H * g->W;
    const cf_idx P = g->OD * g->OH * gow;
    const cf_idx wstride = g->C * g->KD * g->KH * g->KW;
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++)
    for (cf_idx kw = 0; kw < g->KW; kw++) {
        CF_V acc[NB];
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[b] = FN(cf_splat)(0);
        for (cf_idx n = 0; n < N; n++) {
            for (cf_idx od = 0; od < g->OD; od++) {
                for (cf_idx oh = 0; oh < g->OH; oh++) {
                    const CF_T *xr = x + n * x_nstride + (od * g->sd + kd * g->dd) * HW
                                       + (oh * g->sh + kh * g->dh) * g->W + kw * g->dw;
                    const CF_T *gr = go + n * go_nstride + (od * g->OH + oh) * gow;
                    for (cf_idx ow0 = 0; ow0 < g->OW; ow0 += CF_VW) {
                        CF_V xv = FN(cf_load_strided)(xr + ow0 * g->sw, g->sw);
                        if (g->OW - ow0 < CF_VW) xv = FN(cf_keep_lanes)(xv, g->OW - ow0);
#pragma GCC unroll 8
                        for (int b = 0; b < NB; b++) {
                            CF_V gv;
                            memcpy(&gv, gr + b * P + ow0, sizeof gv);
                            acc[b] += xv * gv;
                        }
                    }
                }
            }
        }
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++)
            gw[b * wstride + (kd * g->KH + kh) * g->KW + kw] = FN(cf_hsum)(acc[b]);
    }
}

CF_DISPATCH void FN(direct_backward_weight)(const CF_T *x, cf_idx x_nstride,
                                            const CF_T *go, cf_idx go_nstride, cf_idx gow,
                                            cf_idx N, cf_idx nb, CF_T *gw, const cf_geom *g) {
    const cf_idx P = g->OD * g->OH * gow;
    const cf_idx wstride = g->C * g->KD * g->KH * g->KW;
    if (nb == CF_KB) {
        FN(cf_backward_weight_block)(x, x_nstride, go, go_nstride, gow, N, gw, g, CF_KB);
    } else {
        for (cf_idx b = 0; b < nb; b++)
            FN(cf_backward_weight_block)(x, x_nstride, go + b * P, go_nstride, gow, N,
                                         gw + b * wstride, g, 1);
    }
}

/* ------------------------------------------------------- im2col / col2im */

/* Column tile for output positions [p0, p0 + cnt) of one image and group:
 * col[(c, kd, kh, kw)][j] = x[c, od*sd - pd + kd*dd, ...] or 0 in the padding.
 * x: the group's [C][D][H][W] planes; col: C*KVOL rows of cnt. */
static void FN(vol2col)(const CF_T *x, CF_T *col, cf_idx p0, cf_idx cnt, const cf_geom *g) {
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW;
    CF_T *dst = col;
    for (cf_idx c = 0; c < g->C; c++)
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++)
    for (cf_idx kw = 0; kw < g->KW; kw++, dst += cnt) {
        cf_idx wlo, whi;
        cf_out_range(kw, g->sw, g->pw, g->dw, g->OW, g->W, &wlo, &whi);
        const cf_idx off = kw * g->dw - g->pw;
        for (cf_idx j = 0, p = p0; j < cnt;) {
            const cf_idx od = p / OHW, oh = (p % OHW) / g->OW, ow = p % g->OW;
            const cf_idx len = cf_min(g->OW - ow, cnt - j);
            const cf_idx id = od * g->sd - g->pd + kd * g->dd;
            const cf_idx ih = oh * g->sh - g->ph + kh * g->dh;
            CF_T *d = dst + j - ow; /* d[o] is the slot of output column o */
            if (id < 0 || id >= g->D || ih < 0 || ih >= g->H) {
                for (cf_idx o = ow; o < ow + len; o++) d[o] = 0;
            } else {
                const CF_T *xr = x + c * DHW + id * HW + ih * g->W + off;
                const cf_idx a = cf_max(ow, wlo), e = cf_max(a, cf_min(ow + len, whi));
                for (cf_idx o = ow; o < a; o++) d[o] = 0;
                if (g->sw == 1) {
                    for (cf_idx o = a; o < e; o++) d[o] = xr[o];
                } else {
                    for (cf_idx o = a; o < e; o++) d[o] = xr[o * g->sw];
                }
                for (cf_idx o = e; o < ow + len; o++) d[o] = 0;
            }
            j += len;
            p += len;
        }
    }
}

/* Adjoint of vol2col: gx[c, id, ih, iw] += col[(c, kd, kh, kw)][j]. The caller
 * owns the group's gx planes of this image and zeroes them beforehand. */
static void FN(col2vol)(const CF_T *col, CF_T *gx, cf_idx p0, cf_idx cnt, const cf_geom *g) {
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW;
    const CF_T *src = col;
    for (cf_idx c = 0; c < g->C; c++)
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++)
    for (cf_idx kw = 0; kw < g->KW; kw++, src += cnt) {
        cf_idx wlo, whi;
        cf_out_range(kw, g->sw, g->pw, g->dw, g->OW, g->W, &wlo, &whi);
        const cf_idx off = kw * g->dw - g->pw;
        for (cf_idx j = 0, p = p0; j < cnt;) {
            const cf_idx od = p / OHW, oh = (p % OHW) / g->OW, ow = p % g->OW;
            const cf_idx len = cf_min(g->OW - ow, cnt - j);
            const cf_idx id = od * g->sd - g->pd + kd * g->dd;
            const cf_idx ih = oh * g->sh - g->ph + kh * g->dh;
            if (id >= 0 && id < g->D && ih >= 0 && ih < g->H) {
                const CF_T *s = src + j - ow;
                CF_T *xr = gx + c * DHW + id * HW + ih * g->W + off;
                const cf_idx a = cf_max(ow, wlo), e = cf_min(ow + len, whi);
                if (g->sw == 1) {
                    for (cf_idx o = a; o < e; o++) xr[o] += s[o];
                } else {
                    for (cf_idx o = a; o < e; o++) xr[o * g->sw] += s[o];
                }
            }
            j += len;
            p += len;
        }
    }
}

static cf_idx FN(direct_vector_width)(void) { return CF_VW; }

#undef CF_VW
#undef CF_M
#undef CF_V
#undef FN
#undef CF_CAT
#undef CF_CAT2
