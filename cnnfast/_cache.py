"""Repeated calls reuse their validation and plan.

A training loop calls each layer's ops with the same shapes, dtypes and
arguments every step; the checks and the planning of a tiny call cost ten
times its kernel. `memoized` wraps the functions that validate a call and
plan it (they read only the arrays' types, shapes, dtypes and flags and the
plain arguments) with a bounded LRU cache keyed on exactly that, plus, for
the planners, the planning state (cnnfast._plan.planning_state: the kernel
thread count with OpenMP's limit, the conv policy, the ISA level and every
threshold of the planning module).

Only successful results are stored: a call with a bad argument misses (its
key is new) and raises from the full validation, every time. A value that
is not a plain int/float/str/bool/None, a tuple or list of ints and strs,
an array, a dtype or a geometry (say a numpy integer stride, or padding
pairs) makes the call uncacheable: it is validated in full, as before.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

MAXSIZE = 512   # entries per cached function (a ResNet's layers need ~40)

_PLAIN = frozenset({int, str, bool, type(None), object})  # object: argument sentinels
_GEOMETRIES: set = set()   # NamedTuple types of validated geometries (hashable, immutable)
_ARRAY = np.ndarray


def call_key(args: tuple, kwargs: dict):
    """A tuple that equals another call's only when validation treats the
    two calls alike, or None when the call cannot be cached. One entry per
    value, told apart by its first item: an array (shape, dtype, writeable:
    batch_norm updates its running statistics in place; a subclass also by
    its type); a plain value or a tuple of ints and strs (type, value: 2,
    2.0 and True are equal in a dict, only the int is valid; a float by its
    bits); a dtype or a validated geometry (type, value). One entry a value
    rather than a flat run of items: a third cheaper (1.5 against 2.2 us for
    conv2d's eleven arguments, machine under load)."""
    key = []
    add = key.append
    for v in (*args, *kwargs.values()) if kwargs else args:
        t = type(v)
        if t is _ARRAY:
            add((v.shape, v.dtype, v.flags.writeable))
        elif t in _PLAIN:
            add((t, v))
        elif t is float:   # by its bits: 0.0 == -0.0 in a dict, not in a running mean
            add((t, v.hex()))
        elif t is tuple or t is list:
            for e in v:
                if type(e) is not int and type(e) is not str:
                    return None
            add((t, tuple(v)))
        elif isinstance(v, _ARRAY):
            add((t, v.shape, v.dtype, v.flags.writeable))
        elif t in _GEOMETRIES or isinstance(v, np.dtype):
            add((t, v))
        else:
            return None
    if kwargs:
        add(tuple(kwargs))
    return tuple(key)


_caches: list = []


def memoized(fn=None, *, state=None, maxsize: int = MAXSIZE):
    """Cache fn's results by call_key, and by state() when given (a planner's
    dependencies beyond its arguments), in a bounded LRU cache."""
    if fn is None:
        return functools.partial(memoized, state=state, maxsize=maxsize)
    # functools.lru_cache is the LRU (in C, thread-safe); it sees only the
    # key, so a miss finds the call's arguments in this thread's slot.
    pending = threading.local()

    @functools.lru_cache(maxsize=maxsize)
    def lookup(key):
        args, kwargs = pending.call
        return fn(*args, **kwargs)

    @functools.wraps(fn)
    def cached(*args, **kwargs):
        key = call_key(args, kwargs)
        if key is None:
            return fn(*args, **kwargs)
        if state is not None:
            key = (key, state())
        pending.call = args, kwargs
        try:
            return lookup(key)
        finally:
            pending.call = None   # the arrays are not kept alive

    cached.cache_info = lookup.cache_info
    cached.cache_clear = lookup.cache_clear
    _caches.append(lookup)
    return cached


def geometry(cls):
    """Register a validated-geometry NamedTuple as a cache-key value."""
    _GEOMETRIES.add(cls)
    return cls


def clear() -> None:
    """Empty every cache (tests; the caches are bounded, nothing needs this)."""
    for lookup in _caches:
        lookup.cache_clear()
