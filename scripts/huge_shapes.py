#!/usr/bin/env python3
"""Arrays of more than 2**31 elements through the kernels (docs/EDGE_CASES.md "Sizes":
64-bit offsets everywhere). Too big for CI: each case needs up to ~10 GB.

    python scripts/huge_shapes.py            # every case, one child process each
    python scripts/huge_shapes.py CASE ...   # the named cases, in this process
    python scripts/huge_shapes.py --list

Each case fills a float32 array past 2**31 elements -- in one plane, or across
the batch -- with values that never repeat with a period dividing 2**31
(i mod 1000003), so an offset that wrapped at 32 bits would read a different
value; runs the op; and compares outputs near the end (where only 64-bit
offsets reach) and at the start with cnnfast.reference on the matching slice.
A case whose memory is not available is reported as skipped.
tests/test_edge_cases.py::test_more_than_2_31_elements runs these (pytest
--runslow or CNNFAST_SLOW=1).
"""
import gc
import subprocess
import sys
import time

import numpy as np

import cnnfast
from cnnfast import reference

GB = 1 << 30
PERIOD = 1_000_003   # prime: i mod PERIOD != (i - 2**31) mod PERIOD


def available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def filled(shape):
    """float32 array of `shape` holding (i mod PERIOD) / PERIOD, filled in chunks."""
    a = np.empty(shape, dtype=np.float32)
    flat = a.reshape(-1)
    chunk = 1 << 24
    for start in range(0, flat.size, chunk):
        stop = min(start + chunk, flat.size)
        flat[start:stop] = (np.arange(start, stop, dtype=np.int64) % PERIOD) / np.float32(PERIOD)
    return a


def check_close(got, expected, what, tol=1e-5):
    if not np.allclose(got, expected, rtol=tol, atol=tol):
        bad = np.argwhere(~np.isclose(got, expected, rtol=tol, atol=tol))[:5]
        raise AssertionError(f"{what}: mismatch at {bad.tolist()}")


# ---------------------------------------------------------------- cases

def max_pool2d_plane():
    """One (40000, 54000) plane: 2.16e9 elements, its last ~230 rows past 2**31."""
    H, W, kernel = 40000, 54000, (4, 8)
    x = filled((1, 1, H, W))
    y, idx = cnnfast.max_pool2d(x, kernel, return_indices=True)
    OH = y.shape[2]
    for rows in (slice(0, 3), slice(OH - 3, OH)):
        r0 = rows.start * kernel[0]
        sub = x[:, :, r0:r0 + 3 * kernel[0]]
        ys, idxs = reference.max_pool2d(sub, kernel, return_indices=True)
        np.testing.assert_array_equal(y[:, :, rows], ys)
        np.testing.assert_array_equal(idx[:, :, rows], idxs + r0 * W)
    assert int(idx.max()) >= 2**31


def _batch():
    """(32800, 1, 256, 256): 2.15e9 elements, the last 31 images past 2**31."""
    return filled((32800, 1, 256, 256))


def max_pool2d_batch():
    x = _batch()
    y, idx = cnnfast.max_pool2d(x, (4, 8), return_indices=True)
    for images in (slice(0, 2), slice(-40, None)):
        ys, idxs = reference.max_pool2d(x[images], (4, 8), return_indices=True)
        np.testing.assert_array_equal(y[images], ys)
        np.testing.assert_array_equal(idx[images], idxs)


def avg_pool2d_batch():
    x = _batch()
    y = cnnfast.avg_pool2d(x, 8, stride=(8, 4), padding=(4, 2), count_include_pad=False)
    for images in (slice(0, 2), slice(-40, None)):
        check_close(y[images], reference.avg_pool2d(x[images], 8, stride=(8, 4), padding=(4, 2),
                                                    count_include_pad=False), "avg_pool2d")


def max_pool2d_backward_batch():
    """grad_x of 2.15e9 elements: the scatter writes past 2**31."""
    x = _batch()
    shape = x.shape
    _, idx = cnnfast.max_pool2d(x, (4, 8), return_indices=True)
    del x
    gc.collect()
    grad_out = filled(idx.shape)
    grad_x = cnnfast.max_pool2d_backward(grad_out, idx, shape)
    for images in (slice(0, 2), slice(-40, None)):
        n = len(range(*images.indices(shape[0])))
        expected = reference.max_pool2d_backward(grad_out[images], idx[images],
                                                 (n,) + shape[1:])
        np.testing.assert_array_equal(grad_x[images], expected)


def conv2d_im2col_batch():
    """im2col over an input of 2.15e9 elements (one 3x3 filter, stride 4)."""
    x = _batch()
    w = np.array([[[[0.5, -1.0, 0.25], [1.0, 2.0, -0.5], [0.0, 1.5, -2.0]]]], np.float32)
    y = cnnfast.conv2d(x, w, stride=4, padding=1, algorithm="im2col")
    for images in (slice(0, 2), slice(-40, None)):
        check_close(y[images], reference.conv2d(x[images], w, stride=4, padding=1), "im2col")


def conv2d_direct_output():
    """The direct kernel writing an output of 2.15e9 elements (16 filters over
    2050 images of 256x256; the input itself is small)."""
    x = filled((2050, 1, 256, 256))
    w = np.linspace(-1, 1, 16 * 9, dtype=np.float32).reshape(16, 1, 3, 3)
    y = cnnfast.conv2d(x, w, padding=1, algorithm="direct")
    assert y.size > 2**31
    for images in (slice(0, 2), slice(-3, None)):
        check_close(y[images], reference.conv2d(x[images], w, padding=1), "direct")


# name -> (function, peak GB)
CASES = {
    "max_pool2d_plane": (max_pool2d_plane, 9.4),
    "max_pool2d_batch": (max_pool2d_batch, 9.4),
    "avg_pool2d_batch": (avg_pool2d_batch, 8.8),
    "max_pool2d_backward_batch": (max_pool2d_backward_batch, 9.5),
    "conv2d_im2col_batch": (conv2d_im2col_batch, 9.3),
    "conv2d_direct_output": (conv2d_direct_output, 9.8),
}


def run(name):
    function, peak = CASES[name]
    free = available_bytes()
    if free is not None and free < (peak + 1) * GB:
        print(f"{name}: skipped (needs ~{peak} GB, {free / GB:.1f} GB available)", flush=True)
        return
    start = time.perf_counter()
    function()
    print(f"{name}: ok ({time.perf_counter() - start:.1f} s, ~{peak} GB)", flush=True)


def main(argv):
    if argv == ["--list"]:
        print("\n".join(CASES))
        return 0
    if argv:
        for name in argv:
            if name not in CASES:
                print(f"unknown case {name!r}; --list shows them", file=sys.stderr)
                return 2
            run(name)
        return 0
    status = 0
    for name in CASES:  # one child each, so each case starts from an empty heap
        child = subprocess.run([sys.executable, __file__, name])
        status = status or child.returncode
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
