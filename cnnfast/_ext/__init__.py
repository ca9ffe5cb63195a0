"""cnnfast's compiled layer (private): the Cython drivers and the C kernels.
Each module is described in docs/DESIGN.md, "Source layout"."""
import numpy as np


def specialised(driver, dtype):
    """The float32 or float64 specialisation of a driver (a Cython fused
    function): what a prepared call keeps, to skip the fused dispatch,
    which inspects every array argument on each call (0.1-0.45 us of a tiny
    pooling's driver call)."""
    return driver.__signatures__["float" if dtype == _FLOAT32 else "double"]


_FLOAT32 = np.dtype(np.float32)
