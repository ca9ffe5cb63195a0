# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Depthwise convolution (groups == C, K = C*M outputs): forward, input and
weight gradient, channels-first and channels-last, on the kernels of
csrc/depthwise/conv_depthwise.h.

Arrays arrive 5-D, C-contiguous, native-endian, validated and allocated by
cnnfast.functional: channels-first (N, C, D, H, W), channels-last (N, D, H,
W, C), weights (K, 1, KD, KH, KW). The plan (cnnfast._plan) gives the
partition (`split`) and the work arrays (`arrays`: name -> (elements,
kind)); this module computes, with the GIL released.

Items own disjoint outputs: channels-first (image, plane, block of rows),
channels-last (image and row, block of channels), so a batch of one image
keeps every thread busy. The weight gradient's items (channel, block of
batch rows; channels-last: block of batch rows, every channel) write partial
sums to their own slots, added in block order
afterwards; the blocks depend on the shape alone. No result depends on
which thread runs an item, so the items are handed out `guided`, as in
_conv.pyx (a descheduled thread takes fewer: on the loaded 2-core machine
a `static` split of (1, 32, 112, 112) at 2 threads took 2-7 ms against
0.3 ms), and every result is bit-identical for any thread count. With one
thread no OpenMP region is entered (safe in a forked child).
"""
from cpython.pycapsule cimport PyCapsule_New
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from ._omp cimport cf_thread_num
from .depthwise_kernels cimport *

import numpy as np

from ._workspace import work_array


cdef inline const cf_depthwise_kernels *_kernels(floating dummy) noexcept nogil:
    """The kernel table of this dtype for the running CPU (csrc/common/cf_isa.h)."""
    if floating is float:
        return cf_depthwise_kernels_for(0)
    else:
        return cf_depthwise_kernels_for(1)


def kernel_table(dtype):
    """The running CPU's kernel table for dtype, as a capsule named
    "cf_depthwise_kernels": how a driver of another module (the inverted-residual
    block, _block.pyx) calls these kernels without compiling them again."""
    return PyCapsule_New(<void *> cf_depthwise_kernels_for(np.dtype(dtype) == np.float64),
                         "cf_depthwise_kernels", NULL)


def kernel_info(dtype):
    """The running table's vector width and row-sum term size for dtype: the
    planner sizes the work arrays by them."""
    cdef const cf_depthwise_kernels *k = cf_depthwise_kernels_for(np.dtype(dtype) == np.float64)
    return {"isa": k.isa, "vector_width": k.vector_width, "tap_bytes": k.tap_bytes,
            "itemsize": np.dtype(dtype).itemsize}


cdef cf_geom _geometry(const floating[:, :, :, :, ::1] inp,
                       const floating[:, :, :, :, ::1] outp,
                       const floating[:, :, :, :, ::1] w, bint last, tuple stride,
                       tuple padding, tuple dilation, int mode):
    """The depthwise geometry of 5-D arrays on the input side (x or its
    gradient) and the output side (out or grad_out), channels-first or with
    `last` channels-last, and a weight-shaped array (K, 1, KD, KH, KW)."""
    cdef int s = 1 if last else 2
    cdef cf_geom g
    g.C = inp.shape[4] if last else inp.shape[1]
    g.K = w.shape[0]
    g.D, g.H, g.W = inp.shape[s], inp.shape[s + 1], inp.shape[s + 2]
    g.OD, g.OH, g.OW = outp.shape[s], outp.shape[s + 1], outp.shape[s + 2]
    g.KD, g.KH, g.KW = w.shape[2], w.shape[3], w.shape[4]
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = padding
    g.dd, g.dh, g.dw = dilation
    g.pad_mode = mode
    return g


cdef object _work(dict arrays, str name, floating dummy):
    """The plan's work array `name` (kind "f": this dtype, "i": intp)."""
    n, kind = arrays[name]
    return work_array(name, n, (np.float32 if floating is float else np.float64)
                      if kind == "f" else np.intp)


cdef inline Py_ssize_t _part(Py_ssize_t total, Py_ssize_t b, Py_ssize_t blocks) noexcept nogil:
    """Start of block b of `blocks` equal parts of [0, total)."""
    return total * b // blocks


# ----------------------------------------------------------- channels-first

