# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# im2col / 1x1 on packed GEMM panels: forward, input gradient and the
# weight gradient item.

# ------------------------------------------------------------ im2col / 1x1

cdef void _gemm_backward_weight_item(Py_ssize_t i, const floating *x, const floating *go,
                                     floating *gw, floating *partial, floating *work,
                                     Py_ssize_t groups, Py_ssize_t tile, Py_ssize_t ntiles,
                                     const cf_geom *g) noexcept nogil:
    """Item (n, group, tile): adds go(tile) @ columns(tile)^T into this thread's
    partial weight gradient: thread 0 into gw itself, thread t into partial t-1."""
    cdef Py_ssize_t t = i % ntiles
    i = i // ntiles
    cdef Py_ssize_t grp = i % groups
    cdef Py_ssize_t n = i // groups
    cdef Py_ssize_t DHW = g.D * g.H * g.W, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t R = g.C * g.KD * g.KH * g.KW
    cdef Py_ssize_t p0 = t * tile, cnt = min(tile, P - p0)
    cdef int tid = cf_thread_num()
    cdef const floating *xp = x + (n * groups + grp) * g.C * DHW
    cdef const floating *cols
    cdef Py_ssize_t ldcols
    if _is_pointwise_identity(g):
        cols = xp + p0
        ldcols = DHW
    else:
        work = work + tid * R * tile
        _kernels(<floating> 0).vol2col(xp, work, p0, cnt, g)
        cols = work
        ldcols = cnt
    gemm_row_major(False, True, <int> g.K, <int> R, <int> cnt, <floating> 1,
          go + (n * groups + grp) * g.K * P + p0, <int> P, cols, <int> ldcols, <floating> 1,
          (gw if tid == 0 else partial + (tid - 1) * groups * g.K * R) + grp * g.K * R, <int> R)



# ------------------------------------------------------------ packed forward

cdef struct _packed_job:
    const void *x          # input, (N, groups*C, D, H, W)
    const void *x_end      # end of x
    const void *apk        # packed weights, per group Kr*R
    const void *bias       # NULL or groups*K
    void *out
    void *xpad             # per thread: one image's padded group planes (+ slack)
    void *panels           # per thread: column panels of one tile (+ slack)
    Py_ssize_t *padded_id  # per thread: which (n, group) xpad holds, -1 none
    Py_ssize_t *runs       # per thread: the packing's run table
    void *awork            # per thread: 4*kc elements for gemm_in_place
    Py_ssize_t groups, tile, ntiles, Kr, xpad_size, panels_size, runs_size, kc
    Py_ssize_t a_rs, a_ks  # apk is the weights read in place, (i, k) at i*a_rs + k*a_ks;
                           # a_rs == 0: apk is packed
    bint in_place          # no padding: pack straight from x
    _epilogue ep           # forward: a fused layer's residual add and activation
    Py_ssize_t nchunks, cchunk  # input gradient: channel chunks per (image, group), size


cdef inline void _job_gemm(const _packed_job *job, const floating *a, const floating *panels,
                           Py_ssize_t m, Py_ssize_t n, Py_ssize_t depth, floating *c,
                           Py_ssize_t ldc, const floating *bias, int tid) noexcept nogil:
    """C = A @ panels (+ bias), A packed or read in place as the job says."""
    if job.a_rs == 0:
        _kernels(<floating> 0).gemm_packed(a, panels, m, n, depth, c, ldc, bias, 0, job.kc)
    else:
        _kernels(<floating> 0).gemm_in_place(a, job.a_rs, job.a_ks, panels, m, n, depth, c, ldc,
                                             bias, 0, job.kc,
                                             (<floating *> job.awork) + tid * 4 * job.kc)


cdef void _packed_forward_item(Py_ssize_t i, const _packed_job *job, const cf_geom *g,
                               const cf_geom *gp, floating dummy) noexcept nogil:
    """Item (n, group, tile): pack the tile's columns (from this thread's padded
    copy of the image), out[n, group, :, tile] = W_group @ panels + bias."""
    cdef Py_ssize_t t = i % job.ntiles
    cdef Py_ssize_t ng = i // job.ntiles
    cdef Py_ssize_t grp = ng % job.groups
    cdef int tid = cf_thread_num()
    cdef Py_ssize_t DHW = g.D * g.H * g.W, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t R = g.C * g.KD * g.KH * g.KW
    cdef Py_ssize_t p0 = t * job.tile, cnt = min(job.tile, P - p0)
    cdef const floating *xg = (<const floating *> job.x) + ng * g.C * DHW
    cdef const floating *src = xg
    cdef const floating *src_end = <const floating *> job.x_end
    cdef floating *xpad = (<floating *> job.xpad) + tid * job.xpad_size
    cdef floating *panels = (<floating *> job.panels) + tid * job.panels_size
    cdef const floating *bias = NULL
    if job.bias != NULL:
        bias = (<const floating *> job.bias) + grp * g.K
    if not job.in_place:
        src = _thread_padded_image(xg, xpad, &job.padded_id[tid], ng, g, gp)
        src_end = xpad + job.xpad_size
    cdef Py_ssize_t *runs = job.runs + tid * job.runs_size
    _kernels(<floating> 0).gemm_pack_columns(src, src_end, panels, p0, cnt, runs,
                          gp)
    cdef floating *o = (<floating *> job.out) + ng * g.K * P + p0
    _job_gemm(job, (<const floating *> job.apk) + grp * (g.K if job.a_rs else job.Kr) * R,
              panels, g.K, cnt, R, o, P, bias, tid)
    _epilogue_rows(&job.ep, o, g.K, P, cnt)


