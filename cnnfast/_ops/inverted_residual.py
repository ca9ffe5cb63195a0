"""A fused inverted-residual block's forward on channels-last activations
as one driver call (cnnfast._inverted_residual), when the plan runs it so;
the block's layers otherwise (models.mobilenet.FusedInvertedResidual)."""
from __future__ import annotations

import numpy as np

from .. import _inverted_residual as IR
from .. import _nhwc
from .. import _plan as P
from .._validation import ghost
from .conv import _packed
from .conv_passes import _bias_array
from .conv_validation import conv_geometry, conv_residual
from .data_format import _first_view
from .depthwise import _depthwise_pack


def block_geometries(x, expand, depthwise, project):
    """The layers' geometries on channels-last x (each validated as the
    layer validates its input); expand None (no expansion): None for it."""
    geoms, a = [], _first_view(x)
    for m in (expand, depthwise, project):
        if m is None:
            geoms.append(None)
            continue
        g = conv_geometry(2, a, m.weight.data, m.bias.data, m.stride, m.padding, m.dilation,
                          m.groups, padding_mode=m.padding_mode)
        geoms.append(g)
        # what the next layer's validation sees: a zero-stride stand-in
        a = ghost((g.batch, g.out_channels) + tuple(g.out_size), g.dtype)
    return tuple(geoms)


def block_plan(x, expand, depthwise, project, residual):
    """(geometries, BlockConfig) when the block runs as one call on x, else
    None. The layers are FusedConv2d, channels-last."""
    if not (isinstance(x, np.ndarray) and x.ndim == 4):
        return None
    ge, gd, gp = block_geometries(x, expand, depthwise, project)
    if residual:
        conv_residual(_first_view(x), gp)
    threads = P.conv_threads(IR.flops(ge, gd, gp) // 2)
    if not P.inverted_residual_wins(ge, gd, gp, threads):
        return None
    return (ge, gd, gp), IR.configure(ge, gd, gp, threads)


def block_forward_last(x, expand, depthwise, project, residual, plan):
    """project(depthwise(expand(x))) (+ x when residual; expand None: no
    expansion), with each layer's folded bias and clamp, as the layers
    compute it (bit for bit)."""
    (ge, gd, gp), cfg = plan

    def pointwise(m, geom, c):
        return _packed(m._packed, ("direct", c.group_stride, c.block), m.weight.data,
                       m.bias.data, lambda: (*_nhwc.pack_weights(m.weight.data, geom, c),
                                             _nhwc.pack_bias(m.bias.data, geom, c)))

    e = None if expand is None else pointwise(expand, ge, cfg.expand)
    wp, _, bp = pointwise(project, gp, cfg.project)
    wd = _packed(depthwise._packed, ("depthwise", np.dtype(gd.dtype).str),
                 depthwise.weight.data, depthwise.bias.data,
                 lambda: _depthwise_pack(gd, depthwise.weight.data,
                                         _bias_array(depthwise.bias.data, gd.dtype)))
    return IR.run(cfg, ge, gd, gp, x, None if e is None else (e[0], e[2]), wd, (wp, bp),
                  residual, (None if expand is None else expand.clamp, depthwise.clamp,
                             project.clamp))
