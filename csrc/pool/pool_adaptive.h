/* Adaptive (and global) average and max pooling, forward and backward.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* Sum of n contiguous values, VW lanes then a fixed-order lane sum. */
CF_INLINE CF_T FN(cf_sum)(const CF_T *x, cf_idx n) {
    CF_V acc = FN(cf_splat)(0);
    cf_idx i = 0;
    for (; i + CF_VW <= n; i += CF_VW) {
        CF_V v;
        memcpy(&v, x + i, sizeof v);
        acc += v;
    }
    /* lanes summed as a tree (fixed order, so still deterministic): a
     * sequential lane sum is a 16-add latency chain, which dominates small
     * planes such as 7x7 */
    CF_T lanes[CF_VW];
    memcpy(lanes, &acc, sizeof lanes);
    for (cf_idx half = CF_VW / 2; half >= 1; half /= 2)
        for (cf_idx j = 0; j < half; j++) lanes[j] += lanes[j + half];
    CF_T s = lanes[0];
    for (; i < n; i++) s += x[i];
    return s;
}

/* Global average of planes [p0, p1), each n contiguous values (adaptive
 * pooling to 1x1x1, channels-first): cf_sum of each, one call for a range
 * of planes. Through adaptive_avg_plane each plane cost ~19 ns of calls and
 * window loops whatever its size (8x512 planes of 7x7, one thread: 93 us,
 * PyTorch 27). */
static void FN(global_avg_planes)(const void *x_, void *out_, cf_idx p0, cf_idx p1,
                                  cf_idx n) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_;
    if (n < CF_VW) {   /* cf_sum's sum without its lanes (all zero): the same bits */
        for (cf_idx p = p0; p < p1; p++) {
            CF_T s = 0;
            for (cf_idx i = 0; i < n; i++) s += x[p * n + i];
            out[p] = s / (CF_T)n;
        }
        return;
    }
    for (cf_idx p = p0; p < p1; p++) out[p] = FN(cf_sum)(x + p * n, n) / (CF_T)n;
}

/* Adaptive pooling of one (D, H, W) volume (1-D and 2-D: unit dims):
 * output (od, oh, ow) covers [ds[od], de[od]) x [hs[oh], he[oh]) x
 * [ws[ow], we[ow]) (torch's window rule, computed by the caller). Global
 * pooling is the 1x1x1 case. */
static void FN(adaptive_avg_plane)(const void *x_, void *out_, cf_idx D, cf_idx H, cf_idx W,
                                   cf_idx OD, cf_idx OH, cf_idx OW, const int64_t *ds,
                                   const int64_t *de, const int64_t *hs, const int64_t *he,
                                   const int64_t *ws, const int64_t *we) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_;
    for (cf_idx od = 0; od < OD; od++)
    for (cf_idx oh = 0; oh < OH; oh++)
        for (cf_idx ow = 0; ow < OW; ow++) {
            const cf_idx w0 = ws[ow], w1 = we[ow];
            CF_T sum = 0;
            for (cf_idx d = ds[od]; d < de[od]; d++) {
                const CF_T *xd = x + d * H * W;
                if (w0 == 0 && w1 == W) {
                    /* full rows: the window's part of this slice is one contiguous run */
                    sum += FN(cf_sum)(xd + hs[oh] * W, (he[oh] - hs[oh]) * W);
                } else {
                    for (cf_idx h = hs[oh]; h < he[oh]; h++)
                        sum += FN(cf_sum)(xd + h * W + w0, w1 - w0);
                }
            }
            out[(od * OH + oh) * OW + ow] =
                sum / (CF_T)((de[od] - ds[od]) * (he[oh] - hs[oh]) * (w1 - w0));
        }
    (void)D;
}

/* Global max of n contiguous values by torch's scan (last NaN, else first
 * maximum), VW lanes at a time: each lane keeps its own scan result and the
 * chunk it came from; the lanes are then merged in position order. */
