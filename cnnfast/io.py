"""Weights on disk.

`save(module, path)` and `load(module, path)` keep a module's state dict in
NumPy's .npz (the default) or in .safetensors, chosen by the extension. Both
record the class name of the module that wrote them, so loading into a
different architecture reports both names instead of a bare list of key
differences, and optional metadata (JSON: class names, preprocessing, ...)
that `read_metadata` returns and the state dict readers leave out.

Writes are atomic (`write_atomically`): the file is written under a
temporary name in the target's folder, flushed and fsync'd, then renamed
over the target, so a crash or a kill never leaves a half-written weights
file where the previous one was.

`read_state_dict(path)` reads a state dict (name -> NumPy array) from any of
    - cnnfast's .npz (never with allow_pickle),
    - .safetensors, through the `safetensors` package's NumPy API (an optional
      extra: pip install "cnnfast[weights]"),
    - PyTorch's torch.save files (.pt, .pth, Hugging Face's pytorch_model.bin):
      the zip archive torch >= 1.6 writes, as torchvision publishes its weights.
The format is recognised from the file's first bytes, not from its name.
PyTorch files are read without torch and without running pickled code: see
"PyTorch's zip archives" below.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import secrets
import threading
import pickletools
import struct
import sys
import zipfile
import zlib

import numpy as np

from .nn.module import Module

_ARCH_KEY = "__cnnfast_architecture__"
_META_KEY = "__cnnfast_metadata__"
_RESERVED = re.compile(r"^__cnnfast_\w+__$")     # cnnfast's own entries, not state
_INSTALL_HINT = 'pip install "cnnfast[weights]"'
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _check_module(module):
    if not isinstance(module, Module):
        raise TypeError(f"module must be a cnnfast.nn.Module, got {type(module).__name__}")


# ---------------------------------------------------------------- public API

def save(module, path, *, metadata=None) -> str:
    """Write module.state_dict() to `path`, atomically, and return the path
    written.

    `.safetensors` writes safetensors (the optional `safetensors` package);
    `.npz`, or any other name, writes NumPy's .npz (.npz is appended if the
    name lacks it, as numpy.savez does). PyTorch reads the safetensors file
    with safetensors.torch.load_file; cnnfast does not write torch's pickles.
    `metadata` (a dict of JSON values: class names, preprocessing, ...) is
    stored beside the arrays; `read_metadata(path)` returns it, and
    `read_state_dict` / `load` leave it out of the state dict.
    """
    _check_module(module)
    path = os.fspath(path)
    meta = _metadata_json(metadata)
    arrays = module.state_dict()
    arch = type(module).__name__
    lower = path.lower()
    if lower.endswith(_TORCH_SUFFIXES):
        raise ValueError(f"cnnfast.save writes .npz or .safetensors, not PyTorch's pickles: "
                         f"got {path!r} (torch reads a .safetensors file with "
                         f"safetensors.torch.load_file)")
    if lower.endswith(".safetensors"):
        st = _safetensors_numpy()
        header = {_ARCH_KEY: arch, **({} if meta is None else {_META_KEY: meta})}
        write_atomically(path, lambda f: f.write(st.save(arrays, metadata=header)))
        return path
    if not lower.endswith(".npz"):
        path += ".npz"
    extra = {_ARCH_KEY: np.array(arch)}
    if meta is not None:
        extra[_META_KEY] = np.array(meta)
    write_atomically(path, lambda f: np.savez(f, **{**arrays, **extra}))
    return path


def read_metadata(path) -> dict:
    """The metadata dict `save(..., metadata=...)` stored in a weights file
    ({} when there is none, e.g. a PyTorch file)."""
    path = os.fspath(path)
    kind = _sniff(path)
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                text = str(archive[_META_KEY]) if _META_KEY in archive.files else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
            raise ValueError(f"cannot read {path!r} as .npz: {err}") from None
    elif kind == "safetensors":
        _safetensors_numpy()
        from safetensors import safe_open
        try:
            with safe_open(path, framework="np") as f:
                text = (f.metadata() or {}).get(_META_KEY)
        except Exception as err:
            raise ValueError(f"cannot read {path!r} as .safetensors: {err}") from None
    else:
        return {}
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise ValueError(f"the metadata in {path!r} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"the metadata in {path!r} is not a JSON object")
    return meta


def _metadata_json(metadata):
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise TypeError(f"metadata must be None or a dict with str keys, got "
                        f"{type(metadata).__name__}")
    try:
        return json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must hold JSON values (str, numbers, lists, dicts): "
                         f"{err}") from None


# ------------------------------------------------------------- atomic writes

# temporary files this process is writing (path -> writer), so a concurrent
# save in the same process never removes another thread's live temporary
_LIVE_TEMPS: set = set()
_LIVE_LOCK = threading.Lock()
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{16}\.tmp$")


def write_atomically(path, write) -> None:
    """Write a file by calling write(f) on a binary file object open on a
    temporary `.NAME.PID.RANDOM.tmp` in the target's folder, then flush,
    fsync and rename it over `path` (and fsync the folder). If write() (or
    anything else) fails, the temporary is removed and `path` is untouched;
    if the process is killed, the temporary stays behind and the next write
    to that folder removes it. A file that already exists keeps its
    permission bits."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    _remove_stray_temps(folder)
    mode = _existing_mode(path)
    while True:
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        try:        # 0o666 less the umask, as open() would create the target
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
            break
        except FileExistsError:
            continue
    with _LIVE_LOCK:
        _LIVE_TEMPS.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.chmod(tmp, mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE_TEMPS.discard(tmp)
    _fsync_folder(folder)


def _existing_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def _fsync_folder(folder):
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stray_temps(folder):
    """Remove the temporaries killed writers left in `folder`: names of our
    pattern whose writing process no longer runs (a live process's, and this
    process's in-flight ones, are left alone)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for entry in names:
        match = _TEMP_NAME.match(entry)
        if match is None:
            continue
        full = os.path.join(folder, entry)
        pid = int(match["pid"])
        with _LIVE_LOCK:
            live_here = full in _LIVE_TEMPS
        if live_here or (pid != os.getpid() and _process_alive(pid)):
            continue
        try:
            os.unlink(full)
        except OSError:
            pass


def _process_alive(pid) -> bool:
    if os.name == "nt":
        # os.kill(pid, 0) would send CTRL_C_EVENT there; Windows refuses to
        # delete a file another process has open, which protects live writers
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True        # exists but not ours (or cannot tell): leave it
    return True


def load(module, path, strict=True):
    """Load a weights file into `module` (in place) and return it: anything
    read_state_dict reads (.npz, .safetensors, torch.save's .pt/.pth).
    Keys and shapes must match the module exactly (strict=True); a file made
    for another architecture raises ValueError naming both."""
    _check_module(module)
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path += ".npz"
    arrays, saved_arch = _read(path)
    try:
        module.load_state_dict(arrays, strict=strict)
    except ValueError as err:
        here = type(module).__name__
        if saved_arch is None:
            hint = f"its keys or shapes are not those of a {here}"
        elif saved_arch != here:
            hint = f"it was saved from a {saved_arch}, not a {here}"
        else:
            hint = f"it was saved from a {saved_arch} with different layer sizes"
        raise ValueError(f"cannot load {path!r} into {here}: {hint}\n{err}") from None
    return module


def read_state_dict(path) -> dict:
    """Read a state dict, {name: numpy array}, from a weights file.

    Reads cnnfast's .npz, .safetensors (pip install "cnnfast[weights]") and
    PyTorch's torch.save zip archives (.pt/.pth/.bin, torch >= 1.6; no torch
    needed, no pickled code run). For torch files:

    - A plain state dict of tensors is read as it is. A checkpoint dict is
      unwrapped when it is not all tensors but its "state_dict",
      "model_state_dict" or "model" entry is (the storages of the other
      entries, e.g. optimizer state, are never read).
    - Arrays keep the tensor's shape and dtype (float16 stays float16; int64,
      bool, ... likewise), except bfloat16, which NumPy lacks: it becomes
      float32 (exactly: every bfloat16 value is a float32). Big-endian files
      come back in native byte order. Contiguous tensors are views of their
      storage's one read, so tensors saved as views of one storage share
      memory, as in torch; a non-contiguous one (a transpose, a strided
      slice) is copied once into C order, except one with more elements
      than its storage (an expand()ed tensor): that comes back as a
      read-only view, as numpy.broadcast_to makes.
    - Only tensors, storages, (ordered) dicts, lists, tuples, strings and
      numbers may appear: any other global in the pickle (a class, os.system,
      builtins.eval, ...) raises ValueError naming it, before anything of the
      file is used. So does a TorchScript archive, torch's pre-1.6 format, a
      plain pickle, and any truncated or inconsistent archive.

    Memory: each storage is read once from the file straight into the array
    that is returned, so the result costs one copy of the data.
    """
    return _read(os.fspath(path))[0]


def _read(path):
    """(state dict, name of the cnnfast class that saved it or None)."""
    kind = _sniff(path)
    if kind == "npz":
        return _read_npz(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    return _read_torch(path), None


def _sniff(path):
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ValueError(f"{path!r} is empty, not a weights file")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError,
                struct.error) as err:
            raise ValueError(f"{path!r} is not a readable zip archive (truncated or "
                             f"damaged?): {err}") from None
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        raise ValueError(f"{path!r} is a zip archive but neither a torch.save file (no "
                         f"<archive>/data.pkl) nor a NumPy .npz")
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        if head[2:14] == _LEGACY_TORCH_MAGIC:
            raise ValueError(f"{path!r} is in torch.save's legacy format (torch < 1.6, or "
                             f"_use_new_zipfile_serialization=False), which cnnfast does not "
                             f"read: re-save it with torch >= 1.6, or as .safetensors")
        raise ValueError(f"{path!r} is a plain pickle, not a torch.save zip archive; cnnfast "
                         f"never unpickles such files (they can run any code)")
    raise ValueError(f"{path!r} is not a weights file cnnfast reads (.npz, .safetensors, "
                     f"or a torch.save zip archive)")


# The number torch's legacy (pre-zip) format pickles first, as protocol 2 writes it.
_LEGACY_TORCH_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


# ------------------------------------------------------------------------ npz

def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"cannot read {path!r} as .npz: {err}") from None
    arch = arrays.pop(_ARCH_KEY, None)
    for key in [k for k in arrays if _RESERVED.match(k)]:
        del arrays[key]                  # metadata: read_metadata's, not state
    return arrays, (None if arch is None else str(arch))


# ---------------------------------------------------------------- safetensors

def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError(f"reading and writing .safetensors needs the safetensors package: "
                          f"{_INSTALL_HINT}") from None
    return safetensors.numpy


def _read_safetensors(path):
    _safetensors_numpy()
    from safetensors import safe_open

    arrays = {}
    try:
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                if f.get_slice(key).get_dtype() == "BF16":
                    arrays[key] = None             # NumPy has no bfloat16: below
                else:
                    arrays[key] = f.get_tensor(key)
    except Exception as err:   # SafetensorError, and TypeError for dtypes NumPy lacks
        raise ValueError(f"cannot read {path!r} as .safetensors: {err}") from None
    if any(v is None for v in arrays.values()):
        _read_safetensors_bf16(path, arrays)
    return arrays, metadata.get(_ARCH_KEY)


def _read_safetensors_bf16(path, arrays):
    """bfloat16 entries, which safetensors' NumPy API refuses, as float32.
    The format is 8 bytes of header length, a JSON header giving each
    tensor's dtype, shape and [begin, end) byte range after the header, then
    the data (little-endian); safe_open has already validated it."""
    import json

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for key, value in arrays.items():
            if value is not None:
                continue
            entry = header[key]
            begin, end = entry["data_offsets"]
            raw = np.empty((end - begin) // 2, dtype="<u2")
            f.seek(8 + n + begin)
            _readinto_exactly(f, raw.view(np.uint8), f"{key!r} in {path!r}")
            arrays[key] = _bfloat16_to_float32(raw).reshape(entry["shape"])


def _bfloat16_to_float32(u16):
    """bfloat16 is the top half of a float32: widen each 16-bit word."""
    return (u16.astype(np.uint32) << 16).view(np.float32)


def _readinto_exactly(f, buf, what):
    view, done = memoryview(buf), 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise ValueError(f"{what} is truncated: {len(view) - done} of its {len(view)} "
                             f"bytes are missing")
        done += got


# ---------------------------------------------------- PyTorch's zip archives
#
# torch.save (torch >= 1.6) writes a zip archive, every member stored
# uncompressed and (since torch 2.x) 64-byte aligned, under one folder:
#     <archive>/data.pkl            the object, pickled with protocol 2
#     <archive>/byteorder           "little" or "big" (absent in old files: little)
#     <archive>/data/<key>          the raw bytes of each storage
#     <archive>/version, .format_version, .storage_alignment, .data/serialization_id
# In data.pkl each tensor is a call torch._utils._rebuild_tensor_v2(storage,
# storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) whose
# storage is a persistent id ("storage", torch.FloatStorage, key, location, numel),
# numel counted in elements. torch 2.13's torch.save(model.state_dict())
# pickles exactly these globals: collections.OrderedDict (the dict, and each
# tensor's empty backward_hooks; the state dict's _metadata attribute comes as
# a BUILD), torch._utils._rebuild_tensor_v2 and torch.<Type>Storage;
# nn.Parameter values add torch._utils._rebuild_parameter (or
# _rebuild_parameter_with_state); dtypes that have no legacy storage class
# (uint16/32/64, float8...) use _rebuild_tensor_v3(..., dtype) over a
# torch.storage.UntypedStorage (numel in bytes) with a torch.<dtype> global.
#
# The unpickler below resolves only those names, each to an inert stand-in
# that records its arguments; nothing of the file is read or allocated until
# the whole pickle is unpickled and checked to be a dict of tensors. Any other
# global is refused by name.

_MAX_PICKLE_BYTES = 256 << 20   # torchvision's data.pkl are ~20 KB, a 7B LLM's ~100 KB

_STORAGE_TYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}
_TORCH_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
                 "int8", "uint8", "bool", "uint16", "uint32", "uint64", "complex64",
                 "complex128")


class _BadFile(ValueError):
    """A problem already described in full (raised through the unpickler unchanged)."""


class _Inert:
    """Base of every stand-in the unpickler sees: no __dict__, so pickle's
    BUILD can set nothing on it."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _BadFile(f"data.pkl applies a state (BUILD) to {self!r}, which torch.save "
                       f"never writes")


