"""`cnnfast predict WEIGHTS PATH... [--top K]`: classify image files with a
weights file `cnnfast train --data` wrote (it names the architecture, the
classes and the preprocessing). One line per image:

    PATH<TAB>class probability[<TAB>class probability ...]     (top K, best first)
"""
from __future__ import annotations

import os
import sys

import numpy as np

from . import data, io, models
from ._images import decode_image, list_images


class _Files:
    """Image files as a dataset DataLoader decodes in parallel (labels unused)."""

    def __init__(self, paths, prep):
        self.paths = paths
        self.targets = np.zeros(len(paths), np.int64)
        self.size = tuple(prep["image_size"])
        self.mode = prep["mode"]
        self.mean = np.asarray(prep["mean"], np.float64)
        self.std = np.asarray(prep["std"], np.float64)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.load(i), 0

    def load(self, i):
        return decode_image(self.paths[i], self.size, mode=self.mode, mean=self.mean,
                            std=self.std)


def read_model(path):
    """(eval-mode model, class names, preprocessing) from a weights file."""
    meta = io.read_metadata(path)
    arch, classes, prep = (meta.get(k) for k in ("architecture", "classes", "preprocessing"))
    if arch is None or classes is None or prep is None:
        raise ValueError(f"weights {path!r} do not name their architecture, classes and "
                         f"preprocessing: predict reads files written by `cnnfast train "
                         f"--data`")
    if arch not in models.MODELS:
        raise ValueError(f"weights {path!r} are for {arch!r}, which this cnnfast does not "
                         f"have (models: {', '.join(models.MODELS)})")
    if prep.get("mode") not in ("RGB", "L"):
        raise ValueError(f"weights {path!r} take {prep.get('in_channels')}-channel inputs; "
                         f"predict reads images as RGB (3 channels) or grayscale (1)")
    model = models.MODELS[arch](num_classes=len(classes), in_channels=prep["in_channels"])
    io.load(model, path)
    return model.eval(), list(classes), prep


def image_paths(paths):
    """Every file named, and every image file below every folder named (as
    ImageFolder walks one); a missing path or an empty folder is an error."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = list_images(p)
            if not found:
                raise ValueError(f"folder {p!r} holds no image files")
            out += found
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ValueError(f"{p!r}: no such file or folder")
    return out


def run(args) -> int:
    from tqdm import tqdm

    model, classes, prep = read_model(args.weights)
    paths = image_paths(args.paths)
    k = min(args.top, len(classes))
    loader = data.DataLoader(_Files(paths, prep), batch_size=args.batch_size, shuffle=False)
    done = 0
    for x, _ in tqdm(loader, unit="batch", leave=False, file=sys.stderr,
                     disable=args.no_progress):
        for p in _softmax(model(x)):
            best = np.argsort(-p, kind="stable")[:k]
            print(paths[done] + "".join(f"\t{classes[c]} {p[c]:.4f}" for c in best))
            done += 1
    return 0


def _softmax(logits):
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)
