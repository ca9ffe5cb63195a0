"""Weights on disk: a module's state dict as a NumPy .npz archive.

The archive also records the class name of the module that wrote it, so
loading into a different architecture reports both names instead of a bare
list of key differences.
"""
from __future__ import annotations

import os

import numpy as np

from .nn.module import Module

_ARCH_KEY = "__cnnfast_architecture__"


def _check_module(module):
    if not isinstance(module, Module):
        raise TypeError(f"module must be a cnnfast.nn.Module, got {type(module).__name__}")


def save(module, path) -> str:
    """Write module.state_dict() to `path` (.npz is appended if missing, as
    numpy.savez does). Returns the path written."""
    _check_module(module)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays = module.state_dict()
    np.savez(path, **arrays, **{_ARCH_KEY: np.array(type(module).__name__)})
    return path


def load(module, path, strict=True):
    """Load weights written by `save` into `module` (in place) and return it.
    Keys and shapes must match the module exactly (strict=True); a file made
    for another architecture raises ValueError naming both."""
    _check_module(module)
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path += ".npz"
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    saved_arch = str(arrays.pop(_ARCH_KEY, "unknown"))
    try:
        module.load_state_dict(arrays, strict=strict)
    except ValueError as err:
        here = type(module).__name__
        hint = (f"it was saved from a {saved_arch}, not a {here}" if saved_arch != here
                else f"it was saved from a {saved_arch} with different layer sizes")
        raise ValueError(f"cannot load {path!r} into {here}: {hint}\n{err}") from None
    return module
