# The pooling kernel table (csrc/pool/pool_kernels.h): one per ISA level and
# dtype, looked up with cf_pool_kernels_for(is_double). Data pointers are
# void * and hold elements of the table's dtype.
from libc.stdint cimport int64_t

cdef extern from "pool_kernels.h" nogil:
    ctypedef Py_ssize_t cf_idx
    ctypedef struct cf_pool_geom:
        cf_idx D, H, W
        cf_idx OD, OH, OW
        cf_idx KD, KH, KW
        cf_idx sd, sh, sw
        cf_idx pd, ph, pw
        cf_idx dd, dh, dw
        cf_idx Dp, Hp, Wp

    ctypedef struct cf_pool_kernels:
        int isa
        cf_idx vector_width
        void (*pool_copy_interior)(const void *x, void *buf,
                                   const cf_pool_geom *g) noexcept nogil
        void (*max_pool_plane)(const void *buf, void *out, int64_t *idx,
                               const int64_t *tap_offset, const cf_pool_geom *g) noexcept nogil
        cf_idx (*max_pool_backward_plane)(const void *go, const int64_t *idx, cf_idx n_out,
                                          void *gx, cf_idx plane) noexcept nogil
        void (*max_pool_plane_inplace)(const void *x, void *out, int64_t *idx,
                                       const int64_t *tap_offset, cf_idx lo, cf_idx hi,
                                       const cf_pool_geom *g) noexcept nogil
        void (*avg_pool_plane_inplace)(const void *x, void *out, const void *dcount,
                                       const void *hcount, const void *wcount, cf_idx lo,
                                       cf_idx hi, const cf_pool_geom *g) noexcept nogil
        void (*avg_pool_plane)(const void *buf, void *out, const void *dcount,
                               const void *hcount, const void *wcount,
                               const cf_pool_geom *g) noexcept nogil
        void (*avg_pool_plane_narrow)(const void *x, void *out, const void *dcount,
                                      const void *hcount, const void *wcount,
                                      const cf_pool_geom *g) noexcept nogil
        void (*avg_pool_backward_plane)(const void *go, void *gbuf, void *spread, void *gx,
                                        const void *dcount, const void *hcount,
                                        const void *wcount,
                                        const cf_pool_geom *g) noexcept nogil
        void (*adaptive_avg_plane)(const void *x, void *out, cf_idx D, cf_idx H, cf_idx W,
                                   cf_idx OD, cf_idx OH, cf_idx OW, const int64_t *ds,
                                   const int64_t *de, const int64_t *hs, const int64_t *he,
                                   const int64_t *ws, const int64_t *we) noexcept nogil
        void (*global_avg_planes)(const void *x, void *out, cf_idx p0, cf_idx p1,
                                  cf_idx n) noexcept nogil
        void (*adaptive_max_plane)(const void *x, void *out, int64_t *idx, cf_idx H, cf_idx W,
                                   cf_idx OD, cf_idx OH, cf_idx OW, const int64_t *ds,
                                   const int64_t *de, const int64_t *hs, const int64_t *he,
                                   const int64_t *ws, const int64_t *we) noexcept nogil
        void (*adaptive_avg_backward_plane)(const void *go, void *gx, cf_idx D, cf_idx H,
                                            cf_idx W, cf_idx OD, cf_idx OH, cf_idx OW,
                                            const int64_t *ds, const int64_t *de,
                                            const int64_t *hs, const int64_t *he,
                                            const int64_t *ws, const int64_t *we) noexcept nogil

    const cf_pool_kernels *cf_pool_kernels_for(int is_double)
