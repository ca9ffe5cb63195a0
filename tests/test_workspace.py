"""Work arrays reused across kernel calls (cnnfast._ext._workspace)."""
import threading

import numpy as np

import cnnfast
from cnnfast._ext import _workspace
from cnnfast._ext._workspace import work_array


def test_reused_per_name_and_grown_on_demand():
    a = work_array("test_a", 100, np.float32)
    assert a.shape == (100,) and a.dtype == np.float32
    assert np.shares_memory(work_array("test_a", 50, np.float32), a)       # reused
    assert not np.shares_memory(work_array("test_b", 50, np.float32), a)   # per name
    assert not np.shares_memory(work_array("test_a", 50, np.float64), a)   # per dtype
    big = work_array("test_a", 1000, np.float32)                           # grown
    assert big.shape == (1000,) and np.shares_memory(work_array("test_a", 10, np.float32), big)
    assert work_array("test_c", 0, np.float32).shape == (1,)


def test_large_arrays_are_not_kept(monkeypatch):
    monkeypatch.setattr(_workspace, "KEEP_BYTES", 1024)
    a = work_array("test_large", 1024, np.float32)           # 4 KB > 1 KB
    assert not np.shares_memory(work_array("test_large", 1024, np.float32), a)


def test_each_python_thread_has_its_own():
    mine = work_array("test_thread", 64, np.float64)
    seen = []
    t = threading.Thread(target=lambda: seen.append(work_array("test_thread", 64, np.float64)))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], mine)


def test_results_do_not_depend_on_what_the_buffers_held(rng):
    # the same call before and after calls of other shapes that leave
    # different contents in the shared work arrays
    x = rng.standard_normal((17, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((20, 5, 3, 3)).astype(np.float32)
    first = [cnnfast.conv2d(x, w, padding=p, stride=s, algorithm=a)
             for a in ("direct", "im2col") for p, s in ((1, 1), (0, 2))]
    big = rng.standard_normal((3, 12, 20, 21)).astype(np.float32) * 1e6
    for a in ("direct", "im2col"):
        cnnfast.conv2d(big, rng.standard_normal((40, 12, 3, 3)).astype(np.float32), padding=2,
                       algorithm=a)
    again = [cnnfast.conv2d(x, w, padding=p, stride=s, algorithm=a)
             for a in ("direct", "im2col") for p, s in ((1, 1), (0, 2))]
    for f, g in zip(first, again):
        np.testing.assert_array_equal(f, g)
