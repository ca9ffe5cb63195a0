"""Whole-model benchmarks: inference and training steps of LeNet-5, ResNet-18,
ResNet-50, MobileNetV2, VGG-11 and GoogLeNet.

A layer that scales alone can stop scaling inside a model (the parallel
regions of consecutive layers, NumPy's own BLAS threads and the elementwise
layers between them all meet there), so the threads work is judged on these
rows. Each row times cnnfast, the same model in PyTorch with cnnfast's
weights, and (inference) onnxruntime CPU running that PyTorch twin exported
to ONNX with its thread pool at the same count and spinning off. The
"+ matmul" column times the same cnnfast call when the user's code runs a
NumPy matmul (at NumPy's own thread count) just before each call; "fused"
times the `fuse()`d inference copy of the model; "onnx fused" times
`cnnfast.onnx.load(...).fuse()` on the twin's ONNX export (the bytes
onnxruntime runs), and "onnx/fused" is its time over the "fused" one (the
ONNX path runs the same kernels: <= 1.05 is within 5%). The columns of a
row are timed in the same rounds (`_interleaved_ms`), so the VM's drifts in
speed fall on all of them alike.
"""
from __future__ import annotations

import io
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np

from .torch_twins import torch_googlenet, torch_mobilenet_v2, torch_resnet50, torch_vgg11
from .train import LR, MOMENTUM, _torch_model, torch_step
from cnnfast.bench._threads import cnnfast_threads


class ModelCase(NamedTuple):
    model: str
    mode: str            # "inference" or "train step"
    batch: int
    size: int
    in_channels: int
    num_classes: int

    @property
    def name(self):
        return f"{self.model} b{self.batch} {self.size}x{self.size}"


MODEL_CASES = [
    ModelCase("lenet5", "inference", 256, 32, 1, 10),
    ModelCase("resnet18", "inference", 1, 224, 3, 1000),
    ModelCase("resnet18", "inference", 8, 224, 3, 1000),
    ModelCase("resnet50", "inference", 1, 224, 3, 1000),
    ModelCase("mobilenet_v2", "inference", 1, 224, 3, 1000),
    ModelCase("vgg11", "inference", 1, 224, 3, 1000),
    ModelCase("googlenet", "inference", 1, 224, 3, 1000),
    ModelCase("lenet5", "train step", 64, 32, 1, 10),
    ModelCase("resnet18", "train step", 8, 64, 3, 10),
    ModelCase("resnet18", "train step", 16, 112, 3, 10),
    ModelCase("vgg11", "train step", 8, 64, 3, 10),
    ModelCase("mobilenet_v2", "train step", 16, 112, 3, 10),
]
# --quick keeps the smaller rows (CI's smoke run)
QUICK_CASES = [c for c in MODEL_CASES
               if (c.model, c.mode, c.batch) in (("lenet5", "inference", 256),
                                                 ("resnet18", "inference", 1),
                                                 ("lenet5", "train step", 64))]
# the PyTorch twins beyond bench.train's (LeNet-5, ResNet-18)
_TWINS = {"resnet50": torch_resnet50, "mobilenet_v2": torch_mobilenet_v2,
          "vgg11": torch_vgg11, "googlenet": torch_googlenet}
# rows timed with fewer repeats (a call takes 50 ms or more)
_BIG = ("resnet18", "resnet50", "mobilenet_v2", "vgg11", "googlenet")


def _batch(case, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.batch, case.in_channels, case.size, case.size),
                            dtype=np.float32)
    return x, rng.integers(0, case.num_classes, size=case.batch)


def cnnfast_call(case, seed=0):
    """The cnnfast model (eval for inference) and a zero-argument call."""
    from .. import models, nn, optim

    nn.manual_seed(seed)
    model = models.MODELS[case.model](num_classes=case.num_classes,
                                      in_channels=case.in_channels)
    x, y = _batch(case, seed)
    if case.mode == "inference":
        model.eval()
        return model, lambda: model(x)
    model.train().skip_input_grad()  # as torch: no gradient for the input batch
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), LR, momentum=MOMENTUM)

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        return loss

    return model, step


