/* Winograd F(4x4, 3x3) transforms shared by the channels-first
 * (conv_winograd.h) and channels-last (conv_nhwc_winograd.h) kernels: the
 * 1-D transforms B^T, G and A^T on vectors, whose lanes are tiles in the one
 * and channels in the other. Interpolation points 0, +-sqrt(2),
 * +-sqrt(2)/2 and infinity (see conv_winograd.h). Included inside a family
 * (CF_T, FN() defined); the includer undefines CF_WINO_SQRT2 and
 * CF_WINO_HALF_SQRT2 at its end. */

#define CF_WINO_SQRT2 ((CF_T)1.41421356237309504880)
#define CF_WINO_HALF_SQRT2 ((CF_T)0.70710678118654752440)

/* B^T d for one 6-vector d (vectors of tiles): 6 outputs. */
CF_INLINE void FN(cf_wino_bt)(const CF_V *d, CF_V *o) {
    const CF_T s = CF_WINO_SQRT2, h = CF_WINO_HALF_SQRT2;
    const CF_V a12 = d[4] - d[2] * (CF_T)0.5, b12 = d[3] * s - d[1] * h;
    const CF_V a34 = d[4] - d[2] * (CF_T)2, b34 = d[3] * h - d[1] * s;
    o[0] = d[0] - d[2] * (CF_T)2.5 + d[4];
    o[1] = a12 + b12;
    o[2] = a12 - b12;
    o[3] = a34 + b34;
    o[4] = a34 - b34;
    o[5] = d[1] - d[3] * (CF_T)2.5 + d[5];
}

/* G g for one 3-vector g: 6 outputs. */
CF_INLINE void FN(cf_wino_g)(const CF_V *g, CF_V *o) {
    const CF_T s6 = CF_WINO_SQRT2 / 6, s3 = CF_WINO_SQRT2 / 3;
    const CF_V e12 = g[0] * ((CF_T)1 / 6) + g[2] * ((CF_T)1 / 3), d12 = g[1] * s6;
    const CF_V e34 = -(g[0] * ((CF_T)2 / 3) + g[2] * ((CF_T)1 / 3)), d34 = g[1] * s3;
    o[0] = g[0];
    o[1] = e12 + d12;
    o[2] = e12 - d12;
    o[3] = e34 - d34;
    o[4] = e34 + d34;
    o[5] = g[2];
}

/* A^T m for one 6-vector m: 4 outputs. */
CF_INLINE void FN(cf_wino_at)(const CF_V *m, CF_V *o) {
    const CF_T s = CF_WINO_SQRT2, h = CF_WINO_HALF_SQRT2;
    const CF_V p12 = m[1] + m[2], d12 = m[1] - m[2], p34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + p12 + p34;
    o[1] = d12 * s + d34 * h;
    o[2] = p12 * (CF_T)2 + p34 * (CF_T)0.5;
    o[3] = d12 * (2 * s) + d34 * (h * (CF_T)0.5) + m[5];
}

/* v - v is +0 for finite v and NaN otherwise: OR the bits of the lanes that
 * hold data into *bad. */
CF_INLINE void FN(cf_wino_note)(CF_V v, CF_M keep, CF_M *bad) {
    const CF_V z = v - v;
    CF_M bits;
    memcpy(&bits, &z, sizeof bits);
    *bad |= bits & keep;
}

CF_INLINE int FN(cf_wino_any)(CF_M bad) {
    CF_ITYPE any = 0;
    for (int j = 0; j < (int)CF_VW; j++) any |= bad[j];
    return any != 0;
}

