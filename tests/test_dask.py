"""cnnfast.dask: predict and data-parallel fit on a local cluster of two worker
processes, compared with the same computation in this process."""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("distributed")

import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster, get_task_stream  # noqa: E402

import cnnfast  # noqa: E402
import cnnfast.dask as cdask  # noqa: E402
from cnnfast import data, models, nn, optim  # noqa: E402


@pytest.fixture(scope="module")
def client():
    # distributed's nanny also writes its workers' variables (OMP_NUM_THREADS=1,
    # MALLOC_TRIM_THRESHOLD_) into this process's environment: put it back after
    saved = dict(os.environ)
    try:
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                          dashboard_address=None) as cluster, Client(cluster) as c:
            yield c
    finally:
        os.environ.clear()
        os.environ.update(saved)


def lenet(dtype=np.float32, seed=0):
    nn.manual_seed(seed)
    return models.lenet5(dtype=dtype)


def images(rng, n, chunk, dtype=np.float32, size=32, channels=1):
    x = rng.standard_normal((n, channels, size, size)).astype(dtype)
    return x, da.from_array(x, chunks=(chunk, -1, -1, -1))


def local_outputs(model, x):
    return copy.deepcopy(model).eval()(x)


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def dies_once(inner, marker):
    """`inner` wrapped so that the first forward pass run in any process but
    this one creates `marker` and kills that process, as a crash would. The
    class is local so cloudpickle ships it by value to the workers."""

    class DiesOnce(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner
            self._marker, self._parent = str(marker), os.getpid()

        def forward(self, x):
            if os.getpid() != self._parent:
                try:
                    os.close(os.open(self._marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os._exit(1)
            return self.inner(x)

        def backward(self, grad_out):
            return self.inner.backward(grad_out)

    return DiesOnce()


# ----------------------------------------------------------------- predict

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, chunk, batch_size", [(37, 10, None), (37, 16, 5), (5, 8, 2)])
def test_predict_on_cluster_equals_local(client, rng, dtype, n, chunk, batch_size):
    model = lenet(dtype).train()
    x, xd = images(rng, n, chunk, dtype)
    model(x[:2])                                  # leaves a training cache behind
    cache = model.conv1._cache
    y = cdask.predict(model, xd, batch_size=batch_size)
    assert y.shape == (n, 10) and y.dtype == dtype and y.chunks[0] == xd.chunks[0]
    np.testing.assert_allclose(client.compute(y).result(), local_outputs(model, x),
                               **tol(dtype))
    assert model.training and model.conv1._cache is cache   # the user's model is untouched


def test_predict_threaded_scheduler_equals_local(rng):
    # ResNet-18 has BatchNorm: eval mode (running statistics) on every thread,
    # and every thread shares one model copy.
    nn.manual_seed(1)
    model = models.resnet18(num_classes=7, in_channels=3).train()
    model(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))   # moves running stats
    x, xd = images(rng, 22, 3, size=32, channels=3)
    y = cdask.predict(model, xd, batch_size=2)
    got = y.compute(scheduler="threads", num_workers=4)
    np.testing.assert_allclose(got, local_outputs(model, x), rtol=1e-4, atol=1e-5)


def test_predict_empty_and_trailing_chunks(client, rng):
    model = lenet()
    y = cdask.predict(model, da.zeros((0, 1, 32, 32), dtype=np.float32, chunks=4))
    assert y.shape == (0, 10) and client.compute(y).result().shape == (0, 10)
    x, _ = images(rng, 9, 9)
    xd = da.from_array(x, chunks=(4, 1, 16, 8))     # split along H and W too: merged
    np.testing.assert_allclose(cdask.predict(model, xd).compute(scheduler="sync"),
                               local_outputs(model, x), **tol(np.float32))


def test_predict_sends_weights_once_per_worker(client, rng):
    client.wait_for_workers(2)
    model = lenet()
    x, xd = images(rng, 64, 4)                     # 16 chunks for 2 workers
    y = cdask.predict(model, xd)
    graph = dict(y.__dask_graph__())
    model_keys = [k for k in graph if str(k).startswith("cnnfast-model-")]
    assert len(model_keys) == 1
    (key,) = model_keys
    blocks = [t for k, t in graph.items() if "_predict_block" in str(k)]
    assert len(blocks) == 16 and all(key in t.dependencies for t in blocks)
    with get_task_stream(client) as stream:
        out = client.compute(y).result()
    np.testing.assert_allclose(out, local_outputs(model, x), **tol(np.float32))
    # the model key runs once (on one worker) and every other worker fetches it once
    runs = [t for t in stream.data if t["key"] == key]
    fetches = client.run(lambda dask_worker, key=key: sum(
        key in entry["keys"] for entry in dask_worker.transfer_incoming_log))
    assert len(runs) == 1 and all(f <= 1 for f in fetches.values())
    assert len(runs) + sum(fetches.values()) <= len(fetches)


def test_predict_validation(rng):
    model = lenet()
    _, xd = images(rng, 4, 2)
    with pytest.raises(TypeError, match="model"):
        cdask.predict("lenet", xd)
    with pytest.raises(TypeError, match="images must be a dask.array"):
        cdask.predict(model, xd.compute())
    with pytest.raises(ValueError, match="images must have 4 dims"):
        cdask.predict(model, xd[0])
    with pytest.raises(TypeError, match="images must be float32 or float64.*int64"):
        cdask.predict(model, xd.astype(np.int64))
    with pytest.raises(TypeError, match="images must be .*float32.*got float64"):
        cdask.predict(model, xd.astype(np.float64))
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        cdask.predict(model, xd, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        cdask.predict(model, xd, batch_size=2.5)
    with pytest.raises(ValueError, match="32x32"):           # the model's own check, now
        cdask.predict(model, da.zeros((4, 1, 28, 28), dtype=np.float32, chunks=2))


# --------------------------------------------------------------------- fit

def local_training(model, opt, x, y, batch_size, epochs, shuffle, seed, loss_fn=None):
    """The single-process loop fit must reproduce."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    loader = data.DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed)
    losses = []
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            losses.append(loss_fn(model(xb), yb))
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
    return losses


def assert_same_state(a, b, **tolerance):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_allclose(sa[k], sb[k], err_msg=k, **tolerance)


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, 0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
    "adam": lambda ps: optim.Adam(ps, lr=1e-2),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_fit_one_step_equals_single_process(client, rng, opt_name, dtype):
    model = lenet(dtype)
    twin = copy.deepcopy(model)
    x, xd = images(rng, 12, 5, dtype)
    y = rng.integers(0, 10, 12)
    losses = cdask.fit(model, xd, y, optimizer=OPTIMIZERS[opt_name](model.parameters()),
                       batch_size=12, shuffle=False, client=client)
    want = local_training(twin, OPTIMIZERS[opt_name](twin.parameters()), x, y, 12, 1,
                          False, None)
    np.testing.assert_allclose(losses, want, **tol(dtype))
    for (_, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, **tol(dtype))
    # Adam's first step is lr * g / (|g| + eps): for the few gradients near eps
    # a float32 rounding difference in g moves the step by a fraction of lr.
    loose = opt_name == "adam" and dtype == np.float32
    assert_same_state(model, twin, **(dict(rtol=1e-5, atol=1e-4) if loose else tol(dtype)))


def test_fit_epochs_equal_dataloader_loop(client, rng):
    # 20 images in global batches of 8 (the last one short), reshuffled per epoch;
    # labels as a dask array, label smoothing and a frozen layer honoured.
    model = lenet(np.float64)
    model.conv1.freeze()
    twin = copy.deepcopy(model)
    x, xd = images(rng, 20, 6, np.float64)
    y = rng.integers(0, 10, 20)
    losses = cdask.fit(model, xd, da.from_array(y, chunks=7),
                       optimizer=OPTIMIZERS["sgd"](model.parameters()), batch_size=8,
                       epochs=2, loss=nn.CrossEntropyLoss(label_smoothing=0.1), seed=5)
    want = local_training(twin, OPTIMIZERS["sgd"](twin.parameters()), x, y, 8, 2, True, 5,
                          nn.CrossEntropyLoss(label_smoothing=0.1))
    assert len(losses) == 6
    np.testing.assert_allclose(losses, want, **tol(np.float64))
    assert_same_state(model, twin, **tol(np.float64))
    assert model.conv1.weight.grad is None


def test_fit_batchnorm_uses_shard_statistics(client, rng):
    """With BatchNorm each shard normalises with its own statistics (DDP
    without SyncBatchNorm) and the running estimates are averaged by shard size."""
    client.wait_for_workers(2)
    nn.manual_seed(2)
    f64 = dict(dtype=np.float64)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, **f64), nn.BatchNorm2d(4, **f64), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3, **f64))
    x, xd = images(rng, 7, 3, np.float64, size=8)
    y = rng.integers(0, 3, 7)
    start = copy.deepcopy(model)
    cdask.fit(model, xd, y, optimizer=optim.SGD(model.parameters(), 0.1), batch_size=7,
              shuffle=False, client=client)
    # the same step by hand: shards [0:4] and [4:7], gradients summed over the batch mean
    grads, stats = {}, []
    for idx in (slice(0, 4), slice(4, 7)):
        shard = copy.deepcopy(start)
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        loss_fn(shard(x[idx]), y[idx])
        shard.backward(loss_fn.backward() / 7)
        for k, g in shard.named_grads().items():
            grads[k] = grads.get(k, 0) + g
        stats.append(dict(shard.named_buffers()))
    for k, p in start.named_parameters():
        p.data -= 0.1 * grads[k]
    for k in ("running_mean", "running_var"):
        setattr(start[1], k, (4 * stats[0]["1." + k] + 3 * stats[1]["1." + k]) / 7)
    assert_same_state(model, start, **tol(np.float64))


def test_fit_validation(client, rng, monkeypatch):
    model = lenet()
    _, xd = images(rng, 6, 3)
    y = np.arange(6)
    sgd = optim.SGD(model.parameters(), 0.1)
    with pytest.raises(TypeError, match="optimizer must be a cnnfast.optim optimizer"):
        cdask.fit(model, xd, y, optimizer=None)
    with pytest.raises(ValueError, match="optimizer must be built on model.parameters"):
        cdask.fit(model, xd, y, optimizer=optim.SGD(lenet().parameters(), 0.1))
    with pytest.raises(ValueError, match=r"labels must be \(6,\) class indices"):
        cdask.fit(model, xd, y[:5], optimizer=sgd)
    with pytest.raises(ValueError, match="labels must be"):
        cdask.fit(model, xd, y.astype(np.float32), optimizer=sgd)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        cdask.fit(model, xd, y, optimizer=sgd, batch_size=0)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        cdask.fit(model, xd, y, optimizer=sgd, epochs=0)
    with pytest.raises(TypeError, match="loss must be a cnnfast.nn.CrossEntropyLoss"):
        cdask.fit(model, xd, y, optimizer=sgd, loss=lambda a, b: 0)
    for loss in (nn.CrossEntropyLoss(weight=np.ones(10)), nn.CrossEntropyLoss(ignore_index=0),
                 nn.CrossEntropyLoss(reduction="none")):
        with pytest.raises(ValueError, match="supports CrossEntropyLoss with reduction"):
            cdask.fit(model, xd, y, optimizer=sgd, loss=loss)
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        cdask.fit(model, xd, y, optimizer=sgd, client="tcp://localhost:8786")
    import distributed

    def no_client():
        raise ValueError("No clients found")

    monkeypatch.setattr(distributed, "get_client", no_client)
    with pytest.raises(ValueError, match="fit needs a dask.distributed Client"):
        cdask.fit(model, xd, y, optimizer=sgd)


# ------------------------------------------------------------ worker death

def test_predict_survives_a_killed_worker(client, rng, tmp_path):
    client.wait_for_workers(2)
    marker = tmp_path / "killed"
    model = dies_once(lenet(), marker)
    x, xd = images(rng, 40, 5)
    out = client.compute(cdask.predict(model, xd)).result()
    assert marker.exists()                       # a worker did die mid-job
    np.testing.assert_allclose(out, local_outputs(model, x), **tol(np.float32))


def test_fit_survives_a_killed_worker(client, rng, tmp_path):
    client.wait_for_workers(2)
    model = dies_once(lenet(np.float64), tmp_path / "killed")
    twin = copy.deepcopy(model)
    x, xd = images(rng, 16, 4, np.float64)
    y = rng.integers(0, 10, 16)
    losses = cdask.fit(model, xd, y, optimizer=OPTIMIZERS["adam"](model.parameters()),
                       batch_size=8, epochs=2, seed=1, client=client)
    want = local_training(twin, OPTIMIZERS["adam"](twin.parameters()), x, y, 8, 2, True, 1)
    assert (tmp_path / "killed").exists()
    np.testing.assert_allclose(losses, want, **tol(np.float64))
    assert_same_state(model, twin, **tol(np.float64))


# ------------------------------------------------------------ optional dep

def test_import_cnnfast_without_dask(tmp_path):
    code = (
        "import sys\n"
        "import cnnfast, cnnfast.nn, cnnfast.models, cnnfast.optim\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]\n"
        "sys.modules['dask'] = None\n"
        "try:\n"
        "    import cnnfast.dask\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    # run the cnnfast this test imported (installed, or an in-place build), not a source tree
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "cnnfast[dask]"' in out.stdout