def torch_twin(torch, case, model):
    """The PyTorch model of the same layout holding `model`'s weights."""
    make = _TWINS.get(case.model)
    twin = (make(torch, case.in_channels, case.num_classes) if make
            else _torch_model(torch, case))
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise RuntimeError(f"torch twin of {case.model}: missing {missing}, "
                           f"unexpected {unexpected}")
    return twin


def torch_call(torch, case, model):
    twin = torch_twin(torch, case, model)
    x, y = (torch.from_numpy(a) for a in _batch(case))
    if case.mode == "inference":
        twin.eval()

        def infer():
            with torch.inference_mode():
                return twin(x)
        return infer
    return torch_step(torch, twin.train(), x, y)


def onnx_export(torch, case, model):
    """The eval twin exported to ONNX (bytes), or None without onnx."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        return None
    import warnings

    twin = torch_twin(torch, case, model).eval()
    x, _ = _batch(case)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(twin, torch.from_numpy(x), buf, dynamo=False,
                          input_names=["x"], output_names=["y"])
    return buf.getvalue()


def ort_session_options(ort, threads):
    """onnxruntime's options for a run at `threads`: its intra-op pool at
    that count, one inter-op thread, spinning off (idle threads yield)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def onnxruntime_call(case, exported, threads):
    """onnxruntime CPU on the exported twin, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    x, _ = _batch(case)
    session = ort.InferenceSession(exported, ort_session_options(ort, threads),
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})


def onnx_loaded_call(case, exported):
    """cnnfast.onnx.load(exported).fuse() on the case's batch: the ONNX path
    onto cnnfast's kernels, to time beside the model's own fuse()."""
    from .. import onnx as cnnfast_onnx

    fused, (x, _) = cnnfast_onnx.load(exported).fuse(), _batch(case)
    return lambda: fused(x)


def _user_matmul():
    a = np.ones((1, 512), np.float32)
    b = np.ones((512, 1000), np.float32)
    return lambda: a @ b


class _Spinner:
    """One other process keeping a core busy (the 'under load' runs)."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