cdef struct _job:
    const void *a            # x (forward, weight gradient) or grad_out (input gradient)
    const void *b            # weights (packed: channels-last), or grad_out (weight gradient)
    const void *bias         # channels-first: one value per plane, or NULL;
                             # channels-last: the packed bias (zeros: none)
    void *out                # the result, or the weight gradient's partial sums
    const void *zero         # a row (channels-first) or pixel (channels-last) of zeros
    char *work               # per-thread work, `stride` bytes apart
    Py_ssize_t stride, blocks, rows, M, vw, pstride
    const void *res          # fused residual (laid out as out) or NULL
    bint clamp, epilogue     # clamp to [lo, hi] (a fused activation); any epilogue at all
    double lo, hi


cdef _job _new_job(tuple split, Py_ssize_t M, Py_ssize_t rows, floating dummy):
    cdef _job j
    memset(&j, 0, sizeof(j))
    j.blocks, j.M, j.rows = split[0], M, rows
    j.vw = _kernels(<floating> 0).vector_width
    return j


cdef void _set_work(_job *j, object work, int nthreads):
    """Hand j each thread's slice of the work array `work`."""
    j.work = <char *> <Py_ssize_t> work.ctypes.data
    j.stride = work.nbytes // nthreads


cdef void _set_epilogue(_job *j, clamp, const void *res):
    """A fused layer's epilogue: res added, then the clamp (None, or (lo, hi))."""
    j.res, j.clamp, j.epilogue = res, clamp is not None, clamp is not None or res != NULL
    if clamp is not None:
        j.lo, j.hi = clamp


