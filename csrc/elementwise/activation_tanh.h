/* tanh, vectorised for float32.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (elementwise_kernels.h), with CF_T, CF_V, CF_M and FN() defined.
 *
 * Why here and not np.tanh: NumPy's SIMD tanh is AVX-512 only; elsewhere it
 * calls libm per element. On an AVX2 machine (AMD EPYC, one thread) LeNet-5's
 * first tanh, (256, 6, 28, 28), took 3.3 ms of the model's 12.7, while
 * onnxruntime applies it inside the convolution.
 *
 * float32, per element (|x| = a):
 *   a < 0.625: x * P(x^2), the first ten terms of tanh's Taylor series
 *     (2^2n (2^2n - 1) B_2n / (2n)!); the next term is below 1e-8 of the
 *     result there, and the product keeps -0.0;
 *   a >= 0.625: (1 - u) / (1 + u) with u = exp(-2a) <= 0.29 (no cancellation),
 *     exp by 2^n * exp(r), |r| <= ln2 / 2, degree-7 Taylor polynomial, and
 *     x's sign put back; a is capped at 9.1 (tanh rounds to 1 in float32 from
 *     9.01), so inf gives +-1.
 *   NaN stays NaN. Within 3 ulp of the correctly rounded tanh (tested).
 * float64: libm's tanh per element (NumPy's results, on the threads). */

#include <math.h>

#define CF_TANH_SMALL ((CF_T)0.625)

CF_INLINE CF_V FN(cf_tanh_vec)(CF_V x) {
    const CF_V one = FN(cf_splat)(1);
    const CF_M sign = (CF_M)x & (CF_M)FN(cf_splat)((CF_T)-0.0);
    const CF_V a = (CF_V)((CF_M)x & ~(CF_M)FN(cf_splat)((CF_T)-0.0));
    /* small: Horner in x^2 */
    const CF_V x2 = x * x;
    CF_V p = FN(cf_splat)((CF_T)-0.00023912911424355248);
    p = p * x2 + (CF_T)0.000590027440945586;
    p = p * x2 + (CF_T)-0.0014558343870513183;
    p = p * x2 + (CF_T)0.003592128036572481;
    p = p * x2 + (CF_T)-0.008863235529902197;
    p = p * x2 + (CF_T)0.021869488536155203;
    p = p * x2 + (CF_T)-0.05396825396825397;
    p = p * x2 + (CF_T)0.13333333333333333;
    p = p * x2 + (CF_T)-0.3333333333333333;
    p = p * x2 + one;
    const CF_V small = x * p;
    /* large: u = exp(-2a) = 2^n exp(r) */
    const CF_V capped = (CF_V)(((CF_M)(a < (CF_T)9.1) & (CF_M)a)
                               | (~(CF_M)(a < (CF_T)9.1) & (CF_M)FN(cf_splat)((CF_T)9.1)));
    const CF_V y = capped * (CF_T)-2;                       /* [-18.2, 0] (NaN: -18.2) */
    const CF_M n = __builtin_convertvector(y * (CF_T)1.4426950408889634 - (CF_T)0.5, CF_M);
    const CF_V nf = __builtin_convertvector(n, CF_V);        /* round(y / ln2), y <= 0 */
    const CF_V r = y - nf * (CF_T)0.693145751953125 - nf * (CF_T)1.4286068203094172e-06;
    CF_V e = FN(cf_splat)((CF_T)(1.0 / 5040));
    e = e * r + (CF_T)(1.0 / 720);
    e = e * r + (CF_T)(1.0 / 120);
    e = e * r + (CF_T)(1.0 / 24);
    e = e * r + (CF_T)(1.0 / 6);
    e = e * r + (CF_T)0.5;
    e = e * r + one;
    e = e * r + one;
    const CF_M scale_bits = (n + 127) << 23;                 /* 2^n, n in [-27, 0] */
    const CF_V u = e * (CF_V)scale_bits;
    const CF_V large = (CF_V)((CF_M)((one - u) / (one + u)) | sign);
    const CF_M is_small = (CF_M)(a < CF_TANH_SMALL), is_nan = (CF_M)(x != x);
    const CF_V t = (CF_V)((is_small & (CF_M)small) | (~is_small & (CF_M)large));
    return (CF_V)((is_nan & (CF_M)x) | (~is_nan & (CF_M)t));
}

static void FN(tanh_values)(const void *x_, void *y_, cf_idx n) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *y = (CF_T *)y_;
    if (sizeof(CF_T) != 4) {
        for (cf_idx i = 0; i < n; i++) y[i] = (CF_T)tanh((double)x[i]);
        return;
    }
    cf_idx i = 0;
    for (; i + CF_VW <= n; i += CF_VW) {
        CF_V v;
        memcpy(&v, x + i, sizeof v);
        v = FN(cf_tanh_vec)(v);
        memcpy(y + i, &v, sizeof v);
    }
    if (i < n) {
        const CF_V v = FN(cf_tanh_vec)(FN(cf_load_lanes)(x + i, n - i));
        FN(cf_store_lanes)(y + i, v, n - i);
    }
}

#undef CF_TANH_SMALL
