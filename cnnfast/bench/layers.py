"""Per-layer times of a fused model beside onnxruntime's per-node profile
(python -m cnnfast.bench --only layers): ResNet-18 batch 1 at 224x224
(--quick: 64x64), both holding the same weights.

cnnfast: `model.fuse()`, run as it runs after its first call: its recorded
run (cnnfast._replay) replayed with each kernel call timed, the calls of
each layer summed (median over the runs), as onnxruntime's profiler times
its nodes' kernels; named and given its kernel by `cnnfast.explain_model`;
the fused model's input layout conversion is a row of its own. (A model
that cannot replay is timed layer by layer by a timer standing where
explain_model's tracer stands, Module.__call__'s hook, Python included.) onnxruntime: the
PyTorch twin exported to ONNX (bench.models) run with its profiler on, the
median "dur" of each node's kernel event. onnxruntime fuses Conv+BN+ReLU(+Add)
into one node, often named after the ReLU's output, and may add NCHWc
reorder nodes: those stay rows of their own. Rows are paired by module name
(the export keeps torch's, e.g. /layer1/layer1.0/conv2/Conv) and, for
convolutions it renamed and the pool it exports as ReduceMean, by weight
shape and output size in call order.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time

from ..nn.module import TRACE
from .models import (ModelCase, _batch, _interleaved_ms, cnnfast_call, onnx_export,
                     ort_session_options)
from cnnfast.bench._threads import cnnfast_threads

LAYER_CASE = ModelCase("resnet18", "inference", 1, 224, 3, 1000)
QUICK_LAYER_CASE = LAYER_CASE._replace(size=64)
CATEGORIES = ("conv", "pool", "other")


def category(op):
    if "Conv" in op:
        return "conv"
    # ReduceMean: the export of torch's mean over H, W (the global average pool)
    return "pool" if "Pool" in op or op == "ReduceMean" else "other"


class _LayerTimer:
    """Stands in for explain_model's tracer at Module.__call__: runs every
    call for real, timing each leaf layer's. `outer_own` is the outermost
    call's time outside its children (a fused model's layout conversion)."""

    def __init__(self):
        self.leaves = []     # (module, seconds) per leaf call, in call order
        self.outer_own = 0.0
        self._depth = 0
        self._children = 0.0

    def call(self, module, args, kwargs, method="forward"):
        leaf = not module.named_children()
        self._depth += 1
        t0 = time.perf_counter()
        try:
            if leaf:
                TRACE.tracer = None   # ReLU.forward_sum asks the hook again: run it for real
                try:
                    out = getattr(module, method)(*args, **kwargs)
                finally:
                    TRACE.tracer = self
            else:
                out = module.forward(*args, **kwargs)
        finally:
            self._depth -= 1
        dt = time.perf_counter() - t0
        if leaf:
            self.leaves.append((module, dt))
        if self._depth == 1:
            self._children += dt
        elif self._depth == 0:
            self.outer_own = dt - self._children
        return out


def _timed_run(model, x):
    if TRACE.tracer is not None:
        raise RuntimeError("layer timing cannot run inside explain_model")
    timer = TRACE.tracer = _LayerTimer()
    try:
        model(x)
    finally:
        TRACE.tracer = None
    return timer


def cnnfast_layer_rows(fused, x, repeat, warmup=2):
    """One dict per row of explain_model(fused, x.shape): name, op, kernel,
    out_shape, weight_shape (convolutions), ms (median over `repeat` runs)."""
    import cnnfast

    for _ in range(max(warmup, 2)):   # the second call records the run
        fused(x)
    modules = dict(fused.named_modules())
    names = {id(m): name for name, m in modules.items()}
    recording = fused.recording(x)
    if recording is not None:
        return _replayed_rows(cnnfast, fused, x, recording, names, modules, repeat)
    runs = [_timed_run(fused, x) for _ in range(repeat)]
    # the k-th call of a layer has its k-th row: medians by name, in call order
    medians: dict[str, list[float]] = {}
    for i, (module, _) in enumerate(runs[0].leaves):
        ms = statistics.median(run.leaves[i][1] for run in runs) * 1e3
        medians.setdefault(names[id(module)], []).append(ms)
    rows = []
    for r in cnnfast.explain_model(fused, x.shape).rows:
        if r.name == "(to_channels_last)":
            ms = statistics.median(run.outer_own for run in runs) * 1e3
        else:
            ms = medians[r.name].pop(0) if medians.get(r.name) else None
        weight = getattr(modules.get(r.name), "weight", None)
        rows.append(dict(name=r.name, op=r.op, kernel=r.passes["forward"].kernel,
                         out_shape=tuple(r.out_shape), ms=ms,
                         weight_shape=(tuple(weight.data.shape)
                                       if weight is not None and "Conv" in r.op else None)))
    return rows


def _replayed_rows(cnnfast, fused, x, recording, names, modules, repeat):
    """cnnfast_layer_rows from the model's recorded run (what its calls
    execute, cnnfast._replay): each layer's kernel calls timed one by one,
    medians over `repeat` replays; calls made outside any layer (the input's
    layout conversion) form the (to_channels_last) row."""
    runs = [recording.timed_run(x, time.perf_counter) for _ in range(repeat)]
    if any(r is None for r in runs):
        raise RuntimeError("the recorded run is busy in another thread")
    per_call = [statistics.median(r[i] for r in runs) * 1e3 for i in range(len(runs[0]))]
    by_layer: dict = {}
    for owner, ms in zip(recording.owners, per_call):
        key = None if owner is None else (names[id(owner[0])], owner[1])
        by_layer[key] = by_layer.get(key, 0.0) + ms
    calls: dict[str, int] = {}
    rows = []
    for r in cnnfast.explain_model(fused, x.shape).rows:
        if r.name == "(to_channels_last)":
            ms = by_layer.get(None)
        else:
            k = calls[r.name] = calls.get(r.name, -1) + 1
            ms = by_layer.get((r.name, k), 0.0 if r.name in modules else None)
        weight = getattr(modules.get(r.name), "weight", None)
        rows.append(dict(name=r.name, op=r.op, kernel=r.passes["forward"].kernel,
                         out_shape=tuple(r.out_shape), ms=ms,
                         weight_shape=(tuple(weight.data.shape)
                                       if weight is not None and "Conv" in r.op else None)))
    return rows


def _shape(entry):
    """[{'float': [1, 64, 56, 56]}] -> (1, 64, 56, 56): the profile's shapes."""
    return tuple(next(iter(entry.values())))


