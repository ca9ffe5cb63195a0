/* Packed GEMM of the im2col/1x1 forward and input gradient: weight and column packing,
 * register tiles, weights read in place.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* The im2col forward runs its own GEMM rather than BLAS: SciPy's sgemm would
 * copy each column tile once more into its own panel order and repack the
 * weights on every call (about a fifth of the time on the 3x3 layers). Here
 * the weights are packed once per call and the columns are gathered straight
 * into panel order, so each input value is copied once.
 *
 * Register tile: MR rows (output channels) x NCH vectors of columns (output
 * positions), MR*NCH accumulators. The column vectors are loaded, each row's
 * weight is a broadcast operand of the FMA. MR and NCH per ISA level:
 * CF_GEMM_MR, CF_GEMM_NCH (cf_tiles.h); the column panels are
 * CF_GEMM_NR = NCH vectors wide. */
#define CF_GEMM_NR (CF_GEMM_NCH * CF_VW)

/* Rows of row block b when m rows are cut into blocks of mr; the last block is
 * rounded up to a multiple of 4 so a narrow tile runs it instead of a padded
 * full one (K = 64 on 12-row tiles would waste an eighth). */
CF_INLINE cf_idx FN(cf_block_rows)(cf_idx m, cf_idx mr, cf_idx b) {
    const cf_idx rest = m - b * mr;
    return rest >= mr ? mr : (rest + 3) / 4 * 4;
}

/* Pack an m x depth matrix, element (i, k) at src[i*row_stride + k*depth_stride],
 * into row blocks [block][depth][rows of the block], zero rows past m. The
 * packed size is (m rounded up to 4) * depth. */
static void FN(gemm_pack_rows)(const void *src_, cf_idx m, cf_idx depth, cf_idx row_stride,
                               cf_idx depth_stride, void *dst_) {
    const CF_T *src = (const CF_T *)src_;
    CF_T *dst = (CF_T *)dst_;
    const cf_idx mr = CF_GEMM_MR;
    for (cf_idx b = 0; b * mr < m; b++) {
        const cf_idx rows = FN(cf_block_rows)(m, mr, b);
        CF_T *d = dst + b * mr * depth;
        for (cf_idx k = 0; k < depth; k++)
            for (cf_idx i = 0; i < rows; i++)
                d[k * rows + i] = b * mr + i < m
                    ? src[(b * mr + i) * row_stride + k * depth_stride] : (CF_T)0;
    }
}

/* Lanes j hold row[j*S] for the strides the column packing meets most (1, 2
 * and 4, as shuffles of full loads: AlexNet's stride 4 gathered lane by lane
 * cost a fifth of its forward time); others lane by lane. Reads S*CF_VW
 * elements at most. */
CF_INLINE CF_V FN(cf_load_every)(const CF_T *row, cf_idx s) {
    if (s != 4) return FN(cf_load_strided)(row, s);
    CF_V v[4], lo, hi, out;
    CF_M pick, halves;
    memcpy(v, row, sizeof v);
    for (int j = 0; j < (int)CF_VW; j++) {
        pick[j] = (4 * j) % (2 * CF_VW);          /* every 4th of a pair, twice */
        halves[j] = j < CF_VW / 2 ? j : CF_VW + j; /* low half of lo, high half of hi */
    }
    lo = __builtin_shuffle(v[0], v[1], pick);
    hi = __builtin_shuffle(v[2], v[3], pick);
    out = __builtin_shuffle(lo, hi, halves);
    return out;
}

/* One run of `len` output positions along an output row, at column `col` of
 * the panel, for the taps of one input channel: d[r*nr + t] = xs[off(r) + t*S]
 * with r = (kd, kh, kw). Full-vector loads and stores; a last partial vector
 * is stored ending at the run's end when the run is at least a vector long,
 * else past it into later runs of the same row (packed after this one) when
 * the row has room, else lane by lane, so no store reaches another row. Loads
 * that would pass x_end go lane by lane. S = 0 reads the stride from g. */
CF_INLINE void FN(cf_pack_run)(const CF_T *xs, const CF_T *x_end, CF_T *d, cf_idx col,
                               cf_idx len, cf_idx nr, const cf_geom *g, const int S) {
    const cf_idx sw = S ? S : g->sw, need = CF_VW * sw;
    const cf_idx HW = g->H * g->W;
    const cf_idx full = len / CF_VW * CF_VW;
    /* where the partial vector goes: -1 none, else its first column */
    const cf_idx tail = full == len ? -1
                      : len >= CF_VW ? len - CF_VW
                      : col + full + CF_VW <= nr ? full : -2;
    d += col;
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++) {
        const CF_T *xr = xs + kd * g->dd * HW + kh * g->dh * g->W;
        for (cf_idx kw = 0; kw < g->KW; kw++, d += nr) {
            const CF_T *src = xr + kw * g->dw;
            cf_idx t = 0;
            for (; t < full; t += CF_VW) {
                if (src + t * sw + need > x_end) break;
                const CF_V v = FN(cf_load_every)(src + t * sw, sw);
                memcpy(d + t, &v, sizeof v);
            }
            if (t == full && tail >= 0 && src + tail * sw + need <= x_end) {
                const CF_V v = FN(cf_load_every)(src + tail * sw, sw);
                memcpy(d + tail, &v, sizeof v);
            } else {
                for (; t < len; t++) d[t] = src[t * sw];
            }
        }
    }
}

