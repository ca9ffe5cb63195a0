/* Convolution forward on channels-last (NHWC / NDHWC) activations: one direct
 * kernel for every kernel size, stride, dilation and zero padding.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (nhwc_family.h), with CF_T, FN() and the tile sizes of cf_tiles.h defined.
 *
 * The register tile is onnxruntime MLAS's NCHWc one on NHWC: NV vectors of
 * output channels (weights packed [tap][c][NV*VW], one vector load each) times
 * NC output pixels (one broadcast of an input value each), NV*NC <= 24
 * accumulators. Per input channel: NV loads, NC broadcasts, NV*NC FMAs. The
 * pixels of a tile are any NC consecutive output positions of the flattened
 * (OD, OH, OW) plane, across row ends: each pixel reads through its own
 * pointer, so rows of 7 (ResNet's last stage) fill whole tiles. Padding is not
 * copied: a tap that falls outside the input reads a zero row instead (only
 * tiles that touch the border check, per tap). Outputs are stored as whole
 * vectors of channels, already in the NHWC layout the next layer reads.
 *
 * Inside a model a layer's weights come from memory, not cache (ResNet-18's
 * 7x7x512 layers: 9.4 MB each, 44 MB for the model), and the first tile over
 * a chunk of weights would wait for every line of it (one thread, cold
 * weights: 2.26 ms against 1.47 hot). So a call brings the next weights it
 * or its caller will read (the next chunk; the next work item's or Winograd
 * position's) into L2 while it computes: a few prefetches per tile, spread
 * over the tiles of the chunk. Each chunk of a block is one contiguous run
 * of the packed weights for that (nhwc_pack). */

/* Weights to prefetch over a run of tiles: `lines` cache lines from p,
 * `quota` per tile (one type for every instantiation of this header). */
#ifndef CF_NHWC_PREFETCH_DEFINED
#define CF_NHWC_PREFETCH_DEFINED
typedef struct {
    const char *p;
    cf_idx lines, quota;
    int out;   /* also the next tile's output lines, for writing */
} cf_prefetch;
#endif

/* Tile orders (nhwc_forward's `mode`): pixels flattened (OD, OH, OW) as the
 * output lies, or position-major over a batch folded into depth (images
 * fastest: q = (oh * OW + ow) * OD + od), where the pixels of a tile share
 * one position in NC images and so the same taps fall in the padding; with
 * CF_NHWC_SKIP too (the weights finite: 0 * w is then 0) a tap outside for
 * every pixel of the tile is skipped. ResNet's 3x3 layers on 4x4 planes
 * read the padding on 44 of 144 tap-pixels, on 7x7 on 80 of 441. */
#ifndef CF_NHWC_MODES_DEFINED
#define CF_NHWC_MODES_DEFINED
#define CF_NHWC_POSITION_MAJOR 1
#define CF_NHWC_SKIP 2
#endif

/* One tile: acc = (first ? bias : out) + sum over taps and the channels
 * [c0, c1) of the group of x * w; stored to out, with the epilogue (residual
 * add, then clamp to [lo, hi]) when `last`. pix: the flattened output
 * position of the tile's first pixel, in the order `mode` says. */
