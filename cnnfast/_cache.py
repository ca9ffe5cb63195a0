"""Repeated calls reuse their validation and plan.

A training loop calls each layer's ops with the same shapes, dtypes and
arguments every step; the checks and the planning of a tiny call cost ten
times its kernel. `memoized` wraps the functions that validate a call and
plan it (they read only the arrays' types, shapes, dtypes and flags and the
plain arguments) with a bounded cache keyed on exactly that, plus, for the
planners, the planning state (cnnfast._plan.planning_state: the kernel
thread count with OpenMP's limit, the conv policy and the thresholds of the
planning module).

Only successful results are stored: a call with a bad argument misses (its
key is new) and raises from the full validation, every time. A value the
key cannot hold exactly (see call_key and array_key) makes the call
uncacheable: it is validated in full, as before.

The ops' prepared calls (one lookup a repeated call, then the driver) are
memoized with `arrays=n`: their first n arguments are the arrays, the rest
plain values keyed in one marshal.dumps, and the result kept in a dict: a
hit on a tiny pooling's nine arguments costs 1.2 us against 2.4 for the
generic call_key, functools.lru_cache and a planning state holding the 30
thresholds themselves (one thread, best of 100 runs).
"""
from __future__ import annotations

import functools
import marshal
import threading
from typing import NamedTuple

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


def array_key(args: tuple, arrays: int):
    """call_key of a call whose first `arrays` arguments are arrays (or None)
    and the rest plain values, in a third of its time: the plain values in
    one marshal.dumps, which writes each value's exact type (True, 1 and
    1.0 differ; a tuple and a list too; a float by its bits) and refuses
    anything else (numpy scalars, arrays, subclasses such as an IntEnum:
    None, uncacheable). Version 2: no back-references (version 3 writes a
    value seen twice as a reference, depending on its reference count), so
    equal values give equal bytes."""
    try:
        plain = marshal.dumps(args[arrays:], 2)
    except ValueError:
        return None
    if arrays == 1 and type(args[0]) is _ARRAY:   # the common case, without the loop
        a = args[0]
        return plain, (a.shape, a.dtype, a.flags.writeable)
    key = [plain]
    for a in args[:arrays]:
        if type(a) is _ARRAY:
            key.append((a.shape, a.dtype, a.flags.writeable))
        elif a is None:
            key.append(None)
        elif isinstance(a, _ARRAY):
            key.append((type(a), a.shape, a.dtype, a.flags.writeable))
        else:
            return None
    return tuple(key)


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    maxsize: int
    currsize: int


_MISSING = object()
_caches: list = []


class _Memo:
    """fn's results by key, at most maxsize of them: a dict (a hit is one
    lookup; hits and misses are counted without a lock, so they may drift
    under threads). When full, the oldest entry goes (first in, first out:
    an LRU's reordering costs every hit, and a loop over fewer than maxsize
    calls never evicts)."""

    def __init__(self, fn, state, arrays, maxsize):
        self.fn, self.state, self.arrays, self.maxsize = fn, state, arrays, maxsize
        self.entries: dict = {}
        self.hits = self.misses = 0
        self._lock = threading.Lock()   # eviction: a dict changed while iterated raises

    def __call__(self, *args, **kwargs):
        if self.arrays is not None and not kwargs:
            key = array_key(args, self.arrays)
        else:
            key = call_key(args, kwargs)
        if key is None:
            return self.fn(*args, **kwargs)
        if self.state is not None:
            key = (key, self.state())
        result = self.entries.get(key, _MISSING)
        if result is not _MISSING:
            self.hits += 1
            return result
        result = self.fn(*args, **kwargs)
        self.misses += 1
        with self._lock:
            entries = self.entries
            while len(entries) >= self.maxsize:
                del entries[next(iter(entries))]
            entries[key] = result
        return result

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses, self.maxsize, len(self.entries))

    def cache_clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.hits = self.misses = 0


def memoized(fn=None, *, state=None, arrays: int | None = None, maxsize: int = MAXSIZE):
    """Cache fn's results by call_key (arrays=n: by array_key, the first n
    arguments being the arrays), and by state() when given (a planner's
    dependencies beyond its arguments), in a bounded cache."""
    if fn is None:
        return functools.partial(memoized, state=state, arrays=arrays, maxsize=maxsize)
    memo = functools.update_wrapper(_Memo(fn, state, arrays, maxsize), fn)
    _caches.append(memo)
    return memo


def geometry(cls):
    """Register a validated-geometry NamedTuple as a cache-key value."""
    _GEOMETRIES.add(cls)
    return cls


def clear() -> None:
    """Empty every cache (tests; the caches are bounded, nothing needs this)."""
    for memo in _caches:
        memo.cache_clear()
