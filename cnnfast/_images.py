"""Image files as arrays: torchvision's ImageFolder layout, decoded with Pillow.

    root/cat/001.jpg, root/cat/kitten.png, root/dog/a.jpg, ...

Each image is decoded, converted (RGB, or L for one-channel models), resized
bilinearly so its shorter side is `image_size` (torchvision's Resize: the
longer side truncated), centre-cropped to a square (CenterCrop's rounding),
scaled to [0, 1] (ToTensor: a division by 255) and normalised by mean/std
(Normalize). The arithmetic is torchvision's, so arrays match its transform
pipeline on the same file to float rounding of the resampler.

Decoding is lazy (files are read when an item is asked for) and parallel:
Pillow releases the GIL while it decodes and resamples, so a thread pool
decodes a batch on every core; `DataLoader` keeps one batch in flight while
the model trains on the previous one.
"""
from __future__ import annotations

import numbers
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _validation as V

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS", "list_images", "decode_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_INSTALL_HINT = 'pip install "cnnfast[images]"'


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"reading image files needs Pillow: {_INSTALL_HINT}") from None
    return Image


def is_image_file(name) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder) -> list:
    """Every image file below `folder` (recursively, symlinks followed once),
    sorted by path; hidden files and folders (names starting with ".") and
    files with other extensions are skipped."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:              # a symlink loop: walk each folder once
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames if is_image_file(f)]
    return sorted(found)


def _crop_box(width, height, size):
    """torchvision's Resize(shorter side) then CenterCrop(size): the resized
    (w, h) and the crop box in it. `size` is (h, w)."""
    th, tw = size
    # the scale that makes the image cover the crop; for a square crop this is
    # "shorter side to size", the longer side truncated as torchvision does
    if width * th <= height * tw:
        new_w, new_h = tw, max(int(tw * height / width), th)
    else:
        new_w, new_h = max(int(th * width / height), tw), th
    top = int(round((new_h - th) / 2.0))
    left = int(round((new_w - tw) / 2.0))
    return (new_w, new_h), (left, top, left + tw, top + th)


def decode_image(path, size, *, mode="RGB", mean=None, std=None, dtype=np.float32,
                 channels_last=False):
    """One image file as a (C, h, w) array (or (h, w, C)), preprocessed as the
    module docstring says. `size` is (h, w). A file Pillow cannot decode
    raises ValueError naming it."""
    Image = _pillow()
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            im = im.convert(mode)     # decodes (GIL released inside Pillow)
        resized, box = _crop_box(im.width, im.height, size)
        if resized != im.size:
            # Image.Resampling is Pillow >= 9.1; the module constant works in every 9.x+
            im = im.resize(resized, getattr(Image, "Resampling", Image).BILINEAR)
        if box != (0, 0, *im.size):
            im = im.crop(box)
        pixels = np.asarray(im)
    except Image.DecompressionBombError as err:
        raise ValueError(f"image file {path!r} is too large to decode safely: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ValueError(f"cannot decode image file {path!r}: {err}") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    x = np.divide(pixels, 255, dtype=dtype)          # ToTensor: float / 255
    if mean is not None:
        x -= mean.astype(dtype)
        x /= std.astype(dtype)
    return x if channels_last else np.ascontiguousarray(x.transpose(2, 0, 1))


def _mean_std(mean, std):
    if (mean is None) != (std is None):
        raise ValueError(f"give both mean and std or neither, got mean={mean!r}, std={std!r}")
    if mean is None:
        return None, None
    m = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    s = np.atleast_1d(np.asarray(std, dtype=np.float64))
    for name, v, given in (("mean", m, mean), ("std", s, std)):
        if v.ndim != 1 or v.size not in (1, 3) or not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be a number or 3 per-channel numbers, got {given!r}")
    if np.any(s == 0):
        raise ValueError(f"std must be non-zero, got {std!r}")
    return m, s


def _scan(root, classes):
    """(class names, [(path, label)]) of an ImageFolder root; every layout
    error is raised here, before any image is read."""
    if not os.path.isdir(root):
        raise ValueError(f"root {root!r} is not a folder")
    folders = sorted(e.name for e in os.scandir(root)
                     if not e.name.startswith(".") and e.is_dir())
    if classes is None:
        if not folders:
            raise ValueError(f"root {root!r} has no class folders: put each class's images "
                             f"in a subfolder named after the class (root/cat/1.jpg, "
                             f"root/dog/2.jpg, ...)")
        classes = folders
    else:
        if (not isinstance(classes, (list, tuple)) or not classes
                or not all(isinstance(c, str) for c in classes)):
            raise ValueError(f"classes must be None or a non-empty list of folder names, "
                             f"got {classes!r}")
        dupes = sorted({c for c in classes if list(classes).count(c) > 1})
        if dupes:
            raise ValueError(f"classes lists {dupes} more than once")
        missing = [c for c in classes if c not in folders]
        if missing:
            raise ValueError(f"classes lists {missing}, which have no folder in root {root!r} "
                             f"(class folders there: {folders})")
        classes = list(classes)
    samples = []
    for label, name in enumerate(classes):
        files = list_images(os.path.join(root, name))
        if not files:
            raise ValueError(f"class folder {os.path.join(root, name)!r} holds no image "
                             f"files ({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(f, label) for f in files]
    return classes, samples


class ImageFolder:
    """A labelled image dataset laid out as torchvision's ImageFolder.

        ds = ImageFolder("pets", image_size=224, mean=[0.485, 0.456, 0.406],
                         std=[0.229, 0.224, 0.225])
        ds.classes            # ['cat', 'dog'] (sorted folder names)
        x, label = ds[0]      # (3, 224, 224) float32, 0
        for xb, yb in DataLoader(ds, batch_size=32, transform=RandomHorizontalFlip(seed=0)):
            ...

    `classes=None` takes every class folder (sorted by name); a list takes
    those folders in that label order. Images are read when asked for; a file
    that does not decode raises ValueError naming it then.
    """

    def __init__(self, root, *, image_size=224, classes=None, mean=None, std=None,
                 data_format="channels_first", dtype=np.float32):
        self.root = os.fspath(root)
        self.image_size = V.positive_int(image_size, "image_size")
        self.channels_last = V.channels_last(data_format)
        self.data_format = data_format
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.mean, self.std = _mean_std(mean, std)
        _pillow()                                    # fail now, not at the first batch
        self.classes, self.samples = _scan(self.root, classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = np.array([label for _, label in self.samples], dtype=np.int64)

    def __len__(self):
        return len(self.samples)

    def _index(self, i):
        if not isinstance(i, numbers.Integral) or isinstance(i, bool):
            raise TypeError(f"ImageFolder index must be an int, got {type(i).__name__}")
        n = len(self.samples)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n} images")
        return int(i) % n

    def load(self, i):
        """The image at index i as an array (decoded now)."""
        path, _ = self.samples[self._index(i)]
        return decode_image(path, (self.image_size, self.image_size), mean=self.mean,
                            std=self.std, dtype=self.dtype, channels_last=self.channels_last)

    def __getitem__(self, i):
        return self.load(i), int(self.samples[self._index(i)][1])

    def __repr__(self):
        return (f"ImageFolder(root={self.root!r}, {len(self)} images, "
                f"{len(self.classes)} classes, image_size={self.image_size})")


class BatchReader:
    """Decodes the images of a batch on a thread pool, for any dataset with
    `load(i)` (an image array) and `targets` (int labels): ImageFolder and a
    Subset of one. `submit(indices)` starts decoding and returns a handle;
    `collect(handle)` waits and returns (x, y), the images stacked in index
    order (a decoding error is raised here). With threads == 0 everything is
    decoded in the calling thread, at collect()."""

    def __init__(self, dataset, threads):
        self.dataset = dataset
        self.pool = ThreadPoolExecutor(threads) if threads >= 1 else None

    def submit(self, indices):
        indices = [int(i) for i in indices]
        if self.pool is None:
            return indices, None
        return indices, [self.pool.submit(self.dataset.load, i) for i in indices]

    def collect(self, handle):
        indices, futures = handle
        ds = self.dataset
        images = ([ds.load(i) for i in indices] if futures is None
                  else [f.result() for f in futures])
        return np.stack(images), np.asarray(ds.targets)[indices]

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