CF_INLINE void FN(cf_nhwc_tile)(const CF_T *x, cf_idx xs, const CF_T *w, cf_idx wstride,
                                const CF_T *bias, CF_T *out, cf_idx os, const CF_T *res,
                                cf_idx pix, cf_idx nk, cf_idx c0, cf_idx c1, int first,
                                int last, int clamp, CF_T lo, CF_T hi, const CF_T *zeros,
                                cf_prefetch *pf, int mode, const cf_geom *g, const int NV,
                                const int NC, const int SIMPLE) {
    CF_V acc[24]; /* NV*NC <= 24 */
    if (SIMPLE) first = last = 1;   /* and nk covers the NV vectors */
    cf_idx base[24], id0[24], ih0[24], iw0[24], ob[24];   /* ob: output offsets */
    int inside = 1;
    const int pmajor = mode & CF_NHWC_POSITION_MAJOR;
    if (pmajor) {
        /* kernel depth 1, depth stride 1, no depth padding (the caller's
         * batch fold): the image is od itself */
        const cf_idx OHW = g->OH * g->OW;
        cf_idx pos = pix / g->OD, n = pix - pos * g->OD;
        cf_idx oh = pos / g->OW, ow = pos - oh * g->OW;
#pragma GCC unroll 24
        for (int i = 0; i < NC; i++) {
            id0[i] = n;
            ih0[i] = oh * g->sh - g->ph;
            iw0[i] = ow * g->sw - g->pw;
            inside &= ih0[i] >= 0 && ih0[i] + (g->KH - 1) * g->dh < g->H
                   && iw0[i] >= 0 && iw0[i] + (g->KW - 1) * g->dw < g->W;
            base[i] = ((n * g->H + ih0[i]) * g->W + iw0[i]) * xs;
            ob[i] = (n * OHW + pos) * os;
            if (++n == g->OD) {
                n = 0;
                pos++;
                if (++ow == g->OW) {
                    ow = 0;
                    oh++;
                }
            }
        }
    } else if (g->KD == 1 && g->KH == 1 && g->KW == 1 && g->sd == 1 && g->sh == 1 && g->sw == 1
        && g->pd == 0 && g->ph == 0 && g->pw == 0
        && g->OD == g->D && g->OH == g->H && g->OW == g->W) {
        /* a 1x1 stride-1 convolution reads the input pixel of its output's
         * position: no window to place (with 16-32 input channels the
         * placing below took as long as the tile's FMAs). Only where the
         * sizes agree: an input gradient's stride phase with one tap can
         * have more positions than grad_out, the last ones reading zeros. */
#pragma GCC unroll 24
        for (int i = 0; i < NC; i++) {
            base[i] = (pix + i) * xs;
            ob[i] = (pix + i) * os;
        }
    } else {
        /* the tile's first position by division, the others by counting
         * along rows: three divisions per pixel cost ~100 cycles, a small
         * tile's FMAs ~200 */
        const cf_idx OHW = g->OH * g->OW;
        cf_idx od = pix / OHW, oh = (pix - od * OHW) / g->OW, ow = pix - od * OHW - oh * g->OW;
#pragma GCC unroll 24
        for (int i = 0; i < NC; i++) {
            id0[i] = od * g->sd - g->pd;
            ih0[i] = oh * g->sh - g->ph;
            iw0[i] = ow * g->sw - g->pw;
            inside &= id0[i] >= 0 && id0[i] + (g->KD - 1) * g->dd < g->D
                   && ih0[i] >= 0 && ih0[i] + (g->KH - 1) * g->dh < g->H
                   && iw0[i] >= 0 && iw0[i] + (g->KW - 1) * g->dw < g->W;
            base[i] = ((id0[i] * g->H + ih0[i]) * g->W + iw0[i]) * xs;
            ob[i] = (pix + i) * os;
            if (++ow == g->OW) {
                ow = 0;
                if (++oh == g->OH) {
                    oh = 0;
                    od++;
                }
            }
        }
    }
    const int full = SIMPLE || (cf_idx)NV * CF_VW <= nk;
    if (first && pf->out && !pmajor)
#pragma GCC unroll 24
        for (int i = 0; i < NC; i++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                __builtin_prefetch(out + (pix + NC + i) * os + v * CF_VW, 1, 2);
#pragma GCC unroll 24
    for (int i = 0; i < NC; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            if (!first) {
                if (full || (v + 1) * CF_VW <= nk)
                    memcpy(&acc[i * NV + v], out + ob[i] + v * CF_VW, sizeof(CF_V));
                else
                    acc[i * NV + v] = FN(cf_load_lanes)(out + ob[i] + v * CF_VW,
                                                        nk - v * CF_VW);
            } else if (bias)
                memcpy(&acc[i * NV + v], bias + v * CF_VW, sizeof(CF_V));
            else
                acc[i * NV + v] = FN(cf_splat)(0);
        }
    /* With all channels in one chunk, pixels exactly C apart and unit
     * dilation along W, the KW taps of a kernel row are one run of KW*C
     * consecutive inputs (and weights) for a window inside the input: one
     * loop of KW*C steps instead of KW loops of C (the RGB stem, 7x7 over 3
     * channels: 7 pointer setups per row instead of 49). */
    const int rows = inside && g->dw == 1 && c0 == 0 && c1 == g->C && xs == g->C;
    const cf_idx nc = rows ? g->KW * g->C : c1 - c0;
    const cf_idx KW = rows ? 1 : g->KW;
    const CF_T *wt = w;   /* the chunk's weights, [tap][c1 - c0][NV*VW] */
    /* this tile's prefetches: one line per channel step, two when the quota
     * exceeds the steps (a narrow chunk), the rest after the taps */
    cf_idx npf = cf_min(pf->quota, pf->lines);
    const char *pfp = pf->p;
    pf->p += npf * 64;
    pf->lines -= npf;
    const int pf2 = npf > g->KD * g->KH * KW * nc;
    for (cf_idx kd = 0; kd < g->KD; kd++)
    for (cf_idx kh = 0; kh < g->KH; kh++)
    for (cf_idx kw = 0; kw < KW; kw++, wt += rows ? g->KW * wstride : wstride) {
        const cf_idx off = ((kd * g->dd * g->H + kh * g->dh) * g->W + kw * g->dw) * xs + c0;
        const CF_T *px[24];
        int outside = !inside;   /* every pixel of the tile reads padding */
#pragma GCC unroll 24
        for (int i = 0; i < NC; i++) {
            px[i] = x + base[i] + off;
            if (!inside) {
                const cf_idx d = id0[i] + kd * g->dd, h = ih0[i] + kh * g->dh,
                             ww = iw0[i] + kw * g->dw;
                if (d < 0 || d >= g->D || h < 0 || h >= g->H || ww < 0 || ww >= g->W)
                    px[i] = zeros;
                else
                    outside = 0;
            }
        }
        if (outside && (mode & CF_NHWC_SKIP)) continue;
        const CF_T *wc = wt;
        for (cf_idx c = 0; c < nc; c++, wc += NV * CF_VW) {
            if (npf > 0) {
                __builtin_prefetch(pfp, 0, 2);
                if (pf2) __builtin_prefetch(pfp + 64, 0, 2);
                pfp += pf2 ? 128 : 64;
                npf -= pf2 ? 2 : 1;
            }
            CF_V wv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) memcpy(&wv[v], wc + v * CF_VW, sizeof wv[v]);
#pragma GCC unroll 24
            for (int i = 0; i < NC; i++) {
                const CF_T xi = px[i][c];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i * NV + v] += wv[v] * xi;
            }
        }
    }
    for (; npf > 0; npf--, pfp += 64) __builtin_prefetch(pfp, 0, 2);
    if (last && (res || clamp)) {
        const CF_V lov = FN(cf_splat)(lo), hiv = FN(cf_splat)(hi);
#pragma GCC unroll 24
        for (int i = 0; i < NC; i++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                CF_V a = acc[i * NV + v];
                if (res) {
                    CF_V r;
                    if (full || (v + 1) * CF_VW <= nk)   /* constant size: one load */
                        memcpy(&r, res + ob[i] + v * CF_VW, sizeof r);
                    else
                        r = FN(cf_load_lanes)(res + ob[i] + v * CF_VW, nk - v * CF_VW);
                    a += r;
                }
                if (clamp) a = FN(cf_clamp)(a, lov, hiv);   /* NaN kept */
                acc[i * NV + v] = a;
            }
    }
