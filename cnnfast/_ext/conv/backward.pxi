# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# The backward drivers: input gradient, weight gradient, bias gradient and
# the padding fold.

def conv_backward_input(const floating[:, :, :, :, ::1] grad_out,
                        const floating[:, :, :, :, ::1] w, floating[:, :, :, :, ::1] grad_x,
                        tuple stride, tuple padding, tuple dilation, Py_ssize_t groups,
                        str kernel, tuple gemm, int nthreads, bias=None):
    """grad_x = conv_transpose(grad_out, w) with the plan's kernel: "gemm"
    (gemm = (tile, weights_in_place, reduction_chunk)), "direct_lanes",
    "direct_polyphase" or "winograd"; the direct kernels fall back on the
    GEMM for NaN or infinite weights (see _direct_backward_input), Winograd
    for any non-finite value. grad_x is overwritten; with `bias` (one value
    per channel of grad_x: a transposed convolution's bias) it is added to
    each channel's planes, by the GEMM's items as they finish a chunk, or
    after the other kernels."""
    cdef const floating[::1] bias_v
    cdef const floating *bp = NULL
    if bias is not None:
        bias_v = bias
        bp = &bias_v[0]
    cdef Py_ssize_t N = grad_x.shape[0]
    cdef tuple kernel_size = (w.shape[2], w.shape[3], w.shape[4])
    cdef cf_geom g = _geometry(grad_x.shape[1] // groups, grad_x.shape[2], grad_x.shape[3],
                               grad_x.shape[4], w.shape[0] // groups, grad_out.shape[2],
                               grad_out.shape[3], grad_out.shape[4], kernel_size, stride, padding,
                               dilation)
    if N == 0:
        return
    if g.OD * g.OH * g.OW == 0:
        np.asarray(grad_x)[...] = 0
        if bp != NULL:
            _add_channel_bias(grad_x, bp, nthreads)
        return
    if kernel not in ("gemm", "direct_lanes", "direct_polyphase", "winograd"):
        raise ValueError(f"unknown input-gradient kernel {kernel!r}")
    cdef bint done = False, lanes = kernel == "direct_lanes"
    if kernel == "winograd":
        done = _winograd_backward_input(grad_out, w, grad_x, kernel_size, padding, groups,
                                        <Py_ssize_t> gemm[2], nthreads)
    elif kernel in ("direct_lanes", "direct_polyphase"):
        done = _direct_backward_input(grad_out, w, grad_x, kernel_size, stride, padding,
                                      dilation, groups, lanes, nthreads)
    if not done:   # the GEMM adds the bias itself
        _packed_backward_input(grad_out, w, grad_x, g, groups, gemm, nthreads, bp)
    elif bp != NULL:
        _add_channel_bias(grad_x, bp, nthreads)


cdef void _add_channel_bias(floating[:, :, :, :, ::1] a, const floating *bias,
                            int nthreads) noexcept:
    """a[n, c] += bias[c], plane by plane (owner computes)."""
    cdef Py_ssize_t C = a.shape[1], plane = a.shape[2] * a.shape[3] * a.shape[4], i
    cdef floating *ap = &a[0, 0, 0, 0, 0]
    with nogil:
        if nthreads > 1:
            for i in prange(a.shape[0] * C, num_threads=nthreads, schedule='guided'):
                _add_to_plane(ap + i * plane, plane, bias[i % C])
        else:
            for i in range(a.shape[0] * C):
                _add_to_plane(ap + i * plane, plane, bias[i % C])


cdef inline void _add_to_plane(floating *p, Py_ssize_t n, floating v) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        p[j] += v


