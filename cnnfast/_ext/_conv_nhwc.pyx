# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Channels-last convolution driver: the direct NHWC kernel (kernels/conv_nhwc.h).

Arrays arrive flat, C-contiguous and native-endian, validated and allocated
by cnnfast.functional, with the configuration the plan computed
(cnnfast._nhwc): this module only partitions and computes, GIL released.

A work item is (image, group, block of output channels, span of output
pixels) and owns that part of the output, so the result does not depend on
which thread ran it (bit-identical for any thread count). Items are handed
out `guided`: a thread slowed by another process on its core takes fewer
items instead of holding the others at the end of the region.
"""
from cython cimport floating
from cython.parallel cimport prange

import numpy as np

from .conv_geom cimport cf_geom, cf_idx

cdef extern from "nhwc_kernels.h" nogil:
    ctypedef struct cf_nhwc_kernels:
        int isa
        cf_idx vector_width, block, tile_pixels
        void (*forward)(const void *x, cf_idx xs, const void *w, const void *bias, void *out,
                        cf_idx os, const void *res, cf_idx p0, cf_idx p1, cf_idx nk,
                        cf_idx cchunk, int clamp, double lo, double hi, const void *zeros,
                        const cf_geom *g) noexcept nogil
        int (*pack)(const void *w, cf_idx K, cf_idx C, cf_idx KVOL, void *dst) noexcept nogil
    const cf_nhwc_kernels *cf_nhwc_kernels_for(int is_double)


cdef inline const cf_nhwc_kernels *_kernels(floating dummy) noexcept nogil:
    if floating is float:
        return cf_nhwc_kernels_for(0)
    else:
        return cf_nhwc_kernels_for(1)


def tiles(dtype):
    """(output channels per weight block, pixels per full-block tile) of the
    running CPU's kernels for dtype."""
    cdef const cf_nhwc_kernels *k = cf_nhwc_kernels_for(np.dtype(dtype) == np.float64)
    return k.block, k.tile_pixels


def pack(const floating[::1] w, floating[::1] dst, Py_ssize_t K, Py_ssize_t C,
         Py_ssize_t kvol, Py_ssize_t groups, Py_ssize_t group_stride):
    """Pack weights (K, C // groups, *kernel) (flat) into dst: group g's blocks
    at g * group_stride (kernels/conv_nhwc.h nhwc_pack). Returns False when a
    weight is NaN or infinite."""
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups, g
    cdef int finite = 1
    with nogil:
        for g in range(groups):
            finite &= _kernels(<floating> 0).pack(&w[g * Kg * Cg * kvol], Kg, Cg, kvol,
                                                    &dst[g * group_stride])
    return bool(finite)


def forward(const floating[::1] x, tuple x_shape, const floating[::1] packed,
            Py_ssize_t group_stride, const floating[::1] bias, floating[::1] out,
            tuple out_shape, tuple kernel, tuple stride, tuple padding, tuple dilation,
            Py_ssize_t groups, Py_ssize_t cchunk, Py_ssize_t span, int nthreads,
            const floating[::1] residual=None, bint clamp=False, double lo=0.0,
            double hi=0.0):
    """out (N, OD, OH, OW, K) = conv(x (N, D, H, W, C), packed weights) + bias
    (empty: none; else (groups, blocks * block) with zeros past each group's
    channels, so that whole vectors are read), then + residual (out's layout) and clamped to [lo, hi] when
    asked: a fused layer's epilogue, in the store of each tile. cchunk: input
    channels per pass over a span (weights of one block and chunk stay in
    cache); span: output pixels per work item."""
    cdef Py_ssize_t N = x_shape[0], C = x_shape[4], K = out_shape[4]
    cdef cf_geom g
    g.C = C // groups
    g.D, g.H, g.W = x_shape[1], x_shape[2], x_shape[3]
    g.K = K // groups
    g.OD, g.OH, g.OW = out_shape[1], out_shape[2], out_shape[3]
    g.KD, g.KH, g.KW = kernel
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = padding
    g.dd, g.dh, g.dw = dilation
    g.pad_mode = 0
    cdef Py_ssize_t P = g.OD * g.OH * g.OW, HWin = g.D * g.H * g.W
    if N == 0 or P == 0:
        return
    cdef const cf_nhwc_kernels *kt = _kernels(<floating> 0)
    cdef Py_ssize_t block = kt.block
    cdef Py_ssize_t nkb = (g.K + block - 1) // block
    cdef Py_ssize_t nspan = (P + span - 1) // span
    cdef Py_ssize_t items = N * groups * nkb * nspan
    zeros_arr = np.zeros(max(C, 1), dtype=np.asarray(out).dtype)
    cdef const floating[::1] zeros = zeros_arr
    cdef const floating *bp = &bias[0] if bias.shape[0] > 0 else NULL
    cdef const floating *rp = &residual[0] if residual is not None else NULL
    cdef Py_ssize_t i
    with nogil:
        if nthreads > 1 and items > 1:
            for i in prange(items, num_threads=nthreads, schedule='guided'):
                _item(i, &x[0], &packed[0], group_stride, bp, &out[0], rp, &zeros[0], N,
                      groups, nkb, nspan, span, C, K, P, HWin, cchunk, clamp, lo, hi, &g, kt)
        else:
            for i in range(items):
                _item(i, &x[0], &packed[0], group_stride, bp, &out[0], rp, &zeros[0], N,
                      groups, nkb, nspan, span, C, K, P, HWin, cchunk, clamp, lo, hi, &g, kt)


cdef void _item(Py_ssize_t i, const floating *x, const floating *packed,
                Py_ssize_t group_stride, const floating *bias, floating *out,
                const floating *res, const floating *zeros, Py_ssize_t N, Py_ssize_t groups,
                Py_ssize_t nkb, Py_ssize_t nspan, Py_ssize_t span, Py_ssize_t C, Py_ssize_t K,
                Py_ssize_t P, Py_ssize_t HWin, Py_ssize_t cchunk, bint clamp, double lo,
                double hi, const cf_geom *g, const cf_nhwc_kernels *kt) noexcept nogil:
    # i = ((n * groups + group) * nkb + kb) * nspan + s: consecutive items share
    # a weight block, so a thread's run of items reuses it from cache
    cdef Py_ssize_t s = i % nspan, rest = i // nspan
    cdef Py_ssize_t kb = rest % nkb, ng = rest // nkb
    cdef Py_ssize_t grp = ng % groups, n = ng // groups
    cdef Py_ssize_t k0 = kb * kt.block
    cdef Py_ssize_t nk = min(kt.block, g.K - k0)
    cdef Py_ssize_t p0 = s * span, p1 = min(P, p0 + span)
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    cdef Py_ssize_t ooff = n * P * K + grp * g.K + k0
    kt.forward(x + n * HWin * C + grp * g.C, C,
               packed + grp * group_stride + k0 * g.C * kvol,
               bias + grp * nkb * kt.block + k0 if bias != NULL else NULL,
               out + ooff, K, res + ooff if res != NULL else NULL, p0, p1, nk, cchunk,
               clamp, lo, hi, zeros, g)
