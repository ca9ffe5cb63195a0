# Row-major GEMM on SciPy's Fortran BLAS, shared by the conv and dense drivers.
# BLAS runs at one thread inside cnnfast's kernels (cnnfast._threads.blas_pinned):
# the drivers split the work across their own threads themselves.
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


cdef inline void gemm_row_major(bint trans_a, bint trans_b, int m, int n, int k,
                                floating alpha, const floating *a, int lda,
                                const floating *b, int ldb,
                                floating beta, floating *c, int ldc) noexcept nogil:
    """Row-major C = alpha op(A) op(B) + beta C.

    The column-major view of a row-major matrix is its transpose, so the
    row-major product is computed as C^T = op(B)^T op(A)^T. One row of C
    (m == 1: a dense layer at batch 1) is a matrix-vector product: GEMM
    packs all of B for it (MobileNetV2's 1280 -> 1000 classifier: 0.77 ms,
    6.7 GB/s, against onnxruntime's 0.26), GEMV streams it once.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int incx = lda if trans_a else 1, one = 1
    if m == 1:
        # C^T (n x 1) = op(B)^T x, x = op(A) as a vector (A's column-major
        # view: elements lda apart when trans_a)
        if floating is float:
            if trans_b:
                sgemv(&tb, &k, &n, &alpha, <float *> b, &ldb, <float *> a, &incx, &beta, c,
                      &one)
            else:
                sgemv(&tb, &n, &k, &alpha, <float *> b, &ldb, <float *> a, &incx, &beta, c,
                      &one)
        else:
            if trans_b:
                dgemv(&tb, &k, &n, &alpha, <double *> b, &ldb, <double *> a, &incx, &beta,
                      c, &one)
            else:
                dgemv(&tb, &n, &k, &alpha, <double *> b, &ldb, <double *> a, &incx, &beta,
                      c, &one)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)
