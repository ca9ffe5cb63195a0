"""cnnfast.io.read_state_dict and the formats of save/load: PyTorch's
torch.save zip archives (hand-made here, no torch needed; checked byte for
byte against torch.save when torch is installed), hostile and broken files
(always ValueError, never code run), .npz and .safetensors round trips, the
memory a load costs, and real torch.save files of every cnnfast model loaded
in a process where torch cannot be imported."""
import json
import os
import pickle
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnfast
import cnnfast.nn as nn
import torchfiles as tf
from cnnfast import models
from cnnfast.io import read_state_dict
from torchfiles import Call, Global, Storage

ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__)))


def _assert_same(got, expected, ordered=True):
    assert (list(got) == list(expected)) if ordered else (sorted(got) == sorted(expected))
    for k, v in expected.items():
        v = np.asarray(v)
        assert got[k].dtype == v.dtype.newbyteorder("="), k
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


# ------------------------------------------------------- hand-made torch files

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8,
          np.bool_, np.complex64]


def _arrays(rng):
    out = OrderedDict()
    for i, dtype in enumerate(DTYPES):
        shape = [(3, 4), (2, 3, 2), (5,), (), (0, 3)][i % 5]
        out[f"layer{i}.{np.dtype(dtype).name}"] = (rng.standard_normal(shape) * 50).astype(dtype)
    out["bn.num_batches_tracked"] = np.array(123, np.int64)   # torchvision's 0-d int64
    return out


@pytest.mark.parametrize("byteorder", ["little", "big", None])
def test_state_dict_every_dtype_and_byte_order(tmp_path, rng, byteorder):
    arrays = _arrays(rng)
    path = tf.save_arrays(tmp_path / "w.pth", arrays, byteorder=byteorder or "little")
    if byteorder is None:    # no byteorder record (torch < 1.13): little-endian
        obj, storages = tf.state_dict_of(arrays)
        path = tf.write_archive(tmp_path / "old.pth", obj, storages, byteorder=None)
    got = read_state_dict(path)
    _assert_same(got, arrays)
    for v in got.values():
        assert v.dtype.isnative and v.flags.c_contiguous and v.flags.writeable


def test_views_of_one_storage(tmp_path):
    base = np.arange(12, dtype=np.float32)
    s = tf.storage_of(base, "0")
    sd = OrderedDict(
        whole=tf.tensor(s, 0, (3, 4), (4, 1)),
        transposed=tf.tensor(s, 0, (4, 3), (1, 4)),
        rows=tf.tensor(s, 4, (2, 4), (4, 1)),             # storage offset
        column=tf.tensor(s, 1, (3,), (4,)),
        every_other=tf.tensor(s, 0, (2, 2), (8, 2)),
        expanded=tf.tensor(s, 3, (2, 3), (0, 1)),         # stride 0 (torch's expand)
        one=tf.tensor(s, 11, (1, 1), (99, 12345)),        # size-1 dims: strides irrelevant
        empty=tf.tensor(s, 12, (0, 5), (5, 1)),
    )
    small = tf.storage_of(np.array([7.0, 8.0], np.float32), "1")
    sd["broadcast"] = tf.tensor(small, 0, (3, 2), (0, 1))  # more elements than its storage
    got = read_state_dict(tf.write_archive(tmp_path / "views.pth", sd, [s, small]))
    m = base.reshape(3, 4)
    expected = {"whole": m, "transposed": m.T, "rows": m[1:], "column": m[:, 1],
                "every_other": base[[0, 2, 8, 10]].reshape(2, 2),
                "expanded": np.broadcast_to(base[3:6], (2, 3)), "one": base[11:].reshape(1, 1),
                "empty": np.zeros((0, 5), np.float32),
                "broadcast": np.broadcast_to(np.float32([7, 8]), (3, 2))}
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
        assert got[k].shape == v.shape
    # contiguous tensors are views of the one read of the storage (shared, as
    # in torch); the others are copied once into C order
    assert np.shares_memory(got["whole"], got["rows"])
    assert not np.shares_memory(got["whole"], got["transposed"])
    assert got["transposed"].flags.c_contiguous and got["column"].flags.c_contiguous
    assert got["expanded"].flags.writeable and got["expanded"].flags.c_contiguous
    # a copy would be larger than the storage: a read-only view, as np.broadcast_to
    assert not got["broadcast"].flags.writeable


