# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise kernels: batch normalisation (statistics, affine map, the
training-mode gradient), the clamping activations (ReLU, ReLU6, Hardtanh:
forward, backward, ReLU's fused residual add) and SGD's parameter update.

Arrays arrive C-contiguous and native-endian, validated and allocated by
cnnfast.functional; batch-norm arrays as (N, C, S). Owner computes: a
channel's reductions belong to one thread (prange over channels), the
per-plane maps to one thread per (n, c) plane, the activations to one thread
per span of SPAN elements; the sums run in a fixed order, so results do not
depend on the thread count. With one thread no OpenMP region is entered.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

from .elementwise_kernels cimport *

# elements per parallel item of the activations (a few pages: enough work to
# outweigh scheduling, small enough to balance two threads on small tensors)
cdef Py_ssize_t SPAN = 1 << 15


cdef inline const cf_elementwise_kernels *_kernels(floating dummy) noexcept nogil:
    """The kernel table of this dtype for the running CPU (csrc/common/cf_isa.h)."""
    if floating is float:
        return cf_elementwise_kernels_for(0)
    else:
        return cf_elementwise_kernels_for(1)


# ------------------------------------------------------------- batch norm

cdef inline void _bn_channel(Py_ssize_t c, const floating *x, const floating *go,
                            const floating *ry, const double *mean, Py_ssize_t N, Py_ssize_t C,
                            Py_ssize_t S, double *out1, double *out2) noexcept nogil:
    """Channel c's reductions: the statistics (go NULL: mean, var) or the
    gradient's sums (sum of go, of go * (x - mean); go masked by the
    following ReLU's output ry unless NULL)."""
    if go == NULL:
        _kernels(<floating> 0).bn_channel_stats(x + c * S, N, C * S, S, &out1[c], &out2[c])
    else:
        _kernels(<floating> 0).bn_channel_grad_sums(go + c * S, ry + c * S if ry else NULL,
                                                    x + c * S, N, C * S, S, mean[c], &out1[c],
                                                    &out2[c])


cdef void _bn_channels(const floating[:, :, ::1] x, const floating *go, const floating *ry,
                       const double *mean, double[::1] out1, double[::1] out2, double empty1,
                       double empty2, int nthreads):
    """_bn_channel over every channel, one thread per channel; an empty
    batch gives (empty1, empty2) per channel."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    if N * C * S == 0:
        for c in range(C):
            out1[c] = empty1
            out2[c] = empty2
        return
    cdef const floating *xp = &x[0, 0, 0]
    with nogil:
        if nthreads > 1:
            for c in prange(C, num_threads=nthreads, schedule='guided'):
                _bn_channel(c, xp, go, ry, mean, N, C, S, &out1[0], &out2[0])
        else:
            for c in range(C):
                _bn_channel(c, xp, go, ry, mean, N, C, S, &out1[0], &out2[0])


def batch_norm_stats(const floating[:, :, ::1] x,    # IN  (N, C, S)
                     double[::1] mean,                 # OUT (C,)
                     double[::1] var,                  # OUT (C,) biased variance
                     int nthreads):
    _bn_channels(x, <const floating *> NULL, NULL, NULL, mean, var, 0.0, 1.0, nthreads)


def channel_affine(const floating[:, :, ::1] x,      # IN  (N, C, S)
                   const double[::1] scale,            # IN  (C,)
                   const double[::1] shift,            # IN  (C,)
                   floating[:, :, ::1] y,              # OUT (N, C, S)
                   int nthreads):
    """y[n, c] = x[n, c] * scale[c] + shift[c]."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], i
    if N * C * S == 0:
        return
    cdef const floating *xp = &x[0, 0, 0]
    cdef floating *yp = &y[0, 0, 0]
    with nogil:
        if nthreads > 1:
            for i in prange(N * C, num_threads=nthreads, schedule='guided'):
                _kernels(<floating> 0).channel_affine(xp + i * S, yp + i * S, S, scale[i % C],
                                                      shift[i % C])
        else:
            for i in range(N * C):
                _kernels(<floating> 0).channel_affine(xp + i * S, yp + i * S, S, scale[i % C],
                                                      shift[i % C])


def batch_norm_eval(const floating[:, :, ::1] x,     # IN  (N, C, S)
                    const floating[:] mean,             # IN  (C,) running mean
                    const floating[:] var,              # IN  (C,) running variance
                    const floating[:] weight,           # IN  (C,), or None (ones)
                    const floating[:] bias,             # IN  (C,), or None (zeros)
                    double eps,
                    floating[:, :, ::1] y,              # OUT (N, C, S)
                    int nthreads):
    """Inference batch norm: channel_affine with scale = invstd * weight and
    shift = -mean * scale + bias, invstd = 1 / sqrt(var + eps), each in
    float64 in that order (NumPy's, which computed them before: its ten
    small operations cost a tiny batch norm 2.7 us)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c, i
    if (mean.shape[0] != C or var.shape[0] != C or (weight is not None and weight.shape[0] != C)
            or (bias is not None and bias.shape[0] != C)):
        raise ValueError(f"batch_norm_eval: statistics of another channel count than x's {C}")
    cdef double *scale = <double *> malloc(2 * max(C, 1) * sizeof(double))
    if scale == NULL:
        raise MemoryError()
    cdef double *shift = scale + C
    cdef const floating *xp
    cdef floating *yp
    try:
        for c in range(C):
            scale[c] = 1.0 / sqrt(<double> var[c] + eps)
            if weight is not None:
                scale[c] = scale[c] * <double> weight[c]
            shift[c] = -(<double> mean[c]) * scale[c]
            if bias is not None:
                shift[c] = shift[c] + <double> bias[c]
        if N * C * S == 0:
            return
        xp = &x[0, 0, 0]
        yp = &y[0, 0, 0]
        with nogil:
            if nthreads > 1:
                for i in prange(N * C, num_threads=nthreads, schedule='guided'):
                    _kernels(<floating> 0).channel_affine(xp + i * S, yp + i * S, S,
                                                          scale[i % C], shift[i % C])
            else:
                for i in range(N * C):
                    _kernels(<floating> 0).channel_affine(xp + i * S, yp + i * S, S,
                                                          scale[i % C], shift[i % C])
    finally:
        free(scale)


cdef inline const floating *_or_null(const floating[:, :, ::1] a) noexcept:
    return &a[0, 0, 0] if a is not None and a.shape[0] * a.shape[1] * a.shape[2] > 0 else NULL


def batch_norm_grad_sums(const floating[:, :, ::1] grad_out,   # IN  (N, C, S)
                         const floating[:, :, ::1] relu_y,     # IN  (N, C, S) or None
                         const floating[:, :, ::1] x,          # IN  (N, C, S)
                         const double[::1] mean,               # IN  (C,)
                         double[::1] sum_go,                   # OUT (C,)
                         double[::1] sum_gox,                  # OUT (C,)
                         int nthreads):
    """Per channel: sum of grad_out and of grad_out * (x - mean), grad_out
    masked by relu_y <= 0 (a ReLU right after the batch norm) unless None."""
    if x.shape[0] * x.shape[1] * x.shape[2] == 0:
        _bn_channels(x, <const floating *> NULL, NULL, NULL, sum_go, sum_gox, 0.0, 0.0,
                     nthreads)
        return
    _bn_channels(x, &grad_out[0, 0, 0], _or_null(relu_y), &mean[0], sum_go, sum_gox, 0.0, 0.0,
                 nthreads)


def batch_norm_grad_input(const floating[:, :, ::1] grad_out,  # IN  (N, C, S)
                          const floating[:, :, ::1] relu_y,    # IN  (N, C, S) or None
                          const floating[:, :, ::1] x,         # IN  (N, C, S)
                          const double[:, ::1] coef,           # IN  (C, 4): a, b, c, mean
                          floating[:, :, ::1] grad_x,          # OUT (N, C, S)
                          int nthreads):
    """grad_x[n, c] = a * grad_out + b * (x - mean) + c, per channel
    (grad_out masked by relu_y <= 0 unless None)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], i, k
    if N * C * S == 0:
        return
    cdef const floating *ry = _or_null(relu_y)
    cdef const floating *gp = &grad_out[0, 0, 0]
    cdef const floating *xp = &x[0, 0, 0]
    cdef floating *gxp = &grad_x[0, 0, 0]
    with nogil:
        if nthreads > 1:
            for i in prange(N * C, num_threads=nthreads, schedule='guided'):
                k = i % C
                _kernels(<floating> 0).bn_grad_input_plane(gp + i * S, ry + i * S if ry else NULL,
                                                           xp + i * S, gxp + i * S, S,
                                                           coef[k, 0], coef[k, 1], coef[k, 2],
                                                           coef[k, 3])
        else:
            for i in range(N * C):
                k = i % C
                _kernels(<floating> 0).bn_grad_input_plane(gp + i * S, ry + i * S if ry else NULL,
                                                           xp + i * S, gxp + i * S, S,
                                                           coef[k, 0], coef[k, 1], coef[k, 2],
                                                           coef[k, 3])


