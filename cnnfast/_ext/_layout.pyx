# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Layout copies between channels-first and channels-last arrays.

`swap_axes` copies (N, A, B) into a new (N, B, A) array: (N, C, S) ->
(N, S, C) turns a channels-first array with S spatial positions into the
channels-last one, (N, S, C) -> (N, C, S) back. A plain NumPy transposing
copy walks one side with a large stride for every element; this copy goes
in square blocks that stay in L1 on both sides, and the blocks are shared
among the OpenMP threads (each block is written by one thread: no races).
The source may have any strides (a Fortran-ordered or sliced array needs no
copy first).
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t

ctypedef fused item:
    float
    double
    int64_t

cdef enum:
    BLOCK = 32  # 32 x 32 doubles: 8 KiB per side


cdef void _copy_block(const item[:, :, :] src, item[:, :, ::1] dst, Py_ssize_t n,
                      Py_ssize_t a0, Py_ssize_t b0) noexcept nogil:
    cdef Py_ssize_t a1 = min(a0 + BLOCK, src.shape[1]), b1 = min(b0 + BLOCK, src.shape[2])
    cdef Py_ssize_t a, b
    for b in range(b0, b1):
        for a in range(a0, a1):
            dst[n, b, a] = src[n, a, b]


def swap_axes(const item[:, :, :] src,   # IN  (N, A, B), any strides
              item[:, :, ::1] dst,       # OUT (N, B, A)
              int nthreads):
    """dst[n, b, a] = src[n, a, b], block by block."""
    cdef Py_ssize_t N = src.shape[0], A = src.shape[1], B = src.shape[2]
    cdef Py_ssize_t na = (A + BLOCK - 1) // BLOCK, nb = (B + BLOCK - 1) // BLOCK
    cdef Py_ssize_t blocks = na * nb, i
    if dst.shape[0] != N or dst.shape[1] != B or dst.shape[2] != A:
        raise ValueError("swap_axes: dst must have shape (N, B, A)")
    with nogil:
        if nthreads > 1:
            for i in prange(N * blocks, num_threads=nthreads, schedule='static'):
                _copy_block(src, dst, i // blocks, i % blocks // nb * BLOCK,
                            i % nb * BLOCK)
        else:
            for i in range(N * blocks):
                _copy_block(src, dst, i // blocks, i % blocks // nb * BLOCK,
                            i % nb * BLOCK)
