"""Channels-last rows of `python -m cnnfast.bench --data-format channels_last`.

Per shape and pass, three timings of the same work: the channels-first call
on (N, C, H, W) arrays, the channels-last call (data_format="channels_last")
on (N, H, W, C) arrays, and the baseline a user would write without it:
transpose the NHWC arrays to NCHW (NumPy copies), call the channels-first op,
transpose the result back. "x first" is channels-first ms / channels-last ms
(>= 1: channels-last at least as fast), "x baseline" the same against the
transpose-call-transpose baseline.
"""
from __future__ import annotations

import numpy as np

import cnnfast
from cnnfast.bench.shapes import CONV_SHAPES, CONV_TRANSPOSE_SHAPES, POOL_SHAPES
from cnnfast.bench._threads import cnnfast_threads

LAST = {"data_format": "channels_last"}


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _conv_arrays(shape, dtype):
    """x, w, b, grad_out, NHWC x, NHWC grad_out and the conv arguments of a shape."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape.x_shape).astype(dtype)
    w = (rng.standard_normal(shape.w_shape) * 0.1).astype(dtype)
    b = rng.standard_normal(shape.K).astype(dtype)
    go = rng.standard_normal((shape.N, shape.K) + shape.out_hw).astype(dtype)
    return x, w, b, go, _nhwc(x), _nhwc(go), dict(stride=shape.stride, padding=shape.padding)


def _conv_cases(dtype):
    """(family, label, pass, channels-first fn, channels-last fn, baseline fn)."""
    for shape in CONV_SHAPES:
        x, w, b, go, xl, gol, a = _conv_arrays(shape, dtype)
        yield ("conv", shape.label(), "forward",
               lambda x=x, w=w, b=b, a=a: cnnfast.conv2d(x, w, b, **a),
               lambda xl=xl, w=w, b=b, a=a: cnnfast.conv2d(xl, w, b, **a, **LAST),
               lambda xl=xl, w=w, b=b, a=a: _nhwc(cnnfast.conv2d(_nchw(xl), w, b, **a)))
        yield ("conv", shape.label(), "backward",
               lambda go=go, x=x, w=w, a=a: cnnfast.conv2d_backward(go, x, w, **a),
               lambda gol=gol, xl=xl, w=w, a=a: cnnfast.conv2d_backward(gol, xl, w, **a, **LAST),
               lambda gol=gol, xl=xl, w=w, a=a: _nhwc_first(
                   cnnfast.conv2d_backward(_nchw(gol), _nchw(xl), w, **a)))
    for shape in CONV_TRANSPOSE_SHAPES:
        x, w, b, go, xl, gol, a = _conv_arrays(shape, dtype)
        yield ("convT", shape.label(), "forward",
               lambda x=x, w=w, b=b, a=a: cnnfast.conv_transpose2d(x, w, b, **a),
               lambda xl=xl, w=w, b=b, a=a: cnnfast.conv_transpose2d(xl, w, b, **a, **LAST),
               lambda xl=xl, w=w, b=b, a=a: _nhwc(cnnfast.conv_transpose2d(_nchw(xl), w, b,
                                                                           **a)))
        yield ("convT", shape.label(), "backward",
               lambda go=go, x=x, w=w, a=a: cnnfast.conv_transpose2d_backward(go, x, w, **a),
               lambda gol=gol, xl=xl, w=w, a=a: cnnfast.conv_transpose2d_backward(
                   gol, xl, w, **a, **LAST),
               lambda gol=gol, xl=xl, w=w, a=a: _nhwc_first(
                   cnnfast.conv_transpose2d_backward(_nchw(gol), _nchw(xl), w, **a)))


def _nhwc_first(grads):
    """A backward's (grad_x, grad_w, grad_b) with grad_x transposed back."""
    return (_nhwc(grads[0]),) + tuple(grads[1:])


def _pool_cases(dtype):
    for shape in POOL_SHAPES:
        x = np.random.default_rng(0).standard_normal(shape.x_shape).astype(dtype)
        yield from (_global_pool_case(shape, x) if shape.is_global
                    else _window_pool_case(shape, x))


