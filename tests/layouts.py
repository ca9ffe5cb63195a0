"""Memory layouts every op must accept (docs/EDGE_CASES.md), shared by the conv and
pooling layout tests: the same values as a C-contiguous native array, stored
every other way NumPy allows."""
import numpy as np

LAYOUTS = ["fortran", "transposed", "strided", "negative", "broadcast", "readonly",
           "memmap", "byteswapped", "misaligned"]


def _garbage(dtype):
    """What fills the gaps of a strided view: NaN, or for indices an index far
    outside any plane (a kernel that read it would write out of bounds); for
    the other dtypes of the fuzz tests' invalid inputs, an extreme value."""
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return np.nan
    if dtype.kind in "iu":
        return max(-2**62, np.iinfo(dtype).min) if dtype.kind == "i" else np.iinfo(dtype).max
    return True if dtype.kind == "b" else -2**62


def relayout(a, layout, path):
    """The values of the C-contiguous array `a` in the given memory layout (for
    "broadcast": `a` with its last non-trivial axis replaced by a zero-stride
    repeat of its first entry). `path` is a file for "memmap"."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "transposed":  # channels-last storage seen channels-first
        if a.ndim < 2:
            return np.ascontiguousarray(a[:, None].T)[0]
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    if layout == "strided":  # every other element of a garbage-filled buffer
        buf = np.full(a.shape[:-1] + (2 * a.shape[-1],), _garbage(a.dtype), dtype=a.dtype)
        buf[..., ::2] = a
        return buf[..., ::2]
    if layout == "negative":  # every axis reversed
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    if layout == "broadcast":
        axis = max(i for i, n in enumerate(a.shape) if n > 1)
        return np.broadcast_to(np.take(a, [0], axis=axis), a.shape)
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "memmap":
        a.tofile(path)
        return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)
    if layout == "byteswapped":
        return a.astype(a.dtype.newbyteorder())
    if layout == "misaligned":  # one byte into a bytes object of n * itemsize + 1
        raw = b"\x00" + a.tobytes()
        assert len(raw) == a.size * a.itemsize + 1
        return np.frombuffer(raw, dtype=a.dtype, offset=1).reshape(a.shape)
    raise AssertionError(layout)


def native_copy(a):
    """A C-contiguous native-byte-order copy of `a`."""
    out = np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True)
    assert out.flags.c_contiguous and out.flags.aligned and out.flags.writeable
    return out


def snapshot(arrays):
    """Copies of the arrays and of any NumPy buffer they are views of."""
    keep = []
    for a in arrays:
        keep.append((a, np.array(a, copy=True)))
        if isinstance(a.base, np.ndarray):
            keep.append((a.base, np.array(a.base, copy=True)))
    return keep


def check_unmodified(keep):
    for a, saved in keep:
        assert a.dtype == saved.dtype
        np.testing.assert_array_equal(a, saved)  # NaN garbage compares equal