#pragma GCC unroll 24
    for (int i = 0; i < NC; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            CF_T *o = out + ob[i] + v * CF_VW;
            if (full || (v + 1) * CF_VW <= nk)
                memcpy(o, &acc[i * NV + v], sizeof(CF_V));
            else
                FN(cf_store_lanes)(o, acc[i * NV + v], nk - v * CF_VW);
        }
}

/* Output positions [p0, p1) of one image, group and block of nk <= NVMAX*VW
 * output channels, for the input channels [c0, c1) of the group: tiles of
 * NC pixels, the tail in tiles of 4, 2 and 1 (no tile overlaps another: when
 * the channels come in chunks, later chunks add to what earlier ones stored). */
CF_INLINE void FN(cf_nhwc_span)(const CF_T *x, cf_idx xs, const CF_T *w, const CF_T *bias,
                                CF_T *out, cf_idx os, const CF_T *res, cf_idx p0, cf_idx p1,
                                cf_idx nk, cf_idx c0, cf_idx c1, int first, int last,
                                int clamp, CF_T lo, CF_T hi, const CF_T *zeros,
                                cf_prefetch *pf, int mode, const cf_geom *g, const int NV,
                                const int NC) {
    const cf_idx wstride = (c1 - c0) * NV * CF_VW;
#define CF_NHWC_TILE(NCT, SIMPLE)                                                      \
    FN(cf_nhwc_tile)(x, xs, w, wstride, bias, out, os, res, p, nk, c0, c1, first, last,   \
                     clamp, lo, hi, zeros, pf, mode, g, NV, NCT, SIMPLE)
#define CF_NHWC_TILES(SIMPLE)                                                          \
    for (; p + NC <= p1; p += NC) CF_NHWC_TILE(NC, SIMPLE);                            \
    if (NC > 4) for (; p + 4 <= p1; p += 4) CF_NHWC_TILE(4 < NC ? 4 : NC, SIMPLE);     \
    for (; p + 2 <= p1; p += 2) CF_NHWC_TILE(2, SIMPLE);                              \
    for (; p < p1; p++) CF_NHWC_TILE(1, SIMPLE);
    cf_idx p = p0;
    /* One pass over all channels into whole vectors (most layers): a tile
     * body with no partial-vector copies and no partial sums to reload.
     * In-process A/B, one thread: 1x1 convolutions over 16-64 channels
     * 13-20% faster (16 -> 96 at 112x112 584 -> 473 us), 3x3 unchanged. */
    if (first && last && (cf_idx)NV * CF_VW <= nk) {
        CF_NHWC_TILES(1)
    } else {
        CF_NHWC_TILES(0)
    }
#undef CF_NHWC_TILES
#undef CF_NHWC_TILE
}