class _Global(_Inert):
    """A permitted global: calling it (REDUCE) runs one of our constructors."""

    __slots__ = ("name", "fn")

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self):
        return f"global {self.name}"


class _StorageType(_Inert):
    __slots__ = ("name", "dtype")        # dtype None: UntypedStorage (bytes)

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"global torch.{self.name}"


class _DType(_Inert):
    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = dtype

    def __repr__(self):
        return f"global torch.{self.dtype}"


class _StorageRef(_Inert):
    __slots__ = ("key", "stype", "numel")

    def __init__(self, key, stype, numel):
        self.key, self.stype, self.numel = key, stype, numel

    def __repr__(self):
        return f"storage {self.key!r}"


class _TensorRef(_Inert):
    __slots__ = ("storage", "offset", "size", "stride", "dtype", "conj", "neg")

    def __repr__(self):
        return "a tensor"


class _StateDict(dict):
    """collections.OrderedDict stand-in (dicts keep insertion order). torch's
    state_dict() carries a `_metadata` attribute, pickled as a BUILD: it is
    checked to be a dict and dropped, never applied."""

    __slots__ = ()

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise _BadFile(f"data.pkl applies a state of type {type(state).__name__} to an "
                           f"OrderedDict")


def _ordered_dict(*args):
    if len(args) > 1:
        raise _BadFile(f"OrderedDict called with {len(args)} arguments")
    return _StateDict(*args)