/* Column panels of im2col for output positions [p0, p0 + cnt) of one image and
 * group, in panel order: dst[panel][r][j] = col[r][p0 + panel*nr + j], r =
 * (c, kd, kh, kw). x holds the group's planes with the padding already applied
 * (pads 0 in g, g->D/H/W the padded extent); x_end is the end of readable
 * memory after it. A panel's positions fall into runs along output rows; the
 * runs of all panels are listed first (runs: scratch of 3*cnt + cnt/nr + 2),
 * then packed. Columns past cnt are zero. */
static void FN(gemm_pack_columns)(const void *x_, const void *x_end_, void *dst_, cf_idx p0,
                                  cf_idx cnt, cf_idx *runs, const cf_geom *g) {
    const cf_idx nr = CF_GEMM_NR;
    const CF_T *x = (const CF_T *)x_;
    const CF_T *x_end = (const CF_T *)x_end_;
    CF_T *dst = (CF_T *)dst_;
    const cf_idx HW = g->H * g->W, DHW = g->D * HW, OHW = g->OH * g->OW;
    const cf_idx KVOL = g->KD * g->KH * g->KW, R = g->C * KVOL;
    const cf_idx npanels = (cnt + nr - 1) / nr;
    cf_idx *first = runs;                 /* first[p] .. first[p+1]: runs of panel p */
    cf_idx *run_col = runs + npanels + 1, *run_len = run_col + cnt, *run_base = run_len + cnt;
    cf_idx nruns = 0;
    for (cf_idx pn = 0; pn < npanels; pn++) {
        const cf_idx j0 = pn * nr, width = cf_min(nr, cnt - j0);
        cf_idx p = p0 + j0, od = p / OHW, oh = (p % OHW) / g->OW, ow = p % g->OW;
        first[pn] = nruns;
        for (cf_idx j = 0; j < width; nruns++) {
            run_col[nruns] = j;
            run_len[nruns] = cf_min(g->OW - ow, width - j);
            run_base[nruns] = od * g->sd * HW + oh * g->sh * g->W + ow * g->sw;
            j += run_len[nruns];
            ow = 0;
            if (++oh == g->OH) { oh = 0; od++; }
        }
    }
    first[npanels] = nruns;
    /* 1x1 kernels: channel by channel (each panel reads only a vector or two
     * per plane); larger kernels read several rows per plane and panel, and
     * packing panel by panel keeps the writes in one panel (measured faster) */
    const int by_channel = KVOL == 1;
    for (cf_idx outer = 0; outer < (by_channel ? g->C : npanels); outer++) {
        for (cf_idx inner = 0; inner < (by_channel ? npanels : g->C); inner++) {
            const cf_idx c = by_channel ? outer : inner, pn = by_channel ? inner : outer;
            CF_T *rows = dst + pn * nr * R + c * KVOL * nr;
            for (cf_idx q = first[pn]; q < first[pn + 1]; q++) {
                const CF_T *xs = x + c * DHW + run_base[q];
                if (g->sw == 1) FN(cf_pack_run)(xs, x_end, rows, run_col[q], run_len[q], nr, g, 1);
                else if (g->sw == 2) FN(cf_pack_run)(xs, x_end, rows, run_col[q], run_len[q], nr, g, 2);
                else if (g->sw == 4) FN(cf_pack_run)(xs, x_end, rows, run_col[q], run_len[q], nr, g, 4);
                else FN(cf_pack_run)(xs, x_end, rows, run_col[q], run_len[q], nr, g, 0);
            }
        }
    }
    const cf_idx width = cnt - (npanels - 1) * nr;
    if (width < nr)
        for (cf_idx r = 0; r < R; r++)
            memset(dst + (npanels - 1) * nr * R + r * nr + width, 0,
                   (size_t)(nr - width) * sizeof(CF_T));
}

/* Register-tile accumulators: bias[i] (rows i < rows) or zero. */
CF_INLINE void FN(cf_gemm_init)(CF_V *acc, const CF_T *bias, cf_idx rows, const int MR,
                                const int NCH) {
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 2
        for (int q = 0; q < NCH; q++)
            acc[i * NCH + q] = FN(cf_splat)(bias && i < rows ? bias[i] : (CF_T)0);
}

