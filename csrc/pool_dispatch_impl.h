/* The public pooling kernels of one dtype (CF_T, CF_SFX = f32/f64): each
 * calls the variant compiled for the running CPU's ISA level (cf_base.h). */

#define CF_VARIANT2(name, sfx, isa) name##_##sfx##_##isa
#define CF_VARIANT(name, sfx, isa) CF_VARIANT2(name, sfx, isa)
#if CF_ISA_VARIANTS
#define CF_CALL(name, args)                                                   \
    switch (cf_isa_level()) {                                                 \
    case 4: CF_VARIANT(name, CF_SFX, v4) args; return;                        \
    case 3: CF_VARIANT(name, CF_SFX, v3) args; return;                        \
    default: CF_VARIANT(name, CF_SFX, base) args; return;                     \
    }
#else
#define CF_CALL(name, args) CF_VARIANT(name, CF_SFX, base) args;
#endif

static void FN(pool_fill)(CF_T *buf, cf_idx n, CF_T value) {
    CF_CALL(pool_fill, (buf, n, value))
}

static void FN(pool_copy_interior)(const CF_T *x, CF_T *buf, const cf_pool_geom *g) {
    CF_CALL(pool_copy_interior, (x, buf, g))
}

static void FN(max_pool_plane_inplace)(const CF_T *x, CF_T *out, int64_t *idx,
                                       const int64_t *tap_offset, cf_idx lo, cf_idx hi,
                                       const cf_pool_geom *g) {
    CF_CALL(max_pool_plane_inplace, (x, out, idx, tap_offset, lo, hi, g))
}

static void FN(avg_pool_plane_inplace)(const CF_T *x, CF_T *out, const CF_T *dcount,
                                       const CF_T *hcount, const CF_T *wcount, cf_idx lo,
                                       cf_idx hi, const cf_pool_geom *g) {
    CF_CALL(avg_pool_plane_inplace, (x, out, dcount, hcount, wcount, lo, hi, g))
}

static cf_idx FN(pool_vector_width)(void) {
    return CF_VARIANT(pool_vector_width, CF_SFX, base)();
}

static void FN(max_pool_plane)(const CF_T *buf, CF_T *out, int64_t *idx,
                               const int64_t *tap_offset, const cf_pool_geom *g) {
    CF_CALL(max_pool_plane, (buf, out, idx, tap_offset, g))
}

static cf_idx FN(max_pool_backward_plane)(const CF_T *go, const int64_t *idx, cf_idx n_out,
                                          CF_T *gx, cf_idx plane) {
    return CF_VARIANT(max_pool_backward_plane, CF_SFX, base)(go, idx, n_out, gx, plane);
}

static void FN(avg_pool_plane)(const CF_T *buf, CF_T *out, const CF_T *dcount,
                               const CF_T *hcount, const CF_T *wcount, const cf_pool_geom *g) {
    CF_CALL(avg_pool_plane, (buf, out, dcount, hcount, wcount, g))
}

static void FN(avg_pool_backward_plane)(const CF_T *go, CF_T *gbuf, CF_T *spread, CF_T *gx,
                                        const CF_T *dcount, const CF_T *hcount,
                                        const CF_T *wcount, const cf_pool_geom *g) {
    CF_CALL(avg_pool_backward_plane, (go, gbuf, spread, gx, dcount, hcount, wcount, g))
}

static void FN(adaptive_avg_plane)(const CF_T *x, CF_T *out, cf_idx H, cf_idx W, cf_idx OH,
                                   cf_idx OW, const int64_t *hs, const int64_t *he,
                                   const int64_t *ws, const int64_t *we) {
    CF_CALL(adaptive_avg_plane, (x, out, H, W, OH, OW, hs, he, ws, we))
}

static void FN(adaptive_max_plane)(const CF_T *x, CF_T *out, int64_t *idx, cf_idx W,
                                   cf_idx OH, cf_idx OW, const int64_t *hs, const int64_t *he,
                                   const int64_t *ws, const int64_t *we) {
    CF_CALL(adaptive_max_plane, (x, out, idx, W, OH, OW, hs, he, ws, we))
}

static void FN(adaptive_avg_backward_plane)(const CF_T *go, CF_T *gx, cf_idx H, cf_idx W,
                                            cf_idx OH, cf_idx OW, const int64_t *hs,
                                            const int64_t *he, const int64_t *ws,
                                            const int64_t *we) {
    CF_CALL(adaptive_avg_backward_plane, (go, gx, H, W, OH, OW, hs, he, ws, we))
}

#undef CF_CALL
