# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Convolution kernels: direct, im2col, 1x1 and Winograd, forward and backward.

Arrays arrive 5-D (N, C, D, H, W) -- 1-D and 2-D convolutions use unit D/H --
C-contiguous and native-endian, already validated and allocated by
cnnfast.functional; this module only computes, with the GIL released.

Parallel work is cut into items that each own a disjoint part of the result
(owner computes), handed out `guided` (large chunks first, small ones at the
end): a thread that is descheduled -- another process on its core -- takes
fewer items instead of holding every other thread at the end of the region,
and since an item owns its outputs the result does not depend on which
thread ran it. The only cross-item reduction, im2col's weight gradient,
goes through per-thread buffers summed in thread order over a `static`
split, so results are bit-identical run to run for a given thread count. With one thread the loops
run without entering an OpenMP region at all (safe in a forked child).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from ._blas cimport gemm_row_major
from ._omp cimport cf_thread_num
from .conv_kernels cimport *

from itertools import product
from math import gcd

import numpy as np

from ._workspace import work_array

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


# ---------------------------------------------------------------- queries

def kernel_tiles(dtype):
    """The running kernel table's tile sizes for dtype (float32/float64): the
    planner (cnnfast._plan) sizes GEMM tiles and work arrays by them."""
    cdef const cf_conv_kernels *k = cf_conv_kernels_for(np.dtype(dtype) == np.float64)
    return {"isa": k.isa, "vector_width": k.vector_width, "gemm_mr": k.gemm_mr,
            "gemm_nr": k.gemm_nr, "lanes_block": k.lanes_block}


def lanes_waste(dtype, Py_ssize_t K, Py_ssize_t N, tuple reach, tuple out_size, tuple kernel,
                tuple dilation, bint batch):
    """Positions the channels-in-lanes forward computes per output for K
    channels, tiling positions of the padded plane (extent `reach`, stride 1)
    or, with batch, the N images: the kernel family's own count
    (csrc/conv/conv_direct_lanes.h), for the planner's choice between them."""
    cdef const cf_conv_kernels *k = cf_conv_kernels_for(np.dtype(dtype) == np.float64)
    cdef cf_geom g = _geometry(0, reach[0], reach[1], reach[2], K, out_size[0], out_size[1],
                               out_size[2], kernel, (1, 1, 1), (0, 0, 0), dilation)
    return k.direct_cv_waste(K, N, &g, batch)


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


# ---------------------------------------------------------------- drivers

def conv_forward(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] w,
                 const floating[::1] bias, floating[:, :, :, :, ::1] out,
                 tuple stride, tuple padding, tuple dilation, Py_ssize_t groups,
                 str kernel, tuple gemm, int pad_mode, int nthreads, tuple clamp=None,
                 const floating[:, :, :, :, ::1] residual=None):
    """out = conv(x, w) + bias with the plan's kernel (cnnfast._plan): "gemm"
    (gemm = (tile, weights_in_place, reduction_chunk)), "direct_lanes",
    "direct_lanes_batch" (zero padding only), "direct_rows" or "winograd"
    (zero padding only; non-finite values: the direct_rows result). `bias`
    may be empty (no bias). A fused layer's epilogue: `residual` (shaped as
    out) added, then the activation `clamp` = (lo, hi) (ReLU: (0, inf)), on
    each output tile right after it is stored (Winograd: one pass over out
    after the transforms). pad_mode
    (CF_PAD_*) is what the padded copies hold."""
    cdef Py_ssize_t N = x.shape[0]
    cdef cf_geom g = _geometry(x.shape[1] // groups, x.shape[2], x.shape[3], x.shape[4],
                               w.shape[0] // groups, out.shape[2], out.shape[3], out.shape[4],
                               (w.shape[2], w.shape[3], w.shape[4]), stride, padding, dilation)
    g.pad_mode = pad_mode
    cdef Py_ssize_t P = g.OD * g.OH * g.OW
    if N == 0 or P == 0:
        return
    cdef const floating *bp = &bias[0] if bias.shape[0] > 0 else NULL
    cdef _epilogue ep = _no_epilogue()
    if clamp is not None:
        ep.clamp = True
        ep.lo, ep.hi = clamp
    ep.active = ep.clamp or residual is not None
    ep.out = &out[0, 0, 0, 0, 0]
    if residual is not None:
        ep.res = &residual[0, 0, 0, 0, 0]
    cdef Py_ssize_t n, planes = out.shape[1]
    cdef floating[::1] xt_v
    if kernel == "gemm":
        _packed_forward(x, w, bp, out, g, groups, padding, gemm, nthreads, &ep)
    elif kernel == "direct_lanes_batch":
        if pad_mode != CF_PAD_ZEROS:
            raise ValueError("direct_lanes_batch pads with zeros only")
        xt = _batch_innermost(x, &g)
        xt_v = xt.reshape(-1)
        _cv_forward(&xt_v[0], &w[0, 0, 0, 0, 0], bp, &out[0, 0, 0, 0, 0], N, g, groups,
                    nthreads, True, False, &ep)
    elif kernel == "direct_lanes":
        _cv_forward(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bp, &out[0, 0, 0, 0, 0], N, g, groups,
                    nthreads, False, False, &ep)
    elif kernel == "direct_rows":
        _direct_rows_forward(x, w, bp, out, &g, groups, stride, padding, dilation, nthreads,
                             &ep, pad_mode)
    elif kernel == "winograd":
        if pad_mode != CF_PAD_ZEROS:
            raise ValueError("winograd reads zero padding only")
        # non-finite weights or inputs: the direct result (a tile mixes values)
        if not _winograd_forward(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bp, &out[0, 0, 0, 0, 0],
                                 N, g, groups, <Py_ssize_t> gemm[2], nthreads):
            _direct_rows_forward(x, w, bp, out, &g, groups, stride, padding, dilation,
                                 nthreads, &ep)
        elif ep.active:
            # the output transform writes 4x4 tiles of all channels: the
            # epilogue is one pass per image instead
            with nogil:
                if nthreads > 1 and N > 1:
                    for n in prange(N, num_threads=nthreads, schedule='guided'):
                        _epilogue_rows(&ep, &out[0, 0, 0, 0, 0] + n * planes * P, planes, P, P)
                else:
                    for n in range(N):
                        _epilogue_rows(&ep, &out[0, 0, 0, 0, 0] + n * planes * P, planes, P, P)
    else:
        raise ValueError(f"unknown forward kernel {kernel!r}")


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


def pointwise_rows_weight(const floating[:, ::1] grad_out, const floating[:, ::1] x,
                          floating[:, ::1] grad_w, int nthreads):
    """grad_w (K, C) = grad_out (P, K).T @ x (P, C): the weight gradient of
    pointwise_rows' forward; threads own chunks of the C columns."""
    cdef Py_ssize_t P = x.shape[0], C = x.shape[1], K = grad_out.shape[1]
    # the C columns split among threads, at least 16 each
    cdef Py_ssize_t t, chunks = max(1, min(<Py_ssize_t> nthreads, C // 16))
    if C == 0 or K == 0:
        return
    if P == 0:
        grad_w[:, :] = 0
        return
    cdef const floating *gop = &grad_out[0, 0]
    cdef const floating *xp = &x[0, 0]
    cdef floating *gwp = &grad_w[0, 0]
    with nogil:
        if chunks > 1:
            for t in prange(chunks, num_threads=chunks, schedule='static'):
                _pointwise_weight_chunk(t, chunks, gop, xp, gwp, P, C, K)
        else:
            _pointwise_weight_chunk(0, 1, gop, xp, gwp, P, C, K)


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
