"""Shared fixtures for the cnnfast tests, and the `slow` marker: tests that need
more than CI's memory or time (arrays over 2**31 elements) run only with
`pytest --runslow` or CNNFAST_SLOW=1."""
import os

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (about 10 GB of memory each)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("CNNFAST_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: needs --runslow or CNNFAST_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def parallel_even_when_small(monkeypatch):
    """The test shapes are small: without this, the grain-size rule would run
    them all on one thread and the parallel code paths would go untested."""
    from cnnfast import _plan

    monkeypatch.setattr(_plan, "CONV_GRAIN", 0)
    monkeypatch.setattr(_plan, "POOL_GRAIN", 0)
    monkeypatch.setattr(_plan, "ELEMENTWISE_GRAIN", 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Fresh file names (for the memmaps of the layout tests) in one directory
    per module."""
    import itertools

    folder = tmp_path_factory.mktemp("memmaps")
    counter = itertools.count()
    return lambda: folder / f"{next(counter)}.bin"


@pytest.fixture(autouse=True, scope="module")
def torch_threads_restored():
    """torch.set_num_threads lowers the OpenMP limit of the libgomp it shares
    with cnnfast, which caps cnnfast's kernels (threadpoolctl's rule, docs/API.md);
    a test (or a benchmark it runs) that sets it must not cap the modules after."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(before if before is not None else (os.cpu_count() or 1))
