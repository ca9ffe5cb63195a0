"""Concurrency: the kernels take raw pointers into user arrays with the GIL
released, so Python threads can call them at once.

* many Python threads, started together on a barrier, calling conv (every
  algorithm, forward and backward, 1-D/2-D/3-D) and pooling (every family,
  forward and backward) on shared inputs get the bits a serial call gets, and
  the shared inputs stay untouched;
* the process-wide thread count changed by another thread while kernels run:
  every result is the one of some thread count (bit for bit), nothing crashes;
* fork after the kernels ran on 2 OpenMP threads (GNU libgomp cannot be used
  in the child, GCC bug 60035): the child runs them serially, under a timeout
  so a deadlock fails the test instead of hanging it -- also when another
  thread of the parent was inside a kernel at the fork;
* the GIL is released: while one thread is inside a long kernel, another
  thread runs Python code (a progress assertion, not a timing one).
"""
import multiprocessing
import sys
import threading

import numpy as np
import pytest
from layouts import check_unmodified, snapshot

import cnnfast
from cnnfast import _threads

DTYPES = [np.float32, np.float64]


@pytest.fixture
def restore_threads():
    before = cnnfast.get_num_threads()
    yield before
    cnnfast.set_num_threads(before)


def bits(a):
    """The raw bytes of a result (None for a gradient not asked for), so NaNs and
    -0.0 compare exactly."""
    return None if a is None else (a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes())


def as_bits(result):
    return [bits(r) for r in (result if isinstance(result, tuple) else (result,))]


