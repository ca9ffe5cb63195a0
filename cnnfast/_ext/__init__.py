"""cnnfast's compiled layer (private): the Cython drivers and the C kernels.

- `_conv.pyx`, `_depthwise.pyx` (groups == channels), `_pool.pyx`,
  `_elementwise.pyx` (batch norm, ReLU, SGD's update): drivers. They receive validated, allocated
  arrays and a plan from cnnfast.functional / cnnfast._plan, split the work
  across OpenMP threads and call the micro-kernels with the GIL released.
  They make no algorithm choices of their own.
- `kernels/`: the C micro-kernels, one family per header, compiled once per
  ISA level and dtype into kernel tables (kernels/cf_isa.h explains how).
- `conv_kernels.pxd`, `depthwise_kernels.pxd`, `pool_kernels.pxd`,
  `elementwise_kernels.pxd`: the kernel tables as Cython sees them.
- `_dense.pyx`: the dense layers' matrix products, split across the same
  threads (single-threaded BLAS per block); `_blas.pxd`: the row-major GEMM
  both drivers call.
- `_layout.pyx`: blocked, threaded copies between channels-first and channels-last.
- `_runtime.pyx`: what the build holds (compiler, flags, OpenMP, ISA variant).
- `_workspace.py`: per-thread work arrays the drivers reuse across calls.
"""
