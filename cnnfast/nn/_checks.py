"""The checks and small helpers the layers share: dtype and data_format
arguments, shape and dtype checks of inputs whose arithmetic is NumPy's, the
data_format part of a layer's repr."""
from __future__ import annotations

import numpy as np

from .. import _validation as V


def float_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _check_input(x, layer, ndim, channels=None, axis=1):
    """Shape/dtype checks for layers whose arithmetic is NumPy (the kernels
    check their own inputs)."""
    V.check_array(x, "x")
    if isinstance(ndim, int) and x.ndim != ndim or not isinstance(ndim, int) and x.ndim < ndim[0]:
        want = ndim if isinstance(ndim, int) else f"at least {ndim[0]}"
        raise ValueError(f"{layer} expects x with {want} dims, got shape {x.shape}")
    if channels is not None and x.shape[axis] != channels:
        raise ValueError(f"{layer} expects {channels} features on axis {axis} of x, "
                         f"got shape {x.shape}")


def _same_dtype(x, param, layer):
    # compared in native byte order: a big-endian float32 x is still float32
    if x.dtype.newbyteorder("=") != param.data.dtype.newbyteorder("="):
        raise TypeError(f"{layer}: x has dtype {x.dtype} but the layer's parameters are "
                        f"{param.data.dtype}; convert one of them (model.to(dtype) or "
                        f"x.astype(...))")


def _data_format(data_format):
    """A layer's data_format argument, validated (cnnfast._validation)."""
    V.channels_last(data_format)
    return data_format


def _format_repr(data_format):
    """The extra_repr suffix of a layer's data_format (nothing for the default)."""
    return ", data_format='channels_last'" if data_format == "channels_last" else ""


def _spatial(x, data_format):
    """The spatial sizes of x in data_format."""
    return x.shape[1:-1] if data_format == "channels_last" else x.shape[2:]
