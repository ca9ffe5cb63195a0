"""The inverted-residual block (MobileNetV2's 1x1 expansion -> depthwise ->
1x1 projection, channels-last, fused) as one driver call, as one record:
when it applies (`applies`, which _plan.inverted_residual_wins decides on),
its configuration (`configure`), its run.

Driver: _ext/_block.pyx, on the NHWC direct kernel (both 1x1 convolutions)
and the channels-last depthwise kernel. Run layer by layer, a block writes
its expanded activation (112x112x96: 4.8 MB) and the depthwise output to
memory and reads them back, and each layer splits its work over the
threads its own way, so the next layer reads half its input from the other
core's cache. The block runs the three layers band by band of output rows
instead: expanded rows in a ring (read by the depthwise kernel in place),
the band's depthwise rows in a buffer, both in L2; a work item is a run of
output rows, each thread keeps its rows through the three layers. The
weights are the layers' own packs (each FusedConv2d keeps them).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _nhwc
from . import _validation as V
from ._ext import _block

# The ring of expanded rows and the band's depthwise output together at most
# this large per thread (L2 is 2 MB a core here; the two 1x1 layers' weights,
# up to 614 KB each in MobileNetV2, stay there beside them).
BAND_BYTES = 512 * 1024
# Work items per thread when a batch has fewer images than threads: each item
# boundary expands the KH - stride rows it shares with its neighbour twice.
ITEMS_PER_THREAD = 1


class BlockConfig(NamedTuple):
    expand: _nhwc.NhwcConfig | None   # the 1x1 layers' configurations (their packing)
    project: _nhwc.NhwcConfig
    band: int                   # output rows per pass through the three layers
    ring: int                   # expanded input rows held
    rows_per_item: int          # output rows per work item
    items: int
    threads: int
    work_elements: int          # per thread
    workspace_bytes: int


def applies(ge: V.ConvGeometry | None, gd: V.ConvGeometry, gp: V.ConvGeometry) -> bool:
    """Convolutions the driver runs as one: a 1x1 stride-1 expansion (or
    none: MobileNetV2's first block), a 2-D depthwise convolution with
    multiplier 1, zero padding and dilation 1, a 1x1 stride-1 projection,
    one dtype, the 1x1 layers each on its NHWC kernel (at least
    NHWC_MIN_CHANNELS output channels)."""
    from . import _plan as P
    one = (1, 1)
    pointwise = all(g.nd == 2 and g.groups == 1 and tuple(g.kernel) == one
                    and tuple(g.stride) == one and not any(g.pad_before)
                    and not any(g.pad_after) and g.pad_mode == "zeros"
                    and P.nhwc_layer_ok(g.out_channels, g.pad_mode, g.dtype)
                    for g in (ge, gp) if g is not None)
    expand_ok = ge is None or (ge.out_channels == gd.in_channels and ge.dtype == gd.dtype
                               and tuple(gd.in_size) == tuple(ge.out_size))
    return (pointwise and expand_ok and gd.nd == 2 and P.is_depthwise(gd)
            and gd.out_channels == gd.in_channels == gp.in_channels
            and gd.pad_mode == "zeros" and all(d == 1 for d in gd.dilation)
            and tuple(gd.pad_before) == tuple(gd.pad_after) and gd.dtype == gp.dtype)


def configure(ge: V.ConvGeometry | None, gd: V.ConvGeometry, gp: V.ConvGeometry,
              threads: int) -> BlockConfig:
    itemsize = np.dtype(gd.dtype).itemsize
    (_, W), (OH, OW) = gd.in_size, gd.out_size
    (KH, KW), (sh, _) = gd.kernel, gd.stride
    E = gd.in_channels
    C = ge.in_channels if ge is not None else E
    # without an expansion there is no ring: the depthwise rows read x
    row = W * E * itemsize if ge is not None else 0
    out_row = OW * E * itemsize
    band = 1
    while band < OH and (band * sh + KH) * row + (band + 1) * out_row <= BAND_BYTES:
        band += 1
    ring = (band - 1) * sh + KH if ge is not None else 0
    per_image = 1
    if threads > 1 and gd.batch < ITEMS_PER_THREAD * threads:
        per_image = min(OH, -(-ITEMS_PER_THREAD * threads // max(1, gd.batch)))
    rows_per_item = -(-OH // per_image)
    items = gd.batch * -(-OH // rows_per_item)
    threads = max(1, min(threads, items))
    work = _block.work_elements(W, C, E, OW, KH, KW, band, ring, itemsize)
    return BlockConfig(None if ge is None else _nhwc.configure(ge, threads),
                       _nhwc.configure(gp, threads), band, ring, rows_per_item, items, threads,
                       work, (threads * work + 16) * itemsize)


def run(cfg: BlockConfig, ge: V.ConvGeometry, gd: V.ConvGeometry, gp: V.ConvGeometry, x,
        expand, depthwise, project, residual: bool, clamps):
    """The block on channels-last x (N, H, W, C): a new (N, OH, OW, K) array.
    expand, project: (packed weights, packed bias) of the 1x1 layers
    (_nhwc.pack_weights / pack_bias for cfg.expand / cfg.project; expand
    None: a block without an expansion);
    depthwise: the depthwise layer's packed weights and bias
    (_depthwise.pack_last); residual: add x (stride 1, C == K); clamps: the
    three layers' epilogues, (lo, hi) or None."""
    x = V.kernel_array(x, gd.dtype)
    out = np.empty((gp.batch,) + tuple(gp.out_size) + (gp.out_channels,), gd.dtype)
    itemsize = np.dtype(gd.dtype).itemsize
    # the work 64-byte aligned (each thread's slice is a multiple of 64
    # bytes); a fresh array, not a kept _workspace one: a recorded run
    # (cnnfast._replay) then owns it, as it owns the activations
    raw = np.empty(cfg.threads * cfg.work_elements + 64 // itemsize, gd.dtype)
    skip = (-raw.ctypes.data % 64) // itemsize
    work = raw[skip:skip + cfg.threads * cfg.work_elements]
    we, be = expand if expand is not None else (None, None)
    _block.forward(x.reshape(-1), x.shape, we, be, depthwise, project[0],
                   project[1], out.reshape(-1), out.shape, gd.in_channels, tuple(gd.kernel),
                   tuple(gd.stride), tuple(gd.pad_before),
                   cfg.expand.cchunk if cfg.expand is not None else 1,
                   cfg.project.cchunk, cfg.band, cfg.ring, cfg.rows_per_item, work,
                   cfg.work_elements, cfg.threads, residual, tuple(clamps))
    return out


def flops(ge, gd, gp) -> int:
    return sum(2 * math.prod(g.out_shape) * (g.in_channels // g.groups) * math.prod(g.kernel)
               for g in (ge, gd, gp) if g is not None)
