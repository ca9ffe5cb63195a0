#!/usr/bin/env python3
"""Coverage-guided fuzzing of every cnnfast op with atheris (libFuzzer for Python).

    pip install atheris
    python scripts/fuzz_atheris.py -max_total_time=300        # or -atheris_runs=20000
    python scripts/fuzz_atheris.py corpus/ -max_total_time=3600  # keep a corpus

libFuzzer's own flags pass through (-runs, -max_len, -jobs, ...). Each input's
bytes choose an op (conv 1-D/2-D/3-D with an algorithm, forward or backward;
max/avg/adaptive/global pooling, forward or backward), array shapes (zero
sizes and wrong ranks included), dtypes, memory layouts, values (NaN and inf
included) and window arguments (valid, zero, negative, beyond 2**31, floats,
strings, None, bools, tuples of the wrong length). The contract:

* the call returns, or raises ValueError/TypeError -- any other exception is a
  finding (atheris stops and saves the input as crash-*);
* a call that returns gives what cnnfast.reference gives on C-contiguous native
  copies (NaN where it has NaN), and leaves its inputs unchanged;
* no crash: a segfault, abort or sanitizer report ends the run. To catch
  memory errors that do not crash, run it against the sanitizer build:
  KEEP=1 scripts/sanitize.sh tests/test_fuzz.py, then from the kept copy
  LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \\
      python scripts/fuzz_atheris.py -max_total_time=300

Python code of cnnfast (validation, algorithm choice) is instrumented for
coverage; the C kernels are not (that would need -fsanitize=fuzzer). Every 50,000
calls (and at a normal exit) it prints how many calls it made, valid and rejected.
"""
import atexit
import sys
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports(include=["cnnfast"]):
    import cnnfast
    from cnnfast import reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from layouts import relayout  # noqa: E402  (tests/layouts.py)

OPS = ([f"conv{nd}d" for nd in (1, 2, 3)] + [f"conv{nd}d_backward" for nd in (1, 2, 3)]
       + [f"{k}_pool{nd}d{b}" for k in ("max", "avg") for nd in (1, 2, 3)
          for b in ("", "_backward")]
       + [f"{k}_pool2d{b}" for k in ("adaptive_avg", "adaptive_max", "global_avg",
                                     "global_max") for b in ("", "_backward")])
DTYPES = [np.float32, np.float64, np.float32, np.float64, np.float32, np.float64, np.int64,
          np.float16, np.complex64, np.bool_, object, ">f4", ">f8"]
LAYOUTS = ["C", "C", "C", "fortran", "transposed", "strided", "negative", "broadcast",
           "readonly", "byteswapped", "misaligned"]
SPECIAL_INTS = [0, -1, 2**31, 2**63, -2**63]
OTHER_VALUES = [None, 1.5, 2.0, "2", "same", "valid", True, (), (1, 2, 3, 4), [1], b"x"]
COUNTS = {"calls": 0, "valid": 0, "rejected": 0}


class Draw:
    """Typed choices read from the fuzzer's bytes."""

    def __init__(self, data):
        self.fdp = atheris.FuzzedDataProvider(data)

    def int(self, lo, hi):
        return self.fdp.ConsumeIntInRange(lo, hi)

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def chance(self, percent):
        """True in `percent` % of draws; False when the bytes run out (0 -> the
        plain, valid choice, so short inputs make valid calls)."""
        return self.int(0, 99) >= 100 - percent

    def size(self):
        return 0 if self.chance(3) else self.int(1, 7)

    def arg(self, nd, lo, hi):
        """A window argument: mostly an int or tuple in [lo, hi]."""
        if self.chance(5):
            return self.pick(OTHER_VALUES)
        if self.chance(5):
            return self.pick(SPECIAL_INTS)
        if self.chance(50):
            return self.int(lo, hi)
        return tuple(self.pick(SPECIAL_INTS) if self.chance(3) else self.int(lo, hi)
                     for _ in range(nd if not self.chance(3) else self.int(0, 4)))

    def flag(self):
        return self.pick([True, False, 0, 1, 2, None, "yes"]) if self.chance(5) else \
            self.pick([True, False])

    def array(self, shape, dtype):
        """Values from the bytes' seed, with NaN/inf sprinkled, in a drawn layout."""
        rng = np.random.default_rng(self.int(0, 2**32 - 1))
        a = rng.standard_normal(shape)
        if a.size and self.chance(20):
            a.reshape(-1)[rng.integers(0, a.size, 3)] = self.pick([np.nan, np.inf, -np.inf])
        if np.dtype(dtype) == object:
            return a.astype(object)
        if np.dtype(dtype).kind in "iub":
            a = np.nan_to_num(np.round(a * 3))
        return self.layout(a.astype(dtype) if np.dtype(dtype) != np.bool_ else a > 0)

    def layout(self, a):
        layout = self.pick(LAYOUTS)
        if layout == "C" or (layout == "broadcast" and not any(n > 1 for n in a.shape)):
            return a
        return relayout(a, layout, None)

    def maybe_not_array(self, a):
        return self.pick([None, 1.0, [[1.0]], "x"]) if self.chance(3) else a