def _is_int(value, low=0):
    return type(value) is int and value >= low


def _tensor_ref(storage, offset, size, stride, dtype=None, metadata=None):
    if not isinstance(storage, _StorageRef):
        raise _BadFile(f"a tensor is rebuilt from {_describe(storage)}, not from a storage")
    if not _is_int(offset):
        raise _BadFile(f"a tensor on storage {storage.key!r} has storage offset {offset!r}")
    if (not isinstance(size, tuple) or not isinstance(stride, tuple)
            or len(size) != len(stride) or len(size) > 64
            or not all(_is_int(v) for v in size + stride)):
        raise _BadFile(f"a tensor on storage {storage.key!r} has size {size!r} and stride "
                       f"{stride!r} (non-negative ints, one stride per dimension, at most "
                       f"64 dimensions)")
    if metadata is None:
        metadata = {}
    if (not isinstance(metadata, dict) or not set(metadata) <= {"conj", "neg"}
            or not all(isinstance(v, bool) for v in metadata.values())):
        raise _BadFile(f"a tensor on storage {storage.key!r} has metadata "
                       f"{_describe(metadata)} (torch writes {{'conj': True}} or "
                       f"{{'neg': True}})")
    ref = _TensorRef()
    ref.storage, ref.offset, ref.size, ref.stride = storage, offset, size, stride
    ref.dtype = dtype
    ref.conj, ref.neg = bool(metadata.get("conj")), bool(metadata.get("neg"))
    return ref


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor_ref(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    return _tensor_ref(storage, storage_offset, size, stride, None, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise _BadFile(f"_rebuild_tensor_v3 got dtype {_describe(dtype)}")
    return _tensor_ref(storage, storage_offset, size, stride, dtype.dtype, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _TensorRef):
        raise _BadFile(f"a Parameter is rebuilt from {_describe(data)}, not from a tensor")
    return data


def _allowed_globals():
    table = {
        "collections.OrderedDict": _ordered_dict,
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    }
    for name, dtype in _STORAGE_TYPES.items():
        table[f"torch.{name}"] = (_StorageType, name, dtype)
    for name in ("torch.storage.UntypedStorage", "torch.UntypedStorage"):
        table[name] = (_StorageType, "UntypedStorage", None)
    for dtype in _TORCH_DTYPES:
        table[f"torch.{dtype}"] = (_DType, dtype)
    return table


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, path):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._path = path
        self.storages = {}

    def find_class(self, module, name):
        full = f"{module}.{name}"
        entry = _ALLOWED.get(full)
        if entry is None:
            raise _BadFile(f"refusing to load global {full!r} from {self._path!r}: a weights "
                           f"file may only hold tensors, storages, dicts, lists, tuples, "
                           f"strings and numbers (torch.load would run this code)")
        if callable(entry):
            return _Global(full, entry)     # a fresh object per use: nothing shared to alter
        cls, *args = entry
        return cls(*args)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _BadFile(f"unknown persistent id {_describe(pid)} in data.pkl (torch.save "
                           f"writes ('storage', type, key, location, numel))")
        _, stype, key, location, numel = pid
        if (not isinstance(stype, _StorageType) or not isinstance(key, str)
                or not isinstance(location, str) or not _is_int(numel)):
            raise _BadFile(f"malformed storage record {_describe(pid)} in data.pkl")
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = _StorageRef(key, stype, numel)
        elif ref.stype.name != stype.name or ref.numel != numel:
            raise _BadFile(f"storage {key!r} is described twice, differently, in data.pkl")
        return ref


_SCALARS = (str, int, float, bool, type(None))


def _describe(value):
    """A short description of an unpickled value for an error message (never
    the repr of a big or deeply nested structure)."""
    if isinstance(value, _StateDict):
        return "a dict"
    if isinstance(value, _Inert):
        return repr(value)
    shallow = isinstance(value, _SCALARS) or (
        isinstance(value, tuple) and len(value) <= 8
        and all(isinstance(v, _SCALARS + (_Inert,)) for v in value))
    if shallow and not (isinstance(value, str) and len(value) > 80):
        text = repr(value)
        if len(text) <= 120:
            return text
    return f"a {type(value).__name__}"


def _check_opcodes(data, path):
    """One pass over data.pkl's opcodes before unpickling: a memo index past
    the pickle's own length (LONG_BINPUT 2**31 would make the unpickler
    allocate gigabytes) or a malformed stream is refused up front."""
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"):
                if not 0 <= int(arg) <= len(data):
                    raise _BadFile(f"data.pkl of {path!r} uses memo slot {arg}")
    except _BadFile:
        raise
    except Exception as err:
        raise ValueError(f"data.pkl of {path!r} is not a valid pickle: {err}") from None


class _TorchZip:
    """Members of a torch.save archive, read from the open file."""

    def __init__(self, f, path):
        self.f, self.path = f, path
        self.size = os.fstat(f.fileno()).st_size
        try:
            self.zf = zipfile.ZipFile(f)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError,
                struct.error) as err:
            raise ValueError(f"{path!r} is not a readable zip archive (truncated or "
                             f"damaged?): {err}") from None
        self.members = {i.filename: i for i in infos}
        if len(self.members) != len(infos):
            raise ValueError(f"{path!r} names some zip member twice")
        pickles = [n for n in self.members
                   if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path!r} is not a torch.save archive: it has "
                             f"{len(pickles)} <archive>/data.pkl members, not one")
        self.prefix = pickles[0][:-len("data.pkl")]
        if any(n.startswith(self.prefix + s) for n in self.members
               for s in ("constants.pkl", "code/")):
            raise ValueError(f"{path!r} is a TorchScript archive (torch.jit.save), not a "
                             f"state dict: in torch, torch.save(torch.jit.load(f)"
                             f".state_dict(), ...) makes one")

    def info(self, name):
        return self.members.get(self.prefix + name)

    def read(self, info, out):
        """Fill the uint8 array `out` (info.file_size bytes) with the member's data."""
        what = f"member {info.filename!r} of {self.path!r}"
        if info.flag_bits & 1:
            raise ValueError(f"{what} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise ValueError(f"{what} is stored with {info.compress_size} bytes but "
                                 f"claims {info.file_size}")
            if not 0 <= info.header_offset < self.size:
                raise ValueError(f"{what} starts at offset {info.header_offset}, outside "
                                 f"the file's {self.size} bytes")
            self.f.seek(info.header_offset)
            local = self.f.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise ValueError(f"{what} has no local header at offset {info.header_offset}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if start + info.file_size > self.size:
                raise ValueError(f"{what} runs past the end of the file (truncated?)")
            self.f.seek(start)
            _readinto_exactly(self.f, out, what)
            # torch records CRC-32s unless disabled (then 0 in the central directory)
            if info.CRC and zlib.crc32(out) != info.CRC:
                raise ValueError(f"{what} fails its CRC-32 check: the file is damaged")
            return
        # compressed (torch never does, other zip tools might): one pass of
        # zipfile's decoder straight into `out`; it checks the CRC at the end
        try:
            with self.zf.open(info) as src:
                _readinto_exactly(src, out, what)
                if src.read(1):
                    raise ValueError(f"{what} holds more than its {info.file_size} bytes")
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError,
                RuntimeError) as err:
            raise ValueError(f"cannot read {what}: {err}") from None

    def read_small(self, name, limit):
        info = self.info(name)
        if info is None:
            return None
        if info.file_size > limit:
            raise ValueError(f"member {info.filename!r} of {self.path!r} claims "
                             f"{info.file_size} bytes, more than the {limit} allowed")
        out = np.empty(info.file_size, np.uint8)
        self.read(info, out)
        return out.tobytes()