def ort_node_rows(exported, x, threads, repeat, warmup=2):
    """One dict per onnxruntime node in run order: node, op, out_shape,
    weight_shape (convolutions), ms (median of its profiled durations)."""
    import onnxruntime as ort

    opts = ort_session_options(ort, threads)
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(exported, opts, providers=["CPUExecutionProvider"])
        for _ in range(warmup + repeat):
            session.run(None, {"x": x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    durations: dict[str, list[float]] = {}
    nodes = []
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue   # (fence events and session phases)
        name, args = e["name"][:-len("_kernel_time")], e["args"]
        if name not in durations:
            inputs = args.get("input_type_shape", [])
            nodes.append(dict(node=name, op=args["op_name"],
                              out_shape=_shape(args["output_type_shape"][0]),
                              weight_shape=(_shape(inputs[1]) if "Conv" in args["op_name"]
                                            and len(inputs) > 1 else None)))
        durations.setdefault(name, []).append(e["dur"])
    for n in nodes:   # the last `repeat` runs: the warm-up ones come first
        n["ms"] = statistics.median(durations[n["node"]][-repeat:]) / 1e3
    return nodes


def _torch_name(node):
    """'/layer1/layer1.0/conv2/Conv_output_0_nchwc' -> 'layer1.0.conv2' (the
    legacy exporter's scope path ends with the module's dotted name)."""
    parts = node.strip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def match_rows(ours, theirs):
    """{index in theirs: index in ours}: by module name where the shapes
    agree, then every remaining convolution and pooling in call order by
    weight shape and output size (ReduceMean's (1, 512) is the pool's
    (1, 512, 1, 1)). `ours` names are the fused model's ('module.' + torch's)."""
    def signature(row):
        return row["out_shape"], row["weight_shape"]

    def size_key(row, op):
        return category(op), math.prod(row["out_shape"]), row["weight_shape"]
    free = [i for i, r in enumerate(ours) if r["ms"] is not None]
    by_name = {r["name"].removeprefix("module."): i for i, r in enumerate(ours)}
    pairs = {}
    for t, node in enumerate(theirs):
        i = by_name.get(_torch_name(node["node"]))
        if i in free and signature(ours[i]) == signature(node):
            pairs[t] = i
            free.remove(i)
    for t, node in enumerate(theirs):
        if t in pairs or category(node["op"]) == "other":
            continue
        i = next((i for i in free
                  if size_key(ours[i], ours[i]["op"]) == size_key(node, node["op"])), None)
        if i is not None:
            pairs[t] = i
            free.remove(i)
    return pairs


def merge_rows(ours, theirs):
    """The table's rows in cnnfast's call order; an onnxruntime node without
    a cnnfast row (a reorder) follows the latest cnnfast row paired so far."""
    pairs = match_rows(ours, theirs)
    rows = [dict(layer=r["name"], op=r["op"], kernel=r["kernel"], ms=r["ms"], ort_node=None,
                 ort_op=None, ort_ms=None) for r in ours]
    after: dict[int, list[dict]] = {}
    last = -1
    for t, node in enumerate(theirs):
        ort = dict(ort_node=node["node"], ort_op=node["op"], ort_ms=node["ms"])
        if t in pairs:
            rows[pairs[t]].update(ort)
            last = max(last, pairs[t])
        else:
            after.setdefault(last, []).append(dict(layer="", op="", kernel="", ms=None, **ort))
    merged = list(after.get(-1, []))
    for i, row in enumerate(rows):
        merged += [row] + after.get(i, [])
    for row in merged:
        row["ratio"] = row["ort_ms"] / row["ms"] if row["ms"] and row["ort_ms"] else None
    return merged


def totals(rows):
    """Sum of row times per category and in all, for each side."""
    out = {}
    for side, op_key, ms_key in (("cnnfast", "op", "ms"), ("onnxruntime", "ort_op", "ort_ms")):
        sums = dict.fromkeys(CATEGORIES, 0.0)
        for r in rows:
            if r[ms_key] is not None:
                sums[category(r[op_key])] += r[ms_key]
        out[side] = dict(sums, nodes=sum(sums.values()))
    return out


def layer_report(threads, repeat, quick=False):
    """The rows, totals and whole-model wall times of one thread count."""
    import torch

    import cnnfast
    from .models import onnxruntime_call

    case = QUICK_LAYER_CASE if quick else LAYER_CASE
    model, _ = cnnfast_call(case)
    x, _ = _batch(case)
    fused = model.fuse()
    torch.set_num_threads(threads)
    exported = onnx_export(torch, case, model)
    with cnnfast_threads(threads):
        ours = cnnfast_layer_rows(fused, x, repeat)
    theirs = ort_node_rows(exported, x, threads, repeat)
    # wall times without the profiler (it adds its own cost per node), in rounds
    with cnnfast_threads(threads):
        walls = _interleaved_ms({"ours": (lambda: fused(x), None),
                                 "ort": (onnxruntime_call(case, exported, threads), None)},
                                repeat, warmup=2)
    wall, ort_wall = walls["ours"], walls["ort"]
    rows = merge_rows(ours, theirs)
    return dict(model=case.name, threads=threads, rows=rows, totals=totals(rows),
                cnnfast_wall_ms=wall, onnxruntime_wall_ms=ort_wall)


def _fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def format_layer_table(report):
    head = (f"{'layer':<28} {'kernel':<20} {'ort op':<14} {'cnnfast ms':>10} {'ort ms':>8} "
            f"{'ort/cnnfast':>11}")
    lines = [f"{report['model']}  threads={report['threads']}  per layer (ort/cnnfast > 1: "
             f"cnnfast faster)", head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(f"{r['layer'] or '(' + r['ort_node'] + ')':<28.28} {r['kernel']:<20} "
                     f"{r['ort_op'] or '':<14} {_fmt(r['ms'], '10.3f'):>10} "
                     f"{_fmt(r['ort_ms'], '8.3f'):>8} {_fmt(r['ratio'], '11.2f'):>11}")
    lines.append("-" * len(head))
    ours, theirs = report["totals"]["cnnfast"], report["totals"]["onnxruntime"]
    for key in CATEGORIES + ("nodes",):
        label = "sum of node times" if key == "nodes" else f"total {key}"
        lines.append(f"{label:<64} {ours[key]:>10.3f} {theirs[key]:>8.3f} "
                     f"{_fmt(theirs[key] / ours[key] if ours[key] else None, '11.2f'):>11}")
    lines.append(f"{'whole model (wall, no profiler)':<64} {report['cnnfast_wall_ms']:>10.3f} "
                 f"{report['onnxruntime_wall_ms']:>8.3f} "
                 f"{report['onnxruntime_wall_ms'] / report['cnnfast_wall_ms']:>11.2f}")
    return "\n".join(lines)


def format_layer_scaling(reports):
    """Per row: the top thread count's speed over one thread's, each side."""
    by_threads = {r["threads"]: r for r in reports}
    if 1 not in by_threads or len(by_threads) < 2:
        return ""
    top = max(by_threads)
    head = f"{'layer':<28} {'ort op':<14} {'cnnfast':>8} {'ort':>8}"
    lines = [f"per-layer speed-up {top} threads over 1 (> 1 scales)", head, "-" * len(head)]
    many = {(r["layer"], r["ort_node"]): r for r in by_threads[top]["rows"]}

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "-"
    for one in by_threads[1]["rows"]:
        other = many.get((one["layer"], one["ort_node"]), {})
        lines.append(f"{one['layer'] or '(' + one['ort_node'] + ')':<28.28} "
                     f"{one['ort_op'] or '':<14} {ratio(one['ms'], other.get('ms')):>8} "
                     f"{ratio(one['ort_ms'], other.get('ort_ms')):>8}")
    return "\n".join(lines)
