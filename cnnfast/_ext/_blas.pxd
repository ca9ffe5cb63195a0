# Row-major GEMM on SciPy's Fortran BLAS, shared by the conv and dense drivers.
# BLAS runs at one thread inside cnnfast's kernels (cnnfast._threads.blas_pinned):
# the drivers split the work across their own threads themselves.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm_row_major(bint trans_a, bint trans_b, int m, int n, int k,
                                floating alpha, const floating *a, int lda,
                                const floating *b, int ldb,
                                floating beta, floating *c, int ldc) noexcept nogil:
    """Row-major C = alpha op(A) op(B) + beta C.

    The column-major view of a row-major matrix is its transpose, so the
    row-major product is computed as C^T = op(B)^T op(A)^T.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)
