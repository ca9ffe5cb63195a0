"""Whole-model inference: cnnfast eval vs Module.fuse()d vs PyTorch vs
onnxruntime, all on the same weights (the torch twins of cnnfast.bench.train
take cnnfast's state dict; onnxruntime runs the twin exported to ONNX).

    python -m cnnfast.bench.inference [--threads 1] [--repeat 10]

prints one row per case: median milliseconds per forward. Reusable pieces for
a models benchmark: `inference_calls(case)` -> {"cnnfast": fn, "fused": fn,
"torch": fn or None, "onnxruntime": fn or None}.
"""
from __future__ import annotations

import argparse
import io
import os
from typing import NamedTuple

import numpy as np


class InferenceCase(NamedTuple):
    model: str
    batch: int
    in_channels: int
    size: int
    num_classes: int = 1000

    @property
    def name(self):
        return f"{self.model}-b{self.batch}-{self.size}x{self.size}"


INFERENCE_CASES = [
    InferenceCase("resnet18", 1, 3, 224),
    InferenceCase("lenet5", 256, 1, 32, 10),
]


def _torch_twin(torch, case, model):
    from .train import _torch_model

    twin = _torch_model(torch, case).eval()   # cnnfast's state-dict keys
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (
        missing, unexpected)
    return twin


def inference_calls(case: InferenceCase, seed=0):
    from .. import models, nn

    nn.manual_seed(seed)
    model = models.MODELS[case.model](num_classes=case.num_classes,
                                      in_channels=case.in_channels).eval()
    fused = model.fuse()
    x = np.random.default_rng(seed).standard_normal(
        (case.batch, case.in_channels, case.size, case.size), dtype=np.float32)
    calls = {"cnnfast": lambda: model(x), "fused": lambda: fused(x), "torch": None,
             "onnxruntime": None}
    try:
        import torch
    except ImportError:
        return calls, x
    twin = _torch_twin(torch, case, model)
    tx = torch.from_numpy(x)

    def run_torch():
        with torch.no_grad():
            return twin(tx).numpy()

    calls["torch"] = run_torch
    try:
        import onnxruntime as ort
        buf = io.BytesIO()
        torch.onnx.export(twin, (tx,), buf, dynamo=False, input_names=["x"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads()
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        calls["onnxruntime"] = lambda: sess.run(None, {"x": x})[0]
    except Exception as err:  # exporter or runtime unavailable: no column
        print(f"# onnxruntime skipped for {case.name}: {type(err).__name__}: {err}")
    return calls, x


def _threads():
    from .._threads import get_num_threads
    return get_num_threads()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)
    import cnnfast
    from .__main__ import median_ms

    cnnfast.set_num_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    cols = ["cnnfast", "fused", "torch", "onnxruntime"]
    print(f"# inference, {args.threads} thread(s), float32, median ms of {args.repeat}; "
          f"same weights in every column")
    print(f"{'case':<24}" + "".join(f"{c:>13}" for c in cols))
    for case in INFERENCE_CASES:
        calls, _ = inference_calls(case)
        ref = calls["cnnfast"]()
        fused_out = calls["fused"]()
        assert np.allclose(fused_out, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
        row = [median_ms(calls[c], args.repeat) if calls[c] else float("nan") for c in cols]
        print(f"{case.name:<24}" + "".join(f"{v:>13.2f}" for v in row))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
