"""cnnfast.bench.models on a tiny case: every column of a row is measured
(cnnfast, fused, PyTorch, onnxruntime, the ONNX-loaded fused model) and the
text table and the thread-scaling table show them. A smoke test, not a timing."""
import pytest

from cnnfast.bench import models as bench_models

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TINY = [bench_models.ModelCase("lenet5", "inference", 2, 32, 1, 10),
        bench_models.ModelCase("lenet5", "train step", 2, 32, 1, 10)]


def test_model_rows_fill_every_column(monkeypatch):
    monkeypatch.setattr(bench_models, "QUICK_CASES", TINY)
    rows = bench_models.model_rows(1, 1, lambda cases: cases, quick=True)
    infer, train = rows
    for key in ("ms", "fused_ms", "torch_ms", "onnxruntime_ms", "onnx_fused_ms",
                "onnx_fused_over_fused"):
        assert infer[key] > 0, key
    assert infer["onnx_fused_over_fused"] == pytest.approx(infer["onnx_fused_ms"]
                                                           / infer["fused_ms"])
    assert train["torch_ms"] > 0
    assert train["fused_ms"] is None and train["onnx_fused_ms"] is None
    table = bench_models.format_model_table(rows, 1, "x")
    assert "onnx fused" in table and "onnx/fused" in table
    assert f"{infer['onnx_fused_ms']:.2f}" in table.splitlines()[3]
    runs = [{"threads": 1, "model_rows": rows}, {"threads": 2, "model_rows": rows}]
    assert "onnx fused" in bench_models.format_scaling(runs)


def test_quick_cases_stay_small():
    # CI's smoke run: no VGG/GoogLeNet/ResNet-50 and no big training step
    assert {(c.model, c.mode) for c in bench_models.QUICK_CASES} == {
        ("lenet5", "inference"), ("resnet18", "inference"), ("lenet5", "train step")}
    assert all(c in bench_models.MODEL_CASES for c in bench_models.QUICK_CASES)
