"""Reading an ONNX file that nobody vouched for.

Everything a file says is checked before it is believed: the operator set
(the default domain only, opsets 9 to the newest the installed `onnx` knows,
no model-local functions), every tensor's element count against the bytes
that hold it, and external data (allowed only when the model came as a
path, read only from regular files inside the model's folder, each length
checked against the file before a byte is read). Then `onnx.checker` and
strict shape inference. Nothing in a file is executed: the graph is only
ever mapped onto cnnfast's own operators (cnnfast.onnx._build).
"""
from __future__ import annotations

import math
import os

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# Protobuf refuses messages past 2 GiB; a larger file is not an ONNX model.
FILE_MAX = 2**31 - 1
# An input dimension beyond this is no image: refused with the file.
DIM_MAX = 2**31 - 1
OPSET_MIN = 9

# TensorProto element types cnnfast reads, with their NumPy dtype.
_DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64,
           TensorProto.FLOAT16: np.float16, TensorProto.INT64: np.int64,
           TensorProto.INT32: np.int32, TensorProto.INT16: np.int16,
           TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8,
           TensorProto.UINT16: np.uint16, TensorProto.UINT32: np.uint32,
           TensorProto.UINT64: np.uint64, TensorProto.BOOL: np.bool_}
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)

# The repeated field that holds a tensor's values when it has no raw_data.
_TYPED_FIELDS = {TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data",
                 TensorProto.FLOAT16: "int32_data", TensorProto.INT64: "int64_data",
                 TensorProto.INT32: "int32_data", TensorProto.INT16: "int32_data",
                 TensorProto.INT8: "int32_data", TensorProto.UINT8: "int32_data",
                 TensorProto.UINT16: "int32_data", TensorProto.UINT32: "uint64_data",
                 TensorProto.UINT64: "uint64_data", TensorProto.BOOL: "int32_data"}


def newest_opset() -> int:
    return onnx.defs.onnx_opset_version()


