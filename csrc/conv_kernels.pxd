# C declarations of the convolution micro-kernels (csrc/conv_kernels_impl.h).

cdef extern from "conv_common.h" nogil:
    ctypedef Py_ssize_t cf_idx
    ctypedef struct cf_geom:
        cf_idx C, D, H, W
        cf_idx K, OD, OH, OW
        cf_idx KD, KH, KW
        cf_idx sd, sh, sw
        cf_idx pd, ph, pw
        cf_idx dd, dh, dw
    int CF_KB

    void direct_forward_row_f32(const float *x, const float *w, const float *bias, float *out,
                                cf_idx nb, cf_idx od, cf_idx oh, const cf_geom *g)
    void direct_forward_row_f64(const double *x, const double *w, const double *bias, double *out,
                                cf_idx nb, cf_idx od, cf_idx oh, const cf_geom *g)
    void direct_backward_weight_f32(const float *x, cf_idx x_nstride, const float *go,
                                    cf_idx go_nstride, cf_idx gow, cf_idx N, cf_idx nb,
                                    float *gw, const cf_geom *g)
    void direct_backward_weight_f64(const double *x, cf_idx x_nstride, const double *go,
                                    cf_idx go_nstride, cf_idx gow, cf_idx N, cf_idx nb,
                                    double *gw, const cf_geom *g)
    void pad_plane_f32(const float *src, cf_idx D, cf_idx H, cf_idx W, float *dst,
                       cf_idx Dp, cf_idx Hp, cf_idx Wp, cf_idx pd, cf_idx ph, cf_idx pw)
    void pad_plane_f64(const double *src, cf_idx D, cf_idx H, cf_idx W, double *dst,
                       cf_idx Dp, cf_idx Hp, cf_idx Wp, cf_idx pd, cf_idx ph, cf_idx pw)
    cf_idx direct_vector_width_f32()
    cf_idx direct_vector_width_f64()
    void vol2col_f32(const float *x, float *col, cf_idx p0, cf_idx cnt, const cf_geom *g)
    void vol2col_f64(const double *x, double *col, cf_idx p0, cf_idx cnt, const cf_geom *g)
    void col2vol_f32(const float *col, float *gx, cf_idx p0, cf_idx cnt, const cf_geom *g)
    void col2vol_f64(const double *col, double *gx, cf_idx p0, cf_idx cnt, const cf_geom *g)
    cf_idx gemm_tile_rows_f32(int level)
    cf_idx gemm_tile_rows_f64(int level)
    cf_idx gemm_tile_cols_f32(int level)
    cf_idx gemm_tile_cols_f64(int level)
    void gemm_pack_rows_f32(const float *src, cf_idx m, cf_idx depth, cf_idx row_stride,
                            cf_idx depth_stride, float *dst, int level)
    void gemm_pack_rows_f64(const double *src, cf_idx m, cf_idx depth, cf_idx row_stride,
                            cf_idx depth_stride, double *dst, int level)
    void gemm_pack_columns_f32(const float *x, const float *x_end, float *dst, cf_idx p0,
                               cf_idx cnt, cf_idx nr, cf_idx *runs, const cf_geom *g)
    void gemm_pack_columns_f64(const double *x, const double *x_end, double *dst, cf_idx p0,
                               cf_idx cnt, cf_idx nr, cf_idx *runs, const cf_geom *g)
    void gemm_packed_f32(const float *apk, const float *bpk, cf_idx m, cf_idx n, cf_idx depth,
                         float *c, cf_idx ldc, const float *bias, int accumulate, cf_idx kc,
                         int level)
    void gemm_packed_f64(const double *apk, const double *bpk, cf_idx m, cf_idx n,
                         cf_idx depth, double *c, cf_idx ldc, const double *bias,
                         int accumulate, cf_idx kc, int level)
    int cf_gemm_level()
    double channel_sum_f32(const float *a, cf_idx N, cf_idx nstride, cf_idx P)
    double channel_sum_f64(const double *a, cf_idx N, cf_idx nstride, cf_idx P)
    void direct_forward_cv_f32(const float *x, const float *w, const float *bias, float *out,
                               cf_idx q0, cf_idx q1, cf_idx nk, const cf_geom *g, int level)
    void direct_forward_cv_f64(const double *x, const double *w, const double *bias,
                               double *out, cf_idx q0, cf_idx q1, cf_idx nk, const cf_geom *g,
                               int level)
    int direct_cv_pack_f32(const float *w, const float *bias, cf_idx K, cf_idx R, float *dst,
                            float *bias_dst, int level)
    int direct_cv_pack_f64(const double *w, const double *bias, cf_idx K, cf_idx R,
                            double *dst, double *bias_dst, int level)
    cf_idx direct_cv_block_f32(int level)
    cf_idx direct_cv_block_f64(int level)
    cf_idx direct_cv_pixels_f32(int level, cf_idx nk)
    cf_idx direct_cv_pixels_f64(int level, cf_idx nk)
    void direct_forward_cv_batch_f32(const float *xt, cf_idx N, const float *w, const float *bias,
                                     float *out, cf_idx out_nstride, cf_idx p0, cf_idx p1,
                                     cf_idx nk, const cf_geom *g, int level)
    void direct_forward_cv_batch_f64(const double *xt, cf_idx N, const double *w,
                                     const double *bias, double *out, cf_idx out_nstride,
                                     cf_idx p0, cf_idx p1, cf_idx nk, const cf_geom *g,
                                     int level)
    void gemm_in_place_f32(const float *a, cf_idx rs, cf_idx ks, const float *bpk, cf_idx m,
                           cf_idx n, cf_idx depth, float *c, cf_idx ldc, const float *bias,
                           int accumulate, cf_idx kc, int level, float *work)
    void gemm_in_place_f64(const double *a, cf_idx rs, cf_idx ks, const double *bpk, cf_idx m,
                           cf_idx n, cf_idx depth, double *c, cf_idx ldc, const double *bias,
                           int accumulate, cf_idx kc, int level, double *work)
    double direct_cv_waste_f32(int level, cf_idx nk, cf_idx N, const cf_geom *g, int batch)
    double direct_cv_waste_f64(int level, cf_idx nk, cf_idx N, const cf_geom *g, int batch)