def conv_backward_weight(const floating[:, :, :, :, ::1] grad_out,
                         const floating[:, :, :, :, ::1] x, floating[:, :, :, :, ::1] grad_w,
                         tuple stride, tuple padding, tuple dilation, Py_ssize_t groups,
                         str kernel, Py_ssize_t tile, int pad_mode, int nthreads):
    """grad_w = sum over the batch of grad_out correlated with x, overwritten,
    with the plan's kernel: "gemm_blas" (column tiles of `tile` positions)
    or "direct_weight"; x padded in pad_mode (CF_PAD_*)."""
    cdef Py_ssize_t N = x.shape[0]
    cdef cf_geom g = _geometry(x.shape[1] // groups, x.shape[2], x.shape[3], x.shape[4],
                               grad_w.shape[0] // groups, grad_out.shape[2], grad_out.shape[3],
                               grad_out.shape[4], (grad_w.shape[2], grad_w.shape[3],
                               grad_w.shape[4]), stride, padding, dilation)
    g.pad_mode = pad_mode
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, R = g.C * g.KD * g.KH * g.KW
    cdef Py_ssize_t nkb, ntiles, nitems, i, j, t, size = groups * g.K * R
    cdef floating[:, ::1] work, partial
    cdef floating *workp = NULL
    cdef floating *gwp = &grad_w[0, 0, 0, 0, 0]
    if N == 0:
        memset(gwp, 0, size * sizeof(floating))
        return
    cdef tuple kernel_size = (g.KD, g.KH, g.KW), shape
    cdef floating[:, :, :, :, ::1] xpad, gopad
    cdef Py_ssize_t vw, gow
    cdef cf_geom gp
    if kernel not in ("gemm_blas", "direct_weight"):
        raise ValueError(f"unknown weight-gradient kernel {kernel!r}")
    if kernel == "direct_weight":
        vw = _vector_width(<floating> 0)
        gow = (g.OW + vw - 1) // vw * vw
        shape = _direct_input_shape((g.OD, g.OH, g.OW), kernel_size, stride, dilation, vw)
        xpad = _padded("wgrad_xpad", x, shape, padding, nthreads, pad_mode)
        gopad = _padded("wgrad_gopad", grad_out, (g.OD, g.OH, gow), (0, 0, 0), nthreads)
        gp = _geometry(g.C, shape[0], shape[1], shape[2], g.K, g.OD, g.OH, g.OW, kernel_size,
                       stride, (0, 0, 0), dilation)
        nkb = (g.K + CF_KB - 1) // CF_KB
        nitems = groups * nkb * g.C
        with nogil:
            if nthreads > 1:
                for i in prange(nitems, num_threads=nthreads, schedule='guided'):
                    _direct_backward_weight_item(i, &xpad[0, 0, 0, 0, 0], &gopad[0, 0, 0, 0, 0],
                                                 gwp, N, groups, nkb, gow, &gp)
            else:
                for i in range(nitems):
                    _direct_backward_weight_item(i, &xpad[0, 0, 0, 0, 0], &gopad[0, 0, 0, 0, 0],
                                                 gwp, N, groups, nkb, gow, &gp)
        return
    ntiles = (P + tile - 1) // tile
    nitems = N * groups * ntiles
    nthreads = <int> min(<Py_ssize_t> nthreads, nitems)
    # thread 0 accumulates into grad_w itself, the others into partials
    partial = work_array("wgrad_partial", (nthreads - 1) * size if nthreads > 1 else 1,
                         _dtype_of(<floating> 0)).reshape(max(nthreads - 1, 1),
                                                          size if nthreads > 1 else 1)
    partial[...] = 0
    if not _is_pointwise_identity(&g):
        work = work_array("wgrad_columns", nthreads * R * tile,
                          _dtype_of(<floating> 0)).reshape(nthreads, R * tile)
        workp = &work[0, 0]
    with nogil:
        memset(gwp, 0, size * sizeof(floating))
        if nthreads > 1:
            # static: each thread's partial sums must cover the same items every run
            for i in prange(nitems, num_threads=nthreads, schedule='static'):
                _gemm_backward_weight_item(i, &x[0, 0, 0, 0, 0], &grad_out[0, 0, 0, 0, 0],
                                           gwp, &partial[0, 0], workp, groups, tile, ntiles, &g)
        else:
            for i in range(nitems):
                _gemm_backward_weight_item(i, &x[0, 0, 0, 0, 0], &grad_out[0, 0, 0, 0, 0],
                                           gwp, &partial[0, 0], workp, groups, tile, ntiles, &g)
        # Add the other threads' partials in thread order (deterministic).
        for t in range(nthreads - 1):
            for j in range(size):
                gwp[j] += partial[t, j]


