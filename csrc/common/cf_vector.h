/* dtype-generic SIMD basics, included at the top of each instantiation of a
 * kernel family (conv_family.h, pool_family.h; CF_T, CF_SFX, CF_ITYPE
 * defined by cf_instantiate.h), undefined again by cf_family_end.h.
 *
 * Vectors are GCC vector extensions of 64 bytes: one AVX-512 register, two
 * AVX2 registers or four SSE registers, whichever ISA level is compiled. */

#define CF_CAT2(a, b) a##_##b
#define CF_CAT(a, b) CF_CAT2(a, b)
#define FN(name) CF_CAT(name, CF_SFX)
#define CF_V FN(cf_vec)
#define CF_M FN(cf_mask)
#define CF_VW ((cf_idx)(sizeof(CF_V) / sizeof(CF_T)))

typedef CF_T CF_V __attribute__((vector_size(64)));
typedef CF_ITYPE CF_M __attribute__((vector_size(64)));

/* Every lane a, as ones * a: GCC folds the product into one broadcast.
 * Not `zero + a`, a real add that GCC keeps (it maps -0.0 to +0.0: an
 * extra uop per use in inner loops), nor a lane-by-lane fill, which GCC
 * turned into sixteen masked broadcasts wherever it was inlined. */
CF_INLINE CF_V FN(cf_splat)(CF_T a) {
    CF_V one;
    for (int j = 0; j < (int)CF_VW; j++) one[j] = 1;
    return one * a;
}

/* Lanes j hold row[j*s]. Callers read only from padded buffers wide enough
 * for every full-width load, so there are no bounds checks here; for s == 2 the two loads cover 2*VW elements. */
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
        /* gather through a scalar array: indexing a vector lane by a variable
         * would force the caller's accumulators out of registers */
        CF_T lanes[CF_VW];
        for (cf_idx j = 0; j < CF_VW; j++) lanes[j] = row[j * s];
        memcpy(&v, lanes, sizeof v);
    }
    return v;
}

/* Bit mask keeping lanes j < cnt: v & mask gives exact zeros elsewhere, even
 * where v holds Inf or NaN (multiplying by 0 would not). */
CF_INLINE CF_M FN(cf_lane_mask)(cf_idx cnt) {
    CF_ITYPE bits[CF_VW];
    CF_M keep;
    for (int j = 0; j < (int)CF_VW; j++) bits[j] = j < cnt ? (CF_ITYPE)-1 : 0;
    memcpy(&keep, bits, sizeof keep);
    return keep;
}

CF_INLINE CF_T FN(cf_hsum)(CF_V v) {
    CF_T s = 0;
    for (int j = 0; j < (int)CF_VW; j++) s += v[j]; /* fixed order: deterministic */
    return s;
}

