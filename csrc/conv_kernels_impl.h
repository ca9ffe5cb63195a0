/* dtype-generic convolution micro-kernels; included once per dtype by
 * conv_common.h with CF_T (float/double), CF_SFX (f32/f64) and CF_ITYPE (an
 * integer type of CF_T's width, for shuffle masks) defined.
 *
 * Vectors are GCC vector extensions of 64 bytes: one AVX-512 register, two AVX2
 * registers or four SSE registers, whichever clone the CPU runs. Each function
 * writes only memory its caller owns (see _conv.pyx for the partitioning). */

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

/* Lanes j < cnt hold row[base + j*s] where that index is inside [0, n); all
 * other lanes are zero (padding, or past the end of the block). */
CF_INLINE CF_V FN(cf_load_row)(const CF_T *row, cf_idx base, cf_idx s,
                                cf_idx cnt, cf_idx n) {
    CF_V v = {0};
    if (cnt == CF_VW && base >= 0) {
        if (s == 1 && base + CF_VW <= n) {
            memcpy(&v, row + base, sizeof v);
            return v;
        }
        if (s == 2 && base + 2 * CF_VW <= n) {
            CF_V lo, hi;
            CF_M even;
            memcpy(&lo, row + base, sizeof lo);
            memcpy(&hi, row + base + CF_VW, sizeof hi);
            for (int j = 0; j < (int)CF_VW; j++) even[j] = 2 * j;
            return __builtin_shuffle(lo, hi, even);
        }
    }
    for (cf_idx j = 0; j < cnt; j++) {
        const cf_idx i = base + j * s;
        if (i >= 0 && i < n) v[j] = row[i];
    }
    return v;
}

CF_INLINE CF_T FN(cf_hsum)(CF_V v) {
    CF_T s = 0;
    for (int j = 0; j < (int)CF_VW; j++) s += v[j]; /* fixed order: deterministic */
    return s;
}

/* ---------------------------------------------------------------- direct */

/* NB output channels x one output row (od, oh): NB*ceil(OW/VW) vector
 * accumulators stay in registers while all C*KD*KH*KW taps stream past. */