def conv_fold_padding(const floating[:, :, :, :, ::1] grad_padded,   # IN  (N, C, Dp, Hp, Wp)
                      floating[:, :, :, :, ::1] grad_x,               # OUT (N, C, D, H, W)
                      tuple padding, int pad_mode, int nthreads):
    """grad_x = the gradient wrt the padded input folded back onto the input:
    each plane's border positions add onto the elements pad_mode (CF_PAD_*)
    copied them from. padding: the padding before; the padded extent is
    grad_padded's. Items: one plane each (owner computes)."""
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1], i
    cdef Py_ssize_t D = grad_x.shape[2], H = grad_x.shape[3], W = grad_x.shape[4]
    cdef Py_ssize_t Dp = grad_padded.shape[2], Hp = grad_padded.shape[3]
    cdef Py_ssize_t Wp = grad_padded.shape[4], pd, ph, pw
    pd, ph, pw = padding
    if N == 0:
        return
    cdef const floating *src = &grad_padded[0, 0, 0, 0, 0]
    cdef floating *dst = &grad_x[0, 0, 0, 0, 0]
    with nogil:
        if nthreads > 1:
            for i in prange(N * C, num_threads=nthreads, schedule='guided'):
                _kernels(<floating> 0).fold_plane(src + i * Dp * Hp * Wp, Dp, Hp, Wp,
                                                  dst + i * D * H * W, D, H, W, pd, ph, pw,
                                                  pad_mode)
        else:
            for i in range(N * C):
                _kernels(<floating> 0).fold_plane(src + i * Dp * Hp * Wp, Dp, Hp, Wp,
                                                  dst + i * D * H * W, D, H, W, pd, ph, pw,
                                                  pad_mode)


def conv_backward_bias(const floating[:, :, :, :, ::1] grad_out, floating[::1] grad_b,
                       int nthreads):
    """grad_b[k] = grad_out[:, k] summed, accumulated in double precision."""
    cdef Py_ssize_t N = grad_out.shape[0], K = grad_out.shape[1]
    cdef Py_ssize_t P = grad_out.shape[2] * grad_out.shape[3] * grad_out.shape[4]
    cdef Py_ssize_t k
    with nogil:
        if nthreads > 1:
            for k in prange(K, num_threads=nthreads, schedule='guided'):
                grad_b[k] = <floating> _channel_sum(&grad_out[0, 0, 0, 0, 0], N, K, P, k)
        else:
            for k in range(K):
                grad_b[k] = <floating> _channel_sum(&grad_out[0, 0, 0, 0, 0], N, K, P, k)


cdef inline double _channel_sum(const floating *a, Py_ssize_t N, Py_ssize_t K, Py_ssize_t P,
                                Py_ssize_t k) noexcept nogil:
    return _kernels(<floating> 0).channel_sum(a + k * P, N, K * P, P)


cdef object _work_copy(str name, a, tuple shape):
    """The work array `name` holding a C-ordered copy of a, as `shape`."""
    out = work_array(name, a.size, a.dtype).reshape(a.shape)
    out[...] = a
    return out.reshape(shape)


