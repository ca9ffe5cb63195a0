/* dtype-generic SIMD basics, included at the top of each instantiation of a
 * kernel family (conv_family.h, pool_family.h; CF_T, CF_SFX, CF_ITYPE
 * defined by cf_instantiate.h), undefined again by cf_family_end.h.
 *
 * Vectors are GCC vector extensions, one register wide on AVX-512 (64 bytes)
 * and AVX2 (32). Wider than the level's registers, GCC has no machine mode
 * for them and keeps every vector variable in memory: at 64 bytes the AVX2
 * kernels ran their accumulators through the stack, 1-7 GFLOP/s where sgemm
 * runs 130 (AMD EPYC, one thread; 3x3 256 -> 256 at 14x14 175 ms, 2.5x
 * slower than the SSE2 baseline). The baseline keeps 64 bytes (four xmm):
 * its Winograd output shuffles need 4 lanes of doubles. The drivers read
 * the width from the kernel tables. */

#ifndef CF_VECTOR_INTRINSICS
#define CF_VECTOR_INTRINSICS
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h> /* cf_clamp at level 4 (used inside target("arch=x86-64-v4")) */
#endif
#endif

#define CF_CAT2(a, b) a##_##b
#define CF_CAT(a, b) CF_CAT2(a, b)
#define FN(name) CF_CAT(name, CF_SFX)
#define CF_V FN(cf_vec)
#define CF_M FN(cf_mask)
#define CF_VW ((cf_idx)(sizeof(CF_V) / sizeof(CF_T)))

#if CF_LEVEL >= 4
#define CF_VBYTES 64
#elif CF_LEVEL >= 3
#define CF_VBYTES 32
#else
#define CF_VBYTES 64
#endif
typedef CF_T CF_V __attribute__((vector_size(CF_VBYTES)));
typedef CF_ITYPE CF_M __attribute__((vector_size(CF_VBYTES)));

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

/* Lanes [0, cnt) of v to p, 0 < cnt <= VW: one constant-size copy per
 * count (a store or two), where a memcpy of cnt elements was a library
 * call per vector (a 1x1 convolution to 24 channels stores half a vector
 * per pixel: MobileNetV2's 96 -> 24 at 56x56 ran at half the rate of its
 * 96-channel layers). The count is the same for every call of a layer, so
 * the switch's branch is predicted. */
#define CF_LANE_CASES(X)                                                               \
    X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
CF_INLINE void FN(cf_store_lanes)(CF_T *p, CF_V v, cf_idx cnt) {
    switch (cnt) {
#define CF_STORE_CASE(n)                                                               \
    case n:                                                                            \
        memcpy(p, &v, (n < CF_VW ? n : CF_VW) * sizeof(CF_T));                         \
        return;
        CF_LANE_CASES(CF_STORE_CASE)
#undef CF_STORE_CASE
    default:
        memcpy(p, &v, sizeof v);
    }
}

/* Lanes [0, cnt) of v from p, the rest 0 (0 < cnt <= VW), as cf_store_lanes. */
CF_INLINE CF_V FN(cf_load_lanes)(const CF_T *p, cf_idx cnt) {
    CF_V v = FN(cf_splat)(0);
    switch (cnt) {
#define CF_LOAD_CASE(n)                                                                \
    case n:                                                                            \
        memcpy(&v, p, (n < CF_VW ? n : CF_VW) * sizeof(CF_T));                         \
        return v;
        CF_LANE_CASES(CF_LOAD_CASE)
#undef CF_LOAD_CASE
    default:
        memcpy(&v, p, sizeof v);
        return v;
    }
}
#undef CF_LANE_CASES

/* a < lo ? lo : a > hi ? hi : a per lane, NaN kept (lo <= hi): a fused
 * layer's ReLU / ReLU6 / Hardtanh. At level 4 one max and one min with the
 * value as the second operand (MAXPS/MINPS return it when a lane is NaN,
 * and keep -0.0 against a bound of 0.0 as the compares do); elsewhere two
 * compares and selects (GCC made the level-4 form of those 2 compares and
 * 2 blends per vector, a quarter of the tile's work on 16-channel 1x1s). */
CF_INLINE CF_V FN(cf_clamp)(CF_V a, CF_V lo, CF_V hi) {
#if CF_LEVEL >= 4 && defined(__x86_64__) && defined(__GNUC__)
    if (sizeof(CF_T) == 4)
        return (CF_V)_mm512_min_ps((__m512)hi, _mm512_max_ps((__m512)lo, (__m512)a));
    return (CF_V)_mm512_min_pd((__m512d)hi, _mm512_max_pd((__m512d)lo, (__m512d)a));
#else
    const CF_M below = (CF_M)(a < lo), above = (CF_M)(a > hi);
    return (CF_V)(((CF_M)a & ~(below | above)) | ((CF_M)lo & below) | ((CF_M)hi & above));
#endif
}

CF_INLINE CF_T FN(cf_hsum)(CF_V v) {
    CF_T s = 0;
    for (int j = 0; j < (int)CF_VW; j++) s += v[j]; /* fixed order: deterministic */
    return s;
}

