# C declarations of the pooling kernels (csrc/pool_kernels_impl.h).
from libc.stdint cimport int64_t

cdef extern from "pool_common.h" nogil:
    ctypedef Py_ssize_t cf_idx
    ctypedef struct cf_pool_geom:
        cf_idx D, H, W
        cf_idx OD, OH, OW
        cf_idx KD, KH, KW
        cf_idx sd, sh, sw
        cf_idx pd, ph, pw
        cf_idx dd, dh, dw
        cf_idx Dp, Hp, Wp

    void pool_fill_f32(float *buf, cf_idx n, float value)
    void pool_fill_f64(double *buf, cf_idx n, double value)
    void pool_copy_interior_f32(const float *x, float *buf, const cf_pool_geom *g)
    void pool_copy_interior_f64(const double *x, double *buf, const cf_pool_geom *g)
    void max_pool_plane_inplace_f32(const float *x, float *out, int64_t *idx,
                                    const int64_t *tap_offset, cf_idx lo, cf_idx hi,
                                    const cf_pool_geom *g)
    void max_pool_plane_inplace_f64(const double *x, double *out, int64_t *idx,
                                    const int64_t *tap_offset, cf_idx lo, cf_idx hi,
                                    const cf_pool_geom *g)
    void avg_pool_plane_inplace_f32(const float *x, float *out, const float *dcount,
                                    const float *hcount, const float *wcount, cf_idx lo,
                                    cf_idx hi, const cf_pool_geom *g)
    void avg_pool_plane_inplace_f64(const double *x, double *out, const double *dcount,
                                    const double *hcount, const double *wcount, cf_idx lo,
                                    cf_idx hi, const cf_pool_geom *g)
    cf_idx pool_vector_width_f32()
    cf_idx pool_vector_width_f64()

    void max_pool_plane_f32(const float *buf, float *out, int64_t *idx,
                            const int64_t *tap_offset, const cf_pool_geom *g)
    void max_pool_plane_f64(const double *buf, double *out, int64_t *idx,
                            const int64_t *tap_offset, const cf_pool_geom *g)
    cf_idx max_pool_backward_plane_f32(const float *go, const int64_t *idx, cf_idx n_out,
                                     float *gx, cf_idx plane)
    cf_idx max_pool_backward_plane_f64(const double *go, const int64_t *idx, cf_idx n_out,
                                     double *gx, cf_idx plane)
    void avg_pool_plane_f32(const float *buf, float *out, const float *dcount,
                            const float *hcount, const float *wcount, const cf_pool_geom *g)
    void avg_pool_plane_f64(const double *buf, double *out, const double *dcount,
                            const double *hcount, const double *wcount, const cf_pool_geom *g)
    void avg_pool_backward_plane_f32(const float *go, float *gbuf, float *spread, float *gx,
                                     const float *dcount, const float *hcount,
                                     const float *wcount, const cf_pool_geom *g)
    void avg_pool_backward_plane_f64(const double *go, double *gbuf, double *spread, double *gx,
                                     const double *dcount, const double *hcount,
                                     const double *wcount, const cf_pool_geom *g)

    void adaptive_avg_plane_f32(const float *x, float *out, cf_idx H, cf_idx W, cf_idx OH,
                                cf_idx OW, const int64_t *hs, const int64_t *he,
                                const int64_t *ws, const int64_t *we)
    void adaptive_avg_plane_f64(const double *x, double *out, cf_idx H, cf_idx W, cf_idx OH,
                                cf_idx OW, const int64_t *hs, const int64_t *he,
                                const int64_t *ws, const int64_t *we)
    void adaptive_max_plane_f32(const float *x, float *out, int64_t *idx, cf_idx W, cf_idx OH,
                                cf_idx OW, const int64_t *hs, const int64_t *he,
                                const int64_t *ws, const int64_t *we)
    void adaptive_max_plane_f64(const double *x, double *out, int64_t *idx, cf_idx W, cf_idx OH,
                                cf_idx OW, const int64_t *hs, const int64_t *he,
                                const int64_t *ws, const int64_t *we)
    void adaptive_avg_backward_plane_f32(const float *go, float *gx, cf_idx H, cf_idx W,
                                         cf_idx OH, cf_idx OW, const int64_t *hs,
                                         const int64_t *he, const int64_t *ws,
                                         const int64_t *we)
    void adaptive_avg_backward_plane_f64(const double *go, double *gx, cf_idx H, cf_idx W,
                                         cf_idx OH, cf_idx OW, const int64_t *hs,
                                         const int64_t *he, const int64_t *ws,
                                         const int64_t *we)
