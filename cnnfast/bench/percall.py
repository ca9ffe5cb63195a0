"""Per-call cost: microseconds of one call on tiny shapes, repeated with the
same arguments (a small net's layers in a loop), cnnfast against PyTorch.

At these sizes the kernels take a microsecond or two; what is measured is
the Python layer: validation, the plan (cached after the first call,
cnnfast._cache), allocation and the driver call.
"""
from __future__ import annotations

import timeit

import numpy as np


def _calls(lib, torch_mode, dtype):
    """name -> zero-argument call on the tiny shapes, for cnnfast or torch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    p = rng.standard_normal((1, 4, 8, 8)).astype(dtype)
    mean, var = np.zeros(4, dtype), np.ones(4, dtype)
    if torch_mode:
        F = lib.nn.functional
        x, w, b, p, mean, var = map(lib.from_numpy, (x, w, b, p, mean, var))
        go = lib.ones((1, 4, 8, 8), dtype=x.dtype)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = F.conv2d(xg, wg, padding=1)

        def conv_backward():   # the two gradients conv2d_backward computes, no graph rebuild
            return lib.autograd.grad(y, (xg, wg), go, retain_graph=True)

        pooled, idx = F.max_pool2d(p, 2, return_indices=True)
        return {
            "conv2d": lambda: F.conv2d(x, w, b, padding=1),
            "conv2d_backward": conv_backward,
            "max_pool2d": lambda: F.max_pool2d(p, 2),
            "max_pool2d_backward": lambda: lib.ops.aten.max_pool2d_with_indices_backward(
                pooled, p, [2, 2], [2, 2], [0, 0], [1, 1], False, idx),
            "avg_pool2d": lambda: F.avg_pool2d(p, 2),
            "avg_pool2d_backward": lambda: lib.ops.aten.avg_pool2d_backward(
                pooled, p, [2, 2], [2, 2], [0, 0], False, True, None),
            "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(p, 2),
            "adaptive_max_pool2d": lambda: F.adaptive_max_pool2d(p, 2),
            "global_avg_pool2d": lambda: F.adaptive_avg_pool2d(p, 1),
            "global_max_pool2d": lambda: F.adaptive_max_pool2d(p, 1),
            "batch_norm": lambda: F.batch_norm(p, mean, var),
            "relu": lambda: F.relu(p),
        }
    y = lib.conv2d(x, w, b, padding=1)
    go = np.ones_like(y)
    pooled, idx = lib.max_pool2d(p, 2, return_indices=True)
    return {
        "conv2d": lambda: lib.conv2d(x, w, b, padding=1),
        "conv2d_backward": lambda: lib.conv2d_backward(go, x, w, padding=1,
                                                       need=("x", "weight")),
        "max_pool2d": lambda: lib.max_pool2d(p, 2),
        "max_pool2d_backward": lambda: lib.max_pool2d_backward(pooled, idx, p.shape),
        "avg_pool2d": lambda: lib.avg_pool2d(p, 2),
        "avg_pool2d_backward": lambda: lib.avg_pool2d_backward(pooled, p.shape, 2),
        "adaptive_avg_pool2d": lambda: lib.adaptive_avg_pool2d(p, 2),
        "adaptive_max_pool2d": lambda: lib.adaptive_max_pool2d(p, 2),
        "global_avg_pool2d": lambda: lib.global_avg_pool2d(p),
        "global_max_pool2d": lambda: lib.global_max_pool2d(p),
        "batch_norm": lambda: lib.batch_norm(p, mean, var),
        "relu": lambda: lib.relu(p),
    }


SHAPES = {"conv2d": "x (1,3,8,8) * w (4,3,3,3), pad 1", "conv2d_backward": "same, grad x and w",
          "batch_norm": "(1,4,8,8), eval", "relu": "(1,4,8,8)"}
POOL_SHAPE = "(1,4,8,8)"


def per_call_us(fn, calls: int) -> float:
    """Best of 5 runs of `calls` calls, microseconds per call."""
    fn()
    return min(timeit.repeat(fn, number=calls, repeat=5)) / calls * 1e6


def percall_rows(threads, dtype, quick, torch):
    import cnnfast

    calls = 200 if quick else 2000
    with cnnfast.num_threads(threads):
        ours = {name: per_call_us(fn, calls)
                for name, fn in _calls(cnnfast, False, dtype).items()}
    theirs = {}
    if torch is not None:
        torch.set_num_threads(threads)
        theirs = {name: per_call_us(fn, calls)
                  for name, fn in _calls(torch, True, dtype).items()}
    return [dict(op=name, shape=SHAPES.get(name, POOL_SHAPE), us=us, torch_us=theirs.get(name),
                 vs_torch=(theirs[name] / us) if name in theirs else None)
            for name, us in ours.items()]


def format_percall_table(rows, threads, torch_version):
    head = f"{'op':<22} {'shape':<34} {'us/call':>8} {'torch us':>9} {'x torch':>8}"
    lines = [f"per-call cost, repeated calls  threads={threads}  "
             f"torch={torch_version or 'not installed'}", head, "-" * len(head)]
    for r in rows:
        tus = f"{r['torch_us']:.1f}" if r["torch_us"] else "-"
        tor = f"{r['vs_torch']:.2f}" if r["vs_torch"] else "-"
        lines.append(f"{r['op']:<22} {r['shape']:<34} {r['us']:>8.1f} {tus:>9} {tor:>8}")
    return "\n".join(lines)
