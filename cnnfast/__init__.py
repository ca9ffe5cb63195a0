"""cnnfast: C-accelerated convolution and pooling kernels for NumPy."""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# Idle OpenMP workers sleep instead of spinning (unless the user chose): between
# kernels NumPy's own BLAS threads (the layers' matmuls) need the cores, and on
# 2 cores spinning workers doubled a LeNet-5 training step. Must be set before
# the extensions load the OpenMP runtime.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import reference
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
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool3d,
    max_pool3d_backward,
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
from .functional import __all__ as _functional_all
from .io import load, save

__all__ = list(_functional_all) + [
    "set_num_threads", "get_num_threads", "num_threads", "show_config", "reference",
    "nn", "models", "optim", "data", "save", "load",
]
