"""Shared fixtures for the cnnfast tests."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def parallel_even_when_small(monkeypatch):
    """The test shapes are small: without this, the grain-size rule would run
    them all on one thread and the parallel code paths would go untested."""
    import cnnfast.functional

    monkeypatch.setattr(cnnfast.functional, "CONV_GRAIN", 0)
    monkeypatch.setattr(cnnfast.functional, "POOL_GRAIN", 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Fresh file names (for the memmaps of the layout tests) in one directory
    per module."""
    import itertools

    folder = tmp_path_factory.mktemp("memmaps")
    counter = itertools.count()
    return lambda: folder / f"{next(counter)}.bin"
