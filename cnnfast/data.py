"""Mini-batches and augmentations for NCHW NumPy arrays, and image folders.

Every random transform owns a numpy Generator built from its `seed` (an int,
a Generator, or None for fresh entropy), so a pipeline built with fixed seeds
produces the same batches every run. Transforms act on a whole batch (each
sample gets its own random draw) and return new arrays; inputs are never
modified.
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage

from ._images import BatchReader, ImageFolder

__all__ = ["DataLoader", "Compose", "Normalize", "RandomHorizontalFlip", "RandomCrop",
           "RandomRotation", "ImageFolder", "Subset"]


def _check_batch(x, who):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"{who} expects an (N, C, H, W) array, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")


def _pair(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Integral) and v >= 0 for v in value)):
        raise ValueError(f"{name} must be an int or a pair of ints >= 0, got {value!r}")
    return tuple(int(v) for v in value)


def _is_dataset(x):
    """A dataset object (ImageFolder, Subset, anything with len() and
    ds[i] -> (x, y)) rather than an array, an array-like (dask, h5py, memmap:
    they have __array__) or a list of arrays."""
    return (not isinstance(x, (np.ndarray, list, tuple)) and not hasattr(x, "__array__")
            and hasattr(x, "__len__") and hasattr(x, "__getitem__"))


class Subset:
    """The items of `dataset` at `indices` (torch.utils.data.Subset), e.g. a
    train/validation split of an ImageFolder: `Subset(ds, idx)[j]` is
    `ds[idx[j]]`."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise ValueError(f"indices must be a 1-D sequence of ints, got {indices!r}")
        n = len(dataset)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ValueError(f"indices must lie in [-{n}, {n}) for a dataset of {n} items, "
                             f"got values from {idx.min()} to {idx.max()}")
        self.indices = idx.astype(np.int64) % max(n, 1)
        labels = getattr(dataset, "targets", None)
        self._targets = None if labels is None else np.asarray(labels)[self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[int(self.indices[i])]

    def load(self, i):
        return self.dataset.load(int(self.indices[i]))

    @property
    def targets(self):
        """The labels of the selected items (when the dataset has `.targets`)."""
        if self._targets is None:
            raise AttributeError(f"{type(self.dataset).__name__} has no targets")
        return self._targets


class DataLoader:
    """Iterate over (x_batch, y_batch) pairs; a fresh shuffle every epoch.

        loader = DataLoader(x, y, batch_size=64, shuffle=True, seed=0,
                            transform=RandomHorizontalFlip(seed=1))
        for epoch in range(10):
            for xb, yb in loader: ...

    `x` is an array (with labels `y`, or y=None to yield x batches only) or a
    dataset (ImageFolder, Subset, or any object with len() and
    ds[i] -> (image, label); then y must be None). An ImageFolder (or a
    Subset of one) is decoded on `num_workers` threads (None: the kernels'
    thread count, cnnfast.get_num_threads(); 0: in the calling thread), one
    batch ahead of the one being used. `transform` (applied to x batches
    only) runs per batch, in the calling thread and in batch order, so seeded
    transforms repeat exactly whatever the thread count. The last short batch
    is kept unless drop_last=True.
    """

    def __init__(self, x, y=None, batch_size=32, shuffle=True, drop_last=False,
                 transform=None, seed=None, *, num_workers=None):
        if _is_dataset(x):
            if y is not None:
                raise ValueError("y must be None when x is a dataset: its items carry the "
                                 "labels")
            self.dataset = x
        else:
            self.dataset = None
            x = np.asarray(x)
            if y is not None:
                y = np.asarray(y)
                if len(y) != len(x):
                    raise ValueError(f"x and y must have the same length, got {len(x)} and "
                                     f"{len(y)}")
        if (not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool)
                or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if num_workers is not None and (not isinstance(num_workers, numbers.Integral)
                                        or isinstance(num_workers, bool) or num_workers < 0):
            raise ValueError(f"num_workers must be None or an int >= 0, got {num_workers!r}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.transform = transform
        self.num_workers = num_workers
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _batches(self):
        n = len(self.x)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(len(self))]

    def __iter__(self):
        batches = self._batches()
        if self.dataset is None:
            source = ((self.x[idx], None if self.y is None else self.y[idx]) for idx in batches)
        elif hasattr(self.dataset, "load") and hasattr(self.dataset, "targets"):
            source = self._decoded(batches)
        else:
            source = (_stack_items(self.dataset, idx) for idx in batches)
        for xb, yb in source:
            if self.transform is not None:
                xb = self.transform(xb)
            yield xb if self.y is None and self.dataset is None else (xb, yb)

    def _decoded(self, batches):
        """Image batches decoded on a thread pool, the next one in flight
        while the caller works on the current one."""
        from . import get_num_threads
        threads = get_num_threads() if self.num_workers is None else self.num_workers
        with BatchReader(self.dataset, threads) as reader:
            pending = reader.submit(batches[0]) if batches else None
            for k in range(len(batches)):
                current = pending
                pending = reader.submit(batches[k + 1]) if k + 1 < len(batches) else None
                yield reader.collect(current)


def _stack_items(dataset, indices):
    items = [dataset[int(i)] for i in indices]
    return np.stack([x for x, _ in items]), np.array([y for _, y in items])


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose takes callables, got {type(t).__name__}")

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self):
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class Normalize:
    """(x - mean[c]) / std[c] per channel; keeps the input's dtype."""

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if (self.mean.ndim != 1 or self.std.ndim != 1 or self.mean.size != self.std.size
                and 1 not in (self.mean.size, self.std.size)):
            raise ValueError(f"mean and std must be numbers or per-channel sequences of the "
                             f"same length, got {mean!r} and {std!r}")
        if np.any(self.std == 0):
            raise ValueError(f"std must be non-zero, got {std!r}")

    def __call__(self, x):
        _check_batch(x, "Normalize")
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, x.shape[1]):
                raise ValueError(f"Normalize has {v.size} {name} values for {x.shape[1]} "
                                 f"channels")
        mean = self.mean.astype(x.dtype)[:, None, None]
        std = self.std.astype(x.dtype)[:, None, None]
        return (x - mean) / std

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomHorizontalFlip:
    """Mirror each sample left-right with probability p."""

    def __init__(self, p=0.5, seed=None):
        if not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)

    def __call__(self, x):
        _check_batch(x, "RandomHorizontalFlip")
        flip = self.rng.random(len(x)) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop:
    """Pad each sample by `padding` (int, or (pad_h, pad_w)) with `fill`, then
    cut a `size` (int or (h, w)) window at a random position per sample."""

    def __init__(self, size, padding=0, fill=0.0, seed=None):
        self.size = _pair(size, "size")
        if min(self.size) < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        self.padding = _pair(0 if padding is None else padding, "padding")
        self.fill = fill
        self.rng = np.random.default_rng(seed)

    def __call__(self, x):
        _check_batch(x, "RandomCrop")
        (ph, pw), (h, w) = self.padding, self.size
        padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=self.fill)
        H, W = padded.shape[2:]
        if h > H or w > W:
            raise ValueError(f"RandomCrop size {self.size} is larger than the padded input "
                             f"({H}, {W})")
        top = self.rng.integers(0, H - h + 1, size=len(x))
        left = self.rng.integers(0, W - w + 1, size=len(x))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        # windows: (N, C, H-h+1, W-w+1, h, w); pick one window per sample
        return np.ascontiguousarray(windows[np.arange(len(x)), :, top, left])

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomRotation:
    """Rotate each sample by an angle drawn uniformly from `degrees` (a number d
    means (-d, d)); positive angles turn counter-clockwise, as torchvision.
    Bilinear interpolation; corners outside the image get `fill`."""

    def __init__(self, degrees, fill=0.0, seed=None):
        if isinstance(degrees, (int, float)):
            if degrees < 0:
                raise ValueError(f"degrees must be >= 0 when a single number, got {degrees!r}")
            degrees = (-degrees, degrees)
        if (not isinstance(degrees, (tuple, list)) or len(degrees) != 2
                or not degrees[0] <= degrees[1]):
            raise ValueError(f"degrees must be a number or a (min, max) pair, got {degrees!r}")
        self.degrees = (float(degrees[0]), float(degrees[1]))
        self.fill = float(fill)
        self.rng = np.random.default_rng(seed)

    def __call__(self, x):
        _check_batch(x, "RandomRotation")
        angles = self.rng.uniform(*self.degrees, size=len(x))
        out = np.empty_like(x)
        for i, angle in enumerate(angles):
            # axes (W, H) of a (C, H, W) sample: positive = counter-clockwise on screen
            out[i] = ndimage.rotate(x[i], angle, axes=(2, 1), reshape=False, order=1,
                                    mode="constant", cval=self.fill)
        return out

    def __repr__(self):
        return f"RandomRotation(degrees={self.degrees})"