# ------------------------------------------------------------ activations

cdef enum _Activation:
    CLAMP = 0              # y = clamp(a, lo, hi) (relu: [0, inf])
    CLAMP_BACKWARD = 1     # y = a where lo < b < hi, else 0 (a = grad, b = x)
    RELU_BACKWARD = 2      # y = a where b is not <= 0 (a = grad, b = relu's output)
    ADD_RELU = 3           # y = relu(a + b)
    TANH = 4               # y = tanh(a)


cdef inline void _activation_span(Py_ssize_t i, Py_ssize_t n, const floating *a,
                                  const floating *b, floating *y, _Activation op, double lo,
                                  double hi) noexcept nogil:
    """Span i of SPAN elements of activation op."""
    cdef Py_ssize_t start = i * SPAN, cnt = min(SPAN, n - start)
    if op == CLAMP:
        _kernels(<floating> 0).clamp(a + start, y + start, cnt, lo, hi)
    elif op == CLAMP_BACKWARD:
        _kernels(<floating> 0).clamp_backward(a + start, b + start, y + start, cnt, lo, hi)
    elif op == RELU_BACKWARD:
        _kernels(<floating> 0).relu_backward(a + start, b + start, y + start, cnt)
    elif op == ADD_RELU:
        _kernels(<floating> 0).add_relu(a + start, b + start, y + start, cnt)
    else:
        _kernels(<floating> 0).tanh_values(a + start, y + start, cnt)


