"""ONNX models in: an exported CNN as a trainable cnnfast model.

    import cnnfast.onnx
    model = cnnfast.onnx.load("resnet18.onnx")        # eval mode
    logits = model(x)                                  # cnnfast's kernels
    model.train(); model(x); model.backward(grad)      # fine-tune in NumPy
    fast = model.fuse()                                # Conv+BN+ReLU fused

Needs the `onnx` package (pip install "cnnfast[onnx]"); onnxruntime is
not used. The graph is read with `onnx` (checked, shape-inferred), its
constant subgraphs folded, and each node mapped onto cnnfast's operators;
what cannot run is refused here, at load time. See docs/ONNX.md for the
supported operators.
"""
from __future__ import annotations

import numpy as np

from .. import _validation as V

__all__ = ["load", "supported_operators"]

_INSTALL_HINT = 'cnnfast.onnx needs the onnx package: pip install "cnnfast[onnx]"'


def _import_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None


def supported_operators() -> list:
    """The ONNX operator types cnnfast.onnx.load maps (default domain)."""
    _import_onnx()
    from ._build import supported_operators as ops
    return ops()


def load(f, *, dtype=np.float32, data_format="channels_first"):
    """An ONNX model (a path, bytes or an onnx.ModelProto) as a cnnfast
    nn.Module, in eval mode.

    dtype: float32 or float64, the model's arithmetic (float initializers
    are converted). data_format="channels_last": the graph's 4-D and 5-D
    inputs and outputs are NHWC (NDHWC); the weights keep ONNX's layout.
    External data is read only when f is a path, and only from files in
    the model's folder. Raises ValueError for anything cnnfast cannot run
    (the operator type, the node's name and the supported operators are
    named) and for hostile or broken files (truncated, empty, oversize
    dims, custom domains, external data outside the folder)."""
    _import_onnx()
    from ..nn._checks import float_dtype
    from ._build import Builder
    from ._model import OnnxModel
    from ._read import read_model
    dtype = float_dtype(dtype)
    V.channels_last(data_format)
    proto = read_model(f)
    builder = Builder(proto, dtype)
    shapes = {name: builder.shapes.get(name) for name in builder.inputs}
    model = OnnxModel(builder, shapes, data_format)
    model.eval()
    _dry_run(model, shapes, dtype, data_format)
    return model


def _dry_run(model, shapes, dtype, data_format):
    """Run the model once on zeros when its input shapes are known (any
    batch size: 1), so that a graph whose shapes do not work out is
    refused now rather than at the first call."""
    arrays = []
    for name in model.input_names:
        shape = shapes.get(name)
        if shape is None or any(not isinstance(d, int) for d in shape[1:]):
            return
        shape = (shape[0] if isinstance(shape[0], int) else 1,) + tuple(shape[1:])
        if data_format == "channels_last" and len(shape) in (4, 5):
            shape = (shape[0],) + shape[2:] + (shape[1],)
        arrays.append(np.zeros(shape, dtype))
    try:
        model(*arrays)
    except ValueError as e:
        raise ValueError(f"f: the graph does not run on inputs of its declared shapes: "
                         f"{e}") from None
