# The elementwise kernel table (csrc/elementwise/elementwise_kernels.h): one per ISA
# level and dtype, looked up with cf_elementwise_kernels_for(is_double). Data
# pointers are void * and hold elements of the table's dtype.

cdef extern from "elementwise_kernels.h" nogil:
    ctypedef Py_ssize_t cf_idx

    ctypedef struct cf_elementwise_kernels:
        int isa
        cf_idx vector_width
        void (*bn_channel_stats)(const void *x, cf_idx N, cf_idx nstride, cf_idx S,
                                 double *mean, double *var) noexcept nogil
        void (*channel_affine)(const void *x, void *y, cf_idx S, double scale,
                               double shift) noexcept nogil
        void (*bn_channel_grad_sums)(const void *go, const void *relu_y, const void *x,
                                     cf_idx N, cf_idx nstride, cf_idx S, double mean,
                                     double *sum_go, double *sum_gox) noexcept nogil
        void (*bn_grad_input_plane)(const void *go, const void *relu_y, const void *x,
                                    void *gx, cf_idx S, double a, double b, double c,
                                    double mean) noexcept nogil
        void (*clamp)(const void *x, void *y, cf_idx n, double lo, double hi) noexcept nogil
        void (*clamp_backward)(const void *go, const void *x, void *gx, cf_idx n, double lo,
                               double hi) noexcept nogil
        void (*relu_backward)(const void *go, const void *y, void *gx, cf_idx n) noexcept nogil
        void (*add_relu)(const void *a, const void *b, void *y, cf_idx n) noexcept nogil
        void (*tanh_values)(const void *x, void *y, cf_idx n) noexcept nogil
        void (*sgd_update)(void *p, const void *g, void *buf, cf_idx n, double lr,
                           double momentum, double dampening, double weight_decay,
                           int nesterov, int first) noexcept nogil
        void (*adam_update)(void *p, const void *g, void *m, void *v, cf_idx n,
                            double beta1, double beta2, double eps, double weight_decay,
                            double step_size, double bc2_sqrt) noexcept nogil
        void (*bnl_stats_rows)(const void *x, cf_idx rows, cf_idx C, const double *shift,
                               double *s1, double *s2) noexcept nogil
        void (*bnl_affine_rows)(const void *x, void *y, cf_idx rows, cf_idx C,
                                const void *scale, const void *shift) noexcept nogil
        void (*bnl_grad_sums_rows)(const void *go, const void *relu_y, const void *x,
                                   cf_idx rows, cf_idx C, const double *mean, double *s1,
                                   double *s2) noexcept nogil
        void (*bnl_grad_input_rows)(const void *go, const void *relu_y, const void *x,
                                    void *gx, cf_idx rows, cf_idx C,
                                    const void *coef) noexcept nogil

    const cf_elementwise_kernels *cf_elementwise_kernels_for(int is_double)
