"""python -m cnnfast.bench: time every conv algorithm on the standard shapes.

Per row: median ms of repeated runs after warm-up, GFLOP/s, % of the sgemm
GFLOP/s measured in the same run with the same thread count, and speed-ups
against cnnfast.reference and PyTorch CPU (when torch is importable).
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
from cnnfast.bench.shapes import CONV_ALGORITHMS, CONV_SHAPES


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


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def conv_rows(threads, dtype, repeat, algorithms, with_reference, progress):
    torch = _torch()
    rows = []
    for shape in progress(CONV_SHAPES):
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape.x_shape).astype(dtype)
        w = (rng.standard_normal(shape.w_shape) * 0.1).astype(dtype)
        b = rng.standard_normal(shape.K).astype(dtype)
        go = rng.standard_normal((shape.N, shape.K) + shape.out_hw).astype(dtype)
        args = dict(stride=shape.stride, padding=shape.padding)
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
    from cnnfast import _runtime, _threads
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    torch = _torch()
    return {"cpu": cpu, "cores": __import__("os").cpu_count(), "simd": _runtime.simd_level(),
            "compiler": _runtime.compiler(), "openmp": _runtime.openmp_enabled(),
            "blas": _threads.blas_info(), "python": platform.python_version(),
            "numpy": np.__version__, "cnnfast": cnnfast.__version__,
            "torch": torch.__version__ if torch else None}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cnnfast.bench", description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1", help="thread count, or a sweep like 1,2")
    p.add_argument("--quick", action="store_true", help="few repeats (finishes in about a minute)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--only", default="conv", choices=["conv"], help="op family to run")
    p.add_argument("--algorithms", default=",".join(CONV_ALGORITHMS))
    p.add_argument("--no-reference", action="store_true", help="skip the NumPy reference")
    p.add_argument("--json", metavar="FILE", help="write results and environment as JSON")
    args = p.parse_args(argv)
    dtype = np.dtype(args.dtype)
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
        peak = sgemm_gflops(threads, dtype, repeat)
        rows = conv_rows(threads, dtype, repeat, args.algorithms.split(","),
                         not args.no_reference, progress)
        print(format_table(rows, peak, threads, torch.__version__ if torch else None))
        print()
        results["runs"].append({"threads": threads, "dtype": str(dtype), "sgemm_gflops": peak,
                                "rows": rows})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