cdef void _packed_forward(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] w,
                          const floating *bias, floating[:, :, :, :, ::1] out, cf_geom g,
                          Py_ssize_t groups, tuple padding, tuple gemm, int nthreads,
                          const _epilogue *ep) except *:
    """The im2col forward on the packed GEMM. Items (n, group, tile) own
    out[n, group, :, tile]; a thread pads each image it meets once. gemm:
    the plan's (tile, weights_in_place, reduction_chunk)."""
    cdef Py_ssize_t N = x.shape[0], P = g.OD * g.OH * g.OW, R = g.C * g.KD * g.KH * g.KW
    cdef Py_ssize_t mr, nr, vw = _vector_width(<floating> 0), grp, i, nitems
    mr, nr = _kernels(<floating> 0).gemm_mr, _kernels(<floating> 0).gemm_nr
    cdef cf_geom gp = g
    cdef _packed_job job
    # Pack straight from x only when no window reaches outside it: `padding`
    # is the padding before, and 'same' can pad after the input alone.
    job.in_place = padding == (0, 0, 0) and _windows_inside(&g)
    if _is_pointwise_identity(&g):
        # the planes are the columns: one run per panel instead of one per row
        gp.D = gp.H = gp.OD = gp.OH = 1
        gp.W = gp.OW = P
    elif not job.in_place:
        # the extent the windows reach, padding included
        gp.D, gp.H, gp.W = [(o - 1) * s + (k - 1) * d + 1 for o, k, s, d in
                            zip((g.OD, g.OH, g.OW), (g.KD, g.KH, g.KW), (g.sd, g.sh, g.sw),
                                (g.dd, g.dh, g.dw))]
        gp.pd = gp.ph = gp.pw = 0
    job.groups = groups
    job.ep = ep[0]
    job.Kr = (g.K + 3) // 4 * 4
    job.tile, weights_in_place, job.kc = gemm
    job.ntiles = (P + job.tile - 1) // job.tile
    job.xpad_size = 0 if job.in_place else g.C * gp.D * gp.H * gp.W + vw * g.sw
    job.panels_size = job.tile * R
    job.runs_size = 3 * job.tile + job.tile // nr + 2
    # the weights in place (A = W_group, K x R), or packed
    job.a_rs = job.a_ks = 0
    if weights_in_place:
        job.a_rs, job.a_ks = R, 1
    dtype = _dtype_of(<floating> 0)
    apk = work_array("gemm_a", 1 if job.a_rs else groups * job.Kr * R, dtype)
    awork = work_array("gemm_awork", nthreads * 4 * job.kc, dtype)
    xpad = work_array("gemm_xpad", nthreads * job.xpad_size, dtype)
    panels = work_array("gemm_panels", nthreads * job.panels_size, dtype)
    padded_id = work_array("gemm_padded_id", nthreads, np.intp)
    padded_id[:] = -1
    runs = work_array("gemm_runs", nthreads * job.runs_size, np.intp)
    cdef floating[::1] apk_v = apk, xpad_v = xpad, panels_v = panels, awork_v = awork
    cdef Py_ssize_t[::1] padded_id_v = padded_id, runs_v = runs
    job.x = &x[0, 0, 0, 0, 0]
    job.x_end = &x[0, 0, 0, 0, 0] + N * x.shape[1] * x.shape[2] * x.shape[3] * x.shape[4]
    job.apk = &w[0, 0, 0, 0, 0] if job.a_rs else &apk_v[0]
    job.awork = &awork_v[0]
    job.bias = bias
    job.out = &out[0, 0, 0, 0, 0]
    job.xpad = &xpad_v[0]
    job.panels = &panels_v[0]
    job.padded_id = &padded_id_v[0]
    job.runs = &runs_v[0]
    nitems = N * groups * job.ntiles
    with nogil:
        for grp in range(groups if not job.a_rs else 0):
            _kernels(<floating> 0).gemm_pack_rows(&w[0, 0, 0, 0, 0] + grp * g.K * R, g.K, R, R, 1,
                               &apk_v[0] + grp * job.Kr * R)
        if nthreads > 1:
            for i in prange(nitems, num_threads=nthreads, schedule='guided'):
                _packed_forward_item(i, &job, &g, &gp, <floating> 0)
        else:
            for i in range(nitems):
                _packed_forward_item(i, &job, &g, &gp, <floating> 0)