cdef void _activation(const floating[::1] a, const floating[::1] b, floating[::1] y,
                      _Activation op, int nthreads, double lo=0, double hi=0):
    cdef Py_ssize_t n = y.shape[0], i, spans = (n + SPAN - 1) // SPAN
    if n == 0:
        return
    with nogil:
        if nthreads > 1 and spans > 1:
            for i in prange(spans, num_threads=nthreads, schedule='guided'):
                _activation_span(i, n, &a[0], &b[0], &y[0], op, lo, hi)
        else:
            for i in range(spans):
                _activation_span(i, n, &a[0], &b[0], &y[0], op, lo, hi)


def clamp(const floating[::1] x, floating[::1] y, double lo, double hi, int nthreads):
    """y = min(max(x, lo), hi), NaN kept (y may be x itself): relu is
    [0, inf], relu6 [0, 6], hardtanh [min_val, max_val]."""
    _activation(x, x, y, CLAMP, nthreads, lo, hi)  # b unused


def clamp_backward(const floating[::1] grad_out, const floating[::1] x, floating[::1] grad_x,
                   double lo, double hi, int nthreads):
    """grad_x = grad_out where lo < x < hi, else 0 (NaN x: 0)."""
    _activation(grad_out, x, grad_x, CLAMP_BACKWARD, nthreads, lo, hi)


def relu(const floating[::1] x, floating[::1] y, int nthreads):
    """y = relu(x) (y may be x itself): the clamp to [0, inf]."""
    _activation(x, x, y, CLAMP, nthreads, 0.0, float("inf"))


