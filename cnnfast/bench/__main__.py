"""python -m cnnfast.bench: time every conv algorithm, depthwise and transposed conv, pooling op, training step and whole model, and the per-call cost of tiny calls.

Per row: median ms of repeated runs after warm-up, GFLOP/s (conv) or GB/s
(pooling), % of the machine's limit measured in the same run with the same
thread count (SciPy sgemm GFLOP/s; NumPy copy GB/s), and speed-ups against
cnnfast.reference and PyTorch CPU (when torch is importable). --plot draws
the speed-ups (matplotlib), --json keeps everything with the environment.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

import cnnfast
from cnnfast import reference
from cnnfast._malloc import keep_freed_memory
from cnnfast.bench.shapes import (CONV_ALGORITHMS, CONV_SHAPES, CONV_TRANSPOSE_SHAPES,
                                  PADDING_MODE_SHAPES, PADDING_MODES, POOL_SHAPES, pool_ops)
from cnnfast.bench.models import format_model_table, format_scaling, model_rows


def median_ms(fn, repeat, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def sgemm_gflops(threads, dtype, repeat):
    """GFLOP/s of SciPy's BLAS (the one the kernels call) on a square GEMM."""
    from scipy.linalg import blas
    from threadpoolctl import threadpool_limits

    n = 1536
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n)).astype(dtype))
    b = np.asfortranarray(rng.standard_normal((n, n)).astype(dtype))
    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    with threadpool_limits(threads, user_api="blas"):
        ms = min(median_ms(lambda: gemm(1.0, a, b), repeat) for _ in range(2))
    return 2 * n ** 3 / ms / 1e6


def copy_gbs(repeat):
    """NumPy copy bandwidth (bytes read + written per second) on 64 MB."""
    a = np.ones(16 << 20, dtype=np.float32)
    b = np.empty_like(a)
    ms = min(median_ms(lambda: np.copyto(b, a), repeat) for _ in range(2))
    return 2 * a.nbytes / ms / 1e6


def _pool_calls(lib, shape, x, torch_mode=False):
    """{(op, pass): zero-argument callable} for one pooling shape."""
    if shape.is_global:
        return _global_pool_calls(lib, x, torch_mode)
    k, s, p = shape.kernel, shape.stride, shape.padding
    if torch_mode:
        F = lib.nn.functional
        xt = lib.from_numpy(x)
        xg = xt.clone().requires_grad_(True)
        ym = F.max_pool2d(xg, k, s, p)
        ya = F.avg_pool2d(xg, k, s, p)
        gm, ga = lib.ones_like(ym), lib.ones_like(ya)
        return {("max", "forward"): lambda: F.max_pool2d(xt, k, s, p),
                ("max+idx", "forward"): lambda: F.max_pool2d(xt, k, s, p, return_indices=True),
                ("max", "backward"): lambda: lib.autograd.grad(ym, xg, gm, retain_graph=True),
                ("avg", "forward"): lambda: F.avg_pool2d(xt, k, s, p),
                ("avg", "backward"): lambda: lib.autograd.grad(ya, xg, ga, retain_graph=True)}
    y, idx = lib.max_pool2d(x, k, s, p, return_indices=True)
    g = np.ones_like(y)
    ga = np.ones_like(lib.avg_pool2d(x, k, s, p))
    return {("max", "forward"): lambda: lib.max_pool2d(x, k, s, p),
            ("max+idx", "forward"): lambda: lib.max_pool2d(x, k, s, p, return_indices=True),
            ("max", "backward"): lambda: lib.max_pool2d_backward(g, idx, x.shape),
            ("avg", "forward"): lambda: lib.avg_pool2d(x, k, s, p),
            ("avg", "backward"): lambda: lib.avg_pool2d_backward(ga, x.shape, k, s, p)}