def _global_pool_case(shape, x):
    xl = _nhwc(x)
    g = np.ones(x.shape[:2], x.dtype)
    yield ("pool", shape.label(), "gmax forward",
           lambda: cnnfast.global_max_pool2d(x),
           lambda: cnnfast.global_max_pool2d(xl, **LAST),
           lambda: cnnfast.global_max_pool2d(_nchw(xl)))
    yield ("pool", shape.label(), "gavg forward",
           lambda: cnnfast.global_avg_pool2d(x),
           lambda: cnnfast.global_avg_pool2d(xl, **LAST),
           lambda: cnnfast.global_avg_pool2d(_nchw(xl)))
    yield ("pool", shape.label(), "gavg backward",
           lambda: cnnfast.global_avg_pool2d_backward(g, x.shape),
           lambda: cnnfast.global_avg_pool2d_backward(g, xl.shape, **LAST),
           lambda: _nhwc(cnnfast.global_avg_pool2d_backward(g, x.shape)))


def _window_pool_case(shape, x):
    k, s, p = shape.kernel, shape.stride, shape.padding
    xl = _nhwc(x)
    y, idx = cnnfast.max_pool2d(x, k, s, p, return_indices=True)
    g, gl, idxl = np.ones_like(y), _nhwc(np.ones_like(y)), _nhwc(idx)
    yield ("pool", shape.label(), "max forward",
           lambda: cnnfast.max_pool2d(x, k, s, p),
           lambda: cnnfast.max_pool2d(xl, k, s, p, **LAST),
           lambda: _nhwc(cnnfast.max_pool2d(_nchw(xl), k, s, p)))
    yield ("pool", shape.label(), "max backward",
           lambda: cnnfast.max_pool2d_backward(g, idx, x.shape),
           lambda: cnnfast.max_pool2d_backward(gl, idxl, xl.shape, **LAST),
           lambda: _nhwc(cnnfast.max_pool2d_backward(_nchw(gl), _nchw(idxl), x.shape)))
    yield ("pool", shape.label(), "avg forward",
           lambda: cnnfast.avg_pool2d(x, k, s, p),
           lambda: cnnfast.avg_pool2d(xl, k, s, p, **LAST),
           lambda: _nhwc(cnnfast.avg_pool2d(_nchw(xl), k, s, p)))
    yield ("pool", shape.label(), "avg backward",
           lambda: cnnfast.avg_pool2d_backward(g, x.shape, k, s, p),
           lambda: cnnfast.avg_pool2d_backward(gl, xl.shape, k, s, p, **LAST),
           lambda: _nhwc(cnnfast.avg_pool2d_backward(_nchw(gl), x.shape, k, s, p)))


FAMILIES = {"conv": ("conv",), "convt": ("convT",), "pool": ("pool",),
            "all": ("conv", "convT", "pool"), "train": ()}


def layout_rows(threads, dtype, repeat, only, median_ms, progress):
    cases = [c for c in list(_conv_cases(dtype)) + list(_pool_cases(dtype))
             if c[0] in FAMILIES[only]]
    rows = []
    for family, label, passage, first, last, baseline in progress(cases):
        with cnnfast_threads(threads):
            ms = [median_ms(fn, repeat) for fn in (first, last, baseline)]
        rows.append(dict(family=family, shape=label, passage=passage, first_ms=ms[0],
                         last_ms=ms[1], baseline_ms=ms[2], vs_first=ms[0] / ms[1],
                         vs_baseline=ms[2] / ms[1]))
    return rows


def format_layout_table(rows, threads):
    head = (f"{'channels-last':<44} {'pass':<14} {'NCHW ms':>8} {'NHWC ms':>8} "
            f"{'base ms':>8} {'x first':>8} {'x base':>7}")
    lines = [f"threads={threads}  NHWC = data_format='channels_last'; base = transpose to "
             f"NCHW, call, transpose back", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['shape'][:44]:<44} {r['passage']:<14} {r['first_ms']:>8.2f} "
                     f"{r['last_ms']:>8.2f} {r['baseline_ms']:>8.2f} {r['vs_first']:>8.2f} "
                     f"{r['vs_baseline']:>7.2f}")
    return "\n".join(lines)
