"""A fused model's run, recorded once per input signature and replayed.

A fused model's forward walks 60-190 layers of Python (module calls,
validation, plan lookups, allocation) around its kernels. Between two kernels
that stream megabytes, the interpreter's own working set has left the caches,
so a layer's 15 us of Python costs 30-100 us inside a model: MobileNetV2 at
batch 1 spent 29% of its run in the interpreter (perf, one thread), and no
thread helps with it. onnxruntime runs a static plan from C++.

So an InferenceModel records, at its second call with an input signature
(shape, dtype, strides, and the planning state: threads, policy, ISA), the
calls its layers make into the compiled drivers (`cnnfast._ext`), with the
arrays they were handed, and later calls replay that list: one Python call
per kernel. The first call is left alone because it packs weights and fills
the plan caches, work that later calls do not repeat.

What makes replaying sound:
- Every computation of a recorded run happens inside a driver call, or the
  recording is refused. A recording is checked before it is used: on a
  second input, the normal run and the replay must agree bit for bit (a
  value computed outside the recorded calls would be stale there).
- The model's own input reaches the drivers only as views of the caller's
  array; those views are rebuilt on each caller's array.
- Intermediate arrays (the activations ops allocated with np.empty while
  recording) are laid out again on shared buffers by their live ranges, as
  onnxruntime's memory planner does: a replay holds about what one normal
  run holds at its peak, not every activation at once.
- A driver whose result steers its caller (Winograd refusing a non-finite
  input) must return what it returned while recording, or the call is run
  again the normal way.
- The model must not have changed: replacing a parameter's array, a module
  or any public attribute (load_state_dict, replace_head) bumps
  `nn.module.mutations`, and the model is compared against its recorded
  state before replaying.
- One replay at a time per recording (it owns its buffers); a concurrent
  call from another thread runs the normal way.

CNNFAST_REPLAY=0 in the environment turns replaying off.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ._ext import _block, _conv, _conv_nhwc, _dense, _depthwise, _elementwise, _layout, _pool
from ._threads import blas_pinned

_DRIVER_MODULES = (_block, _conv, _conv_nhwc, _dense, _depthwise, _elementwise, _layout, _pool)
MAX_RECORDINGS = 4   # input signatures kept per model
_RESULT_TYPES = (type(None), bool, int, float)   # results a replay can compare

_record_lock = threading.Lock()   # one recording at a time: it patches module attributes
_recording = None                 # the _Recorder of the run being recorded, if any


def recorder():
    """The recorder of the run being recorded in this thread, if any."""
    rec = _recording
    return rec if rec is not None and rec.thread == threading.get_ident() else None


def step(fn, *args):
    """fn(*args) as a step of a recorded run: for layers computing in NumPy
    outside the drivers (Tanh: np.tanh(x, out)), with their output array
    among args. Outside a recording, just the call."""
    rec = _recording
    if rec is None:
        return fn(*args)
    return rec.wrap(fn)(*args)


def enabled() -> bool:
    return os.environ.get("CNNFAST_REPLAY", "").strip() != "0"


class Refused(Exception):
    """A run that cannot be replayed (a driver returned an array, say)."""


class _Recorder:
    """The driver calls of one thread's run: (function, args, result)."""

    def __init__(self):
        self.thread = threading.get_ident()
        self.calls = []
        self.owners = []        # per call: self.owner when it was made
        self.depth = 0          # drivers calling drivers: only the outermost call counts
        self.allocated = {}     # id -> array: what np.empty gave out during the run
        self.refused = None
        self.owner = None       # who makes the calls now: set by the owner's tracer

    def wrap(self, fn):
        def recorded(*args, **kwargs):
            if threading.get_ident() != self.thread or self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            try:
                result = fn(*args, **kwargs)
            finally:
                self.depth -= 1
            if kwargs:
                self.refused = self.refused or f"{fn.__name__} called with keywords"
            self.calls.append((fn, args, result))
            self.owners.append(self.owner)
            return result
        return recorded

    def wrap_empty(self, empty):
        def recorded_empty(*args, **kwargs):
            a = empty(*args, **kwargs)
            if threading.get_ident() == self.thread:
                self.allocated[id(a)] = a
            return a
        return recorded_empty


