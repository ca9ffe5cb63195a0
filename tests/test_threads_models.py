"""Threads inside whole models: every kernel gets the configured count, the
OpenMP runtime grants it (also when torch loaded its own runtime first),
results are bit-identical run to run, and the dense layers' products run on
cnnfast's threads (not NumPy's BLAS pool) with NumPy's results."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnfast
from cnnfast import _plan as P
from cnnfast._ops.dense import _dense_matmul
from cnnfast import models, nn
from cnnfast._ext import _runtime

from helpers import op_modules, tolerance

# Child processes import the cnnfast this run tests (installed or built in place), from a
# neutral directory: from the repo root an installed run would import the unbuilt sources.
CHILD_PATH = os.path.dirname(os.path.dirname(cnnfast.__file__))

DTYPES = [np.float32, np.float64]


# ------------------------------------------------------- dense layer products

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 1000, 512), (1, 37, 5), (1, 4, 0),
                                   (37, 53, 19), (256, 84, 120),
                                   (300, 200, 100), (5, 7, 0), (0, 4, 3), (4, 0, 3)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_dense_matmul_equals_numpy(dtype, trans_a, trans_b, m, n, k, threads):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    expect = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    with cnnfast.num_threads(threads):
        got = _dense_matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        again = _dense_matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    assert got.shape == (m, n) and got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_allclose(got, expect, rtol=0, atol=tolerance(dtype, k) * 4)
    np.testing.assert_array_equal(got, again)


def test_dense_matmul_reads_non_contiguous_inputs():
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((64, 48)))
    b = rng.standard_normal((96, 48))[::2]
    np.testing.assert_allclose(_dense_matmul(a, b, trans_b=True), a @ b.T, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_forward_backward_equal_numpy(dtype):
    rng = np.random.default_rng(1)
    layer = nn.Linear(120, 84, dtype=dtype)
    x = rng.standard_normal((3, 5, 120)).astype(dtype)
    y = layer(x)
    assert y.shape == (3, 5, 84)
    tol = dict(rtol=0, atol=tolerance(dtype, 120) * 4)
    np.testing.assert_allclose(y, x @ layer.weight.data.T + layer.bias.data, **tol)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(g)
    np.testing.assert_allclose(gx, g @ layer.weight.data, **tol)
    np.testing.assert_allclose(layer.weight.grad, g.reshape(-1, 84).T @ x.reshape(-1, 120), **tol)
    np.testing.assert_allclose(layer.bias.grad, g.reshape(-1, 84).sum(axis=0), **tol)


# --------------------------------------------------- thread counts in models

class _Recorder:
    """Stands in for a driver module: records the thread count of each call
    (every driver takes it as its last int argument; the conv forward's
    epilogue arguments follow it), then calls through."""

    # drivers whose thread count is not their last int argument
    THREADS_AT = {"max_pool_backward": 3}   # then channels_last=C
    # weight packing (one thread; its last int is a chunk size)
    UNTHREADED = {"pack", "pack_flipped", "winograd_pack"}

    def __init__(self, module, seen):
        self._module, self._seen = module, seen

    def __getattr__(self, name):
        fn = getattr(self._module, name)
        if not callable(fn):
            return fn

        def call(*args, **kwargs):   # keywords (the NHWC kernel's mode) are not threads
            ints = [a for a in args if type(a) is int]
            if name in self.UNTHREADED:
                pass
            elif name in self.THREADS_AT:
                self._seen.append((name, args[self.THREADS_AT[name]]))
            elif ints:
                self._seen.append((name, ints[-1]))
            return fn(*args, **kwargs)
        return call


def test_each_kernel_in_a_model_gets_the_configured_threads(monkeypatch):
    seen = []
    for module in op_modules():
        for name in ("_conv", "_conv_nhwc", "_pool", "_dense", "_elementwise"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _Recorder(getattr(module, name), seen))
    from cnnfast import _nhwc, _nhwc_backward   # the NHWC kernels' records bind it too
    for module in (_nhwc, _nhwc_backward):
        monkeypatch.setattr(module, "_conv_nhwc", _Recorder(module._conv_nhwc, seen))
    nn.manual_seed(0)
    model = models.resnet18(num_classes=10).train()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    loss = nn.CrossEntropyLoss()
    with cnnfast.num_threads(2):
        loss(model(x), np.array([1, 2]))
        model.backward(loss.backward())
    assert len(seen) > 40
    counts = {t for _, t in seen}
    assert counts <= {1, 2}, seen
    # every convolution of ResNet-18 at 64x64 is above the threading grain
    # (it trains channels-last inside: the NHWC driver's forward)
    conv_calls = [t for name, t in seen if name.startswith("conv_forward") or name == "forward"]
    assert conv_calls and all(t == 2 for t in conv_calls), seen


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_openmp_runtime_grants_the_requested_team(threads):
    if not _runtime.openmp_enabled():
        assert _runtime.team_size(threads) == 1
    else:
        assert _runtime.team_size(threads) == threads


def test_team_granted_when_torch_loaded_its_openmp_first(tmp_path):
    pytest.importorskip("torch")
    code = ("import torch, cnnfast\n"
            "from cnnfast._ext import _runtime\n"
            "print(_runtime.team_size(2) if _runtime.openmp_enabled() else 2)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=CHILD_PATH))
    assert out.stdout.strip() == "2"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_model_results_bit_identical_run_to_run(threads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 3, 48, 48)).astype(np.float32)
    y = np.array([0, 4, 9])
    runs = []
    for _ in range(2):
        nn.manual_seed(7)
        model = models.resnet18(num_classes=10).train()
        loss = nn.CrossEntropyLoss()
        with cnnfast.num_threads(threads):
            out = model(x)
            loss(out, y)
            model.backward(loss.backward())
        runs.append((out, dict(model.named_grads())))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1].keys() == runs[1][1].keys()
    for name in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][name], runs[1][1][name], err_msg=name)


def test_dense_threads_follow_the_grain():
    assert P.dense_threads(P.CONV_GRAIN - 1) == 1
    with cnnfast.num_threads(2):
        assert P.dense_threads(P.CONV_GRAIN) == 2


@pytest.mark.parametrize("env,expect", [
    ({}, "30000"),                                  # bounded spin by default
    ({"GOMP_SPINCOUNT": "5"}, "5"),                 # the user's choice stays
    ({"OMP_WAIT_POLICY": "PASSIVE"}, None),         # a wait policy of the user's: untouched
])
def test_import_sets_a_bounded_spin_unless_the_user_chose(env, expect, tmp_path):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, cnnfast; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True, env={**clean, **env, "PYTHONPATH": CHILD_PATH}, cwd=tmp_path)
    assert out.stdout.strip() == str(expect)