/* One function per block width NV: each gets its own register allocation
 * (inlined into one body with the others, GCC spilled accumulators inside
 * the inner loops of some widths whenever another path changed). */
#define CF_NHWC_SPAN_NV(NV)                                                             \
    static __attribute__((noinline)) void FN(cf_nhwc_span_nv##NV)(                       \
        const CF_T *x, cf_idx xs, const CF_T *w, const CF_T *bias, CF_T *out, cf_idx os,  \
        const CF_T *res, cf_idx p0, cf_idx p1, cf_idx nk, cf_idx c0, cf_idx c1, int first,\
        int last, int clamp, CF_T lo, CF_T hi, const CF_T *zeros, cf_prefetch *pf,        \
        int mode, const cf_geom *g) {                                                     \
        FN(cf_nhwc_span)(x, xs, w, bias, out, os, res, p0, p1, nk, c0, c1, first, last,   \
                         clamp, lo, hi, zeros, pf, mode, g, NV, CF_NHWC_PIXELS(NV));     \
    }
CF_NHWC_SPAN_NV(1)
CF_NHWC_SPAN_NV(2)
#if CF_LANES_NVMAX > 2
CF_NHWC_SPAN_NV(3)
CF_NHWC_SPAN_NV(4)
#endif
#undef CF_NHWC_SPAN_NV

/* Forward of one work item: output positions [p0, p1) of one image and
 * group, output channels [k0, k0 + nk) of the group (one block of at most
 * CF_LANES_NVMAX vectors), all input channels in chunks of cchunk.
 * x: the image's first element of the group's channels, pixels xs apart;
 * w: the block's packed weights, chunk by chunk (nhwc_pack); bias: the
 * block's nk values or NULL; out, res: element (position 0, channel k0) of
 * the output and residual images, pixels os apart; zeros: at least C zeros
 * (what a tap outside the input reads). Epilogue: res added (when not
 * NULL), then clamped to [lo, hi] when clamp is set. next, next_bytes: the
 * weights the caller reads after this call (NULL, 0: none), prefetched into
 * L2 over the last chunk's tiles, as each earlier chunk prefetches the next.
 * mode: CF_NHWC_POSITION_MAJOR (then p0, p1 count in that order, and x, out
 * and res are the whole batch's) and CF_NHWC_SKIP, or 0. */
