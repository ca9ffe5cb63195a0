# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Matrix products of the dense layers (nn.Linear) on cnnfast's own threads.

NumPy's `@` runs on NumPy's OpenBLAS thread pool, whose workers spin for tens
of milliseconds after each call; inside a model that pool and cnnfast's
OpenMP workers then fight for the same cores (LeNet-5 inference, batch 256,
2 threads: 16.0 ms with NumPy's matmul in the Linear layers, 5.9 ms with it
at one thread). Here the product is cut into one block of rows (or columns)
per thread and each block is one single-threaded BLAS call, so a model runs
on one pool. Blocks are fixed by the shape and thread count, so results are
bit-identical run to run.
"""
from cython cimport floating
from cython.parallel cimport prange

from ._blas cimport gemm_row_major

cdef enum:
    # Block boundaries on multiples of this many rows/columns (a cache line
    # of float32), so no two threads write the same line of the output.
    _ALIGN = 16


cdef void _add_bias(floating *out, const floating *bias, int rows, int cols,
                    Py_ssize_t ld) noexcept nogil:
    """out[i, j] += bias[j]: one rounding, as NumPy's `y += bias`."""
    cdef int i, j
    for i in range(rows):
        for j in range(cols):
            out[i * ld + j] += bias[j]


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
           bint trans_a, bint trans_b, int threads, const floating[::1] bias=None):
    """out = op(a) @ op(b) (+ bias, over out's rows), op(m) = m.T when
    trans_*; shapes already checked (op(a) is (M, K), op(b) is (K, N), out is
    (M, N), bias N values). Splits the larger of M and N into `threads`
    blocks; each block adds its bias while its output is in cache (and the
    dense layer is one driver call: cnnfast._replay records those)."""
    cdef int M = out.shape[0], N = out.shape[1]
    cdef int K = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = a.shape[1], ldb = b.shape[1]
    cdef bint by_rows = M >= N
    cdef int extent = M if by_rows else N
    cdef int block = ((extent + threads - 1) // threads + _ALIGN - 1) // _ALIGN * _ALIGN
    cdef int nblocks = (extent + block - 1) // block if extent > 0 else 0
    cdef int i, lo, cnt
    cdef const floating *ap = &a[0, 0] if a.shape[0] and a.shape[1] else NULL
    cdef const floating *bp = &b[0, 0] if b.shape[0] and b.shape[1] else NULL
    cdef floating *op = &out[0, 0] if M and N else NULL
    cdef const floating *biasp = &bias[0] if bias is not None and N else NULL
    if M == 0 or N == 0:
        return
    if K == 0:
        out[:, :] = 0
        if biasp != NULL:
            _add_bias(op, biasp, M, N, N)
        return
    with nogil:
        if nblocks <= 1:
            gemm_row_major(trans_a, trans_b, M, N, K, <floating> 1, ap, lda, bp, ldb,
                           <floating> 0, op, N)
            if biasp != NULL:
                _add_bias(op, biasp, M, N, N)
        else:
            for i in prange(nblocks, num_threads=nblocks, schedule='static'):
                lo = i * block
                cnt = min(block, extent - lo)
                if by_rows:
                    # rows lo.. of op(a) and of out
                    gemm_row_major(trans_a, trans_b, cnt, N, K, <floating> 1,
                                   ap + (lo if trans_a else <Py_ssize_t> lo * lda), lda,
                                   bp, ldb, <floating> 0, op + <Py_ssize_t> lo * N, N)
                    if biasp != NULL:
                        _add_bias(op + <Py_ssize_t> lo * N, biasp, cnt, N, N)
                else:
                    # columns lo.. of op(b) and of out
                    gemm_row_major(trans_a, trans_b, M, cnt, K, <floating> 1, ap, lda,
                                   bp + (<Py_ssize_t> lo * ldb if trans_b else lo), ldb,
                                   <floating> 0, op + lo, N)
                    if biasp != NULL:
                        _add_bias(op + lo, biasp + lo, M, cnt, N)
