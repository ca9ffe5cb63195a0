"""Parameter initialisation, drawn from one process-wide generator.

Like torch's global RNG: `manual_seed(s)` makes every layer built (and every
dropout mask drawn) afterwards reproducible. The schemes are torch.nn.init's,
so a freshly built layer has the same weight *distribution* as its torch twin.
"""
from __future__ import annotations

import math

import numpy as np

_rng = np.random.default_rng()


def manual_seed(seed) -> None:
    """Reseed the generator behind initialisation and dropout."""
    global _rng
    _rng = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _rng


def fan_in(shape) -> int:
    """Inputs feeding one output unit: C_in (per group) x kernel taps."""
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def fan_out(shape) -> int:
    return int(shape[0] * np.prod(shape[2:])) if len(shape) > 1 else int(shape[0])


def uniform(shape, bound, dtype) -> np.ndarray:
    """U(-bound, bound), drawn directly in `dtype` (VGG's 100M-weight layer
    would need a 800 MB float64 temporary otherwise)."""
    dtype = np.dtype(dtype)
    out = _rng.random(size=shape, dtype=dtype)
    out *= dtype.type(2 * bound)
    out -= dtype.type(bound)
    return out


def normal(shape, std, dtype, mean=0.0) -> np.ndarray:
    dtype = np.dtype(dtype)
    out = _rng.standard_normal(size=shape, dtype=dtype)
    out *= dtype.type(std)
    out += dtype.type(mean)
    return out


def kaiming_uniform(shape, dtype, a=math.sqrt(5)) -> np.ndarray:
    """torch's default for conv/linear weights. With a = sqrt(5) the bound
    sqrt(6 / ((1 + a^2) fan_in)) works out to 1 / sqrt(fan_in)."""
    gain = math.sqrt(2.0 / (1 + a * a))
    return uniform(shape, math.sqrt(3.0) * gain / math.sqrt(fan_in(shape)), dtype)


def kaiming_normal_fan_out(shape, dtype) -> np.ndarray:
    """torchvision's ResNet/VGG conv init: N(0, 2 / fan_out) (mode='fan_out', relu)."""
    return normal(shape, math.sqrt(2.0 / fan_out(shape)), dtype)


def trunc_normal(shape, std, dtype, a=-2.0, b=2.0) -> np.ndarray:
    """N(0, std^2) truncated to [a, b] (absolute bounds, as torch.nn.init.trunc_normal_),
    by redrawing the samples that fall outside."""
    out = _rng.standard_normal(size=shape) * std
    bad = (out < a) | (out > b)
    while bad.any():
        out[bad] = _rng.standard_normal(size=int(bad.sum())) * std
        bad = (out < a) | (out > b)
    return out.astype(dtype)