static void FN(nhwc_forward)(const void *x_, cf_idx xs, const void *w_, const void *bias_,
                             void *out_, cf_idx os, const void *res_, cf_idx p0, cf_idx p1,
                             cf_idx nk, cf_idx cchunk, int clamp, double lo, double hi,
                             const void *zeros_, const void *next, cf_idx next_bytes,
                             int mode, const cf_geom *g) {
    const CF_T *x = (const CF_T *)x_, *w = (const CF_T *)w_, *bias = (const CF_T *)bias_;
    const CF_T *res = (const CF_T *)res_, *zeros = (const CF_T *)zeros_;
    CF_T *out = (CF_T *)out_;
    const int nv = (int)((nk + CF_VW - 1) / CF_VW);
    const cf_idx KVOL = g->KD * g->KH * g->KW, width = nv * CF_VW;
    for (cf_idx c0 = 0; c0 < g->C; c0 += cchunk) {
        const cf_idx c1 = cf_min(g->C, c0 + cchunk);
        const int first = c0 == 0, last = c1 == g->C;
        const CF_T *wk = w + c0 * KVOL * width;   /* this chunk's weights */
        /* an output image larger than half of L2 is not in cache when the
         * layer starts (ResNet's 112x112x64 stem: 3.2 MB), and each store
         * would first wait for its line: the next tile's lines are fetched
         * for writing while this one computes */
        const cf_idx out_bytes = g->OD * g->OH * g->OW * os * (cf_idx)sizeof(CF_T);
        cf_prefetch pf = {NULL, 0, 0, out_bytes > (1 << 20)};
        if (!last) {
            pf.p = (const char *)(wk + (c1 - c0) * KVOL * width);
            pf.lines = (cf_min(g->C, c1 + cchunk) - c1) * KVOL * width * (cf_idx)sizeof(CF_T) / 64;
        } else if (next) {
            pf.p = (const char *)next;
            pf.lines = (next_bytes + 63) / 64;
        }
#define CF_NHWC_NV(NV)                                                                 \
        {                                                                              \
            const cf_idx tiles = (p1 - p0 + CF_NHWC_PIXELS(NV) - 1) / CF_NHWC_PIXELS(NV); \
            pf.quota = (pf.lines + tiles - 1) / (tiles > 0 ? tiles : 1);               \
            FN(cf_nhwc_span_nv##NV)(x, xs, wk, bias, out, os, res, p0, p1, nk, c0, c1,   \
                                    first, last, clamp, (CF_T)lo, (CF_T)hi, zeros, &pf,   \
                                    mode, g);                                             \
        }
        if (nv == 1) CF_NHWC_NV(1)
#if CF_LANES_NVMAX > 2
        else if (nv == 2) CF_NHWC_NV(2)
        else if (nv == 3) CF_NHWC_NV(3)
        else CF_NHWC_NV(4)
#else
        else CF_NHWC_NV(2)
#endif
#undef CF_NHWC_NV
    }
}

/* row[k] = src[k * stride] for k < nk, zeros up to width. */
CF_INLINE void FN(cf_pack_row)(CF_T *row, const CF_T *src, cf_idx stride, cf_idx nk,
                               cf_idx width) {
    for (cf_idx k = 0; k < nk; k++) row[k] = src[k * stride];
    for (cf_idx k = nk; k < width; k++) row[k] = 0;
}

/* 1 when none of p[0, n) is NaN or infinite: an exponent of all ones, tested
 * on the bits (an integer OR the compiler vectorizes; the float test
 * `bad += v - v` per value made a chain of dependent adds that held
 * 512x512x3x3 packing at 1.8 ms). */
CF_INLINE int FN(cf_all_finite)(const CF_T *p, cf_idx n) {
    const CF_T inf = (CF_T)__builtin_inf();
    CF_ITYPE expo, bad = 0;
    memcpy(&expo, &inf, sizeof expo);
    for (cf_idx i = 0; i < n; i++) {
        CF_ITYPE bits;
        memcpy(&bits, p + i, sizeof bits);
        bad |= (bits & expo) == expo;
    }
    return bad == 0;
}

/* Pack one group's weights [K][C][KD][KH][KW] (rows C*KVOL apart, group
 * offset applied by the caller) into output-channel blocks of CF_LANES_NVMAX
 * vectors: block b at dst + b*NVMAX*VW*C*KVOL holds the input channels in
 * chunks of cchunk, chunk [c0, c1) at c0*KVOL*w_b as [KVOL][c1 - c0][w_b]
 * (w_b = nv_b*VW: one contiguous run per chunk, which nhwc_forward reads
 * and prefetches), lanes past channel K zero. Returns 0 when a weight is
 * NaN or infinite, -1 when its tile buffer cannot be allocated. */