def relu_backward(const floating[::1] grad_out, const floating[::1] y, floating[::1] grad_x,
                  int nthreads):
    """grad_x = grad_out where y is not <= 0, else 0."""
    _activation(grad_out, y, grad_x, RELU_BACKWARD, nthreads)


def add_relu(const floating[::1] a, const floating[::1] b, floating[::1] y, int nthreads):
    """y = relu(a + b) (y may be a or b)."""
    _activation(a, b, y, ADD_RELU, nthreads)


def tanh(const floating[::1] x, floating[::1] y, int nthreads):
    """y = tanh(x) (y may be x itself; csrc/elementwise/activation_tanh.h)."""
    _activation(x, x, y, TANH, nthreads)


# -------------------------------------------------------------- optimizer

def sgd_update(floating[::1] p,                 # IN/OUT the parameter
               const floating[::1] g,           # IN     its gradient
               floating[::1] buf,               # IN/OUT momentum buffer, or None
               double lr, double momentum, double dampening, double weight_decay,
               bint nesterov, bint first, int nthreads):
    """torch.optim.SGD's update of one parameter in one pass (csrc/elementwise/optim_sgd.h),
    spans of SPAN elements per thread."""
    cdef Py_ssize_t n = p.shape[0], i, lo, spans = (n + SPAN - 1) // SPAN
    if n == 0:
        return
    cdef floating *bp = &buf[0] if buf is not None else NULL
    with nogil:
        if nthreads > 1 and spans > 1:
            for i in prange(spans, num_threads=nthreads, schedule='guided'):
                lo = i * SPAN
                _kernels(<floating> 0).sgd_update(&p[lo], &g[lo], bp + lo if bp else NULL,
                                                  min(SPAN, n - lo), lr, momentum, dampening,
                                                  weight_decay, nesterov, first)
        else:
            _kernels(<floating> 0).sgd_update(&p[0], &g[0], bp, n, lr, momentum, dampening,
                                              weight_decay, nesterov, first)


def adam_update(floating[::1] p,                # IN/OUT the parameter
                const floating[::1] g,          # IN     its gradient
                floating[::1] m,                # IN/OUT first moment (exp_avg)
                floating[::1] v,                # IN/OUT second moment (exp_avg_sq)
                double beta1, double beta2, double eps, double weight_decay,
                double step_size, double bc2_sqrt, int nthreads):
    """torch.optim.Adam's update of one parameter in one pass
    (csrc/elementwise/optim_adam.h), spans of SPAN elements per thread;
    step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t)."""
    cdef Py_ssize_t n = p.shape[0], i, lo, spans = (n + SPAN - 1) // SPAN
    if n == 0:
        return
    with nogil:
        if nthreads > 1 and spans > 1:
            for i in prange(spans, num_threads=nthreads, schedule='guided'):
                lo = i * SPAN
                _kernels(<floating> 0).adam_update(&p[lo], &g[lo], &m[lo], &v[lo],
                                                   min(SPAN, n - lo), beta1, beta2, eps,
                                                   weight_decay, step_size, bc2_sqrt)
        else:
            _kernels(<floating> 0).adam_update(&p[0], &g[0], &m[0], &v[0], n, beta1, beta2,
                                               eps, weight_decay, step_size, bc2_sqrt)


# ------------------------------------------------ batch norm, channels last
# x (N, *spatial, C) seen as (rows, C), rows = N * prod(spatial): the kernels
# of csrc/elementwise/norm_batch_last.h run along whole rows, the channels in
# the vector lanes, so channels-last activations need no layout copies. A
# parallel item is a block of rows; a reduction's block writes its own slot
# of per-channel sums, and the slots are added in block order: the block
# size depends on the shape only, so results do not depend on the thread
# count either.

# elements per block of rows, as SPAN: enough work per parallel item to
# outweigh scheduling, small enough to balance two threads (a 50176 x 144
# MobileNetV2 batch's elementwise passes run 221 blocks of 228 rows)
cdef Py_ssize_t LAST_BLOCK = 1 << 15
# reduction blocks at most: bounds the partial sums to 2 * 64 * C doubles
# (a (16, 56, 56, 144) batch has 64 blocks of 784 rows)
cdef Py_ssize_t LAST_MAX_BLOCKS = 64