/* The tile's rows < rows and columns < cols to C (row stride ldc), added to
 * what C holds when accumulate. */
CF_INLINE void FN(cf_gemm_store)(CF_V *acc, CF_T *c, cf_idx ldc, cf_idx rows, cf_idx cols,
                                 int accumulate, const int MR, const int NCH) {
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        if (i >= rows) break;
#pragma GCC unroll 2
        for (int q = 0; q < NCH; q++) {
            const cf_idx n = cf_min(CF_VW, cols - q * CF_VW);
            CF_T *o = c + i * ldc + q * CF_VW;
            if (n == CF_VW) {
                if (accumulate) {
                    CF_V old;
                    memcpy(&old, o, sizeof old);
                    acc[i * NCH + q] += old;
                }
                memcpy(o, &acc[i * NCH + q], sizeof(CF_V));
            } else if (n > 0) {
                CF_T lanes[CF_VW];
                memcpy(lanes, &acc[i * NCH + q], sizeof lanes);
                for (cf_idx j = 0; j < n; j++) o[j] = accumulate ? o[j] + lanes[j] : lanes[j];
            }
        }
    }
}

/* One register tile: C[0:rows, 0:cols] (+)= A B (+ bias) over `depth` steps.
 * A's element (i, k) is at a[i + k*stride] (RC = 1: packed rows, stride MR,
 * or the transposed weights of the input gradient read in place) or at
 * a[i*stride + k] (RC = 0: the forward's weights read in place); b: [depth][nr]
 * packed columns, of which the first NCH*CF_VW are used; c: row stride ldc.
 * Only rows < rows and columns < cols are written. */
CF_INLINE void FN(cf_gemm_tile_strided)(const CF_T *a, cf_idx stride, const CF_T *b,
                                        cf_idx nr, cf_idx depth, CF_T *c, cf_idx ldc,
                                        cf_idx rows, cf_idx cols, const CF_T *bias,
                                        int accumulate, const int MR, const int NCH,
                                        const int RC) {
    CF_V acc[24]; /* MR*NCH <= 24; fixed size keeps them in registers */
    FN(cf_gemm_init)(acc, bias, rows, MR, NCH);
    for (cf_idx k = 0; k < depth; k++) {
        CF_V bv[2];
#pragma GCC unroll 2
        for (int q = 0; q < NCH; q++) memcpy(&bv[q], b + k * nr + q * CF_VW, sizeof bv[q]);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const CF_T av = RC ? a[k * stride + i] : a[i * stride + k];
#pragma GCC unroll 2
            for (int q = 0; q < NCH; q++) acc[i * NCH + q] += bv[q] * av;
        }
    }
    FN(cf_gemm_store)(acc, c, ldc, rows, cols, accumulate, MR, NCH);
}

/* The tile ladder of both GEMMs: the register tile for a row block of `rows`
 * rows (CF_GEMM_MR, 8 or 4) and a panel of cn columns, writing rm rows.
 * stride 0: A is packed (its stride is the block's height, a constant once
 * inlined); else A is read in place with that stride (RC as in
 * cf_gemm_tile_strided). */
CF_INLINE void FN(cf_gemm_block)(const CF_T *a, cf_idx stride, const CF_T *b, cf_idx nr,
                                 cf_idx len, CF_T *ct, cf_idx ldc, cf_idx rows, cf_idx rm,
                                 cf_idx cn, const CF_T *bias, int acc, const int RC) {
#define CF_TILE(MR, NCH)                                                                \
    FN(cf_gemm_tile_strided)(a, stride ? stride : MR, b, nr, len, ct, ldc, rm, cn, bias, \
                             acc, MR, NCH, RC)
#if CF_GEMM_NCH == 2
    if (cn > CF_VW) {
        if (rows == 12) CF_TILE(12, 2);
        else if (rows == 8) CF_TILE(8, 2);
        else CF_TILE(4, 2);
    } else { /* a last panel at most one vector wide */
        if (rows == 12) CF_TILE(12, 1);
        else if (rows == 8) CF_TILE(8, 1);
        else CF_TILE(4, 1);
    }
#else
    CF_TILE(4, 1);
#endif
#undef CF_TILE
}

/* C (+)= A B (+ bias per row) for m x n, reduction depth, with A packed by
 * gemm_pack_rows and B by gemm_pack_columns (panels of the level's tile
 * width). The reduction runs in chunks of at most kc steps so a chunk of A
 * stays in L2 and a panel chunk of B in L1 across the row blocks; later
 * chunks add into C. */
