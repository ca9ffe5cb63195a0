"""Depthwise rows of `python -m cnnfast.bench --only depthwise`: MobileNetV2's
depthwise 3x3 layers (batch 1 and 8), forward and backward (input and weight
gradient), channels-first and channels-last, beside PyTorch (the same
layout) and onnxruntime running a one-node ONNX Conv (forward, NCHW), with
the forward's bandwidth (x and out once) against the same run's copy rate."""
from __future__ import annotations

import numpy as np

import cnnfast
from cnnfast.bench.shapes import DEPTHWISE_SHAPES

FORMATS = ("channels_first", "channels_last")


def _cnnfast_calls(shape, x, w, go, data_format):
    args = dict(stride=shape.stride, padding=shape.padding, groups=shape.C,
                data_format=data_format)
    if data_format == "channels_last":
        x, go = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, go))
    return (lambda: cnnfast.conv2d(x, w, **args),
            lambda: cnnfast.conv2d_backward(go, x, w, **args))


def _torch_calls(torch, shape, x, w, go, data_format):
    fmt = torch.channels_last if data_format == "channels_last" else torch.contiguous_format
    tx, tw, tgo = (torch.from_numpy(a).contiguous(memory_format=fmt) for a in (x, w, go))
    s, p = [shape.stride] * 2, [shape.padding] * 2

    def forward():
        with torch.no_grad():
            return torch.nn.functional.conv2d(tx, tw, stride=s, padding=p, groups=shape.C)

    def backward():
        return torch.ops.aten.convolution_backward(tgo, tx, tw, [0], s, p, [1, 1], False,
                                                   [0, 0], shape.C, [True, True, False])
    return forward, backward


def onnxruntime_conv(shape, x, w, threads):
    """onnxruntime CPU running one ONNX Conv node (group = C), or None without
    onnx/onnxruntime."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    oh, ow = shape.out_hw
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=shape.C,
                            kernel_shape=[shape.kernel] * 2, strides=[shape.stride] * 2,
                            pads=[shape.padding] * 4)
    graph = helper.make_graph(
        [node], "depthwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape.x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape.N, shape.C, oh, ow])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    x32 = x.astype(np.float32)
    return lambda: session.run(None, {"x": x32})


def depthwise_rows(threads, dtype, repeat, progress, median_ms, torch, shapes=DEPTHWISE_SHAPES):
    rows = []
    for shape in progress(shapes):
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape.x_shape).astype(dtype)
        w = (rng.standard_normal(shape.w_shape) * 0.1).astype(dtype)
        go = rng.standard_normal((shape.N, shape.C) + shape.out_hw).astype(dtype)
        ort_call = onnxruntime_conv(shape, x, w, threads) if dtype == np.float32 else None
        ort_ms = median_ms(ort_call, repeat) if ort_call else None
        for data_format in FORMATS:
            with cnnfast.num_threads(threads):
                fwd, bwd = (median_ms(f, repeat) for f in _cnnfast_calls(shape, x, w, go,
                                                                         data_format))
            tf = tb = None
            if torch is not None:
                torch.set_num_threads(threads)
                tf, tb = (median_ms(f, repeat) for f in _torch_calls(torch, shape, x, w, go,
                                                                     data_format))
            rows.append({"shape": shape.label(), "format": data_format, "forward_ms": fwd,
                         "backward_ms": bwd, "torch_forward_ms": tf, "torch_backward_ms": tb,
                         "onnxruntime_ms": ort_ms if data_format == "channels_first" else None,
                         "forward_gbs": shape.activation_bytes * np.dtype(dtype).itemsize / 4
                         / fwd / 1e6})
    return rows


def format_depthwise_table(rows, copy, threads, torch_version):
    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "-"
    head = (f"{'depthwise shape':<42} {'format':<6} {'fwd ms':>7} {'x torch':>7} {'x ort':>6} "
            f"{'% copy':>6} {'bwd ms':>7} {'x torch':>7}")
    lines = [f"threads={threads}  copy={copy:.1f} GB/s  torch={torch_version or 'not installed'}"
             "  (x: their time over ours; ort: onnxruntime, one Conv node, NCHW)", head,
             "-" * len(head)]
    for r in rows:
        fmt = "NCHW" if r["format"] == "channels_first" else "NHWC"
        lines.append(f"{r['shape']:<42} {fmt:<6} {r['forward_ms']:>7.3f} "
                     f"{ratio(r['torch_forward_ms'], r['forward_ms']):>7} "
                     f"{ratio(r['onnxruntime_ms'], r['forward_ms']):>6} "
                     f"{100 * r['forward_gbs'] / copy:>5.0f}% {r['backward_ms']:>7.3f} "
                     f"{ratio(r['torch_backward_ms'], r['backward_ms']):>7}")
    return "\n".join(lines)