CF_INLINE void FN(global_max)(const CF_T *x, cf_idx n, CF_T *out, int64_t *idx) {
    CF_T m = -INFINITY;
    cf_idx at = 0, i = 0;
    if (!idx && n >= 4 * CF_VW) {
        /* value only: NaN if any, else the maximum, so the order of merging
         * does not matter and four independent chains hide the latency */
        CF_V acc[4];
        for (int k = 0; k < 4; k++) acc[k] = FN(cf_splat)(-INFINITY);
        for (; i + 4 * CF_VW <= n; i += 4 * CF_VW)
            for (int k = 0; k < 4; k++) {
                CF_V v;
                memcpy(&v, x + i + k * CF_VW, sizeof v);
                acc[k] = FN(cf_select)(FN(cf_max_update)(v, acc[k]), v, acc[k]);
            }
        for (int k = 1; k < 4; k++)
            acc[0] = FN(cf_select)(FN(cf_max_update)(acc[k], acc[0]), acc[k], acc[0]);
        CF_T lanes[CF_VW];
        memcpy(lanes, &acc[0], sizeof lanes);
        for (cf_idx l = 0; l < CF_VW; l++)
            if (lanes[l] > m || lanes[l] != lanes[l]) m = lanes[l];
    } else if (n >= 2 * CF_VW) {
        CF_V mv = FN(cf_splat)(-INFINITY);
        CF_M chunk = {0}, from = {0};
        const CF_M one = chunk + 1;
        for (; i + CF_VW <= n; i += CF_VW, chunk += one) {
            CF_V v;
            memcpy(&v, x + i, sizeof v);
            const CF_M upd = FN(cf_max_update)(v, mv);
            mv = FN(cf_select)(upd, v, mv);
            from = (chunk & upd) | (from & ~upd);
        }
        CF_T lane_m[CF_VW];
        CF_ITYPE lane_c[CF_VW];
        memcpy(lane_m, &mv, sizeof mv);
        memcpy(lane_c, &from, sizeof from);
        /* merge without data-dependent branches: the latest NaN if any lane
         * holds one, else the earliest position of the largest value */
        cf_idx nan_at = -1, best_at = n;
        CF_T best = -INFINITY;
        for (cf_idx l = 0; l < CF_VW; l++) {
            const cf_idx pos = (cf_idx)lane_c[l] * CF_VW + l;
            nan_at = lane_m[l] != lane_m[l] && pos > nan_at ? pos : nan_at;
            best = lane_m[l] > best ? lane_m[l] : best;
        }
        for (cf_idx l = 0; l < CF_VW; l++) {
            const cf_idx pos = (cf_idx)lane_c[l] * CF_VW + l;
            best_at = lane_m[l] == best && pos < best_at ? pos : best_at;
        }
        if (nan_at >= 0) {
            at = nan_at;
            m = x[nan_at];
        } else {
            at = best_at;
            m = best;
        }
    }
    for (; i < n; i++) /* the tail comes after every lane's position */
        if (x[i] > m || x[i] != x[i]) {
            m = x[i];
            at = i;
        }
    *out = m;
    if (idx) *idx = at;
}

static void FN(adaptive_max_plane)(const void *x_, void *out_, int64_t *idx, cf_idx H,
                                   cf_idx W, cf_idx OD, cf_idx OH, cf_idx OW, const int64_t *ds,
                                   const int64_t *de, const int64_t *hs, const int64_t *he,
                                   const int64_t *ws, const int64_t *we) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *out = (CF_T *)out_;
    if (OD == 1 && OH == 1 && OW == 1 && ws[0] == 0 && we[0] == W
        && (de[0] - ds[0] == 1 || (hs[0] == 0 && he[0] == H))) {
        /* global: one contiguous run */
        const cf_idx start = (ds[0] * H + hs[0]) * W;
        FN(global_max)(x + start, ((de[0] - ds[0] - 1) * H + he[0] - hs[0]) * W, out, idx);
        if (idx) idx[0] += start;
        return;
    }
    for (cf_idx od = 0; od < OD; od++)
    for (cf_idx oh = 0; oh < OH; oh++)
        for (cf_idx ow = 0; ow < OW; ow++) {
            CF_T m = -INFINITY;
            cf_idx at = (ds[od] * H + hs[oh]) * W + ws[ow];
            for (cf_idx d = ds[od]; d < de[od]; d++)
            for (cf_idx h = hs[oh]; h < he[oh]; h++)
                for (cf_idx w = ws[ow]; w < we[ow]; w++) {
                    const cf_idx i = (d * H + h) * W + w;
                    const CF_T v = x[i];
                    if (v > m || v != v) {
                        m = v;
                        at = i;
                    }
                }
            out[(od * OH + oh) * OW + ow] = m;
            if (idx) idx[(od * OH + oh) * OW + ow] = at;
        }
}

static void FN(adaptive_avg_backward_plane)(const void *go_, void *gx_, cf_idx D, cf_idx H,
                                            cf_idx W, cf_idx OD, cf_idx OH, cf_idx OW,
                                            const int64_t *ds, const int64_t *de,
                                            const int64_t *hs, const int64_t *he,
                                            const int64_t *ws, const int64_t *we) {
    const CF_T *go = (const CF_T *)go_;
    CF_T *gx = (CF_T *)gx_;
    const cf_idx DHW = D * H * W;
    if (OD == 1 && OH == 1 && OW == 1 && ds[0] == 0 && de[0] == D && hs[0] == 0 && he[0] == H
        && ws[0] == 0 && we[0] == W) {
        const CF_T share = go[0] / (CF_T)DHW; /* global: one value everywhere */
        for (cf_idx i = 0; i < DHW; i++) gx[i] = share;
        return;
    }
    memset(gx, 0, (size_t)DHW * sizeof(CF_T));
    for (cf_idx od = 0; od < OD; od++)
    for (cf_idx oh = 0; oh < OH; oh++)
        for (cf_idx ow = 0; ow < OW; ow++) {
            const CF_T share = go[(od * OH + oh) * OW + ow]
                / (CF_T)((de[od] - ds[od]) * (he[oh] - hs[oh]) * (we[ow] - ws[ow]));
            for (cf_idx d = ds[od]; d < de[od]; d++)
            for (cf_idx h = hs[oh]; h < he[oh]; h++)
                for (cf_idx w = ws[ow]; w < we[ow]; w++) gx[(d * H + h) * W + w] += share;
        }
}