static void FN(gemm_packed)(const void *apk_, const void *bpk_, cf_idx m, cf_idx n,
                            cf_idx depth, void *c_, cf_idx ldc, const void *bias_,
                            int accumulate, cf_idx kc) {
    const CF_T *apk = (const CF_T *)apk_;
    const CF_T *bpk = (const CF_T *)bpk_;
    CF_T *c = (CF_T *)c_;
    const CF_T *bias = (const CF_T *)bias_;
    const cf_idx mr = CF_GEMM_MR, nr = CF_GEMM_NR;
    const cf_idx nchunks = kc > 0 ? (depth + kc - 1) / kc : 1;
    const cf_idx step = (depth + nchunks - 1) / nchunks;
    for (cf_idx k0 = 0; k0 < depth; k0 += step) {
        const cf_idx len = cf_min(step, depth - k0);
        const int acc = accumulate || k0 > 0;
        for (cf_idx j0 = 0; j0 < n; j0 += nr) {
            const CF_T *b = bpk + j0 * depth + k0 * nr;
            for (cf_idx i0 = 0; i0 < m; i0 += mr) {
                const cf_idx rows = FN(cf_block_rows)(m, mr, i0 / mr);
                const CF_T *a = apk + i0 * depth + k0 * rows;
                const CF_T *bi = bias && k0 == 0 ? bias + i0 : NULL;
                CF_T *ct = c + i0 * ldc + j0;
                const cf_idx rm = cf_min(rows, m - i0), cn = cf_min(nr, n - j0);
                FN(cf_gemm_block)(a, 0, b, nr, len, ct, ldc, rows, rm, cn, bi, acc, 1);
            }
        }
    }
}

/* C (+)= A B (+ bias per row) as gemm_packed, with A (m x depth) read in
 * place rather than packed: element (i, k) at a[i*rs + k*ks], rs == 1 or
 * ks == 1. For few column panels, where packing A would cost more passes
 * over it than the product (ResNet-18's 2x2 layers: 9.4 MB of weights, 32
 * columns). Row blocks of the level's tile height while they are full, then
 * 8 and 4; the last 1-3 rows go through a zero-padded packed copy (work:
 * 4*depth elements), so no read passes A's last row. */
static void FN(gemm_in_place)(const void *a_, cf_idx rs, cf_idx ks, const void *bpk_, cf_idx m,
                              cf_idx n, cf_idx depth, void *c_, cf_idx ldc, const void *bias_,
                              int accumulate, cf_idx kc, void *work_) {
    const CF_T *a = (const CF_T *)a_;
    const CF_T *bpk = (const CF_T *)bpk_;
    CF_T *c = (CF_T *)c_;
    const CF_T *bias = (const CF_T *)bias_;
    CF_T *work = (CF_T *)work_;
    const cf_idx mr = CF_GEMM_MR, nr = CF_GEMM_NR;
    const int rc = rs == 1;
    const cf_idx stride = rc ? ks : rs;
    const cf_idx nchunks = kc > 0 ? (depth + kc - 1) / kc : 1;
    const cf_idx step = (depth + nchunks - 1) / nchunks;
    for (cf_idx k0 = 0; k0 < depth; k0 += step) {
        const cf_idx len = cf_min(step, depth - k0);
        const int acc = accumulate || k0 > 0;
        for (cf_idx j0 = 0; j0 < n; j0 += nr) {
            const CF_T *b = bpk + j0 * depth + k0 * nr;
            const cf_idx cn = cf_min(nr, n - j0);
            cf_idx i0 = 0;
            while (m - i0 >= 4) {
                const cf_idx rows = m - i0 >= mr ? mr : m - i0 >= 8 ? 8 : 4;
                const CF_T *ai = a + i0 * rs + k0 * ks;
                const CF_T *bi = bias && k0 == 0 ? bias + i0 : NULL;
                CF_T *ct = c + i0 * ldc + j0;
                if (rc)
                    FN(cf_gemm_block)(ai, stride, b, nr, len, ct, ldc, rows, rows, cn, bi, acc, 1);
                else
                    FN(cf_gemm_block)(ai, stride, b, nr, len, ct, ldc, rows, rows, cn, bi, acc, 0);
                i0 += rows;
            }
            if (i0 < m) { /* 1-3 rows left */
                const cf_idx rm = m - i0;
                for (cf_idx k = 0; k < len; k++)
                    for (cf_idx i = 0; i < 4; i++)
                        work[k * 4 + i] = i < rm ? a[(i0 + i) * rs + (k0 + k) * ks] : (CF_T)0;
                const CF_T *bi = bias && k0 == 0 ? bias + i0 : NULL;
                CF_T *ct = c + i0 * ldc + j0;
                FN(cf_gemm_block)(work, 0, b, nr, len, ct, ldc, 4, rm, cn, bi, acc, 1);
            }
        }
    }
}

