/* Convolution bias gradient: channel sums over batch and positions, in double.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */
/* Sum of one channel's planes over the batch, in double: a[n*nstride + p] for
 * n < N, p < P. Two vectors of doubles per vector of CF_T, lanes summed in a
 * fixed order at the end (deterministic). */
static double FN(channel_sum)(const void *a_, cf_idx N, cf_idx nstride, cf_idx P) {
    const CF_T *a = (const CF_T *)a_;
    typedef double dvec __attribute__((vector_size(8 * CF_VW)));
    dvec acc = {0};
    double rest = 0;
    const cf_idx full = P / CF_VW * CF_VW;
    for (cf_idx n = 0; n < N; n++) {
        const CF_T *row = a + n * nstride;
        for (cf_idx p = 0; p < full; p += CF_VW) {
            CF_V v;
            memcpy(&v, row + p, sizeof v);
            acc += __builtin_convertvector(v, dvec);
        }
        for (cf_idx p = full; p < P; p++) rest += row[p];
    }
    double s = 0;
    for (int j = 0; j < (int)CF_VW; j++) s += acc[j];
    return s + rest;
}

