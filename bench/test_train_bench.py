"""pytest-benchmark: one training step (forward + loss + backward + SGD step),
cnnfast against the same network in PyTorch when it is installed.

    pytest bench/test_train_bench.py --benchmark-only
"""
import numpy as np
import pytest

import cnnfast
from cnnfast.bench.train import TRAIN_CASES, torch_training_step, training_step


@pytest.fixture(params=[1], ids=lambda n: f"threads{n}")
def threads(request):
    with cnnfast.num_threads(request.param):
        yield request.param


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: c.name)
def test_train_step(benchmark, threads, case):
    step = training_step(case)
    first = step()
    loss = benchmark(step)
    assert np.isfinite(first) and np.isfinite(loss)


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: c.name)
def test_train_step_torch(benchmark, threads, case):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    step = torch_training_step(case)
    loss = benchmark(step)
    assert np.isfinite(loss)
