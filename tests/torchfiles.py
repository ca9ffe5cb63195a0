"""torch.save archives made by hand, without torch, for the tests.

torch.save(obj, f) pickles obj with protocol 2, writing each tensor as a call
of torch._utils._rebuild_tensor_v2 on a persistent id
("storage", torch.FloatStorage, key, location, numel), and stores the pickle
and each storage's bytes in a zip archive:

    <archive>/data.pkl  .format_version  .storage_alignment  byteorder
    <archive>/data/0 ...  version  .data/serialization_id

Here `Global` stands in for a torch name (pickled as a GLOBAL opcode without
importing anything), `Call` for any REDUCE, `Storage` for a persistent id and
`tensor()` for a rebuild call, so the tests can write exactly torch's layout
(test_io_weights checks it byte for byte against torch.save when torch is
installed) and also anything a hostile or broken file might hold.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

_GLOBALS = {}


class Global:
    """module.name, pickled as GLOBAL 'module name' (one object per name, so a
    second use is a memo GET, as torch's pickler writes it)."""

    def __new__(cls, module, name):
        key = (module, name)
        if key not in _GLOBALS:
            obj = super().__new__(cls)
            obj.module, obj.name = module, name
            _GLOBALS[key] = obj
        return _GLOBALS[key]

    def __call__(self, *args):   # pickle's save_reduce wants a callable
        raise TypeError(f"{self.module}.{self.name} is a stand-in")

    def __repr__(self):
        return f"Global({self.module}.{self.name})"


class Call:
    """Pickles as REDUCE: func(*args), func a Global."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __call__(self, *args):   # may itself be the func of a Call
        raise TypeError("a stand-in")

    def __reduce__(self):
        return self.func, self.args


class Storage:
    """A storage: its persistent id and its bytes (data/<key>)."""

    def __init__(self, key, type_name, data, numel=None, location="cpu", module="torch"):
        self.key, self.type_name, self.data = key, type_name, bytes(data)
        self.numel, self.location, self.module = numel, location, module

    def pid(self):
        return ("storage", Global(self.module, self.type_name), self.key, self.location,
                self.numel)


REBUILD_V2 = Global("torch._utils", "_rebuild_tensor_v2")
ORDERED_DICT = Global("collections", "OrderedDict")

STORAGE_TYPES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                 np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                 np.dtype(np.int32): "IntStorage", np.dtype(np.int16): "ShortStorage",
                 np.dtype(np.int8): "CharStorage", np.dtype(np.uint8): "ByteStorage",
                 np.dtype(np.bool_): "BoolStorage", np.dtype(np.complex64): "ComplexFloatStorage"}


def tensor(storage, offset, size, stride, *, requires_grad=False, hooks=None, rebuild=REBUILD_V2,
           extra=()):
    """torch's Tensor.__reduce_ex__: _rebuild_tensor_v2(storage, offset, size,
    stride, requires_grad, OrderedDict())."""
    hooks = OrderedDict() if hooks is None else hooks
    return Call(rebuild, storage, offset, tuple(size), tuple(stride), requires_grad, hooks,
                *extra)


def storage_of(array, key, byteorder="little", type_name=None):
    """A Storage holding a copy of `array`'s elements (flattened, C order)."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<" if byteorder == "little" else ">")
    return Storage(key, type_name or STORAGE_TYPES[array.dtype.newbyteorder("=")],
                   array.astype(dtype).tobytes(), array.size)


def c_strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def state_dict_of(arrays, byteorder="little", metadata=None):
    """{name: array} as torch.save(model.state_dict()) pickles it: an
    OrderedDict of contiguous tensors, one storage each, with torch's
    `_metadata` attribute. Returns (object to pickle, [storages])."""
    sd, storages = OrderedDict(), []
    for i, (name, array) in enumerate(arrays.items()):
        array = np.asarray(array)
        s = storage_of(array, str(i), byteorder)
        storages.append(s)
        sd[name] = tensor(s, 0, array.shape, c_strides(array.shape))
    sd._metadata = OrderedDict(metadata if metadata is not None else {"": {"version": 1}})
    return sd, storages


class _Pickler(pickle._Pickler):
    """The pure-Python pickler, with Global written as a GLOBAL opcode and
    Storage as torch's persistent id."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_stand_in(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[Global] = save_stand_in

    def persistent_id(self, obj):
        return obj.pid() if isinstance(obj, Storage) else None


def dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_zip(path, members, align=64):
    """Write the (name, bytes) members stored (uncompressed), each member's
    data aligned to `align` bytes with a padding extra field, as torch does."""
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            if align:
                start = f.tell() + 30 + len(name.encode()) + 4
                pad = -start % align
                info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            zf.writestr(info, data)


def archive_members(data_pkl, storages, prefix="archive", byteorder="little"):
    members = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/.format_version", b"1"),
               (f"{prefix}/.storage_alignment", b"64")]
    if byteorder is not None:
        members.append((f"{prefix}/byteorder", byteorder.encode()))
    seen = set()
    for s in storages:
        if s.key not in seen:
            seen.add(s.key)
            members.append((f"{prefix}/data/{s.key}", s.data))
    members += [(f"{prefix}/version", b"3\n"),
                (f"{prefix}/.data/serialization_id", b"0" * 40)]
    return members


def write_archive(path, obj, storages=(), prefix="archive", byteorder="little", align=64):
    """torch.save's layout for `obj` (pickled with dumps) and its storages."""
    write_zip(path, archive_members(dumps(obj), storages, prefix, byteorder), align)
    return path


def save_arrays(path, arrays, byteorder="little", prefix="archive"):
    """Like torch.save({name: torch.from_numpy(a)}, path) for a state dict."""
    obj, storages = state_dict_of(arrays, byteorder)
    return write_archive(path, obj, storages, prefix, byteorder)


class Evil:
    """A class whose unpickling (BUILD -> __setstate__) writes a marker file:
    a stand-in for any class a hostile pickle might name."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").close()