CF_INLINE void FN(cf_forward_rows_block)(const CF_T *x, const CF_T *w, cf_idx wstride,
                                         const CF_T *bias, CF_T *out, cf_idx ostride,
                                         cf_idx od, cf_idx oh, const cf_geom *g,
                                         const int NB) {
    const cf_idx KVOL = g->KD * g->KH * g->KW;
    const cf_idx HW = g->H * g->W, DHW = g->D * HW;
    cf_idx kd_lo, kd_hi, kh_lo, kh_hi;
    cf_tap_range(od, g->sd, g->pd, g->dd, g->KD, g->D, &kd_lo, &kd_hi);
    cf_tap_range(oh, g->sh, g->ph, g->dh, g->KH, g->H, &kh_lo, &kh_hi);
    const cf_idx id0 = od * g->sd - g->pd, ih0 = oh * g->sh - g->ph;

    for (cf_idx ow0 = 0; ow0 < g->OW; ow0 += CF_VW) {
        const cf_idx cnt = cf_min(CF_VW, g->OW - ow0);
        const cf_idx base0 = ow0 * g->sw - g->pw;
        CF_V acc[NB];
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[b] = FN(cf_splat)(bias ? bias[b] : (CF_T)0);
        for (cf_idx c = 0; c < g->C; c++) {
            for (cf_idx kd = kd_lo; kd < kd_hi; kd++) {
                for (cf_idx kh = kh_lo; kh < kh_hi; kh++) {
                    const CF_T *xr = x + c * DHW + (id0 + kd * g->dd) * HW + (ih0 + kh * g->dh) * g->W;
                    const CF_T *wr = w + c * KVOL + (kd * g->KH + kh) * g->KW;
                    for (cf_idx kw = 0; kw < g->KW; kw++) {
                        const CF_V xv = FN(cf_load_row)(xr, base0 + kw * g->dw, g->sw, cnt, g->W);
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
 * x: the group's input planes of one image, [C][D][H][W];
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

/* Gradient of the input for any stride, by scattering each output gradient
 * through the kernel: gx[c] += w[k, c, tap] * go[k, o]. Owns the nb input
 * channel planes at gx (zeroed here); go: the group's K output planes of one
 * image; w: &weight[g*K, c0], K rows of C*KVOL. */
CF_DISPATCH void FN(direct_backward_input_scatter)(const CF_T *go, const CF_T *w,
                                                   CF_T *gx, cf_idx nb, const cf_geom *g) {
    const cf_idx KVOL = g->KD * g->KH * g->KW;
    const cf_idx HW = g->H * g->W, DHW = g->D * HW;
    const cf_idx OHW = g->OH * g->OW, P = g->OD * OHW;
    memset(gx, 0, (size_t)(nb * DHW) * sizeof(CF_T));
    for (cf_idx b = 0; b < nb; b++) {
        CF_T *gxc = gx + b * DHW;
        for (cf_idx k = 0; k < g->K; k++) {
            const CF_T *wk = w + k * g->C * KVOL + b * KVOL;
            for (cf_idx od = 0; od < g->OD; od++) {
                cf_idx kd_lo, kd_hi;
                cf_tap_range(od, g->sd, g->pd, g->dd, g->KD, g->D, &kd_lo, &kd_hi);
                for (cf_idx oh = 0; oh < g->OH; oh++) {
                    cf_idx kh_lo, kh_hi;
                    cf_tap_range(oh, g->sh, g->ph, g->dh, g->KH, g->H, &kh_lo, &kh_hi);
                    const CF_T *gor = go + k * P + od * OHW + oh * g->OW;
                    for (cf_idx kd = kd_lo; kd < kd_hi; kd++) {
                        for (cf_idx kh = kh_lo; kh < kh_hi; kh++) {
                            CF_T *gxr = gxc + (od * g->sd - g->pd + kd * g->dd) * HW
                                            + (oh * g->sh - g->ph + kh * g->dh) * g->W;
                            for (cf_idx kw = 0; kw < g->KW; kw++) {
                                cf_idx lo, hi;
                                cf_out_range(kw, g->sw, g->pw, g->dw, g->OW, g->W, &lo, &hi);
                                const CF_T wv = wk[(kd * g->KH + kh) * g->KW + kw];
                                const cf_idx off = kw * g->dw - g->pw;
                                for (cf_idx ow = lo; ow < hi; ow++)
                                    gxr[ow * g->sw + off] += wv * gor[ow];
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Weight gradient of nb output channels x one input channel, summed over the
 * batch: gw[b, tap] = sum_n,o go[n, b, o] * x[n, o*s + tap*d - p].
 * x: &x[0, g*C + c] (one plane per image, images x_nstride apart);
 * go: &grad_out[0, g*K + k0] (images go_nstride apart);
 * gw: &grad_weight[g*K + k0, c], rows C*KVOL apart. Overwrites its values. */
CF_INLINE void FN(cf_backward_weight_block)(const CF_T *x, cf_idx x_nstride,
                                            const CF_T *go, cf_idx go_nstride, cf_idx N,
                                            CF_T *gw, const cf_geom *g, const int NB) {
    const cf_idx HW = g->H * g->W;
    const cf_idx OHW = g->OH * g->OW, P = g->OD * OHW;
    const cf_idx wstride = g->C * g->KD * g->KH * g->KW;
    for (cf_idx kd = 0; kd < g->KD; kd++) {
        cf_idx od_lo, od_hi;
        cf_out_range(kd, g->sd, g->pd, g->dd, g->OD, g->D, &od_lo, &od_hi);
        for (cf_idx kh = 0; kh < g->KH; kh++) {
            cf_idx oh_lo, oh_hi;
            cf_out_range(kh, g->sh, g->ph, g->dh, g->OH, g->H, &oh_lo, &oh_hi);
            for (cf_idx kw = 0; kw < g->KW; kw++) {
                cf_idx ow_lo, ow_hi;
                cf_out_range(kw, g->sw, g->pw, g->dw, g->OW, g->W, &ow_lo, &ow_hi);
                const cf_idx off = kw * g->dw - g->pw;
                CF_V acc[NB];
#pragma GCC unroll 8
                for (int b = 0; b < NB; b++) acc[b] = FN(cf_splat)(0);
                for (cf_idx n = 0; n < N; n++) {
                    for (cf_idx od = od_lo; od < od_hi; od++) {
                        for (cf_idx oh = oh_lo; oh < oh_hi; oh++) {
                            const CF_T *xr = x + n * x_nstride + (od * g->sd - g->pd + kd * g->dd) * HW
                                               + (oh * g->sh - g->ph + kh * g->dh) * g->W;
                            const CF_T *gr = go + n * go_nstride + od * OHW + oh * g->OW;
                            for (cf_idx ow0 = ow_lo; ow0 < ow_hi; ow0 += CF_VW) {
                                const cf_idx cnt = cf_min(CF_VW, ow_hi - ow0);
                                const CF_V xv = FN(cf_load_row)(xr, ow0 * g->sw + off, g->sw, cnt, g->W);
#pragma GCC unroll 8
                                for (int b = 0; b < NB; b++)
                                    acc[b] += xv * FN(cf_load_row)(gr + b * P, ow0, 1, cnt, g->OW);
                            }
                        }
                    }
                }
#pragma GCC unroll 8
                for (int b = 0; b < NB; b++)
                    gw[b * wstride + (kd * g->KH + kh) * g->KW + kw] = FN(cf_hsum)(acc[b]);
            }
        }
    }
}

CF_DISPATCH void FN(direct_backward_weight)(const CF_T *x, cf_idx x_nstride,
                                            const CF_T *go, cf_idx go_nstride, cf_idx N,
                                            cf_idx nb, CF_T *gw, const cf_geom *g) {
    const cf_idx P = g->OD * g->OH * g->OW;
    const cf_idx wstride = g->C * g->KD * g->KH * g->KW;
    if (nb == CF_KB) {
        FN(cf_backward_weight_block)(x, x_nstride, go, go_nstride, N, gw, g, CF_KB);
    } else {
        for (cf_idx b = 0; b < nb; b++)
            FN(cf_backward_weight_block)(x, x_nstride, go + b * P, go_nstride, N,
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

#undef CF_VW
#undef CF_M
#undef CF_V
#undef FN
#undef CF_CAT
#undef CF_CAT2
