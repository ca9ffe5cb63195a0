"""Process-wide limits on what `algorithm="auto"` may pick (like
set_num_threads): today one switch, whether auto may use Winograd, whose
results differ from the exact-order algorithms by more than their rounding
(see docs/API.md for the bound). Explicit algorithms are never affected."""
from __future__ import annotations

import contextlib
import threading

from . import _validation as V

_lock = threading.Lock()
_policy = {"winograd": True}


def _checked(winograd) -> dict:
    return {} if winograd is None else {"winograd": V.flag(winograd, "winograd")}


def set_conv_policy(*, winograd=None) -> None:
    """Set the conv policy for the whole process: winograd=False keeps
    `algorithm="auto"` on the exact-order algorithms (direct, im2col, 1x1).
    An argument left None keeps its current value."""
    changes = _checked(winograd)
    with _lock:
        _policy.update(changes)


def get_conv_policy() -> dict:
    """The current policy, e.g. {"winograd": True}."""
    with _lock:
        return dict(_policy)


@contextlib.contextmanager
def conv_policy(*, winograd=None):
    """Context manager: the policy set as set_conv_policy would, restored on
    exit (process-wide, as num_threads)."""
    changes = _checked(winograd)
    with _lock:
        saved = dict(_policy)
        _policy.update(changes)
    try:
        yield
    finally:
        with _lock:
            _policy.clear()
            _policy.update(saved)


def winograd_allowed() -> bool:
    return _policy["winograd"]
