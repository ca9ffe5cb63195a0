"""The `cnnfast` command (also `python -m cnnfast`).

    cnnfast train lenet5                 # LeNet-5 on scikit-learn's 8x8 digits
    cnnfast train --model resnet18 --epochs 5 --optimizer adam --lr 1e-3
    cnnfast train resnet18 --data pets/ --weights resnet18-f37072fd.pth --freeze-base
    cnnfast predict resnet18.npz photo.jpg more_photos/ --top 2
    cnnfast bench --quick                # the kernel benchmark (cnnfast.bench)

`train` without --data upsamples the 1797 digits to 32x32 (28x28 bilinear,
2 pixels of border, as MNIST is fed to LeNet-5), holds out a fixed
stratified 20% as the test set, trains with a tqdm bar per epoch, saves the
weights as .npz and prints `test accuracy: ...` as its last line. With
--data it trains on a folder of class folders or an .npz (cnnfast._train).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from ._malloc import keep_freed_memory

# Per-model input size: AlexNet's stride-4 stem and three 3x3/2 max pools need
# at least 63x63; everything else runs on LeNet's 32x32.
IMAGE_SIZE = {"alexnet": 64}
DEFAULTS = dict(epochs=30, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9,
                weight_decay=1e-4)
# --data runs default to Adam: Nesterov SGD at 0.05 suits the digits but makes a
# ResNet trained from scratch on a few hundred images diverge in its first epochs
DATA_DEFAULTS = dict(optimizer="adam", lr=1e-3)


def load_digits_32(size=32, seed=0):
    """scikit-learn's digits as (N, 1, size, size) float32 in [0, 1], split
    80/20 (stratified, fixed seed) -> (x_train, y_train, x_test, y_test)."""
    from scipy import ndimage
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float64)[:, None] / 16.0        # (N, 1, 8, 8)
    inner = size - 4                                                  # 2-pixel border
    images = ndimage.zoom(images, (1, 1, inner / 8, inner / 8), order=1)
    images = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    images = np.clip(images, 0, 1).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.2,
                                              random_state=seed, stratify=labels)
    return x_tr, y_tr, x_te, y_te


def build_optimizer(name, params, lr, momentum, weight_decay):
    from . import optim
    if name == "sgd":
        return optim.SGD(params, lr, momentum=momentum, weight_decay=weight_decay,
                         nesterov=momentum > 0)
    return optim.Adam(params, lr=lr, weight_decay=weight_decay)


def cosine_lr(lr, epoch, epochs):
    """Cosine decay per epoch (1-based): large steps early, fine ones at the end."""
    return lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / epochs))


def run_epoch(net, loss_fn, opt, bar):
    """One pass of SGD steps over the (x, y) batches of a tqdm bar, showing
    the running loss and accuracy; returns (mean loss, accuracy)."""
    seen = correct = 0
    total_loss = 0.0
    for xb, yb in bar:
        logits = net(xb)
        loss = loss_fn(logits, yb)
        opt.zero_grad()
        net.backward(loss_fn.backward())
        opt.step()
        seen += len(yb)
        correct += int((logits.argmax(axis=1) == yb).sum())
        total_loss += loss * len(yb)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return total_loss / max(seen, 1), correct / max(seen, 1)


def predict(model, x, batch_size=256):
    """Class predictions in eval mode, in batches (no caches kept)."""
    model.eval()
    out = [np.argmax(model(x[i:i + batch_size]), axis=1) for i in range(0, len(x), batch_size)]
    model.train()
    return np.concatenate(out)


def train(args) -> float:
    from tqdm import tqdm

    from . import data, io, models, nn

    size = args.image_size or IMAGE_SIZE.get(args.model, 32)
    x_tr, y_tr, x_te, y_te = load_digits_32(size)
    mean, std = float(x_tr.mean()), float(x_tr.std())
    normalize = data.Normalize([mean], [std])
    augment = []
    if args.augment:
        augment = [data.RandomRotation(10, seed=args.seed + 1),
                   data.RandomCrop(size, padding=2, seed=args.seed + 2)]
    loader = data.DataLoader(x_tr, y_tr, batch_size=args.batch_size, shuffle=True,
                             transform=data.Compose(augment + [normalize]), seed=args.seed)
    x_te = normalize(x_te)

    nn.manual_seed(args.seed)
    model = models.MODELS[args.model](num_classes=10, in_channels=1)
    model.train().skip_input_grad()   # the images are data: no gradient wrt them
    loss_fn = nn.CrossEntropyLoss()
    opt = build_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum,
                          args.weight_decay)
    print(f"{args.model}: {len(x_tr)} training / {len(x_te)} test digits at {size}x{size}, "
          f"{sum(p.data.size for p in model.parameters())} parameters")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        opt.lr = cosine_lr(args.lr, epoch, args.epochs)
        bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch",
                   disable=args.no_progress, leave=True, file=sys.stderr)
        run_epoch(model, loss_fn, opt, bar)
    elapsed = time.perf_counter() - start
    accuracy = float((predict(model, x_te) == y_te).mean())
    path = io.save(model, args.output or f"{args.model}.npz")
    print(f"trained {args.epochs} epochs in {elapsed:.1f} s; weights saved to {path}")
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy


def make_parser():
    from .models import MODELS

    p = argparse.ArgumentParser(prog="cnnfast", description="cnnfast command line")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", help="kernel benchmark report (see `cnnfast bench --help`)",
                   add_help=False)
    t = sub.add_parser("train", help="train a model on your images or scikit-learn's digits",
                       description=__doc__.split("\n\n")[1],
                       formatter_class=_HelpFormatter)
    t.add_argument("model_name", nargs="?", choices=sorted(MODELS), metavar="MODEL",
                   help=f"architecture: {', '.join(MODELS)} (default lenet5)")
    t.add_argument("--model", dest="model_option", choices=sorted(MODELS),
                   help="same as the positional MODEL")
    t.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    t.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    t.add_argument("--lr", type=float,
                   help=f"initial learning rate, cosine-decayed per epoch (default "
                        f"{DEFAULTS['lr']}; {DATA_DEFAULTS['lr']} with --data)")
    t.add_argument("--optimizer", choices=["sgd", "adam"],
                   help=f"sgd is Nesterov SGD with --momentum (default sgd; "
                        f"{DATA_DEFAULTS['optimizer']} with --data)")
    t.add_argument("--momentum", type=float, default=DEFAULTS["momentum"])
    t.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random rotations (+-10 degrees) and 2-pixel random crops of "
                        "the training batches")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--output", "-o", help="weights file (default: MODEL.npz)")
    t.add_argument("--image-size", type=int,
                   help="input size (digits: default 32, 64 for alexnet; image folders: "
                        "default 64, 32 for lenet5; use 224 with ImageNet weights on photos)")
    t.add_argument("--threads", type=int, help="kernel threads (default: all cores)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = t.add_argument_group("your own images (need --data)")
    g.add_argument("--data", metavar="DIR|FILE.npz",
                   help="a folder with one subfolder of images per class, or an .npz with "
                        "x ((N, C, H, W) floats in [0, 1] or (N, H, W, C) uint8), y (int "
                        "labels) and optionally classes (names); default: the digits")
    g.add_argument("--val-split", type=float, metavar="FRACTION",
                   help="share of each class held out for validation (stratified, seeded "
                        "by --seed; default 0.2)")
    g.add_argument("--weights", metavar="PATH",
                   help="start from these weights (.npz, .safetensors, torchvision's .pth); "
                        "the head is replaced when the class count differs")
    g.add_argument("--freeze-base", action="store_true",
                   help="train the head only: the base runs once per image in eval mode, "
                        "without augmentation, and its arrays stay as loaded")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="write DIR/checkpoint.npz after every epoch (atomically)")
    g.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint-dir's checkpoint (same options): ends "
                        "bit for bit as the uninterrupted run at the same --threads")

    pr = sub.add_parser("predict", help="classify images with weights from train --data",
                        formatter_class=_HelpFormatter,
                        description="One line per image: PATH<TAB>class probability for "
                                    "each of the top K classes (best first). Folders are "
                                    "walked recursively; hidden and non-image files skipped.")
    pr.add_argument("weights", metavar="WEIGHTS", help="a weights file `train --data` wrote")
    pr.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    pr.add_argument("--top", type=int, default=1, metavar="K",
                    help="classes per image (capped at the class count)")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--threads", type=int, help="kernel and decoding threads "
                                                "(default: all cores)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the description's example lines kept as written."""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    if argv[:1] == ["bench"]:
        # everything after `bench` belongs to the benchmark's own parser
        from .bench.__main__ import main as bench_main
        return bench_main(argv[1:]) or 0
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command == "predict":
        _check_predict(parser, args)
    else:
        _check_train(parser, args)
    try:
        if args.threads:
            import cnnfast
            cnnfast.set_num_threads(args.threads)
        if args.command == "predict":
            from . import _predict
            _predict.run(args)
        elif args.data is None:
            train(args)
        else:
            from . import _train
            _train.run(args)
        return 0
    except BrokenPipeError:
        # the reader went away (`cnnfast predict ... | head`): stop quietly, and
        # point stdout at devnull so the interpreter's final flush does not fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    # a bad file or folder (corrupt image, wrong weights, no checkpoint, ...):
    # one line naming it, exit 1; usage errors above exit 2
    except (ValueError, OSError, ImportError) as err:
        print(f"cnnfast: error: {err}", file=sys.stderr)
        return 1


