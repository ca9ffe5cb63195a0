"""`cnnfast train MODEL --data DIR|FILE.npz`: training on the user's images.

The run, in order: read and check the data (an ImageFolder or an .npz),
hold out a stratified, seeded validation split, build the model (from
`--weights` if given, the head replaced when the class count differs), then
train epoch by epoch, printing `val_acc` after each and, with
`--checkpoint-dir`, writing a checkpoint. `--freeze-base` trains the head
alone on the base's features, computed once in eval mode.

Reproducibility: every random draw comes from a seeded generator whose state
is checkpointed (cnnfast.nn's generator for initialisation and dropout, the
loader's shuffle, each augmentation's), decoding is deterministic and the
kernels are bit-identical at a given thread count, so a run resumed from a
checkpoint ends exactly as the uninterrupted run.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time

import numpy as np

from . import _checkpoint, data, io, models, nn
from ._images import ImageFolder
from .cli import build_optimizer as _optimizer, cosine_lr, run_epoch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# default input side for image folders: small enough for a CPU run of a few
# minutes; LeNet-5 takes exactly 32x32
FOLDER_IMAGE_SIZE = {"lenet5": 32}
DEFAULT_FOLDER_IMAGE_SIZE = 64
# run options a resumed run must repeat (the others: output, threads, progress)
CONFIG_KEYS = ("model", "data", "val_split", "epochs", "batch_size", "lr", "optimizer",
               "momentum", "weight_decay", "augment", "seed", "image_size", "weights",
               "freeze_base")


# --------------------------------------------------------------------- data

class Data:
    """The run's images: `train`/`val` are what DataLoader takes (a Subset of
    an ImageFolder, or normalised arrays with labels), plus what predict
    needs to repeat the preprocessing."""

    def __init__(self, classes, labels, train, val, preprocessing, fingerprint):
        self.classes, self.labels = classes, labels
        self.train, self.val = train, val
        self.preprocessing, self.fingerprint = preprocessing, fingerprint

    @property
    def in_channels(self):
        return self.preprocessing["in_channels"]

    @property
    def image_size(self):
        return tuple(self.preprocessing["image_size"])


def stratified_split(labels, val_split, seed):
    """(train indices, val indices): round(val_split * n) images of each class
    held out (at least one of every class that has two or more when
    val_split > 0), chosen by a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(val_split * len(idx)))
        if val_split > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load_data(args) -> Data:
    if os.path.isdir(args.data):
        return _folder_data(args)
    if not os.path.isfile(args.data):
        raise ValueError(f"--data {args.data!r}: no such folder or file")
    if not args.data.lower().endswith(".npz"):
        raise ValueError(f"--data {args.data!r} is neither a folder of class folders nor an "
                         f".npz file")
    return _npz_data(args)


