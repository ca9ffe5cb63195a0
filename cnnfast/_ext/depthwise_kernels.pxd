# The depthwise kernel table (csrc/depthwise/conv_depthwise_kernels.h): one per ISA
# level and dtype, looked up with cf_depthwise_kernels_for(is_double). Data
# pointers are void * and hold elements of the table's dtype.

from .conv_geom cimport *

cdef extern from "conv_depthwise_kernels.h" nogil:
    ctypedef struct cf_depthwise_kernels:
        int isa
        cf_idx vector_width, tap_bytes
        void (*forward_planes)(const void *x, const void *w, const void *bias, void *out,
                               cf_idx r0, cf_idx r1, const cf_geom *g, const void *zero,
                               void *taps) noexcept nogil
        void (*backward_input_planes)(const void *go, const void *w, const void *bias,
                                      void *gx, cf_idx r0, cf_idx r1, cf_idx M,
                                      const cf_geom *g, void *taps) noexcept nogil
        void (*backward_weight_planes)(const void *x, cf_idx x_nstride, const void *go,
                                       cf_idx go_nstride, void *gw, cf_idx r0, cf_idx r1,
                                       const cf_geom *g, const void *zero,
                                       void *acc) noexcept nogil
        void (*forward_last)(const void *x, const void *wpk, const void *bpk, void *out,
                             cf_idx r, cf_idx c0, cf_idx c1, cf_idx M, const cf_geom *g,
                             const void *zero, void *work, const void *res, int clamp,
                             double lo, double hi) noexcept nogil
        void (*backward_input_last)(const void *go, const void *wpk, const void *bpk,
                                    void *gx, cf_idx r, cf_idx c0, cf_idx c1, cf_idx M,
                                    const cf_geom *g, void *work) noexcept nogil
        void (*backward_weight_last)(const void *x, const void *go, void *part, cf_idx r0,
                                     cf_idx r1, cf_idx M, const cf_geom *g, const void *zero,
                                     void *px) noexcept nogil
        void (*epilogue)(void *out, const void *res, cf_idx rows, cf_idx row_stride,
                         cf_idx len, int clamp, double lo, double hi) noexcept nogil

    const cf_depthwise_kernels *cf_depthwise_kernels_for(int is_double)