cdef void _packed_backward_input_item(Py_ssize_t i, const _packed_job *job, const cf_geom *g,
                                      const cf_geom *gg, floating dummy) noexcept nogil:
    """Pointwise: item (n, group, tile) owns gx[n, group, :, tile] = W^T @ go(tile).
    Otherwise item (n, group, channel chunk) owns those channels' planes of
    gx[n, group] and adds col2im of each tile's rows of W^T @ go into them
    (windows of different tiles overlap; a chunk's rows reach its own
    channels only). gg: grad_out's planes seen as a 1x1 convolution input,
    so its panels pack like columns."""
    cdef Py_ssize_t DHW = g.D * g.H * g.W, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t KVOL = g.KD * g.KH * g.KW, R = g.C * KVOL
    cdef int tid = cf_thread_num()
    cdef Py_ssize_t t, t0 = 0, t1 = job.ntiles, ng = i, p0, cnt, cq = 0, c0 = 0, rows = R
    cdef cf_geom gc = g[0]
    if job.in_place:  # pointwise
        t0 = i % job.ntiles
        t1 = t0 + 1
        ng = i // job.ntiles
    else:
        cq = i % job.nchunks
        ng = i // job.nchunks
        c0 = cq * job.cchunk
        gc.C = min(job.cchunk, g.C - c0)
        rows = gc.C * KVOL
    cdef Py_ssize_t grp = ng % job.groups
    cdef const floating *go = (<const floating *> job.x) + ng * g.K * P
    cdef const floating *go_end = <const floating *> job.x_end
    # this chunk's rows of W_group^T: read in place from row c0*KVOL, or
    # packed on their own (row blocks start at the chunk)
    cdef const floating *apk = (<const floating *> job.apk) + (
        grp * R * g.K + c0 * KVOL if job.a_rs else (grp * job.nchunks + cq) * job.Kr * g.K)
    cdef floating *gx = (<floating *> job.out) + ng * g.C * DHW + c0 * DHW
    cdef floating *panels = (<floating *> job.panels) + tid * job.panels_size
    cdef floating *gcol = (<floating *> job.xpad) + tid * job.xpad_size
    cdef Py_ssize_t *runs = job.runs + tid * job.runs_size
    if not job.in_place:
        memset(gx, 0, gc.C * DHW * sizeof(floating))
    cdef const floating *bias = <const floating *> job.bias
    if bias != NULL:
        bias += grp * g.C + c0
    for t in range(t0, t1):
        p0 = t * job.tile
        cnt = min(job.tile, P - p0)
        _kernels(<floating> 0).gemm_pack_columns(go, go_end, panels, p0, cnt, runs, gg)
        if job.in_place:
            _job_gemm(job, apk, panels, R, cnt, g.K, gx + p0, DHW, bias, tid)
        else:
            _job_gemm(job, apk, panels, rows, cnt, g.K, gcol, cnt, NULL, tid)
            _kernels(<floating> 0).col2vol(gcol, gx, p0, cnt, &gc)
    if bias != NULL and not job.in_place:   # the chunk's planes, still in cache
        for t in range(gc.C):
            _add_to_plane(gx + t * DHW, DHW, bias[t])