def read_model(f):
    """f (a path, bytes or an onnx.ModelProto) -> a checked, shape-inferred
    ModelProto whose tensors all hold their data inline."""
    folder = None
    if isinstance(f, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(f)   # the caller's message is never modified
    elif isinstance(f, (bytes, bytearray, memoryview)):
        proto = _parse(bytes(f), "the bytes given")
    elif isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"f: no ONNX file at {path!r}")
        size = os.path.getsize(path)
        if size > FILE_MAX:
            raise ValueError(f"f: {path!r} has {size} bytes, more than an ONNX model can hold "
                             f"(2 GiB; larger models keep their weights as external data)")
        with open(path, "rb") as fh:
            proto = _parse(fh.read(), repr(path))
        folder = os.path.dirname(os.path.abspath(path))
    else:
        raise TypeError(f"f must be a path, bytes or an onnx.ModelProto, got "
                        f"{type(f).__name__}")
    _check_operator_sets(proto)
    _check_inputs(proto.graph)
    for tensor, where in _tensors(proto.graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            _inline_external(tensor, where, folder)
        check_tensor(tensor, where)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise ValueError(f"f is not a valid ONNX model: {_first_line(e)}") from None
    try:
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True,
                                                  data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError) as e:
        raise ValueError(f"f: ONNX shape inference fails on this model: "
                         f"{_first_line(e)}") from None
    return proto


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _parse(data: bytes, what: str):
    if not data:
        raise ValueError(f"f: {what} is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:   # protobuf's DecodeError, or a RuntimeWarning-turned-error
        raise ValueError(f"f: {what} is not an ONNX model (truncated or corrupt): "
                         f"{_first_line(e)}") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise ValueError(f"f: {what} holds no ONNX graph (truncated, empty or not a model)")
    return proto


def _check_operator_sets(proto):
    """Only the default operator set, in the versions cnnfast maps."""
    newest = newest_opset()
    default = [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")]
    if not default:
        raise ValueError("f: the model imports no version of the default ONNX operator set")
    version = default[0]
    if not OPSET_MIN <= version <= newest:
        raise ValueError(f"f: the model uses ONNX opset {version}; cnnfast reads opsets "
                         f"{OPSET_MIN} to {newest} (the installed onnx's newest)")
    if proto.functions:
        names = ", ".join(sorted({fn.name for fn in proto.functions}))
        raise ValueError(f"f: the model defines its own functions ({names}); cnnfast runs "
                         f"only standard ONNX operators")
    if len(proto.graph.sparse_initializer):
        raise ValueError("f: sparse initializers are not supported")
    for node in _all_nodes(proto.graph):
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"f: node {node.name!r} is a {node.op_type!r} of the custom "
                             f"domain {node.domain!r}; cnnfast runs only the default ONNX "
                             f"domain's operators")


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def _tensors(graph):
    """(TensorProto, description) for every tensor the graph holds."""
    for t in graph.initializer:
        yield t, f"initializer {t.name!r}"
    for node in _all_nodes(graph):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t, f"attribute {attr.name!r} of node {node.name!r}"
            for t in attr.tensors:
                yield t, f"attribute {attr.name!r} of node {node.name!r}"


def element_count(tensor, where) -> int:
    for d in tensor.dims:
        if d < 0:
            raise ValueError(f"f: {where} has a negative dimension: {list(tensor.dims)}")
    return math.prod(tensor.dims)


def _itemsize(tensor, where):
    if tensor.data_type not in _DTYPES:
        name = TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in \
            TensorProto.DataType.values() else tensor.data_type
        raise ValueError(f"f: {where} has element type {name}, which cnnfast does not read")
    return np.dtype(_DTYPES[tensor.data_type]).itemsize


def check_tensor(tensor, where) -> None:
    """The tensor's dims agree with the data the file holds for it (so
    converting it allocates no more than the file's own bytes)."""
    count = element_count(tensor, where)
    itemsize = _itemsize(tensor, where)
    if tensor.HasField("raw_data"):
        have = len(tensor.raw_data)
        if have != count * itemsize:
            raise ValueError(f"f: {where} has dims {list(tensor.dims)} ({count} elements of "
                             f"{itemsize} bytes) but {have} bytes of data (truncated or "
                             f"oversize dims)")
        return
    have = len(getattr(tensor, _TYPED_FIELDS[tensor.data_type]))
    if have != count:
        raise ValueError(f"f: {where} has dims {list(tensor.dims)} ({count} elements) but "
                         f"holds {have} values (truncated or oversize dims)")


def to_array(tensor, where) -> np.ndarray:
    """A checked tensor (check_tensor) as a new NumPy array."""
    check_tensor(tensor, where)
    return np.array(numpy_helper.to_array(tensor), dtype=_DTYPES[tensor.data_type])


def _inline_external(tensor, where, folder):
    """Read an external tensor's bytes into raw_data, from a regular file
    inside the model's folder only, after checking its length."""
    if folder is None:
        raise ValueError(f"f: {where} keeps its data in an external file; external data is "
                         f"read only when the model is loaded from a path (its folder "
                         f"holds the data)")
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if not location:
        raise ValueError(f"f: {where} refers to external data without a location")
    parts = location.replace("\\", "/").split("/")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ".." in parts \
            or (len(location) > 1 and location[1] == ":"):
        raise ValueError(f"f: {where} refers to external data at {location!r}, outside the "
                         f"model's folder")
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, target]) != root:   # a symlink out of the folder
        raise ValueError(f"f: {where} refers to external data at {location!r}, which "
                         f"resolves outside the model's folder")
    if not os.path.isfile(target):
        raise ValueError(f"f: {where} refers to external data {location!r}, which is not a "
                         f"file in the model's folder")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ValueError(f"f: {where} has a malformed external-data offset or length: "
                         f"{info!r}") from None
    want = element_count(tensor, where) * _itemsize(tensor, where)
    size = os.path.getsize(target)
    if length is None:
        length = size - offset
    if offset < 0 or length != want or offset + length > size:
        raise ValueError(f"f: {where} needs {want} bytes of external data but {location!r} "
                         f"holds {max(size - max(offset, 0), 0)} bytes from offset {offset} "
                         f"(length {length} declared)")
    with open(target, "rb") as fh:
        fh.seek(offset)
        data = fh.read(length)
    if len(data) != length:
        raise ValueError(f"f: external data {location!r} for {where} is truncated")
    tensor.raw_data = data
    tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def _check_inputs(graph):
    initializers = {t.name for t in graph.initializer}
    for value in list(graph.input) + list(graph.output):
        if value.name in initializers:
            continue
        kind = "input" if value in graph.input else "output"
        t = value.type
        if not t.HasField("tensor_type"):
            raise ValueError(f"f: graph {kind} {value.name!r} is not a tensor")
        elem = t.tensor_type.elem_type
        if elem not in FLOAT_TYPES:
            raise ValueError(f"f: graph {kind} {value.name!r} has element type "
                             f"{TensorProto.DataType.Name(elem)}; cnnfast models take and "
                             f"return float tensors")
        for d in t.tensor_type.shape.dim:
            if d.HasField("dim_value") and not 0 <= d.dim_value <= DIM_MAX:
                raise ValueError(f"f: graph {kind} {value.name!r} declares dimension "
                                 f"{d.dim_value} (at most {DIM_MAX})")


def static_shape(type_proto):
    """A value's inferred shape as a tuple of ints and None (unknown dims),
    or None when not even the rank is known."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in type_proto.tensor_type.shape.dim)
