/* Convolution, im2col: column tiles (vol2col) for the BLAS weight gradient and their
 * adjoint (col2vol) for the input gradient.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* Stride 2 along rows (DCGAN's k4 s2 layers, ResNet's downsampling, every
 * transposed convolution of stride 2): vectors of columns instead of
 * lane-by-lane copies, which were a quarter of the weight gradient and a
 * third of the transposed forward of (64,128,16,16)->64 k4 s2. */

/* d[o] = xs[2*o] for o in [a, e), in whole vectors while the reads stay
 * below x_end (they may run into the next row: read, never used) and the
 * stores below d_end, the last one spilling past e (the caller overwrites
 * d[e..] afterwards); then lane by lane. */
CF_INLINE void FN(cf_gather_even)(CF_T *d, const CF_T *xs, cf_idx a, cf_idx e,
                                  const CF_T *x_end, const CF_T *d_end) {
    cf_idx o = a;
    for (; o < e && xs + 2 * (o + CF_VW) <= x_end && d + o + CF_VW <= d_end; o += CF_VW) {
        const CF_V v = FN(cf_load_strided)(xs + 2 * o, 2);
        memcpy(d + o, &v, sizeof v);
    }
    for (; o < e; o++) d[o] = xs[2 * o];
}

/* Column tile for output positions [p0, p0 + cnt) of one image and group:
 * col[(c, kd, kh, kw)][j] = x[c, od*sd - pd + kd*dd, ...], in the padding 0
 * or (g->pad_mode not zeros) the input element cf_pad_index maps it to.
 * x: the group's [C][D][H][W] planes; col: C*KVOL rows of cnt. The tile is
 * walked in output-row segments; coordinates advance without divisions. */
static void FN(vol2col)(const void *x_, void *col_, cf_idx p0, cf_idx cnt, const cf_geom *g) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *col = (CF_T *)col_;
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW;
    const cf_idx od0 = p0 / OHW, oh0 = (p0 % OHW) / g->OW, ow0 = p0 % g->OW;
    CF_T *dst = col;
    CF_T *const col_end = col + g->C * g->KD * g->KH * g->KW * cnt;
    for (cf_idx c = 0; c < g->C; c++)
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++)
    for (cf_idx kw = 0; kw < g->KW; kw++, dst += cnt) {
        cf_idx wlo, whi;
        cf_out_range(kw, g->sw, g->pw, g->dw, g->OW, g->W, &wlo, &whi);
        const cf_idx off = kw * g->dw - g->pw;
        cf_idx od = od0, oh = oh0, ow = ow0;
        for (cf_idx j = 0; j < cnt;) {
            const cf_idx len = cf_min(g->OW - ow, cnt - j);
            const cf_idx id = cf_pad_index(od * g->sd - g->pd + kd * g->dd, g->D, g->pad_mode);
            const cf_idx ih = cf_pad_index(oh * g->sh - g->ph + kh * g->dh, g->H, g->pad_mode);
            CF_T *d = dst + j;                   /* d[o - ow] is output column o */
            if (id < 0 || ih < 0) {              /* a row of zero padding */
                memset(d, 0, (size_t)len * sizeof(CF_T));
            } else {
                const CF_T *xr = x + c * DHW + id * HW + ih * g->W;
                const cf_idx a = cf_max(ow, wlo), e = cf_max(a, cf_min(ow + len, whi));
                /* the copy first: the stride-2 one may spill whole vectors past e,
                 * which the padding below and later segments and rows overwrite */
                if (g->sw == 1) {
                    memcpy(d + (a - ow), xr + a + off, (size_t)(e - a) * sizeof(CF_T));
                } else if (g->sw == 2) {
                    FN(cf_gather_even)(d - ow, xr + off, a, e, x + g->C * DHW, col_end);
                } else {
                    for (cf_idx o = a; o < e; o++) d[o - ow] = xr[o * g->sw + off];
                }
                if (g->pad_mode == CF_PAD_ZEROS) {
                    for (cf_idx o = ow; o < a; o++) d[o - ow] = 0;
                    for (cf_idx o = e; o < ow + len; o++) d[o - ow] = 0;
                } else {
                    for (cf_idx o = ow; o < a; o++)
                        d[o - ow] = xr[cf_pad_index(o * g->sw + off, g->W, g->pad_mode)];
                    for (cf_idx o = e; o < ow + len; o++)
                        d[o - ow] = xr[cf_pad_index(o * g->sw + off, g->W, g->pad_mode)];
                }
            }
            j += len;
            ow = 0;
            if (++oh == g->OH) { oh = 0; od++; }
        }
    }
}

