"""The backward passes of a channels-last convolution on the NHWC layout, as
two records (configuration computed once by the plan, which decides when
they run: _plan.nhwc_backward_wins; and their run), so that a channels-last
training step makes no layout copies.

Input gradient ("nhwc_direct_x"): grad_x = conv_transpose(grad_out, w),
split into stride phases. Along a dim of stride s, the input positions
r + s*q of phase r receive grad_out[q + (r + p - t*d) / s] * w[t] from the
taps t whose offset is a whole number: a stride-1 convolution of grad_out
with those taps reversed (dilation d / gcd(s, d)), the weights transposed
(K <-> C), padding (t_max*d - r - p) / s (negative where the phase starts
inside). Each phase runs on the forward kernel (csrc/nhwc/conv_nhwc.h): at
stride 1 the single phase is the whole plane; otherwise a phase with long
rows runs one output row per work item, its pixels stride*C apart, written
in place (no col2im, no scatter), and a phase with short rows
(PHASE_ROW_GATHER) runs as one forward over its whole plane into a
contiguous array, copied to its positions after. A phase without taps is
zeros.

Input gradient on Winograd ("nhwc_winograd_x"): for a 3x3 stride-1
convolution that single phase is itself a 3x3 stride-1 convolution (grad_out
with the weights flipped and transposed, padding 2 - p), which the NHWC
Winograd forward runs with its weights transformed per call where that wins
(_plan.nhwc_winograd_fresh_wins: a layer training at batch 8-16).

Weight gradient on Winograd ("nhwc_winograd_weight"): a 3x3 stride-1
convolution with enough output pixels (_plan.nhwc_winograd_weight_wins) takes
dW = G^T [sum over tiles of (A dY A^T) .* (B^T x B)] G: the input's tiles
transformed as the forward's, grad_out's through A, per position one GEMM
over the tiles on BLAS (csrc/nhwc/conv_nhwc_winograd.h, _conv_nhwc.pyx
winograd_weight_grad).

Weight gradient ("nhwc_weight"): conv_nhwc_backward.h, oneDNN's
register tile widened (up to 4 vectors of output channels x kw x an
input-channel step), reading a zero-padded copy of x. Work items split
groups of output-channel vectors and input-channel blocks; only when those
leave threads idle are the output rows cut into chunks too, each with
private partial sums added in chunk order, so results are bit-identical run
to run at a given thread count. The sums' vector lanes are then moved to
dW's rows by one blocked transpose (_layout.swap_axes).
"""
from __future__ import annotations

import math
from itertools import product
from typing import NamedTuple

import numpy as np

from . import _nhwc
from . import _validation as V
from ._ext import _conv_nhwc, _layout
from ._threads import blas_pinned

# Output pixels a weight-gradient row block holds, for one vector of output
# channels (a tile of v vectors takes 1/v of them): its grad_out vectors
# (256 x 64 bytes) stay in L1 while every tap and channel step sweeps them.
WEIGHT_BLOCK_PIXELS = 256
# Input channels per weight-gradient channel block: a multiple of the
# kernel's channel step (8 on AVX-512).
WEIGHT_CHANNEL_STEP = 8
# Work items per thread the weight gradient aims for before it cuts the rows
# into chunks (each chunk costs a private copy of dW).
WEIGHT_ITEMS_PER_THREAD = 4
# Elements from which a copy takes every thread (the layout copies' grain,
# _plan.POOL_GRAIN): dW's vector lanes moved to its rows, a gathered stride
# phase moved to its positions.
SWAP_THREADS_ELEMENTS = 1 << 17


class Phase(NamedTuple):
    """One stride phase of the input gradient, 3-D (unit dims for 1-D/2-D)."""
    offset: tuple       # first input position of the phase per dim
    size: tuple         # positions of the phase per dim
    taps: tuple         # per dim, the kernel taps it reads, in sub-kernel order
    padding: tuple      # of the stride-1 sub-convolution (may be negative)
    dilation: tuple     # of the sub-convolution
    config: _nhwc.NhwcConfig
    gathered: bool      # run into a contiguous array, then copied to its positions


