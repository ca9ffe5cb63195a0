"""Winograd rows of `python -m cnnfast.bench --only winograd`: per 3x3 shape
and pass (forward, input gradient, weight gradient) the time of
algorithm="winograd", "auto" and "direct", PyTorch's, and the float32 error
of the Winograd result, max|err| / max|ref| against cnnfast's float64
direct result."""
from __future__ import annotations

import numpy as np

import cnnfast
from cnnfast.bench.shapes import WINOGRAD_SHAPES
from cnnfast.bench._threads import cnnfast_threads

ALGORITHMS = ("winograd", "auto", "direct")
PASSES = ("forward", "x", "weight")


def _run(pass_, x, w, go, alg):
    if pass_ == "forward":
        return cnnfast.conv2d(x, w, padding=1, algorithm=alg)
    gx, gw, _ = cnnfast.conv2d_backward(go, x, w, padding=1, need=(pass_,), algorithm=alg)
    return gx if pass_ == "x" else gw


def _torch_call(torch, pass_, x, w, go, K):
    tx, tw, tgo = (torch.from_numpy(a) for a in (x, w, go))
    if pass_ == "forward":
        return lambda: torch.nn.functional.conv2d(tx, tw, padding=1)
    mask = [pass_ == "x", pass_ == "weight", False]
    return lambda: torch.ops.aten.convolution_backward(tgo, tx, tw, [K], [1, 1], [1, 1], [1, 1],
                                                       False, [0, 0], 1, mask)


def relative_error(pass_, x, w, go):
    """max|err| / max|ref| of the float32 Winograd result of one pass."""
    f32 = [a.astype(np.float32) for a in (x, w, go)]
    ref = _run(pass_, x.astype(np.float64), w.astype(np.float64), go.astype(np.float64), "direct")
    got = _run(pass_, *f32, "winograd")
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def winograd_rows(threads, dtype, repeat, progress, median_ms, torch):
    rows = []
    for shape in progress(WINOGRAD_SHAPES):
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape.x_shape).astype(dtype)
        w = (rng.standard_normal(shape.w_shape) * 0.1).astype(dtype)
        go = rng.standard_normal((shape.N, shape.K) + shape.out_hw).astype(dtype)
        for pass_ in PASSES:
            times = {}
            with cnnfast_threads(threads):
                for alg in ALGORITHMS:
                    times[alg] = median_ms(lambda: _run(pass_, x, w, go, alg), repeat)
            tms = None
            if torch is not None:
                torch.set_num_threads(threads)
                with torch.no_grad():
                    tms = median_ms(_torch_call(torch, pass_, x, w, go, shape.K), repeat)
            plan = cnnfast.explain_conv(shape.x_shape, shape.w_shape, padding=1, dtype=dtype,
                                        need=(pass_,), threads=threads)
            rows.append({"shape": shape.label(), "pass": pass_, "flops": shape.flops,
                         "ms": times, "torch_ms": tms,
                         "auto_picks": plan.passes[pass_].algorithm,
                         "error": relative_error(pass_, x, w, go)})
    return rows


def format_winograd_table(rows, peak, threads, torch_version):
    head = (f"{'3x3 shape':<44} {'pass':<7} {'wino ms':>8} {'auto ms':>8} {'dir ms':>8} "
            f"{'torch':>8} {'x dir':>6} {'x torch':>7} {'eff/sgemm':>9} {'auto':>8} "
            f"{'f32 err':>8}")
    lines = [f"threads={threads}  sgemm={peak:.1f} GFLOP/s  torch={torch_version or 'not installed'}"
             "  (eff/sgemm: direct FLOPs / winograd time over the sgemm rate)", head,
             "-" * len(head)]
    for r in rows:
        t = r["ms"]
        tor = f"{r['torch_ms']:.2f}" if r["torch_ms"] else "-"
        vs_t = f"{r['torch_ms'] / t['winograd']:.2f}" if r["torch_ms"] else "-"
        eff = r["flops"] / t["winograd"] / 1e6 / peak
        lines.append(f"{r['shape']:<44} {r['pass']:<7} {t['winograd']:>8.2f} {t['auto']:>8.2f} "
                     f"{t['direct']:>8.2f} {tor:>8} {t['direct'] / t['winograd']:>6.2f} "
                     f"{vs_t:>7} {eff:>9.2f} {r['auto_picks']:>8} {r['error']:>8.1e}")
    return "\n".join(lines)