cdef void _forward_first_item(Py_ssize_t i, const _job *j, const cf_geom *g,
                              floating dummy) noexcept nogil:
    """Item (image, output plane, block of rows)."""
    cdef Py_ssize_t blk = i % j.blocks, plane = i // j.blocks   # plane = n*K + k
    cdef Py_ssize_t k = plane % g.K, n = plane // g.K
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, DHW = g.D * g.H * g.W
    cdef Py_ssize_t r0 = _part(j.rows, blk, j.blocks), r1 = _part(j.rows, blk + 1, j.blocks)
    cdef const floating *bias = NULL
    if j.bias != NULL:
        bias = (<const floating *> j.bias) + k
    cdef floating *o = (<floating *> j.out) + plane * P
    _kernels(<floating> 0).forward_planes(
        (<const floating *> j.a) + (n * g.C + k // j.M) * DHW,
        (<const floating *> j.b) + k * g.KD * g.KH * g.KW, bias, o, r0, r1, g, j.zero,
        j.work + cf_thread_num() * j.stride)
    cdef const floating *res = NULL
    if j.epilogue:   # the block's rows are one run of the plane
        if j.res != NULL:
            res = (<const floating *> j.res) + plane * P + r0 * g.OW
        _kernels(<floating> 0).epilogue(o + r0 * g.OW, res, 1, 0, (r1 - r0) * g.OW, j.clamp,
                                        j.lo, j.hi)


cdef void _input_first_item(Py_ssize_t i, const _job *j, const cf_geom *g,
                            floating dummy) noexcept nogil:
    """Item (image, input plane, block of rows)."""
    cdef Py_ssize_t blk = i % j.blocks, plane = i // j.blocks   # plane = n*C + c
    cdef Py_ssize_t c = plane % g.C, n = plane // g.C
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, DHW = g.D * g.H * g.W
    cdef const floating *bias = NULL
    if j.bias != NULL:
        bias = (<const floating *> j.bias) + c
    _kernels(<floating> 0).backward_input_planes(
        (<const floating *> j.a) + (n * g.K + c * j.M) * P,
        (<const floating *> j.b) + c * j.M * g.KD * g.KH * g.KW, bias,
        (<floating *> j.out) + plane * DHW, _part(j.rows, blk, j.blocks),
        _part(j.rows, blk + 1, j.blocks), j.M, g, j.work + cf_thread_num() * j.stride)


cdef void _weight_first_item(Py_ssize_t i, const _job *j, const cf_geom *g,
                             floating dummy) noexcept nogil:
    """Item (output channel, block of batch rows): its partial sums."""
    cdef Py_ssize_t blk = i % j.blocks, k = i // j.blocks
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, DHW = g.D * g.H * g.W, KV = g.KD * g.KH * g.KW
    _kernels(<floating> 0).backward_weight_planes(
        (<const floating *> j.a) + (k // j.M) * DHW, g.C * DHW,
        (<const floating *> j.b) + k * P, g.K * P,
        (<floating *> j.out) + (blk * g.K + k) * KV, _part(j.rows, blk, j.blocks),
        _part(j.rows, blk + 1, j.blocks), g, j.zero, j.work + cf_thread_num() * j.stride)


# the kinds of item _run hands out
cdef enum:
    FORWARD_FIRST, INPUT_FIRST, WEIGHT_FIRST, FORWARD_LAST, INPUT_LAST, WEIGHT_LAST


cdef inline void _item(int kind, Py_ssize_t i, const _job *j, const cf_geom *g,
                       floating dummy) noexcept nogil:
    if kind == FORWARD_FIRST:
        _forward_first_item(i, j, g, <floating> 0)
    elif kind == INPUT_FIRST:
        _input_first_item(i, j, g, <floating> 0)
    elif kind == WEIGHT_FIRST:
        _weight_first_item(i, j, g, <floating> 0)
    elif kind == FORWARD_LAST:
        _forward_last_item(i, j, g, <floating> 0)
    elif kind == INPUT_LAST:
        _input_last_item(i, j, g, <floating> 0)
    else:
        _weight_last_item(i, j, g, <floating> 0)


cdef void _run(int kind, Py_ssize_t nitems, const _job *j, const cf_geom *g, int nthreads,
               floating dummy) noexcept nogil:
    """Items [0, nitems) of `kind` over nthreads."""
    cdef Py_ssize_t i
    if nthreads > 1:
        for i in prange(nitems, num_threads=nthreads, schedule='guided'):
            _item(kind, i, j, g, <floating> 0)
    else:
        for i in range(nitems):
            _item(kind, i, j, g, <floating> 0)


cdef void _sum_blocks(const floating *part, floating *gw, Py_ssize_t C, Py_ssize_t M,
                      Py_ssize_t KV, Py_ssize_t Cp, Py_ssize_t blocks, bint last,
                      int nthreads) noexcept nogil:
    """gw[e] (e = (c*M + m)*KV + t) = the sum over the blocks, in block order,
    of their partials: part[b][e] (channels-first), or part[b][(m*KV + t)*Cp
    + c] (channels-last: channels innermost, Cp of them)."""
    cdef Py_ssize_t e, pstride = M * KV * Cp if last else C * M * KV
    if nthreads > 1:
        for e in prange(C * M * KV, num_threads=nthreads, schedule='guided'):
            gw[e] = _block_sum(part, e, C, M, KV, Cp, blocks, pstride, last)
    else:
        for e in range(C * M * KV):
            gw[e] = _block_sum(part, e, C, M, KV, Cp, blocks, pstride, last)


cdef inline floating _block_sum(const floating *part, Py_ssize_t e, Py_ssize_t C, Py_ssize_t M,
                                Py_ssize_t KV, Py_ssize_t Cp, Py_ssize_t blocks,
                                Py_ssize_t pstride, bint last) noexcept nogil:
    cdef Py_ssize_t b, off = e
    if last:
        off = e // (M * KV) + (e % (M * KV)) * Cp
    cdef floating s = part[off]
    for b in range(1, blocks):
        s = s + part[b * pstride + off]
    return s


def forward_first(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] w,
                  const floating[::1] bias, floating[:, :, :, :, ::1] out, tuple stride,
                  tuple padding, tuple dilation, int pad_mode, tuple split, dict arrays,
                  int nthreads, clamp=None,
                  const floating[:, :, :, :, ::1] residual=None):
    """out (N, K, OD, OH, OW) = depthwise conv of x (N, C, D, H, W) + bias
    (empty: none); a fused layer's `residual` added and ReLU applied to each
    block of rows right after it is stored."""
    cdef cf_geom g = _geometry(x, out, w, False, stride, padding, dilation, pad_mode)
    if x.shape[0] == 0:
        return
    cdef _job j = _new_job(split, g.K // g.C, g.OD * g.OH, <floating> 0)
    cdef floating[::1] zero = _work(arrays, "dw_zero", <floating> 0)
    zero[:] = 0
    _set_work(&j, _work(arrays, "dw_taps", <floating> 0), nthreads)
    j.a = &x[0, 0, 0, 0, 0]
    j.b = &w[0, 0, 0, 0, 0]
    j.bias = &bias[0] if bias.shape[0] > 0 else NULL
    j.out = &out[0, 0, 0, 0, 0]
    j.zero = &zero[0]
    _set_epilogue(&j, clamp, &residual[0, 0, 0, 0, 0] if residual is not None else NULL)
    with nogil:
        _run(FORWARD_FIRST, x.shape[0] * g.K * j.blocks, &j, &g, nthreads, <floating> 0)


def input_first(const floating[:, :, :, :, ::1] go, const floating[:, :, :, :, ::1] w,
                floating[:, :, :, :, ::1] gx, tuple stride, tuple padding, tuple dilation,
                tuple split, dict arrays, int nthreads, const floating[::1] bias=None):
    """gx (N, C, D, H, W) = the input gradient of a zero-padded depthwise
    conv for grad_out go (N, K, OD, OH, OW), plus `bias` per channel (a
    transposed convolution's) when given."""
    cdef cf_geom g = _geometry(gx, go, w, False, stride, padding, dilation, CF_PAD_ZEROS)
    if gx.shape[0] == 0:
        return
    cdef _job j = _new_job(split, g.K // g.C, g.D * g.H, <floating> 0)
    _set_work(&j, _work(arrays, "dw_taps", <floating> 0), nthreads)
    j.a = &go[0, 0, 0, 0, 0]
    j.b = &w[0, 0, 0, 0, 0]
    j.bias = &bias[0] if bias is not None and bias.shape[0] > 0 else NULL
    j.out = &gx[0, 0, 0, 0, 0]
    with nogil:
        _run(INPUT_FIRST, gx.shape[0] * g.C * j.blocks, &j, &g, nthreads, <floating> 0)


def weight_first(const floating[:, :, :, :, ::1] go, const floating[:, :, :, :, ::1] x,
                 floating[:, :, :, :, ::1] gw, tuple stride, tuple padding, tuple dilation,
                 int pad_mode, tuple split, dict arrays, int nthreads):
    """gw (K, 1, KD, KH, KW) = the weight gradient of a depthwise conv of x
    (N, C, D, H, W) for grad_out go (N, K, OD, OH, OW); zero for an empty
    batch."""
    cdef cf_geom g = _geometry(x, go, gw, False, stride, padding, dilation, pad_mode)
    if x.shape[0] == 0:
        np.asarray(gw)[...] = 0
        return
    cdef _job j = _new_job(split, g.K // g.C, x.shape[0] * g.OD * g.OH, <floating> 0)
    cdef floating[::1] zero = _work(arrays, "dw_zero", <floating> 0)
    cdef floating[::1] part
    zero[:] = 0
    _set_work(&j, _work(arrays, "dw_acc", <floating> 0), nthreads)
    j.a = &x[0, 0, 0, 0, 0]
    j.b = &go[0, 0, 0, 0, 0]
    j.zero = &zero[0]
    j.out = &gw[0, 0, 0, 0, 0]
    if j.blocks > 1:   # partial sums per block, added in block order
        part = _work(arrays, "dw_partial", <floating> 0)
        j.out = &part[0]
    with nogil:
        _run(WEIGHT_FIRST, g.K * j.blocks, &j, &g, nthreads, <floating> 0)
        if j.blocks > 1:
            _sum_blocks(<const floating *> j.out, &gw[0, 0, 0, 0, 0], g.C, j.M,
                        g.KD * g.KH * g.KW, 0, j.blocks, False, nthreads)


# ------------------------------------------------------------ channels-last

cdef void _pack_last(const floating *w, const floating *bias, Py_ssize_t C, Py_ssize_t M,
                     Py_ssize_t KV, Py_ssize_t Cp, floating *wpk, floating *bpk,
                     Py_ssize_t bias_rows) noexcept nogil:
    """wpk[m][t][c] = w[c*M + m][t]; bpk (bias_rows of Cp) = bias[c*M + m]
    (row m) or zeros; lanes c >= C zero."""
    cdef Py_ssize_t m, t, c
    memset(wpk, 0, M * KV * Cp * sizeof(floating))
    memset(bpk, 0, bias_rows * Cp * sizeof(floating))
    for m in range(M):
        for t in range(KV):
            for c in range(C):
                wpk[(m * KV + t) * Cp + c] = w[(c * M + m) * KV + t]
    if bias != NULL:
        for m in range(bias_rows):
            for c in range(C):
                bpk[m * Cp + c] = bias[c * M + m]


cdef inline void _channel_block(Py_ssize_t C, Py_ssize_t vw, Py_ssize_t b, Py_ssize_t blocks,
                                Py_ssize_t *c0, Py_ssize_t *c1) noexcept nogil:
    """Channels [c0, c1) of block b: whole vectors, the last block to C."""
    cdef Py_ssize_t nvec = (C + vw - 1) // vw
    c0[0] = _part(nvec, b, blocks) * vw
    c1[0] = min(_part(nvec, b + 1, blocks) * vw, C)


cdef void _forward_last_item(Py_ssize_t i, const _job *j, const cf_geom *g,
                             floating dummy) noexcept nogil:
    """Item (image and output row, block of channels); the kernel applies the
    epilogue before its stores."""
    cdef Py_ssize_t blk = i % j.blocks, r = i // j.blocks, c0, c1
    _channel_block(g.C, j.vw, blk, j.blocks, &c0, &c1)
    if c0 < c1:
        _kernels(<floating> 0).forward_last(j.a, j.b, j.bias, j.out, r, c0, c1, j.M, g, j.zero,
                                            j.work + cf_thread_num() * j.stride, j.res,
                                            j.clamp, j.lo, j.hi)


cdef void _input_last_item(Py_ssize_t i, const _job *j, const cf_geom *g,
                           floating dummy) noexcept nogil:
    """Item (image and input row, block of channels)."""
    cdef Py_ssize_t blk = i % j.blocks, r = i // j.blocks, c0, c1
    _channel_block(g.C, j.vw, blk, j.blocks, &c0, &c1)
    if c0 < c1:
        _kernels(<floating> 0).backward_input_last(j.a, j.b, j.bias, j.out, r, c0, c1, j.M,
                                                   g, j.work + cf_thread_num() * j.stride)


cdef void _weight_last_item(Py_ssize_t i, const _job *j, const cf_geom *g,
                            floating dummy) noexcept nogil:
    """Item (block of batch rows, all channels): its partial sums."""
    _kernels(<floating> 0).backward_weight_last(
        j.a, j.b, (<floating *> j.out) + i * j.pstride, _part(j.rows, i, j.blocks),
        _part(j.rows, i + 1, j.blocks), j.M, g, j.zero, j.work + cf_thread_num() * j.stride)


cdef Py_ssize_t _padded_channels(Py_ssize_t C, floating dummy) noexcept nogil:
    cdef Py_ssize_t vw = _kernels(<floating> 0).vector_width
    return (C + vw - 1) // vw * vw


cdef floating[::1] _pack_new(const floating[:, :, :, :, ::1] w, const floating[::1] bias,
                             Py_ssize_t C, Py_ssize_t M, Py_ssize_t KV, Py_ssize_t Cp,
                             object into):
    """w and bias packed (_pack_last) into the array `into` (of w's dtype)."""
    cdef floating[::1] wpk = into
    with nogil:
        _pack_last(&w[0, 0, 0, 0, 0], &bias[0] if bias.shape[0] > 0 else NULL, C, M, KV, Cp,
                   &wpk[0], &wpk[M * KV * Cp], M)
    return wpk


def pack_last(const floating[:, :, :, :, ::1] w, const floating[::1] bias, Py_ssize_t C):
    """The channels-last forward's packed weights of w (K, 1, KD, KH, KW), C
    input channels, and bias (empty: none): one new array, [M][KVOL][Cp]
    then [M][Cp] (forward_last's `packed`: a fused layer packs once)."""
    cdef Py_ssize_t KV = w.shape[2] * w.shape[3] * w.shape[4], M = w.shape[0] // C
    cdef Py_ssize_t Cp = _padded_channels(C, <floating> 0)
    return np.asarray(_pack_new(w, bias, C, M, KV, Cp, np.empty(
        M * (KV + 1) * Cp, np.float32 if floating is float else np.float64)))


def forward_last(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] w,
                 const floating[::1] bias, floating[:, :, :, :, ::1] out, tuple stride,
                 tuple padding, tuple dilation, int pad_mode, tuple split, dict arrays,
                 int nthreads, clamp=None,
                 const floating[:, :, :, :, ::1] residual=None,
                 const floating[::1] packed=None):
    """out (N, OD, OH, OW, K) = depthwise conv of x (N, D, H, W, C) + bias,
    channels in the vector lanes; epilogue as forward_first. packed: w and
    bias as pack_last gives them (then not packed again), or None."""
    cdef cf_geom g = _geometry(x, out, w, True, stride, padding, dilation, pad_mode)
    cdef Py_ssize_t KV = g.KD * g.KH * g.KW, M = g.K // g.C
    cdef Py_ssize_t Cp = _padded_channels(g.C, <floating> 0)
    if x.shape[0] == 0:
        return
    cdef _job j = _new_job(split, M, 0, <floating> 0)
    cdef const floating[::1] wpk
    cdef floating[::1] zero = _work(arrays, "dw_zero", <floating> 0)
    zero[:] = 0
    if packed is not None:
        if packed.shape[0] != M * (KV + 1) * Cp:
            raise ValueError("packed depthwise weights of another shape")
        wpk = packed
    else:
        wpk = _pack_new(w, bias, g.C, M, KV, Cp, _work(arrays, "dw_wpk", <floating> 0))
    _set_work(&j, _work(arrays, "dw_px", <floating> 0), nthreads)
    j.a = &x[0, 0, 0, 0, 0]
    j.b = &wpk[0]
    j.bias = &wpk[M * KV * Cp]
    j.out = &out[0, 0, 0, 0, 0]
    j.zero = &zero[0]
    _set_epilogue(&j, clamp, &residual[0, 0, 0, 0, 0] if residual is not None else NULL)
    with nogil:
        _run(FORWARD_LAST, x.shape[0] * g.OD * g.OH * j.blocks, &j, &g, nthreads, <floating> 0)


def input_last(const floating[:, :, :, :, ::1] go, const floating[:, :, :, :, ::1] w,
               floating[:, :, :, :, ::1] gx, tuple stride, tuple padding, tuple dilation,
               tuple split, dict arrays, int nthreads, const floating[::1] bias=None):
    """gx (N, D, H, W, C) = the input gradient of a zero-padded depthwise conv
    for grad_out go (N, OD, OH, OW, K), channels in the vector lanes, plus
    `bias` per channel (a transposed convolution's) when given."""
    cdef cf_geom g = _geometry(gx, go, w, True, stride, padding, dilation, CF_PAD_ZEROS)
    cdef Py_ssize_t KV = g.KD * g.KH * g.KW, M = g.K // g.C
    cdef Py_ssize_t Cp = _padded_channels(g.C, <floating> 0)
    if gx.shape[0] == 0:
        return
    cdef _job j = _new_job(split, M, 0, <floating> 0)
    cdef floating[::1] wpk = _work(arrays, "dw_wpk", <floating> 0)
    with nogil:
        _pack_last(&w[0, 0, 0, 0, 0], NULL, g.C, M, KV, Cp, &wpk[0], &wpk[M * KV * Cp], 1)
    if bias is not None and bias.shape[0] > 0:
        wpk[M * KV * Cp:M * KV * Cp + g.C] = bias
    _set_work(&j, _work(arrays, "dw_px", <floating> 0), nthreads)
    j.a = &go[0, 0, 0, 0, 0]
    j.b = &wpk[0]
    j.bias = &wpk[M * KV * Cp]
    j.out = &gx[0, 0, 0, 0, 0]
    with nogil:
        _run(INPUT_LAST, gx.shape[0] * g.D * g.H * j.blocks, &j, &g, nthreads, <floating> 0)


def weight_last(const floating[:, :, :, :, ::1] go, const floating[:, :, :, :, ::1] x,
                floating[:, :, :, :, ::1] gw, tuple stride, tuple padding, tuple dilation,
                int pad_mode, tuple split, dict arrays, int nthreads):
    """gw (K, 1, KD, KH, KW) = the weight gradient of a depthwise conv of x
    (N, D, H, W, C) for grad_out go (N, OD, OH, OW, K); zero for an empty
    batch."""
    cdef cf_geom g = _geometry(x, go, gw, True, stride, padding, dilation, pad_mode)
    cdef Py_ssize_t KV = g.KD * g.KH * g.KW, M = g.K // g.C
    cdef Py_ssize_t Cp = _padded_channels(g.C, <floating> 0)
    if x.shape[0] == 0:
        np.asarray(gw)[...] = 0
        return
    cdef _job j = _new_job(split, M, x.shape[0] * g.OD * g.OH, <floating> 0)
    cdef floating[::1] zero = _work(arrays, "dw_zero", <floating> 0)
    cdef floating[::1] part = _work(arrays, "dw_partial", <floating> 0)
    zero[:] = 0
    _set_work(&j, _work(arrays, "dw_px", <floating> 0), nthreads)
    j.pstride = M * KV * Cp
    j.a = &x[0, 0, 0, 0, 0]
    j.b = &go[0, 0, 0, 0, 0]
    j.out = &part[0]
    j.zero = &zero[0]
    with nogil:
        _run(WEIGHT_LAST, j.blocks, &j, &g, nthreads, <floating> 0)
        _sum_blocks(&part[0], &gw[0, 0, 0, 0, 0], g.C, M, KV, Cp, j.blocks, True, nthreads)
