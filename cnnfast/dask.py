"""Scale-out on Dask: batch inference and synchronous data-parallel training.

    import cnnfast.dask
    logits = cnnfast.dask.predict(model, images)          # images: dask array (N, C, H, W)
    losses = cnnfast.dask.fit(model, images, labels, optimizer=opt, batch_size=256)

`predict` works with any Dask scheduler; `fit` needs a `dask.distributed`
Client. Both put the model in the graph as one key that every task depends
on, so on a cluster the weights reach each worker once per call (predict) or
once per step (fit), and the scheduler keeps a copy to recompute it if a
worker dies. Install with `pip install "cnnfast[dask]"`;
`import cnnfast` itself never imports Dask.
"""
from __future__ import annotations

import copy
import uuid
import warnings

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as err:   # the optional extra is missing
    raise ImportError('cnnfast.dask needs Dask: pip install "cnnfast[dask]"') from err

from . import _validation as V
from .nn.loss import CrossEntropyLoss
from .nn.module import Module
from .optim import Optimizer

__all__ = ["predict", "fit"]


# ----------------------------------------------------------------- helpers

def _check_model(model):
    if not isinstance(model, Module):
        raise TypeError(f"model must be a cnnfast.nn.Module, got {type(model).__name__}")


def _check_images(images, model):
    """images: a 4-D float dask array of the model's dtype."""
    if not isinstance(images, da.Array):
        raise TypeError(f"images must be a dask.array.Array (N, C, H, W), got "
                        f"{type(images).__name__}; wrap a NumPy array with "
                        f"dask.array.from_array(x, chunks=(batch, -1, -1, -1))")
    if images.ndim != 4:
        raise ValueError(f"images must have 4 dims (N, C, H, W), got shape {images.shape}")
    params = model.parameters()
    want = params[0].dtype if params else None
    if images.dtype not in (np.float32, np.float64) or want is not None and images.dtype != want:
        raise TypeError(f"images must be float32 or float64 like the model's parameters "
                        f"({want}), got {images.dtype}; cast with images.astype(...)")