class NhwcInputGradConfig(NamedTuple):
    phases: tuple       # Phase per stride phase with positions and taps
    dense: bool         # stride 1: one phase, the whole plane
    zero_fill: bool     # some phase has positions but no taps (zeros there)
    threads: int
    workspace_bytes: int


class NhwcInputGradWinogradConfig(NamedTuple):
    flipped: V.ConvGeometry              # grad_out -> grad_x (input_grad_geometry)
    winograd: _nhwc.WinogradConfig
    direct: NhwcInputGradConfig          # the fallback: a value that is not finite
    threads: int
    workspace_bytes: int


class NhwcWeightConfig(NamedTuple):
    vector_width: int   # output channels per accumulator
    vectors: int        # vectors of output channels per work item (and tile)
    cblock: int         # input channels per work item
    padded: bool        # the kernel reads a zero-padded copy of x (no edge taps)
    chunks: int         # row chunks with private partial sums (1: none)
    rows_per_block: int
    items: int
    threads: int
    workspace_bytes: int


class NhwcWeightWinogradConfig(NamedTuple):
    m: int                          # output tile: 4 (F(4x4, 3x3)) or 2 (F(2x2, 3x3))
    tiles: int                      # tiles of the whole batch (each GEMM's depth)
    direct: NhwcWeightConfig        # the fallback: a value that is not finite
    threads: int
    workspace_bytes: int


