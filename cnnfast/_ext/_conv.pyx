# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Convolution kernels: direct, im2col, 1x1 and Winograd, forward and backward.

Arrays arrive 5-D (N, C, D, H, W) -- 1-D and 2-D convolutions use unit D/H --
C-contiguous and native-endian, already validated and allocated by
cnnfast.functional; this module only computes, with the GIL released.

Parallel work is cut into items that each own a disjoint part of the result
(owner computes), handed out `guided` (large chunks first, small ones at the
end): a thread that is descheduled -- another process on its core -- takes
fewer items instead of holding every other thread at the end of the region,
and since an item owns its outputs the result does not depend on which
thread ran it. The only cross-item reduction, im2col's weight gradient,
goes through per-thread buffers summed in thread order over a `static`
split, so results are bit-identical run to run for a given thread count. With one thread the loops
run without entering an OpenMP region at all (safe in a forked child).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from ._blas cimport gemm_row_major
from ._omp cimport cf_thread_num
from .conv_kernels cimport *

from itertools import product
from math import gcd

import numpy as np

from ._workspace import work_array

# One file per idea, in the order a call meets them (Cython includes: the
# functions share this module's namespace and its fused dtype).
include "conv/common.pxi"          # geometry, kernel table, epilogue
include "conv/queries.pxi"         # what the planner asks (tiles, lane waste)
include "conv/direct.pxi"          # direct kernel over a padded copy
include "conv/direct_lanes.pxi"    # direct kernel, channels or images in the lanes
include "conv/packed.pxi"          # im2col / 1x1 on packed GEMM panels
include "conv/winograd.pxi"        # Winograd on channels-first planes
include "conv/forward.pxi"         # conv_forward: the plan's kernel
include "conv/backward.pxi"        # input, weight and bias gradients
include "conv/pointwise_rows.pxi"  # channels-last 1x1 as pixel rows
