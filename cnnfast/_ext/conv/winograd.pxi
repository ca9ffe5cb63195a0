# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# Winograd F(2x2, 3x3) / F(4x4, 3x3) on channels-first planes: forward and
# the input gradient as a flipped forward.

# ---------------------------------------------------------------- winograd
# F(4x4, 3x3) for 2-D 3x3 kernels, stride 1, dilation 1 (csrc/conv/conv_winograd.h).

def winograd_split(Py_ssize_t K, Py_ssize_t groups, Py_ssize_t tiles, int nthreads,
                   Py_ssize_t nr, Py_ssize_t mr):
    """(blocks, output channels per work item): blocks of nr tiles per
    group; with fewer than 2 items per thread the output channels are cut
    into chunks of whole GEMM row blocks (mr), so batch 1 uses every thread.
    The planner (cnnfast._plan) sizes the work arrays by the same split."""
    cdef Py_ssize_t nblocks = (tiles + nr - 1) // nr, items = groups * nblocks, nkc = 1
    if nthreads > 1 and 0 < items < 2 * nthreads:
        nkc = min((2 * nthreads + items - 1) // items, (K + mr - 1) // mr)
    cdef Py_ssize_t kchunk = ((K + nkc - 1) // nkc + mr - 1) // mr * mr
    return nblocks, min(kchunk, K)


def winograd_planes(Py_ssize_t OH, Py_ssize_t OW):
    """(tiles per image, padded plane rows, columns) for an OH x OW output."""
    cdef Py_ssize_t th = (OH + 3) // 4, tw = (OW + 3) // 4
    return th * tw, 4 * th + 2, 4 * tw + 2


cdef struct _wino_job:
    const void *xpad       # padded input (N, groups*C, Hp, Wp)
    const void *u          # transformed weights, per group 36*C*K
    const void *bias
    void *out
    void *v                # per thread: vsize elements
    void *m                # per thread: msize elements
    void *work             # per thread: wsize elements
    Py_ssize_t *bad        # per item: 1 if it met a non-finite value
    Py_ssize_t groups, nblocks, nkc, kchunk, tiles, x_nstride, out_nstride
    Py_ssize_t vsize, msize, wsize, kc


cdef void _wino_weights_item(Py_ssize_t i, const floating *w, floating *u, Py_ssize_t *bad,
                             Py_ssize_t nkv, const cf_geom *g) noexcept nogil:
    """Item (group, chunk of 4 output channels): their transformed weights."""
    cdef Py_ssize_t kv = i % nkv, grp = i // nkv
    bad[i] = _kernels(<floating> 0).winograd_weights(w + grp * g.K * g.C * 9, g.K, g.C, kv * 4,
                                                     min(kv * 4 + 4, g.K),
                                                     u + grp * 36 * g.C * g.K)


cdef void _wino_block_item(Py_ssize_t i, const _wino_job *job, const cf_geom *g,
                           floating dummy) noexcept nogil:
    """Item (group, block of tiles, output-channel chunk): owns those outputs."""
    cdef Py_ssize_t kq = i % job.nkc, nr = _kernels(<floating> 0).gemm_nr
    cdef Py_ssize_t blk = (i // job.nkc) % job.nblocks, grp = i // (job.nkc * job.nblocks)
    cdef Py_ssize_t t0 = blk * nr, k0 = kq * job.kchunk
    cdef Py_ssize_t nk = min(job.kchunk, g.K - k0)
    cdef int tid = cf_thread_num()
    if nk <= 0:
        job.bad[i] = 0
        return
    cdef const floating *b = NULL
    if job.bias != NULL:
        b = (<const floating *> job.bias) + grp * g.K
    job.bad[i] = _kernels(<floating> 0).winograd_forward_block(
        (<const floating *> job.xpad) + grp * g.C * g.H * g.W, job.x_nstride,
        (<const floating *> job.u) + grp * 36 * g.C * g.K, b,
        (<floating *> job.out) + grp * g.K * g.OH * g.OW, job.out_nstride,
        t0, min(nr, job.tiles - t0), k0, nk,
        (<floating *> job.v) + tid * job.vsize, (<floating *> job.m) + tid * job.msize,
        (<floating *> job.work) + tid * job.wsize, job.kc, g)


cdef bint _winograd_forward(const floating *x, const floating *w, const floating *bias,
                            floating *out, Py_ssize_t N, cf_geom g, Py_ssize_t groups,
                            Py_ssize_t kc, int nthreads) except -1:
    """out = conv(x, w) + bias by Winograd F(4x4, 3x3) (g: 3x3, stride 1, any
    padding before, 2-D). Returns False, the output incomplete, if a weight
    or an input transforms to a non-finite value: the caller recomputes."""
    cdef const cf_conv_kernels *kt = _kernels(<floating> 0)
    cdef Py_ssize_t vw = kt.vector_width, nr = kt.gemm_nr, i, nitems
    cdef Py_ssize_t per_image, Hp, Wp, HW = g.H * g.W
    per_image, Hp, Wp = winograd_planes(g.OH, g.OW)
    cdef _wino_job job
    job.groups = groups
    job.tiles = N * per_image
    job.nblocks, job.kchunk = winograd_split(g.K, groups, job.tiles, nthreads, nr, kt.gemm_mr)
    job.nkc = (g.K + job.kchunk - 1) // job.kchunk
    job.kc = kc
    job.x_nstride = groups * g.C * Hp * Wp
    job.out_nstride = groups * g.K * g.OH * g.OW
    job.vsize = 36 * g.C * nr + vw
    job.msize = 36 * job.kchunk * nr + vw
    job.wsize = 4 * g.C
    nitems = groups * job.nblocks * job.nkc
    dtype = _dtype_of(<floating> 0)
    # the padded planes, readable 4 vectors past the end (stride-4 loads)
    cdef Py_ssize_t planes = N * groups * g.C, slack = 4 * vw + 8
    cdef floating[::1] xpad = work_array("wino_xpad", planes * Hp * Wp + slack, dtype)
    cdef floating[::1] u = work_array("wino_u", groups * 36 * g.C * g.K, dtype)
    cdef floating[::1] v = work_array("wino_v", nthreads * job.vsize, dtype)
    cdef floating[::1] m = work_array("wino_m", nthreads * job.msize, dtype)
    cdef floating[::1] wk = work_array("wino_work", nthreads * job.wsize, dtype)
    cdef Py_ssize_t nkv = (g.K + 3) // 4   # weight-transform items per group
    cdef Py_ssize_t[::1] bad = work_array("wino_bad", max(nitems, groups * nkv), np.intp)
    cdef cf_geom gp = g
    gp.H, gp.W = Hp, Wp
    job.xpad, job.u, job.bias, job.out = &xpad[0], &u[0], bias, out
    job.v, job.m, job.work, job.bad = &v[0], &m[0], &wk[0], &bad[0]
    cdef bint finite = True
    with nogil:
        if nthreads > 1:
            for i in prange(groups * nkv, num_threads=nthreads, schedule='static'):
                _wino_weights_item(i, w, &u[0], &bad[0], nkv, &g)
        else:
            for i in range(groups * nkv):
                _wino_weights_item(i, w, &u[0], &bad[0], nkv, &g)
        for i in range(groups * nkv):
            if bad[i]:
                finite = False
    if not finite:
        return False
    with nogil:
        memset(&xpad[planes * Hp * Wp], 0, slack * sizeof(floating))
        if nthreads > 1:
            for i in prange(planes, num_threads=nthreads, schedule='guided'):
                _pad_plane(x + i * HW, 1, g.H, g.W, &xpad[0] + i * Hp * Wp, 1, Hp, Wp,
                           0, g.ph, g.pw, CF_PAD_ZEROS)
            for i in prange(nitems, num_threads=nthreads, schedule='dynamic'):
                _wino_block_item(i, &job, &gp, <floating> 0)
        else:
            for i in range(planes):
                _pad_plane(x + i * HW, 1, g.H, g.W, &xpad[0] + i * Hp * Wp, 1, Hp, Wp,
                           0, g.ph, g.pw, CF_PAD_ZEROS)
            for i in range(nitems):
                _wino_block_item(i, &job, &gp, <floating> 0)
        for i in range(nitems):
            if bad[i]:
                finite = False
    return finite


cdef object _flipped_transposed(str name, wg):
    """The work array `name` holding the kernel wg (groups, K, C, *k) flipped
    in every spatial dim, with K and C swapped: (groups*C, K, *k)."""
    groups, K, C = wg.shape[:3]
    return _work_copy(name, wg[:, :, :, ::-1, ::-1, ::-1].transpose(0, 2, 1, 3, 4, 5),
                      (groups * C, K) + wg.shape[3:])


cdef cf_geom _transposed_geometry(grad_out, grad_x, tuple kernel, tuple padding,
                                  tuple dilation, Py_ssize_t groups):
    """The stride-1 forward conv that computes the input gradient: grad_out
    padded by (k-1)*d - p (a negative pad crops) into grad_x's shape."""
    return _geometry(grad_out.shape[1] // groups, grad_out.shape[2], grad_out.shape[3],
                     grad_out.shape[4], grad_x.shape[1] // groups, grad_x.shape[2],
                     grad_x.shape[3], grad_x.shape[4], kernel, (1, 1, 1),
                     tuple([(k - 1) * d - p for k, d, p in zip(kernel, dilation, padding)]),
                     dilation)


cdef bint _winograd_backward_input(const floating[:, :, :, :, ::1] grad_out,
                                   const floating[:, :, :, :, ::1] w,
                                   floating[:, :, :, :, ::1] grad_x, tuple kernel,
                                   tuple padding, Py_ssize_t groups, Py_ssize_t kc,
                                   int nthreads) except -1:
    """The input gradient as a Winograd forward of grad_out with the flipped,
    channel-transposed kernel and padding k-1-p. False (nothing usable
    computed) for non-finite values: the caller runs the GEMM, whose col2im
    adds real products only, as the direct algorithm's fallback does."""
    cdef Py_ssize_t Kt = w.shape[0]
    wg = np.asarray(w).reshape((groups, Kt // groups, w.shape[1]) + kernel)
    cdef floating[:, :, :, :, ::1] wsub = _flipped_transposed("wino_wflip", wg)
    cdef cf_geom gt = _transposed_geometry(grad_out, grad_x, kernel, padding, (1, 1, 1), groups)
    return _winograd_forward(&grad_out[0, 0, 0, 0, 0], &wsub[0, 0, 0, 0, 0], NULL,
                             &grad_x[0, 0, 0, 0, 0], grad_x.shape[0], gt, groups, kc, nthreads)
