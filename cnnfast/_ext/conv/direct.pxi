# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# The direct kernel over a padded copy (rows of output pixels), its padding
# helpers and its weight gradient item.

# ------------------------------------------------------------------ direct

cdef void _direct_forward_item(Py_ssize_t i, const floating *x, const floating *w,
                               const floating *bias, floating *out,
                               Py_ssize_t groups, Py_ssize_t nkb,
                               const cf_geom *g, const _epilogue *ep) noexcept nogil:
    """Item (n, group, channel block, od, oh): one output row of nb channels."""
    cdef Py_ssize_t oh = i % g.OH
    i = i // g.OH
    cdef Py_ssize_t od = i % g.OD
    i = i // g.OD
    cdef Py_ssize_t kb = i % nkb
    i = i // nkb
    cdef Py_ssize_t grp = i % groups
    cdef Py_ssize_t n = i // groups
    cdef Py_ssize_t k0 = kb * CF_KB
    cdef Py_ssize_t nb = min(<Py_ssize_t> CF_KB, g.K - k0)
    cdef Py_ssize_t DHW = g.D * g.H * g.W, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t KVOL = g.KD * g.KH * g.KW
    cdef const floating *xp = x + (n * groups + grp) * g.C * DHW
    cdef const floating *wp = w + (grp * g.K + k0) * g.C * KVOL
    cdef const floating *bp = NULL
    if bias != NULL:
        bp = bias + grp * g.K + k0
    cdef floating *op = out + (n * groups * g.K + grp * g.K + k0) * P + (od * g.OH + oh) * g.OW
    _kernels(<floating> 0).direct_forward_row(xp, wp, bp, op, nb, od, oh, g)
    _epilogue_rows(ep, op, nb, P, g.OW)


cdef void _direct_forward(const floating *x, const floating *w, const floating *bias,
                          floating *out, Py_ssize_t N, Py_ssize_t groups,
                          const cf_geom *g, int nthreads,
                          const _epilogue *ep=NULL) noexcept nogil:
    cdef Py_ssize_t nkb = (g.K + CF_KB - 1) // CF_KB
    cdef Py_ssize_t nitems = N * groups * nkb * g.OD * g.OH
    cdef Py_ssize_t i
    if nthreads > 1:
        for i in prange(nitems, num_threads=nthreads, schedule='guided'):
            _direct_forward_item(i, x, w, bias, out, groups, nkb, g, ep)
    else:
        for i in range(nitems):
            _direct_forward_item(i, x, w, bias, out, groups, nkb, g, ep)


cdef void _direct_backward_weight_item(Py_ssize_t i, const floating *x, const floating *go,
                                       floating *gw, Py_ssize_t N, Py_ssize_t groups,
                                       Py_ssize_t nkb, Py_ssize_t gow,
                                       const cf_geom *g) noexcept nogil:
    """Item (group, channel block, c): owns grad_weight[k0:k0+nb, c], summed over N.
    x and go are the padded copies made by the driver."""
    cdef Py_ssize_t c = i % g.C
    i = i // g.C
    cdef Py_ssize_t kb = i % nkb
    cdef Py_ssize_t grp = i // nkb
    cdef Py_ssize_t k0 = kb * CF_KB
    cdef Py_ssize_t nb = min(<Py_ssize_t> CF_KB, g.K - k0)
    cdef Py_ssize_t DHW = g.D * g.H * g.W, P = g.OD * g.OH * gow
    cdef Py_ssize_t KVOL = g.KD * g.KH * g.KW
    cdef const floating *xp = x + (grp * g.C + c) * DHW
    cdef const floating *gop = go + (grp * g.K + k0) * P
    cdef floating *gwp = gw + ((grp * g.K + k0) * g.C + c) * KVOL
    _kernels(<floating> 0).direct_backward_weight(xp, groups * g.C * DHW, gop, groups * g.K * P,
                                                  gow, N, nb,
                               gwp, g)


cdef inline Py_ssize_t _vector_width(floating dummy) noexcept nogil:
    return _kernels(<floating> 0).vector_width