def _phases(Py_ssize_t k, Py_ssize_t s, Py_ssize_t p, Py_ssize_t d, Py_ssize_t n_in):
    """Polyphase split of one dim of the input gradient.

    gx[q*s + r] = sum over taps t with t*d = r + p (mod s) of go[q + e_t] w[t],
    e_t = (r + p - t*d) / s: for each residue r a stride-1 correlation of
    grad_out with the taps of that residue, flipped. Yields (r, taps, pad,
    dilation, size) per residue with taps; the taps' offsets step by d/gcd(d, s).
    """
    cdef Py_ssize_t r, n_r
    step = d // gcd(d, s)
    for r in range(min(s, n_in)):
        n_r = (n_in - r + s - 1) // s
        taps = [t for t in range(k - 1, -1, -1) if (t * d - r - p) % s == 0]
        if taps:
            yield r, taps, -((r + p - taps[0] * d) // s), step, n_r


cdef bint _direct_backward_input(const floating[:, :, :, :, ::1] grad_out,
                                 const floating[:, :, :, :, ::1] w,
                                 floating[:, :, :, :, ::1] grad_x, tuple kernel, tuple stride,
                                 tuple padding, tuple dilation, Py_ssize_t groups,
                                 bint lanes, int nthreads) except -1:
    """The input gradient as forward direct convolutions of grad_out with the
    flipped, channel-transposed kernel, one per stride phase (one in all for
    stride 1), so it runs on the register-blocked forward kernel without the
    s**2 zeros a spread-out grad_out would multiply.

    Those convolutions multiply grad_out's zero padding by the weights, so a
    NaN or infinite weight would spread NaN to inputs no output reaches
    through it: then nothing is computed and False returned (the caller
    falls back on the GEMM, whose col2im adds real products only)."""
    cdef Py_ssize_t N = grad_x.shape[0], Ct = grad_x.shape[1], Kt = w.shape[0]
    cdef Py_ssize_t C = Ct // groups, K = Kt // groups
    cdef Py_ssize_t vw = _vector_width(<floating> 0)
    cdef floating[:, :, :, :, ::1] gopad, wsub, part
    cdef cf_geom gp
    gx = np.asarray(grad_x)
    wg = np.asarray(w).reshape((groups, K, C) + kernel)
    cdef cf_geom gt
    if lanes:
        # one stride-1 convolution of grad_out, padded by (k-1)*d - p (a
        # negative pad crops), with the flipped kernel, channels in lanes
        wsub = _flipped_transposed("lanes_wsub", wg)
        gt = _transposed_geometry(grad_out, grad_x, kernel, padding, dilation, groups)
        return _cv_forward(&grad_out[0, 0, 0, 0, 0], &wsub[0, 0, 0, 0, 0], NULL,
                           &grad_x[0, 0, 0, 0, 0], N, gt, groups, nthreads, False, True)
    if not np.isfinite(wg).all():  # small: fewer than CHANNELS_IN_LANES_MIN channels
        return False
    dims = [list(_phases(k, s, p, d, n)) for k, s, p, d, n in
            zip(kernel, stride, padding, dilation, gx.shape[2:])]
    if np.prod([len(ph) for ph in dims]) < np.prod(stride):
        gx[...] = 0  # residues no tap reaches get no gradient
    for (rd, td, pd, dd, nd), (rh, th, ph, dh, nh), (rw, tw, pw, dw, nw) in product(*dims):
        sub = (len(td), len(th), len(tw))
        taps = wg[:, :, :, td][:, :, :, :, th][:, :, :, :, :, tw]
        wsub = _work_copy("phase_wsub", taps.transpose(0, 2, 1, 3, 4, 5), (groups * C, K) + sub)
        shape = _direct_input_shape((nd, nh, nw), sub, (1, 1, 1), (dd, dh, dw), vw)
        gopad = _padded("phase_gopad", grad_out, shape, (pd, ph, pw), nthreads)
        gp = _geometry(K, shape[0], shape[1], shape[2], C, nd, nh, nw, sub, (1, 1, 1),
                       (0, 0, 0), (dd, dh, dw))
        if stride == (1, 1, 1):
            part = grad_x
        else:
            part = work_array("phase_part", N * Ct * nd * nh * nw,
                              _dtype_of(<floating> 0)).reshape((N, Ct, nd, nh, nw))
        with nogil:
            _direct_forward(&gopad[0, 0, 0, 0, 0], &wsub[0, 0, 0, 0, 0], NULL,
                            &part[0, 0, 0, 0, 0], N, groups, &gp, nthreads)
        if stride != (1, 1, 1):
            gx[:, :, rd::stride[0], rh::stride[1], rw::stride[2]] = np.asarray(part)
    return True