def _folder_data(args):
    size = args.image_size or FOLDER_IMAGE_SIZE.get(args.model, DEFAULT_FOLDER_IMAGE_SIZE)
    ds = ImageFolder(args.data, image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    labels = ds.targets
    tr, va = stratified_split(labels, args.val_split, args.seed)
    names = "\n".join(os.path.relpath(p, args.data) for p, _ in ds.samples)
    prep = {"image_size": [size, size], "in_channels": 3, "mode": "RGB",
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return Data(ds.classes, labels, data.Subset(ds, tr), data.Subset(ds, va), prep,
                hashlib.sha256(names.encode()).hexdigest())


def _npz_data(args):
    path = args.data
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if not {"x", "y"} <= keys:
                raise ValueError(f"--data {path!r} must hold arrays 'x' (images) and 'y' "
                                 f"(labels); it has {sorted(keys)}")
            x, y = archive["x"], archive["y"]
            classes = archive["classes"] if "classes" in keys else None
    except ValueError as err:
        raise ValueError(f"cannot read --data {path!r}: {err}") from None
    x = _npz_images(x, path)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
        raise ValueError(f"'y' in {path!r} must be {len(x)} int labels, got {y.dtype} "
                         f"{y.shape}")
    if len(y) == 0 or y.min() < 0:
        raise ValueError(f"'y' in {path!r} must hold labels >= 0 (got "
                         f"{'none' if len(y) == 0 else y.min()})")
    n_classes = int(y.max()) + 1
    if classes is None:
        classes = [str(i) for i in range(n_classes)]
    else:
        if classes.ndim != 1 or classes.dtype.kind != "U" or len(classes) < n_classes:
            raise ValueError(f"'classes' in {path!r} must be at least {n_classes} strings "
                             f"(labels go up to {n_classes - 1}), got {classes.dtype} "
                             f"{classes.shape}")
        classes = [str(c) for c in classes]
    labels = y.astype(np.int64)
    tr, va = stratified_split(labels, args.val_split, args.seed)
    c = x.shape[1]
    if c == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:   # other channel counts: the training split's own statistics
        mean = x[tr].mean(axis=(0, 2, 3), dtype=np.float64).tolist()
        std = [max(s, 1e-6) for s in x[tr].std(axis=(0, 2, 3), dtype=np.float64).tolist()]
    x = data.Normalize(mean, std)(x)
    prep = {"image_size": list(x.shape[2:]), "in_channels": c,
            "mode": {1: "L", 3: "RGB"}.get(c), "mean": mean, "std": std}
    digest = hashlib.sha256(labels.tobytes() + str(x.shape).encode()).hexdigest()
    return Data(classes, labels, (x[tr], labels[tr]), (x[va], labels[va]), prep, digest)


def _npz_images(x, path):
    """'x' as (N, C, H, W) float32 in [0, 1]: floats as given (checked), uint8
    (N, H, W, C) scaled by 1/255 and transposed."""
    if x.ndim != 4:
        raise ValueError(f"'x' in {path!r} must be 4-D ((N, C, H, W) floats or (N, H, W, C) "
                         f"uint8), got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(np.divide(x, 255, dtype=np.float32).transpose(0, 3, 1, 2))
    if x.dtype.kind != "f":
        raise ValueError(f"'x' in {path!r} must be float (N, C, H, W) in [0, 1] or uint8 "
                         f"(N, H, W, C), got {x.dtype}")
    x = x.astype(np.float32)
    if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        raise ValueError(f"'x' in {path!r} must hold values in [0, 1], got "
                         f"[{np.nanmin(x)}, {np.nanmax(x)}]"
                         + ("" if np.isfinite(x).all() else " and non-finite values"))
    return x


# -------------------------------------------------------------------- model

def build_model(args, n_classes, in_channels, *, pretrained=True):
    """The model, initialised from nn.manual_seed(args.seed); with --weights
    (and pretrained=True) its arrays are read from that file, every one but
    the head's when the file's head has another class count."""
    nn.manual_seed(args.seed)
    model = models.MODELS[args.model](num_classes=n_classes, in_channels=in_channels)
    if args.weights and pretrained:
        load_pretrained(model, args.weights, args.model)
    return model


def load_pretrained(model, path, name):
    saved = io.read_metadata(path).get("architecture")
    if saved is not None and saved != name:
        raise ValueError(f"--weights {path!r} holds a {saved}, not a {name}")
    dtype = model.parameters()[0].dtype
    state = {k: v.astype(dtype, copy=False) if v.dtype.kind == "f" else v
             for k, v in io.read_state_dict(path).items()}
    current = model.state_dict()
    head = model.head_name + "."
    head_keys = [k for k in current if k.startswith(head)]
    if all(k in state for k in head_keys) and any(
            state[k].shape != current[k].shape for k in head_keys):
        state = {k: v for k, v in state.items() if not k.startswith(head)}   # new head
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except ValueError as err:
        raise ValueError(f"--weights {path!r} do not fit {name}: {err}") from None
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise ValueError(f"--weights {path!r} do not fit {name}: "
                         + "; ".join(f"{what} {_few(keys)}" for what, keys in
                                     (("missing", missing), ("unexpected", unexpected))
                                     if keys))


def _few(keys, n=4):
    shown = ", ".join(keys[:n])
    return f"key(s) {shown}" + (f" and {len(keys) - n} more" if len(keys) > n else "")


def build_optimizer(args, params):
    return _optimizer(args.optimizer, params, args.lr, args.momentum, args.weight_decay)


# --------------------------------------------------------------------- run

def run(args) -> float:
    from tqdm import tqdm

    def bar(iterable, desc, total=None):
        return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False,
                    disable=args.no_progress, file=sys.stderr)

    d = load_data(args)
    config = {k: getattr(args, k) for k in CONFIG_KEYS}
    config["data"] = os.path.abspath(args.data)
    config["weights"] = args.weights and os.path.abspath(args.weights)
    config["image_size"] = list(d.image_size)
    ckpt = _checkpoint.load_checkpoint(args.checkpoint_dir) if args.resume else None
    if ckpt is not None:
        _check_resumable(ckpt, config, d)
    model = build_model(args, len(d.classes), d.in_channels, pretrained=ckpt is None)
    if ckpt is not None:      # before anything runs the model (the frozen base's features)
        model.load_state_dict(ckpt.model)
    if args.freeze_base:
        model.freeze().eval()
        net = model.head.unfreeze().train()      # the only part trained
    else:
        net = model.train()
    net.skip_input_grad()                # its input is data: no gradient wrt it
    opt = build_optimizer(args, net.parameters())
    size = d.image_size
    augment: list = []
    if args.augment and not args.freeze_base:
        augment = [data.RandomHorizontalFlip(seed=args.seed + 1),
                   data.RandomCrop(size, padding=max(1, min(size) // 16), seed=args.seed + 2)]
    transform = data.Compose(augment) if augment else None
    train_set, val_set = d.train, d.val
    start = time.perf_counter()
    if args.freeze_base:    # feature extraction: the frozen base runs once per image
        train_set = _features(model, train_set, args.batch_size, bar, "features (train)")
        val_set = _features(model, val_set, args.batch_size, bar, "features (val)")
    x_train, y_train = _xy(train_set)
    loader = data.DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True,
                             transform=transform, seed=args.seed)
    rngs = {"init": nn.init.generator(), "shuffle": loader.rng}
    rngs.update({f"augment{i}": t.rng for i, t in enumerate(augment)})
    first = 1
    if ckpt is not None:
        opt.load_state_dict(ckpt.optimizer)
        _checkpoint.restore_rngs(ckpt, rngs)
        first = ckpt.epoch + 1
    elif args.checkpoint_dir:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
    print(f"{args.model}: {_count(d.train)} training / {_count(d.val)} validation images in "
          f"{len(d.classes)} classes at {size[0]}x{size[1]}"
          + (", base frozen" if args.freeze_base else "")
          + (f", from {args.weights}" if args.weights else ""))
    if ckpt is not None:
        print(f"resuming from {ckpt.path} after epoch {ckpt.epoch}")
    loss_fn = nn.CrossEntropyLoss()
    accuracy = float("nan")
    for epoch in range(first, args.epochs + 1):
        t0 = time.perf_counter()
        opt.lr = cosine_lr(args.lr, epoch, args.epochs)
        loss, train_acc = run_epoch(net, loss_fn, opt, bar(loader, f"epoch {epoch}/{args.epochs}",
                                                           total=len(loader)))
        accuracy = _accuracy(net, val_set, args.batch_size, bar)
        if args.checkpoint_dir:
            _checkpoint.save_checkpoint(
                args.checkpoint_dir, model=model, optimizer=opt, epoch=epoch, rngs=rngs,
                info={"config": config, "classes": d.classes, "fingerprint": d.fingerprint})
        print(f"epoch {epoch}/{args.epochs}: loss {loss:.4f} train_acc {train_acc:.4f} "
              f"val_acc {_fraction(accuracy)} ({time.perf_counter() - t0:.1f} s)", flush=True)
    if first > args.epochs:       # resumed after the last epoch: report it again
        accuracy = _accuracy(net, val_set, args.batch_size, bar)
    meta = {"architecture": args.model, "classes": list(d.classes),
            "preprocessing": d.preprocessing}
    path = io.save(model.eval(), args.output or f"{args.model}.npz", metadata=meta)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.1f} s; weights "
          f"saved to {path}")
    print(f"val accuracy: {_fraction(accuracy)}")
    return accuracy


def _fraction(accuracy):
    return "n/a (no validation split)" if np.isnan(accuracy) else f"{accuracy:.4f}"


def _check_resumable(ckpt, config, d):
    saved = ckpt.info.get("config", {})
    differ = [k for k in CONFIG_KEYS if _jsonish(saved.get(k)) != _jsonish(config[k])]
    if differ:
        raise ValueError(f"--resume: {ckpt.path!r} is from a run with other options: "
                         + ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} there, "
                                     f"{config[k]!r} now" for k in differ))
    if ckpt.info.get("classes") != list(d.classes) or ckpt.info.get("fingerprint") != \
            d.fingerprint:
        raise ValueError(f"--resume: the data in {config['data']!r} changed since "
                         f"{ckpt.path!r} was written (other classes or images)")