cdef object _padded(str name, const floating[:, :, :, :, ::1] src, tuple shape, tuple offset,
                    int nthreads, int mode=CF_PAD_ZEROS):
    """The work array `name` as (N, C, *shape), holding each src plane at
    `offset` (negative: cropped) and the padding of `mode` (CF_PAD_*) around
    it: the direct kernels read it without bounds checks."""
    cdef Py_ssize_t N = src.shape[0], C = src.shape[1]
    cdef Py_ssize_t D = src.shape[2], H = src.shape[3], W = src.shape[4]
    cdef Py_ssize_t Dp, Hp, Wp, pd, ph, pw, i
    Dp, Hp, Wp = shape
    pd, ph, pw = offset
    dst = work_array(name, N * C * Dp * Hp * Wp, _dtype_of(<floating> 0)).reshape(
        (N, C, Dp, Hp, Wp))
    cdef floating[:, :, :, :, ::1] d = dst
    cdef const floating *s0 = &src[0, 0, 0, 0, 0]
    cdef floating *d0 = &d[0, 0, 0, 0, 0]
    with nogil:
        if nthreads > 1:
            for i in prange(N * C, num_threads=nthreads, schedule='guided'):
                _pad_plane(s0 + i * D * H * W, D, H, W, d0 + i * Dp * Hp * Wp, Dp, Hp, Wp,
                           pd, ph, pw, mode)
        else:
            for i in range(N * C):
                _pad_plane(s0 + i * D * H * W, D, H, W, d0 + i * Dp * Hp * Wp, Dp, Hp, Wp,
                           pd, ph, pw, mode)
    return dst


cdef inline void _pad_plane(const floating *src, Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
                            floating *dst, Py_ssize_t Dp, Py_ssize_t Hp, Py_ssize_t Wp,
                            Py_ssize_t pd, Py_ssize_t ph, Py_ssize_t pw,
                            int mode) noexcept nogil:
    _kernels(<floating> 0).pad_plane(src, D, H, W, dst, Dp, Hp, Wp, pd, ph, pw, mode)


cdef tuple _direct_input_shape(tuple out_size, tuple kernel, tuple stride, tuple dilation,
                               Py_ssize_t vw):
    """Padded input extent the direct kernels read: rows (o-1)*s + (k-1)*d + 1;
    rows of the last dim wide enough for full vector loads of every chunk."""
    cdef list shape = [(o - 1) * s + (k - 1) * d + 1
                       for o, k, s, d in zip(out_size[:2], kernel[:2], stride[:2], dilation[:2])]
    cdef Py_ssize_t ow_chunks = (<Py_ssize_t> out_size[2] + vw - 1) // vw * vw
    shape.append((ow_chunks - vw) * stride[2] + (kernel[2] - 1) * dilation[2]
                 + vw * max(stride[2], 2))
    return tuple(shape)


cdef const floating *_thread_padded_image(const floating *xg, floating *xpad,
                                          Py_ssize_t *held, Py_ssize_t ng, const cf_geom *g,
                                          const cf_geom *gp) noexcept nogil:
    """This thread's padded copy of image-and-group ng (planes of g padded to
    gp's extent), made unless the buffer already holds it (*held == ng)."""
    cdef Py_ssize_t c, DHW = g.D * g.H * g.W, PDHW = gp.D * gp.H * gp.W
    if held[0] != ng:
        for c in range(g.C):
            _pad_plane(xg + c * DHW, g.D, g.H, g.W, xpad + c * PDHW, gp.D, gp.H, gp.W,
                       g.pd, g.ph, g.pw, g.pad_mode)
        held[0] = ng
    return xpad


cdef void _direct_rows_forward(const floating[:, :, :, :, ::1] x,
                               const floating[:, :, :, :, ::1] w, const floating *bp,
                               floating[:, :, :, :, ::1] out, const cf_geom *g,
                               Py_ssize_t groups, tuple stride, tuple padding, tuple dilation,
                               int nthreads, const _epilogue *ep=NULL,
                               int pad_mode=CF_PAD_ZEROS) except *:
    """Direct forward with pixels in the lanes over a padded copy of x."""
    cdef tuple kernel_size = (g.KD, g.KH, g.KW)
    cdef tuple shape = _direct_input_shape((g.OD, g.OH, g.OW), kernel_size, stride, dilation,
                                           _vector_width(<floating> 0))
    cdef floating[:, :, :, :, ::1] xpad = _padded("rows_xpad", x, shape, padding, nthreads,
                                                  pad_mode)
    cdef cf_geom gp = _geometry(g.C, shape[0], shape[1], shape[2], g.K, g.OD, g.OH, g.OW,
                                kernel_size, stride, (0, 0, 0), dilation)
    with nogil:
        _direct_forward(&xpad[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bp, &out[0, 0, 0, 0, 0],
                        x.shape[0], groups, &gp, nthreads, ep)