def _calls(dtype, seed=0):
    """(name, function, kwargs) of a mix of every kernel family, forward and
    backward; small shapes (the conftest runs even these on all threads)."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x2, w2, b2 = r(2, 6, 13, 12), r(8, 3, 3, 3), r(8)
    x1, w1 = r(3, 4, 21), r(6, 4, 3)
    x3, w3 = r(2, 2, 5, 6, 7), r(4, 2, 2, 3, 2)
    p2, p1, p3 = r(2, 3, 11, 13), r(2, 3, 17), r(2, 2, 5, 6, 7)
    calls = []
    conv2 = dict(stride=(2, 1), padding=1, groups=2)
    go2 = r(*cnnfast.reference.conv2d(x2, w2, **conv2).shape)
    for alg in ("direct", "im2col", "auto"):
        calls.append((f"conv2d-{alg}", cnnfast.conv2d,
                      dict(x=x2, weight=w2, bias=b2, **conv2, algorithm=alg)))
        calls.append((f"conv2d_backward-{alg}", cnnfast.conv2d_backward,
                      dict(grad_out=go2, x=x2, weight=w2, **conv2, algorithm=alg)))
    w11 = r(5, 6, 1, 1)
    calls.append(("conv2d-1x1", cnnfast.conv2d, dict(x=x2, weight=w11, algorithm="1x1")))
    calls.append(("conv2d_backward-1x1", cnnfast.conv2d_backward,
                  dict(grad_out=r(2, 5, 13, 12), x=x2, weight=w11, algorithm="1x1")))
    calls.append(("conv1d", cnnfast.conv1d, dict(x=x1, weight=w1, padding="same",
                                                 dilation=2)))
    calls.append(("conv1d_backward", cnnfast.conv1d_backward,
                  dict(grad_out=r(3, 6, 21), x=x1, weight=w1, padding="same", dilation=2)))
    calls.append(("conv3d", cnnfast.conv3d, dict(x=x3, weight=w3, padding=1)))
    calls.append(("conv3d_backward", cnnfast.conv3d_backward,
                  dict(grad_out=r(2, 4, 6, 6, 8), x=x3, weight=w3, padding=1)))
    pools = [("max_pool2d", p2, dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
             ("max_pool1d", p1, dict(kernel_size=4, stride=3, dilation=2,
                                     return_indices=True)),
             ("max_pool3d", p3, dict(kernel_size=2, ceil_mode=True, return_indices=True)),
             ("avg_pool2d", p2, dict(kernel_size=(3, 2), padding=1, ceil_mode=True)),
             ("avg_pool1d", p1, dict(kernel_size=3, count_include_pad=False, padding=1)),
             ("avg_pool3d", p3, dict(kernel_size=2, stride=1, divisor_override=3)),
             ("adaptive_max_pool2d", p2, dict(output_size=(4, 5), return_indices=True)),
             ("adaptive_avg_pool2d", p2, dict(output_size=(3, 7))),
             ("global_max_pool2d", p2, dict(return_indices=True)),
             ("global_avg_pool2d", p2, dict())]
    for name, x, kw in pools:
        op = getattr(cnnfast, name)
        calls.append((name, op, dict(x=x, **kw)))
        back = getattr(cnnfast, name + "_backward")
        out = op(x, **kw)
        if isinstance(out, tuple):
            y, idx = out
            calls.append((name + "_backward", back,
                          dict(grad_out=r(*y.shape), indices=idx, input_shape=x.shape)))
        else:
            rest = {k: v for k, v in kw.items() if k != "output_size"}
            calls.append((name + "_backward", back,
                          dict(grad_out=r(*out.shape), input_shape=x.shape, **rest)))
    # batch norm, ReLU and the fused convolution's epilogue (issue 15)
    xb, gb, cb = r(4, 6, 5, 7), r(4, 6, 5, 7), r(6)
    rv = np.abs(r(6)) + 0.5
    calls.append(("batch_norm-eval", cnnfast.batch_norm,
                  dict(x=xb, running_mean=cb, running_var=rv, weight=r(6), bias=r(6))))
    calls.append(("batch_norm-train", cnnfast.batch_norm,
                  dict(x=xb, running_mean=None, running_var=None, training=True)))
    calls.append(("batch_norm_backward", cnnfast.batch_norm_backward,
                  dict(grad_out=gb, x=xb, weight=r(6), mean=cb, invstd=rv)))
    calls.append(("relu", cnnfast.relu, dict(x=xb)))
    calls.append(("relu_backward", cnnfast.relu_backward, dict(grad_out=gb, y=xb)))
    calls.append(("conv2d-fused", cnnfast._ops.conv._conv_forward_fused,
                  dict(nd=2, x=x2, weight=r(16, 6, 3, 3), bias=r(16), stride=1, padding=1,
                       dilation=1, groups=1, clamp=True, residual=r(2, 16, 13, 12))))
    return calls


def _arrays(calls):
    return [v for _, _, kw in calls for v in kw.values() if isinstance(v, np.ndarray)]


def _run_together(workers, work, timeout=300):
    """Start `workers` threads on a barrier; -> the failures they report."""
    barrier = threading.Barrier(workers)
    failures = []

    def body(i):
        try:
            barrier.wait(timeout=60)
            work(i, failures)
        except Exception as error:  # noqa: BLE001 -- reported by the test
            failures.append((i, repr(error)))

    threads = [threading.Thread(target=body, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return failures


# ------------------------------------------------- Python threads at once

@pytest.mark.parametrize("kernel_threads", [1, 2])
def test_many_python_threads_at_once(kernel_threads, restore_threads):
    """8 Python threads, each running every call (both dtypes) in its own
    order, 3 rounds: every result has the bits of the serial call."""
    cnnfast.set_num_threads(kernel_threads)
    calls = _calls(np.float32) + _calls(np.float64, seed=1)
    expected = [as_bits(op(**kw)) for _, op, kw in calls]
    keep = snapshot(_arrays(calls))

    def work(worker, failures):
        order = np.random.default_rng(worker).permutation(len(calls))
        for r in range(3):
            for i in order:
                name, op, kw = calls[i]
                if as_bits(op(**kw)) != expected[i]:
                    failures.append((worker, r, name))

    assert _run_together(8, work) == []
    check_unmodified(keep)


def test_thread_count_changed_while_kernels_run(restore_threads):
    """One thread keeps switching the process-wide count between 1, 2 and 3
    while 4 threads run kernels: each result equals, bit for bit, the result
    for one of those counts (im2col's weight gradient sums per-thread partials,
    so its bits depend on the count; everything else does not)."""
    calls = [c for c in _calls(np.float32, seed=2)
             if c[0].startswith(("conv2d", "conv3d", "max_pool2d", "avg_pool3d"))]
    allowed = []
    for _, op, kw in calls:
        per_count = set()
        for n in (1, 2, 3):
            with cnnfast.num_threads(n):
                per_count.add(tuple(map(str, as_bits(op(**kw)))))
        allowed.append(per_count)
    stop = threading.Event()

    def switch():
        counts = [1, 2, 3, 2]
        i = 0
        while not stop.is_set():
            cnnfast.set_num_threads(counts[i % len(counts)])
            i += 1
            stop.wait(0.0005)

    switcher = threading.Thread(target=switch)
    switcher.start()
    try:
        def work(worker, failures):
            for r in range(4):
                for (name, op, kw), ok in zip(calls, allowed):
                    if tuple(map(str, as_bits(op(**kw)))) not in ok:
                        failures.append((worker, r, name))

        failures = _run_together(4, work)
    finally:
        stop.set()
        switcher.join()
    assert failures == []


# ------------------------------------------------------------------- fork

def _child_results(conn):
    """In the forked child: the thread count it reports, and every call's bits
    (the child tries to use 2 threads; it must run serially, not hang)."""
    try:
        cnnfast.set_num_threads(2)
        calls = _calls(np.float32, seed=3)
        conn.send((cnnfast.get_num_threads(), [as_bits(op(**kw)) for _, op, kw in calls]))
    except BaseException as error:  # noqa: BLE001 -- sent to the parent
        conn.send(("error", repr(error)))
    finally:
        conn.close()


def _fork_and_collect(timeout=120):
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_results, args=(child,))
    process.start()
    child.close()
    ready = parent.poll(timeout)
    result = parent.recv() if ready else None
    process.join(10 if ready else 0)
    if process.is_alive():
        process.kill()
        process.join()
    assert ready, f"the forked child did not answer within {timeout} s (deadlock?)"
    assert process.exitcode == 0, process.exitcode
    return result


@pytest.fixture
def fork_allowed():
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")


def test_fork_after_kernels_ran_on_two_threads(restore_threads, fork_allowed):
    cnnfast.set_num_threads(2)
    calls = _calls(np.float32, seed=3)
    for _, op, kw in calls:  # the parent's OpenMP pool is up
        op(**kw)
    with cnnfast.num_threads(1):
        serial = [as_bits(op(**kw)) for _, op, kw in calls]
    threads, got = _fork_and_collect()
    assert threads == 1, got
    assert got == serial  # serial kernels: the bits of a 1-thread call
    # and the parent still runs on 2 threads afterwards
    assert cnnfast.get_num_threads() in (1, 2)
    for _, op, kw in calls:
        op(**kw)


def test_fork_while_another_thread_runs_kernels(restore_threads, fork_allowed):
    """A parent thread keeps calling kernels (2 OpenMP threads, the BLAS pin
    held) while the main thread forks three times: each child finishes."""
    cnnfast.set_num_threads(2)
    calls = _calls(np.float32, seed=4)
    stop = threading.Event()
    failures = []

    def busy():
        try:
            while not stop.is_set():
                for _, op, kw in calls:
                    op(**kw)
        except Exception as error:  # noqa: BLE001
            failures.append(repr(error))

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        for _ in range(3):
            threads, got = _fork_and_collect()
            assert threads == 1, got
    finally:
        stop.set()
        worker.join()
    assert failures == []


def test_fork_while_the_blas_pin_lock_is_held(restore_threads, fork_allowed):
    """Deterministic form of the case above: another thread holds the lock of
    the BLAS pin at the moment of the fork. The child's copy of the lock used
    to stay taken forever, so its first kernel call hung."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with _threads.blas_pinned._lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(60)
    try:
        threads, got = _fork_and_collect()
        assert threads == 1, got
    finally:
        release.set()
        holder.join()


