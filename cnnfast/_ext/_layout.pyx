# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Layout copies between channels-first and channels-last arrays.

`swap_axes` copies a C-contiguous (N, A, B) array into a new (N, B, A) one:
(N, C, S) -> (N, S, C) turns a channels-first array with S spatial positions
into the channels-last one, (N, S, C) -> (N, C, S) back. A plain NumPy
transposing copy walks one side with a large stride for every element; this
copy goes in square blocks that stay in L1 on both sides
(csrc/layout/layout_swap.h), and the blocks are shared among the OpenMP threads
(each block is written by one thread: no races).
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memcpy

cdef extern from "layout_swap.h":
    int CF_SWAP_BLOCK
    void cf_swap_block_float(const float *src, float *dst, Py_ssize_t A, Py_ssize_t B,
                             Py_ssize_t a0, Py_ssize_t b0) noexcept nogil
    void cf_swap_block_double(const double *src, double *dst, Py_ssize_t A, Py_ssize_t B,
                              Py_ssize_t a0, Py_ssize_t b0) noexcept nogil
    void cf_swap_block_int64(const int64_t *src, int64_t *dst, Py_ssize_t A, Py_ssize_t B,
                             Py_ssize_t a0, Py_ssize_t b0) noexcept nogil

ctypedef fused item:
    float
    double
    int64_t


cdef inline void _block(const item *src, item *dst, Py_ssize_t i, Py_ssize_t A,
                        Py_ssize_t B, Py_ssize_t na, Py_ssize_t nb) noexcept nogil:
    """Block i of the whole copy: image i // (na*nb), then row and column block."""
    cdef Py_ssize_t n = i // (na * nb), a0 = i % (na * nb) // nb * CF_SWAP_BLOCK
    cdef Py_ssize_t b0 = i % nb * CF_SWAP_BLOCK
    if item is float:
        cf_swap_block_float(src + n * A * B, dst + n * A * B, A, B, a0, b0)
    elif item is double:
        cf_swap_block_double(src + n * A * B, dst + n * A * B, A, B, a0, b0)
    else:
        cf_swap_block_int64(src + n * A * B, dst + n * A * B, A, B, a0, b0)


def swap_axes(const item[:, :, ::1] src,   # IN  (N, A, B)
              item[:, :, ::1] dst,         # OUT (N, B, A)
              int nthreads):
    """dst[n, b, a] = src[n, a, b], block by block."""
    cdef Py_ssize_t N = src.shape[0], A = src.shape[1], B = src.shape[2]
    cdef Py_ssize_t na = (A + CF_SWAP_BLOCK - 1) // CF_SWAP_BLOCK
    cdef Py_ssize_t nb = (B + CF_SWAP_BLOCK - 1) // CF_SWAP_BLOCK, i
    if dst.shape[0] != N or dst.shape[1] != B or dst.shape[2] != A:
        raise ValueError("swap_axes: dst must have shape (N, B, A)")
    if N == 0 or A == 0 or B == 0:
        return
    cdef const item *s = &src[0, 0, 0]
    cdef item *d = &dst[0, 0, 0]
    with nogil:
        if nthreads > 1:
            for i in prange(N * na * nb, num_threads=nthreads, schedule='static'):
                _block(s, d, i, A, B, na, nb)
        else:
            for i in range(N * na * nb):
                _block(s, d, i, A, B, na, nb)


def copy_rows(const item[:, ::1] src,   # IN  (R, W)
              item[:, ::1] dst,         # OUT (R, D), D >= start + W
              Py_ssize_t start, int nthreads):
    """dst[r, start:start + W] = src[r, :]: one part of a concatenation along
    an inner axis (cnnfast._ops.data_format._concat), row by row."""
    cdef Py_ssize_t R = src.shape[0], W = src.shape[1], D = dst.shape[1], r
    if dst.shape[0] != R or start < 0 or start + W > D:
        raise ValueError("copy_rows: dst must have src's rows and room for its columns")
    if R == 0 or W == 0:
        return
    cdef const item *s = &src[0, 0]
    cdef item *d = &dst[0, 0] + start
    with nogil:
        if nthreads > 1 and R > 1:
            for r in prange(R, num_threads=nthreads, schedule='static'):
                memcpy(d + r * D, s + r * W, W * sizeof(item))
        else:
            for r in range(R):
                memcpy(d + r * D, s + r * W, W * sizeof(item))


def copy_pixels(const item[:, :, :, :, ::1] src,   # IN  (N, D, H, W, C)
                item[:, :, :, :, :] dst,          # OUT (N, D, H, W, C), any strides but C's
                int nthreads):
    """dst[...] = src for a dst whose pixels lie anywhere (a strided view:
    the positions phase + stride * q of an input gradient's stride phase)
    but whose C channels are contiguous: one copy of C elements per pixel,
    the rows (n, d, h) shared among the threads."""
    cdef Py_ssize_t N = src.shape[0], D = src.shape[1], H = src.shape[2]
    cdef Py_ssize_t W = src.shape[3], C = src.shape[4], r, i
    for i in range(5):
        if dst.shape[i] != src.shape[i]:
            raise ValueError("copy_pixels: dst must have src's shape")
    if C > 1 and dst.strides[4] != sizeof(item):
        raise ValueError("copy_pixels: dst's channels must be contiguous")
    if N * D * H * W * C == 0:
        return
    cdef const item *s = &src[0, 0, 0, 0, 0]
    cdef char *base = <char *> &dst[0, 0, 0, 0, 0]
    cdef Py_ssize_t s0 = dst.strides[0], s1 = dst.strides[1], s2 = dst.strides[2]
    cdef Py_ssize_t s3 = dst.strides[3]
    cdef Py_ssize_t rows = N * D * H
    with nogil:
        if nthreads > 1 and rows > 1:
            for r in prange(rows, num_threads=nthreads, schedule='static'):
                _pixel_row(s, base, r, D, H, W, C, s0, s1, s2, s3)
        else:
            for r in range(rows):
                _pixel_row(s, base, r, D, H, W, C, s0, s1, s2, s3)


cdef inline void _pixel_row(const item *src, char *dst, Py_ssize_t r, Py_ssize_t D,
                            Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t s0,
                            Py_ssize_t s1, Py_ssize_t s2, Py_ssize_t s3) noexcept nogil:
    # row r = (n * D + d) * H + h of src, its W pixels to their places in dst
    cdef Py_ssize_t h = r % H, d = r // H % D, n = r // (H * D), w
    cdef char *row = dst + n * s0 + d * s1 + h * s2
    cdef const item *p = src + r * W * C
    for w in range(W):
        memcpy(row + w * s3, p + w * C, C * sizeof(item))