def _dim_phases(n, k, s, p, d):
    """Per phase r of one dim with positions: (r, size, taps reversed, pad, dilation)."""
    out = []
    for r in range(min(s, n)):
        taps = [t for t in range(k) if (r + p - t * d) % s == 0]
        size = -(-(n - r) // s)
        if not taps:
            out.append((r, size, (), 0, 1))
            continue
        out.append((r, size, tuple(reversed(taps)), (taps[-1] * d - r - p) // s,
                    d // math.gcd(s, d)))
    return out


# Phase rows up to this many pixels run as one forward call over the whole
# phase (spans across rows and images, _nhwc.batch_folded) into a contiguous
# array, copied to the phase's positions after (_layout.copy_pixels, on the
# threads): a work item of one short row streamed its block's weights for a
# few pixels. 3x3 stride 2 at batch 16, one / two threads: 256 -> 512 from
# 7x7 (rows of 4 and 3) 6.5 -> 3.5 / 4.7 -> 3.0 ms, from 14x14 (rows of 7)
# 3.6 -> 2.8 / 2.9 -> 2.4; batch 8 from 4x4 2.6 -> 1.7 / 2.3 -> 1.6; DCGAN's
# 4x4 stride 2 at batch 64, rows of 8, 47.6 -> 25.3 / 23.7 -> 16.8; 64 -> 128
# from 28x28 (rows of 14) 3.41 -> 3.02 / 1.78 -> 1.53 (with NumPy's one-thread
# copy it lost on two threads). Rows of 28 lost on both (batch 8 64 -> 128
# from 56x56: 5.40 -> 5.71 / 2.87 -> 3.16): the copy then costs more than the
# weights' streaming.
PHASE_ROW_GATHER = 14


def configure_input_grad(geom: V.ConvGeometry, threads: int) -> NhwcInputGradConfig:
    stride, pad, dilation = geom.kernel_args
    dims = [_dim_phases(n, k, s, p, d) for n, k, s, p, d in
            zip(geom.as3d(geom.in_size, 1), geom.as3d(geom.kernel, 1), stride, pad, dilation)]
    phases, zero_fill, work = [], False, 0
    for parts in product(*dims):
        offset, size, taps, padding, dil = (tuple(p[i] for p in parts) for i in range(5))
        if not all(taps):
            zero_fill = True
            continue
        sub = geom._replace(nd=3, in_channels=geom.out_channels, out_channels=geom.in_channels,
                            in_size=geom.as3d(geom.out_size, 1), out_size=size,
                            kernel=tuple(map(len, taps)), stride=(1, 1, 1), dilation=dil,
                            pad_before=padding, pad_after=padding)
        cfg = _nhwc.configure(sub, threads)
        gathered = size[2] <= PHASE_ROW_GATHER
        phases.append(Phase(offset, size, taps, padding, dil, cfg, gathered))
        work += cfg.workspace_bytes + (gathered * geom.batch * math.prod(size)
                                       * geom.in_channels * np.dtype(geom.dtype).itemsize)
    dense = all(s == 1 for s in stride)
    return NhwcInputGradConfig(tuple(phases), dense, zero_fill, threads, work)


def run_input_grad(kernel: str, cfg, geom: V.ConvGeometry, grad_out, weight, bias=None):
    """The planned input-gradient pass (kernel "nhwc_winograd_x" or
    "nhwc_direct_x", its config): grad_x, or None as input_grad."""
    if kernel == "nhwc_winograd_x":
        return input_grad_winograd(cfg, geom, grad_out, weight, bias)
    return input_grad(cfg, geom, grad_out, weight, bias)


def input_grad_geometry(geom: V.ConvGeometry):
    """The input gradient of a 2-D 3x3 stride-1 convolution as a forward
    convolution: grad_out (K channels) -> grad_x (C channels) with the
    weights flipped and transposed, padding 2 - p (None: another shape, or
    padding past 2)."""
    if not (geom.nd == 2 and tuple(geom.kernel) == (3, 3) and geom.groups == 1
            and all(s == 1 for s in geom.stride) and all(d == 1 for d in geom.dilation)
            and geom.pad_mode == "zeros"
            and all(p <= 2 for p in geom.pad_before + geom.pad_after)):
        return None
    return geom._replace(in_channels=geom.out_channels, out_channels=geom.in_channels,
                         in_size=geom.out_size, out_size=geom.in_size,
                         pad_before=tuple(2 - p for p in geom.pad_before),
                         pad_after=tuple(2 - p for p in geom.pad_after))


def configure_input_grad_winograd(geom: V.ConvGeometry, flipped: V.ConvGeometry,
                                  threads: int) -> NhwcInputGradWinogradConfig:
    wcfg = _nhwc.winograd_configure(flipped, threads)
    direct = configure_input_grad(geom, threads)
    # the transformed weights are the call's own (transformed at each call)
    u_bytes = (wcfg.m + 2) ** 2 * wcfg.pos_stride * np.dtype(geom.dtype).itemsize
    return NhwcInputGradWinogradConfig(flipped, wcfg, direct, threads,
                                       wcfg.workspace_bytes + u_bytes)


def input_grad_winograd(cfg: NhwcInputGradWinogradConfig, geom: V.ConvGeometry, grad_out,
                        weight, bias=None):
    """input_grad on the Winograd forward: grad_out with the flipped,
    transposed weights (transformed here), plus bias (C,) when given. Falls
    back to the direct phases (input_grad, with its own None) when a value
    is not finite, as the forward does."""
    flipped = cfg.flipped
    u, finite = _nhwc.winograd_pack(weight, flipped, cfg.winograd, flipped=True)
    if finite:
        out = _nhwc.winograd_run(cfg.winograd, flipped, grad_out, u,
                                 _nhwc.winograd_bias(bias, flipped))
        if out is not None:
            return out
    return input_grad(cfg.direct, geom, grad_out, weight, bias)


def input_grad(cfg: NhwcInputGradConfig, geom: V.ConvGeometry, grad_out, weight, bias=None):
    """grad_x (N, *in, C) from channels-last grad_out (N, *out, K), plus
    bias (C,) when given (a transposed convolution's), or None
    when a weight the phases read is NaN or infinite: a tap outside grad_out
    reads zeros, and 0 * inf would put NaN where the reference (a scatter of
    the real products) is finite; the caller then runs another kernel."""
    dtype, G = geom.dtype, geom.groups
    K, C = geom.out_channels, geom.in_channels
    k3 = geom.as3d(geom.kernel, 1)
    w = V.kernel_array(weight, dtype).reshape(-1)
    kvol = math.prod(k3)
    packs = []
    for ph in cfg.phases:
        td, th, tw = ph.taps
        taps = tuple((a * k3[1] + b) * k3[2] + c for a in td for b in th for c in tw)
        packed = np.empty(G * ph.config.group_stride, dtype)
        if not _conv_nhwc.pack_flipped(w, packed, K, C, kvol, taps, G,
                                       ph.config.group_stride, ph.config.cchunk,
                                       _nhwc.pack_threads(packed.size, cfg.threads)):
            return None
        packs.append(packed)
    go = V.kernel_array(grad_out, dtype).reshape(-1)
    shape = (geom.batch,) + tuple(geom.in_size) + (C,)
    out = np.empty(shape, dtype)
    if cfg.zero_fill:   # positions no tap reaches hold the bias alone
        out[...] = 0 if bias is None else V.kernel_array(bias, dtype)
    # the forward kernel's bias layout (_nhwc.pack_bias), for C outputs
    bias_packed = (np.empty(0, dtype) if not cfg.phases else _nhwc.pack_bias(
        bias, geom._replace(out_channels=C), cfg.phases[0].config))
    go5 = (geom.batch,) + geom.as3d(geom.out_size, 1) + (K,)
    out5 = (geom.batch,) + geom.as3d(geom.in_size, 1) + (C,)
    flat = out.reshape(-1)
    for ph, packed in zip(cfg.phases, packs):
        kernel = tuple(map(len, ph.taps))
        if cfg.dense:
            go5, out5 = _images_as_depth(go5, out5, kernel)
            # the packs are finite (a NaN/inf weight returned None above)
            _conv_nhwc.forward(go, go5, packed, ph.config.group_stride, bias_packed, flat,
                               out5, kernel, (1, 1, 1), ph.padding, ph.dilation, G,
                               ph.config.cchunk, ph.config.span,
                               _nhwc.kernel_mode(ph.config, True), cfg.threads)
        elif ph.gathered:
            _phase_gathered(ph, packed, go, go5, bias_packed, out.reshape(out5), kernel,
                            geom.kernel_args[0], G, cfg.threads)
        else:
            _conv_nhwc.forward_phase(go, go5, packed, ph.config.group_stride, bias_packed,
                                     flat, out5, ph.offset, geom.kernel_args[0], ph.size,
                                     kernel, ph.padding, ph.dilation, G, ph.config.cchunk,
                                     cfg.threads)
    return out


def _images_as_depth(src5, dst5, kernel):
    """(src5, dst5), the 5-D (N, D, H, W, C) shapes of a stride-1 forward, with
    the images as depth when both depths and the kernel's are 1: the run's
    tiles then span images (_nhwc.batch_folded, which its configuration
    assumed)."""
    if src5[1] == 1 and dst5[1] == 1 and kernel[0] == 1:
        n = src5[0]
        return (1, n) + tuple(src5[2:]), (1, n) + tuple(dst5[2:])
    return tuple(src5), tuple(dst5)


def _phase_gathered(ph: Phase, packed, go, go5, bias_packed, out, kernel, stride, groups,
                    threads):
    """One stride phase of the input gradient as a stride-1 forward over the
    phase's whole plane into a contiguous array, then copied to its
    positions phase + stride * q of out (N, D, H, W, C)."""
    part = np.empty((out.shape[0],) + tuple(ph.size) + (out.shape[-1],), out.dtype)
    src5, part5 = _images_as_depth(go5, part.shape, kernel)
    _conv_nhwc.forward(go, src5, packed, ph.config.group_stride, bias_packed,
                       part.reshape(-1), part5, kernel, (1, 1, 1), ph.padding, ph.dilation,
                       groups, ph.config.cchunk, ph.config.span,
                       _nhwc.kernel_mode(ph.config, True), threads)
    view = out[(slice(None),) + tuple(slice(o, o + s * (m - 1) + 1, s) for o, s, m in
                                      zip(ph.offset, stride, ph.size))]
    _layout.copy_pixels(part.reshape(view.shape), view,
                        threads if part.size >= SWAP_THREADS_ELEMENTS else 1)


def configure_weight(geom: V.ConvGeometry, threads: int) -> NhwcWeightConfig:
    itemsize = np.dtype(geom.dtype).itemsize
    vw = _conv_nhwc.vector_width(geom.dtype)
    cg, kg = geom.in_channels // geom.groups, geom.out_channels // geom.groups
    nkv = -(-kg // vw)
    vectors = min(_conv_nhwc.weight_grad_vectors(geom.dtype), nkv)
    outer = geom.groups * -(-nkv // vectors)
    want = WEIGHT_ITEMS_PER_THREAD * threads
    cblock = max(cg, 1)
    if threads > 1 and outer < want:
        blocks = min(-(-want // outer), -(-cg // WEIGHT_CHANNEL_STEP))
        per = -(-cg // max(blocks, 1))
        cblock = max(1, min(-(-per // WEIGHT_CHANNEL_STEP) * WEIGHT_CHANNEL_STEP, cg))
    items = outer * -(-cg // cblock) if cg else outer
    out3 = geom.as3d(geom.out_size, 1)
    rows = geom.batch * out3[0] * out3[1]
    chunks = min(threads, rows) if threads > 1 and items < want else 1
    chunks = max(chunks, 1)
    rows_per_block = max(1, WEIGHT_BLOCK_PIXELS // vectors // max(out3[2], 1))
    part = geom.groups * nkv * vw * cg * math.prod(geom.kernel)
    # Zero padding read from a padded copy of x: every tap of every pixel
    # then takes the kernel's walk without edge tests or per-row divisions.
    # Batch 16, one thread, ms (in place -> copy): 512 -> 512 3x3 on 4x4
    # 30.1 -> 11.1, 256 on 7x7 16.5 -> 7.4, 128 on 14x14 10.6 -> 6.7, 64 on
    # 28x28 7.8 -> 6.2, the 7x7 stride-2 RGB stem at 112x112 8.2 -> 7.1.
    padded = any(geom.pad_before) or any(geom.pad_after)
    copy = (math.prod(geom.padded_input.in_size) * geom.batch * geom.in_channels
            if padded else 0)
    return NhwcWeightConfig(vw, vectors, cblock, padded, chunks, rows_per_block,
                            items * chunks, threads, (chunks * part + copy) * itemsize)


def weight_winograd_shape(geom: V.ConvGeometry) -> bool:
    """A weight gradient Winograd can run: the forward's shape
    (_nhwc.winograd_shape) with the output channels whole vectors too (the
    grad_out transform loads whole vectors)."""
    vw = _conv_nhwc.vector_width(geom.dtype)
    return _nhwc.winograd_shape(geom) and geom.out_channels % vw == 0


def configure_weight_winograd(geom: V.ConvGeometry, threads: int) -> NhwcWeightWinogradConfig:
    m = _nhwc.winograd_tile(geom, _nhwc.WINOGRAD_WEIGHT_SHARED_TILES)
    oh, ow = geom.out_size
    tiles = geom.batch * -(-oh // m) * -(-ow // m)
    positions, K, C = (m + 2) ** 2, geom.out_channels, geom.in_channels
    work = positions * tiles * (K + C) + positions * K * C + 9 * K * C
    return NhwcWeightWinogradConfig(m, tiles, configure_weight(geom, threads), threads,
                                    work * np.dtype(geom.dtype).itemsize)


def weight_grad_winograd(cfg: NhwcWeightWinogradConfig, geom: V.ConvGeometry, grad_out, x):
    """weight_grad on Winograd; the direct kernel's result when a value is
    not finite."""
    dtype, K, C = geom.dtype, geom.out_channels, geom.in_channels
    positions = (cfg.m + 2) ** 2
    u = np.empty(positions * cfg.tiles * K, dtype)
    v = np.empty(positions * cfg.tiles * C, dtype)
    sums = np.empty(positions * K * C, dtype)
    taps = np.empty(9 * K * C, dtype)
    go = V.kernel_array(grad_out, dtype)
    x4 = V.kernel_array(x, dtype)
    go_shape = (geom.batch,) + tuple(geom.out_size) + (K,)
    x_shape = (geom.batch,) + tuple(geom.in_size) + (C,)
    with blas_pinned:   # the driver splits the GEMMs over its threads itself
        ok = _conv_nhwc.winograd_weight_grad(go.reshape(-1), go_shape, x4.reshape(-1), x_shape,
                                             tuple(geom.pad_before), cfg.m, u, v, sums, taps,
                                             cfg.threads)
    if not ok:
        return weight_grad(cfg.direct, geom, grad_out, x)
    grad_w = np.empty((K, C, 3, 3), dtype)
    _layout.swap_axes(taps.reshape(1, 9, K * C), grad_w.reshape(1, K * C, 9),
                      cfg.threads if taps.size >= SWAP_THREADS_ELEMENTS else 1)
    return grad_w


def run_weight_grad(kernel: str, cfg, geom: V.ConvGeometry, grad_out, x):
    """The planned weight-gradient pass ("nhwc_winograd_weight" or
    "nhwc_weight", its config)."""
    if kernel == "nhwc_winograd_weight":
        return weight_grad_winograd(cfg, geom, grad_out, x)
    return weight_grad(cfg, geom, grad_out, x)


def _pad_last(x, geom: V.ConvGeometry):
    """A zero-padded copy (N, D', H', W', C) of channels-last x, the input
    of geom.padded_input; a negative padding after (a transposed
    convolution's output padding) crops rows that no tap reads."""
    x5 = x.reshape((geom.batch,) + geom.as3d(geom.in_size, 1) + (geom.in_channels,))
    size = geom.padded_input.as3d(geom.padded_input.in_size, 1)
    out = np.zeros((geom.batch,) + size + (geom.in_channels,), x.dtype)
    b = geom.as3d(geom.pad_before, 0)
    k = tuple(min(n, p - before) for n, p, before in zip(x5.shape[1:4], size, b))
    out[:, b[0]:b[0] + k[0], b[1]:b[1] + k[1], b[2]:b[2] + k[2]] = x5[:, :k[0], :k[1], :k[2]]
    return out


def weight_grad(cfg: NhwcWeightConfig, geom: V.ConvGeometry, grad_out, x):
    """grad_w (K, C // groups, *kernel) from channels-last grad_out and x."""
    dtype, G, vw = geom.dtype, geom.groups, cfg.vector_width
    cg, kg = geom.in_channels // G, geom.out_channels // G
    nkv, kvol = -(-kg // vw), math.prod(geom.kernel)
    part = G * nkv * vw * cg * kvol
    parts = np.zeros(cfg.chunks * part, dtype)
    go5 = (geom.batch,) + geom.as3d(geom.out_size, 1) + (geom.out_channels,)
    x = V.kernel_array(x, dtype)
    stride, padding, dilation = geom.kernel_args
    if cfg.padded:
        x, padding = _pad_last(x, geom), (0, 0, 0)
        x5 = x.shape
    else:
        x5 = (geom.batch,) + geom.as3d(geom.in_size, 1) + (geom.in_channels,)
    _conv_nhwc.weight_grad(V.kernel_array(grad_out, dtype).reshape(-1), go5, x.reshape(-1), x5,
                           parts, geom.as3d(geom.kernel, 1), stride, padding, dilation, G,
                           cfg.vectors, cfg.cblock, cfg.chunks, cfg.rows_per_block, cfg.threads)
    # the chunks' partial sums added in chunk order (the same bits for a
    # given partition), then each vector's lanes moved to grad_w's rows:
    # [group][vector][c][tap][lane] -> [group][vector][lane][c][tap]
    total = parts[:part]
    for j in range(1, cfg.chunks):
        np.add(total, parts[j * part:(j + 1) * part], out=total)
    sums = total.reshape(G * nkv, cg * kvol, vw)
    grad_w = np.empty((geom.out_channels, cg) + tuple(geom.kernel), dtype)
    if kg % vw == 0:
        _layout.swap_axes(sums, grad_w.reshape(G * nkv, vw, cg * kvol),
                          cfg.threads if sums.size >= SWAP_THREADS_ELEMENTS else 1)
    else:   # drop the lanes past each group's channels
        rows = sums.reshape(G, nkv, cg * kvol, vw).transpose(0, 1, 3, 2)
        grad_w.reshape(G, kg, cg * kvol)[...] = rows.reshape(G, nkv * vw, cg * kvol)[:, :kg]
    return grad_w