def input_grad_channel_chunks(Py_ssize_t items, Py_ssize_t C, int nthreads, bint pointwise):
    """(chunks, channels per chunk) of the input gradient's packed GEMM for
    `items` (images x groups) of C channels each: with fewer than 2 items
    per thread (batch 1, or a batch stacked into one image) the channels are
    cut into chunks, each its own item, so every thread works (batch 1 ran
    on one thread). The planner sizes the work arrays by the same split."""
    cdef Py_ssize_t n = 1
    if nthreads > 1 and not pointwise and 0 < items < 2 * nthreads:
        n = min((2 * nthreads + items - 1) // items, C)
    cdef Py_ssize_t size = (C + n - 1) // n
    return (C + size - 1) // size, size


cdef inline void _pack_input_grad_chunk(Py_ssize_t i, const floating *w, floating *apk,
                                        const _packed_job *job, const cf_geom *g) noexcept nogil:
    """Pack item i = (group, chunk): the chunk's rows of W_group^T."""
    cdef Py_ssize_t KVOL = g.KD * g.KH * g.KW, R = g.C * KVOL
    cdef Py_ssize_t grp = i // job.nchunks, c0 = i % job.nchunks * job.cchunk
    _kernels(<floating> 0).gemm_pack_rows(w + grp * g.K * R + c0 * KVOL,
                                          min(job.cchunk, g.C - c0) * KVOL, g.K, 1, R,
                                          apk + i * job.Kr * g.K)


cdef void _packed_backward_input(const floating[:, :, :, :, ::1] grad_out,
                                 const floating[:, :, :, :, ::1] w,
                                 floating[:, :, :, :, ::1] grad_x, cf_geom g, Py_ssize_t groups,
                                 tuple gemm, int nthreads, const floating *bias) except *:
    """im2col's input gradient on the packed GEMM: W^T packed once, grad_out
    tiles packed into panels, the product added back through col2im (job.x is
    grad_out, job.out grad_x, job.xpad the per-thread column tiles). gemm: the
    plan's (tile, weights_in_place, reduction_chunk)."""
    cdef Py_ssize_t N = grad_x.shape[0], P = g.OD * g.OH * g.OW, R = g.C * g.KD * g.KH * g.KW
    cdef Py_ssize_t nr, grp, i, nitems
    nr = _kernels(<floating> 0).gemm_nr
    cdef _packed_job job
    cdef cf_geom gg = _geometry(g.K, 1, 1, P, 0, 1, 1, P, (1, 1, 1), (1, 1, 1), (0, 0, 0),
                                (1, 1, 1))
    job.in_place = _is_pointwise_identity(&g)
    job.groups = groups
    job.ep = _no_epilogue()
    job.nchunks, job.cchunk = input_grad_channel_chunks(N * groups, g.C, nthreads, job.in_place)
    cdef Py_ssize_t KVOL = g.KD * g.KH * g.KW, npack
    job.Kr = (job.cchunk * KVOL + 3) // 4 * 4   # packed rows per chunk
    job.tile, weights_in_place, job.kc = gemm
    job.ntiles = (P + job.tile - 1) // job.tile
    job.xpad_size = 0 if job.in_place else R * job.tile
    job.panels_size = job.tile * g.K
    job.runs_size = 3 * job.tile + job.tile // nr + 2
    # W^T in place ((r, k) at k*R + r), or packed
    job.a_rs = job.a_ks = 0
    if weights_in_place:
        job.a_rs, job.a_ks = 1, R
    dtype = _dtype_of(<floating> 0)
    apk = work_array("gemm_a", 1 if job.a_rs else groups * job.nchunks * job.Kr * g.K, dtype)
    awork = work_array("gemm_awork", nthreads * 4 * job.kc, dtype)
    gcol = work_array("gemm_xpad", nthreads * job.xpad_size, dtype)
    panels = work_array("gemm_panels", nthreads * job.panels_size, dtype)
    runs = work_array("gemm_runs", nthreads * job.runs_size, np.intp)
    cdef floating[::1] apk_v = apk, gcol_v = gcol, panels_v = panels, awork_v = awork
    cdef Py_ssize_t[::1] runs_v = runs
    job.x = &grad_out[0, 0, 0, 0, 0]
    job.x_end = &grad_out[0, 0, 0, 0, 0] + N * groups * g.K * P
    job.apk = &w[0, 0, 0, 0, 0] if job.a_rs else &apk_v[0]
    job.awork = &awork_v[0]
    job.bias = bias
    job.out = &grad_x[0, 0, 0, 0, 0]
    job.xpad = &gcol_v[0]
    job.panels = &panels_v[0]
    job.padded_id = NULL
    job.runs = &runs_v[0]
    nitems = N * groups * (job.ntiles if job.in_place else job.nchunks)
    npack = 0 if job.a_rs else groups * job.nchunks
    with nogil:
        # A = W_group^T (R x K), each chunk's rows packed on their own
        if nthreads > 1 and npack > 1:
            for i in prange(npack, num_threads=nthreads, schedule='guided'):
                _pack_input_grad_chunk(i, &w[0, 0, 0, 0, 0], &apk_v[0], &job, &g)
        else:
            for i in range(npack):
                _pack_input_grad_chunk(i, &w[0, 0, 0, 0, 0], &apk_v[0], &job, &g)
        if nthreads > 1:
            for i in prange(nitems, num_threads=nthreads, schedule='guided'):
                _packed_backward_input_item(i, &job, &g, &gg, <floating> 0)
        else:
            for i in range(nitems):
                _packed_backward_input_item(i, &job, &g, &gg, <floating> 0)