def test_bfloat16_is_widened_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 2.0 ** 100, -0.0, np.inf], np.float32)
    top_halves = (values.view(np.uint32) >> 16).astype("<u2")
    s = Storage("0", "BFloat16Storage", top_halves.tobytes(), len(values))
    got = read_state_dict(tf.write_archive(tmp_path / "bf16.pth",
                                           {"w": tf.tensor(s, 0, (2, 3), (3, 1))}, [s]))
    assert got["w"].dtype == np.float32
    np.testing.assert_array_equal(got["w"], values.reshape(2, 3))


def test_torch_2_names_parameters_v3_and_legacy_rebuild(tmp_path):
    u16 = np.array([1, 65535, 7], np.uint16)
    raw = Storage("1", "UntypedStorage", u16.tobytes(), u16.nbytes, module="torch.storage")
    f32 = tf.storage_of(np.array([1.5, 2.5], np.float32), "0")
    param = Global("torch._utils", "_rebuild_parameter")
    param_state = Global("torch._utils", "_rebuild_parameter_with_state")
    sd = {
        "p": Call(param, tf.tensor(f32, 0, (2,), (1,)), True, OrderedDict()),
        "q": Call(param_state, tf.tensor(f32, 1, (1,), (1,)), True, OrderedDict(), {"x": 1}),
        "u16": tf.tensor(raw, 0, (3,), (1,), rebuild=Global("torch._utils", "_rebuild_tensor_v3"),
                         extra=(Global("torch", "uint16"),)),
        "legacy": Call(Global("torch._utils", "_rebuild_tensor"), f32, 0, (2,), (1,)),
        "on_gpu": tf.tensor(Storage("2", "FloatStorage", b"\0\0\x80?", 1, location="cuda:0"),
                            0, (1,), (1,)),
    }
    got = read_state_dict(tf.write_archive(tmp_path / "t2.pth", sd, [f32, raw,
                          Storage("2", "FloatStorage", b"\0\0\x80?", 1)]))
    np.testing.assert_array_equal(got["p"], [1.5, 2.5])
    np.testing.assert_array_equal(got["q"], [2.5])
    assert got["u16"].dtype == np.uint16 and list(got["u16"]) == [1, 65535, 7]
    np.testing.assert_array_equal(got["legacy"], [1.5, 2.5])
    np.testing.assert_array_equal(got["on_gpu"], [1.0])


def test_conj_and_neg_metadata(tmp_path):
    c = tf.storage_of(np.array([1 + 2j, 3 - 1j], np.complex64), "0")
    f = tf.storage_of(np.array([1.0, -2.0], np.float32), "1")
    sd = {"c": tf.tensor(c, 0, (2,), (1,), extra=({"conj": True},)),
          "n": tf.tensor(f, 0, (2,), (1,), extra=({"neg": True},))}
    got = read_state_dict(tf.write_archive(tmp_path / "m.pth", sd, [c, f]))
    np.testing.assert_array_equal(got["c"], [1 - 2j, 3 + 1j])
    np.testing.assert_array_equal(got["n"], [-1.0, 2.0])


def test_checkpoint_dict_is_unwrapped_and_other_storages_never_read(tmp_path, rng):
    arrays = OrderedDict(w=rng.standard_normal((2, 2)).astype(np.float32))
    sd, storages = tf.state_dict_of(arrays)
    momentum = Storage("9", "FloatStorage", b"", 4)       # its data/9 member is missing
    for key in ("state_dict", "model_state_dict", "model"):
        ckpt = {"epoch": 3, key: sd, "optimizer": {"state": {0: {
            "momentum_buffer": tf.tensor(momentum, 0, (4,), (1,))}}, "lr": 0.1}}
        got = read_state_dict(tf.write_archive(tmp_path / f"{key}.pth", ckpt, storages))
        _assert_same(got, arrays)


