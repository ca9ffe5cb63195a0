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
