/* Convolution, im2col: column tiles (vol2col) for the BLAS weight gradient and their
 * adjoint (col2vol) for the input gradient.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* Stride 2 along rows (DCGAN's k4 s2 layers, ResNet's downsampling, every
 * transposed convolution of stride 2): whole vectors of columns instead of
 * lane-by-lane copies, which were a quarter of the weight gradient and a
 * third of the transposed forward of (64,128,16,16)->64 k4 s2. */

/* d[o] = xs[2*o] for o in [a, e); xs[0 .. room) is readable. */
CF_INLINE void FN(cf_gather_even)(CF_T *d, const CF_T *xs, cf_idx a, cf_idx e, cf_idx room) {
    cf_idx o = a;
    for (; o + CF_VW <= e && 2 * (o + CF_VW) <= room; o += CF_VW) {
        const CF_V v = FN(cf_load_strided)(xs + 2 * o, 2);
        memcpy(d + o, &v, sizeof v);
    }
    for (; o < e; o++) d[o] = xs[2 * o];
}

/* xs[2*o] += s[o] for o in [a, e); xs[0 .. room) is writable. The odd
 * elements between are read and stored back with 0 added, which keeps
 * every value (the planes never hold -0.0: they start at +0.0, and a sum
 * that is zero is +0.0), so the result is the lane-by-lane one bit for bit. */
CF_INLINE void FN(cf_scatter_add_even)(CF_T *xs, const CF_T *s, cf_idx a, cf_idx e,
                                       cf_idx room) {
    CF_M lo_half, hi_half;
    for (int j = 0; j < (int)CF_VW; j++) {
        /* lane j of the result takes s[j/2] (even j) or a zero (odd j) */
        lo_half[j] = j % 2 ? CF_VW : j / 2;
        hi_half[j] = j % 2 ? CF_VW : CF_VW / 2 + j / 2;
    }
    const CF_V zero = FN(cf_splat)(0);
    cf_idx o = a;
    for (; o + CF_VW <= e && 2 * (o + CF_VW) <= room; o += CF_VW) {
        CF_V v, lo, hi;
        memcpy(&v, s + o, sizeof v);
        memcpy(&lo, xs + 2 * o, sizeof lo);
        memcpy(&hi, xs + 2 * o + CF_VW, sizeof hi);
        lo += __builtin_shuffle(v, zero, lo_half);
        hi += __builtin_shuffle(v, zero, hi_half);
        memcpy(xs + 2 * o, &lo, sizeof lo);
        memcpy(xs + 2 * o + CF_VW, &hi, sizeof hi);
    }
    for (; o < e; o++) xs[2 * o] += s[o];
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
                if (g->pad_mode == CF_PAD_ZEROS) {
                    for (cf_idx o = ow; o < a; o++) d[o - ow] = 0;
                    for (cf_idx o = e; o < ow + len; o++) d[o - ow] = 0;
                } else {
                    for (cf_idx o = ow; o < a; o++)
                        d[o - ow] = xr[cf_pad_index(o * g->sw + off, g->W, g->pad_mode)];
                    for (cf_idx o = e; o < ow + len; o++)
                        d[o - ow] = xr[cf_pad_index(o * g->sw + off, g->W, g->pad_mode)];
                }
                if (g->sw == 1) {
                    memcpy(d + (a - ow), xr + a + off, (size_t)(e - a) * sizeof(CF_T));
                } else if (g->sw == 2) {
                    FN(cf_gather_even)(d - ow, xr + off, a, e, g->W - off);
                } else {
                    for (cf_idx o = a; o < e; o++) d[o - ow] = xr[o * g->sw + off];
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
                } else if (g->sw == 2) {
                    FN(cf_scatter_add_even)(xr + off, sj - ow, a, e, g->W - off);
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