@pytest.mark.parametrize("layout", ["unaligned", "deflated", "prefix"])
def test_zip_variants(tmp_path, rng, layout):
    arrays = _arrays(rng)
    obj, storages = tf.state_dict_of(arrays)
    prefix = "resnet18-f37072fd" if layout == "prefix" else "archive"
    members = tf.archive_members(tf.dumps(obj), storages, prefix=prefix)
    path = tmp_path / "w.pth"
    if layout == "deflated":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    else:
        tf.write_zip(path, members, align=0 if layout == "unaligned" else 64)
    _assert_same(read_state_dict(path), arrays)


# --------------------------------------------------------------- hostile files

def _payloads(marker):
    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').close()"
    imported_os = Call(Global("builtins", "__import__"), "os")
    return {
        "posix.system": Call(Global("posix", "system"), touch),
        "os.system": Call(Global("os", "system"), touch),
        "builtins.eval": Call(Global("builtins", "eval"), write),
        "builtins.exec": Call(Global("builtins", "exec"), write),
        "subprocess.Popen": Call(Global("subprocess", "Popen"), ["touch", str(marker)]),
        "builtins.getattr": Call(Call(Global("builtins", "getattr"), imported_os, "system"),
                                 touch),
        "torchfiles.Evil": tf.Evil(marker),            # a class: NEWOBJ, then BUILD
    }


def _wait_for(path, seconds=5.0):
    end = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.02)
    return path.exists()


@pytest.mark.parametrize("refused", list(_payloads("m")))
@pytest.mark.parametrize("where", ["entry", "inside_tensor"])
def test_hostile_pickles_are_refused_and_never_run(tmp_path, refused, where):
    marker = tmp_path / "marker"
    payload = _payloads(marker)[refused]
    if where == "entry":
        # proof that the payload is live: plain pickle would run it
        pickle.loads(tf.dumps({"x": payload}))
        assert _wait_for(marker), "the payload should work under plain pickle"
        marker.unlink()
    s = tf.storage_of(np.ones(2, np.float32), "0")
    good = tf.tensor(s, 0, (2,), (1,))
    if where == "entry":
        obj = OrderedDict(weight=good, bias=payload)
    else:   # a global nested in a tensor's arguments (its backward hooks)
        obj = OrderedDict(weight=tf.tensor(s, 0, (2,), (1,), hooks=payload))
    path = tf.write_archive(tmp_path / "evil.pth", obj, [s])
    with pytest.raises(ValueError, match=rf"refusing to load global '{refused}'"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="refusing"):
        cnnfast.load(nn.Linear(2, 2), path)
    time.sleep(0.05)
    assert not marker.exists()


def _write_pkl(path, data_pkl, storages=()):
    tf.write_zip(path, tf.archive_members(data_pkl, storages))
    return path


REBUILD = b"ctorch._utils\n_rebuild_tensor_v2\n"
HOSTILE_RAW = {
    # BUILD on a permitted global: would set attributes (e.g. __defaults__) on it
    "build_on_global": (b"\x80\x02" + REBUILD + b"}X\x0c\x00\x00\x00__defaults__)sb.", "BUILD"),
    # NEWOBJ on a permitted name that is not a class
    "newobj": (b"\x80\x02" + REBUILD + b")\x81.", "not a torch.save pickle"),
    # a persistent id that is not a storage record
    "persistent_id": (b"\x80\x02X\x03\x00\x00\x00abcQ.", "unknown persistent id"),
    # a memo slot of 2**31: the unpickler would allocate gigabytes for its memo
    "memo_bomb": (b"\x80\x02K\x01r\xff\xff\xff\x7f.", "memo slot"),
    "not_a_pickle": (b"\x00garbage", "not a valid pickle"),
    "truncated_pickle": (b"\x80\x02}q\x00(X\x01\x00\x00\x00a", "not a valid pickle"),
    "ext_registry": (b"\x80\x02\x82\x01.", "not a torch.save pickle"),
}


@pytest.mark.parametrize("case", list(HOSTILE_RAW))
def test_raw_pickle_tricks(tmp_path, case):
    data, message = HOSTILE_RAW[case]
    with pytest.raises(ValueError, match=message):
        read_state_dict(_write_pkl(tmp_path / "raw.pth", data))


