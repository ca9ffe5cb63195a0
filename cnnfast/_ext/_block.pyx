# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The inverted-residual block (MobileNetV2's expand 1x1 -> depthwise ->
project 1x1), channels-last, as one driver call (cnnfast._inverted_residual
configures it): its three convolutions run band by band of output rows, so
the expanded activation (up to 4.8 MB at 112x112x96) and the depthwise
output never leave the core's L2. No kernel of its own: the NHWC direct
kernel (csrc/nhwc/conv_nhwc.h) runs both 1x1 convolutions over spans of
pixel rows, the channels-last depthwise kernel (csrc/depthwise) runs each
output row from tap rows held in a ring of expanded rows. Their tables come
from their own modules (kernel_table capsules): nothing is compiled twice.

A work item is (image, run of rows_per_item output rows). It expands the
input rows its first band needs into the ring, then per band of `band`
output rows: expands the rows the band adds (each input row once per item:
only the KH - stride rows shared with the item before are computed twice),
runs the depthwise rows into a band buffer, and projects the band into the
output (+ the residual, the block's input, when given). Every value is the
sum the three layers compute alone, in the same order: the result is
bit-identical to running them one by one, for any thread count and band.
Items are handed out `guided` (a thread slowed by another process takes
fewer); each thread has its own slice of the work array.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating
from cython.parallel cimport prange

from ._omp cimport cf_thread_num
from .conv_geom cimport cf_geom, cf_idx

import numpy as np

from . import _conv_nhwc, _depthwise

cdef extern from "nhwc_table.h" nogil:
    ctypedef struct cf_nhwc_kernels:
        cf_idx vector_width, block
        void (*forward)(const void *x, cf_idx xs, const void *w, const void *bias, void *out,
                        cf_idx os, const void *res, cf_idx p0, cf_idx p1, cf_idx nk,
                        cf_idx cchunk, int clamp, double lo, double hi, const void *zeros,
                        const void *next, cf_idx next_bytes, int mode,
                        const cf_geom *g) noexcept nogil

cdef extern from "conv_depthwise_table.h" nogil:
    ctypedef struct cf_depthwise_kernels:
        cf_idx vector_width
        void (*forward_last_rows)(void *work, const void *wpk, const void *bpk, void *out,
                                  const void *res, cf_idx c0, cf_idx c1, cf_idx M,
                                  const cf_geom *g, const void *zero, int clamp, double lo,
                                  double hi) noexcept nogil


cdef const cf_nhwc_kernels *_pw[2]
cdef const cf_depthwise_kernels *_dw[2]
for _i, _dt in enumerate((np.float32, np.float64)):
    _pw[_i] = <const cf_nhwc_kernels *> PyCapsule_GetPointer(
        _conv_nhwc.kernel_table(_dt), "cf_nhwc_kernels")
    _dw[_i] = <const cf_depthwise_kernels *> PyCapsule_GetPointer(
        _depthwise.kernel_table(_dt), "cf_depthwise_kernels")


ctypedef struct _block:
    # shapes: input (N, H, W, C), expanded E channels, output (N, OH, OW, K)
    Py_ssize_t N, H, W, C, E, OH, OW, K
    Py_ssize_t KH, KW, sh, sw, ph, pw
    Py_ssize_t band, ring, rows_per_item
    Py_ssize_t cchunk_e, cchunk_p, ebs_e, ebs_p        # ebs: elements of a packed weight block
    const void *x
    const void *we
    const void *be
    const void *wd
    const void *bd
    const void *wp
    const void *bp
    void *out
    bint residual
    int clamp[3]
    double lo[3]
    double hi[3]


def forward(const floating[::1] x, tuple x_shape, const floating[::1] we,
            const floating[::1] be, const floating[::1] wd, const floating[::1] wp,
            const floating[::1] bp, floating[::1] out, tuple out_shape, Py_ssize_t E,
            tuple kernel, tuple stride, tuple padding, Py_ssize_t cchunk_e, Py_ssize_t cchunk_p,
            Py_ssize_t band, Py_ssize_t ring, Py_ssize_t rows_per_item, floating[::1] work,
            Py_ssize_t per_thread, int nthreads, bint residual, tuple clamps):
    """out (N, OH, OW, K) = project(depthwise(expand(x))) (+ x when
    residual), x (N, H, W, C), flat and C-contiguous. we, be: the expansion's
    packed weights and bias (None, None: a block without one, E == C) (cnnfast._nhwc.pack_weights / pack_bias, input
    channels in chunks of cchunk_e); wd: the depthwise weights and bias
    packed by _depthwise.pack_last (E channels, multiplier 1, kernel (KH,
    KW), stride, zero padding (ph, pw)); wp, bp: the projection's, chunks of
    cchunk_p. clamps: three (lo, hi) or None, the stages' epilogues.
    work: nthreads slices of per_thread elements (cnnfast._inverted_residual
    sizes them: the ring of `ring` expanded rows, the band buffer, zeros and
    the depthwise row pointers)."""
    cdef _block b
    b.N, b.H, b.W, b.C = x_shape
    b.OH, b.OW, b.K = out_shape[1], out_shape[2], out_shape[3]
    b.E = E
    b.KH, b.KW = kernel
    b.sh, b.sw = stride
    b.ph, b.pw = padding
    b.band, b.ring, b.rows_per_item = band, ring, rows_per_item
    b.cchunk_e, b.cchunk_p = cchunk_e, cchunk_p
    cdef int t = 1 if floating is double else 0
    if b.N == 0 or b.OH == 0 or b.OW == 0:
        return
    if (band < 1 or rows_per_item < 1
            or (we is not None and ring < (band - 1) * b.sh + b.KH)
            or x.shape[0] < b.N * b.H * b.W * b.C or out.shape[0] < b.N * b.OH * b.OW * b.K
            or work.shape[0] < max(1, nthreads) * per_thread
            or (residual and (b.OH != b.H or b.OW != b.W or b.K != b.C))
            or (we is None and E != b.C)):
        raise ValueError("inverted residual block: arrays or configuration do not match")
    b.ebs_e = _pw[t].block * b.C
    b.ebs_p = _pw[t].block * E
    b.x = &x[0]
    b.we = &we[0] if we is not None else NULL
    b.be = &be[0] if we is not None and be.shape[0] else NULL
    b.wd = &wd[0]
    # the depthwise bias follows its weights (pack_last: [KH*KW][Cp] then [Cp])
    cdef Py_ssize_t vw = _dw[t].vector_width, cp = (E + vw - 1) // vw * vw
    if wd.shape[0] != (b.KH * b.KW + 1) * cp:
        raise ValueError("inverted residual block: depthwise weights of another shape")
    b.bd = &wd[b.KH * b.KW * cp]
    b.wp = &wp[0]
    b.bp = &bp[0] if bp.shape[0] else NULL
    b.out = &out[0]
    b.residual = residual
    cdef Py_ssize_t s
    for s in range(3):
        c = clamps[s]
        b.clamp[s] = c is not None
        b.lo[s], b.hi[s] = c if c is not None else (0.0, 0.0)
    cdef Py_ssize_t per_image = (b.OH + rows_per_item - 1) // rows_per_item
    cdef Py_ssize_t items = b.N * per_image, i
    with nogil:
        if nthreads > 1 and items > 1:
            for i in prange(items, num_threads=nthreads, schedule='guided'):
                _item(i // per_image, i % per_image * rows_per_item, &b,
                      &work[cf_thread_num() * per_thread], t)
        else:
            for i in range(items):
                _item(i // per_image, i % per_image * rows_per_item, &b, &work[0], t)


cdef inline Py_ssize_t _round16(Py_ssize_t n) noexcept nogil:
    # regions of the work start 64 bytes apart (float32), so the pointer
    # array after them is aligned
    return (n + 15) // 16 * 16


cdef inline Py_ssize_t work_zeros(Py_ssize_t C, Py_ssize_t E) noexcept nogil:
    # zeros the kernels may read (the depthwise kernel a whole vector past
    # E), a multiple of 16 elements so that the pointers after them align
    return (max(C, E) + 16) // 16 * 16 + 16


def work_elements(Py_ssize_t W, Py_ssize_t C, Py_ssize_t E, Py_ssize_t OW, Py_ssize_t KH,
                  Py_ssize_t KW, Py_ssize_t band, Py_ssize_t ring, Py_ssize_t itemsize):
    """Elements of one thread's work (a multiple of 16: 64 bytes for
    float32): the ring of expanded rows, the band's depthwise output, zeros,
    and the depthwise kernel's row and edge pointers."""
    cdef Py_ssize_t ptr_bytes = (2 * KH + KH * KW * OW) * 8
    return (_round16(ring * W * E) + _round16(band * OW * E) + work_zeros(C, E)
            + _round16((ptr_bytes + itemsize - 1) // itemsize))


cdef void _pointwise(const cf_nhwc_kernels *kt, const floating *x, Py_ssize_t xs,
                     const floating *w, Py_ssize_t ebs, const floating *bias, floating *out,
                     Py_ssize_t os, const floating *res, Py_ssize_t pixels, Py_ssize_t K,
                     Py_ssize_t cchunk, int clamp, double lo, double hi, const floating *zeros,
                     const void *after, Py_ssize_t after_bytes) noexcept nogil:
    """A 1x1 convolution of `pixels` consecutive pixels (xs and os elements
    apart) to K channels, block by block of output channels. Each block's
    call prefetches the next block's first chunk of weights (inside a model
    they come from memory: MobileNetV2's 7x7 layers read 614 KB each), the
    last block's `after` (the weights the caller reads next)."""
    cdef cf_geom g
    g.C, g.D, g.H, g.W = xs, 1, 1, pixels
    g.K, g.OD, g.OH, g.OW = K, 1, 1, pixels
    g.KD = g.KH = g.KW = 1
    g.sd = g.sh = g.sw = 1
    g.pd = g.ph = g.pw = 0
    g.dd = g.dh = g.dw = 1
    g.pad_mode = 0
    cdef Py_ssize_t k0 = 0, block = kt.block, kb = 0, vw = kt.vector_width, nk1
    cdef const void *nxt
    cdef Py_ssize_t nxt_bytes
    while k0 < K:
        nxt, nxt_bytes = after, after_bytes
        if k0 + block < K:
            nk1 = min(block, K - k0 - block)
            nxt = w + (kb + 1) * ebs
            nxt_bytes = min(cchunk, xs) * ((nk1 + vw - 1) // vw * vw) * sizeof(floating)
        kt.forward(x, xs, w + kb * ebs, bias + k0 if bias != NULL else NULL,
                   out + k0, os, res + k0 if res != NULL else NULL, 0, pixels,
                   min(block, K - k0), cchunk, clamp, lo, hi, zeros, nxt, nxt_bytes, 0, &g)
        k0 += block
        kb += 1


cdef void _item(Py_ssize_t n, Py_ssize_t r0, const _block *b, floating *work,
                int t) noexcept nogil:
    """Output rows [r0, r0 + rows_per_item) of image n (see the module's doc)."""
    cdef const cf_nhwc_kernels *pw = _pw[t]
    cdef const cf_depthwise_kernels *dw = _dw[t]
    cdef Py_ssize_t W = b.W, E = b.E, C = b.C, K = b.K, OW = b.OW
    cdef Py_ssize_t r1 = min(b.OH, r0 + b.rows_per_item)
    # the thread's work: ring [ring][W][E], band [band][OW][E], zeros, pointers
    cdef floating *ring = work
    cdef floating *dbuf = ring + _round16(b.ring * W * E)
    cdef floating *zeros = dbuf + _round16(b.band * OW * E)
    cdef Py_ssize_t nz = work_zeros(C, E)
    cdef void *ptrs = <void *> (zeros + nz)
    cdef const floating **rp = <const floating **> ptrs
    cdef cf_idx *ps = <cf_idx *> (rp + b.KH)
    cdef Py_ssize_t j
    for j in range(nz):
        zeros[j] = 0
    cdef const floating *x = <const floating *> b.x + n * b.H * W * C
    cdef floating *out = <floating *> b.out + n * b.OH * OW * K
    cdef cf_geom gd
    gd.C, gd.D, gd.H, gd.W = E, 1, b.H, W
    gd.K, gd.OD, gd.OH, gd.OW = E, 1, b.OH, OW
    gd.KD, gd.KH, gd.KW = 1, b.KH, b.KW
    gd.sd, gd.sh, gd.sw = 1, b.sh, b.sw
    gd.pd, gd.ph, gd.pw = 0, b.ph, b.pw
    gd.dd = gd.dh = gd.dw = 1
    gd.pad_mode = 0
    # the first chunk of each 1x1 layer's first block: what the other
    # layer's last block prefetches
    cdef Py_ssize_t blk = pw.block
    cdef Py_ssize_t first_e = min(b.cchunk_e, C) * min(blk, E) * sizeof(floating)
    cdef Py_ssize_t first_p = min(b.cchunk_p, E) * min(blk, K) * sizeof(floating)
    cdef Py_ssize_t next_row = max(0, r0 * b.sh - b.ph)   # the next input row to expand
    cdef Py_ssize_t b0, b1, need, slot, run, oh, kh, ih
    b0 = r0
    while b0 < r1:
        b1 = min(r1, b0 + b.band)
        need = min(b.H, (b1 - 1) * b.sh - b.ph + b.KH)   # input rows [.., need) for the band
        while b.we != NULL and next_row < need:
            slot = next_row % b.ring
            run = min(need - next_row, b.ring - slot)
            _pointwise(pw, x + next_row * W * C, C, <const floating *> b.we, b.ebs_e,
                       <const floating *> b.be, ring + slot * W * E, E, NULL, run * W, E,
                       b.cchunk_e, b.clamp[0], b.lo[0], b.hi[0], zeros, b.wp, first_p)
            next_row += run
        for oh in range(b0, b1):
            for kh in range(b.KH):
                ih = oh * b.sh - b.ph + kh
                if 0 <= ih < b.H:
                    # without an expansion the depthwise layer reads x's rows
                    rp[kh] = (<const floating *> ring) + ih % b.ring * W * E if b.we != NULL \
                        else x + ih * W * C
                    ps[kh] = E
                else:
                    rp[kh] = zeros
                    ps[kh] = 0
            dw.forward_last_rows(ptrs, b.wd, b.bd, dbuf + (oh - b0) * OW * E, NULL, 0, E, 1,
                                 &gd, zeros, b.clamp[1], b.lo[1], b.hi[1])
        _pointwise(pw, dbuf, E, <const floating *> b.wp, b.ebs_p, <const floating *> b.bp,
                   out + b0 * OW * K, K,
                   x + b0 * OW * K if b.residual else NULL, (b1 - b0) * OW, K, b.cchunk_p,
                   b.clamp[2], b.lo[2], b.hi[2], zeros, b.we, first_e)
        b0 = b1