def _rank(nd, draw):
    return nd + 2 + (draw.pick([-1, 1]) if draw.chance(3) else 0)


def build(draw):
    """(op name, kwargs) for one call."""
    op = draw.pick(OPS)
    nd = int(op[4]) if op.startswith("conv") else int(op.split("_pool")[1][0])
    dtype = draw.pick(DTYPES)
    N, C = draw.int(0, 3), draw.size()
    spatial = tuple(draw.size() for _ in range(nd))
    if op.startswith("conv"):
        groups = draw.pick([1, 1, 2, 3, 0, -1, 2.0])
        g = groups if isinstance(groups, int) and groups > 0 else 1
        K = draw.int(1, 3) * g if not draw.chance(5) else draw.size()
        Cg = max(C // g, 1) if not draw.chance(5) else draw.size()
        kernel = tuple(draw.size() if draw.chance(5) else draw.int(1, 4) for _ in range(nd))
        x = draw.array(((N, C) + spatial + (2,))[:_rank(nd, draw)], dtype)
        w = draw.array((K, Cg) + kernel, dtype if not draw.chance(5) else draw.pick(DTYPES))
        kw = dict(x=draw.maybe_not_array(x), weight=draw.maybe_not_array(w),
                  stride=draw.arg(nd, 1, 3), dilation=draw.arg(nd, 1, 2), groups=groups,
                  padding=draw.pick(["same", "valid"]) if draw.chance(20)
                  else draw.arg(nd, 0, 2),
                  algorithm=draw.pick(["auto", "direct", "im2col", "1x1", "fft"]))
        if op.endswith("_backward"):
            out = (N, K) + tuple(draw.int(1, 7) for _ in range(nd))
            try:  # mostly the right grad_out shape
                out = getattr(reference, op[:-9])(
                    np.zeros(x.shape), np.zeros(w.shape),
                    **{k: kw[k] for k in ("stride", "padding", "dilation", "groups")}).shape
            except Exception:  # noqa: BLE001 -- an invalid geometry: keep the guess
                pass
            kw["grad_out"] = draw.maybe_not_array(draw.array(out, dtype))
            kw["need"] = draw.pick([("x", "weight", "bias"), ("x",), "bias", (), ("w",)])
        else:
            kw["bias"] = None if draw.chance(30) else draw.array((K + draw.chance(5),), dtype)
        return op, kw
    base = op[:-9] if op.endswith("_backward") else op
    kind = base.split("_pool")[0]
    geometry = {}
    if kind in ("max", "avg"):
        geometry = dict(kernel_size=draw.arg(nd, 1, 4),
                        stride=None if draw.chance(30) else draw.arg(nd, 1, 3),
                        padding=draw.arg(nd, 0, 2), ceil_mode=draw.flag())
        if kind == "max":
            geometry["dilation"] = draw.arg(nd, 1, 2)
        else:
            geometry["count_include_pad"] = draw.flag()
            geometry["divisor_override"] = draw.pick([None, None, 2, 0, -1, 2.0])
    elif kind.startswith("adaptive"):
        geometry = dict(output_size=draw.arg(2, 1, 6))
    x_shape = (N, C) + spatial
    if not op.endswith("_backward"):
        kw = dict(x=draw.maybe_not_array(draw.array((x_shape + (2,))[:_rank(nd, draw)],
                                                    dtype)), **geometry)
        if kind in ("max", "adaptive_max", "global_max"):
            kw["return_indices"] = draw.flag()
        if kind.startswith("global"):
            kw["keepdims"] = draw.flag()
        return op, kw
    input_shape = x_shape if not draw.chance(5) else draw.pick(
        [x_shape[:-1], (N, -1) + spatial, list(x_shape), (N, C) + (2.0,) * nd])
    forward = getattr(reference, base)
    try:  # the real forward output (and indices), mostly
        fkw = {k: v for k, v in geometry.items()}
        if kind in ("max", "adaptive_max", "global_max"):
            fkw["return_indices"] = True
        y = forward(np.zeros(x_shape), **fkw)
        out = (y[0] if isinstance(y, tuple) else y).shape
    except Exception:  # noqa: BLE001 -- an invalid geometry: any shape
        out = (N, C) + tuple(draw.int(1, 4) for _ in range(nd))
    kw = dict(grad_out=draw.maybe_not_array(draw.array(out, dtype)), input_shape=input_shape)
    if kind in ("max", "adaptive_max", "global_max"):
        plane = max(int(np.prod(spatial)), 1)
        ind = np.random.default_rng(draw.int(0, 1000)).integers(0, plane, size=out)
        if draw.chance(10) and ind.size:
            ind.reshape(-1)[draw.int(0, ind.size - 1)] = draw.pick([-1, plane, 2**62, -2**63])
        kw["indices"] = draw.maybe_not_array(draw.layout(
            ind if not draw.chance(5) else ind.astype(np.int32)))
    if kind == "avg":
        kw.update(geometry)
    return op, kw


def _native(v):
    if isinstance(v, np.ndarray):
        return np.array(v, dtype=v.dtype.newbyteorder("="), order="C", copy=True)
    return v


def TestOneInput(data):
    op, kw = build(Draw(data))
    arrays = [v for v in kw.values() if isinstance(v, np.ndarray)]
    saved = [np.array(a, copy=True) for a in arrays]
    COUNTS["calls"] += 1
    if COUNTS["calls"] % 50_000 == 0:  # libFuzzer ends a timed run with _exit (no atexit)
        _report()
    try:
        got = getattr(cnnfast, op)(**kw)
    except (ValueError, TypeError):
        COUNTS["rejected"] += 1
        return
    COUNTS["valid"] += 1
    for a, s in zip(arrays, saved):  # inputs untouched
        if not np.array_equal(a, s, equal_nan=a.dtype.kind in "fc"):
            raise AssertionError(f"{op} modified an input")
    args = {k: _native(v) for k, v in kw.items() if k != "algorithm"}
    with np.errstate(all="ignore"):
        expected = getattr(reference, op)(**args)
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    if (op.startswith("conv") and op.endswith("_backward")
            and not np.isfinite(kw["weight"]).all()):
        # known (tests/test_edge_cases.py, xfail): the direct input gradient
        # multiplies grad_out's zero padding by a NaN/inf weight
        got, expected = got[1:], expected[1:]
    for g, e in zip(got, expected):
        if (g is None) != (e is None):
            raise AssertionError(f"{op}: result present in one of cnnfast/reference only")
        if g is None:
            continue
        if g.shape != e.shape or not g.flags.c_contiguous or not g.dtype.isnative:
            raise AssertionError(f"{op}: result {g.shape} {g.dtype} vs {e.shape} {e.dtype}")
        tol = 1e-3 if g.dtype == np.float32 else 1e-9
        if not np.allclose(g, e, rtol=tol, atol=tol * 64, equal_nan=True):
            finite = np.isfinite(e)
            if not (np.array_equal(np.isnan(g), np.isnan(e))
                    and np.allclose(g[finite], e[finite], rtol=tol, atol=tol * 64)):
                raise AssertionError(f"{op}: differs from the reference with {kw}")


def _report():
    print(f"fuzz_atheris: {COUNTS['calls']} calls, {COUNTS['valid']} valid (checked against "
          f"the reference), {COUNTS['rejected']} rejected with ValueError/TypeError",
          file=sys.stderr, flush=True)


def main():
    atexit.register(_report)
    cnnfast.set_num_threads(1)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