def record(run, x):
    """run(x) with every driver call recorded: (its result, the recorder)."""
    rec = _Recorder()
    with _record_lock:
        saved = []
        try:
            for mod in _DRIVER_MODULES:
                for name, fn in list(vars(mod).items()):
                    if (not name.startswith("_") and callable(fn)
                            and getattr(fn, "__module__", None) == mod.__name__):
                        saved.append((mod, name, fn))
                        setattr(mod, name, rec.wrap(fn))
            saved.append((np, "empty", np.empty))
            np.empty = rec.wrap_empty(np.empty)
            global _recording
            _recording = rec
            y = run(x)
        finally:
            _recording = None
            for mod, name, fn in reversed(saved):
                setattr(mod, name, fn)
    return y, rec


def _comparable(result) -> bool:
    """A result a replay can compare with the recorded one (a query's
    tuple of numbers, a flag)."""
    if isinstance(result, tuple):
        return all(isinstance(r, _RESULT_TYPES) for r in result)
    return isinstance(result, _RESULT_TYPES)


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _address(a) -> int:
    return a.__array_interface__["data"][0]


class _View:
    """How to rebuild an array argument on another buffer: its dtype, shape,
    strides and byte offset."""

    __slots__ = ("dtype", "shape", "strides", "offset", "writeable")

    def __init__(self, a, base):
        self.dtype, self.shape, self.strides = a.dtype, a.shape, a.strides
        self.offset = _address(a) - _address(base)
        self.writeable = a.flags.writeable

    def on(self, buffer):
        v = np.ndarray(self.shape, self.dtype, buffer, self.offset, self.strides)
        if not self.writeable:
            v.flags.writeable = False
        return v


def _is_array(a) -> bool:
    return type(a) is np.ndarray


