# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Pooling kernels: max, average and adaptive (global = adaptive 1x1), forward
and backward.

Arrays arrive as planes, (P, D, H, W) with P = N*C -- 1-D and 2-D pooling use
unit D/H -- C-contiguous and native-endian, validated and allocated by
cnnfast.functional; a prepared channels-first forward (PlanesForward and
pool_planes, at the end) takes them at any shape of the planes' sizes. Each plane is owned by one thread (prange over planes,
guided as in _conv.pyx), so the backward scatters of overlapping windows
never race. Sliding-window
kernels read a per-thread padded copy of their plane (pad value -inf for max,
0 for average) and need no bounds checks in the inner loop.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cimport numpy as cnp

from ._omp cimport cf_thread_num
from .pool_kernels cimport *

import numpy as np

cnp.import_array()


cdef inline const cf_pool_kernels *_kernels(floating dummy) noexcept nogil:
    """The kernel table of this dtype for the running CPU (csrc/common/cf_isa.h)."""
    if floating is float:
        return cf_pool_kernels_for(0)
    else:
        return cf_pool_kernels_for(1)


cdef inline Py_ssize_t _vector_width(floating dummy) noexcept nogil:
    return _kernels(<floating> 0).vector_width


cdef cf_pool_geom _geometry(tuple in_size, tuple out_size, tuple kernel, tuple stride,
                            tuple padding, tuple dilation, Py_ssize_t vw):
    """The window geometry plus the padded extent the kernels read: every tap of
    every window and every input element; rows wide enough for full vector
    loads of every output chunk (cf_load_strided reads up to 2 vectors)."""
    cdef cf_pool_geom g
    g.D, g.H, g.W = in_size
    g.OD, g.OH, g.OW = out_size
    g.KD, g.KH, g.KW = kernel
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = padding
    g.dd, g.dh, g.dw = dilation
    g.Dp = max(g.pd + g.D, (g.OD - 1) * g.sd + (g.KD - 1) * g.dd + 1)
    g.Hp = max(g.ph + g.H, (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1)
    cdef Py_ssize_t chunks = (g.OW + vw - 1) // vw
    g.Wp = max(g.pw + g.W, (chunks * vw - 1) * g.sw + (g.KW - 1) * g.dw + 1) + 2 * vw
    return g


# A call's scratch memory (padded planes, window taps) comes from malloc, not
# NumPy: np.empty, fill and a memoryview cost ~0.8 us a call, a tiny
# pooling's whole kernel time.

cdef void *_scratch(Py_ssize_t n, size_t itemsize) except NULL:
    """n items of uninitialised scratch memory (free() it)."""
    cdef void *p = malloc(max(n, 1) * itemsize)
    if p == NULL:
        raise MemoryError(f"pooling scratch memory of {n * itemsize} bytes")
    return p


cdef inline Py_ssize_t _per_thread(Py_ssize_t n, size_t itemsize) noexcept nogil:
    """Elements a thread's part of a shared scratch array takes for n: whole
    64-byte lines and one more, so no two threads write the same line
    (LeNet's 2x2 average pool backward, (64, 6, 28, 28): 28-element row
    buffers side by side made two threads 0.42 ms against one's 0.25)."""
    return ((n * <Py_ssize_t> itemsize + 127) // 64 * 64) // <Py_ssize_t> itemsize


cdef inline Py_ssize_t _plane_stride(const cf_pool_geom *g, size_t itemsize) noexcept nogil:
    """Elements per thread of the padded-plane buffers."""
    return _per_thread(g.Dp * g.Hp * g.Wp, itemsize)


cdef floating *_padded_buffers(floating dummy, int nthreads, const cf_pool_geom *g,
                               double fill) except NULL:
    """One padded plane per thread, its border filled once with `fill` (free() it)."""
    cdef Py_ssize_t n = nthreads * _plane_stride(g, sizeof(floating)), i
    cdef floating *bufs = <floating *> _scratch(n, sizeof(floating))
    for i in range(n):
        bufs[i] = <floating> fill
    return bufs


cdef bint _interior_span(const cf_pool_geom *g, Py_ssize_t vw, Py_ssize_t *lo,
                         Py_ssize_t *hi) noexcept:
    """Outputs [lo, hi) of a row whose window columns all lie inside the input.
    True when that is at least one vector: the plane is then read in place,
    otherwise (narrow rows) through a padded copy in vector chunks."""
    lo[0] = min((g.pw + g.sw - 1) // g.sw, g.OW)
    cdef Py_ssize_t last = g.W - 1 + g.pw - (g.KW - 1) * g.dw   # last window start + pw
    hi[0] = min(g.OW, last // g.sw + 1) if last >= 0 else 0
    return hi[0] - lo[0] >= vw


# ------------------------------------------------------------------- max

cdef void _max_plane(Py_ssize_t p, const floating *x, floating *out, int64_t *idx,
                     floating *bufs, const int64_t *tap_offset, Py_ssize_t lo, Py_ssize_t hi,
                     const cf_pool_geom *g) noexcept nogil:
    """bufs: per-thread padded planes, or NULL to read x in place."""
    cdef Py_ssize_t in_plane = g.D * g.H * g.W, out_plane = g.OD * g.OH * g.OW
    cdef floating *buf
    cdef int64_t *ip = NULL
    if idx != NULL:
        ip = idx + p * out_plane
    if bufs == NULL:
        _kernels(<floating> 0).max_pool_plane_inplace(x + p * in_plane, out + p * out_plane, ip,
                                                      tap_offset, lo, hi, g)
        return
    buf = bufs + cf_thread_num() * _plane_stride(g, sizeof(floating))
    _kernels(<floating> 0).pool_copy_interior(x + p * in_plane, buf, g)
    _kernels(<floating> 0).max_pool_plane(buf, out + p * out_plane, ip, tap_offset, g)


def max_pool_forward(const floating[:, :, :, ::1] x,    # IN  (P, D, H, W)
                     floating[:, :, :, ::1] out,        # OUT (P, OD, OH, OW)
                     int64_t[:, :, :, ::1] indices,     # OUT like out, or None
                     tuple kernel, tuple stride, tuple padding, tuple dilation,
                     int nthreads):
    cdef int64_t *ip = NULL
    if indices is not None:
        ip = &indices[0, 0, 0, 0]
    _forward_once(_MAX, x, out, ip, (kernel, stride, padding, dilation), None, nthreads)


cdef void _scatter_image_last(Py_ssize_t p, const floating *go, const int64_t *idx,
                              floating *gx, Py_ssize_t n_out, Py_ssize_t plane,
                              Py_ssize_t C, int64_t *bad) noexcept nogil:
    """Channels-last image p: outputs (n_out / C, C), input (plane / C, C);
    each index is a position in the spatial plane, its channel the output's."""
    cdef const floating *g = go + p * n_out
    cdef const int64_t *ix = idx + p * n_out
    cdef floating *x = gx + p * plane
    cdef Py_ssize_t q, o, c, positions = plane // C
    cdef int64_t at
    memset(x, 0, plane * sizeof(floating))
    bad[p] = -1
    for q in range(n_out // C):
        o = q * C
        for c in range(C):
            at = ix[o + c]
            if at < 0 or at >= positions:
                bad[p] = o + c
                return
            x[at * C + c] += g[o + c]


cdef void _scatter_plane(Py_ssize_t p, const floating *go, const int64_t *idx, floating *gx,
                         Py_ssize_t n_out, Py_ssize_t plane, Py_ssize_t channels_last,
                         int64_t *bad) noexcept nogil:
    """bad[p] = position in plane p's outputs of its first out-of-range index, or -1."""
    if channels_last > 0:
        _scatter_image_last(p, go, idx, gx, n_out, plane, channels_last, bad)
        return
    bad[p] = _kernels(<floating> 0).max_pool_backward_plane(go + p * n_out, idx + p * n_out,
                                                            n_out, gx + p * plane, plane)


def max_pool_backward(const floating[:, ::1] grad_out,   # IN  (P, outputs per plane)
                      const int64_t[:, ::1] indices,     # IN  like grad_out
                      floating[:, ::1] grad_x,           # OUT (P, input plane)
                      int nthreads, Py_ssize_t channels_last=0):
    """Also the backward of adaptive and global max pooling. Indices are
    range-checked as they are used (one pass, no out-of-bounds write even if
    the array changes meanwhile); returns the flat position in `indices` of
    the first bad one, or -1 (grad_x is then garbage, to be discarded).
    channels_last=C: each plane is a channels-last image (positions x C),
    indices are positions in its spatial plane."""
    cdef Py_ssize_t P = grad_out.shape[0], n_out = grad_out.shape[1]
    cdef Py_ssize_t plane = grad_x.shape[1], p, C = channels_last
    if P == 0:
        return -1
    cdef const floating *gop = &grad_out[0, 0]
    cdef const int64_t *ip = &indices[0, 0]
    cdef floating *gxp = &grad_x[0, 0]
    cdef int64_t *bad = <int64_t *> _scratch(P, sizeof(int64_t))
    try:
        with nogil:
            if nthreads > 1:
                for p in prange(P, num_threads=nthreads, schedule='guided'):
                    _scatter_plane(p, gop, ip, gxp, n_out, plane, C, bad)
            else:
                for p in range(P):
                    _scatter_plane(p, gop, ip, gxp, n_out, plane, C, bad)
        for p in range(P):
            if bad[p] >= 0:
                return p * n_out + bad[p]
        return -1
    finally:
        free(bad)


# --------------------------------------------------------------- average

cdef inline Py_ssize_t _whole_vectors(Py_ssize_t n, Py_ssize_t vw) noexcept nogil:
    return (n + vw - 1) // vw * vw


# The kernels' vector width by dtype char on this CPU: avg pooling's divisor
# arrays are padded to whole vectors of it (pool_validation.divisor_array).
VECTOR_WIDTH = {"f": _vector_width(<float> 0), "d": _vector_width(<double> 0)}


cdef const floating *_divisors(const floating[::1] divisors, const cf_pool_geom *g,
                               Py_ssize_t vw) except NULL:
    """pool_validation.divisor_array's data, checked to cover the kernels' reads."""
    if divisors.shape[0] < g.OD + g.OH + _whole_vectors(g.OW, vw):
        raise ValueError(f"divisors has {divisors.shape[0]} elements, expected "
                         f"{g.OD + g.OH + _whole_vectors(g.OW, vw)} (pool_validation."
                         f"divisor_array)")
    return &divisors[0]


cdef void _avg_plane(Py_ssize_t p, const floating *x, floating *out, floating *bufs,
                     const floating *dc, const floating *hc, const floating *wc,
                     Py_ssize_t lo, Py_ssize_t hi, const cf_pool_geom *g) noexcept nogil:
    """bufs: per-thread padded planes, or NULL to read x in place."""
    cdef Py_ssize_t in_plane = g.D * g.H * g.W, out_plane = g.OD * g.OH * g.OW
    cdef floating *buf
    if bufs == NULL:
        _kernels(<floating> 0).avg_pool_plane_inplace(x + p * in_plane, out + p * out_plane, dc,
                                                      hc, wc, lo, hi, g)
        return
    buf = bufs + cf_thread_num() * _plane_stride(g, sizeof(floating))
    _kernels(<floating> 0).pool_copy_interior(x + p * in_plane, buf, g)
    _kernels(<floating> 0).avg_pool_plane(buf, out + p * out_plane, dc, hc, wc, g)


def avg_pool_forward(const floating[:, :, :, ::1] x,    # IN  (P, D, H, W)
                     floating[:, :, :, ::1] out,        # OUT (P, OD, OH, OW)
                     tuple kernel, tuple stride, tuple padding,
                     const floating[::1] divisors,      # pool_validation.divisor_array
                     int nthreads):
    _forward_once(_AVG, x, out, NULL, (kernel, stride, padding, (1, 1, 1)), divisors.base,
                  nthreads)


cdef void _avg_backward_plane(Py_ssize_t p, const floating *go, floating *gx,
                              floating *bufs, floating *scaled,
                              const floating *dc, const floating *hc, const floating *wc,
                              const cf_pool_geom *g) noexcept nogil:
    cdef Py_ssize_t in_plane = g.D * g.H * g.W, out_plane = g.OD * g.OH * g.OW
    cdef int tid = cf_thread_num()
    cdef floating *buf = bufs + tid * _plane_stride(g, sizeof(floating))
    cdef floating *row = scaled + tid * _per_thread(g.OW * g.sw, sizeof(floating))
    _kernels(<floating> 0).avg_pool_backward_plane(go + p * out_plane, buf, row,
                                                   gx + p * in_plane, dc, hc, wc, g)


def avg_pool_backward(const floating[:, :, :, ::1] grad_out,   # IN  (P, OD, OH, OW)
                      floating[:, :, :, ::1] grad_x,           # OUT (P, D, H, W)
                      tuple kernel, tuple stride, tuple padding,
                      const floating[::1] divisors,            # pool_validation.divisor_array
                      int nthreads):
    cdef Py_ssize_t P = grad_out.shape[0], p
    if P == 0:
        return
    cdef Py_ssize_t vw = _vector_width(<floating> 0)
    cdef cf_pool_geom g = _geometry((grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]), (grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]),
                                    kernel, stride, padding, (1, 1, 1), vw)
    cdef const floating *dc = _divisors(divisors, &g, vw)
    cdef const floating *hc = dc + g.OD
    cdef const floating *wc = hc + g.OH
    nthreads = max(1, min(nthreads, P))
    cdef floating *b = NULL
    cdef floating *s = NULL
    cdef const floating *gop = &grad_out[0, 0, 0, 0]
    cdef floating *gxp = &grad_x[0, 0, 0, 0]
    try:
        b = <floating *> _scratch(nthreads * _plane_stride(&g, sizeof(floating)),
                                  sizeof(floating))
        s = <floating *> _scratch(nthreads * _per_thread(g.OW * g.sw, sizeof(floating)),
                                  sizeof(floating))   # spread rows
        with nogil:
            if nthreads > 1:
                for p in prange(P, num_threads=nthreads, schedule='guided'):
                    _avg_backward_plane(p, gop, gxp, b, s, dc, hc, wc, &g)
            else:
                for p in range(P):
                    _avg_backward_plane(p, gop, gxp, b, s, dc, hc, wc, &g)
    finally:
        free(b)
        free(s)


# -------------------------------------------------------------- adaptive

cdef struct _windows:
    # torch's adaptive windows per dim: [start, end) of each output
    const int64_t *ds
    const int64_t *de
    const int64_t *hs
    const int64_t *he
    const int64_t *ws
    const int64_t *we


cdef void _adaptive_plane(Py_ssize_t p, bint is_max, const floating *x, floating *out,
                          int64_t *idx, Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
                          const _windows *win) noexcept nogil:
    cdef const floating *xp = x + p * D * H * W
    cdef Py_ssize_t n_out = OD * OH * OW
    cdef floating *op = out + p * n_out
    cdef int64_t *ip = NULL
    if idx != NULL:
        ip = idx + p * n_out
    if is_max:
        _kernels(<floating> 0).adaptive_max_plane(xp, op, ip, H, W, OD, OH, OW, win.ds, win.de,
                                                  win.hs, win.he, win.ws, win.we)
    else:
        _kernels(<floating> 0).adaptive_avg_plane(xp, op, D, H, W, OD, OH, OW, win.ds, win.de,
                                                  win.hs, win.he, win.ws, win.we)


cdef _windows _window_pointers(const int64_t[::1] windows, Py_ssize_t OD, Py_ssize_t OH,
                               Py_ssize_t OW) except *:
    """windows: one int64 array [ds | de | hs | he | ws | we] of 2 * (OD +
    OH + OW) (kept alive by the caller). One array, not six: each
    memoryview costs a tiny call ~0.15 us."""
    if windows.shape[0] != 2 * (OD + OH + OW):
        raise ValueError(f"windows has {windows.shape[0]} elements, expected "
                         f"{2 * (OD + OH + OW)} (adaptive_windows3)")
    cdef _windows w
    w.ds = &windows[0]
    w.de = w.ds + OD
    w.hs = w.de + OD
    w.he = w.hs + OH
    w.ws = w.he + OH
    w.we = w.ws + OW
    return w


def adaptive_pool_forward(bint is_max,
                          const floating[:, :, :, ::1] x,    # IN  (P, D, H, W)
                          floating[:, :, :, ::1] out,        # OUT (P, OD, OH, OW)
                          int64_t[:, :, :, ::1] indices,     # OUT like out, or None (max)
                          const int64_t[::1] windows,        # [ds|de|hs|he|ws|we]
                          int nthreads):
    """Adaptive (and, with a 1x1x1 output, global) max or average pooling."""
    cdef int64_t *ip = NULL
    if indices is not None:
        ip = &indices[0, 0, 0, 0]
    _forward_once(_ADAPTIVE_MAX if is_max else _ADAPTIVE_AVG, x, out, ip, None, windows.base,
                  nthreads)


cdef void _adaptive_avg_backward_plane(Py_ssize_t p, const floating *go, floating *gx,
                                       Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
                                       Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
                                       const _windows *win) noexcept nogil:
    _kernels(<floating> 0).adaptive_avg_backward_plane(go + p * OD * OH * OW, gx + p * D * H * W,
                                                       D, H, W, OD, OH, OW, win.ds, win.de,
                                                       win.hs, win.he, win.ws, win.we)


def adaptive_avg_backward(const floating[:, :, :, ::1] grad_out,   # IN  (P, OD, OH, OW)
                          floating[:, :, :, ::1] grad_x,           # OUT (P, D, H, W)
                          const int64_t[::1] windows,              # [ds|de|hs|he|ws|we]
                          int nthreads):
    cdef Py_ssize_t P = grad_out.shape[0], OD = grad_out.shape[1]
    cdef Py_ssize_t OH = grad_out.shape[2], OW = grad_out.shape[3]
    cdef Py_ssize_t D = grad_x.shape[1], H = grad_x.shape[2], W = grad_x.shape[3], p
    if P == 0:
        return
    cdef _windows win = _window_pointers(windows, OD, OH, OW)
    cdef const floating *gop = &grad_out[0, 0, 0, 0]
    cdef floating *gxp = &grad_x[0, 0, 0, 0]
    with nogil:
        if nthreads > 1:
            for p in prange(P, num_threads=nthreads, schedule='guided'):
                _adaptive_avg_backward_plane(p, gop, gxp, D, H, W, OD, OH, OW, &win)
        else:
            for p in range(P):
                _adaptive_avg_backward_plane(p, gop, gxp, D, H, W, OD, OH, OW, &win)


# ------------------------------------------------ forward: one core, two entries

cdef enum:
    _MAX = 0
    _AVG = 1
    _ADAPTIVE_MAX = 2
    _ADAPTIVE_AVG = 3

_KINDS = {"max": _MAX, "avg": _AVG, "adaptive_max": _ADAPTIVE_MAX,
          "adaptive_avg": _ADAPTIVE_AVG}


cdef struct _forward:
    # a forward pooling over P planes, everything but its arrays
    int kind
    cf_pool_geom g              # adaptive: the sizes only
    Py_ssize_t P, lo, hi        # lo, hi: _interior_span's
    bint padded                 # sliding windows through per-thread padded planes
    bint narrow                 # avg: rows narrower than a vector, no padding, in place
    int nthreads
    int64_t *taps               # max: flat plane offset of each window tap (owned)
    const void *divisors        # avg: divisor_array's data (its owner keeps it alive)
    _windows win                # adaptive (its owner keeps the array alive)


cdef int _forward_init(floating dummy, _forward *f, int kind, tuple in_planes,
                       tuple out_planes, tuple window, extra, int nthreads) except -1:
    """f for planes of in_planes (P, D, H, W) pooled to out_planes; window:
    (kernel, stride, padding, dilation) of max and avg; extra: avg's
    divisor_array or adaptive's windows. f.taps is malloc'd (free it)."""
    cdef Py_ssize_t vw = _vector_width(<floating> 0), a, i, j, t = 0
    cdef const floating[::1] divisors
    f.kind = kind
    f.taps = NULL
    f.divisors = NULL
    f.padded = False
    f.narrow = False
    f.P = in_planes[0]
    if out_planes[0] != f.P:
        raise ValueError(f"{out_planes[0]} output planes for {f.P} input planes")
    if kind == _MAX or kind == _AVG:
        kernel, stride, padding, dilation = window
        f.g = _geometry(in_planes[1:], out_planes[1:], kernel, stride, padding, dilation, vw)
        f.padded = not _interior_span(&f.g, vw, &f.lo, &f.hi)
        # average pooling of narrow rows reads in place, an output at a time, when
        # no window reaches past the input (no padding, nor ceil_mode's last window)
        f.narrow = (f.padded and kind == _AVG and f.g.pd == 0 and f.g.ph == 0
                    and f.g.pw == 0 and (f.g.OD - 1) * f.g.sd + f.g.KD <= f.g.D
                    and (f.g.OH - 1) * f.g.sh + f.g.KH <= f.g.H
                    and (f.g.OW - 1) * f.g.sw + f.g.KW <= f.g.W)
        f.padded = f.padded and not f.narrow
    else:
        f.g.D, f.g.H, f.g.W = in_planes[1:]
        f.g.OD, f.g.OH, f.g.OW = out_planes[1:]
        f.win = _window_pointers(extra, f.g.OD, f.g.OH, f.g.OW)
    if kind == _AVG:
        divisors = extra
        f.divisors = _divisors(divisors, &f.g, vw)
    f.nthreads = max(1, min(nthreads, f.P))
    if kind == _MAX:
        f.taps = <int64_t *> _scratch(f.g.KD * f.g.KH * f.g.KW, sizeof(int64_t))
        for a in range(f.g.KD):
            for i in range(f.g.KH):
                for j in range(f.g.KW):
                    f.taps[t] = (a * f.g.dd * f.g.H + i * f.g.dh) * f.g.W + j * f.g.dw
                    t += 1
    return 0


cdef inline void _forward_plane(Py_ssize_t p, const _forward *f, const floating *x,
                                floating *out, int64_t *idx, floating *bufs) noexcept nogil:
    cdef const floating *dc
    if f.kind == _MAX:
        _max_plane(p, x, out, idx, bufs, f.taps, f.lo, f.hi, &f.g)
    elif f.kind == _AVG and f.narrow:
        dc = <const floating *> f.divisors
        _kernels(<floating> 0).avg_pool_plane_narrow(
            x + p * f.g.D * f.g.H * f.g.W, out + p * f.g.OD * f.g.OH * f.g.OW, dc,
            dc + f.g.OD, dc + f.g.OD + f.g.OH, &f.g)
    elif f.kind == _AVG:
        dc = <const floating *> f.divisors
        _avg_plane(p, x, out, bufs, dc, dc + f.g.OD, dc + f.g.OD + f.g.OH, f.lo, f.hi, &f.g)
    else:
        _adaptive_plane(p, f.kind == _ADAPTIVE_MAX, x, out, idx, f.g.D, f.g.H, f.g.W, f.g.OD,
                        f.g.OH, f.g.OW, &f.win)


cdef void _global_avg_run(const _forward *f, const floating *x, floating *out) noexcept nogil:
    """Adaptive average to 1x1x1 (global): blocks of planes, 8 per thread
    (guided, as the plane loop: a thread slowed by another process takes
    fewer), each block one global_avg_planes call. Each plane's mean is its
    own, so the bits do not depend on the split."""
    cdef Py_ssize_t n = f.g.D * f.g.H * f.g.W, P = f.P, b
    cdef Py_ssize_t blocks = min(P, 8 * f.nthreads)
    if f.nthreads > 1:
        for b in prange(blocks, num_threads=f.nthreads, schedule='guided'):
            _kernels(<floating> 0).global_avg_planes(x, out, b * P // blocks,
                                                     (b + 1) * P // blocks, n)
    else:
        _kernels(<floating> 0).global_avg_planes(x, out, 0, P, n)


cdef int _forward_run(const _forward *f, const floating *x, floating *out,
                      int64_t *idx) except -1:
    """Every plane of x pooled into out (and idx, NULL or max's indices)."""
    cdef floating *bufs = NULL
    cdef Py_ssize_t p
    cdef int nthreads = f.nthreads
    if f.P == 0:
        return 0
    if f.kind == _ADAPTIVE_AVG and f.g.OD == 1 and f.g.OH == 1 and f.g.OW == 1:
        with nogil:
            _global_avg_run(f, x, out)
        return 0
    if f.padded:
        bufs = _padded_buffers(<floating> 0, nthreads, &f.g,
                               -INFINITY if f.kind == _MAX else 0.0)
    try:
        with nogil:
            if nthreads > 1:
                for p in prange(f.P, num_threads=nthreads, schedule='guided'):
                    _forward_plane(p, f, x, out, idx, bufs)
            else:
                for p in range(f.P):
                    _forward_plane(p, f, x, out, idx, bufs)
    finally:
        free(bufs)
    return 0


cdef int _forward_once(int kind, const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       int64_t *idx, tuple window, extra, int nthreads) except -1:
    """The def drivers' forward: planned and run on the arrays' own shapes."""
    cdef _forward f
    if x.shape[0] == 0:
        return 0
    _forward_init(<floating> 0, &f, kind, (x.shape[0], x.shape[1], x.shape[2], x.shape[3]),
                  (out.shape[0], out.shape[1], out.shape[2], out.shape[3]), window, extra,
                  nthreads)
    try:
        _forward_run(&f, &x[0, 0, 0, 0], &out[0, 0, 0, 0], idx)
    finally:
        free(f.taps)
    return 0


cdef class PlanesForward:
    """A channels-first pooling forward prepared once (cnnfast._ops keeps one
    per prepared call): its planes' geometry, taps, divisors or windows and
    thread count, run by pool_planes. kind: max, avg, adaptive_max or
    adaptive_avg; x (any shape of in_planes' size) pools to out_shape
    (out_planes' size); window and extra as _forward_init's."""
    cdef _forward f
    cdef bint is_double
    cdef int typenum
    cdef Py_ssize_t in_size, out_size
    cdef object keep
    cdef readonly object dtype, out_shape
    cdef readonly bint return_indices
    cdef readonly int threads

    def __cinit__(self):
        self.f.taps = NULL

    def __init__(self, str kind, dtype, tuple in_planes, tuple out_planes, tuple out_shape,
                 tuple window, extra, int nthreads, bint return_indices=False):
        cdef int k = _KINDS[kind]
        cdef _forward *f = &self.f
        self.dtype = np.dtype(dtype)
        self.is_double = self.dtype == np.float64
        self.typenum = cnp.NPY_DOUBLE if self.is_double else cnp.NPY_FLOAT
        self.keep = extra
        self.threads = nthreads
        self.return_indices = return_indices
        self.out_shape = out_shape
        self.out_size = _volume(out_shape)
        if self.out_size != in_planes[0] * _volume(out_planes[1:]):
            raise ValueError(f"out_shape {out_shape} does not hold out_planes {out_planes}")
        self.in_size = in_planes[0] * _volume(in_planes[1:])
        if self.is_double:
            _forward_init(<double> 0, f, k, in_planes, out_planes, window, extra, nthreads)
        else:
            _forward_init(<float> 0, f, k, in_planes, out_planes, window, extra, nthreads)

    def __dealloc__(self):
        free(self.f.taps)


cdef bint _kernel_ready(object a, int typenum, Py_ssize_t size, bint writeable):
    """a: an ndarray the kernels may use through its data pointer, of typenum
    and size elements."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = a
    return (cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_TYPE(arr) == typenum
            and cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_SIZE(arr) == size
            and (not writeable or cnp.PyArray_ISWRITEABLE(arr)))


def pool_planes(PlanesForward plan, x, out, indices):
    """Run a prepared forward: x (any shape of the plan's input size) pooled
    into out and, for max kinds, indices (int64, or None), C-contiguous
    arrays of the plan's output size. The arrays are checked through
    NumPy's C API, not taken as memoryviews (~0.2 us each, and reshaped
    to planes first: a tiny pooling's driver call cost 1.9 us, now 0.6);
    x is copied first when not C-contiguous, aligned and native (the
    kernel_array rule)."""
    if not _kernel_ready(x, plan.typenum, plan.in_size, False):
        x = np.require(x, plan.dtype, ("C_CONTIGUOUS", "ALIGNED"))
        if cnp.PyArray_SIZE(<cnp.ndarray> x) != plan.in_size:
            raise ValueError(f"x has {x.size} elements, the prepared pooling {plan.in_size}")
    if not _kernel_ready(out, plan.typenum, plan.out_size, True):
        raise ValueError(f"out must be a C-contiguous writeable {plan.dtype} array of "
                         f"{plan.out_size} elements")
    cdef int64_t *ip = NULL
    if indices is not None:
        if not _kernel_ready(indices, cnp.NPY_INT64, plan.out_size, True):
            raise ValueError(f"indices must be a C-contiguous writeable int64 array of "
                             f"{plan.out_size} elements")
        ip = <int64_t *> cnp.PyArray_DATA(<cnp.ndarray> indices)
    cdef void *xp = cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef void *op = cnp.PyArray_DATA(<cnp.ndarray> out)
    if plan.is_double:
        _forward_run(&plan.f, <const double *> xp, <double *> op, ip)
    else:
        _forward_run(&plan.f, <const float *> xp, <float *> op, ip)


cdef Py_ssize_t _volume(tuple sizes) except -1:
    cdef Py_ssize_t v = 1
    for n in sizes:
        v *= <Py_ssize_t> n
    return v
