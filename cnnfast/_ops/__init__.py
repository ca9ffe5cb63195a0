"""The ops, one module per operation family (cnnfast.functional is their
public face and re-exports every public op from here).

An op module validates its arguments (its family's checks: conv_validation,
pool_validation, or the top of the module), plans the call (cnnfast._plan),
allocates and calls the driver (cnnfast._ext). Calls run one way: nn and
models -> these modules -> cnnfast._validation, _plan, _nhwc, _ext; no
module here imports cnnfast.nn, cnnfast.models or cnnfast.functional.

- conv: conv{1,2,3}d (+ _backward), explain_conv, the fused forward of
  Module.fuse()'s layers, the channels-last dispatch
- conv_transpose: conv_transpose{1,2,3}d (+ _backward)
- conv_validation: the checks of both -> ConvGeometry / TransposeGeometry
- conv_passes: one planned pass of a convolution on the drivers (shared by
  conv and conv_transpose)
- depthwise: groups == channels, on its own kernels, either layout
- pointwise: channels-last 1x1 convolutions as GEMMs over pixel rows
- max_pool, avg_pool, adaptive_pool (adaptive and global): pooling (+ _backward)
- pool_validation: the checks of every pooling op -> PoolGeometry
- batch_norm: batch_norm (+ _backward, and fused with a ReLU's backward)
- activation: relu, relu6, hardtanh (+ _backward), the fused add + ReLU
- dense: the dense layers' matrix products
- data_format: channels-first <-> channels-last views and copies

The package imports nothing itself: `from cnnfast._ops import conv` loads
what conv needs and no more.
"""