class _NoLoad:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _interleaved_ms(calls, repeat, warmup, burst=2):
    """Median ms of each call of `calls` (name -> (fn, before)), timed in
    rounds: per round and call, one untimed call (its threads awake, its
    weights back in cache) then `burst` timed ones, each after `before` when
    given. This VM's speed drifts by up to 1.5x over tens of seconds, and
    timing one implementation after the other put that drift into the
    ratios; in rounds it falls on every column alike."""
    for fn, before in calls.values():
        for _ in range(warmup):
            if before:
                before()
            fn()
    times = {name: [] for name in calls}
    for _ in range(-(-repeat // burst)):
        for name, (fn, before) in calls.items():
            fn()
            for _ in range(burst):
                if before:
                    before()
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def model_rows(threads, repeat, progress, quick=False, under_load=False):
    """One row per case at `threads`: cnnfast ms (alone, with a user matmul
    before each call and fused), torch ms, onnxruntime ms and the ONNX
    import's fused ms (inference), all timed in the same rounds."""
    try:
        import torch
    except ImportError:
        torch = None
    matmul = _user_matmul()
    rows = []
    for case in progress(QUICK_CASES if quick else MODEL_CASES):
        big = case.model in _BIG
        rep = max(4, repeat // 2) if big else repeat
        model, call = cnnfast_call(case)
        calls = {"ms": (call, None)}
        if case.mode == "inference":
            fused, (x, _) = model.fuse(), _batch(case)
            calls["fused_ms"] = (lambda: fused(x), None)
        if torch is not None:
            torch.set_num_threads(threads)
            # the twin copies the model's weights before any step changes them
            calls["torch_ms"] = (torch_call(torch, case, model), None)
            exported = onnx_export(torch, case, model) if case.mode == "inference" else None
            if exported:
                ocall = onnxruntime_call(case, exported, threads)
                if ocall:
                    calls["onnxruntime_ms"] = (ocall, None)
                calls["onnx_fused_ms"] = (onnx_loaded_call(case, exported), None)
        with (_Spinner() if under_load else _NoLoad()), cnnfast_threads(threads):
            t = _interleaved_ms(calls, rep, warmup=2)
            # on its own after the rounds: NumPy's BLAS threads spin for about
            # 0.1 s after each matmul and would slow whichever call came next
            t.update(_interleaved_ms({"ms_with_matmul": (call, matmul)}, rep, warmup=1))
        ms, fms = t["ms"], t.get("fused_ms")
        tms, oms, lms = t.get("torch_ms"), t.get("onnxruntime_ms"), t.get("onnx_fused_ms")
        rows.append(dict(shape=case.name, algorithm="auto", passage=case.mode, ms=ms,
                         ms_with_matmul=t["ms_with_matmul"], fused_ms=fms, torch_ms=tms,
                         onnxruntime_ms=oms, onnx_fused_ms=lms,
                         onnx_fused_over_fused=(lms / fms) if lms and fms else None,
                         vs_torch=(tms / ms) if tms else None,
                         vs_onnxruntime=(oms / ms) if oms else None,
                         fused_vs_onnxruntime=(oms / fms) if oms and fms else None,
                         vs_reference=None, under_load=under_load))
    return rows


def format_model_table(rows, threads, torch_version):
    head = (f"{'model':<25} {'pass':<11} {'ms':>8} {'+matmul':>8} {'fused':>8} "
            f"{'torch ms':>9} {'ort ms':>8} {'x torch':>8} {'x ort':>6} {'fused x ort':>11} "
            f"{'onnx fused':>10} {'onnx/fused':>10}")
    load = "  (one other process spinning on a core)" if rows and rows[0]["under_load"] else ""
    lines = [f"threads={threads}  torch={torch_version or 'not installed'}{load}", head,
             "-" * len(head)]

    def fmt(v, spec):
        return format(v, spec) if v else "-"
    for r in rows:
        lines.append(f"{r['shape']:<25} {r['passage']:<11} {r['ms']:>8.2f} "
                     f"{r['ms_with_matmul']:>8.2f} {fmt(r['fused_ms'], '8.2f'):>8} "
                     f"{fmt(r['torch_ms'], '9.2f'):>9} "
                     f"{fmt(r['onnxruntime_ms'], '8.2f'):>8} {fmt(r['vs_torch'], '8.2f'):>8} "
                     f"{fmt(r['vs_onnxruntime'], '6.2f'):>6} "
                     f"{fmt(r['fused_vs_onnxruntime'], '11.2f'):>11} "
                     f"{fmt(r['onnx_fused_ms'], '10.2f'):>10} "
                     f"{fmt(r['onnx_fused_over_fused'], '10.2f'):>10}")
    return "\n".join(lines)


def format_scaling(runs):
    """Two-thread (or highest count) speed over one thread, per row and column."""
    by_threads = {run["threads"]: run.get("model_rows") for run in runs if run.get("model_rows")}
    if 1 not in by_threads or len(by_threads) < 2:
        return ""
    top = max(by_threads)
    head = (f"{'model':<25} {'pass':<11} {'cnnfast':>8} {'+matmul':>8} {'fused':>6} "
            f"{'torch':>7} {'ort':>6} {'onnx fused':>10}")
    lines = [f"speed-up {top} threads over 1 (> 1 scales)", head, "-" * len(head)]

    def ratio(a, b, key):
        return f"{a[key] / b[key]:.2f}" if a.get(key) and b.get(key) else "-"
    for one, many in zip(by_threads[1], by_threads[top]):
        lines.append(f"{one['shape']:<25} {one['passage']:<11} {ratio(one, many, 'ms'):>8} "
                     f"{ratio(one, many, 'ms_with_matmul'):>8} {ratio(one, many, 'fused_ms'):>6} "
                     f"{ratio(one, many, 'torch_ms'):>7} {ratio(one, many, 'onnxruntime_ms'):>6} "
                     f"{ratio(one, many, 'onnx_fused_ms'):>10}")
    return "\n".join(lines)