cdef inline Py_ssize_t _last_block_rows(Py_ssize_t rows, Py_ssize_t C,
                                        Py_ssize_t max_blocks) noexcept nogil:
    """Rows per block: LAST_BLOCK elements' worth, at most max_blocks blocks."""
    cdef Py_ssize_t per = max(1, LAST_BLOCK // max(C, 1))
    if (rows + per - 1) // per > max_blocks:
        per = (rows + max_blocks - 1) // max_blocks
    return per


cdef inline void _last_block_sums(Py_ssize_t b, Py_ssize_t per, Py_ssize_t rows, Py_ssize_t C,
                                  const floating *x, const floating *go, const floating *ry,
                                  const double *center, double *part) noexcept nogil:
    """Block b's per-channel sums into part[b] (2 x C): the statistics' (go
    NULL, center = shift) or the gradient's (center = mean)."""
    cdef Py_ssize_t r0 = b * per, n = min(per, rows - r0)
    cdef double *s = part + b * 2 * C
    if go == NULL:
        _kernels(<floating> 0).bnl_stats_rows(x + r0 * C, n, C, center, s, s + C)
    else:
        _kernels(<floating> 0).bnl_grad_sums_rows(go + r0 * C, ry + r0 * C if ry else NULL,
                                                  x + r0 * C, n, C, center, s, s + C)


cdef int _last_sums(const floating *x, const floating *go, const floating *ry,
                    const double *center, Py_ssize_t rows, Py_ssize_t C, double *out1,
                    double *out2, int nthreads) except -1:
    """Per-channel sums over rows >= 1 (_last_block_sums per block), the
    blocks' partial sums added in block order."""
    cdef Py_ssize_t per = _last_block_rows(rows, C, LAST_MAX_BLOCKS)
    cdef Py_ssize_t blocks = (rows + per - 1) // per, b, c
    cdef double *part = <double *> malloc(blocks * 2 * C * sizeof(double))
    cdef double *s
    if part == NULL:
        raise MemoryError()
    with nogil:
        if nthreads > 1 and blocks > 1:
            for b in prange(blocks, num_threads=nthreads, schedule='guided'):
                _last_block_sums(b, per, rows, C, x, go, ry, center, part)
        else:
            for b in range(blocks):
                _last_block_sums(b, per, rows, C, x, go, ry, center, part)
        for c in range(C):
            out1[c] = part[c]
            out2[c] = part[C + c]
        for b in range(1, blocks):
            s = part + b * 2 * C
            for c in range(C):
                out1[c] += s[c]
                out2[c] += s[C + c]
    free(part)
    return 0


def batch_norm_stats_last(const floating[:, ::1] x,   # IN  (rows, C)
                          double[::1] mean,             # OUT (C,)
                          double[::1] var,              # OUT (C,) biased variance
                          int nthreads):
    """Per-channel mean and biased variance of channels-last x, as
    batch_norm_stats: sums of x - x[0, c] in double, NaN or infinity
    in a channel makes its statistics NaN; no rows: mean 0, var 1."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], c
    cdef double dm, v
    if rows == 0 or C == 0:
        for c in range(C):
            mean[c] = 0.0
            var[c] = 1.0
        return
    cdef double *shift = <double *> malloc(C * sizeof(double))
    if shift == NULL:
        raise MemoryError()
    try:
        for c in range(C):
            shift[c] = x[0, c]
        _last_sums(&x[0, 0], <const floating *> NULL, NULL, shift, rows, C, &mean[0], &var[0],
                   nthreads)
        for c in range(C):
            dm = mean[c] / rows
            v = var[c] / rows - dm * dm
            if v < 0:
                v = 0   # rounding; NaN stays NaN
            mean[c] = shift[c] + dm
            var[c] = v
    finally:
        free(shift)


cdef inline void _last_rows(Py_ssize_t b, Py_ssize_t per, Py_ssize_t rows, Py_ssize_t C,
                            const floating *x, const floating *go, const floating *ry,
                            const floating *coef, const floating *shift,
                            floating *out) noexcept nogil:
    """Block b of rows of an elementwise pass: the affine map (go NULL,
    coef = scale) or the input gradient (coef = a, b, c, mean)."""
    cdef Py_ssize_t r0 = b * per, n = min(per, rows - r0)
    if go == NULL:
        _kernels(<floating> 0).bnl_affine_rows(x + r0 * C, out + r0 * C, n, C, coef, shift)
    else:
        _kernels(<floating> 0).bnl_grad_input_rows(go + r0 * C, ry + r0 * C if ry else NULL,
                                                   x + r0 * C, out + r0 * C, n, C, coef)


cdef void _last_pass(const floating *x, const floating *go, const floating *ry,
                     const floating *coef, const floating *shift, floating *out,
                     Py_ssize_t rows, Py_ssize_t C, int nthreads) noexcept nogil:
    cdef Py_ssize_t per = _last_block_rows(rows, C, rows), b
    cdef Py_ssize_t blocks = (rows + per - 1) // per
    if nthreads > 1 and blocks > 1:
        for b in prange(blocks, num_threads=nthreads, schedule='guided'):
            _last_rows(b, per, rows, C, x, go, ry, coef, shift, out)
    else:
        for b in range(blocks):
            _last_rows(b, per, rows, C, x, go, ry, coef, shift, out)


def channel_affine_last(const floating[:, ::1] x,     # IN  (rows, C)
                        const floating[::1] scale,      # IN  (C,)
                        const floating[::1] shift,      # IN  (C,)
                        floating[:, ::1] y,             # OUT (rows, C)
                        int nthreads):
    """y[r, c] = x[r, c] * scale[c] + shift[c] (scale and shift rounded to
    x's dtype by the caller, as channel_affine rounds them)."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1]
    if rows * C == 0:
        return
    with nogil:
        _last_pass(&x[0, 0], <const floating *> NULL, NULL, &scale[0], &shift[0], &y[0, 0],
                   rows, C, nthreads)


cdef inline const floating *_or_null_rows(const floating[:, ::1] a) noexcept:
    return &a[0, 0] if a is not None and a.shape[0] * a.shape[1] > 0 else NULL


def batch_norm_grad_sums_last(const floating[:, ::1] grad_out,   # IN  (rows, C)
                              const floating[:, ::1] relu_y,     # IN  (rows, C) or None
                              const floating[:, ::1] x,          # IN  (rows, C)
                              const double[::1] mean,            # IN  (C,)
                              double[::1] sum_go,                # OUT (C,)
                              double[::1] sum_gox,               # OUT (C,)
                              int nthreads):
    """batch_norm_grad_sums of channels-last arrays."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], c
    if rows == 0 or C == 0:
        for c in range(C):
            sum_go[c] = 0.0
            sum_gox[c] = 0.0
        return
    _last_sums(&x[0, 0], &grad_out[0, 0], _or_null_rows(relu_y), &mean[0], rows, C, &sum_go[0],
               &sum_gox[0], nthreads)


def batch_norm_grad_input_last(const floating[:, ::1] grad_out,  # IN  (rows, C)
                               const floating[:, ::1] relu_y,    # IN  (rows, C) or None
                               const floating[:, ::1] x,         # IN  (rows, C)
                               const floating[:, ::1] coef,      # IN  (4, C): a, b, c, mean
                               floating[:, ::1] grad_x,          # OUT (rows, C)
                               int nthreads):
    """batch_norm_grad_input of channels-last arrays, coef rounded to x's
    dtype by the caller (as bn_grad_input_plane rounds it)."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1]
    if rows * C == 0:
        return
    cdef const floating *ry = _or_null_rows(relu_y)
    with nogil:
        _last_pass(&x[0, 0], &grad_out[0, 0], ry, &coef[0, 0], NULL, &grad_x[0, 0], rows, C,
                   nthreads)
