# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# The direct kernel with output channels (or images) in the vector lanes.

# ------------------------------------------------- direct, channels in lanes

cdef struct _cv_job:
    const void *x          # input, (N, groups*C, D, H, W)
    const void *wpk        # packed weights, per group Kpad*R
    const void *bias       # packed bias, per group Kpad, or NULL
    void *out
    void *xpad             # per thread: one image's padded group planes
    Py_ssize_t *padded_id  # per thread: which (n, group) xpad holds, -1 none
    Py_ssize_t groups, nkb, kblock, Kpad, nq, qchunk, qend, xpad_size, N
    bint in_place          # no padding: read x itself
    bint batch             # x is the padded input with the batch innermost
    _epilogue ep           # a fused layer's residual add and activation


cdef void _cv_forward_item(Py_ssize_t i, const _cv_job *job, const cf_geom *g,
                           const cf_geom *gp, floating dummy) noexcept nogil:
    """Item (n, group, channel block, position chunk): owns those outputs.
    With the batch in the tile, items (group, channel block, chunk) own the
    chunk's outputs of every image."""
    cdef Py_ssize_t qc = i % job.nq
    i = i // job.nq
    cdef Py_ssize_t kb = i % job.nkb
    cdef Py_ssize_t ng = i // job.nkb
    cdef Py_ssize_t grp = ng % job.groups
    cdef int tid = cf_thread_num()
    cdef Py_ssize_t DHW = g.D * g.H * g.W, P = g.OD * g.OH * g.OW
    cdef Py_ssize_t R = g.C * g.KD * g.KH * g.KW
    cdef Py_ssize_t k0 = kb * job.kblock, nk = min(job.kblock, g.K - k0)
    cdef Py_ssize_t q0 = qc * job.qchunk, q1 = min(q0 + job.qchunk, job.qend)
    cdef const floating *w = (<const floating *> job.wpk) + grp * job.Kpad * R + k0 * R
    cdef const floating *b = NULL
    if job.bias != NULL:
        b = (<const floating *> job.bias) + grp * job.Kpad + k0
    cdef floating *o = (<floating *> job.out) + (ng * g.K + k0) * P
    cdef Py_ssize_t n, r
    if job.batch:  # ng is the group alone
        _kernels(<floating> 0).direct_forward_cv_batch(
            (<const floating *> job.x) + ng * g.C * gp.D * gp.H * gp.W * job.N, job.N, w, b,
            o, job.groups * g.K * P, q0, q1, nk, gp)
        if job.ep.active:  # positions [q0, q1) of every image
            for n in range(job.N):
                _epilogue_rows(&job.ep, o + n * job.groups * g.K * P + q0, nk, P, q1 - q0)
        return
    cdef const floating *xg = (<const floating *> job.x) + ng * g.C * DHW
    cdef const floating *src = xg
    if not job.in_place:
        src = _thread_padded_image(xg, (<floating *> job.xpad) + tid * job.xpad_size,
                                   &job.padded_id[tid], ng, g, gp)
    _kernels(<floating> 0).direct_forward_cv(src, w, b, o, q0, q1, nk, gp)
    if job.ep.active:  # the output rows of padded-plane rows [q0/W, q1/W) (q0 % W == 0)
        for r in range(q0 // gp.W, (q1 + gp.W - 1) // gp.W):
            if r % gp.H < g.OH:
                _epilogue_rows(&job.ep, o + (r // gp.H * g.OH + r % gp.H) * g.OW, nk, P, g.OW)


cdef tuple _reach(const cf_geom *g):
    """The padded input extent the windows reach: (o-1)*s + (k-1)*d + 1 per dim."""
    return ((g.OD - 1) * g.sd + (g.KD - 1) * g.dd + 1, (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1,
            (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1)


cdef object _batch_innermost(const floating[:, :, :, :, ::1] x, const cf_geom *g):
    """New (groups*C, Dp, Hp, Wp, N) array: x padded to the extent the windows
    reach (zeros around, cropped past it), batch innermost."""
    cdef tuple ext = _reach(g)
    shape = (x.shape[1],) + ext + (x.shape[0],)
    xt = work_array("cv_xt", np.prod(shape), _dtype_of(<floating> 0)).reshape(shape)
    xt[...] = 0
    pads = (g.pd, g.ph, g.pw)
    keep = [max(0, min(n, e - p)) for n, e, p in zip((g.D, g.H, g.W), ext, pads)]
    if min(keep) > 0:
        xt[:, pads[0]:pads[0] + keep[0], pads[1]:pads[1] + keep[1], pads[2]:pads[2] + keep[2]] = (
            np.asarray(x)[:, :, :keep[0], :keep[1], :keep[2]].transpose(1, 2, 3, 4, 0))
    return xt


cdef bint _cv_forward(const floating *x, const floating *w, const floating *bias,
                      floating *out, Py_ssize_t N, cf_geom g, Py_ssize_t groups,
                      int nthreads, bint batch=False, bint finite_weights=False,
                      const _epilogue *ep=NULL) except -1:
    """Direct forward with output channels in the vector lanes. Stride 1:
    items (n, group, channel block, position chunk) own their outputs and a
    thread pads each image it meets once (not at all without padding).
    batch: x is _batch_innermost's array (any stride); items (group, channel
    block, position chunk). finite_weights: compute nothing and return False
    if a weight is NaN or infinite (found while packing them); else True."""
    cdef Py_ssize_t R = g.C * g.KD * g.KH * g.KW, vw = _vector_width(<floating> 0)
    cdef Py_ssize_t i, grp, nitems
    cdef cf_geom gp = g
    cdef _cv_job job
    gp.D, gp.H, gp.W = _reach(&g)
    job.batch = batch
    job.N = N
    job.ep = ep[0] if ep != NULL else _no_epilogue()
    job.in_place = batch or (g.pd == 0 and g.ph == 0 and g.pw == 0
                             and gp.D == g.D and gp.H == g.H and gp.W == g.W)
    gp.pd = gp.ph = gp.pw = 0
    job.groups = groups
    job.kblock = _kernels(<floating> 0).lanes_block
    job.nkb = (g.K + job.kblock - 1) // job.kblock
    job.Kpad = (g.K + vw - 1) // vw * vw
    cdef Py_ssize_t images = 1 if batch else N
    # one chunk per (image, group, block) unless that leaves threads idle
    job.nq = 1
    if nthreads > 1:
        job.nq = max(1, (4 * nthreads + images * groups * job.nkb - 1)
                     // (images * groups * job.nkb))
    if batch:  # chunks of output positions
        job.qend = g.OD * g.OH * g.OW
        job.qchunk = (job.qend + job.nq - 1) // job.nq
    else:  # chunks of whole rows of the padded plane
        job.qend = ((g.OD - 1) * gp.H + g.OH - 1) * gp.W + g.OW
        job.qchunk = max((job.qend + job.nq - 1) // job.nq, 24)
        job.qchunk = (job.qchunk + gp.W - 1) // gp.W * gp.W
    job.nq = (job.qend + job.qchunk - 1) // job.qchunk
    job.xpad_size = 0 if job.in_place else g.C * gp.D * gp.H * gp.W
    dtype = _dtype_of(<floating> 0)
    wpk = work_array("cv_wpk", groups * job.Kpad * R, dtype)
    bpk = work_array("cv_bpk", groups * job.Kpad, dtype)
    xpad = work_array("cv_xpad", nthreads * job.xpad_size, dtype)
    padded_id = work_array("cv_padded_id", nthreads, np.intp)
    padded_id[:] = -1
    cdef floating[::1] wpk_v = wpk, bpk_v = bpk, xpad_v = xpad
    cdef Py_ssize_t[::1] padded_id_v = padded_id
    job.x = x
    job.wpk = &wpk_v[0]
    job.bias = &bpk_v[0] if bias != NULL else NULL
    job.out = out
    job.xpad = &xpad_v[0]
    job.padded_id = &padded_id_v[0]
    nitems = images * groups * job.nkb * job.nq
    cdef bint finite = True
    with nogil:
        for grp in range(groups):
            finite &= _kernels(<floating> 0).direct_cv_pack(
                w + grp * g.K * R, bias + grp * g.K if bias != NULL else NULL, g.K, R,
                &wpk_v[0] + grp * job.Kpad * R, &bpk_v[0] + grp * job.Kpad)
        if finite_weights and not finite:
            nitems = 0
        if nthreads > 1:
            for i in prange(nitems, num_threads=nthreads, schedule='guided'):
                _cv_forward_item(i, &job, &g, &gp, <floating> 0)
        else:
            for i in range(nitems):
                _cv_forward_item(i, &job, &g, &gp, <floating> 0)
    return finite or not finite_weights