#ifndef CF_COL2VOL_STRIDE2_MAX_KW
#define CF_COL2VOL_STRIDE2_MAX_KW 16  /* wider kernels take the tap-by-tap loop */
#endif

/* col2vol for stride 2 along rows. Adding tap by tap, each kw re-reads the
 * row its neighbour has just stored one element over (a store-forwarding
 * stall per vector: vectorising that way gained nothing on DCGAN's rows of
 * 8 and 16 outputs). Here the KW taps of one input row are summed in
 * registers, 2*VW input columns at a time (tap kw's column o lands on
 * input column 2*o + kw*dw - pw: even or odd lanes by its parity), and the
 * row is read and written once. Lanes no tap reaches hold exact zeros
 * (masked, not multiplied: columns outside a tap's range may hold inf);
 * adding them keeps every value, since the planes never hold -0.0 (they
 * start at +0.0, and a zero sum is +0.0). A block that would pass the end
 * of the planes adds lane by lane; one may run into the next row (owned by
 * the caller too), adding zeros there. Per input element the taps are
 * summed first, then added: a fixed order, the same for every thread count
 * and layout. */
static void FN(col2vol_stride2)(const CF_T *col, CF_T *gx, cf_idx p0, cf_idx cnt,
                                const cf_geom *g) {
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW, KW = g->KW;
    const cf_idx od0 = p0 / OHW, oh0 = (p0 % OHW) / g->OW, ow0 = p0 % g->OW;
    const CF_T *col_end = col + g->C * g->KD * g->KH * KW * cnt;
    CF_T *const gx_end = gx + g->C * DHW;
    CF_M even_lo, even_hi, odd_lo, odd_hi, iota;
    for (int i = 0; i < (int)CF_VW; i++) {
        /* lane i of the low/high result vector takes column i/2 (low) or
         * VW/2 + i/2 (high) of a tap vector when i has the tap's parity,
         * else a zero (index VW: lane 0 of the zero operand) */
        even_lo[i] = i % 2 ? CF_VW : i / 2;
        even_hi[i] = i % 2 ? CF_VW : CF_VW / 2 + i / 2;
        odd_lo[i] = i % 2 ? i / 2 : CF_VW;
        odd_hi[i] = i % 2 ? CF_VW / 2 + i / 2 : CF_VW;
        iota[i] = i;
    }
    const CF_V zero = FN(cf_splat)(0);
    cf_idx wlo[CF_COL2VOL_STRIDE2_MAX_KW], whi[CF_COL2VOL_STRIDE2_MAX_KW], off[CF_COL2VOL_STRIDE2_MAX_KW];
    for (cf_idx kw = 0; kw < KW; kw++) {
        cf_out_range(kw, 2, g->pw, g->dw, g->OW, g->W, &wlo[kw], &whi[kw]);
        off[kw] = kw * g->dw - g->pw;
    }
    for (cf_idx c = 0; c < g->C; c++)
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++) {
        const CF_T *taps = col + ((c * g->KD + kd) * g->KH + kh) * KW * cnt; /* kw = 0 */
        cf_idx od = od0, oh = oh0, ow = ow0;
        for (cf_idx j = 0; j < cnt;) {
            const cf_idx len = cf_min(g->OW - ow, cnt - j);
            const cf_idx id = od * g->sd - g->pd + kd * g->dd;
            const cf_idx ih = oh * g->sh - g->ph + kh * g->dh;
            if (id >= 0 && id < g->D && ih >= 0 && ih < g->H) {
                CF_T *xr = gx + c * DHW + id * HW + ih * g->W;
                /* tap kw adds column o in [a, e) (o - ow at taps + kw*cnt + j) */
                cf_idx qlo = g->W, qhi = 0;
                for (cf_idx kw = 0; kw < KW; kw++) {
                    const cf_idx a = cf_max(ow, wlo[kw]), e = cf_min(ow + len, whi[kw]);
                    if (a < e) {
                        qlo = cf_min(qlo, 2 * a + off[kw]);
                        qhi = cf_max(qhi, 2 * (e - 1) + off[kw] + 1);
                    }
                }
                for (cf_idx q0 = qlo; q0 < qhi; q0 += 2 * CF_VW) {
                    /* rows of VW or fewer input columns (DCGAN's 16: 8 outputs)
                     * need the low half only */
                    const int both = q0 + CF_VW < qhi;
                    CF_V lo = zero, hi = zero;
                    for (cf_idx kw = 0; kw < KW; kw++) {
                        const cf_idx a = cf_max(ow, wlo[kw]), e = cf_min(ow + len, whi[kw]);
                        /* first column at or after q0, and its lane parity */
                        const cf_idx rel = q0 - off[kw], odd = rel & 1;
                        const cf_idx o0 = (rel + odd) / 2;   /* rel may be negative */
                        const cf_idx first = cf_max(a, o0) - o0, last = cf_min(e, o0 + CF_VW) - o0;
                        if (first >= last) continue;
                        const CF_T *src = taps + kw * cnt + j + (o0 - ow);
                        CF_V v;
                        if (src >= col && src + CF_VW <= col_end) {
                            memcpy(&v, src, sizeof v);
                        } else {
                            CF_T lanes[CF_VW];
                            for (cf_idx i = 0; i < CF_VW; i++)
                                lanes[i] = i >= first && i < last ? src[i] : (CF_T)0;
                            memcpy(&v, lanes, sizeof v);
                        }
                        const CF_M keep = (iota >= (CF_ITYPE)first) & (iota < (CF_ITYPE)last);
                        v = (CF_V)((CF_M)v & keep);
                        lo += __builtin_shuffle(v, zero, odd ? odd_lo : even_lo);
                        if (both) hi += __builtin_shuffle(v, zero, odd ? odd_hi : even_hi);
                    }
                    CF_T *xq = xr + q0;
                    if (xq + (both ? 2 : 1) * CF_VW <= gx_end) {
                        CF_V x0, x1;
                        memcpy(&x0, xq, sizeof x0);
                        x0 += lo;
                        memcpy(xq, &x0, sizeof x0);
                        if (both) {
                            memcpy(&x1, xq + CF_VW, sizeof x1);
                            x1 += hi;
                            memcpy(xq + CF_VW, &x1, sizeof x1);
                        }
                    } else {
                        for (cf_idx i = 0; i < CF_VW && q0 + i < qhi; i++) xq[i] += lo[i];
                        for (cf_idx i = 0; i < CF_VW && q0 + CF_VW + i < qhi; i++)
                            xq[CF_VW + i] += hi[i];
                    }
                }
            }
            j += len;
            ow = 0;
            if (++oh == g->OH) { oh = 0; od++; }
        }
    }
}