static int FN(nhwc_pack)(const void *w_, cf_idx K, cf_idx C, cf_idx KVOL, cf_idx cchunk,
                         void *dst_) {
    const CF_T *w = (const CF_T *)w_;
    CF_T *dst = (CF_T *)dst_;
    const cf_idx kb = CF_LANES_NVMAX * CF_VW;
    const cf_idx ctile = cf_max(1, cf_min(C, 256 / cf_max(KVOL, 1)));
    CF_T *buf = (CF_T *)malloc((size_t)(kb * ctile * KVOL) * sizeof(CF_T));
    int finite = 1;
    if (!buf) return -1;
    for (cf_idx k0 = 0; k0 < K; k0 += kb) {
        const cf_idx nk = cf_min(kb, K - k0), width = (nk + CF_VW - 1) / CF_VW * CF_VW;
        CF_T *d = dst + k0 * C * KVOL;
        /* a transpose, in tiles of channels: the tile's nk source rows
         * (ctile*KVOL values each, ~256) are first copied into one
         * contiguous buffer, which the destination rows, written in order,
         * gather from (gathering straight from rows C*KVOL apart touched a
         * page per row: 512x512x3x3 2.4 ms, the untiled walk 4.4) */
        for (cf_idx ct = 0; ct < C; ct += ctile) {
            const cf_idx ce = cf_min(C, ct + ctile), run = (ce - ct) * KVOL;
            for (cf_idx k = 0; k < nk; k++)
                memcpy(buf + k * run, w + ((k0 + k) * C + ct) * KVOL, (size_t)run * sizeof(CF_T));
            finite &= FN(cf_all_finite)(buf, nk * run);
            for (cf_idx c = ct; c < ce; c++)
                for (cf_idx t = 0; t < KVOL; t++) {
                    const cf_idx h0 = c / cchunk * cchunk, hn = cf_min(cchunk, C - h0);
                    CF_T *row = d + h0 * KVOL * width + (t * hn + c - h0) * width;
                    FN(cf_pack_row)(row, buf + (c - ct) * KVOL + t, run, nk, width);
                }
        }
    }
    free(buf);
    return finite;
}

/* The input gradient's weights, packed as nhwc_pack packs a convolution's
 * (the output-channel blocks [b0, b1) of them):
 * the sub-convolution of a stride phase has weights sub[o][i][t] =
 * w[i][o][taps[t]] (input and output channels swapped, the phase's taps in
 * its own order, flipped by the caller's choice of taps), w being one
 * group's (Kw, Cw, KVOL). Reading in blocks of output channels o, the block
 * of w rows [i][o0, o0 + block)[KVOL] stays in L1 for all taps: this took
 * 0.9 ms for 512x512x3x3 weights where NumPy's flip-and-transpose copy
 * before nhwc_pack took 19 ms. Returns 0 when a weight of the rows it
 * reads (all their taps, not only the phase's) is NaN or infinite. */
static int FN(nhwc_pack_flipped)(const void *w_, cf_idx Kw, cf_idx Cw, cf_idx KVOL,
                                 const cf_idx *taps, cf_idx ntaps, cf_idx cchunk, void *dst_,
                                 cf_idx b0, cf_idx b1) {
    const CF_T *w = (const CF_T *)w_;
    CF_T *dst = (CF_T *)dst_;
    const cf_idx kb = CF_LANES_NVMAX * CF_VW;
    int finite = 1;
    /* the sub-convolution: K' = Cw outputs (o), C' = Kw inputs (i); its
     * output-channel blocks [b0, b1) (callers split them over threads) */
    for (cf_idx o0 = b0 * kb; o0 < Cw && o0 < b1 * kb; o0 += kb) {
        const cf_idx nk = cf_min(kb, Cw - o0), width = (nk + CF_VW - 1) / CF_VW * CF_VW;
        CF_T *d = dst + o0 * Kw * ntaps;
        for (cf_idx i = 0; i < Kw; i++) {
            const cf_idx h0 = i / cchunk * cchunk, hn = cf_min(cchunk, Kw - h0);
            const CF_T *src = w + (i * Cw + o0) * KVOL;
            finite &= FN(cf_all_finite)(src, nk * KVOL);   /* all taps: a superset of the read */
            for (cf_idx t = 0; t < ntaps; t++) {
                CF_T *row = d + h0 * ntaps * width + (t * hn + i - h0) * width;
                FN(cf_pack_row)(row, src + taps[t], KVOL, nk, width);
            }
        }
    }
    return finite;
}
