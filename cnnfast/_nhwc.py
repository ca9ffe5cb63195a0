"""The channels-last direct convolution, as one record: its configuration
(computed once by the plan, which decides when it runs: _plan.nhwc_direct_wins;
any kernel size, stride, dilation, groups and zero padding in any form, a
tap outside the input reading zeros), its weight packing and its run.

Kernel: conv_nhwc.h (register tile of output-channel vectors x
output pixels, onnxruntime MLAS's NCHWc tile on NHWC); driver:
_ext/_conv_nhwc.pyx. It reads and writes (N, *spatial, C) arrays directly, so
a channels-last model keeps its activations in that layout from its first
layer to its last with no copies between layers.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _validation as V
from ._ext import _conv_nhwc

# Weights of one output-channel block and one chunk of input channels are
# kept at most this large, so a span's passes over them hit L2 (1 MB per
# core on the project's Zen 4). Chunks sized for L1 instead (24-48 KB) lost
# 5-15% on ResNet-18's 3x3 layers (more partial-sum loads and stores), and
# ordering items to share input spans instead of weight blocks, or capping
# spans to keep the input in L2, changed nothing measurable (one thread).
# The AVX2 kernels' blocks are narrower (16 float32 channels, AVX-512: 64): on AMD
# EPYC (Zen 3, 512 KB L2), one thread, 192 KB -> 768 KB ran 7x7 2048 -> 512
# 1x1 at 30 -> 46 GFLOP/s, 14x14 256 -> 512 3x3/2 30 -> 49, 256 -> 256 3x3
# 39 -> 69; fused ResNet-50 b1 89-91 -> 85-86 ms, ResNet-18 b1 29.5-30 ->
# 28.4-28.7, ResNet-18 b16 training step 626-638 -> 586-609 (two runs each,
# separate processes; 1.5 MB the same as 768 KB).
WEIGHT_CHUNK_BYTES = (192 if _conv_nhwc.vector_width(np.float32) >= 16 else 768) * 1024
# Partial sums a span keeps between chunks of input channels: at most this
# many bytes of output, so they stay in L2 too.
SPAN_BYTES = 128 * 1024
# Padded planes of at most this many output positions, in a folded batch of
# at least a tile's images, run position-major (position_major) and skip
# the taps in the padding. 3x3 stride 1, direct kernel, row-major ->
# position-major, one / two threads, forward and input gradient: batch 16
# 512x4x4 1.23-1.28x / 1.22-1.24x, 256x7x7 1.10-1.12x / 1.06-1.13x; batch 8
# 256x4x4 1.17x, 512x2x2 1.15x, 128x8x8 1.06x, 256x14x14 1.04-1.06x /
# 1.06-1.08x; 28x28 and 56x56 1.00-1.03x on one thread.
PADDED_PLANE = 14 * 14
# Work items per thread: `guided` hands them out, so a thread slowed by
# another process takes fewer (issue 23: two threads under load must not be
# slower than one).
ITEMS_PER_THREAD = 8


class NhwcConfig(NamedTuple):
    block: int          # output channels per packed weight block
    tile: int           # output pixels per full register tile
    cchunk: int         # input channels per pass over a span
    span: int           # output pixels per work item
    items: int          # work items
    threads: int
    group_stride: int   # elements of packed weights per group
    workspace_bytes: int
    position_major: bool = False   # tiles of one position across images (PADDED_PLANE)


def full_window(geom: V.ConvGeometry) -> bool:
    """A window that covers the whole unpadded input (LeNet's conv3, a
    classifier written as a conv): one output per image."""
    return (geom.groups == 1 and tuple(geom.kernel) == tuple(geom.in_size)
            and not any(geom.pad_before) and not any(geom.pad_after)
            and all(d == 1 for d in geom.dilation))


def kernel_view(geom: V.ConvGeometry) -> V.ConvGeometry:
    """The convolution the kernel runs for geom. A full window is a product
    of the images, each one row (H*W*C) in NHWC order, with the weights in
    the same [tap][channel] order the packing uses: a 1x1 convolution over
    one row of N pixels, so tiles span images instead of holding one pixel."""
    if not full_window(geom):
        return geom
    one = (1,)
    return geom._replace(nd=1, batch=1, in_channels=geom.in_channels * math.prod(geom.kernel),
                         in_size=(geom.batch,), kernel=one, stride=one, dilation=one,
                         pad_before=(0,), pad_after=(0,), out_size=(geom.batch,))


def batch_folded(geom: V.ConvGeometry) -> V.ConvGeometry:
    """A 1-D or 2-D convolution (or 3-D with unit depth) over N images as a
    3-D one over one volume of depth N with a kernel depth of 1: the same
    outputs, and the kernel's spans of output pixels then run across images.
    With one span per small image (4x4 or 7x7), every work item streamed its
    block's weights (up to 1.2 MB) for 16-49 pixels: ResNet-18's 512 -> 512
    3x3 layer at batch 16 on 4x4 planes read 151 MB of weights per call.
    One thread, packed weights: that layer 10.6 -> 6.6 ms (113 -> 183
    GFLOP/s), 256 -> 256 on 7x7 6.5 -> 5.0 ms."""
    kd, (d, od) = geom.as3d(geom.kernel, 1)[0], (geom.as3d(geom.in_size, 1)[0],
                                                 geom.as3d(geom.out_size, 1)[0])
    if (geom.batch <= 1 or kd != 1 or d != 1 or od != 1
            or geom.as3d(geom.pad_before, 0)[0] or geom.as3d(geom.pad_after, 0)[0]):
        return geom
    n = geom.batch
    return geom._replace(nd=3, batch=1, in_size=(n,) + geom.as3d(geom.in_size, 1)[1:],
                         out_size=(n,) + geom.as3d(geom.out_size, 1)[1:],
                         kernel=geom.as3d(geom.kernel, 1),
                         stride=(1,) + geom.as3d(geom.stride, 1)[1:],
                         dilation=(1,) + geom.as3d(geom.dilation, 1)[1:],
                         pad_before=geom.as3d(geom.pad_before, 0),
                         pad_after=geom.as3d(geom.pad_after, 0))


def configure(geom: V.ConvGeometry, threads: int) -> NhwcConfig:
    """The kernel's configuration for geom (the call's kernel_view), its
    images folded into one volume (batch_folded)."""
    geom = batch_folded(geom)
    block, tile = _conv_nhwc.tiles(geom.dtype)
    itemsize = np.dtype(geom.dtype).itemsize
    cg, kg = geom.in_channels // geom.groups, geom.out_channels // geom.groups
    kvol = math.prod(geom.kernel)
    cchunk = max(1, WEIGHT_CHUNK_BYTES // (kvol * block * itemsize))
    cchunk = cg if cchunk >= cg else max(8, cchunk // 8 * 8)
    positions = math.prod(geom.out_size)
    blocks = -(-kg // block)
    outer = max(1, geom.batch * geom.groups * blocks)
    spans = max(1, -(-ITEMS_PER_THREAD * threads // outer)) if threads > 1 else 1
    span = -(-positions // spans)
    if cchunk < cg:
        span = min(span, max(tile, SPAN_BYTES // (block * itemsize)))
    span = max(tile, -(-span // tile) * tile)
    items = outer * -(-positions // span)
    group_stride = blocks * block * cg * kvol
    workspace = (geom.groups * group_stride + geom.groups * blocks * block + cg) * itemsize
    return NhwcConfig(block, tile, cchunk, span, items, threads, group_stride, workspace,
                      position_major(geom, tile))


def position_major(folded: V.ConvGeometry, tile: int) -> bool:
    """Tiles of one output position across consecutive images (the kernel's
    position-major order) for a folded batch (batch_folded) of small padded
    planes: a tile's pixels then read the padding at the same taps, which
    the kernel skips (with finite weights)."""
    depth, k, s = (folded.as3d(folded.in_size, 1)[0], folded.as3d(folded.kernel, 1)[0],
                   folded.as3d(folded.stride, 1)[0])
    before, after = folded.as3d(folded.pad_before, 0), folded.as3d(folded.pad_after, 0)
    _, oh, ow = folded.as3d(folded.out_size, 1)
    return (folded.batch == 1 and k == 1 and s == 1 and before[0] == 0 and depth >= tile
            and oh * ow <= PADDED_PLANE and (any(before[1:]) or any(after[1:])))


def pack_weights(weight, geom: V.ConvGeometry, cfg: NhwcConfig):
    """(packed weights, finite): weight (K, C // groups, *kernel) in blocks
    of cfg.block output channels, each in chunks of cfg.cchunk input
    channels, [tap][channel][block lanes] per chunk.
    geom is the call's geometry (not its kernel_view)."""
    w = V.kernel_array(weight, geom.dtype)
    if full_window(geom):   # (K, C, *kernel) -> (K, *kernel, C): NHWC row order
        w = np.ascontiguousarray(np.moveaxis(w, 1, -1))
        geom = kernel_view(geom)
    w = w.reshape(-1)
    packed = np.empty(geom.groups * cfg.group_stride, dtype=geom.dtype)
    finite = _conv_nhwc.pack(w, packed, geom.out_channels, geom.in_channels,
                             math.prod(geom.kernel), geom.groups, cfg.group_stride, cfg.cchunk,
                             pack_threads(packed.size, cfg.threads))
    return packed, finite


# Packed weights from which the packing takes the layer's threads (one item
# per block of output channels): ResNet-18's weights are packed twice per
# training step (the forward's, the input gradient's), 8% of a two-thread
# step on one thread.
PACK_THREADS_ELEMENTS = 1 << 16


def pack_threads(elements: int, threads: int) -> int:
    return threads if elements >= PACK_THREADS_ELEMENTS else 1


def pack_bias(bias, geom: V.ConvGeometry, cfg: NhwcConfig):
    """bias (K,) as (groups, blocks * block) with zeros past each group's
    channels (the kernel reads whole vectors); empty for no bias."""
    return _bias_blocks(bias, geom, cfg.block)


def winograd_bias(bias, geom: V.ConvGeometry):
    """bias as the Winograd output transform reads it: pack_bias's layout,
    in the running kernels' blocks (no direct configuration needed)."""
    return _bias_blocks(bias, geom, _conv_nhwc.tiles(geom.dtype)[0])


def _bias_blocks(bias, geom: V.ConvGeometry, block: int):
    if bias is None or len(bias) == 0:
        return np.empty(0, geom.dtype)
    kg = geom.out_channels // geom.groups
    width = -(-kg // block) * block
    out = np.zeros((geom.groups, width), geom.dtype)
    out[:, :kg] = V.kernel_array(bias, geom.dtype).reshape(geom.groups, kg)
    return out.reshape(-1)


def writes_into_residual(cfg: NhwcConfig, geom: V.ConvGeometry, x, residual) -> bool:
    """Whether run(x, ..., into_residual=True) may store the output over
    residual: one pass over the input channels (a later chunk would read
    back a partial sum where the residual was), residual an array of the
    output's shape, dtype and layout that the kernel can write, apart from x."""
    view = kernel_view(geom)
    shape = (geom.batch,) + tuple(geom.out_size) + (geom.out_channels,)
    return (cfg.cchunk >= view.in_channels // view.groups and type(residual) is np.ndarray
            and residual.shape == shape and residual.dtype == geom.dtype
            and residual.flags.c_contiguous and residual.flags.writeable
            and not np.may_share_memory(residual, x))


def run(cfg: NhwcConfig, geom: V.ConvGeometry, x, packed, bias_packed, residual=None,
        clamp=None, into_residual=False, finite=False):
    """conv(x) + bias on channels-last x (N, *in, C): a new (N, *out, K)
    array. residual (out's shape) is added and the result clamped to
    clamp = (lo, hi) in each tile's store (a fused layer's epilogue).
    into_residual: the output is stored over residual (the caller's scratch,
    checked by writes_into_residual) and residual returned. Each tile reads
    its pixels' residual before it stores them, and no other tile reads
    those: 1x1 64 -> 256 at 56x56 with the residual, one thread, 1.07 ->
    0.79 ms (no new output to fetch into the cache before it is written;
    128 -> 512 at 28x28 0.90 -> 0.75).
    finite: no packed weight is NaN or infinite (pack_weights said so): taps
    reading only padding may then be skipped (0 * w = 0).
    geom is the call's geometry; packed and cfg are for its kernel_view."""
    x3 = V.kernel_array(x, geom.dtype)
    out = (residual if into_residual else
           np.empty((geom.batch,) + tuple(geom.out_size) + (geom.out_channels,), geom.dtype))
    geom = batch_folded(kernel_view(geom))
    in5 = (geom.batch,) + geom.as3d(geom.in_size, 1) + (geom.in_channels,)
    out5 = (geom.batch,) + geom.as3d(geom.out_size, 1) + (geom.out_channels,)
    res = None if residual is None else V.kernel_array(residual, geom.dtype).reshape(-1)
    lo, hi = clamp if clamp is not None else (0.0, 0.0)
    stride, pad, dilation = geom.kernel_args
    _conv_nhwc.forward(x3.reshape(-1), in5, packed, cfg.group_stride, bias_packed,
                       out.reshape(-1), out5, geom.as3d(geom.kernel, 1), stride, pad,
                       dilation, geom.groups, cfg.cchunk, cfg.span, kernel_mode(cfg, finite),
                       cfg.threads, res, clamp is not None, lo, hi)
    return out


def kernel_mode(cfg: NhwcConfig, finite: bool) -> int:
    """The kernel's `mode` for a run of cfg (on its folded geometry):
    position-major tiles as configured; padding taps skipped when the packed
    weights are all finite."""
    return ((_conv_nhwc.POSITION_MAJOR if cfg.position_major else 0)
            | (_conv_nhwc.SKIP if finite else 0))


def forward_pass(kernel: str, cfg, geom: V.ConvGeometry, x, weight, bias, residual=None,
                 clamp=None):
    """The planned channels-last forward of a call whose layer does not keep
    its weights: "nhwc_winograd" (cfg a WinogradConfig; the weights
    transformed for this call, the direct kernel's result when a value is
    not finite) or "nhwc_direct" (cfg an NhwcConfig); residual and clamp as
    run()'s epilogue."""
    if kernel == "nhwc_winograd":
        u, finite = winograd_pack(weight, geom, cfg)
        if finite:
            out = winograd_run(cfg, geom, x, u, winograd_bias(bias, geom), residual, clamp)
            if out is not None:
                return out
        cfg = configure(kernel_view(geom), cfg.threads)
    return forward(cfg, geom, x, weight, bias, residual, clamp)


def forward(cfg: NhwcConfig, geom: V.ConvGeometry, x, weight, bias, residual=None,
            clamp=None):
    """run() with the weights and bias packed for this call (a layer that
    keeps its packed weights calls run() itself)."""
    packed, finite = pack_weights(weight, geom, cfg)
    return run(cfg, geom, x, packed, pack_bias(bias, geom, cfg), residual, clamp,
               finite=finite)


# ------------------------------------------------------------------ Winograd
# F(4x4, 3x3) on the same layout (csrc/nhwc/conv_nhwc_winograd.h): for layers
# whose weights are transformed once and kept (a fused layer), since the
# transformed weights are 4x the layer's (36 / 9 positions).

# Tiles per block: the 36 products of one block and output-channel block
# (M: 36 x TILES x 64 floats, 221 KB) stay in L2 with their inputs.
WINOGRAD_TILES = 24
# Transformed inputs of a round of images at most this large (the rest wait
# for the next round): ResNet-18's 56x56 layer at batch 8 needs 14 MB.
WINOGRAD_ROUND_BYTES = 64 << 20
WINOGRAD_ITEMS_PER_THREAD = 2
# F(2x2, 3x3) instead of F(4x4, 3x3) on planes of at most this many outputs
# whose F(4,3) weights exceed WINOGRAD_STREAMED_BYTES (they come from memory
# at every call): see winograd_tile.
WINOGRAD_SMALL_PLANE = 8 * 8
WINOGRAD_STREAMED_BYTES = 8 << 20
WINOGRAD_SHARED_TILES = 16
# The weight gradient's: each position's K x C sums are written and turned
# back into taps, 36 positions against 16. One thread, F(2,3) -> F(4,3) ms:
# 64 tiles: batch 16 256x7x7 4.79 -> 3.49, 512x7x7 16.1 -> 13.9; 32 tiles:
# batch 8 256x7x7 2.73 -> 2.31; 16 tiles: batch 16 512x4x4 5.83 -> 7.97,
# batch 4 512x7x7 6.15 -> 7.87; 8 tiles: batch 2 256x8x8 1.26 -> 1.50.
WINOGRAD_WEIGHT_SHARED_TILES = 32


class WinogradConfig(NamedTuple):
    m: int                  # output tile: 4 (F(4x4, 3x3), 36 positions) or 2 (F(2x2, 3x3), 16)
    tiles: int              # tiles per block (T)
    images_per_round: int
    threads: int
    pos_stride: int         # elements of transformed weights per position
    v_elements: int         # transformed inputs of a round
    m_elements: int         # the threads' products
    workspace_bytes: int


def winograd_shape(geom: V.ConvGeometry) -> bool:
    """3x3, stride 1, dilation 1, zero padding, one group, 2-D, channels a
    multiple of the vector (the transforms load whole vectors)."""
    vw = _conv_nhwc.vector_width(geom.dtype)
    return (geom.nd == 2 and tuple(geom.kernel) == (3, 3) and geom.groups == 1
            and all(s == 1 for s in geom.stride) and all(d == 1 for d in geom.dilation)
            and geom.pad_mode == "zeros" and geom.in_channels % vw == 0)


def winograd_tile(geom: V.ConvGeometry, shared: int | None = None) -> int:
    """F(4x4, 3x3), or F(2x2, 3x3) for planes of at most WINOGRAD_SMALL_PLANE
    outputs with large weights and fewer than `shared` F(4,3) tiles in the
    batch (default WINOGRAD_SHARED_TILES): their F(4,3) transforms (36
    positions) come from memory at every call inside a model, for few tiles,
    and bind the layer to the memory's speed. ResNet-18's 7x7x512 layer at batch 1, weights evicted before each
    call (as inside the model; next weights prefetched), one thread: F(2,3)
    1.46 ms, F(4,3) 2.45, direct 1.54 (in cache: 1.07, 1.37, 1.36). A
    batch's tiles share the weights (blocks span images): fused ResNet-18 at
    batch 8, its 7x7x512 layers on F(4,3), 108.5 against 110.2 ms; at batch
    1 F(4,3) 22.2 against 18.2. The weight gradient passes
    WINOGRAD_WEIGHT_SHARED_TILES (its transformed sums are the output)."""
    shared = WINOGRAD_SHARED_TILES if shared is None else shared
    big = 36 * geom.in_channels * geom.out_channels * np.dtype(geom.dtype).itemsize
    oh, ow = geom.out_size
    small = oh * ow <= WINOGRAD_SMALL_PLANE
    few = geom.batch * -(-oh // 4) * -(-ow // 4) < shared
    return 2 if small and few and big > WINOGRAD_STREAMED_BYTES else 4


def winograd_configure(geom: V.ConvGeometry, threads: int) -> WinogradConfig:
    block, _ = _conv_nhwc.tiles(geom.dtype)
    itemsize = np.dtype(geom.dtype).itemsize
    m = winograd_tile(geom)
    positions = (m + 2) ** 2
    oh, ow = geom.out_size
    per_image = -(-oh // m) * -(-ow // m)
    images = max(1, min(geom.batch,
                        WINOGRAD_ROUND_BYTES // (per_image * positions * geom.in_channels
                                                 * itemsize)))
    # A round's tiles are numbered image after image and cut into blocks of
    # at most WINOGRAD_TILES, which may span images: a block's products read
    # each output-channel block's transformed weights once, so small planes
    # in a batch share them (batch 16 256x7x7, one thread: 5.65 ms with
    # blocks of one image's 4 tiles, 2.6 with blocks of 24). Enough (block,
    # output-channel block) items for WINOGRAD_ITEMS_PER_THREAD per thread,
    # of equal size (ResNet-18's 28x28 layer at batch 1: 3 blocks of 17, 17
    # and 15 instead of 24, 24 and 1).
    round_tiles = images * per_image
    out_blocks = -(-geom.out_channels // block)
    blocks = min(round_tiles, max(-(-round_tiles // WINOGRAD_TILES),
                                  -(-WINOGRAD_ITEMS_PER_THREAD * threads // out_blocks)))
    if blocks * out_blocks < 8 * threads:
        # few items: a multiple of the threads, so none waits for the last one
        # (56x56 at batch 1 on 2 threads: 10 blocks of 20 tiles, not 9 of 22)
        while (blocks * out_blocks) % threads and blocks < round_tiles:
            blocks += 1
    tiles = -(-round_tiles // blocks)
    blocks = -(-round_tiles // tiles)
    v_elements = blocks * positions * tiles * geom.in_channels
    pos_stride = out_blocks * block * geom.in_channels
    products = threads * positions * tiles * block
    workspace = (positions * pos_stride + v_elements + products) * itemsize
    return WinogradConfig(m, tiles, images, threads, pos_stride, v_elements, products,
                          workspace)


def winograd_pack(weight, geom: V.ConvGeometry, cfg: WinogradConfig, flipped=False):
    """(transformed weights, finite); flipped: weight is (C, K, 3, 3) of the
    convolution whose input gradient geom is (_nhwc_backward), transformed
    as that gradient's flipped, transposed kernels."""
    u = np.empty((cfg.m + 2) ** 2 * cfg.pos_stride, geom.dtype)
    finite = _conv_nhwc.winograd_pack(V.kernel_array(weight, geom.dtype).reshape(-1), u,
                                      geom.out_channels, geom.in_channels, cfg.pos_stride,
                                      cfg.m, pack_threads(u.size, cfg.threads), flipped)
    return u, finite


def winograd_run(cfg: WinogradConfig, geom: V.ConvGeometry, x, u, bias_packed,
                 residual=None, clamp=None):
    """The Winograd forward of channels-last x: a new (N, OH, OW, K) array,
    or None when a value was not finite (the caller runs the direct kernel)."""
    x3 = V.kernel_array(x, geom.dtype)
    out = np.empty((geom.batch,) + tuple(geom.out_size) + (geom.out_channels,), geom.dtype)
    v = np.empty(cfg.v_elements, geom.dtype)
    m = np.empty(cfg.m_elements, geom.dtype)
    res = None if residual is None else V.kernel_array(residual, geom.dtype).reshape(-1)
    lo, hi = clamp if clamp is not None else (0.0, 0.0)
    ok = _conv_nhwc.winograd_forward(
        x3.reshape(-1), x3.shape, u, cfg.pos_stride, bias_packed, out.reshape(-1), out.shape,
        tuple(geom.pad_before), cfg.tiles, cfg.images_per_round, cfg.threads, v, m, res,
        clamp is not None, lo, hi, cfg.m)
    return out if ok else None
