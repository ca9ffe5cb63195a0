# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# Channels-last 1x1 convolutions as pixel rows times the weights.

# ------------------------------------------- channels-last 1x1: pixel rows

cdef inline void _row_chunk(Py_ssize_t t, Py_ssize_t chunks, Py_ssize_t rows,
                            Py_ssize_t *r0, Py_ssize_t *r1) noexcept nogil:
    r0[0] = rows * t // chunks
    r1[0] = rows * (t + 1) // chunks


def pointwise_rows(const floating[:, ::1] x, const floating[:, ::1] w,
                   const floating[::1] bias, floating[:, ::1] out, bint trans_w,
                   int nthreads):
    """A channels-last 1x1 convolution (stride 1, no padding, one group) is
    one GEMM over pixel rows, with no copy of the input:
    out (P, M) = x (P, R) @ op(w) + bias, op(w) = w.T for w (M, R) (the
    forward, w the weights) or w for w (R, M) (the input gradient, w the
    weights as (K, C)). `bias` may be empty. Each thread owns a chunk of rows
    (one BLAS call each, BLAS itself held at one thread by the caller)."""
    cdef Py_ssize_t P = x.shape[0], R = x.shape[1], M = out.shape[1], t
    cdef Py_ssize_t chunks = max(1, min(<Py_ssize_t> nthreads, P // 64))
    cdef bint has_bias = bias.shape[0] > 0
    if P == 0 or R == 0 or M == 0:  # (validation allows no zero channel count)
        return
    cdef const floating *xp = &x[0, 0]
    cdef const floating *wp = &w[0, 0]
    cdef floating *op = &out[0, 0]
    cdef const floating *bp = &bias[0] if has_bias else NULL
    with nogil:
        if chunks > 1:
            for t in prange(chunks, num_threads=chunks, schedule='static'):
                _pointwise_chunk(t, chunks, xp, wp, bp, op, P, R, M, trans_w)
        else:
            _pointwise_chunk(0, 1, xp, wp, bp, op, P, R, M, trans_w)


cdef void _pointwise_chunk(Py_ssize_t t, Py_ssize_t chunks, const floating *x,
                           const floating *w, const floating *bias, floating *out,
                           Py_ssize_t P, Py_ssize_t R, Py_ssize_t M,
                           bint trans_w) noexcept nogil:
    cdef Py_ssize_t r0, r1, i, j
    _row_chunk(t, chunks, P, &r0, &r1)
    if r1 <= r0:
        return
    if bias != NULL:
        for i in range(r0, r1):
            for j in range(M):
                out[i * M + j] = bias[j]
    gemm_row_major(False, trans_w, r1 - r0, M, R, <floating> 1, x + r0 * R, R, w,
          R if trans_w else M, <floating> (1 if bias != NULL else 0), out + r0 * M, M)


# Rows per thread from which the weight gradient splits the pixel rows (its
# reduction) over the threads, each into its own partial sums, instead of
# the columns: MobileNetV2's 24 -> 144 expansion at batch 16, 56x56 (50176
# rows, 24 columns: too few to split) ran on one thread.
WEIGHT_SPLIT_ROWS = 1024


def pointwise_rows_weight(const floating[:, ::1] grad_out, const floating[:, ::1] x,
                          floating[:, ::1] grad_w, int nthreads):
    """grad_w (K, C) = grad_out (P, K).T @ x (P, C): the weight gradient of
    pointwise_rows' forward. With more rows than columns (and
    WEIGHT_SPLIT_ROWS per thread) each thread takes a chunk of the rows into
    its own (K, C) partial sums, added in thread order afterwards (the bits
    depend on the thread count only), and every row is read once; else the
    threads own chunks of the C columns (at least 16 each) and each reads
    all of grad_out."""
    cdef Py_ssize_t P = x.shape[0], C = x.shape[1], K = grad_out.shape[1]
    cdef Py_ssize_t t, i, chunks
    cdef bint by_rows = nthreads > 1 and C < P and P >= WEIGHT_SPLIT_ROWS * nthreads
    if C == 0 or K == 0:
        return
    if P == 0:
        grad_w[:, :] = 0
        return
    cdef const floating *gop = &grad_out[0, 0]
    cdef const floating *xp = &x[0, 0]
    cdef floating *gwp = &grad_w[0, 0]
    cdef floating[::1] parts
    cdef floating *pp
    if by_rows:
        chunks = nthreads
        parts = np.empty((chunks - 1) * K * C, dtype=np.asarray(grad_w).dtype)
        pp = &parts[0]
        with nogil:
            for t in prange(chunks, num_threads=chunks, schedule='static'):
                _pointwise_weight_rows(t, chunks, gop, xp, gwp if t == 0 else pp + (t - 1) * K * C,
                                       P, C, K)
            for i in prange(K, num_threads=chunks, schedule='static'):
                for t in range(1, chunks):
                    _add_row(gwp + i * C, pp + (t - 1) * K * C + i * C, C)
        return
    # the C columns split among threads, at least 16 each
    chunks = max(1, min(<Py_ssize_t> nthreads, C // 16))
    with nogil:
        if chunks > 1:
            for t in prange(chunks, num_threads=chunks, schedule='static'):
                _pointwise_weight_chunk(t, chunks, gop, xp, gwp, P, C, K)
        else:
            _pointwise_weight_chunk(0, 1, gop, xp, gwp, P, C, K)


cdef void _pointwise_weight_rows(Py_ssize_t t, Py_ssize_t chunks, const floating *go,
                                 const floating *x, floating *dst, Py_ssize_t P, Py_ssize_t C,
                                 Py_ssize_t K) noexcept nogil:
    # rows [r0, r1) of grad_out and x into dst (K, C): one partial sum
    cdef Py_ssize_t r0, r1
    _row_chunk(t, chunks, P, &r0, &r1)
    gemm_row_major(True, False, K, C, r1 - r0, <floating> 1, go + r0 * K, K, x + r0 * C, C,
                   <floating> 0, dst, C)


cdef inline void _add_row(floating *dst, const floating *src, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        dst[j] += src[j]


cdef void _pointwise_weight_chunk(Py_ssize_t t, Py_ssize_t chunks, const floating *go,
                                  const floating *x, floating *gw, Py_ssize_t P, Py_ssize_t C,
                                  Py_ssize_t K) noexcept nogil:
    cdef Py_ssize_t c0, c1
    _row_chunk(t, chunks, C, &c0, &c1)
    if c1 > c0:
        gemm_row_major(True, False, K, c1 - c0, P, <floating> 1, go, K, x + c0, C, <floating> 0,
              gw + c0, C)


def channel_sums_last(const floating[:, ::1] a, floating[::1] sums):
    """sums[k] = a[:, k] summed in double: the bias gradient of a
    channels-last grad_out viewed as (pixels, K). One pass over rows."""
    cdef Py_ssize_t P = a.shape[0], K = a.shape[1], i, k
    acc = np.zeros(K, dtype=np.float64)
    cdef double[::1] acc_v = acc
    with nogil:
        for i in range(P):
            for k in range(K):
                acc_v[k] += a[i, k]
        for k in range(K):
            sums[k] = <floating> acc_v[k]