def _jsonish(value):
    return list(value) if isinstance(value, tuple) else value


def _count(source):
    return len(source[1]) if isinstance(source, tuple) else len(source)


def _xy(source):
    """DataLoader's (x, y) for a dataset (its items carry labels) or an (x, y) pair."""
    return source if isinstance(source, tuple) else (source, None)


def _batches(model_input, batch_size, bar, desc):
    """(x, y) batches of a Subset or an (x, y) pair, in order."""
    x, y = _xy(model_input)
    loader = data.DataLoader(x, y, batch_size=batch_size, shuffle=False)
    return bar(loader, desc, total=len(loader))


def _features(model, source, batch_size, bar, desc):
    """The frozen base's outputs for every image, as (features, labels)."""
    feats, labels = [], []
    for xb, yb in _batches(source, batch_size, bar, desc):
        feats.append(model.forward_features(xb))
        labels.append(yb)
    if not feats:
        return np.empty((0, model.head.in_features), np.float32), np.empty(0, np.int64)
    return np.concatenate(feats), np.concatenate(labels)


def _accuracy(net, source, batch_size, bar):
    """Validation accuracy in eval mode (nan without validation images)."""
    net.eval()
    right = total = 0
    for xb, yb in _batches(source, batch_size, bar, "validation"):
        right += int((net(xb).argmax(axis=1) == yb).sum())
        total += len(yb)
    net.train()
    return right / total if total else float("nan")
