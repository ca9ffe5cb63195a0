"""Training checkpoints: everything a run needs to continue exactly.

One file per run folder, `checkpoint.npz`, replaced atomically after every
epoch (io.write_atomically), so a kill at any moment leaves the previous
epoch's checkpoint whole. It is a plain .npz (no pickle, read with
allow_pickle=False):

    model/<state dict key>      the model's parameters and buffers
    optim/<i>/<name>            the optimizer's per-parameter arrays
    __checkpoint__              JSON: format, epoch, the optimizer's param
                                group and scalar state (Adam's step), the
                                state of every random generator the run draws
                                from, and the caller's `info` (configuration,
                                class names)
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import NamedTuple

import numpy as np

from .io import write_atomically

FILE = "checkpoint.npz"
_FORMAT = 1
_META = "__checkpoint__"


class Checkpoint(NamedTuple):
    path: str
    epoch: int
    model: dict          # state dict
    optimizer: dict      # Optimizer.state_dict() layout
    rng: dict            # name -> bit generator state
    info: dict


def save_checkpoint(folder, *, model, optimizer, epoch, rngs, info) -> str:
    """Write the checkpoint of a finished epoch; `rngs` maps names to the
    numpy Generators whose states must be restored on resume."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict = {}
    for i, entry in opt["state"].items():
        for name, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"optim/{i}/{name}"] = value
            else:
                scalars.setdefault(str(i), {})[name] = value
    meta = {"format": _FORMAT, "epoch": int(epoch), "param_groups": opt["param_groups"],
            "optim_scalars": scalars,
            "rng": {name: g.bit_generator.state for name, g in rngs.items()}, "info": info}
    arrays[_META] = np.array(json.dumps(meta))
    path = os.path.join(folder, FILE)
    write_atomically(path, lambda f: np.savez(f, **arrays))
    return path


def load_checkpoint(folder) -> Checkpoint:
    """The checkpoint in `folder`; ValueError if there is none or it is not
    one (its path named)."""
    path = os.path.join(folder, FILE)
    if not os.path.isfile(path):
        raise ValueError(f"--resume: no checkpoint in {folder!r} (expected {path!r}; "
                         f"a run writes it after its first epoch with --checkpoint-dir)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads(str(arrays.pop(_META)))
        model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
        state: dict = {}
        for key, value in arrays.items():
            if key.startswith("optim/"):
                _, i, name = key.split("/", 2)
                state.setdefault(int(i), {})[name] = value
        for i, entry in meta["optim_scalars"].items():
            state.setdefault(int(i), {}).update(entry)
        return Checkpoint(path, int(meta["epoch"]), model,
                          {"state": state, "param_groups": meta["param_groups"]},
                          meta["rng"], meta["info"])
    except (KeyError, ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path!r} is not a readable cnnfast checkpoint: "
                         f"{type(err).__name__}: {err}") from None


def restore_rngs(checkpoint, rngs) -> None:
    """Put each named Generator back in the state the checkpoint recorded."""
    missing = sorted(set(rngs) - set(checkpoint.rng))
    if missing:
        raise ValueError(f"{checkpoint.path!r} has no state for the random generator(s) "
                         f"{missing}")
    for name, g in rngs.items():
        try:
            g.bit_generator.state = checkpoint.rng[name]
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{checkpoint.path!r}: bad state for generator {name!r}: "
                             f"{err}") from None
