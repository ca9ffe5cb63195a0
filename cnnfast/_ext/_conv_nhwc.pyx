# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Channels-last convolution driver: the direct NHWC kernel (csrc/nhwc/conv_nhwc.h).

Arrays arrive flat, C-contiguous and native-endian, validated and allocated
by cnnfast.functional, with the configuration the plan computed
(cnnfast._nhwc): this module only partitions and computes, GIL released.

A work item is (image, group, block of output channels, span of output
pixels) and owns that part of the output, so the result does not depend on
which thread ran it (bit-identical for any thread count). Items are handed
out `guided`: a thread slowed by another process on its core takes fewer
items instead of holding the others at the end of the region.
"""
from cpython.pycapsule cimport PyCapsule_New
from cython cimport floating
from cython.parallel cimport prange

from ._blas cimport gemm_row_major
from ._omp cimport cf_thread_num

import numpy as np

from .conv_geom cimport cf_geom, cf_idx

cdef extern from "nhwc_kernels.h" nogil:
    ctypedef struct cf_nhwc_kernels:
        int isa
        cf_idx vector_width, block, tile_pixels, wg_vectors
        void (*forward)(const void *x, cf_idx xs, const void *w, const void *bias, void *out,
                        cf_idx os, const void *res, cf_idx p0, cf_idx p1, cf_idx nk,
                        cf_idx cchunk, int clamp, double lo, double hi, const void *zeros,
                        const void *next, cf_idx next_bytes, int mode,
                        const cf_geom *g) noexcept nogil
        int (*pack)(const void *w, cf_idx K, cf_idx C, cf_idx KVOL, cf_idx cchunk,
                    void *dst) noexcept nogil
        int (*pack_flipped)(const void *w, cf_idx Kw, cf_idx Cw, cf_idx KVOL,
                            const cf_idx *taps, cf_idx ntaps, cf_idx cchunk,
                            void *dst, cf_idx b0, cf_idx b1) noexcept nogil
        int (*wino_pack)(const void *w, cf_idx K, cf_idx C, cf_idx ks, cf_idx cs, int flip,
                         void *u, cf_idx pos_stride, int m) noexcept nogil
        int (*wino_input)(const void *x, cf_idx xs, cf_idx H, cf_idx W, cf_idx ph, cf_idx pw,
                          cf_idx tw, cf_idx per_image, cf_idx t0, cf_idx t1, cf_idx c0,
                          cf_idx c1, void *v, cf_idx T, cf_idx C, int m) noexcept nogil
        int (*wino_output)(const void *mp, cf_idx T, cf_idx ms, cf_idx tw, cf_idx per_image,
                           cf_idx t0, cf_idx t1, cf_idx OH, cf_idx OW, cf_idx nk,
                           const void *bias, void *out, cf_idx os, const void *res, int clamp,
                           double lo, double hi, int m) noexcept nogil
        int (*wino_grad_out)(const void *go, cf_idx gs, cf_idx OH, cf_idx OW, cf_idx tw,
                             cf_idx t0, cf_idx t1, cf_idx k0, cf_idx k1, void *u, cf_idx T,
                             cf_idx K, int m) noexcept nogil
        void (*wino_taps)(const void *mp, cf_idx K, cf_idx C, cf_idx k0, cf_idx k1,
                          void *dwt, int m) noexcept nogil
        void (*max_pool)(const void *x, void *out, cf_idx C, cf_idx H, cf_idx W, cf_idx OW,
                         cf_idx kh, cf_idx kw, cf_idx sh, cf_idx sw, cf_idx ph, cf_idx pw,
                         cf_idx dh, cf_idx dw, cf_idx oh0, cf_idx oh1, void *ring,
                         cf_idx *tags) noexcept nogil
        void (*global_avg)(const void *x, void *out, cf_idx C, cf_idx P, cf_idx c0,
                           cf_idx c1) noexcept nogil
        void (*weight_grad)(const void *go, cf_idx gs, const void *go_end, const void *x,
                            cf_idx xs, void *acc, cf_idx vstride, cf_idx nv, cf_idx r0,
                            cf_idx r1, cf_idx c0, cf_idx c1, cf_idx rows_per_block,
                            const void *zeros, const cf_geom *g) noexcept nogil
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


def kernel_table(dtype):
    """The running CPU's kernel table for dtype, as a capsule named
    "cf_nhwc_kernels": how a driver of another module (the inverted-residual
    block, _block.pyx) calls these kernels without compiling them again."""
    return PyCapsule_New(<void *> cf_nhwc_kernels_for(np.dtype(dtype) == np.float64),
                         "cf_nhwc_kernels", NULL)


def vector_width(dtype):
    """Elements of dtype in one vector of the running CPU's kernels (one
    register: 16 float32 on AVX-512, 8 on AVX2; 16 on the baseline's
    four-register vectors)."""
    return cf_nhwc_kernels_for(np.dtype(dtype) == np.float64).vector_width


def weight_grad_vectors(dtype):
    """Vectors of output channels the running CPU's weight-gradient tile
    holds (4 on AVX-512, 1 below): a work item takes at most that many."""
    return cf_nhwc_kernels_for(np.dtype(dtype) == np.float64).wg_vectors


def pack(const floating[::1] w, floating[::1] dst, Py_ssize_t K, Py_ssize_t C,
         Py_ssize_t kvol, Py_ssize_t groups, Py_ssize_t group_stride, Py_ssize_t cchunk,
         int nthreads=1):
    """Pack weights (K, C // groups, *kernel) (flat) into dst: group g's blocks
    at g * group_stride, input channels in chunks of cchunk, the forward's
    (csrc/nhwc/conv_nhwc.h nhwc_pack), one item per (group, block of output
    channels) over nthreads. Returns False when a weight is NaN or
    infinite."""
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups, i, g, k0
    cdef Py_ssize_t kb = _kernels(<floating> 0).block
    cdef Py_ssize_t blocks = (Kg + kb - 1) // kb
    cdef Py_ssize_t bad = 0, oom = 0
    cdef int r
    if cchunk < 1:
        raise ValueError(f"cchunk must be at least 1, got {cchunk}")
    if w.shape[0] < K * Cg * kvol or dst.shape[0] < groups * group_stride:
        raise ValueError("pack: w or dst too small for the weights")
    with nogil:
        for i in prange(groups * blocks, num_threads=max(1, nthreads), schedule='static'):
            g = i // blocks
            k0 = i % blocks * kb
            r = _kernels(<floating> 0).pack(&w[(g * Kg + k0) * Cg * kvol], min(kb, Kg - k0),
                                            Cg, kvol, cchunk,
                                            &dst[g * group_stride + k0 * Cg * kvol])
            oom += r < 0   # its tile buffer could not be allocated
            bad += r == 0
    if oom:
        raise MemoryError("pack: no memory for the weight tile buffer")
    return bad == 0


def pack_flipped(const floating[::1] w, floating[::1] dst, Py_ssize_t K, Py_ssize_t C,
                 Py_ssize_t kvol, tuple taps, Py_ssize_t groups, Py_ssize_t group_stride,
                 Py_ssize_t cchunk, int nthreads=1):
    """Pack the weights of an input-gradient phase into dst as pack() packs
    a convolution's: from the convolution's weights w (K, C // groups,
    *kernel) (flat), the sub-convolution with input and output channels
    swapped per group and the kernel taps `taps` (flat indices into the
    kernel, in the sub-kernel's order); one item per (group, block of the
    sub-convolution's output channels) over nthreads. Returns False when a
    weight read is NaN or infinite."""
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups, g, i, n = len(taps)
    cdef Py_ssize_t kb = _kernels(<floating> 0).block
    cdef Py_ssize_t blocks = (Cg + kb - 1) // kb
    cdef Py_ssize_t bad = 0
    if cchunk < 1:
        raise ValueError(f"cchunk must be at least 1, got {cchunk}")
    tap_arr = np.asarray(taps, dtype=np.intp)
    if n == 0 or tap_arr.min() < 0 or tap_arr.max() >= kvol:
        raise ValueError(f"taps must be 1 to kvol={kvol} indices in [0, {kvol}), got {taps}")
    if w.shape[0] < K * Cg * kvol or dst.shape[0] < groups * group_stride:
        raise ValueError("pack_flipped: w or dst too small for the weights")
    cdef const Py_ssize_t[::1] tp = tap_arr
    with nogil:
        for i in prange(groups * blocks, num_threads=max(1, nthreads), schedule='static'):
            g = i // blocks
            bad += 1 - _kernels(<floating> 0).pack_flipped(
                &w[g * Kg * Cg * kvol], Kg, Cg, kvol, <const cf_idx *> &tp[0], n, cchunk,
                &dst[g * group_stride], i % blocks, i % blocks + 1)
    return bad == 0


# nhwc_forward's modes (csrc/nhwc/conv_nhwc.h)
POSITION_MAJOR = 1   # tiles of one position in consecutive images
SKIP = 2             # taps in the padding for a whole tile skipped (finite weights only)


def forward(const floating[::1] x, tuple x_shape, const floating[::1] packed,
            Py_ssize_t group_stride, const floating[::1] bias, floating[::1] out,
            tuple out_shape, tuple kernel, tuple stride, tuple padding, tuple dilation,
            Py_ssize_t groups, Py_ssize_t cchunk, Py_ssize_t span, int mode, int nthreads,
            const floating[::1] residual=None, bint clamp=False, double lo=0.0,
            double hi=0.0):
    """out (N, OD, OH, OW, K) = conv(x (N, D, H, W, C), packed weights) + bias
    (empty: none; else (groups, blocks * block) with zeros past each group's
    channels, so that whole vectors are read), then + residual (out's layout) and clamped to [lo, hi] when
    asked: a fused layer's epilogue, in the store of each tile. cchunk: input
    channels per pass over a span (weights of one block and chunk stay in
    cache); span: output pixels per work item. mode: the kernel's tile order
    and tap skipping (csrc/nhwc/conv_nhwc.h CF_NHWC_POSITION_MAJOR, for a
    batch folded into depth, N = 1; CF_NHWC_SKIP, for finite weights), 0 for
    neither. (Positional: a fused model's recorded run refuses keywords.)"""
    cdef Py_ssize_t N = x_shape[0], C = x_shape[4], K = out_shape[4]
    cdef cf_geom g
    _geom(&g, x_shape, out_shape, kernel, stride, padding, dilation, groups)
    if mode & POSITION_MAJOR and (N != 1 or g.KD != 1 or g.sd != 1 or g.pd != 0):
        raise ValueError("position-major tiles need the batch folded into depth "
                         f"(N = 1, unit kernel depth and depth stride, no depth padding)")
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
                      groups, nkb, nspan, span, C, K, P, HWin, cchunk, clamp, lo, hi, mode,
                      &g, kt)
        else:
            for i in range(items):
                _item(i, &x[0], &packed[0], group_stride, bp, &out[0], rp, &zeros[0], N,
                      groups, nkb, nspan, span, C, K, P, HWin, cchunk, clamp, lo, hi, mode,
                      &g, kt)


cdef void _item(Py_ssize_t i, const floating *x, const floating *packed,
                Py_ssize_t group_stride, const floating *bias, floating *out,
                const floating *res, const floating *zeros, Py_ssize_t N, Py_ssize_t groups,
                Py_ssize_t nkb, Py_ssize_t nspan, Py_ssize_t span, Py_ssize_t C, Py_ssize_t K,
                Py_ssize_t P, Py_ssize_t HWin, Py_ssize_t cchunk, bint clamp, double lo,
                double hi, int mode, const cf_geom *g,
                const cf_nhwc_kernels *kt) noexcept nogil:
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
    # the weights item i + 1 reads first (its block's first chunk), prefetched
    # while this one computes (the next item is usually this thread's next)
    cdef Py_ssize_t nxt = (i + 1) // nspan, kb1 = nxt % nkb, grp1 = nxt // nkb % groups
    cdef Py_ssize_t nk1 = min(kt.block, g.K - kb1 * kt.block)
    cdef Py_ssize_t vw = kt.vector_width
    cdef const floating *w1 = NULL
    cdef Py_ssize_t w1_bytes = 0
    if i + 1 < N * groups * nkb * nspan:
        w1 = packed + grp1 * group_stride + kb1 * kt.block * g.C * kvol
        w1_bytes = min(cchunk, g.C) * kvol * ((nk1 + vw - 1) // vw * vw) * sizeof(floating)
    kt.forward(x + n * HWin * C + grp * g.C, C,
               packed + grp * group_stride + k0 * g.C * kvol,
               bias + grp * nkb * kt.block + k0 if bias != NULL else NULL,
               out + ooff, K, res + ooff if res != NULL else NULL, p0, p1, nk, cchunk,
               clamp, lo, hi, zeros, w1, w1_bytes, mode, g)


# ------------------------------------------------------------------ Winograd

def winograd_pack(const floating[::1] w, floating[::1] u, Py_ssize_t K, Py_ssize_t C,
                  Py_ssize_t pos_stride, Py_ssize_t m=4, int nthreads=1, bint flipped=False):
    """Transformed weights (csrc/nhwc/conv_nhwc_winograd.h nhwc_wino_pack) of w
    (K, C, 3, 3), flat, into u ((m + 2)**2 positions, pos_stride apart; m = 4:
    F(4x4, 3x3), m = 2: F(2x2, 3x3)), one item per block of output channels
    over nthreads. flipped: w is (C, K, 3, 3) and the transformed kernels are
    those of w[c, k] with the taps reversed (the input gradient's). False
    when a transformed weight is not finite."""
    cdef Py_ssize_t kb = _kernels(<floating> 0).block
    cdef Py_ssize_t blocks = (K + kb - 1) // kb, i, k0
    cdef Py_ssize_t ks = 9 if flipped else 9 * C, cs = 9 * K if flipped else 9
    cdef Py_ssize_t bad = 0
    if m != 4 and m != 2:
        raise ValueError(f"m must be 4 or 2, got {m}")
    if w.shape[0] < K * C * 9 or u.shape[0] < (m + 2) * (m + 2) * pos_stride:
        raise ValueError("winograd_pack: w or u too small for the weights")
    if K * C == 0:
        return True
    with nogil:
        for i in prange(blocks, num_threads=max(1, nthreads), schedule='static'):
            k0 = i * kb
            bad += _kernels(<floating> 0).wino_pack(&w[k0 * ks], min(kb, K - k0), C, ks, cs,
                                                    flipped, &u[k0 * C], pos_stride, m) == 0
    return bad == 0


def winograd_forward(const floating[::1] x, tuple x_shape, const floating[::1] u,
                     Py_ssize_t pos_stride, const floating[::1] bias, floating[::1] out,
                     tuple out_shape, tuple padding, Py_ssize_t T, Py_ssize_t images_per_round,
                     int nthreads, floating[::1] v, floating[::1] mw,
                     const floating[::1] residual=None, bint clamp=False, double lo=0.0,
                     double hi=0.0, Py_ssize_t m=4):
    """out (N, OH, OW, K) = Winograd F(m x m, 3x3) (m = 4 or 2) of x (N, H, W, C) with the
    transformed weights u (winograd_pack), + bias (empty, or padded to whole
    blocks), + residual, clamped: the epilogue of a fused layer. Per round of
    images_per_round images, their tiles numbered image after image in
    blocks of T (a block may span images): the input transforms of every
    block (items: block, channel range) into v, then per (block,
    output-channel block) the products into the thread's part of mw and the
    output transform. v: ceil(images_per_round * tiles per image / T) *
    positions * T * C elements; mw: nthreads * positions * T * block,
    positions (m + 2)**2. Returns False when a value was not finite (out is
    then incomplete: the caller runs the direct kernel)."""
    cdef Py_ssize_t N = x_shape[0], H = x_shape[1], W = x_shape[2], C = x_shape[3]
    cdef Py_ssize_t OH = out_shape[1], OW = out_shape[2], K = out_shape[3]
    cdef Py_ssize_t ph = padding[0], pw = padding[1]
    if N == 0 or OH * OW == 0:
        return True
    cdef const cf_nhwc_kernels *kt = _kernels(<floating> 0)
    cdef Py_ssize_t VW = kt.vector_width, block = kt.block
    cdef Py_ssize_t tw = (OW + m - 1) // m, per_image = (OH + m - 1) // m * tw
    cdef Py_ssize_t npos = (m + 2) * (m + 2)
    cdef Py_ssize_t nkb = (K + block - 1) // block
    cdef Py_ssize_t cvec = C // VW
    cdef Py_ssize_t n0, nr, nblk, ntiles, i, items_a, items_b, csplit
    cdef Py_ssize_t nbad = 0
    if T < 1 or images_per_round < 1:
        raise ValueError(f"T and images_per_round must be positive, got {T}, {images_per_round}")
    if (v.shape[0] < (min(N, images_per_round) * per_image + T - 1) // T * npos * T * C
            or mw.shape[0] < nthreads * npos * T * block):
        raise ValueError("winograd_forward: work arrays too small")
    cdef const floating *bp = &bias[0] if bias.shape[0] > 0 else NULL
    cdef const floating *rp
    cdef const floating *xr
    cdef floating *outr
    cdef cf_geom g1   # one block of T tiles as a 1x1 convolution over T pixels
    g1.C, g1.D, g1.H, g1.W = C, 1, 1, T
    g1.K, g1.OD, g1.OH, g1.OW = K, 1, 1, T
    g1.KD = g1.KH = g1.KW = 1
    g1.sd = g1.sh = g1.sw = 1
    g1.pd = g1.ph = g1.pw = 0
    g1.dd = g1.dh = g1.dw = 1
    g1.pad_mode = 0
    for n0 in range(0, N, images_per_round):
        nr = min(images_per_round, N - n0)
        ntiles = nr * per_image
        nblk = (ntiles + T - 1) // T
        xr = &x[0] + n0 * H * W * C
        outr = &out[0] + n0 * OH * OW * K
        rp = &residual[0] + n0 * OH * OW * K if residual is not None else NULL
        # enough channel ranges that every thread transforms inputs at batch 1
        csplit = max(1, min(cvec, (2 * nthreads + nblk - 1) // nblk))
        items_a = nblk * csplit
        items_b = nblk * nkb
        with nogil:
            if nthreads > 1 and items_a > 1:
                for i in prange(items_a, num_threads=nthreads, schedule='guided'):
                    nbad += _wino_input_item(i, xr, H, W, C, ph, pw, tw, per_image, ntiles, T,
                                             csplit, cvec, VW, &v[0], kt, m)
            else:
                for i in range(items_a):
                    nbad += _wino_input_item(i, xr, H, W, C, ph, pw, tw, per_image, ntiles, T,
                                             csplit, cvec, VW, &v[0], kt, m)
        if nbad:
            return False
        with nogil:
            if nthreads > 1 and items_b > 1:
                for i in prange(items_b, num_threads=nthreads, schedule='guided'):
                    nbad += _wino_block_item(i, &v[0], &u[0], pos_stride, bp, outr, rp, &mw[0],
                                             OH, OW, C, K, tw, per_image, ntiles, T, nkb,
                                             block, clamp, lo, hi, &g1, kt, m)
            else:
                for i in range(items_b):
                    nbad += _wino_block_item(i, &v[0], &u[0], pos_stride, bp, outr, rp, &mw[0],
                                             OH, OW, C, K, tw, per_image, ntiles, T, nkb,
                                             block, clamp, lo, hi, &g1, kt, m)
        if nbad:
            return False
    return True


def winograd_weight_grad(const floating[::1] go, tuple go_shape, const floating[::1] x,
                         tuple x_shape, tuple padding, Py_ssize_t m, floating[::1] u,
                         floating[::1] v, floating[::1] sums, floating[::1] taps,
                         int nthreads):
    """The weight gradient of the 3x3 stride-1 convolution x (N, H, W, C) ->
    go (N, OH, OW, K) on Winograd F(m x m, 3x3) (m = 4 or 2), both channel
    counts multiples of the vector: taps (3, 3, K, C) (the caller moves them
    to (K, C, 3, 3)). Every tile's input transform into v (positions, tiles,
    C) and grad_out transform into u (positions, tiles, K), items (image,
    block of channels); then per position one GEMM over the tiles,
    sums[p] (K x C) = u[p]^T v[p] (BLAS at one thread, positions split over
    the threads: no sum is split, so the bits do not depend on the thread
    count); then each output channel's taps = G^T sums G. u, v: positions *
    N * tiles per image * K (C) elements, sums: positions * K * C. Returns
    False when a transformed value was not finite (taps is then incomplete:
    the caller runs the direct kernel)."""
    cdef Py_ssize_t N = x_shape[0], H = x_shape[1], W = x_shape[2], C = x_shape[3]
    cdef Py_ssize_t OH = go_shape[1], OW = go_shape[2], K = go_shape[3]
    cdef Py_ssize_t ph = padding[0], pw = padding[1]
    cdef const cf_nhwc_kernels *kt = _kernels(<floating> 0)
    cdef Py_ssize_t VW = kt.vector_width
    if m != 4 and m != 2:
        raise ValueError(f"m must be 4 or 2, got {m}")
    if C % VW or K % VW:
        raise ValueError(f"channels must be multiples of {VW}, got C={C}, K={K}")
    cdef Py_ssize_t tw = (OW + m - 1) // m, per_image = (OH + m - 1) // m * tw
    cdef Py_ssize_t T = N * per_image, npos = (m + 2) * (m + 2)
    if (u.shape[0] < npos * T * K or v.shape[0] < npos * T * C or sums.shape[0] < npos * K * C
            or taps.shape[0] < 9 * K * C):
        raise ValueError("winograd_weight_grad: work arrays too small")
    if K == 0 or C == 0:
        return True
    if T == 0:
        taps[:9 * K * C] = 0
        return True
    # channel blocks of 4 vectors per transform item
    cdef Py_ssize_t cb = 4 * VW, ncb = (C + cb - 1) // cb, nkb = (K + cb - 1) // cb
    cdef Py_ssize_t items = N * (ncb + nkb), i, nbad = 0
    with nogil:
        if nthreads > 1 and items > 1:
            for i in prange(items, num_threads=nthreads, schedule='static'):
                nbad += _wino_wg_transform(i, &go[0], &x[0], N, H, W, C, OH, OW, K, ph, pw,
                                           tw, per_image, T, ncb, nkb, cb, &u[0], &v[0], kt, m)
        else:
            for i in range(items):
                nbad += _wino_wg_transform(i, &go[0], &x[0], N, H, W, C, OH, OW, K, ph, pw,
                                           tw, per_image, T, ncb, nkb, cb, &u[0], &v[0], kt, m)
    if nbad:
        return False
    with nogil:
        if nthreads > 1:
            for i in prange(npos, num_threads=nthreads, schedule='static'):
                gemm_row_major(True, False, K, C, T, <floating> 1, &u[0] + i * T * K, K,
                               &v[0] + i * T * C, C, <floating> 0, &sums[0] + i * K * C, C)
            for i in prange(K, num_threads=nthreads, schedule='static'):
                kt.wino_taps(&sums[0], K, C, i, i + 1, &taps[0], m)
        else:
            for i in range(npos):
                gemm_row_major(True, False, K, C, T, <floating> 1, &u[0] + i * T * K, K,
                               &v[0] + i * T * C, C, <floating> 0, &sums[0] + i * K * C, C)
            kt.wino_taps(&sums[0], K, C, 0, K, &taps[0], m)
    return True


cdef int _wino_wg_transform(Py_ssize_t i, const floating *go, const floating *x, Py_ssize_t N,
                            Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t OH,
                            Py_ssize_t OW, Py_ssize_t K, Py_ssize_t ph, Py_ssize_t pw,
                            Py_ssize_t tw, Py_ssize_t per_image, Py_ssize_t T, Py_ssize_t ncb,
                            Py_ssize_t nkb, Py_ssize_t cb, floating *u, floating *v,
                            const cf_nhwc_kernels *kt, Py_ssize_t m) noexcept nogil:
    # i = n * (ncb + nkb) + j: j < ncb an input-channel block of image n, else
    # an output-channel block of its grad_out
    cdef Py_ssize_t n = i // (ncb + nkb), j = i % (ncb + nkb)
    if j < ncb:
        return kt.wino_input(x + n * H * W * C, C, H, W, ph, pw, tw, per_image, 0, per_image,
                             j * cb, min(C, (j + 1) * cb), v + n * per_image * C, T, C, <int> m)
    j -= ncb
    return kt.wino_grad_out(go + n * OH * OW * K, K, OH, OW, tw, 0, per_image, j * cb,
                            min(K, (j + 1) * cb), u + n * per_image * K, T, K, <int> m)


cdef int _wino_input_item(Py_ssize_t i, const floating *x, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t C, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t tw,
                          Py_ssize_t per_image, Py_ssize_t ntiles, Py_ssize_t T,
                          Py_ssize_t csplit, Py_ssize_t cvec, Py_ssize_t VW, floating *v,
                          const cf_nhwc_kernels *kt, Py_ssize_t m) noexcept nogil:
    # i = block of tiles * csplit + channel range; x: the round's first image
    cdef Py_ssize_t cs = i % csplit, blk = i // csplit
    cdef Py_ssize_t t0 = blk * T, t1 = min(ntiles, t0 + T)
    cdef Py_ssize_t c0 = cvec * cs // csplit * VW, c1 = cvec * (cs + 1) // csplit * VW
    cdef Py_ssize_t npos = (m + 2) * (m + 2)
    return kt.wino_input(x, C, H, W, ph, pw, tw, per_image, t0, t1, c0, c1,
                         v + blk * npos * T * C, T, C, m)


cdef int _wino_block_item(Py_ssize_t i, const floating *v, const floating *u,
                          Py_ssize_t pos_stride, const floating *bias, floating *out,
                          const floating *res, floating *m_work, Py_ssize_t OH, Py_ssize_t OW,
                          Py_ssize_t C, Py_ssize_t K, Py_ssize_t tw, Py_ssize_t per_image,
                          Py_ssize_t ntiles, Py_ssize_t T, Py_ssize_t nkb, Py_ssize_t block,
                          bint clamp, double lo, double hi, const cf_geom *g1,
                          const cf_nhwc_kernels *kt, Py_ssize_t m) noexcept nogil:
    # i = block of tiles * nkb + block of output channels; out and res: the
    # round's first image
    cdef Py_ssize_t kb = i % nkb, blk = i // nkb
    cdef Py_ssize_t t0 = blk * T, t1 = min(ntiles, t0 + T), nt = t1 - t0
    cdef Py_ssize_t k0 = kb * block, nk = min(block, K - k0), p
    cdef Py_ssize_t npos = (m + 2) * (m + 2)
    cdef floating *mt = m_work + cf_thread_num() * npos * T * block
    cdef const floating *vb = v + blk * npos * T * C
    # the next position's weights (after the last, the next item's first),
    # prefetched while one position's products run: inside a model they come
    # from memory (7x7x512 at batch 1: 16 tiles per 128 KB of weights)
    cdef Py_ssize_t vw = kt.vector_width, kb1 = (i + 1) % nkb
    cdef Py_ssize_t nk1 = min(block, K - kb1 * block)
    cdef const floating *nxt
    cdef Py_ssize_t nxt_bytes
    for p in range(npos):
        if p + 1 < npos:
            nxt = u + (p + 1) * pos_stride + k0 * C
            nxt_bytes = C * ((nk + vw - 1) // vw * vw) * sizeof(floating)
        else:
            nxt = u + kb1 * block * C
            nxt_bytes = C * ((nk1 + vw - 1) // vw * vw) * sizeof(floating)
        kt.forward(vb + p * T * C, C, u + p * pos_stride + k0 * C, NULL, mt + p * T * block,
                   block, NULL, 0, nt, nk, C, 0, 0.0, 0.0, NULL, nxt, nxt_bytes, 0, g1)
    return kt.wino_output(mt, T, block, tw, per_image, t0, t1, OH, OW, nk,
                          bias + k0 if bias != NULL else NULL, out + k0, K,
                          res + k0 if res != NULL else NULL, clamp, lo, hi, m)


# ------------------------------------------------------------------ pooling

def max_pool(const floating[::1] x, tuple x_shape, floating[::1] out, tuple out_shape,
             tuple kernel, tuple stride, tuple padding, tuple dilation, int nthreads):
    """out (N, OH, OW, C) = max pooling of x (N, H, W, C) (csrc/nhwc/pool_nhwc.h);
    2-tuples of window arguments, padding before. Items: (image, block of
    output rows), so that a thread's ring of row maxima serves the window
    rows its output rows share; each thread has its own ring and tap table."""
    cdef Py_ssize_t N = x_shape[0], H = x_shape[1], W = x_shape[2], C = x_shape[3]
    cdef Py_ssize_t OH = out_shape[1], OW = out_shape[2]
    cdef Py_ssize_t kh = kernel[0], kw = kernel[1], sh = stride[0], sw = stride[1]
    cdef Py_ssize_t ph = padding[0], pw = padding[1], dh = dilation[0], dw = dilation[1]
    if N == 0 or OH == 0 or OW == 0 or C == 0:
        return
    cdef Py_ssize_t R = (kh - 1) * dh + 1, ring_size = R * OW * C
    # rows per item: about four items per thread (guided hands them out)
    cdef Py_ssize_t rows = OH if nthreads <= 1 else max(1, -(-(N * OH) // (4 * nthreads)))
    rows = min(rows, OH)
    cdef Py_ssize_t blocks = (OH + rows - 1) // rows, items = N * blocks, i, n, t
    cdef int team = nthreads if nthreads > 1 and items > 1 else 1
    rings_arr = np.empty(team * ring_size, dtype=np.asarray(out).dtype)
    tags_arr = np.empty(team * (R + 2 * OW), dtype=np.intp)
    cdef floating[::1] rings = rings_arr
    cdef cf_idx[::1] tags = tags_arr
    cdef const cf_nhwc_kernels *kt = _kernels(<floating> 0)
    with nogil:
        if team > 1:
            for i in prange(items, num_threads=team, schedule='guided'):
                t = cf_thread_num()
                n = i // blocks
                kt.max_pool(&x[0] + n * H * W * C, &out[0] + n * OH * OW * C, C, H, W, OW,
                            kh, kw, sh, sw, ph, pw, dh, dw, i % blocks * rows,
                            min(OH, i % blocks * rows + rows), &rings[t * ring_size],
                            &tags[t * (R + 2 * OW)])
        else:
            for n in range(N):
                kt.max_pool(&x[0] + n * H * W * C, &out[0] + n * OH * OW * C, C, H, W, OW,
                            kh, kw, sh, sw, ph, pw, dh, dw, 0, OH, &rings[0], &tags[0])


def global_avg(const floating[::1] x, Py_ssize_t N, Py_ssize_t P, Py_ssize_t C,
               floating[::1] out, int nthreads):
    """out (N, C) = the mean of x (N, P, C) over its P pixels. Items: (image,
    channel range of 64)."""
    cdef Py_ssize_t ranges = (C + 63) // 64, items = N * ranges, i, n, r
    if items == 0:
        return
    cdef const cf_nhwc_kernels *kt = _kernels(<floating> 0)
    with nogil:
        if nthreads > 1 and items > 1:
            for i in prange(items, num_threads=nthreads, schedule='guided'):
                n = i // ranges
                r = i % ranges
                kt.global_avg(&x[0] + n * P * C, &out[0] + n * C, C, P, r * 64,
                              min(C, r * 64 + 64))
        else:
            for n in range(N):
                kt.global_avg(&x[0] + n * P * C, &out[0] + n * C, C, P, 0, C)
# ------------------------------------------------------------ backward
# The backward passes on the same layout (cnnfast._nhwc_backward): the input
# gradient's stride phases on the forward kernel, the weight gradient on
# conv_nhwc_backward.h.

cdef void _geom(cf_geom *g, tuple in_shape, tuple out_shape, tuple kernel, tuple stride,
                tuple padding, tuple dilation, Py_ssize_t groups):
    g.C = in_shape[4] // groups
    g.D, g.H, g.W = in_shape[1], in_shape[2], in_shape[3]
    g.K = out_shape[4] // groups
    g.OD, g.OH, g.OW = out_shape[1], out_shape[2], out_shape[3]
    g.KD, g.KH, g.KW = kernel
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = padding
    g.dd, g.dh, g.dw = dilation
    g.pad_mode = 0


def forward_phase(const floating[::1] go, tuple go_shape, const floating[::1] packed,
                  Py_ssize_t group_stride, const floating[::1] bias, floating[::1] out,
                  tuple out_shape, tuple phase, tuple stride, tuple phase_size, tuple kernel,
                  tuple padding, tuple dilation, Py_ssize_t groups, Py_ssize_t cchunk,
                  int nthreads):
    """One stride phase of an input gradient: out (N, D, H, W, C) at the
    positions phase + stride * q, q over phase_size, = the stride-1 forward
    conv of go (N, OD, OH, OW, K) with the phase's packed sub-kernel
    (kernel, padding, dilation: the sub-convolution's), plus bias (packed as
    forward's; empty: none: a transposed convolution's). A work item is one
    output row of the phase (its pixels are stride[2] * C apart, which the
    forward kernel's pixel stride carries) for one image, group and block of
    channels: it owns those outputs, so results do not depend on threads."""
    cdef cf_geom g
    _geom(&g, go_shape, (out_shape[0], 1, 1, phase_size[2], out_shape[4]), kernel,
          (1, 1, 1), padding, dilation, groups)
    cdef Py_ssize_t N = go_shape[0], Ktot = go_shape[4], Ctot = out_shape[4]
    cdef Py_ssize_t nd = phase_size[0], nh = phase_size[1], nw = phase_size[2]
    cdef Py_ssize_t rows = nd * nh
    if N == 0 or rows == 0 or nw == 0:
        return
    cdef const cf_nhwc_kernels *kt = _kernels(<floating> 0)
    cdef Py_ssize_t nkb = (g.K + kt.block - 1) // kt.block
    cdef Py_ssize_t items = N * groups * nkb * rows
    zeros_arr = np.zeros(max(Ktot, 1), dtype=np.asarray(out).dtype)
    cdef const floating[::1] zeros = zeros_arr
    cdef Py_ssize_t geo[10]
    geo[0], geo[1], geo[2] = out_shape[1], out_shape[2], out_shape[3]
    geo[3], geo[4], geo[5] = phase
    geo[6], geo[7], geo[8] = stride
    geo[9] = g.D * g.H * g.W
    cdef const floating *bp = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t i
    with nogil:
        if nthreads > 1 and items > 1:
            for i in prange(items, num_threads=nthreads, schedule='guided'):
                _phase_row(i, &go[0], &packed[0], group_stride, bp, &out[0], &zeros[0],
                           groups, nkb, rows, nh, Ktot, Ctot, cchunk, geo, &g, kt)
        else:
            for i in range(items):
                _phase_row(i, &go[0], &packed[0], group_stride, bp, &out[0], &zeros[0],
                           groups, nkb, rows, nh, Ktot, Ctot, cchunk, geo, &g, kt)


cdef void _phase_row(Py_ssize_t i, const floating *go, const floating *packed,
                     Py_ssize_t group_stride, const floating *bias, floating *out,
                     const floating *zeros,
                     Py_ssize_t groups, Py_ssize_t nkb, Py_ssize_t rows, Py_ssize_t nh,
                     Py_ssize_t Ktot, Py_ssize_t Ctot, Py_ssize_t cchunk, const Py_ssize_t *geo,
                     const cf_geom *g,
                     const cf_nhwc_kernels *kt) noexcept nogil:
    # i = ((n * groups + group) * nkb + kb) * rows + row; geo: the output's
    # (D, H, W), the phase, the stride, the input pixels per image
    cdef Py_ssize_t row = i % rows, rest = i // rows
    cdef Py_ssize_t kb = rest % nkb, ng = rest // nkb
    cdef Py_ssize_t grp = ng % groups, n = ng // groups
    cdef Py_ssize_t qd = row // nh, qh = row % nh
    cdef Py_ssize_t k0 = kb * kt.block, nk = min(kt.block, g.K - k0)
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    # the row as a one-row output: its input window moves with the padding
    cdef cf_geom gl = g[0]
    gl.pd = g.pd - qd
    gl.ph = g.ph - qh
    cdef Py_ssize_t pos = ((n * geo[0] + qd * geo[6] + geo[3]) * geo[1] + qh * geo[7]
                           + geo[4]) * geo[2] + geo[5]
    kt.forward(go + n * geo[9] * Ktot + grp * g.C, Ktot,
               packed + grp * group_stride + k0 * g.C * kvol,
               bias + grp * nkb * kt.block + k0 if bias != NULL else NULL,
               out + pos * Ctot + grp * g.K + k0, geo[8] * Ctot, NULL, 0, g.OW, nk, cchunk,
               0, 0.0, 0.0, zeros, NULL, 0, 0, &gl)


def weight_grad(const floating[::1] go, tuple go_shape, const floating[::1] x, tuple x_shape,
                floating[::1] parts, tuple kernel, tuple stride, tuple padding, tuple dilation,
                Py_ssize_t groups, Py_ssize_t vectors, Py_ssize_t cblock, Py_ssize_t chunks,
                Py_ssize_t rows_per_block, int nthreads):
    """The partial sums of grad_w of the conv x (N, D, H, W, C) -> go (N, OD,
    OH, OW, K), added into `parts` (zeros, chunks x groups x vectors x
    C/groups x taps x vector_width: the caller adds the chunks in order and
    moves the vector lanes to grad_w's rows). A work item is (row chunk,
    group, `vectors` vectors of output channels, block of cblock input
    channels); the rows of the flattened (N, OD, OH) are cut into `chunks`
    (1 unless the other splits leave threads idle), each summing into its
    own copy of the partial sums: the same partition gives the same bits
    whichever thread ran what."""
    cdef cf_geom g
    _geom(&g, x_shape, go_shape, kernel, stride, padding, dilation, groups)
    cdef const cf_nhwc_kernels *kt = _kernels(<floating> 0)
    cdef Py_ssize_t VW = kt.vector_width, kvol = g.KD * g.KH * g.KW
    if vectors < 1 or vectors > kt.wg_vectors:
        raise ValueError(f"vectors must be in [1, {kt.wg_vectors}], got {vectors}")
    cdef Py_ssize_t nkv = (g.K + VW - 1) // VW, ncb = (g.C + cblock - 1) // cblock
    cdef Py_ssize_t nkg = (nkv + vectors - 1) // vectors
    cdef Py_ssize_t R = go_shape[0] * g.OD * g.OH, Ktot = go_shape[4], Ctot = x_shape[4]
    cdef Py_ssize_t part = groups * nkv * g.C * kvol * VW
    cdef Py_ssize_t items = chunks * groups * nkg * ncb, i
    if parts.shape[0] < chunks * part:
        raise ValueError(f"parts holds {parts.shape[0]} elements, needs {chunks * part}")
    zeros_arr = np.zeros(max(Ctot, 1), dtype=np.asarray(parts).dtype)
    cdef const floating[::1] zeros = zeros_arr
    cdef Py_ssize_t sizes[7]
    sizes[0], sizes[1], sizes[2], sizes[3], sizes[4] = ncb, nkv, chunks, R, part
    sizes[5], sizes[6] = nkg, vectors
    if R > 0 and g.OW > 0 and g.C > 0:
        with nogil:
            if nthreads > 1 and items > 1:
                for i in prange(items, num_threads=nthreads, schedule='guided'):
                    _weight_item(i, &go[0], go.shape[0], &x[0], &parts[0], &zeros[0], groups,
                                 cblock, rows_per_block, Ktot, Ctot, sizes, &g, kt)
            else:
                for i in range(items):
                    _weight_item(i, &go[0], go.shape[0], &x[0], &parts[0], &zeros[0], groups,
                                 cblock, rows_per_block, Ktot, Ctot, sizes, &g, kt)


cdef void _weight_item(Py_ssize_t i, const floating *go, Py_ssize_t go_len, const floating *x,
                       floating *parts, const floating *zeros, Py_ssize_t groups,
                       Py_ssize_t cblock, Py_ssize_t rows_per_block, Py_ssize_t Ktot,
                       Py_ssize_t Ctot, const Py_ssize_t *sizes, const cf_geom *g,
                       const cf_nhwc_kernels *kt) noexcept nogil:
    # i = ((chunk * groups + group) * nkg + kg) * ncb + cb; sizes: ncb, nkv,
    # chunks, rows, elements of one chunk's partial sums, nkg (vector groups),
    # vectors per group
    cdef Py_ssize_t ncb = sizes[0], nkv = sizes[1], chunks = sizes[2], R = sizes[3]
    cdef Py_ssize_t nkg = sizes[5], vectors = sizes[6]
    cdef Py_ssize_t cb = i % ncb, rest = i // ncb
    cdef Py_ssize_t kg = rest % nkg, rest2 = rest // nkg
    cdef Py_ssize_t grp = rest2 % groups, j = rest2 // groups
    cdef Py_ssize_t VW = kt.vector_width, kvol = g.KD * g.KH * g.KW
    cdef Py_ssize_t kv = kg * vectors, nv = min(vectors, nkv - kv)
    cdef floating *acc = parts + j * sizes[4] + (grp * nkv + kv) * g.C * kvol * VW
    kt.weight_grad(go + grp * g.K + kv * VW, Ktot, go + go_len, x + grp * g.C, Ctot, acc,
                   g.C * kvol * VW, nv, j * R // chunks, (j + 1) * R // chunks, cb * cblock,
                   min(g.C, (cb + 1) * cblock), rows_per_block, zeros, g)