class Recording:
    """A replayable run: the driver calls with their arguments, the
    activations on shared buffers, the input's views rebuilt per call."""

    def __init__(self, rec, x, y):
        if rec.refused:
            raise Refused(rec.refused)
        if not _is_array(y) or not rec.calls:
            raise Refused("the run returned no array or called no kernel")
        self.state, self.mutations = None, None   # the model's, set by its owner
        self.choice = ThreadChoice()   # for a many-thread recording: its twin
        self.lock = threading.Lock()
        x_root, y_root = _root(x), _root(y)
        # live ranges of the activation buffers (first, last call using them)
        live = {}
        for i, (_, args, _) in enumerate(rec.calls):
            for a in _arrays(args):
                r = _root(a)
                if id(r) in rec.allocated:
                    first, _ = live.get(id(r), (i, i))
                    live[id(r)] = (first, i)
        buffers = _share_buffers({r: span for r, span in live.items() if r != id(y_root)},
                                 rec.allocated)
        calls, self.checks = [], []
        for i, (fn, args, result) in enumerate(rec.calls):
            inputs = []        # argument positions holding views of the input
            checks = []        # positions of activations this call uses last
            new_args = list(args)
            for k, a in enumerate(args):
                if not _is_array(a):
                    if isinstance(a, (tuple, list)) and any(map(_is_array, a)):
                        raise Refused(f"{fn.__name__} takes arrays in a {type(a).__name__}")
                    continue
                r = _root(a)
                if r is x_root:   # a view of the caller's x: rebuilt on each call's x
                    view = _View(a, x)
                    if view.offset < 0 or view.offset + a.nbytes > x.nbytes:
                        raise Refused(f"{fn.__name__} reads outside the input")
                    inputs.append((k, view))
                    new_args[k] = None
                elif id(r) in buffers:
                    new_args[k] = _View(a, r).on(buffers[id(r)])
                if id(r) in live and live[id(r)][1] == i and live[id(r)][0] < i:
                    checks.append(k)   # (a scratch array lives in one call: not checked)
            returns_arg = _is_array(result)
            if returns_arg:
                if not any(result is a for a in args):
                    raise Refused(f"{fn.__name__} returned a new array")
            elif not _comparable(result):
                raise Refused(f"{fn.__name__} returned a {type(result).__name__}")
            calls.append((fn, new_args, tuple(inputs), result, returns_arg))
            self.checks.append(checks)
        self.calls = calls
        self.owners = rec.owners
        self.output = y   # y_root is never shared: it is what the last calls write

    def verify(self, rec, x) -> bool:
        """Whether replaying on x agrees with `rec`, a recorded normal run on
        x, call by call: the same drivers with the same plain arguments, and
        each activation, right after the call that uses it last, holding
        what the normal run left in it (a value computed outside the
        recorded calls, or a buffer shared too early, would differ; the
        output of each, in the end, by the next one's check or the model's
        output)."""
        if len(rec.calls) != len(self.calls) or rec.refused:
            return False
        with blas_pinned:
            for (fn, args, inputs, expected, returns_arg), checks, (fn2, args2, _) in zip(
                    self.calls, self.checks, rec.calls):
                if fn is not fn2 or len(args) != len(args2):
                    return False
                args = list(args)
                for k, view in inputs:
                    args[k] = view.on(x)
                for a, b in zip(args, args2):
                    if not _is_array(a) and not _is_array(b) and (
                            type(a) is not type(b) or a != b):
                        return False
                result = fn(*args)
                if not returns_arg and result is not expected and result != expected:
                    return False
                for k in checks:
                    if not (_is_array(args2[k]) and args[k].shape == args2[k].shape
                            and args[k].tobytes() == args2[k].tobytes()):
                        return False
        return True

    def single_threaded(self):
        """This recording with every driver's thread count (its `nthreads`
        or `threads` argument) set to 1: the same configuration (tiles,
        chunks, so the same sums in the same order) on one thread. It shares
        this recording's buffers, and so its lock."""
        twin = object.__new__(Recording)   # (copy.copy would meet __reduce__)
        twin.__dict__.update(self.__dict__)
        twin.calls = []
        for fn, args, inputs, expected, returns_arg in self.calls:
            code = getattr(fn, "__code__", None)
            names = code.co_varnames[:code.co_argcount] if code is not None else ()
            args = [1 if k < len(names) and names[k] in ("nthreads", "threads")
                    and type(a) is int else a for k, a in enumerate(args)]
            twin.calls.append((fn, args, inputs, expected, returns_arg))
        twin.choice = None
        return twin

    def __reduce__(self):   # a copied or pickled model records its runs again
        return (_forgotten, ())

    def run(self, x):
        """The recorded run on x (same signature), a fresh output array; or
        None when a driver's result differs from the recording's (run the
        model the normal way then)."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            with blas_pinned:   # as the ops that call BLAS from a driver run it
                return self._run(x)
        finally:
            self.lock.release()

    def timed_run(self, x, clock):
        """Seconds (by clock()) of each recorded call of a replay on x, or
        None when it cannot replay now (as run)."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            times = []
            with blas_pinned:
                for fn, args, inputs, _, _ in self.calls:
                    if inputs:
                        args = list(args)
                        for k, view in inputs:
                            args[k] = view.on(x)
                    t0 = clock()
                    fn(*args)
                    times.append(clock() - t0)
            return times
        finally:
            self.lock.release()

    def _run(self, x):
        for fn, args, inputs, expected, returns_arg in self.calls:
            if inputs:
                args = list(args)
                for k, view in inputs:
                    args[k] = view.on(x)
            result = fn(*args)
            if returns_arg:
                continue
            if result is not expected and result != expected:
                return None
        return self.output.copy()


