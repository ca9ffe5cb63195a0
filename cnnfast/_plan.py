"""How a convolution runs: the whole `algorithm="auto"` rule and every
threshold behind it, in one place.

`plan_conv(geom, algorithm, passes)` turns a validated geometry into a
`ConvPlan`: per pass (forward, input gradient, weight gradient, bias
gradient) the algorithm, the driver kernel, the data layout (per image,
depth-stacked batch, batch as pixels), the thread count, the GEMM tiling and
whether the GEMM reads the weights in place, the work-array bytes and the
FLOPs. cnnfast.functional executes a plan; the drivers in cnnfast._ext only
carry it out and choose nothing. `cnnfast.explain_conv` returns the plan of a
call without running it.

Every threshold was fitted to single-thread measurements on the project's
2-core AMD EPYC Zen 4 machine (AVX-512), float32, with `python -m
cnnfast.bench`; the figures quoted beside them are from those runs.

The one choice left to a driver is data-dependent: the direct input gradient
falls back on the GEMM when a weight is NaN or infinite (its zero-padded
grad_out would turn such a weight into NaN where the reference is finite).
"""
from __future__ import annotations

import math
import sys
import types
from itertools import product as _product
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from . import _nhwc
from . import _nhwc_backward
from . import _validation as V
from ._policy import winograd_allowed
from ._cache import memoized
from ._ext import _conv, _depthwise, _runtime
from ._threads import kernel_threads

# --------------------------------------------------------------- threads

# Below these amounts of work a call runs on one thread: waking a second
# OpenMP thread costs more than it saves (like torch's grain size).
CONV_GRAIN = 1 << 21     # multiply-adds
POOL_GRAIN = 1 << 17     # input elements read (or written, for backward)
ELEMENTWISE_GRAIN = 1 << 17   # elements of batch norm / ReLU (memory-bound, as pooling)


def conv_threads(macs: int) -> int:
    return 1 if macs < CONV_GRAIN else kernel_threads()


# Weights (op(b)'s elements) from which a dense product with few rows, bound
# by streaming its weights rather than by its multiply-adds, takes the
# threads: MobileNetV2's classifier at batch 1 (1280 x 1000, 1.3 M
# multiply-adds, under CONV_GRAIN) ran 0.146 -> 0.080 ms on two threads with
# its weights in cache, 0.339 -> 0.266 from memory.
DENSE_STREAM_GRAIN = 1 << 17


def dense_threads(macs: int, weight_elements: int = 0) -> int:
    """Threads of a dense layer's product: GEMM-bound like a convolution's
    (the same grain), or bound by reading its weights (a batch of one)."""
    if weight_elements >= DENSE_STREAM_GRAIN:
        return kernel_threads()
    return conv_threads(macs)


def pool_threads(elements: int) -> int:
    return 1 if elements < POOL_GRAIN else kernel_threads()


def depthwise_threads(geom: V.ConvGeometry, macs: int) -> int:
    """A depthwise pass is bound by its traffic (a multiply-add per tap and
    output element), so it takes the threads from pooling's grain of
    elements read and written too, not only from CONV_GRAIN multiply-adds."""
    return max(conv_threads(macs),
               pool_threads(math.prod(geom.x5_shape) + math.prod(geom.out5_shape)))


def elementwise_threads(elements: int) -> int:
    return 1 if elements < ELEMENTWISE_GRAIN else kernel_threads()


def copy_threads(elements: int) -> int:
    """Threads of a layout copy (channels-first <-> channels-last): memory-bound
    like pooling, so pooling's grain."""
    return pool_threads(elements)


# --------------------------------------------------------- channels-last

def conv_channels_last_native(geom: V.ConvGeometry, algorithm: str,
                              transposed: bool = False) -> bool:
    """Does a channels-last convolution of geom run on its own NHWC path
    instead of the channels-first plan between two layout copies?

    Natively: a 1x1 kernel without padding and with one group (auto or
    "1x1"), at any stride for a convolution (the strided pixels are a slice
    of x), at stride 1 for a transposed one (transposed: geom is the conv
    whose input gradient it is). An NHWC array already is the (pixels x
    channels) matrix, so forward, input gradient and weight gradient are each
    one GEMM over pixel rows (_conv.pointwise_rows): 1x1 (8, 256, 28, 28) ->
    64, forward 5.9 -> 2.3 ms against channels-first.
    The other native channels-last paths are the NHWC direct kernel
    (nhwc_direct_wins), its Winograd (nhwc_winograd_wins) and the depthwise
    kernel (depthwise_native_last); every other convolution copies its arrays
    to channels-first (the blocked copies of _ext/_layout.pyx: 2-25% of a 3x3
    conv) and runs the channels-first plan.
    """
    return (algorithm in ("auto", "1x1") and geom.is_pointwise and geom.groups == 1
            and not any(geom.pad_before) and not any(geom.pad_after)
            and (not transposed or (all(s == 1 for s in geom.stride)
                                    and tuple(geom.in_size) == tuple(geom.out_size)))
            and max(geom.batch * math.prod(geom.in_size), geom.in_channels,
                    geom.out_channels) <= V.BLAS_INT_MAX)


# Output channels per group from which a channels-last forward runs on the
# NHWC direct kernel (float32; half for float64): one whole vector of
# output channels. With fewer most lanes idle: LeNet's c1 (1 -> 6 channels,
# 5x5, batch 256) ran 7.6 ms against 1.5 ms for the channels-first kernels
# between layout copies; with 16 (LeNet's c2) it is 0.92x onnxruntime.
NHWC_MIN_CHANNELS = 16


