# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# The forward driver: one entry point, the kernel named by the plan.

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
