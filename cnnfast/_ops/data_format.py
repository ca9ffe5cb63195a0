"""Channels-first (N, C, *spatial) <-> channels-last (N, *spatial, C): the
views that validation reads and the blocked copies the ops make between the
two layouts (cnnfast._ext._layout)."""
from __future__ import annotations

import numpy as np

from .. import _plan as P
from .. import _validation as V
from .._ext import _layout


_SWAPPABLE = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64))
_FLOATS = _SWAPPABLE[:2]


def _first_view(a):
    """A channels-last array (N, *spatial, C) seen as channels-first
    (N, C, *spatial): a view, for validation (anything else passes through
    and validation judges it)."""
    return np.moveaxis(a, -1, 1) if isinstance(a, np.ndarray) and a.ndim >= 3 else a


def _shape_first(shape: tuple) -> tuple:
    return (shape[0], shape[-1]) + tuple(shape[1:-1])


def _shape_last(shape: tuple) -> tuple:
    return (shape[0],) + tuple(shape[2:]) + (shape[1],)


def _to_first(a):
    """A channels-last array as a new C-contiguous channels-first one, by the
    blocked copy (native float32/float64/int64; a non-contiguous one is made
    contiguous first); other arrays as
    _first_view (validation rejects or converts them)."""
    if not isinstance(a, np.ndarray) or a.ndim < 3 or a.dtype not in _SWAPPABLE or not a.size:
        return _first_view(a)
    n, c = a.shape[0], a.shape[-1]
    if c == 1 or a.size == n * c:  # one channel or one position: the same memory order
        return _first_view(a)
    out = np.empty(_shape_first(a.shape), a.dtype)
    _layout.swap_axes(V.kernel_array(a, a.dtype).reshape(n, -1, c), out.reshape(n, c, -1),
                      P.copy_threads(a.size))
    return out


def _to_last(a):
    """A channels-first result (N, C, *spatial), C-contiguous, as a new
    C-contiguous channels-last array; None and (N, C) arrays unchanged."""
    if a is None or a.ndim < 3:
        return a
    n, c = a.shape[:2]
    if c == 1 or a.size == n * c:  # the same memory order: a reshape of the new result
        return a.reshape(_shape_last(a.shape))
    out = np.empty(_shape_last(a.shape), a.dtype)
    if a.size:
        _layout.swap_axes(a.reshape(n, c, -1), out.reshape(n, -1, c), P.copy_threads(a.size))
    return out


def _concat(parts, axis: int):
    """np.concatenate(parts, axis) of activations, e.g. GoogLeNet's branches
    on channels: for C-contiguous float32/float64 arrays one row copy per part
    (_layout.copy_rows, on cnnfast's threads, and a driver call that a
    fused model's recorded run replays, cnnfast._replay); anything else, or
    mismatched parts, goes to NumPy (and its errors)."""
    first = parts[0] if parts else None
    if (not isinstance(first, np.ndarray) or first.dtype not in _FLOATS
            or not -first.ndim <= axis < first.ndim
            or not all(type(p) is np.ndarray and p.flags.c_contiguous and p.dtype == first.dtype
                       and p.ndim == first.ndim
                       and p.shape[:axis % p.ndim] == first.shape[:axis % p.ndim]
                       and p.shape[axis % p.ndim + 1:] == first.shape[axis % p.ndim + 1:]
                       for p in parts)):
        return np.concatenate(parts, axis=axis)
    axis %= first.ndim
    shape = list(first.shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    out = np.empty(shape, first.dtype)
    rows = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    if out.size:
        flat = out.reshape(rows, -1)
        start = 0
        for p in parts:
            width = p.shape[axis] * inner
            _layout.copy_rows(p.reshape(rows, width), flat, start, P.copy_threads(p.size))
            start += width
    return out