def _snapshot(model, training):
    """A deep copy in the given mode without gradients and backward caches:
    they can be as large as the weights (caches: the last step's activations),
    must not be shipped, and a replica's backward must start from zero. They
    are detached from `model` for the copy and put back."""
    caches = [(m, m._cache) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        for m, _ in caches:
            m._cache = None
        for p, _ in grads:
            p.grad = None
        replica = copy.deepcopy(model)
    finally:
        for m, cache in caches:
            m._cache = cache
        for p, grad in grads:
            p.grad = grad
    return replica.train(training)


def _model_node(replica):
    # One graph key holding the model: every task depends on it, so Dask moves
    # it to each worker once (a fresh name: no hashing of the weights).
    return dask.delayed(replica, name=f"cnnfast-model-{uuid.uuid4().hex}")


# ---------------------------------------------------------------- predict

def _predict_block(block, model, batch_size):
    if batch_size is None or len(block) <= batch_size:
        return model(block)
    return np.concatenate([model(block[i:i + batch_size])
                           for i in range(0, len(block), batch_size)])


def predict(model, images, batch_size=None):
    """Model outputs for every image, as a lazy dask array.

    model: a cnnfast Module; it runs in eval mode on a copy (the model itself,
        its mode and its caches are left alone).
    images: dask array (N, C, H, W) of the model's dtype, chunked along N
        (a NumPy array is refused: wrap it with dask.array.from_array); chunks
        along C, H, W are merged into one (the model needs whole images).
    batch_size: images per forward pass inside a chunk; None runs each chunk
        in one pass.
    Returns a dask array (N, ...) with the chunks of `images` along N and the
    model's output shape and dtype after it (e.g. (N, num_classes) logits).
    Shape and dtype errors are raised here, not when the result is computed.

    With the threaded scheduler all threads share one eval-mode copy: eval
    forward passes store nothing on the layers, and the kernels release the
    GIL. Set cnnfast.set_num_threads(1) there to avoid Dask threads x OpenMP
    threads. On a distributed cluster the model is one graph key, sent to each
    worker once; distributed warns "Sending large graph" for models above
    10 MiB (raise `distributed.admin.large-graph-warning-threshold` to quiet it).
    Dask's local "processes" scheduler keeps nothing between tasks, so there
    the model goes out with every chunk: use a distributed LocalCluster.
    """
    _check_model(model)
    _check_images(images, model)
    if batch_size is not None:
        batch_size = V.positive_int(batch_size, "batch_size")
    if any(len(c) > 1 for c in images.chunks[1:]):
        images = images.rechunk({1: -1, 2: -1, 3: -1})
    replica = _snapshot(model, training=False)
    # An empty probe checks the image shape against the model now (not inside
    # a task) and gives the output's trailing shape and dtype.
    probe = replica(np.zeros((0,) + images.shape[1:], images.dtype))
    if not isinstance(probe, np.ndarray) or probe.ndim < 1:
        raise TypeError(f"predict needs a model whose forward returns one array, got "
                        f"{type(probe).__name__}")
    tail = probe.shape[1:]
    nd = 1 + len(tail)
    return da.map_blocks(
        _predict_block, images, _model_node(replica), batch_size,
        chunks=(images.chunks[0],) + tuple((s,) for s in tail),
        drop_axis=list(range(nd, 4)), new_axis=list(range(4, nd)) or None,
        dtype=probe.dtype, meta=np.empty((0,) * nd, probe.dtype))


# -------------------------------------------------------------------- fit

def _shard_gradients(snapshot, x, y, label_smoothing, scale):
    """Gradients of scale * (summed loss over this shard), the shard's loss sum
    and its BatchNorm running estimates after the forward pass."""
    # A private copy: tasks that land on one worker (threads, retries) must not
    # share caches or running statistics.
    model = copy.deepcopy(snapshot)
    loss = CrossEntropyLoss(reduction="sum", label_smoothing=label_smoothing)
    total = loss(model(x), y)
    model.backward(loss.backward(scale))
    counters = {name: m._batches_seen for name, m in model.named_modules()
                if hasattr(m, "_batches_seen")}   # BatchNorm with momentum=None
    return model.named_grads(), total, dict(model.named_buffers()), counters


def _get_client(client):
    try:
        from distributed import Client, get_client
    except ImportError as err:
        raise ImportError('cnnfast.dask.fit needs dask.distributed: '
                          'pip install "cnnfast[dask]"') from err
    if client is None:
        try:
            return get_client()
        except ValueError:
            raise ValueError("fit needs a dask.distributed Client: create one "
                             "(Client('tcp://scheduler:8786') or Client(LocalCluster())) "
                             "or pass client=") from None
    if not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client or None, got "
                        f"{type(client).__name__}")
    return client


def _check_labels(labels, n):
    if isinstance(labels, da.Array):
        labels = labels.compute()   # N ints: small next to the images
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be ({n},) class indices (ints), one per image, got "
                         f"shape {labels.shape} dtype {labels.dtype}")
    return labels


