"""cnnfast.data: the mini-batch iterator and the NCHW batch augmentations."""
import numpy as np
import pytest

from cnnfast.data import (Compose, DataLoader, Normalize, RandomCrop, RandomHorizontalFlip,
                          RandomRotation)


def _batch(rng, n=6, c=2, h=7, w=9):
    return rng.standard_normal((n, c, h, w)).astype(np.float32)


def test_loader_covers_every_sample_once_per_epoch():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    loader = DataLoader(x, y, batch_size=4, seed=0)
    assert len(loader) == 3
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(b[1]) for b in batches] == [4, 4, 2]
        seen = np.concatenate([b[1] for b in batches])
        assert sorted(seen) == list(range(10))
        for xb, yb in batches:
            np.testing.assert_array_equal(xb.ravel(), yb)   # pairs stay together
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])         # reshuffled each epoch
    assert len(DataLoader(x, y, batch_size=4, drop_last=True)) == 2
    ordered = np.concatenate([b for _, b in DataLoader(x, y, batch_size=3, shuffle=False)])
    np.testing.assert_array_equal(ordered, y)


def test_loader_is_reproducible_and_validates():
    x = np.arange(20.0).reshape(20, 1, 1, 1)
    a = [b.ravel() for b in DataLoader(x, batch_size=5, seed=3)]
    b = [b.ravel() for b in DataLoader(x, batch_size=5, seed=3)]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(x, batch_size=0)
    with pytest.raises(ValueError, match="same length"):
        DataLoader(x, np.arange(3))


def test_horizontal_flip(rng):
    x = _batch(rng, n=40)
    out = RandomHorizontalFlip(p=0.5, seed=0)(x)
    flipped = [np.array_equal(o, s[..., ::-1]) for o, s in zip(out, x)]
    kept = [np.array_equal(o, s) for o, s in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 5 < sum(flipped) < 35
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x), x)


def test_random_crop_takes_windows_of_the_padded_input(rng):
    x = _batch(rng, n=20)
    out = RandomCrop((7, 9), padding=2, seed=1)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for o, p in zip(out, padded):
        hits = [(i, j) for i in range(5) for j in range(5)
                if np.array_equal(o, p[:, i:i + 7, j:j + 9])]
        assert hits, "each crop is a window of the padded sample"
        offsets.add(hits[0])
    assert len(offsets) > 3
    assert RandomCrop(4, seed=0)(x).shape == (20, 2, 4, 4)
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(20)(x)
    with pytest.raises(ValueError, match="padding"):
        RandomCrop(4, padding=-1)


def test_random_rotation(rng):
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 0, 4] = 1                         # top centre
    quarter = RandomRotation((90, 90), seed=0)(x)
    assert np.unravel_index(quarter.argmax(), quarter.shape)[2:] == (4, 0)  # counter-clockwise
    batch = _batch(rng, n=4, h=9, w=9)
    np.testing.assert_allclose(RandomRotation(0, seed=0)(batch), batch, atol=1e-6)
    out = RandomRotation(30, seed=0)(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    with pytest.raises(ValueError, match="degrees"):
        RandomRotation(-5)


def test_seeded_transforms_repeat(rng):
    x = _batch(rng)
    make = lambda: Compose([RandomRotation(15, seed=2), RandomCrop((7, 9), 1, seed=3),  # noqa: E731
                            RandomHorizontalFlip(seed=4)])
    np.testing.assert_array_equal(make()(x), make()(x))


def test_normalize(rng):
    x = _batch(rng)
    out = Normalize([1.0, -2.0], [2.0, 0.5])(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], (x[:, 0] - 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], (x[:, 1] + 2) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(Normalize(0.5, 2.0)(x), (x - 0.5) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="std"):
        Normalize([0.0], [0.0])
    with pytest.raises(ValueError, match="channels"):
        Normalize([0, 0, 0], [1, 1, 1])(x)


def test_transforms_leave_the_input_alone(rng):
    x = _batch(rng)
    keep = x.copy()
    Compose([RandomRotation(10, seed=0), RandomCrop((7, 9), 2, seed=0),
             RandomHorizontalFlip(seed=0), Normalize(0, 2)])(x)
    np.testing.assert_array_equal(x, keep)