def _good_members():
    arrays = OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3),
                         b=np.array([1.0, 2.0], np.float32))
    obj, storages = tf.state_dict_of(arrays)
    return arrays, obj, storages


def _broken(tmp_path, case):
    """Write one kind of broken or foreign file; return its path."""
    path = tmp_path / f"{case}.pth"
    arrays, obj, storages = _good_members()
    s = tf.storage_of(np.ones(4, np.float32), "0")
    one_tensor = lambda *args: tf.write_archive(path, {"w": tf.tensor(s, *args)}, [s])  # noqa: E731
    if case == "plain_pickle":
        path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    elif case == "plain_pickle_with_system":
        path.write_bytes(tf.dumps({"x": Call(Global("posix", "system"), "true")}))
    elif case == "legacy_torch":
        path.write_bytes(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + pickle.dumps(1001))
    elif case == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(1000))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        tf.write_archive(path, obj, storages)
        path.write_bytes(path.read_bytes()[:-100])
    elif case == "missing_storage":
        tf.write_zip(path, [m for m in tf.archive_members(tf.dumps(obj), storages)
                            if not m[0].endswith("/data/1")])
    elif case == "storage_too_short":
        tf.write_archive(path, {"w": tf.tensor(Storage("0", "FloatStorage", b"\0" * 8, 4), 0,
                                               (4,), (1,))}, [Storage("0", "FloatStorage",
                                                                      b"\0" * 8, 4)])
    elif case == "tensor_past_storage":
        one_tensor(0, (5,), (1,))
    elif case == "offset_past_storage":
        one_tensor(4, (1,), (1,))
    elif case == "stride_past_storage":
        one_tensor(0, (2, 2), (3, 1))
    elif case == "negative_stride":
        one_tensor(3, (4,), (-1,))
    elif case == "negative_size":
        one_tensor(0, (-4,), (1,))
    elif case == "negative_offset":
        one_tensor(-1, (1,), (1,))
    elif case == "float_size":
        one_tensor(0, (2.0,), (1,))
    elif case == "stride_rank_mismatch":
        one_tensor(0, (2, 2), (1,))
    elif case == "huge_numel_claim":
        big = Storage("0", "FloatStorage", b"\0" * 16, 2 ** 60)
        tf.write_archive(path, {"w": tf.tensor(big, 0, (2 ** 60,), (1,))}, [big])
    elif case == "huge_expanded_size":
        one_tensor(0, (2 ** 40, 2 ** 40), (0, 0))
    elif case == "huge_empty_size":
        one_tensor(0, (0, 2 ** 70), (1, 1))
    elif case == "not_a_dict":
        tf.write_archive(path, [tf.tensor(s, 0, (4,), (1,))], [s])
    elif case == "non_tensor_entry":
        tf.write_archive(path, {"w": tf.tensor(s, 0, (4,), (1,)), "epoch": 3}, [s])
    elif case == "non_str_key":
        tf.write_archive(path, {0: tf.tensor(s, 0, (4,), (1,))}, [s])
    elif case == "bare_storage":
        tf.write_archive(path, {"w": s}, [s])
    elif case == "storage_type_mismatch":
        s2 = Storage("0", "DoubleStorage", s.data, 2)
        tf.write_archive(path, {"a": tf.tensor(s, 0, (4,), (1,)),
                                "b": tf.tensor(s2, 0, (2,), (1,))}, [s])
    elif case == "two_archives":
        members = tf.archive_members(tf.dumps(obj), storages)
        tf.write_zip(path, members + tf.archive_members(tf.dumps(obj), storages, prefix="b"))
    elif case == "torchscript":
        members = tf.archive_members(tf.dumps(obj), storages)
        tf.write_zip(path, members + [("archive/constants.pkl", pickle.dumps(()))])
    elif case == "zip_of_something_else":
        tf.write_zip(path, [("readme.txt", b"hello")])
    elif case == "bad_byteorder":
        tf.write_archive(path, obj, storages, byteorder="middle")
    elif case == "damaged_storage":
        tf.write_archive(path, obj, storages)
        data = bytearray(path.read_bytes())
        at = data.index(arrays["w"].tobytes())
        data[at + 5] ^= 0xFF
        path.write_bytes(bytes(data))
    elif case == "npz_with_objects":
        path = tmp_path / "objects.npz"
        np.savez(path, w=np.array([{"a": 1}], dtype=object))
    elif case == "bad_safetensors":
        path = tmp_path / "bad.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}      ")
    elif case == "deeply_nested":     # error messages never repr such a structure
        _write_pkl(path, b"\x80\x02}X\x01\x00\x00\x00w" + b")" + b"\x85" * 100_000 + b"s.")
    elif case == "untyped_without_dtype":
        raw = Storage("0", "UntypedStorage", b"\0" * 8, 8, module="torch.storage")
        tf.write_archive(path, {"w": tf.tensor(raw, 0, (2,), (1,))}, [raw])
    else:
        raise AssertionError(case)
    return path


