# The convolution kernel table (csrc/conv/conv_kernels.h): one per ISA level and
# dtype, looked up with cf_conv_kernels_for(is_double). Data pointers are
# void * and hold elements of the table's dtype.

from .conv_geom cimport *

cdef extern from "conv_kernels.h" nogil:
    ctypedef struct cf_conv_kernels:
        int isa
        cf_idx vector_width, gemm_mr, gemm_nr, lanes_block
        void (*pad_plane)(const void *src, cf_idx D, cf_idx H, cf_idx W, void *dst, cf_idx Dp,
                          cf_idx Hp, cf_idx Wp, cf_idx pd, cf_idx ph, cf_idx pw,
                          int mode) noexcept nogil
        void (*fold_plane)(const void *gpad, cf_idx Dp, cf_idx Hp, cf_idx Wp, void *gx,
                           cf_idx D, cf_idx H, cf_idx W, cf_idx pd, cf_idx ph, cf_idx pw,
                           int mode) noexcept nogil
        void (*direct_forward_row)(const void *x, const void *w, const void *bias, void *out,
                                   cf_idx nb, cf_idx od, cf_idx oh,
                                   const cf_geom *g) noexcept nogil
        void (*direct_forward_cv)(const void *x, const void *w, const void *bias, void *out,
                                  cf_idx q0, cf_idx q1, cf_idx nk,
                                  const cf_geom *g) noexcept nogil
        void (*direct_forward_cv_batch)(const void *xt, cf_idx N, const void *w,
                                        const void *bias, void *out, cf_idx out_nstride,
                                        cf_idx p0, cf_idx p1, cf_idx nk,
                                        const cf_geom *g) noexcept nogil
        double (*direct_cv_waste)(cf_idx nk, cf_idx N, const cf_geom *g,
                                  int batch) noexcept nogil
        int (*direct_cv_pack)(const void *w, const void *bias, cf_idx K, cf_idx R, void *dst,
                              void *bias_dst) noexcept nogil
        void (*direct_backward_weight)(const void *x, cf_idx x_nstride, const void *go,
                                       cf_idx go_nstride, cf_idx gow, cf_idx N, cf_idx nb,
                                       void *gw, const cf_geom *g) noexcept nogil
        double (*channel_sum)(const void *a, cf_idx N, cf_idx nstride,
                              cf_idx P) noexcept nogil
        void (*vol2col)(const void *x, void *col, cf_idx p0, cf_idx cnt,
                        const cf_geom *g) noexcept nogil
        void (*col2vol)(const void *col, void *gx, cf_idx p0, cf_idx cnt,
                        const cf_geom *g) noexcept nogil
        void (*gemm_pack_rows)(const void *src, cf_idx m, cf_idx depth, cf_idx row_stride,
                               cf_idx depth_stride, void *dst) noexcept nogil
        void (*gemm_pack_columns)(const void *x, const void *x_end, void *dst, cf_idx p0,
                                  cf_idx cnt, cf_idx *runs, const cf_geom *g) noexcept nogil
        void (*gemm_packed)(const void *apk, const void *bpk, cf_idx m, cf_idx n, cf_idx depth,
                            void *c, cf_idx ldc, const void *bias, int accumulate,
                            cf_idx kc) noexcept nogil
        void (*gemm_in_place)(const void *a, cf_idx rs, cf_idx ks, const void *bpk, cf_idx m,
                              cf_idx n, cf_idx depth, void *c, cf_idx ldc, const void *bias,
                              int accumulate, cf_idx kc, void *work) noexcept nogil
        void (*conv_epilogue)(void *out, const void *res, cf_idx rows, cf_idx row_stride,
                              cf_idx len, int clamp, double lo,
                              double hi) noexcept nogil
        int (*winograd_weights)(const void *w, cf_idx K, cf_idx C, cf_idx ka, cf_idx kb,
                                void *u) noexcept nogil
        int (*winograd_forward_block)(const void *xp, cf_idx x_nstride, const void *u,
                                      const void *bias, void *out, cf_idx out_nstride,
                                      cf_idx t0, cf_idx nt, cf_idx k0, cf_idx nk, void *v,
                                      void *m, void *work, cf_idx kc,
                                      const cf_geom *g) noexcept nogil

    const cf_conv_kernels *cf_conv_kernels_for(int is_double)
    int cf_isa_level()
