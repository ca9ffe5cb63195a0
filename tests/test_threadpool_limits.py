"""threadpoolctl's OpenMP limit caps cnnfast's kernels (scikit-learn's rule):
they run min(get_num_threads(), omp_get_max_threads()) threads once the
limit is set below OpenMP's default, and explain_conv reports that count."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _threads
from cnnfast._ext import _runtime

threadpoolctl = pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.skipif(not _runtime.openmp_enabled(), reason="a serial build")

SHAPE = ((4, 16, 16, 16), (16, 16, 3, 3))


def _planned_threads(**kwargs):
    return {p.threads for p in cnnfast.explain_conv(*SHAPE, padding=1, **kwargs).passes.values()}


def test_threadpoolctl_sees_cnnfast_openmp_runtime():
    libs = threadpoolctl.ThreadpoolController().select(user_api="openmp").lib_controllers
    assert libs, "threadpoolctl finds no OpenMP runtime in this process"
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert _runtime.max_threads() == 1


def test_threadpool_limits_caps_the_kernels_while_in_force():
    with cnnfast.num_threads(2):
        assert _threads.kernel_threads() == 2 and _planned_threads() == {2}
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert cnnfast.get_num_threads() == 2     # cnnfast's own setting is kept
            assert _threads.kernel_threads() == 1     # the smaller one runs
            assert _planned_threads() == {1}          # and explain_conv reports it
            assert _planned_threads(threads=2) == {1}
            x = np.random.default_rng(0).standard_normal(SHAPE[0]).astype(np.float32)
            w = np.random.default_rng(1).standard_normal(SHAPE[1]).astype(np.float32)
            capped = cnnfast.conv2d(x, w, padding=1)
        assert _threads.kernel_threads() == 2 and _planned_threads() == {2}
        with cnnfast.num_threads(1):
            np.testing.assert_array_equal(capped, cnnfast.conv2d(x, w, padding=1))


def test_the_smaller_count_wins():
    with cnnfast.num_threads(1), threadpoolctl.threadpool_limits(2, user_api="openmp"):
        assert _threads.kernel_threads() == 1


def test_a_limit_at_its_default_does_not_cap_an_explicit_count():
    """OpenMP's default limit is the core count: set_num_threads(n) above it
    still runs n (tests run 3 threads on 2 cores to split work unevenly)."""
    default = _threads._OPENMP_DEFAULT
    assert _runtime.max_threads() == default
    with cnnfast.num_threads(default + 1):
        assert _threads.kernel_threads() == default + 1


def test_the_limit_of_another_python_thread_is_its_own():
    """omp_set_num_threads sets the calling thread's limit: a threadpool
    limit in one Python thread leaves kernels in the others alone."""
    import threading

    seen = []
    with cnnfast.num_threads(2), threadpoolctl.threadpool_limits(1, user_api="openmp"):
        worker = threading.Thread(target=lambda: seen.append(_threads.kernel_threads()))
        worker.start()
        worker.join()
        assert _threads.kernel_threads() == 1
    assert seen == [2]