class ThreadChoice:
    """Which of two recordings of one input to replay: the one made at the
    thread count in force (`many`), or its one-thread twin.

    With another process busy on a core, every parallel region waits at its
    end for the thread the OS descheduled: ResNet-18 at batch 1 took 48 ms on
    two threads against 40 on one under the same load (issue 23). So each
    replay is timed, and its threads' use of the CPU measured (process CPU
    time over wall time x threads: busy or spinning threads count, a thread
    waiting for a core does not). While the many-thread run keeps within
    SLOWER of its best time and its threads on the CPU nothing else runs (a
    quiet machine pays nothing); after STREAK runs in a row that are slower
    or starved the twin is tried, then the faster of the two by moving
    averages runs and the other is tried every PROBE-th call (every
    QUIET_PROBE-th while the many-thread run wins, about 1% of a quiet run's
    time), so the choice follows the load both ways. The CPU share catches a model that started
    under load, whose best time is a loaded one (ResNet-18 batch 1 on two
    threads with one other process busy: 66 ms at a share of 0.49, one
    thread about 25). A twin is used only where it gives the same output bit
    for bit (checked on the verification input), so which one ran never
    shows."""

    SLOWER = 1.3   # slower than the best many-thread time by this: loaded
    STARVED = 0.7  # a CPU share below this: threads waiting for a core
    STREAK = 3     # that many runs in a row before the twin is tried
    FIRST = 3      # the twin's first try, in any case: a model started under a steady
                   # load has a loaded best time and its threads' share may look normal
                   # (one process spinning: ResNet-18 b1, two threads, 65 ms; one, 23)
    QUIET_PROBE = 64   # while the many-thread run wins, the twin is re-tried this rarely
    PROBE = 16     # the slower variant runs every PROBE-th call
    AVERAGE = 0.3  # weight of a new time in the moving averages

    def __init__(self):
        self.twin = None        # the one-thread Recording; False: none can serve
        self.best = float("inf")
        self.average = {False: None, True: None}   # twin? -> seconds
        self.streak = 0
        self.calls = 0

    def wants_twin(self) -> bool:
        if self.twin is False:
            return False
        self.calls += 1
        many, twin = self.average[False], self.average[True]
        if twin is None:   # tried once early, or as soon as the many-thread run slows down
            return self.calls >= self.FIRST or self.streak >= self.STREAK
        probe = self.calls % self.PROBE == 0
        if many is not None and twin < many:
            return not probe
        return probe and (self.streak >= self.STREAK or self.calls % self.QUIET_PROBE == 0)

    def report(self, twin: bool, seconds: float, share: float = 1.0) -> None:
        """A replay's wall time and, for the many-thread one, its CPU share."""
        old = self.average[twin]
        self.average[twin] = seconds if old is None else (
            (1 - self.AVERAGE) * old + self.AVERAGE * seconds)
        if not twin:
            self.best = min(self.best, seconds)
            loaded = seconds > self.SLOWER * self.best or share < self.STARVED
            self.streak = self.streak + 1 if loaded else 0


def _forgotten():
    return None


def _arrays(args):
    for a in args:
        if _is_array(a):
            yield a


def _share_buffers(live, allocated):
    """id(root) -> a byte buffer for it; roots whose live ranges do not
    overlap share one (greedy by first use, the smallest free buffer that
    fits, as a linear-scan register allocator)."""
    free = []   # [nbytes, buffer] no longer in use
    busy = []   # [last use, nbytes, buffer]
    out = {}
    for rid in sorted(live, key=lambda r: live[r][0]):
        first, last = live[rid]
        free += [[n, b] for end, n, b in busy if end < first]
        busy = [t for t in busy if t[0] >= first]
        need = allocated[rid].nbytes
        fits = [i for i, (n, _) in enumerate(free) if n >= need]
        if fits:
            nbytes, buf = free.pop(min(fits, key=lambda i: free[i][0]))
        else:
            nbytes, buf = need, np.empty(max(need, 1), np.uint8)
        out[rid] = buf
        busy.append([last, nbytes, buf])
    return out