def fit(model, images, labels, *, optimizer, batch_size=32, epochs=1, loss=None,
        shuffle=True, seed=None, client=None):
    """Synchronous data-parallel training on a dask.distributed cluster.

    Trains `model` in place and returns the loss of every step (a list of
    floats). Batches are drawn as cnnfast.data.DataLoader(images, labels,
    batch_size, shuffle, seed=seed) draws them (a fresh permutation per epoch,
    the last batch may be short), so the run equals the plain loop
    `for x, y in loader: loss(model(x), y); model.backward(...); optimizer.step()`
    up to float rounding. Each step splits the global batch into one shard per
    worker (as many as the cluster had when fit started); each worker computes
    the gradient of its shard's share of the loss, the driver sums them and
    runs `optimizer.step()` itself (the optimizer state never leaves it), and
    the updated model goes out with the next step.

    optimizer: a cnnfast.optim optimizer built on model.parameters().
    batch_size: the global batch (all workers together).
    loss: a CrossEntropyLoss (default CrossEntropyLoss()); its reduction and
        label_smoothing are honoured.
    images: dask array (N, C, H, W) of the model's dtype; it is persisted on
        the cluster and each step moves only the batch's images to the workers.
    labels: (N,) ints, NumPy or dask.
    client: a distributed.Client; None uses the current one.

    BatchNorm layers normalise each shard with its own batch statistics (as
    torch's DistributedDataParallel without SyncBatchNorm), so a model with
    BatchNorm matches single-process training only with one worker; the
    running estimates become the shard-size-weighted mean of the shards'
    updated estimates. Dropout masks are drawn on the workers. The workers run
    copies of the model in training mode; `model`'s own mode is left as it is
    and its backward caches are dropped.
    """
    _check_model(model)
    _check_images(images, model)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a cnnfast.optim optimizer, got "
                        f"{type(optimizer).__name__}")
    own = {id(p) for p in model.parameters()}
    if not all(id(p) in own for p in optimizer.params):
        raise ValueError("optimizer must be built on model.parameters() (it holds "
                         "parameters that are not the model's)")
    batch_size = V.positive_int(batch_size, "batch_size")
    epochs = V.positive_int(epochs, "epochs")
    loss = CrossEntropyLoss() if loss is None else loss
    if not isinstance(loss, CrossEntropyLoss):
        raise TypeError(f"loss must be a cnnfast.nn.CrossEntropyLoss, got "
                        f"{type(loss).__name__}")
    if loss.weight is not None or loss.ignore_index != -100 or loss.reduction == "none":
        # the shards sum unweighted per-image losses; a weighted mean needs the
        # whole batch's weight sum, and "none" has no scalar to descend on
        raise ValueError("cnnfast.dask.fit supports CrossEntropyLoss with reduction 'mean' "
                         "or 'sum' and label_smoothing only (no weight, no ignore_index)")
    n = images.shape[0]
    if np.isnan(n):
        raise ValueError("images has unknown chunk sizes along N; call "
                         "images.compute_chunk_sizes() first")
    labels = _check_labels(labels, n)
    client = _get_client(client)
    n_shards = max(len(client.nthreads()), 1)
    images = client.persist(images)   # stays on the workers; steps take slices of it
    for m in model.modules():
        m._cache = None   # stale caches would be meaningless after the update

    rng = np.random.default_rng(seed)   # DataLoader's draws, so runs can be compared
    losses = []
    for _ in range(epochs):
        order = rng.permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            batch = order[start:start + batch_size]
            scale = 1 / len(batch) if loss.reduction == "mean" else 1.0
            total = _step(client, model, images, labels, batch, n_shards,
                          loss.label_smoothing, scale)
            optimizer.step()
            losses.append(total * scale)
    return losses


def _step(client, model, images, labels, batch, n_shards, label_smoothing, scale):
    """One synchronous step: shard gradients -> summed into model's .grad;
    BatchNorm estimates averaged into model. Returns the batch's loss sum."""
    node = _model_node(_snapshot(model, training=True))
    workers = sorted(client.nthreads())
    tasks, sizes = [], []
    for i, idx in enumerate(np.array_split(batch, n_shards)):
        if len(idx) == 0:
            continue
        x = images[idx]
        # Shard i goes to worker i (the images it needs are moved there), or to
        # any worker if that one is gone: a killed worker's shard is retried.
        pin = {"workers": workers[i % len(workers)], "allow_other_workers": True}
        with dask.annotate(**(pin if workers else {})):
            tasks.append(dask.delayed(_shard_gradients, pure=False)(
                node, x, labels[idx], label_smoothing, scale))
        sizes.append(len(idx))
    with warnings.catch_warnings():
        # the model travels in the graph on purpose (see the module docstring)
        warnings.filterwarnings("ignore", message="Sending large graph")
        futures = client.compute(tasks)
    results = client.gather(futures)

    grads = {}   # the shards' shares of the batch-mean gradient add up to it
    for shard_grads, *_ in results:
        for name, g in shard_grads.items():
            grads[name] = g if name not in grads else grads[name] + g
    for name, p in model.named_parameters():
        p.grad = grads.get(name)
    n = sum(sizes)
    buffers = {name: (sum(w * r[2][name].astype(np.float64) for w, r in zip(sizes, results))
                      / n).astype(b.dtype)
               for name, b in model.named_buffers()}
    model.load_state_dict(buffers, strict=False)
    slots = dict(model.named_modules())
    for name, seen in results[0][3].items():
        slots[name]._batches_seen = seen
    return sum(r[1] for r in results)
