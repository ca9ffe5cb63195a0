# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# Geometry, the kernel table of this CPU and dtype, and the store-pass epilogue:
# what every kernel below uses.

cdef cf_geom _geometry(Py_ssize_t C, Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
                       Py_ssize_t K, Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
                       tuple kernel, tuple stride, tuple padding, tuple dilation):
    cdef cf_geom g
    g.C, g.D, g.H, g.W = C, D, H, W
    g.K, g.OD, g.OH, g.OW = K, OD, OH, OW
    g.KD, g.KH, g.KW = kernel
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = padding
    g.dd, g.dh, g.dw = dilation
    g.pad_mode = CF_PAD_ZEROS
    return g


cdef inline bint _is_pointwise_identity(const cf_geom *g) noexcept nogil:
    """1x1 kernel, stride 1, no padding: the input planes already are the
    im2col matrix, so the GEMM reads them in place."""
    return (g.KD == 1 and g.KH == 1 and g.KW == 1 and g.sd == 1 and g.sh == 1
            and g.sw == 1 and g.pd == 0 and g.ph == 0 and g.pw == 0
            and g.OD == g.D and g.OH == g.H and g.OW == g.W)


cdef inline bint _windows_inside(const cf_geom *g) noexcept nogil:
    """Every window of g lies inside the unpadded input (reaches no padding)."""
    return ((g.OD - 1) * g.sd + (g.KD - 1) * g.dd < g.D
            and (g.OH - 1) * g.sh + (g.KH - 1) * g.dh < g.H
            and (g.OW - 1) * g.sw + (g.KW - 1) * g.dw < g.W)


cdef object _dtype_of(floating dummy):
    return np.float32 if floating is float else np.float64


cdef inline const cf_conv_kernels *_kernels(floating dummy) noexcept nogil:
    """The kernel table of this dtype for the running CPU (csrc/common/cf_isa.h)."""
    if floating is float:
        return cf_conv_kernels_for(0)
    else:
        return cf_conv_kernels_for(1)


# ---------------------------------------------------------------- epilogue

cdef struct _epilogue:
    const void *res        # residual laid out as out (added before the clamp), or NULL
    const void *out        # out's first element: a tile's residual is at the same offset
    bint clamp             # the activation: out = clamp(out, lo, hi) (ReLU: [0, inf])
    double lo, hi
    bint active            # False: a plain convolution (and every backward pass)


cdef _epilogue _no_epilogue():
    cdef _epilogue e
    e.res = e.out = NULL
    e.clamp = e.active = False
    e.lo = e.hi = 0
    return e


cdef inline void _epilogue_rows(const _epilogue *e, floating *o, Py_ssize_t rows,
                                Py_ssize_t row_stride, Py_ssize_t n) noexcept nogil:
    """A fused layer's residual add and activation on the tile just stored at o
    (rows spans of n outputs, row_stride apart), while it is in cache."""
    if e == NULL or not e.active:
        return
    cdef const floating *res = NULL
    if e.res != NULL:
        res = (<const floating *> e.res) + (o - <const floating *> e.out)
    _kernels(<floating> 0).conv_epilogue(o, res, rows, row_stride, n, e.clamp, e.lo, e.hi)