def _global_pool_calls(lib, x, torch_mode):
    if torch_mode:
        xt = lib.from_numpy(x)
        xg = xt.clone().requires_grad_(True)
        ym = lib.amax(xg, dim=(2, 3))
        ya = lib.mean(xg, dim=(2, 3))
        g = lib.ones_like(ym)
        return {("gmax", "forward"): lambda: lib.amax(xt, dim=(2, 3)),
                ("gmax", "backward"): lambda: lib.autograd.grad(ym, xg, g, retain_graph=True),
                ("gavg", "forward"): lambda: lib.mean(xt, dim=(2, 3)),
                ("gavg", "backward"): lambda: lib.autograd.grad(ya, xg, g, retain_graph=True)}
    y, idx = lib.global_max_pool2d(x, return_indices=True)
    g = np.ones_like(y)
    return {("gmax", "forward"): lambda: lib.global_max_pool2d(x),
            ("gmax", "backward"): lambda: lib.global_max_pool2d_backward(g, idx, x.shape),
            ("gavg", "forward"): lambda: lib.global_avg_pool2d(x),
            ("gavg", "backward"): lambda: lib.global_avg_pool2d_backward(g, x.shape)}


def pool_rows(threads, dtype, repeat, with_reference, progress):
    torch = _torch()
    rows = []
    for shape in progress(POOL_SHAPES):
        x = np.random.default_rng(0).standard_normal(shape.x_shape).astype(dtype)
        y = (cnnfast.global_max_pool2d(x) if shape.is_global
             else cnnfast.max_pool2d(x, shape.kernel, shape.stride, shape.padding))
        with cnnfast.num_threads(threads):
            ours = {key: median_ms(fn, repeat) for key, fn in _pool_calls(cnnfast, shape, x).items()}
        refs = ({key: median_ms(fn, max(1, repeat // 3))
                 for key, fn in _pool_calls(reference, shape, x).items()}
                if with_reference else {})
        theirs = {}
        if torch is not None:
            torch.set_num_threads(threads)
            theirs = {key: median_ms(fn, repeat)
                      for key, fn in _pool_calls(torch, shape, x, torch_mode=True).items()}
        for op, passage in pool_ops(shape):
            ms = ours[(op, passage)]
            # bytes that must move: read x and write y (forward), read grad_out
            # (+ indices) and write grad_x (backward); int64 indices where used
            with_indices = op == "max+idx" or (op in ("max", "gmax") and passage == "backward")
            idx_bytes = y.size * 8 if with_indices else 0
            moved = x.nbytes + y.nbytes + idx_bytes
            rms, tms = refs.get((op, passage)), theirs.get((op, passage))
            rows.append(dict(shape=shape.label(), algorithm=op, passage=passage, ms=ms,
                             gbs=moved / ms / 1e6, vs_reference=(rms / ms) if rms else None,
                             vs_torch=(tms / ms) if tms else None, reference_ms=rms,
                             torch_ms=tms))
    return rows


def format_pool_table(rows, copy, threads, torch_version):
    head = (f"{'shape':<44} {'op':<8} {'pass':<8} {'ms':>8} {'GB/s':>8} "
            f"{'% copy':>8} {'x ref':>7} {'x torch':>8}")
    lines = [f"threads={threads}  copy bandwidth={copy:.1f} GB/s  "
             f"torch={torch_version or 'not installed'}", head, "-" * len(head)]
    for r in rows:
        ref = f"{r['vs_reference']:.1f}" if r["vs_reference"] else "-"
        tor = f"{r['vs_torch']:.2f}" if r["vs_torch"] else ("n/a" if torch_version else "not inst.")
        lines.append(f"{r['shape']:<44} {r['algorithm']:<8} {r['passage']:<8} {r['ms']:>8.2f} "
                     f"{r['gbs']:>8.1f} {100 * r['gbs'] / copy:>7.0f}% {ref:>7} {tor:>8}")
    return "\n".join(lines)


def train_rows(threads, repeat, progress):
    """ms per training step (forward + loss + backward + SGD), against torch."""
    from cnnfast.bench.train import TRAIN_CASES, torch_training_step, training_step

    torch = _torch()
    rows = []
    for case in progress(TRAIN_CASES):
        with cnnfast.num_threads(threads):
            ms = median_ms(training_step(case), repeat, warmup=2)
        tms = None
        if torch is not None:
            torch.set_num_threads(threads)
            tms = median_ms(torch_training_step(case), repeat, warmup=2)
        rows.append(dict(shape=case.name, algorithm="auto", passage="train step", ms=ms,
                         vs_reference=None, vs_torch=(tms / ms) if tms else None,
                         torch_ms=tms))
    return rows


def format_train_table(rows, threads, torch_version):
    head = f"{'model':<44} {'pass':<12} {'ms':>8} {'torch ms':>9} {'x torch':>8}"
    lines = [f"threads={threads}  torch={torch_version or 'not installed'}", head,
             "-" * len(head)]
    for r in rows:
        tms = f"{r['torch_ms']:.2f}" if r["torch_ms"] else "-"
        tor = f"{r['vs_torch']:.2f}" if r["vs_torch"] else ("n/a" if torch_version else "not inst.")
        lines.append(f"{r['shape']:<44} {r['passage']:<12} {r['ms']:>8.2f} {tms:>9} {tor:>8}")
    return "\n".join(lines)


def plot(results, path):
    """Bar chart of the speed-ups per row (x torch where measured, else x reference),
    one panel per op family and thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for run in results["runs"]:
        for family, key in (("conv", "rows"), ("transposed conv", "conv_transpose_rows"),
                            ("pooling", "pool_rows"), ("training", "train_rows"),
                            ("models", "model_rows")):
            rows = run.get(key) or []
            if rows:
                panels.append((f"{family}, {run['threads']} thread(s)", rows))
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(10, sum(0.6 + 0.22 * len(r) for _, r in panels)))
    for ax, (title, rows) in zip(axes[:, 0], panels):
        use_torch = any(r["vs_torch"] for r in rows)
        metric = "vs_torch" if use_torch else "vs_reference"
        labels = [f"{r['shape'].split(' (')[0]} {r['algorithm']} {r['passage']}" for r in rows]
        values = [r[metric] or 0 for r in rows]
        colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
        ax.barh(range(len(rows)), values, color=colors)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(f"{title}: speed-up {'vs PyTorch CPU' if use_torch else 'vs NumPy reference'}"
                     " (> 1 is faster)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _conv_arrays(shape, dtype):
    """x, weight, bias, grad_out and the stride/padding of a ConvShape."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape.x_shape).astype(dtype)
    w = (rng.standard_normal(shape.w_shape) * 0.1).astype(dtype)
    b = rng.standard_normal(shape.K).astype(dtype)
    go = rng.standard_normal((shape.N, shape.K) + shape.out_hw).astype(dtype)
    return x, w, b, go, dict(stride=shape.stride, padding=shape.padding)


def conv_rows(threads, dtype, repeat, algorithms, with_reference, progress):
    torch = _torch()
    rows = []
    for shape in progress(CONV_SHAPES):
        x, w, b, go, args = _conv_arrays(shape, dtype)
        base = {"shape": shape.label(), "flops": shape.flops}
        ref_f = ref_b = torch_f = torch_b = None
        if with_reference:
            from threadpoolctl import threadpool_limits
            with threadpool_limits(threads):
                ref_f = median_ms(lambda: reference.conv2d(x, w, b, **args), max(repeat // 3, 1))
                ref_b = median_ms(lambda: reference.conv2d_backward(go, x, w, **args),
                                  max(repeat // 3, 1))
        if torch is not None:
            torch.set_num_threads(threads)
            tx, tw, tb, tgo = (torch.from_numpy(a) for a in (x, w, b, go))
            with torch.no_grad():
                torch_f = median_ms(lambda: torch.nn.functional.conv2d(tx, tw, tb, **args), repeat)
                torch_b = median_ms(lambda: torch.ops.aten.convolution_backward(
                    tgo, tx, tw, [shape.K], [shape.stride] * 2, [shape.padding] * 2, [1, 1],
                    False, [0, 0], 1, [True, True, True]), repeat)
        for alg in algorithms:
            if alg == "1x1" and shape.kernel != 1:
                continue
            with cnnfast.num_threads(threads):
                fwd = median_ms(lambda: cnnfast.conv2d(x, w, b, **args, algorithm=alg), repeat)
                bwd = median_ms(lambda: cnnfast.conv2d_backward(go, x, w, **args, algorithm=alg),
                                repeat)
            for pass_, ms, rms, tms, flops in (("forward", fwd, ref_f, torch_f, shape.flops),
                                               ("backward", bwd, ref_b, torch_b, 2 * shape.flops)):
                rows.append(dict(base, algorithm=alg, passage=pass_, ms=ms,
                                 gflops=flops / ms / 1e6,
                                 vs_reference=(rms / ms) if rms else None,
                                 vs_torch=(tms / ms) if tms else None,
                                 reference_ms=rms, torch_ms=tms))
    return rows


def conv_transpose_rows(threads, dtype, repeat, progress):
    """Transposed convolutions, forward and backward, beside torch and beside
    the conv input gradient they share a driver with (x conv: its time over
    ours, per FLOP the same work)."""
    torch = _torch()
    rows = []
    for shape in progress(CONV_TRANSPOSE_SHAPES):
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape.x_shape).astype(dtype)
        w = (rng.standard_normal(shape.w_shape) * 0.1).astype(dtype)
        b = rng.standard_normal(shape.K).astype(dtype)
        args = dict(stride=shape.stride, padding=shape.padding)
        go = rng.standard_normal((shape.N, shape.K) + shape.out_hw).astype(dtype)
        conv = shape.conv_equivalent
        with cnnfast.num_threads(threads):
            fwd = median_ms(lambda: cnnfast.conv_transpose2d(x, w, b, **args), repeat)
            bwd = median_ms(lambda: cnnfast.conv_transpose2d_backward(go, x, w, **args), repeat)
            # the matching conv's input gradient: conv maps go's shape to x's
            conv_gx = median_ms(lambda: cnnfast.conv2d_backward(
                x, go, w, stride=conv.stride, padding=conv.padding, need=("x",)), repeat)
        torch_f = torch_b = None
        if torch is not None:
            torch.set_num_threads(threads)
            tx = torch.from_numpy(x).requires_grad_()
            tw = torch.from_numpy(w).requires_grad_()
            tb = torch.from_numpy(b).requires_grad_()
            tgo = torch.from_numpy(go)
            with torch.no_grad():
                torch_f = median_ms(lambda: torch.nn.functional.conv_transpose2d(
                    tx, tw, tb, **args), repeat)

            def torch_backward():
                y = torch.nn.functional.conv_transpose2d(tx, tw, tb, **args)
                torch.autograd.grad(y, (tx, tw, tb), tgo)
            # autograd's backward includes a forward: subtract it
            torch_b = max(median_ms(torch_backward, repeat) - torch_f, 1e-6)
        for pass_, ms, tms, flops in (("forward", fwd, torch_f, shape.flops),
                                      ("backward", bwd, torch_b, 2 * shape.flops)):
            rows.append(dict(shape=shape.label(), algorithm="auto", passage=pass_, ms=ms,
                             gflops=flops / ms / 1e6, vs_torch=(tms / ms) if tms else None,
                             torch_ms=tms, vs_reference=None, reference_ms=None,
                             vs_conv_input_grad=(conv_gx / ms) if pass_ == "forward" else None))
    return rows


def padding_mode_rows(threads, dtype, repeat, progress):
    """conv2d forward and backward in each padding_mode, beside zero padding
    (x zeros: the zero-padding time over the mode's) and torch's F.pad +
    conv2d (the extra pass users write by hand; x torch: its time over ours)."""
    torch = _torch()
    rows = []
    for shape in progress(PADDING_MODE_SHAPES):
        x, w, _, go, args = _conv_arrays(shape, dtype)
        times = {}
        for mode in PADDING_MODES:
            with cnnfast.num_threads(threads):
                times[mode] = (
                    median_ms(lambda: cnnfast.conv2d(x, w, **args, padding_mode=mode), repeat),
                    median_ms(lambda: cnnfast.conv2d_backward(go, x, w, **args,
                                                              padding_mode=mode), repeat))
        for mode in PADDING_MODES:
            torch_ms = None
            if torch is not None:
                torch.set_num_threads(threads)
                tx, tw = torch.from_numpy(x), torch.from_numpy(w)
                pads = [shape.padding] * 4
                with torch.no_grad():
                    torch_ms = median_ms(lambda: torch.nn.functional.conv2d(
                        torch.nn.functional.pad(tx, pads, mode=mode) if mode != "zeros"
                        else torch.nn.functional.pad(tx, pads), tw, stride=shape.stride),
                        repeat)
            for i, pass_ in enumerate(("forward", "backward")):
                ms = times[mode][i]
                rows.append(dict(shape=shape.label(), mode=mode, passage=pass_, ms=ms,
                                 vs_zeros=times["zeros"][i] / ms,
                                 torch_ms=torch_ms if pass_ == "forward" else None))
    return rows


def format_padding_mode_table(rows, threads, torch_version):
    head = f"{'padding_mode':<44} {'mode':<10} {'pass':<8} {'ms':>8} {'x zeros':>8} {'x torch':>8}"
    lines = [f"threads={threads}  torch (F.pad + conv2d)={torch_version or 'not installed'}",
             head, "-" * len(head)]
    for r in rows:
        tor = f"{r['torch_ms'] / r['ms']:.2f}" if r["torch_ms"] else ""
        lines.append(f"{r['shape']:<44} {r['mode']:<10} {r['passage']:<8} {r['ms']:>8.2f} "
                     f"{r['vs_zeros']:>8.2f} {tor:>8}")
    return "\n".join(lines)


def format_conv_transpose_table(rows, peak, threads, torch_version):
    head = (f"{'transposed conv':<44} {'pass':<8} {'ms':>8} {'GFLOP/s':>8} {'% sgemm':>8} "
            f"{'x torch':>8} {'x conv dx':>9}")
    lines = [f"threads={threads}  sgemm={peak:.1f} GFLOP/s  torch={torch_version or 'not installed'}",
             head, "-" * len(head)]
    for r in rows:
        tor = f"{r['vs_torch']:.2f}" if r["vs_torch"] else "n/a"
        cgx = f"{r['vs_conv_input_grad']:.2f}" if r["vs_conv_input_grad"] else ""
        lines.append(f"{r['shape']:<44} {r['passage']:<8} {r['ms']:>8.2f} {r['gflops']:>8.1f} "
                     f"{100 * r['gflops'] / peak:>7.0f}% {tor:>8} {cgx:>9}")
    return "\n".join(lines)


def format_table(rows, peak, threads, torch_version):
    head = (f"{'shape':<44} {'algorithm':<8} {'pass':<8} {'ms':>8} {'GFLOP/s':>8} "
            f"{'% sgemm':>8} {'x ref':>7} {'x torch':>8}")
    lines = [f"threads={threads}  sgemm peak={peak:.1f} GFLOP/s  "
             f"torch={torch_version or 'not installed'}", head, "-" * len(head)]
    for r in rows:
        ref = f"{r['vs_reference']:.1f}" if r["vs_reference"] else "-"
        tor = f"{r['vs_torch']:.2f}" if r["vs_torch"] else ("n/a" if torch_version else "not inst.")
        lines.append(f"{r['shape']:<44} {r['algorithm']:<8} {r['passage']:<8} {r['ms']:>8.2f} "
                     f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>7.0f}% {ref:>7} {tor:>8}")
    return "\n".join(lines)


def environment():
    from cnnfast import _threads
    from cnnfast._ext import _runtime
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    torch = _torch()
    return {"cpu": cpu, "cores": __import__("os").cpu_count(),
            "kernels": _runtime.isa_description(),
            "compiler": _runtime.compiler(), "openmp": _runtime.openmp_enabled(),
            "blas": _threads.blas_info(), "python": platform.python_version(),
            "build_flags": _runtime.build_flags(),
            "numpy": np.__version__, "cnnfast": cnnfast.__version__,
            "torch": torch.__version__ if torch else None}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cnnfast.bench", description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1", help="thread count, or a sweep like 1,2")
    p.add_argument("--quick", action="store_true", help="few repeats (finishes in about a minute)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--only", default="all",
                   choices=["all", "conv", "convt", "padmode", "pool", "train", "models",
                            "winograd", "percall", "depthwise"],
                   help="op family to run")
    p.add_argument("--algorithms", default=",".join(CONV_ALGORITHMS))
    p.add_argument("--no-reference", action="store_true", help="skip the NumPy reference")
    p.add_argument("--under-load", action="store_true",
                   help="models: run with one other process spinning on a core")
    p.add_argument("--data-format", default="channels_first",
                   choices=["channels_first", "channels_last"],
                   help="channels_last: instead of the tables above, time each conv, "
                        "transposed conv and pooling shape channels-first, channels-last and "
                        "as transpose-call-transpose (cnnfast.bench.layout)")
    p.add_argument("--json", metavar="FILE", help="write results and environment as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="bar chart of the speed-ups (needs matplotlib: pip install cnnfast[plot])")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the CLI does; torch's allocator caches likewise
    dtype = np.dtype(args.dtype)
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (fail before the runs, not after)
        except ImportError:
            p.error("--plot needs matplotlib: pip install matplotlib (or cnnfast[plot])")
    repeat = 3 if args.quick else 10
    try:
        from tqdm import tqdm

        def progress(items):
            return tqdm(items, desc="shapes", leave=False, file=sys.stderr)
    except ImportError:
        def progress(items):
            return items
    torch = _torch()
    results = {"environment": environment(), "runs": []}
    for threads in (int(t) for t in args.threads.split(",")):
        version = torch.__version__ if torch else None
        run = {"threads": threads, "dtype": str(dtype)}
        if args.data_format == "channels_last":
            from cnnfast.bench.layout import format_layout_table, layout_rows

            rows = layout_rows(threads, dtype, repeat, args.only, median_ms, progress)
            print(format_layout_table(rows, threads))
            print()
            run.update(layout_rows=rows)
            results["runs"].append(run)
            continue
        if args.only in ("all", "conv"):
            peak = sgemm_gflops(threads, dtype, repeat)
            rows = conv_rows(threads, dtype, repeat, args.algorithms.split(","),
                             not args.no_reference, progress)
            print(format_table(rows, peak, threads, version))
            print()
            run.update(sgemm_gflops=peak, rows=rows)
        if args.only in ("all", "winograd"):
            from cnnfast.bench.winograd import format_winograd_table, winograd_rows
            peak = run.get("sgemm_gflops") or sgemm_gflops(threads, dtype, repeat)
            rows = winograd_rows(threads, dtype, repeat, progress, median_ms, torch)
            print(format_winograd_table(rows, peak, threads, version))
            print()
            run.update(sgemm_gflops=peak, winograd_rows=rows)
        if args.only in ("all", "depthwise"):
            from cnnfast.bench.depthwise import depthwise_rows, format_depthwise_table
            copy = copy_gbs(repeat)
            rows = depthwise_rows(threads, dtype, repeat, progress, median_ms, torch)
            print(format_depthwise_table(rows, copy, threads, version))
            print()
            run.update(copy_gbs=copy, depthwise_rows=rows)
        if args.only in ("all", "convt"):
            peak = run.get("sgemm_gflops") or sgemm_gflops(threads, dtype, repeat)
            rows = conv_transpose_rows(threads, dtype, repeat, progress)
            print(format_conv_transpose_table(rows, peak, threads, version))
            print()
            run.update(sgemm_gflops=peak, conv_transpose_rows=rows)
        if args.only in ("all", "padmode"):
            rows = padding_mode_rows(threads, dtype, repeat, progress)
            print(format_padding_mode_table(rows, threads, version))
            print()
            run.update(padding_mode_rows=rows)
        if args.only in ("all", "pool"):
            copy = copy_gbs(repeat)
            rows = pool_rows(threads, dtype, repeat, not args.no_reference, progress)
            print(format_pool_table(rows, copy, threads, version))
            print()
            run.update(copy_gbs=copy, pool_rows=rows)
        if args.only in ("all", "percall"):
            from cnnfast.bench.percall import format_percall_table, percall_rows

            rows = percall_rows(threads, dtype, args.quick, torch)
            print(format_percall_table(rows, threads, version))
            print()
            run.update(percall_rows=rows)
        if args.only in ("all", "train"):
            if dtype != np.float32:
                print("training step: float32 only, skipped for", dtype)
            else:
                rows = train_rows(threads, repeat, progress)
                print(format_train_table(rows, threads, version))
                print()
                run.update(train_rows=rows)
        if args.only in ("all", "models"):
            if dtype != np.float32:
                print("models: float32 only, skipped for", dtype)
            else:
                rows = model_rows(threads, repeat, progress, quick=args.quick,
                                  under_load=args.under_load)
                print(format_model_table(rows, threads, version))
                print()
                run.update(model_rows=rows)
        results["runs"].append(run)
    scaling = format_scaling(results["runs"])
    if scaling:
        print(scaling)
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
