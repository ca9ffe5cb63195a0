"""cnnfast: C-accelerated convolution and pooling kernels for NumPy."""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# Idle OpenMP workers spin for about 2 ms (30000 spins of GNU libgomp's wait
# loop, measured on the 2-core project machine) before they sleep. Sleeping
# at once (OMP_WAIT_POLICY=PASSIVE) made every parallel region wake its
# workers, and a model's layers open hundreds of regions: ResNet-18 batch 1
# on 2 threads scaled 1.36x sleeping, 1.44x spinning; LeNet-5 inference at
# batch 256 0.97x vs 1.30x (the NumPy tanh between its layers takes ~1 ms, so
# shorter spins lost it). The bound keeps spinning workers from holding a core
# long after cnnfast returns: libgomp's default (about 7 ms here) made the
# user's own 2-thread NumPy matmul right after a conv call 3x slower than
# with 2 ms. Only when the user chose neither setting, and only for the
# OpenMP runtime cnnfast loads itself: one another library loaded first
# (torch ships its own libgomp) keeps its own settings.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "30000")

# Freed activations stay in the process for the next training step instead of
# being unmapped and page-faulted in again (glibc; see cnnfast._malloc).
from ._malloc import keep_freed_memory as _keep_freed_memory

_keep_freed_memory()

from . import reference
from ._policy import conv_policy, get_conv_policy, set_conv_policy
from ._threads import get_num_threads, num_threads, set_num_threads
from .functional import (
    adaptive_avg_pool1d,
    adaptive_avg_pool1d_backward,
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool3d,
    adaptive_avg_pool3d_backward,
    adaptive_max_pool1d,
    adaptive_max_pool1d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    adaptive_max_pool3d,
    adaptive_max_pool3d_backward,
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool3d,
    avg_pool3d_backward,
    batch_norm,
    batch_norm_backward,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose3d,
    conv_transpose3d_backward,
    explain_conv,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    global_max_pool2d,
    global_max_pool2d_backward,
    hardtanh,
    hardtanh_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool3d,
    max_pool3d_backward,
    relu,
    relu6,
    relu6_backward,
    relu_backward,
)


def show_config() -> None:
    """Print how this build of cnnfast computes: version, compiler, OpenMP,
    the kernels' ISA variant, BLAS and threads."""
    import numpy
    import scipy

    from . import _threads
    from ._ext import _runtime

    rows = [
        ("cnnfast", __version__),
        ("compiler", _runtime.compiler()),
        ("build flags", _runtime.build_flags()),
        ("OpenMP", "on" if _runtime.openmp_enabled() else "off (serial kernels)"),
        ("kernels", _runtime.isa_description()),
        ("BLAS", "; ".join(_threads.blas_info()) or "unknown"),
        ("threads", f"{get_num_threads()} (BLAS pinned to 1 inside kernels)"),
        ("numpy", numpy.__version__),
        ("scipy", scipy.__version__),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}} : {value}")


from . import data, models, nn, optim
from ._explain import ModelPlan, explain_model
from .functional import __all__ as _functional_all
from .io import load, save

__all__ = list(_functional_all) + [
    "set_num_threads", "get_num_threads", "num_threads", "show_config", "reference",
    "set_conv_policy", "get_conv_policy", "conv_policy",
    "nn", "models", "optim", "data", "save", "load", "explain_model", "ModelPlan",
]
