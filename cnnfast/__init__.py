"""cnnfast: C-accelerated convolution and pooling kernels for NumPy."""
from __future__ import annotations

__version__ = "0.1.0"

from . import reference
from ._threads import get_num_threads, num_threads, set_num_threads
from .functional import (
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
)


def show_config() -> None:
    """Print how this build of cnnfast computes: version, compiler, OpenMP,
    SIMD level, BLAS and threads."""
    import numpy
    import scipy

    from . import _runtime, _threads

    rows = [
        ("cnnfast", __version__),
        ("compiler", _runtime.compiler()),
        ("OpenMP", "on" if _runtime.openmp_enabled() else "off (serial kernels)"),
        ("SIMD level", f"{_runtime.simd_level()} (runtime dispatch)"),
        ("BLAS", "; ".join(_threads.blas_info()) or "unknown"),
        ("threads", f"{get_num_threads()} (BLAS pinned to 1 inside kernels)"),
        ("numpy", numpy.__version__),
        ("scipy", scipy.__version__),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}} : {value}")


__all__ = [
    "conv1d", "conv2d", "conv3d", "conv1d_backward", "conv2d_backward", "conv3d_backward",
    "set_num_threads", "get_num_threads", "num_threads", "show_config", "reference",
]