# -------------------------------------------------------------------- GIL

def _long_calls():
    """Calls that run far longer (tenths of a second on one thread) than the
    Python loop below (about a millisecond)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 64, 128, 128), dtype=np.float32)
    w = rng.standard_normal((128, 64, 3, 3), dtype=np.float32)
    p = rng.standard_normal((8, 16, 256, 256), dtype=np.float32)
    return {
        "conv2d": lambda: cnnfast.conv2d(x, w, padding=1, algorithm="direct"),
        "conv2d_backward": lambda: cnnfast.conv2d_backward(
            np.ones((8, 128, 128, 128), np.float32), x, w, padding=1, algorithm="im2col",
            need=("weight",)),
        "max_pool2d": lambda: cnnfast.max_pool2d(p, 7, stride=1, padding=3,
                                                 return_indices=True),
    }


@pytest.mark.parametrize("call", ["conv2d", "conv2d_backward", "max_pool2d"])
def test_gil_is_released_inside_kernels(call, restore_threads):
    """Thread A notes a counter, calls a long kernel, and notes the counter
    again; meanwhile the main thread keeps adding to it in Python. The switch
    interval is raised to 5 s, so a thread keeps the GIL unless it releases
    it itself: had the kernel kept the GIL, the counter could not move during
    the call. It must have moved by at least one batch of 1000 increments."""
    cnnfast.set_num_threads(1)
    run = _long_calls()[call]
    run()  # warm up (first-call allocations, BLAS loading)
    progress = [0]
    moved = []
    entered, finished = threading.Event(), threading.Event()

    def worker():
        entered.set()
        before = progress[0]
        try:
            run()
        finally:
            moved.append(progress[0] - before)
            finished.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        a = threading.Thread(target=worker)
        a.start()
        entered.wait(60)
        while not finished.is_set():
            for _ in range(1000):
                progress[0] += 1
            finished.wait(0.0002)  # lets A take the GIL back when its call returns
        a.join(60)
    finally:
        sys.setswitchinterval(old)
    assert not a.is_alive()
    assert moved and moved[0] >= 1000, moved