def _check_predict(parser, args):
    for name in ("top", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive int")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be a positive int")


def _check_train(parser, args):
    if args.model_name and args.model_option and args.model_name != args.model_option:
        parser.error(f"two different models given: {args.model_name} and {args.model_option}")
    args.model = args.model_name or args.model_option or "lenet5"
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive int")
    for name in ("optimizer", "lr"):
        if getattr(args, name) is None:
            setattr(args, name, (DEFAULTS if args.data is None else DATA_DEFAULTS)[name])
    if args.lr <= 0:
        parser.error("--lr must be positive")
    for name in ("momentum", "weight_decay"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be a positive int")
    if args.image_size is not None and args.image_size < 1:
        parser.error("--image-size must be a positive int")
    if args.data is None:
        given = [f"--{k.replace('_', '-')}" for k in
                 ("val_split", "weights", "freeze_base", "checkpoint_dir", "resume")
                 if getattr(args, k) not in (None, False)]
        if given:
            parser.error(f"{', '.join(given)} need(s) --data (a folder of images or an .npz)")
        return
    if args.val_split is None:
        args.val_split = 0.2
    if not 0 <= args.val_split < 1:
        parser.error(f"--val-split must be in [0, 1), got {args.val_split}")
    if args.resume and not args.checkpoint_dir:
        parser.error("--resume needs --checkpoint-dir (the folder holding the checkpoint)")
    if args.data.lower().endswith(".npz") and args.image_size is not None:
        parser.error("--image-size applies to image folders; an .npz's images are used at "
                     "their size")


if __name__ == "__main__":
    sys.exit(main())