def _read_torch(path):
    with open(path, "rb") as f:
        archive = _TorchZip(f, path)
        order = archive.read_small("byteorder", 16)
        if order not in (None, b"little", b"big"):
            raise ValueError(f"{path!r} records byte order {order!r}, not little or big")
        data = archive.read_small("data.pkl", _MAX_PICKLE_BYTES)
        _check_opcodes(data, path)
        unpickler = _RestrictedUnpickler(data, path)
        try:
            obj = unpickler.load()
        except _BadFile as err:
            msg = str(err)
            raise ValueError(msg if path in msg else f"{path!r}: {msg}") from None
        except Exception as err:    # only our constructors ran: any error means a bad file
            raise ValueError(f"data.pkl of {path!r} is not a torch.save pickle: "
                             f"{type(err).__name__}: {err}") from None
        tensors = _find_state_dict(obj, path)
        swap = (order or b"little").decode() != sys.byteorder
        return _materialize(archive, tensors, swap, path)


def _all_tensors(d):
    return all(isinstance(k, str) and isinstance(v, _TensorRef) for k, v in d.items())


def _find_state_dict(obj, path):
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds {_describe(obj)}, not a state dict (a dict of "
                         f"tensors)")
    if _all_tensors(obj):
        return obj
    for key in ("state_dict", "model_state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and _all_tensors(inner):
            return inner
    key, value = next((k, v) for k, v in obj.items()
                      if not (isinstance(k, str) and isinstance(v, _TensorRef)))
    raise ValueError(f"{path!r} is not a state dict: its entry {_describe(key)} holds "
                     f"{_describe(value)}, not a tensor (a checkpoint is unwrapped when "
                     f"its 'state_dict', 'model_state_dict' or 'model' entry is a dict "
                     f"of tensors)")


def _storage_dtype(sref, refs, path):
    """The NumPy dtype of a storage's elements, from its type or (an
    UntypedStorage) from the tensors on it, which must agree."""
    dtypes = {r.dtype for r in refs if r.dtype is not None}
    if sref.stype.dtype is None:
        if len(dtypes) != 1:
            raise ValueError(f"{path!r}: untyped storage {sref.key!r} is read as "
                             f"{sorted(dtypes) or 'no dtype'}, not as one dtype")
        return dtypes.pop()
    if dtypes - {sref.stype.dtype}:
        raise ValueError(f"{path!r}: storage {sref.key!r} holds {sref.stype.dtype} but a "
                         f"tensor reads it as {sorted(dtypes)}")
    return sref.stype.dtype


def _materialize(archive, tensors, swap, path):
    groups = {}
    for name, ref in tensors.items():
        groups.setdefault(id(ref.storage), (ref.storage, []))[1].append((name, ref))
    out = {}
    for sref, refs in groups.values():
        dtype_name = _storage_dtype(sref, [r for _, r in refs], path)
        bf16 = dtype_name == "bfloat16"
        dtype = np.dtype(np.uint16 if bf16 else dtype_name)
        info = archive.info(f"data/{sref.key}")
        if info is None:
            raise ValueError(f"{path!r} has no member {archive.prefix}data/{sref.key} for "
                             f"the storage of {refs[0][0]!r}")
        nbytes = sref.numel if sref.stype.dtype is None else sref.numel * dtype.itemsize
        if info.file_size != nbytes or nbytes % dtype.itemsize:
            raise ValueError(f"{path!r}: storage {sref.key!r} of {refs[0][0]!r} holds "
                             f"{info.file_size} bytes, but data.pkl describes {nbytes} "
                             f"bytes of {dtype_name}")
        raw = np.empty(nbytes, np.uint8)
        archive.read(info, raw)
        storage = raw.view(dtype)
        if swap and dtype.itemsize > 1:       # the file's byte order is not ours
            storage.byteswap(inplace=True)
        if bf16:
            storage = _bfloat16_to_float32(storage)
        del raw
        for name, ref in refs:
            out[name] = _tensor_array(storage, ref, name, path)
    return {name: out[name] for name in tensors}


def _tensor_array(storage, ref, name, path):
    size, offset = ref.size, ref.offset
    # a dimension of size 1 never steps: its stride is irrelevant (and may be huge)
    stride = tuple(0 if n == 1 else s for n, s in zip(size, ref.stride))
    numel = math.prod(size)
    if numel == 0:
        try:
            arr = np.empty(size, storage.dtype)
        except ValueError as err:
            raise ValueError(f"{path!r}: tensor {name!r} has size {size}: {err}") from None
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(storage):
            raise ValueError(f"{path!r}: tensor {name!r} (size {size}, stride {ref.stride}, "
                             f"offset {offset}) reaches element {last} of a storage of "
                             f"{len(storage)}")
        item = storage.dtype.itemsize
        try:
            view = np.lib.stride_tricks.as_strided(storage[offset:], size,
                                                   [s * item for s in stride], writeable=False)
        except ValueError as err:     # e.g. an expanded size beyond NumPy's limits
            raise ValueError(f"{path!r}: tensor {name!r} has size {size}: {err}") from None
        if view.flags.c_contiguous:
            arr = storage[offset:offset + numel].reshape(size)       # no copy
        elif numel <= len(storage):
            arr = view.copy()                 # a transpose, a slice with steps: C order
        else:
            arr = view                        # overlapping (expanded): read-only, no copy
    if ref.conj:
        arr = np.conj(arr)
    if ref.neg:
        arr = np.negative(arr)
    return arr
