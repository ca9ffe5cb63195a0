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
    void direct_backward_input_scatter_f32(const float *go, const float *w, float *gx,
                                           cf_idx nb, const cf_geom *g)
    void direct_backward_input_scatter_f64(const double *go, const double *w, double *gx,
                                           cf_idx nb, const cf_geom *g)
    void direct_backward_weight_f32(const float *x, cf_idx x_nstride, const float *go,
                                    cf_idx go_nstride, cf_idx N, cf_idx nb, float *gw,
                                    const cf_geom *g)
    void direct_backward_weight_f64(const double *x, cf_idx x_nstride, const double *go,
                                    cf_idx go_nstride, cf_idx N, cf_idx nb, double *gw,
                                    const cf_geom *g)
    void vol2col_f32(const float *x, float *col, cf_idx p0, cf_idx cnt, const cf_geom *g)
    void vol2col_f64(const double *x, double *col, cf_idx p0, cf_idx cnt, const cf_geom *g)
    void col2vol_f32(const float *col, float *gx, cf_idx p0, cf_idx cnt, const cf_geom *g)
    void col2vol_f64(const double *col, double *gx, cf_idx p0, cf_idx cnt, const cf_geom *g)