BROKEN = {
    "plain_pickle": "plain pickle", "plain_pickle_with_system": "plain pickle",
    "legacy_torch": "legacy format", "garbage": "not a weights file", "empty": "empty",
    "truncated": "not a readable zip", "missing_storage": "no member archive/data/1",
    "storage_too_short": "holds 8 bytes", "tensor_past_storage": "reaches element 4",
    "offset_past_storage": "reaches element 4", "stride_past_storage": "reaches element 4",
    "negative_stride": "non-negative", "negative_size": "non-negative",
    "negative_offset": "storage offset -1", "float_size": "non-negative ints",
    "stride_rank_mismatch": "one stride per dimension",
    "huge_numel_claim": "holds 16 bytes", "huge_expanded_size": "too big",
    "huge_empty_size": "size", "not_a_dict": "holds a list",
    "non_tensor_entry": "entry 'epoch' holds 3", "non_str_key": "entry 0 holds a tensor",
    "bare_storage": "holds storage '0'", "storage_type_mismatch": "described twice",
    "two_archives": "2 <archive>/data.pkl", "torchscript": "TorchScript",
    "zip_of_something_else": "neither a torch.save file", "bad_byteorder": "byte order",
    "damaged_storage": "CRC-32", "npz_with_objects": "allow_pickle",
    "bad_safetensors": "as .safetensors", "untyped_without_dtype": "not as one dtype",
    "deeply_nested": "entry 'w' holds a tuple",
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_and_foreign_files_raise_value_error(tmp_path, case):
    path = _broken(tmp_path, case)
    with pytest.raises(ValueError, match=BROKEN[case]):
        read_state_dict(path)


@pytest.fixture(scope="module")
def valid_archive(tmp_path_factory):
    arrays = _arrays(np.random.default_rng(3))
    path = tf.save_arrays(tmp_path_factory.mktemp("valid") / "w.pth", arrays)
    return arrays, path.read_bytes(), tmp_path_factory.mktemp("mutated")


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_or_flipped_archives_never_raise_anything_else(valid_archive, data):
    arrays, raw, folder = valid_archive
    if data.draw(st.booleans(), label="truncate"):
        mutated = raw[:data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        mutated = bytearray(raw)
        mutated[at] ^= data.draw(st.integers(1, 255), label="xor")
        mutated = bytes(mutated)
    path = folder / "mutated.pth"
    path.write_bytes(mutated)
    try:
        got = read_state_dict(path)
    except ValueError:
        return
    # a flip the format cannot notice (e.g. in the serialization id, padding or
    # the zip's timestamps) still yields the right arrays
    _assert_same(got, arrays)


# ------------------------------------------------------------ npz, safetensors

def test_npz_round_trip_and_architecture_key_dropped(tmp_path, rng):
    nn.manual_seed(0)
    a = models.lenet5()
    path = cnnfast.save(a, tmp_path / "w")
    assert path.endswith(".npz")
    state = read_state_dict(path)
    assert list(state) == list(a.state_dict())
    _assert_same(state, a.state_dict())


@pytest.mark.parametrize("name", ["w.safetensors", "w.npz"])
def test_save_load_round_trip_by_extension(tmp_path, rng, name):
    pytest.importorskip("safetensors")
    nn.manual_seed(0)
    a, b = models.resnet18(num_classes=3, dtype=np.float64), models.resnet18(num_classes=3)
    path = cnnfast.save(a, tmp_path / name)
    assert path == str(tmp_path / name)
    if name.endswith(".safetensors"):
        from safetensors.numpy import load_file
        _assert_same(load_file(path), a.state_dict(), ordered=False)   # plain safetensors
    _assert_same(read_state_dict(path), a.state_dict(), ordered=name.endswith(".npz"))
    assert cnnfast.load(b, path) is b
    x = rng.standard_normal((2, 3, 32, 32))
    np.testing.assert_array_equal(a.eval()(x), b.eval()(x))
    with pytest.raises(ValueError, match="saved from a ResNet, not a LeNet5"):
        cnnfast.load(models.lenet5(), path)


def test_save_refuses_torch_names_and_load_reads_pth(tmp_path, rng):
    with pytest.raises(ValueError, match="not PyTorch's pickles"):
        cnnfast.save(models.lenet5(), tmp_path / "w.pth")
    a = models.lenet5()
    path = tf.save_arrays(tmp_path / "w.pth", a.state_dict())
    b = cnnfast.load(models.lenet5(), path)
    _assert_same(b.state_dict(), a.state_dict())
    with pytest.raises(ValueError, match="keys or shapes are not those of a ResNet"):
        cnnfast.load(models.resnet18(), path)


def test_safetensors_bfloat16_becomes_float32(tmp_path):
    pytest.importorskip("safetensors")
    values = np.array([[1.0, -2.5], [3.140625, 0.0]], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    f32 = np.arange(3, dtype="<f4").tobytes()
    header = json.dumps({"a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bf16 + f32)
    got = read_state_dict(path)
    assert got["a"].dtype == np.float32
    np.testing.assert_array_equal(got["a"], values)
    np.testing.assert_array_equal(got["b"], [0, 1, 2])


def test_missing_safetensors_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r'pip install "cnnfast\[weights\]"'):
        cnnfast.save(models.lenet5(), tmp_path / "w.safetensors")
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ImportError, match=r'pip install "cnnfast\[weights\]"'):
        read_state_dict(path)


# --------------------------------------------------------------------- memory

def test_reading_costs_one_copy_of_the_data(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"layer{i}.weight": rng.standard_normal(1_000_000 + i).astype(np.float32)
              for i in range(6)}
    path = tf.save_arrays(tmp_path / "24mb.pth", arrays)
    nbytes = sum(a.nbytes for a in arrays.values())
    del arrays
    tracemalloc.start()
    try:
        state = read_state_dict(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(v.nbytes for v in state.values()) == nbytes
    assert peak < nbytes + (1 << 20), f"peak {peak / 2**20:.1f} MiB for {nbytes / 2**20:.1f} MiB"


def test_weights_argument_costs_one_copy_of_the_weights(tmp_path):
    source = models.resnet18(num_classes=10)
    path = tf.save_arrays(tmp_path / "resnet18.pth", source.state_dict())
    nbytes = sum(v.nbytes for v in source.state_dict().values())
    del source
    tracemalloc.start()
    try:
        model = models.resnet18(num_classes=10, weights=path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(v.nbytes for v in model.state_dict().values()) == nbytes
    # the random initial parameters are dropped before the file is read, and
    # the arrays read become the parameters (load_state_dict(assign=True))
    assert peak < 1.1 * nbytes, f"peak {peak / 2**20:.1f} MiB for {nbytes / 2**20:.1f} MiB"


# ---------------------------------------------------------------------- torch

def test_writer_is_byte_identical_to_torch_save(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                              torch.nn.Linear(3, 4, dtype=torch.float64))
    sd = net.state_dict()
    theirs = tmp_path / "ref.pth"
    torch.save(sd, theirs)
    arrays = OrderedDict((k, v.numpy()) for k, v in sd.items())
    obj, storages = tf.state_dict_of(arrays, metadata={k: dict(v)
                                                       for k, v in sd._metadata.items()})
    ours = tf.write_archive(tmp_path / "ours.pth", obj, storages, prefix="ref")
    with zipfile.ZipFile(theirs) as a, zipfile.ZipFile(ours) as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            if not name.endswith("serialization_id"):      # random in torch's
                assert a.read(name) == b.read(name), name
        # torch aligns each member's data to 64 bytes, as the writer does
        for info in b.infolist():
            assert (info.header_offset + 30 + len(info.filename) + len(info.extra)) % 64 == 0


def test_real_torch_files_of_every_kind(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    base = torch.randn(3, 4)
    values = {
        "f32": base, "t": base.t(), "rows": base[1:], "col": base[:, 1],
        "exp": base[0].expand(2, 4), "big_exp": base[0, :2].expand(5, 2),
        "f64": torch.randn(2, 2, dtype=torch.float64), "f16": torch.randn(5).half(),
        "bf16": torch.randn(5).bfloat16(), "i64": torch.tensor(7), "i32": torch.arange(4).int(),
        "i8": torch.tensor([-3, 4], dtype=torch.int8), "u8": torch.tensor([250], dtype=torch.uint8),
        "bool": torch.tensor([True, False]), "u16": torch.tensor([1, 60000], dtype=torch.uint16),
        "u32": torch.tensor([4_000_000_000], dtype=torch.uint32),
        "cplx": torch.tensor([1 + 2j, 3j]), "conj": torch.tensor([1 + 2j, 3j]).conj(),
        "neg": torch._neg_view(torch.tensor([1.0, -2.0])),
        "param": torch.nn.Parameter(torch.ones(3)), "empty": torch.zeros(0, 3),
        "nchw_channels_last": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
    }
    path = tmp_path / "kinds.pt"
    torch.save(values, path)
    got = read_state_dict(path)
    for k, t in values.items():
        expected = (t.float() if t.dtype == torch.bfloat16 else t).detach().resolve_conj()
        expected = expected.resolve_neg().numpy()
        assert got[k].dtype == expected.dtype and got[k].shape == expected.shape, k
        np.testing.assert_array_equal(got[k], expected, err_msg=k)
    # checkpoints as torch tutorials write them; a whole pickled module is refused
    ckpt = {"epoch": 2, "model_state_dict": {"w": base}, "optimizer_state_dict": {"state": {}}}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    np.testing.assert_array_equal(read_state_dict(tmp_path / "ckpt.pt")["w"], base.numpy())
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(ValueError, match="refusing to load global 'torch.nn.modules.linear"):
        read_state_dict(tmp_path / "module.pt")
    torch.save({"w": base}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy format"):
        read_state_dict(tmp_path / "legacy.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # torch.jit is deprecated
        scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "scripted.pt"))
    with pytest.raises(ValueError, match="TorchScript"):
        read_state_dict(tmp_path / "scripted.pt")
# (model, input size) as in test_models; small heads, so only VGG's 25088 x 4096
# layer is big (VGG-16: 537 MB of float32, about 2 s to write and read)
SIZES = {"lenet5": 32, "alexnet": 64, "vgg11": 32, "vgg16": 32, "googlenet": 32,
         "resnet18": 32, "resnet34": 32}

# Makes "import torch" fail in a child process (sys.modules["torch"] = None
# would too, but SciPy's array-API helpers then trip over that None).
NO_TORCH = r"""
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""

CHILD = NO_TORCH + r"""
import json
import numpy as np
from cnnfast import models
for case in json.load(open(sys.argv[1])):
    x = np.load(case["x"])
    model = models.MODELS[case["name"]](num_classes=3, in_channels=x.shape[1],
                                        weights=case["path"], **case["kwargs"]).eval()
    y, expected = model(x), np.load(case["y"])
    if case["exact"]:
        np.testing.assert_array_equal(y, expected, err_msg=case["name"])
    else:
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5 * abs(expected).max(),
                                   err_msg=case["name"])
    print(case["name"], case["exact"], float(abs(y - expected).max()))
assert "torch" not in sys.modules
"""


def _perturbed(model, rng):
    """Every parameter and buffer moved off its initial values, so a load that
    silently did nothing cannot pass."""
    for _, p in model.named_parameters():
        p.data = p.data * np.float32(1.5) + np.float32(0.01)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean = rng.standard_normal(mod.num_features).astype(np.float32) * 0.1
            mod.running_var = rng.uniform(0.5, 1.5, mod.num_features).astype(np.float32)
    return model


def test_torch_save_files_of_every_model_load_without_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from cnnfast.bench.train import torch_lenet5, torch_resnet18

    rng = np.random.default_rng(7)
    cases = []
    for name, size in SIZES.items():
        in_ch = 1 if name == "lenet5" else 3
        x = rng.standard_normal((2, in_ch, size, size)).astype(np.float32)
        kwargs = {"init_weights": False} if name in ("vgg11", "vgg16") else {}
        if name == "googlenet":    # torchvision's file holds the aux heads
            kwargs["aux_logits"] = True
        nn.manual_seed(11)
        ours = _perturbed(models.MODELS[name](num_classes=3, in_channels=in_ch, **kwargs), rng)
        y = ours.eval()(x)
        state = OrderedDict((k, torch.from_numpy(v)) for k, v in ours.state_dict().items())
        for key in list(state):      # torchvision's counters, int64 0-d tensors
            if key.endswith("running_var"):
                state[key[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(100)
        del ours
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        del state
        np.save(tmp_path / f"{name}_x.npy", x)
        np.save(tmp_path / f"{name}_y.npy", y)
        child_kwargs = {"aux_logits": False} if name == "googlenet" else {}
        cases.append({"name": name, "path": str(path), "x": str(tmp_path / f"{name}_x.npy"),
                      "y": str(tmp_path / f"{name}_y.npy"), "kwargs": child_kwargs,
                      "exact": True})
    # the torch twins: PyTorch's own outputs, to float32 rounding
    for name, make, in_ch in (("lenet5", torch_lenet5, 1), ("resnet18", torch_resnet18, 3)):
        torch.manual_seed(0)
        twin = make(torch, in_ch, 3)
        with torch.no_grad():
            for mod in twin.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.normal_(0, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
                    mod.weight.normal_(1, 0.1)
                    mod.bias.normal_(0, 0.1)
        twin.eval()
        x = rng.standard_normal((2, in_ch, 32, 32)).astype(np.float32)
        with torch.no_grad():
            y = twin(torch.from_numpy(x)).numpy()
        path = tmp_path / f"{name}_twin.pth"
        torch.save(twin.state_dict(), path)
        np.save(tmp_path / f"{name}_twin_x.npy", x)
        np.save(tmp_path / f"{name}_twin_y.npy", y)
        cases.append({"name": name, "path": str(path), "x": str(tmp_path / f"{name}_twin_x.npy"),
                      "y": str(tmp_path / f"{name}_twin_y.npy"), "kwargs": {}, "exact": False})
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    # cwd: a neutral directory, so `python -c` imports the cnnfast under test,
    # not an unbuilt source tree in the current directory
    out = subprocess.run([sys.executable, "-c", CHILD, str(spec)], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=300)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(out.stdout.splitlines()) == len(cases), out.stdout


EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                       "finetune_pretrained.py")


@pytest.mark.skipif(not os.path.exists(EXAMPLE), reason="examples/ not present")
def test_finetune_example_runs_without_torch(tmp_path):
    code = NO_TORCH + f"""
import runpy
sys.argv = ["finetune_pretrained.py", "--quick"]
runpy.run_path({EXAMPLE!r}, run_name="__main__")
assert "torch" not in sys.modules
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cnnfast's example writer" in out.stdout and "frozen base unchanged: True" in out.stdout
    accuracy = float(out.stdout.strip().splitlines()[-1].split(":")[1])
    assert accuracy > 0.3, out.stdout          # chance is 0.1


@pytest.mark.skipif(not os.path.exists(EXAMPLE), reason="examples/ not present")
def test_example_writer_makes_files_torch_reads(tmp_path, rng):
    torch = pytest.importorskip("torch")
    import runpy

    example = runpy.run_path(EXAMPLE)
    state = OrderedDict(a=rng.standard_normal((2, 3)).astype(np.float32),
                        b=rng.standard_normal(4).astype(np.float32))
    path = tmp_path / "w.pth"
    example["write_torch_file"](state, path)
    loaded = torch.load(path, weights_only=True)
    for k, v in state.items():
        np.testing.assert_array_equal(loaded[k].numpy(), v)
    _assert_same(read_state_dict(path), state)