/* Adjoint of vol2col: gx[c, id, ih, iw] += col[(c, kd, kh, kw)][j]. The caller
 * owns the group's gx planes of this image and zeroes them beforehand.
 * Dispatched: the adds vectorise on the wider ISAs. */
static void FN(col2vol)(const void *col_, void *gx_, cf_idx p0, cf_idx cnt, const cf_geom *g) {
    const CF_T *col = (const CF_T *)col_;
    CF_T *gx = (CF_T *)gx_;
    if (g->sw == 2 && g->KW <= CF_COL2VOL_STRIDE2_MAX_KW) {
        FN(col2vol_stride2)(col, gx, p0, cnt, g);
        return;
    }
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW;
    const cf_idx od0 = p0 / OHW, oh0 = (p0 % OHW) / g->OW, ow0 = p0 % g->OW;
    const CF_T *src = col;
    for (cf_idx c = 0; c < g->C; c++)
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++)
    for (cf_idx kw = 0; kw < g->KW; kw++, src += cnt) {
        cf_idx wlo, whi;
        cf_out_range(kw, g->sw, g->pw, g->dw, g->OW, g->W, &wlo, &whi);
        const cf_idx off = kw * g->dw - g->pw;
        cf_idx od = od0, oh = oh0, ow = ow0;
        for (cf_idx j = 0; j < cnt;) {
            const cf_idx len = cf_min(g->OW - ow, cnt - j);
            const cf_idx id = od * g->sd - g->pd + kd * g->dd;
            const cf_idx ih = oh * g->sh - g->ph + kh * g->dh;
            if (id >= 0 && id < g->D && ih >= 0 && ih < g->H) {
                const CF_T *sj = src + j;        /* sj[o - ow] is output column o */
                CF_T *xr = gx + c * DHW + id * HW + ih * g->W;
                const cf_idx a = cf_max(ow, wlo), e = cf_min(ow + len, whi);
                if (g->sw == 1) {
                    for (cf_idx o = a; o < e; o++) xr[o + off] += sj[o - ow];
                } else {
                    for (cf_idx o = a; o < e; o++) xr[o * g->sw + off] += sj[o - ow];
                }
            }
            j += len;
            ow = 0;
            if (++oh == g->OH) { oh = 0; od++; }
        }
    }
}