def nhwc_direct_wins(geom: V.ConvGeometry, algorithm: str) -> bool:
    """Does a channels-last forward run on the NHWC direct kernel (_nhwc)?
    With `auto` or "direct", zero padding and a vector of output channels
    per group; on ResNet-18's layers at batch 1 it runs at the FMA ceiling
    (0.9-1.1x onnxruntime's NCHWc kernel, one thread) with no layout copy."""
    return (algorithm in ("auto", "direct")
            and nhwc_layer_ok(geom.out_channels // geom.groups, geom.pad_mode, geom.dtype))


# A channels-first forward under `auto` runs on the NHWC direct kernel (or
# its Winograd, where a channels-last call would: nhwc_winograd_fresh_wins)
# between two layout copies (weights packed per call) when that measured
# faster than the channels-first kernels (one thread, float32, ms):
# (8,16,32,32)->32 3x3 1.48 -> 1.15, (8,32,16,32)->32 3x3 (Winograd) 0.85
# -> 0.51, (32,64,8,64)->64 3x3 (Winograd) 3.47 -> 1.47; it lost where the
# per-call packing of large weights is not amortised over the positions
# ((8,512,7,512) 0.91x, (1,512,7,512) 0.46x), to the 1x1 GEMMs (0.63-0.81x)
# and with fewer than 16 input channels (LeNet c2 0.85x, the RGB stem 0.88x).
# Against the channels-first Winograd, the NHWC direct kernel lost on planes
# from 28x28 (0.60-0.76x); the NHWC Winograd between the copies wins up to
# 56x56 (Xeon with AVX-512 + AMX, one / two threads: (8,256,14,14) -> 256
# 10.9 (direct between copies) -> 6.4 ms; channels-first Winograd -> copies:
# (8,128,28,28) 8.1 -> 6.1 / 4.4 -> 3.1, (16,64,28,28) 5.2 -> 3.4 / 3.0 ->
# 2.0, (8,64,56,56) 9.1 -> 7.4 / 4.6 -> 3.7, (1,64,56,56) 1.05 -> 0.90 / 0.65
# -> 0.73) and loses at 112x112 ((4,64,112,112) 18.4 -> 22.8, copies of 13 MB).
NHWC_COPIES_MIN_POSITIONS = 1024        # batch x output positions
NHWC_COPIES_WINOGRAD_PLANE = 112 * 112  # channels-first Winograd wins from here
NHWC_COPIES_MIN_CHANNELS = 16         # input channels per group


def nhwc_copies_win(geom: V.ConvGeometry, algorithm: str, chosen: str) -> bool:
    """Does a channels-first forward run as layout copies around the NHWC
    direct kernel (see the measurements above)? chosen: auto's algorithm."""
    positions = math.prod(geom.out_size)
    return (algorithm == "auto" and nhwc_direct_wins(geom, "auto") and not geom.is_pointwise
            and geom.in_channels // geom.groups >= NHWC_COPIES_MIN_CHANNELS
            and geom.batch * positions >= NHWC_COPIES_MIN_POSITIONS
            and (chosen != "winograd" or positions < NHWC_COPIES_WINOGRAD_PLANE))


# A channels-first weight gradient under `auto` runs on the NHWC kernels
# (direct or Winograd, as a channels-last call would) between layout copies of
# x and grad_out for stride-1 convolutions with a window and 6+ input
# channels: im2col + BLAS lost to them everywhere there. One / two threads,
# float32, ms: LeNet's c2 (64,6,14,14)->16 5x5 1.05 -> 0.39 / 0.90 -> 0.41,
# (8,32,16,16)->32 3x3 1.05 -> 0.46 / 0.61 -> 0.34, (8,128,28,28)->128
# 13.2 -> 5.5 / 12.3 -> 5.6, (8,512,7,7)->512 12.0 -> 9.4 / 8.7 -> 5.6,
# (1,64,56,56)->64 2.1 -> 0.85, (1,256,14,14)->256 1.54 -> 1.77 (lost) /
# 1.64 -> 1.27. It lost with 1-3 input channels (LeNet's c1 0.45-0.52x,
# 3 -> 64 3x3 0.39-0.52x), at stride 2 (0.56-0.99x) and on 1x1 (0.24-0.57x);
# a full window (a GEMM over images) keeps its own route.
NHWC_WEIGHT_COPIES_MIN_CHANNELS = 6   # input channels per group


def nhwc_weight_copies_win(geom: V.ConvGeometry, algorithm: str) -> bool:
    """Does a channels-first weight gradient run on the NHWC kernels between
    layout copies (see the measurements above)?"""
    # nhwc_backward_wins: zero padding, a vector of output channels, not depthwise
    return (algorithm == "auto" and not geom.is_pointwise and all(s == 1 for s in geom.stride)
            and not is_full_window(geom, algorithm)
            and geom.in_channels // geom.groups >= NHWC_WEIGHT_COPIES_MIN_CHANNELS
            and nhwc_backward_wins(geom, algorithm, "weight"))


# NHWC Winograd needs enough outputs to amortise streaming its transformed
# weights (ResNet-18 at 64x64, batch 1: its 2x2 and 4x4 layers on Winograd
# made the fused model 7.8 ms against onnxruntime's 4.3: one tile per image
# computing 16 outputs for 4, and 37.8 MB of weights read for 0.02 GFLOP),
# and tiles mostly inside the plane (5x5: 25 of 64 outputs used).
NHWC_WINOGRAD_MIN_POSITIONS = 49   # batch x output positions: 7x7 at batch 1 wins 2x
NHWC_WINOGRAD_MIN_USED = 0.5       # outputs used of the 4x4 tiles' outputs


def nhwc_winograd_wins(geom: V.ConvGeometry, algorithm: str) -> bool:
    """Does a channels-last forward whose weights are kept (a fused layer) run
    on the NHWC Winograd kernel? Where it applies (nhwc_winograd_applies),
    and under `auto` not where its tile would be F(2x2, 3x3) for weights that
    come from memory at every call (_nhwc.winograd_tile: small planes, few
    tiles, large weights): those transformed weights are 16/9 of the direct
    kernel's bytes, and the layer is bound by reading them. ResNet-18's
    7x7x512 layers at batch 1 inside the fused model, direct against F(2,3),
    a Xeon with AMX (2 MB L2): one thread 1.97-2.01 against 2.29-2.42 ms, two threads
    1.01-1.02 against 1.25-1.30 (the model 22.7 -> 20.9-21.6 ms and 12.8 ->
    12.4-12.9); on Zen 4 F(2,3) had won by 5% (1.46 against 1.54 ms)."""
    return (nhwc_winograd_applies(geom, algorithm)
            and (algorithm == "winograd" or _nhwc.winograd_tile(geom) != 2))


def nhwc_winograd_applies(geom: V.ConvGeometry, algorithm: str) -> bool:
    """The NHWC Winograd kernel's shapes (_nhwc.winograd_shape) with at
    least WINOGRAD_MIN_CHANNELS in and out, under `auto` when the policy
    allows Winograd, or when asked for. One thread, float32, ResNet-18's
    layers at batch 1 against the NHWC direct kernel: 56x56x64 0.89 vs
    2.07 ms, 28x28x128 0.75 vs 2.11, 14x14x256 0.83 vs 2.12, 7x7x512 1.21
    vs 2.40 (weights in cache); at batch 8 1.8-2.0x; 32 -> 48 channels at
    9x9 1.2x, 16 -> 20 at 5x5 1.0x."""
    if algorithm not in ("auto", "winograd") or not _nhwc.winograd_shape(geom):
        return False
    if algorithm == "auto" and not winograd_allowed():
        return False
    oh, ow = geom.out_size
    tiles = -(-oh // 4) * -(-ow // 4)
    return (min(geom.in_channels, geom.out_channels) >= WINOGRAD_MIN_CHANNELS
            and geom.batch * oh * ow >= NHWC_WINOGRAD_MIN_POSITIONS
            and oh * ow >= NHWC_WINOGRAD_MIN_USED * 16 * tiles)


# Winograd with its weights transformed at every call (a layer training:
# the weights change each step) needs this many tiles per call to pay for
# the transform (36 or 16 positions x K x C). One thread, float32, NHWC
# direct -> Winograd forward, the transform included, blocks of tiles
# spanning images: batch 16 64x28x28 4.84 -> 2.38 ms (784 tiles),
# 128x14x14 4.97 -> 3.12 (256); 64 tiles: batch 16 256x7x7 4.22 -> 3.56
# (input gradient 4.16 -> 3.91), 512x7x7 18.3 -> 15.9, 64x8x8 0.38 ->
# 0.26; 32 tiles mixed: batch 8 128x8x8 0.75 -> 0.69, 256x7x7 2.56 ->
# 2.71; 16 tiles: batch 16 512x4x4 6.45 -> 9.13 (37.7 MB of transformed
# weights written per call).
WINOGRAD_FRESH_MIN_TILES = 64


# The weight gradient on Winograd (_nhwc_backward "nhwc_winograd_weight"):
# one GEMM per position, (K x tiles) x (tiles x C), with every tile's
# transforms written and read once. One thread, float32, direct -> Winograd:
# batch 16 64x28x28 6.98 -> 3.77 ms, 128x14x14 7.38 -> 3.59, 256x7x7 9.00
# -> 5.05, 64x56x56 33.8 -> 24.0; batch 8 64x16x16 1.40 -> 0.75. With 32
# channels the GEMMs are too thin for the transforms' traffic: batch 64
# 32x28x28 8.05 -> 10.4.
WINOGRAD_WEIGHT_MIN_CHANNELS = 64
# The weight gradient's transforms are of the call's activations only (the
# weights are its output), so it wins from fewer tiles than the forward:
# from this many output pixels (batch x positions). One / two threads,
# direct -> Winograd, 3x3 stride 1: batch 16 512x4x4 11.9 -> 8.1 / 1.46x
# and 2.23x (64 pixels x 16 images), batch 8 128x8x8 1.10 -> 0.54 ms, 1.97x
# on two, batch 2 256x8x8 1.30x / 1.34x; every shape from 128 pixels up
# (C 64-512, planes 4-14, batch 1-16) 1.11-2.5x except 512x14x14 batch 1
# (0.96-0.99x). Below 128 pixels mixed: batch 1 128x7x7 0.59x / 0.83x.
WINOGRAD_WEIGHT_MIN_PIXELS = 128


def nhwc_winograd_weight_wins(geom: V.ConvGeometry, algorithm: str) -> bool:
    """Does a channels-last weight gradient run on Winograd
    (_nhwc_backward "nhwc_winograd_weight")? The forward's shapes
    (nhwc_winograd_applies), whole vectors of output channels, at least
    WINOGRAD_WEIGHT_MIN_CHANNELS in and out and WINOGRAD_WEIGHT_MIN_PIXELS
    output pixels."""
    return (_nhwc_backward.weight_winograd_shape(geom)
            and min(geom.in_channels, geom.out_channels) >= WINOGRAD_WEIGHT_MIN_CHANNELS
            and geom.batch * math.prod(geom.out_size) >= WINOGRAD_WEIGHT_MIN_PIXELS
            and nhwc_winograd_applies(geom, algorithm))


def nhwc_winograd_fresh_wins(geom: V.ConvGeometry, algorithm: str) -> bool:
    """nhwc_winograd_wins for a layer whose weights are transformed at every
    call (not kept): with at least WINOGRAD_FRESH_MIN_TILES output tiles."""
    if not nhwc_winograd_wins(geom, algorithm):
        return False
    m = _nhwc.winograd_tile(geom)
    oh, ow = geom.out_size
    return geom.batch * -(-oh // m) * -(-ow // m) >= WINOGRAD_FRESH_MIN_TILES


def nhwc_layer_ok(out_per_group: int, pad_mode: str, dtype) -> bool:
    """nhwc_direct_wins for a layer, before any input shape is known."""
    lanes = NHWC_MIN_CHANNELS * 4 // np.dtype(dtype).itemsize
    return pad_mode == "zeros" and out_per_group >= lanes


# Channels from which channels-last pooling runs natively: one full vector
# of float32 lanes (AVX-512). Fewer leave the lanes part-empty and the plane
# kernels copy each image into a padded buffer; the channels-first call
# between layout copies is then faster (LeNet's 6-channel 2x2 max pool, batch
# 64: native 0.53 ms, copies + channels-first 0.42 ms).
POOL_CHANNELS_LAST_MIN = 16


def pool_channels_last_native(nd: int, channels: int) -> bool:
    """Channels-last max/avg pooling (1-D, 2-D; global 2-D) with at least
    POOL_CHANNELS_LAST_MIN channels runs natively: each image is one plane of
    the channels-first kernels with a window of 1 along C
    (PoolGeometry.last_planes_shape), the vector lanes across channels,
    nothing copied (VGG's 2x2 max pool, 8 x 64 x 112 x 112: 4.3 ms, against
    3.0 ms channels-first and 58 ms for NumPy transposes around it). 3-D and
    adaptive pooling, and fewer channels, copy to channels-first and back."""
    return nd <= 2 and channels >= POOL_CHANNELS_LAST_MIN


# ------------------------------------------------------ the auto thresholds

# Output channels per group from which the stride-1 direct forward puts
# channels in the vector lanes (fewer would leave most lanes idle; LeNet c1's
# 6 channels run faster with pixels in the lanes).
CHANNELS_IN_LANES_MIN = 12
# ...but a 1x1 convolution is a plain GEMM over channels ("1x1"), which wins
# from more output channels (forward) or input channels (input gradient)
# than this. Intel Xeon (AVX-512 + AMX), channels-first, one thread, direct
# -> 1x1 forward: (8,256,28,28) -> 64 2.55 -> 1.67 ms, (1,64,56,56) -> 256
# 1.52 -> 0.68, (16,128,28,28) -> 512 26.6 -> 13.7, (1,96,56,56) -> 24 0.24
# -> 0.20, (64,6,28,28) -> 64 2.49 -> 0.74; backward (its input gradient on
# the GEMM too) (8,256,28,28) -> 64 5.27 -> 3.33, (16,128,28,28) -> 512 47.5
# -> 30.0. With 16: GoogLeNet's (8,480,14,14) -> 16 forward 0.36 direct
# against 0.47, (8,16,14,14) -> 480 input gradient (backward) 0.86 against
# 0.97. Mixed at 32 (28x28 planes: GEMM 11% faster; 7x7: direct 15%).
POINTWISE_LANES_MAX = 16
# ...and from which batch size, up to which plane size and channel count it
# tiles images instead of positions (more channels stream too many weights
# per tile: 512 channels at 7x7, batch 32: 138 ms vs 84 ms for the stacked
# GEMM).
BATCH_IN_TILE_MIN = 16
BATCH_IN_TILE_PLANE = 256
BATCH_IN_TILE_CHANNELS = 64

# Images with few output positions (ResNet's last stages: 7x7, 4x4, 2x2) make
# GEMMs too narrow to run near peak. A 1-D/2-D batch is then stacked along
# the unused depth axis, (N, C, 1, H, W) -> (1, C, N, H, W): the depth-1
# kernel keeps images apart and the kernels see one image whose column tiles
# span the batch. Limit in output positions per image, STACK_PLANE: up to
# 7x7 stacking wins every pass on one thread (forward 1.12-1.18x, input
# gradient 1.13-1.15x, weight gradient 1.02-1.58x; 3x3 at 512@4/7, 1x1 at
# 512@7, k4 s2 at 256@8); from 8x8 the per-image GEMMs' whole panels beat
# the stacked copies (forward 0.78-0.97x at 8x8, 0.63-0.77x for k4 s2 at
# 16x16 -> 8x8; DCGAN's transposed layers lost 10-20% to it). On more
# threads the stacked input gradient splits its one image into channel
# chunks and still wins up to 7x7 (2 threads: 1.21-1.52x), except a 1x1
# layer's, whose column tiles are its items (0.91x at 7x7: it stacks only at
# TINY_PLANE and below; ResNet 2x2 layer, 2 threads: 13.1 -> 7.8 ms). The
# weight gradient, parallel over images, stacks on several threads up to
# 4x4 (2 threads: k4 s2 256@8 -> 512@4 32.0 -> 21.3 ms, 3x3 512@4 1.03x; at
# 7x7 0.95-1.06x). Measured 2026-12-02 on the quiet 2-core machine.
STACK_PLANE = 49
STACK_PLANE_WEIGHT_THREADS = 16
TINY_PLANE = 4
# Output positions up to which choose_conv_algorithm's direct kernel (K <= 48,
# batches of 16 or more) tiles images instead of positions.
SMALL_PLANE = 256

# GEMM tiling. Column-buffer budget per thread (elements) of the weight
# gradient's BLAS GEMMs and the input gradient's packed GEMM: bounds the
# memory for any batch while keeping tiles wide enough to run near peak.
COLUMN_BUDGET = 1 << 19
# The packed forward GEMM's column panels per thread (elements, L2-sized)
# and its reduction chunk (a chunk of the packed weights stays in L2, of a
# column panel in L1).
PANEL_BUDGET = 1 << 17
# ...except that a tile holds at least PANEL_MIN_PANELS panels while that
# stays within PANEL_BUDGET_MAX (and the items share evenly, _forward_tile):
# with deep reductions (R = C*k*k of 2304 and more) the budget left one or
# two panels per tile, so the whole weight matrix streamed from memory every
# 32 columns and two threads shared that bandwidth (2 threads: (8,512,7,7)->512 3x3 12.2 -> 10.3 ms, (16,256,14,14)
# ->512 3x3 s2 11.0 -> 9.4 ms, (8,256,14,14)->256 8.4 -> 7.5 ms; shallow
# reductions keep the L2-sized panels: (8,64,56,56)->64 lost 8% with wider).
PANEL_MIN_PANELS = 4
PANEL_BUDGET_MAX = 1 << 19
REDUCTION_CHUNK = 256
# Column tiles per weight matrix (images x tiles) up to which the GEMMs read
# the weights in place instead of packing them: packing costs two passes over
# them, reading in place (12 strided rows) a little more per pass than
# reading packed. ResNet-18's 512-channel 2x2 layer, batch stacked (one
# tile): 3.3 -> 1.8 ms; per image (8 tiles) in place would be 7.6 -> 11.7 ms.
IN_PLACE_TILES = 2


# Winograd F(4x4, 3x3) (2-D 3x3, stride 1, dilation 1; forward and input
# gradient; the weight gradient stays on im2col). Its cost is the 36 GEMMs
# (per tile) plus the weight transform (per C*K, and U = 36*C*K elements of
# work array): it needs enough 4x4 output tiles per call to amortise the
# weights, and enough channels to amortise the tile transforms. Measured
# forward, 1 thread, float32, winograd vs direct ms (shared machine):
#   (8,64,56,56)->64 11.6 vs 17.6; (8,128,28,28) 9.9 vs 16.7; (8,256,14,14)
#   10.4 vs 20.4; (8,512,7,7) 21.5 vs 24.7 (32 tiles); batch 1: 64@56 1.60
#   vs 2.25, 128@28 1.60 vs 2.19 (49 tiles), 256@14 3.40 vs 2.45 (16 tiles:
#   loses), 512@7 15.9 vs 5.3 (4 tiles: loses); (8,32,56,56) 4.03 vs 4.49,
#   (8,16,56,56) 1.74 vs 1.43 (16 channels: loses). The input gradient
#   follows the same pattern (its "tiles" are those of the input). Against
#   auto's other choice at (8,512,7,7), the depth-stacked im2col GEMM (16.4
#   ms forward, 19.5 ms input gradient vs Winograd's 22.3 and 28.1), 32 tiles
#   lose; batch 1 at 128@28 (49 tiles) wins, 1.74 vs 2.50 ms. With 2 threads
#   the tiles are shared: batch 1 at 128@28 then loses (1.74 vs direct 1.48
#   ms), at 64@56 (98 tiles per thread) wins (1.30 vs 1.52), so the minimum
#   is per thread.
WINOGRAD_MIN_CHANNELS = 32   # input and output channels per group
WINOGRAD_MIN_TILES = 48      # 4x4 output tiles per call and thread (batch x tiles per image)


def winograd_wins(geom: V.ConvGeometry, gradient: str) -> bool:
    """auto's Winograd rule, for the forward ("forward") or input gradient
    ("x"), when the policy allows it (cnnfast.set_conv_policy)."""
    if gradient not in ("forward", "x") or not winograd_allowed() or not V.is_winograd_shape(geom):
        return False
    c, k = geom.in_channels // geom.groups, geom.out_channels // geom.groups
    out = geom.out_size if gradient == "forward" else geom.in_size
    tiles = geom.batch * ((out[0] + 3) // 4) * ((out[1] + 3) // 4)
    threads = conv_threads(conv_macs(geom))   # as plan_conv runs the call
    return min(c, k) >= WINOGRAD_MIN_CHANNELS and tiles >= WINOGRAD_MIN_TILES * threads


def choose_conv_algorithm(geom: V.ConvGeometry, gradient: str = "forward") -> str:
    """The `algorithm="auto"` choice for the forward pass or one gradient
    ("forward", "x" or "weight"):

    * stride 1 with at least CHANNELS_IN_LANES_MIN output channels per group:
      "direct", whose stride-1 kernel holds output channels in the vector
      lanes and reads the input in place of im2col's column copy (VGG 3x3
      20.7 -> 18.6 ms, 1x1@14 0.56 -> 0.30 ms), once output rows are 14 or
      more wide (at 14x14 as fast as the depth-stacked GEMM, with no stacked
      copies: peak memory 1.5x instead of 2.1x input + weights + output;
      below, the stacked GEMM wins: 4x4 at 512 channels 7.8 vs 13.0 ms), and
      at any size for K <= 48 (LeNet c2 0.77 -> 0.47 ms: M = 16 GEMMs run far
      below peak); with K <= 48 also for any stride on planes of at most
      SMALL_PLANE outputs in batches of 16 or more, where the kernel tiles
      images (LeNet c2 0.47 -> 0.39 ms; stride 2, 64 x (16, 14, 14) -> 32:
      0.75 -> 0.50 ms);
    * input gradient: the same with the roles of C and K swapped (it runs
      the forward kernel on grad_out), from 100 input positions (14x14 wins,
      8x8 loses);
    * both only up to POINTWISE_LANES_MAX channels for a 1x1 kernel, whose
      plain GEMM ("1x1") wins beyond;
    * fewer channels: a 1x1 kernel is a plain GEMM over channels ("1x1");
      "direct" (pixels in the lanes) when a group has 2..11 output channels
      and rows of at least 8 outputs; for the input gradient with stride 1
      and 8..11 input channels, or depthwise;
    * weight gradient: im2col's GEMM reduces over the batch at near-peak speed
      and wins on every measured shape;
    * shapes beyond BLAS's 32-bit sizes: "direct"; otherwise "im2col";
    * depthwise (is_depthwise): "direct", every pass, whose depthwise kernel
      reads each activation once (im2col copies it KH*KW times for a GEMM of
      one row per group).
    """
    if is_depthwise(geom):
        return "direct"
    if winograd_wins(geom, gradient):
        return "winograd"
    if not V.fits_blas(geom):
        return "direct"
    k_per_group = geom.out_channels // geom.groups
    c_per_group = geom.in_channels // geom.groups
    stride_1 = all(s == 1 for s in geom.stride)
    lanes = CHANNELS_IN_LANES_MIN
    pointwise = geom.is_pointwise
    if gradient == "forward" and k_per_group >= lanes and (
            not pointwise or k_per_group <= POINTWISE_LANES_MAX) and (
            (stride_1 and (k_per_group <= 48 or geom.out_size[-1] >= 14))
            or (k_per_group <= 48 and geom.batch >= 16
                and math.prod(geom.out_size) <= SMALL_PLANE)):
        return "direct"
    if gradient == "x" and stride_1 and c_per_group >= lanes and (
            not pointwise or c_per_group <= POINTWISE_LANES_MAX) and (
            math.prod(geom.in_size) >= 100):
        return "direct"
    if geom.is_pointwise:
        return "1x1"
    if gradient == "forward":
        if 2 <= k_per_group < lanes and geom.out_size[-1] >= 8:
            return "direct"
    elif gradient == "x":
        depthwise = c_per_group == 1 and k_per_group == 1
        if (stride_1 and geom.in_size[-1] >= 8 and k_per_group <= 64
                and (8 <= c_per_group < lanes or depthwise)):
            return "direct"
    return "im2col"


# ------------------------------------------------------------- depthwise

# Items a depthwise weight gradient is cut into at least (channels x blocks of
# batch rows; channels-last: blocks of batch rows, all channels each),
# whatever the thread count: its partial sums are then added in
# the same order on 1, 2 or 3 threads, so the result is bit-identical.
DEPTHWISE_WEIGHT_ITEMS = 16
# ...but with channels-last (every item all channels) a block holds at least
# this many output pixels, and there are at least 2 blocks: each block's
# partial sums (KV x C) are zeroed and added up afterwards, which at 14x14
# with 14 blocks cost as much as the sums themselves (384 channels: 0.084
# ms against PyTorch's 0.069).
DEPTHWISE_WEIGHT_BLOCK_PIXELS = 256
# Items per thread the forward and input gradient aim for (planes, or rows
# with channels-last), so a batch of one image with few channels still shares
# evenly: blocks of rows (channel blocks) are added until there are as many.
DEPTHWISE_ITEMS_PER_THREAD = 4


# Rows narrower than this many vectors run the channels-first call on the
# channels-last kernels between two layout copies (layout "channels_last"):
# the row kernel keeps few lanes busy on short rows and peels most of them as
# edges (MobileNetV2's 7x7x960, batch 8: 7.2 ms in rows, 0.4 ms + copies
# with channels in the lanes).
DEPTHWISE_ROW_VECTORS = 2


def is_depthwise(geom: V.ConvGeometry) -> bool:
    """A depthwise convolution: one input channel per group (groups == C_in,
    any channel multiplier K / C_in); a single channel is not one (groups 1:
    the ordinary kernels)."""
    return geom.groups > 1 and geom.groups == geom.in_channels


def depthwise_native_last(geom: V.ConvGeometry, algorithm: str, need=("forward",)) -> bool:
    """Does a channels-last depthwise call run on the NHWC kernels (channels
    in the lanes, no layout copies)? Under "auto" and "direct", for every
    pass but the input gradient of a non-zero padding mode (its padding's
    gradient is folded onto channels-first planes: the copies' route)."""
    return (algorithm in ("auto", "direct") and is_depthwise(geom)
            and (geom.pad_mode == "zeros" or "x" not in need))


def _blocks(parts: int, items: int, target: int) -> int:
    """Blocks per item so that items x blocks reaches target (at most parts)."""
    return max(1, min(parts, -(-target // max(items, 1))))


def depthwise_split(s: _Shape, gradient: str, threads: int, vw: int, last: bool) -> tuple:
    """The depthwise driver's partition: (blocks,) of rows per plane
    (channels-first forward and input gradient), of channels per row
    (channels-last forward and input gradient) or of batch rows (weight
    gradient: per channel, channels-last all channels at once; on the shape
    alone: DEPTHWISE_WEIGHT_ITEMS, DEPTHWISE_WEIGHT_BLOCK_PIXELS)."""
    C, N = s.groups, s.N
    nvec = -(-C // vw)
    rows = math.prod(s.out_size[:2]) if gradient != "x" else math.prod(s.in_size[:2])
    if gradient == "weight" and last:
        pixels = N * math.prod(s.out_size)
        return (min(N * rows, DEPTHWISE_WEIGHT_ITEMS,
                    max(2, pixels // DEPTHWISE_WEIGHT_BLOCK_PIXELS)),)
    if gradient == "weight":
        return (_blocks(N * rows, C * s.K, DEPTHWISE_WEIGHT_ITEMS),)
    target = DEPTHWISE_ITEMS_PER_THREAD * threads if threads > 1 else 1
    if last:
        return (_blocks(nvec, N * rows, target),)
    return (_blocks(rows, N * (C * s.K if gradient == "forward" else C), target),)


def _depthwise_edges(s: _Shape) -> int:
    """Outputs of a row whose windows cross the input's width edges (the
    channels-last forward's pointer tables): outside the interior that
    cf_out_range (csrc/common/cf_base.h) gives."""
    W, OW, KW = s.in_size[2], s.out_size[2], s.kernel[2]
    sw, pw, dw = s.stride[2], s.pad[2], s.dilation[2]
    lo = min(max(0, -(-pw // sw)), OW)
    hi = max(min(OW, (W - (KW - 1) * dw - 1 + pw) // sw + 1), lo)
    return OW - (hi - lo)


def depthwise_arrays(s: _Shape, gradient: str, threads: int, split: tuple, info: dict,
                     last: bool) -> dict:
    """The depthwise driver's work arrays, name -> (elements, kind), as
    _depthwise.pyx uses them: per-thread row-sum terms ("dw_taps", tap_bytes
    each) or tap pixel pointers ("dw_px"), a row or pixel of zeros (zero
    padding read in place), packed channels-last weights (and bias),
    per-thread weight-gradient accumulators and the partial sums of its
    blocks."""
    C, M = s.groups, s.K
    KV = math.prod(s.kernel)
    vw = info["vector_width"]
    Cp = -(-C // vw) * vw
    idx = np.dtype(np.intp).itemsize
    if not last:
        taps = ("dw_taps", (threads * _own_lines(-(-(M if gradient == "x" else 1) * KV
                                                    * info["tap_bytes"] // idx), idx), "i"))
        zero = ("dw_zero", (s.in_size[2], "f"))
        if gradient == "forward":
            return dict([taps, zero])
        if gradient == "x":
            return dict([taps])
        return dict([zero, ("dw_acc", (threads * _own_lines(KV * (vw + 1), info["itemsize"]), "f")),
                     ("dw_partial", (split[0] * C * M * KV if split[0] > 1 else 0, "f"))])
    if gradient == "forward":   # tap rows (pointer, step) and the edge outputs' taps
        rows = math.prod(s.kernel[:2])
        return {"dw_wpk": (M * (KV + 1) * Cp, "f"), "dw_zero": (Cp, "f"),
                "dw_px": (threads * _own_lines(2 * rows + KV * _depthwise_edges(s), idx), "i")}
    if gradient == "x":
        return {"dw_wpk": (M * KV * Cp + Cp, "f"),
                "dw_px": (threads * _own_lines(4 * KV, idx), "i")}
    return {"dw_zero": (Cp, "f"), "dw_partial": (split[0] * M * KV * Cp, "f"),
            "dw_px": (threads * _own_lines(2 * (KV + math.prod(s.kernel[:2])), idx), "i")}


def _own_lines(n: int, itemsize: int) -> int:
    """Elements a thread's part of a per-thread work array takes for n:
    whole 64-byte lines and one more, so no two threads write one line (as
    _pool.pyx's _per_thread; MobileNetV2's 32-channel 3x3 depthwise at
    112x112, batch 1, two threads: 0.45 -> 0.25 ms; one thread 0.31)."""
    return (n * itemsize + 127) // 64 * 64 // itemsize


# --------------------------------------------------------------- the plan

class PassPlan(NamedTuple):
    """How one pass of a convolution runs."""
    algorithm: str          # "direct", "im2col", "1x1" or "winograd": auto's or the caller's
    kernel: str             # the driver kernel (see KERNELS)
    layout: str             # "images", "depth_stacked", "batch_as_pixels" or "channels_last"
    threads: int
    tile: int               # GEMM column tile (0: no GEMM)
    weights_in_place: bool  # the packed GEMM reads the weights unpacked
    workspace_bytes: int    # work arrays of the driver, plus stacked copies
    flops: int              # 2 x multiply-adds
    # the depthwise driver's partition (blocks per item, see depthwise_split)
    # and its work arrays, name -> (elements, "f" or "i"), as pairs
    split: tuple = ()
    arrays: tuple = ()
    config: object = None   # the kernel's own configuration record (e.g. _nhwc.NhwcConfig)


# What each driver kernel is, for explain_conv's readers.
KERNELS = {
    "nhwc_direct": "direct on channels-last activations, output channels in the lanes",
    "nhwc_winograd": "Winograd F(4x4, 3x3) or F(2x2, 3x3) on channels-last activations",
    "nhwc_winograd_x": "input gradient of a 3x3 stride-1 conv as the Winograd forward of "
                       "grad_out with the flipped weights",
    "nhwc_direct_x": "input gradient on the channels-last forward kernel, per stride phase",
    "nhwc_weight": "weight gradient on channels-last activations, kw x channel-step tile",
    "nhwc_winograd_weight": "weight gradient of a 3x3 stride-1 conv on Winograd: transformed "
                            "tiles, one GEMM per position over the batch's tiles",
    "direct_rows": "direct, pixels in the vector lanes, rows of 8 output channels",
    "direct_lanes": "direct, output channels in the vector lanes (stride 1)",
    "direct_lanes_batch": "direct, channels in the lanes, images in the tile",
    "direct_polyphase": "input gradient as one direct conv per stride phase",
    "direct_weight": "direct weight gradient",
    "winograd": "Winograd F(4x4, 3x3), fused per block of tiles",
    "gemm": "im2col / 1x1 on cnnfast's packed GEMM",
    "gemm_blas": "im2col weight gradient on BLAS GEMMs",
    "channel_sum": "bias gradient: channel sums in double",
    "depthwise": "depthwise (groups == C): a plane per item and vectors along rows, or "
                 "channels-last with channels in the vector lanes; padding read in place",
    "inverted_residual_block": "a fused inverted-residual block's 1x1 expansion, depthwise "
                               "and 1x1 projection as one call, band by band of rows",
}
PASSES = ("forward", "x", "weight", "bias")


class ConvPlan(NamedTuple):
    """The plan of one conv call: shapes, dtype and a PassPlan per pass."""
    x_shape: tuple
    weight_shape: tuple
    out_shape: tuple
    dtype: str
    passes: dict            # "forward" / "x" / "weight" / "bias" -> PassPlan

    @property
    def workspace_bytes(self) -> int:
        """The largest work-array need of any one pass (they run one after another)."""
        return max((p.workspace_bytes for p in self.passes.values()), default=0)

    @property
    def flops(self) -> int:
        return sum(p.flops for p in self.passes.values())

    def __str__(self):
        lines = [f"conv x{self.x_shape} * w{self.weight_shape} -> {self.out_shape} {self.dtype}"]
        for name, p in self.passes.items():
            gemm = (f", tile {p.tile}" + (", weights in place" if p.weights_in_place else "")
                    if p.kernel.startswith("gemm") else "")
            lines.append(f"  {name:<8} {p.algorithm:<7} {p.kernel:<18} {p.layout:<15} "
                         f"{p.threads} thr  {p.workspace_bytes / 1e6:8.3f} MB  "
                         f"{p.flops / 1e9:8.3f} GFLOP{gemm}")
        return "\n".join(lines)


def conv_macs(geom: V.ConvGeometry) -> int:
    return (geom.batch * geom.out_channels * math.prod(geom.out_size)
            * geom.in_channels // geom.groups * math.prod(geom.kernel))


def is_full_window(geom: V.ConvGeometry, algorithm: str) -> bool:
    """A kernel that covers the whole unpadded input (LeNet's conv3, a
    classifier written as a conv) has one output per image: the per-image
    GEMMs would have a single column. With `auto` it runs as a 1x1
    convolution of one "image" whose pixels are the batch: one GEMM of width N."""
    return (algorithm == "auto" and geom.groups == 1 and geom.batch > 1
            and tuple(geom.kernel) == tuple(geom.in_size)
            and not any(geom.pad_before) and not any(geom.pad_after)
            and all(d == 1 for d in geom.dilation)
            and max(geom.batch, geom.in_channels * math.prod(geom.kernel)) <= V.BLAS_INT_MAX)


def _stacks(geom, algorithm, chosen, threads, gradient) -> bool:
    """Stack the batch along depth for this pass (see STACK_PLANE)? Only
    where auto picked a GEMM: the direct kernels gain nothing from wider
    columns and lose their row blocking (LeNet c2 forward 0.66 -> 1.39 ms)."""
    positions = math.prod(geom.out_size)
    if not (algorithm == "auto" and geom.nd <= 2 and geom.batch > 1
            and positions <= STACK_PLANE and chosen not in ("direct", "winograd")):
        return False
    if gradient == "forward" or threads == 1:
        return True
    if gradient == "x":
        return not geom.is_pointwise or positions <= TINY_PLANE
    return positions <= STACK_PLANE_WEIGHT_THREADS


class _Shape(NamedTuple):
    """The 3-D shape one pass's driver sees (after any stacking), per group."""
    N: int
    C: int          # input channels per group
    K: int          # output channels per group
    groups: int
    in_size: tuple  # (D, H, W)
    out_size: tuple
    kernel: tuple
    stride: tuple
    pad: tuple      # padding before
    dilation: tuple


def _driver_shape(geom, layout) -> _Shape:
    stride, pad, dilation = geom.kernel_args
    in3, out3, k3 = geom.as3d(geom.in_size, 1), geom.as3d(geom.out_size, 1), geom.as3d(
        geom.kernel, 1)
    C, K, g = geom.in_channels // geom.groups, geom.out_channels // geom.groups, geom.groups
    if layout == "depth_stacked":
        return _Shape(1, C, K, g, (geom.batch,) + in3[1:], (geom.batch,) + out3[1:], k3,
                      stride, pad, dilation)
    if layout == "batch_as_pixels":
        rows = geom.in_channels * math.prod(geom.kernel)
        return _Shape(1, rows, geom.out_channels, 1, (1, 1, geom.batch), (1, 1, geom.batch),
                      (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1))
    return _Shape(geom.batch, C, K, g, in3, out3, k3, stride, pad, dilation)


def _reach(s: _Shape) -> tuple:
    """The padded input extent the windows reach: (o-1)*s + (k-1)*d + 1 per dim."""
    return tuple((o - 1) * st + (k - 1) * d + 1
                 for o, k, st, d in zip(s.out_size, s.kernel, s.stride, s.dilation))


def _batch_in_tile(s: _Shape, dtype) -> bool:
    """Should the channels-in-lanes forward tile images rather than positions?
    For small planes: with stride 1 when that computes fewer positions once
    the copy it needs is counted (LeNet c2, 64 images of 10x10: 16-image
    tiles waste nothing where 24-position tiles compute 1.44 per output;
    Inception 5x5 at 14x14, 8 images: 1.0 vs 1.14), with other strides (no
    position tiling) from BATCH_IN_TILE_MIN images. The waste of each tiling
    is the kernel family's own count (csrc/conv/conv_direct_lanes.h)."""
    P, R = math.prod(s.out_size), s.C * math.prod(s.kernel)
    if not (CHANNELS_IN_LANES_MIN <= s.K <= BATCH_IN_TILE_CHANNELS and P <= BATCH_IN_TILE_PLANE):
        return False
    if s.stride != (1, 1, 1):
        return s.N >= BATCH_IN_TILE_MIN
    reach = _reach(s)
    tiles = _conv.kernel_tiles(dtype)
    vw = tiles["vector_width"]
    nv = (min(s.K, tiles["lanes_block"]) + vw - 1) // vw
    # input copies per multiply-add instruction: the batch-innermost copy (a
    # strided gather, counted double) against the padded copy (memcpy rows,
    # counted half; none without padding)
    copy = s.C * math.prod(reach) / (P * R * nv)
    padded = any(s.pad) or reach != s.in_size
    by_image = _conv.lanes_waste(dtype, s.K, s.N, reach, s.out_size, s.kernel, s.dilation, True)
    by_position = _conv.lanes_waste(dtype, s.K, s.N, reach, s.out_size, s.kernel, s.dilation,
                                    False)
    return by_image + 2 * copy < by_position + (0.5 * copy if padded else 0)


def _forward_kernel(s: _Shape, algorithm: str, dtype, zero_padding: bool) -> str:
    if algorithm == "winograd":
        # the input transform reads zero padding only: other padding modes
        # run the GEMM over the padded copy
        return "winograd" if zero_padding else "gemm"
    if algorithm != "direct":
        return "gemm"
    # the images-in-the-tile copy pads with zeros only
    if zero_padding and _batch_in_tile(s, dtype):
        return "direct_lanes_batch"
    if s.stride == (1, 1, 1) and s.K >= CHANNELS_IN_LANES_MIN:
        return "direct_lanes"
    return "direct_rows"


def _input_grad_kernel(s: _Shape, algorithm: str) -> str:
    if algorithm == "winograd":
        return "winograd"
    if algorithm != "direct":
        return "gemm"
    # the input gradient is a forward conv of grad_out with K and C swapped
    return ("direct_lanes" if s.stride == (1, 1, 1) and s.C >= CHANNELS_IN_LANES_MIN
            else "direct_polyphase")


def _gemm_tile(P: int, depth: int, budget: int, nr: int, min_tiles: int = 1) -> int:
    """Columns per packed-GEMM tile: whole panels of nr within the budget,
    balanced so the last tile is not a sliver, and at least `min_tiles`
    tiles where P allows (a thread per item needs that many items)."""
    tile = min(max(budget // max(depth, 1) // nr, 1) * nr, (P + nr - 1) // nr * nr)
    tile = min(tile, max(((P + min_tiles - 1) // min_tiles + nr - 1) // nr * nr, nr))
    ntiles = (P + tile - 1) // tile
    return ((P + ntiles - 1) // ntiles + nr - 1) // nr * nr


def _forward_tile(P: int, R: int, nr: int, min_tiles: int, images: int, threads: int) -> int:
    """The packed forward GEMM's column tile: within PANEL_BUDGET, or wider
    (PANEL_MIN_PANELS panels within PANEL_BUDGET_MAX) where the reduction is
    deep, if the items (images x tiles) still share evenly among the threads:
    at least 4 per thread or a multiple of the thread count ((8,512,7,7) ->
    512 stacked, 2 threads: 5 wide tiles 11.9 ms, 13 narrow ones 10.9 ms;
    (1,128,28,28) -> 256 s2: 2 wide tiles 0.74 ms, 3 narrow 1.14 ms)."""
    tile = _gemm_tile(P, R, PANEL_BUDGET, nr, min_tiles)
    budget = min(PANEL_MIN_PANELS * nr * R, PANEL_BUDGET_MAX)
    if budget <= PANEL_BUDGET:
        return tile
    wide = _gemm_tile(P, R, budget, nr, min_tiles)
    items = images * -(-P // wide)
    return wide if threads == 1 or items >= 4 * threads or items % threads == 0 else tile


def _blas_tile(P: int, rows: int) -> int:
    """Columns per BLAS weight-gradient tile: within COLUMN_BUDGET, at least 16,
    balanced, a multiple of 16 (a narrow GEMM runs far below peak)."""
    t = min(max(COLUMN_BUDGET // max(rows, 1), 16), P)
    ntiles = (P + t - 1) // t
    t = (P + ntiles - 1) // ntiles
    return min((t + 15) // 16 * 16, P)


def _direct_input_shape(out_size, kernel, stride, dilation, vw):
    """The padded extent the pixels-in-lanes direct kernels read (as
    _conv.pyx's _direct_input_shape): rows (o-1)*s + (k-1)*d + 1, the last
    dim wide enough for full vector loads of every chunk."""
    shape = [(o - 1) * s + (k - 1) * d + 1
             for o, k, s, d in zip(out_size[:2], kernel[:2], stride[:2], dilation[:2])]
    chunks = (out_size[2] + vw - 1) // vw * vw
    shape.append((chunks - vw) * stride[2] + (kernel[2] - 1) * dilation[2] + vw * max(stride[2], 2))
    return tuple(shape)


def _lanes_arrays(K, C, R, G, N, reach, in_place, batch, threads):
    """_cv_forward's work arrays in elements (name -> (elements, dtype))."""
    return {"cv_wpk": (G * K * R, "f"), "cv_bpk": (G * K, "f"),
            "cv_xpad": (0 if in_place else threads * C * math.prod(reach), "f"),
            "cv_padded_id": (threads, "i"),
            **({"cv_xt": (G * C * math.prod(reach) * N, "f")} if batch else {})}


def _winograd_arrays(C, K, G, N, out_hw, threads, tiles):
    """_winograd_forward's work arrays for C -> K channels per group, an
    out_hw output."""
    per_image, Hp, Wp = _conv.winograd_planes(*out_hw)
    vw, nr = tiles["vector_width"], tiles["gemm_nr"]
    nblocks, kchunk = _conv.winograd_split(K, G, N * per_image, threads, nr, tiles["gemm_mr"])
    items = G * nblocks * ((K + kchunk - 1) // kchunk)
    return {"wino_xpad": (N * G * C * Hp * Wp + 4 * vw + 8, "f"), "wino_u": (G * 36 * C * K, "f"),
            "wino_v": (threads * (36 * C * nr + vw), "f"),
            "wino_m": (threads * (36 * kchunk * nr + vw), "f"),
            "wino_work": (threads * 4 * C, "f"),
            "wino_bad": (max(items, G * ((K + 3) // 4)), "i")}


def _pointwise_identity(s: _Shape) -> bool:
    """A 1x1 stride-1 unpadded pass: the planes are the columns (as
    _conv.pyx's _is_pointwise_identity)."""
    return (s.kernel == (1, 1, 1) and s.stride == (1, 1, 1) and not any(s.pad)
            and s.out_size == s.in_size)


def work_arrays(kernel, s: _Shape, threads, tile, in_place, tiles, gradient) -> dict:
    """The work arrays (cnnfast._ext._workspace) the driver asks for in this
    pass, name -> (elements, "f" for the dtype or "i" for intp), sized as
    _conv.pyx sizes them; the tests hold the two to each other."""
    P = math.prod(s.out_size)
    KV = math.prod(s.kernel)
    R = s.C * KV
    vw, nr = tiles["vector_width"], tiles["gemm_nr"]
    G = s.groups

    def kpad(k):
        return (k + vw - 1) // vw * vw

    pointwise = _pointwise_identity(s)
    if kernel in ("direct_lanes", "direct_lanes_batch") and gradient == "forward":
        reach = _reach(s)
        in_place = kernel == "direct_lanes_batch" or (not any(s.pad) and reach == s.in_size)
        return _lanes_arrays(kpad(s.K), s.C, R, G, s.N, reach, in_place,
                             kernel == "direct_lanes_batch", threads)
    if kernel == "direct_lanes":   # input gradient: the forward kernel on grad_out
        pads = tuple((k - 1) * d - p for k, d, p in zip(s.kernel, s.dilation, s.pad))
        reach = tuple(n + (k - 1) * d for n, k, d in zip(s.in_size, s.kernel, s.dilation))
        in_place = not any(pads) and reach == s.out_size
        arrays = _lanes_arrays(kpad(s.C), s.K, s.K * KV, G, s.N, reach, in_place, False, threads)
        arrays["lanes_wsub"] = (G * s.C * s.K * KV, "f")
        return arrays
    if kernel == "winograd" and gradient == "forward":
        return _winograd_arrays(s.C, s.K, G, s.N, s.out_size[1:], threads, tiles)
    if kernel == "winograd":   # input gradient: forward of grad_out, flipped kernel
        return {**_winograd_arrays(s.K, s.C, G, s.N, s.in_size[1:], threads, tiles),
                "wino_wflip": (G * s.C * s.K * KV, "f")}
    if kernel == "direct_rows":
        shape = _direct_input_shape(s.out_size, s.kernel, s.stride, s.dilation, vw)
        return {"rows_xpad": (s.N * G * s.C * math.prod(shape), "f")}
    if kernel == "direct_weight":
        shape = _direct_input_shape(s.out_size, s.kernel, s.stride, s.dilation, vw)
        gow = (s.out_size[2] + vw - 1) // vw * vw
        return {"wgrad_xpad": (s.N * G * s.C * math.prod(shape), "f"),
                "wgrad_gopad": (s.N * G * s.K * s.out_size[0] * s.out_size[1] * gow, "f")}
    if kernel == "direct_polyphase":
        dims = [list(_conv._phases(k, st, p, d, n)) for k, st, p, d, n in
                zip(s.kernel, s.stride, s.pad, s.dilation, s.in_size)]
        gopad = part = wsub = 0
        for (_, td, _, dd, nd), (_, th, _, dh, nh), (_, tw, _, dw, nw) in _product(*dims):
            sub = (len(td), len(th), len(tw))
            shape = _direct_input_shape((nd, nh, nw), sub, (1, 1, 1), (dd, dh, dw), vw)
            gopad = max(gopad, s.N * G * s.K * math.prod(shape))
            part = max(part, s.N * G * s.C * nd * nh * nw)
            wsub = max(wsub, G * s.C * s.K * math.prod(sub))
        arrays = {"phase_gopad": (gopad, "f"), "phase_wsub": (wsub, "f")}
        if s.stride != (1, 1, 1):
            arrays["phase_part"] = (part, "f")
        return arrays
    if kernel == "gemm" and gradient == "forward":
        kr = (s.K + 3) // 4 * 4
        inside = not any(s.pad) and all(
            (o - 1) * st + (k - 1) * d < n for o, k, st, d, n in
            zip(s.out_size, s.kernel, s.stride, s.dilation, s.in_size))
        xpad = 0 if inside else s.C * math.prod(_reach(s)) + vw * s.stride[2]
        return {"gemm_a": (1 if in_place else G * kr * R, "f"),
                "gemm_awork": (threads * 4 * REDUCTION_CHUNK, "f"),
                "gemm_xpad": (threads * xpad, "f"), "gemm_panels": (threads * tile * R, "f"),
                "gemm_padded_id": (threads, "i"),
                "gemm_runs": (threads * (3 * tile + tile // nr + 2), "i")}
    if kernel == "gemm":   # input gradient: W^T (R x K) against grad_out tiles
        chunks, cchunk = _conv.input_grad_channel_chunks(s.N * G, s.C, threads, pointwise)
        kr = (cchunk * KV + 3) // 4 * 4   # packed rows per channel chunk
        return {"gemm_a": (1 if in_place else G * chunks * kr * s.K, "f"),
                "gemm_awork": (threads * 4 * REDUCTION_CHUNK, "f"),
                "gemm_xpad": (0 if pointwise else threads * R * tile, "f"),
                "gemm_panels": (threads * tile * s.K, "f"),
                "gemm_runs": (threads * (3 * tile + tile // nr + 2), "i")}
    if kernel == "gemm_blas":
        t = min(threads, s.N * G * ((P + tile - 1) // tile))
        size = G * s.K * R
        arrays = {"wgrad_partial": ((t - 1) * size if t > 1 else 1, "f")}
        if not pointwise:
            arrays["wgrad_columns"] = (t * R * tile, "f")
        return arrays
    return {}   # channel_sum


def _bytes(arrays, itemsize):
    idx = np.dtype(np.intp).itemsize
    return sum(max(n, 1) * (itemsize if kind == "f" else idx) for n, kind in arrays.values())


# Every threshold of this module: a user (or a test) may change one, and a
# plan made under the old value must not be reused. Each assignment to an
# upper-case attribute of this module (setattr, as monkeypatch.setattr does)
# counts in _threshold_changes, and plans are keyed on that count: reading
# and hashing the 30 values instead cost every cached call 0.64 us (now 0.2).
_threshold_changes = 0


class _PlanningModule(types.ModuleType):
    def __setattr__(self, name, value):
        global _threshold_changes
        super().__setattr__(name, value)
        if name.isupper():
            _threshold_changes += 1

    def __delattr__(self, name):
        global _threshold_changes
        super().__delattr__(name)
        if name.isupper():
            _threshold_changes += 1


sys.modules[__name__].__class__ = _PlanningModule

_ISA_LEVEL = _runtime.isa_level()   # probed once per process (csrc/common/cf_isa.h)


def planning_state() -> tuple:
    """What a plan depends on besides its arguments (the plan cache's key):
    the kernel threads (OpenMP's limit included), the conv policy, the ISA
    level of the kernel tables and the thresholds above."""
    return kernel_threads(), winograd_allowed(), _ISA_LEVEL, _threshold_changes


@memoized(state=planning_state)
def plan_conv(geom: V.ConvGeometry, algorithm: str, passes=("forward",),
              channels_last: bool = False, kept_weights: bool = False) -> ConvPlan:
    """The plan for the given passes ("forward", "x", "weight", "bias") of a
    validated conv (algorithm already checked by _validation.conv_algorithm).
    channels_last: the activations are (N, *spatial, C); the passes that the
    channels-last kernels run say so (layout "channels_last"), the others
    run the channels-first plan between layout copies. kept_weights: the
    caller keeps the kernel's packed (or transformed) weights from call to
    call (a fused layer), so Winograd's weight transform is paid once.
    Depthwise convolutions run on their own channels-last kernels then
    (the caller checked depthwise_native_last)."""
    dtype = np.dtype(geom.dtype)
    tiles = _conv.kernel_tiles(dtype)
    macs = conv_macs(geom)
    threads = conv_threads(macs)
    plans = {}
    base = geom
    for gradient in passes:
        if (gradient == "forward" and channels_last
                and (nhwc_winograd_wins(geom, algorithm) if kept_weights
                     else nhwc_winograd_fresh_wins(geom, algorithm))):
            cfg = _nhwc.winograd_configure(geom, threads)
            plans["forward"] = PassPlan("winograd", "nhwc_winograd", "channels_last", threads,
                                        cfg.tiles, False, cfg.workspace_bytes, 2 * macs,
                                        config=cfg)
            continue
        if gradient == "forward" and channels_last and nhwc_direct_wins(geom, algorithm):
            view = _nhwc.kernel_view(geom)
            cfg = _nhwc.configure(view, threads)
            plans["forward"] = PassPlan("direct", "nhwc_direct", "channels_last", threads, 0,
                                        False, cfg.workspace_bytes, 2 * macs, config=cfg)
            continue
        if channels_last and nhwc_backward_wins(base, algorithm, gradient):
            plans[gradient] = _nhwc_backward_pass(base, gradient, threads, macs, algorithm)
            continue
        if gradient == "weight" and not channels_last and nhwc_weight_copies_win(base, algorithm):
            p = _nhwc_backward_pass(base, gradient, threads, macs, algorithm)
            copies = (math.prod(base.x5_shape) + math.prod(base.out5_shape)) * dtype.itemsize
            plans[gradient] = p._replace(layout="channels_last_copies",
                                         workspace_bytes=p.workspace_bytes + copies)
            continue
        # A non-zero padding mode's input gradient is that of the convolution
        # of the padded input (folded back onto the input by the caller):
        # planned, and run, on that geometry.
        geom = base.padded_input if gradient == "x" and base.pad_mode != "zeros" else base
        full_window = is_full_window(geom, algorithm)
        if gradient == "bias":
            plans["bias"] = PassPlan("direct", "channel_sum", "images", threads, 0, False, 0,
                                     geom.batch * geom.out_channels * math.prod(geom.out_size))
            continue
        chosen = choose_conv_algorithm(geom, gradient) if algorithm == "auto" else algorithm
        if full_window:
            chosen, layout = "1x1", "batch_as_pixels"
        elif _stacks(geom, algorithm, chosen, threads, gradient):
            layout = "depth_stacked"
        else:
            layout = "images"
        s = _driver_shape(geom, layout)
        P = math.prod(s.out_size)
        R = s.C * math.prod(s.kernel)
        tile, in_place = 0, False
        # The GEMMs' items are (image, group, column tile): batch-1 layers with
        # few output positions need narrower tiles to give every thread one.
        # ResNet-18 batch 1, (1,256,14,14)->512 1x1 s2: one 64-column tile,
        # 0.25 ms on 1 and 2 threads.
        min_tiles = -(-threads // (s.N * geom.groups)) if s.N else 1
        if chosen == "direct" and is_depthwise(geom):
            dw_threads = depthwise_threads(geom, macs)
            info = _depthwise.kernel_info(dtype)
            row = s.in_size[2] if gradient == "x" else s.out_size[2]
            copies = not channels_last and row < DEPTHWISE_ROW_VECTORS * info["vector_width"]
            last = channels_last or copies
            split = depthwise_split(s, gradient, dw_threads, info["vector_width"], last)
            arrays = depthwise_arrays(s, gradient, dw_threads, split, info, last)
            work = _bytes(arrays, dtype.itemsize)
            if copies:   # the channels-last copies of the inputs and of the result
                work += (math.prod(geom.x5_shape) + 2 * math.prod(geom.out5_shape)
                         if gradient == "weight" else
                         math.prod(geom.x5_shape) + math.prod(geom.out5_shape)) * dtype.itemsize
            plans[gradient] = PassPlan(chosen, "depthwise", "channels_last" if copies else layout,
                                       dw_threads, 0, False, work, 2 * macs, split,
                                       tuple(arrays.items()))
            continue
        if (gradient == "forward" and not channels_last and not full_window
                and nhwc_copies_win(geom, algorithm, chosen)):
            copies = (math.prod(geom.x5_shape) + math.prod(geom.out5_shape)) * dtype.itemsize
            if nhwc_winograd_fresh_wins(geom, algorithm):   # as a channels-last call would
                cfg = _nhwc.winograd_configure(geom, threads)
                plans["forward"] = PassPlan("winograd", "nhwc_winograd", "channels_last_copies",
                                            threads, cfg.tiles, False,
                                            cfg.workspace_bytes + copies, 2 * macs, config=cfg)
                continue
            cfg = _nhwc.configure(geom, threads)
            plans["forward"] = PassPlan("direct", "nhwc_direct", "channels_last_copies",
                                        threads, 0, False, cfg.workspace_bytes + copies,
                                        2 * macs, config=cfg)
            continue
        if gradient == "forward":
            kernel = _forward_kernel(s, chosen, dtype, geom.pad_mode == "zeros")
            if kernel == "gemm":
                tile = _forward_tile(P, R, tiles["gemm_nr"], min_tiles, s.N * s.groups, threads)
        elif gradient == "x":
            kernel = _input_grad_kernel(s, chosen)
            # The GEMM is also the direct kernel's fallback for NaN/inf weights.
            # Its items are column tiles only when pointwise; otherwise channel
            # chunks (_conv.input_grad_channel_chunks) give every thread work,
            # and the tiles stay as wide as the budget allows.
            tile = _gemm_tile(P, R, COLUMN_BUDGET, tiles["gemm_nr"],
                              min_tiles if _pointwise_identity(s) else 1)
        else:
            # winograd: the weight gradient stays on the exact-order kernels
            direct = chosen == "direct" or (chosen == "winograd" and not V.fits_blas(geom))
            kernel = "direct_weight" if direct else "gemm_blas"
            if kernel == "gemm_blas":
                tile = _blas_tile(P, R)
        if tile and kernel != "gemm_blas":
            in_place = s.N * ((P + tile - 1) // tile) <= IN_PLACE_TILES
        work = _bytes(work_arrays(kernel, s, threads, tile, in_place, tiles, gradient),
                      dtype.itemsize)
        if layout != "images":   # the stacked copies of the input and output / gradients
            work += (math.prod(geom.x5_shape) + math.prod(geom.out5_shape)) * dtype.itemsize
        plans[gradient] = PassPlan(chosen, kernel, layout, threads, tile, in_place, work,
                                   2 * macs)
    return ConvPlan(tuple(base.x5_shape[:2]) + tuple(base.in_size),
                    tuple(base.w5_shape[:2]) + tuple(base.kernel), base.out_shape,
                    dtype.name, MappingProxyType(plans))   # read-only: plans are cached


def native_pointwise_passes(passes: dict, geom: V.ConvGeometry, transposed=False) -> dict:
    """The passes a channels-last 1x1 convolution (conv_channels_last_native)
    runs as one GEMM over its pixel rows (_ops.pointwise) instead of
    plan_conv's channels-first plan: what explain_conv and explain_model
    show. transposed: geom is the convolution a transposed one's input
    gradient is."""
    threads = conv_threads(conv_macs(geom))
    flops = 2 * conv_macs(geom)
    out = {}
    for name, p in passes.items():
        if name == "bias":   # channel sums of the output gradient
            out[name] = PassPlan("1x1", "channel_sums_last", "channels_last", 1, 0, False, 0,
                                 math.prod(geom.x5_shape if transposed else geom.out5_shape))
        elif name == "forward" and p.kernel == "nhwc_direct":
            out[name] = p
        else:
            out[name] = PassPlan("1x1", "pointwise_rows", "channels_last", threads, 0, False, 0,
                                 flops)
    return out


# ------------------------------------------------- channels-last backward

def nhwc_backward_wins(geom: V.ConvGeometry, algorithm: str, gradient: str) -> bool:
    """Does a backward pass ("x", "weight", "bias") of a channels-last
    convolution run on the NHWC kernels (_nhwc_backward), with no layout
    copy? The bias gradient always (channel sums of grad_out's pixel rows).
    The input and weight gradients with `auto` or "direct", zero padding and
    a vector of the channels their kernel puts in the lanes: input channels
    per group for the input gradient (the forward kernel's output channels
    there), output channels per group for the weight gradient; as the
    forward rule (nhwc_direct_wins). A 1x1 convolution that
    conv_channels_last_native runs as GEMMs over pixel rows keeps them; a
    full window keeps the batch-as-pixels GEMM for its input gradient (the
    phase convolution would read mostly padding). A depthwise pass that
    depthwise_native_last runs keeps its own kernels (functional asks first)."""
    if depthwise_native_last(geom, algorithm, (gradient,)):
        return False
    if gradient == "bias":
        return True
    if conv_channels_last_native(geom, algorithm):
        return False
    if gradient == "x":
        return (nhwc_layer_ok(geom.in_channels // geom.groups, geom.pad_mode, geom.dtype)
                and algorithm in ("auto", "direct") and not is_full_window(geom, algorithm))
    return gradient == "weight" and nhwc_direct_wins(geom, algorithm)


def _nhwc_backward_pass(geom: V.ConvGeometry, gradient: str, threads: int,
                        macs: int, algorithm: str) -> PassPlan:
    if gradient == "bias":   # _conv.channel_sums_last: one thread, sums in double
        return PassPlan("direct", "channel_sum", "channels_last", 1, 0, False, 0,
                        geom.batch * geom.out_channels * math.prod(geom.out_size))
    if gradient == "x":
        flipped = _nhwc_backward.input_grad_geometry(geom)
        if flipped is not None and nhwc_winograd_fresh_wins(flipped, algorithm):
            cfg = _nhwc_backward.configure_input_grad_winograd(geom, flipped, threads)
            return PassPlan("winograd", "nhwc_winograd_x", "channels_last", threads,
                            cfg.winograd.tiles, False, cfg.workspace_bytes, 2 * macs,
                            config=cfg)
        cfg = _nhwc_backward.configure_input_grad(geom, threads)
        kernel = "nhwc_direct_x"
    elif nhwc_winograd_weight_wins(geom, algorithm):
        cfg = _nhwc_backward.configure_weight_winograd(geom, threads)
        return PassPlan("winograd", "nhwc_winograd_weight", "channels_last", threads,
                        cfg.tiles, False, cfg.workspace_bytes, 2 * macs, config=cfg)
    else:
        cfg = _nhwc_backward.configure_weight(geom, threads)
        kernel = "nhwc_weight"
    return PassPlan("direct", kernel, "channels_last", threads, 0, False, cfg.workspace_bytes,
                    2 * macs, config=cfg)



def inverted_residual_wins(ge: V.ConvGeometry, gd: V.ConvGeometry, gp: V.ConvGeometry,
                           threads: int) -> bool:
    """Does a fused channels-last inverted-residual block run as one driver
    call (cnnfast._inverted_residual) rather than layer by layer? Whenever
    the call applies: on every MobileNetV2 block at batch 1 (224x224, in the
    model, weights from memory) it ran 1.02-1.47x the layers' speed on one
    thread (the 56x56 and 112x112 blocks most) and 1.07-2.5x on two."""
    from . import _inverted_residual
    return _inverted_residual.applies(ge, gd, gp)
