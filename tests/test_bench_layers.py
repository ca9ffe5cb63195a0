"""cnnfast.bench.layers on ResNet-18 at 64x64 (--quick), one thread: every
cnnfast row is timed, every convolution and pool pairs with its onnxruntime
node of the same weight and output size, and the tables show the pairs.
A smoke test, not a timing."""
import pytest

from cnnfast.bench import layers

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def report():
    return layers.layer_report(1, 2, quick=True)


def test_every_convolution_pairs_with_its_onnxruntime_node(report):
    rows = report["rows"]
    ours = [r for r in rows if r["layer"]]
    assert ours[0]["layer"] == "(to_channels_last)" and ours[0]["kernel"] == "layout_copy"
    # the replayed run's kernel calls, summed per layer: a layer without a
    # kernel (a folded BatchNorm, a flatten) takes no time
    assert all(r["ms"] is not None and r["ms"] >= 0 for r in ours)
    assert all(r["ms"] > 0 for r in ours if "Conv" in r["op"] or "Pool" in r["op"])
    convs = [r for r in ours if "Conv" in r["op"]]
    assert len(convs) == 20   # stem, 16 3x3 in the blocks, 3 downsamples
    assert all(r["ort_op"] in ("Conv", "FusedConv") and r["ort_ms"] > 0 for r in convs)
    assert all(r["ratio"] == pytest.approx(r["ort_ms"] / r["ms"]) for r in convs)
    by_layer = {r["layer"]: r for r in ours}
    assert by_layer["module.maxpool"]["ort_op"] == "MaxPool"
    assert by_layer["module.fc"]["ort_op"] == "Gemm"
    assert by_layer["module.avgpool"]["ort_op"] in ("ReduceMean", "GlobalAveragePool")
    # an onnxruntime node has one row: paired or alone (a reorder)
    nodes = [r["ort_node"] for r in rows if r["ort_node"]]
    assert len(nodes) == len(set(nodes))


def test_totals_add_up_the_rows(report):
    rows, totals = report["rows"], report["totals"]
    ours = totals["cnnfast"]
    assert ours["conv"] == pytest.approx(sum(r["ms"] for r in rows if "Conv" in r["op"]))
    assert ours["nodes"] == pytest.approx(ours["conv"] + ours["pool"] + ours["other"])
    theirs = totals["onnxruntime"]
    assert theirs["nodes"] == pytest.approx(sum(r["ort_ms"] for r in rows if r["ort_ms"]))
    assert report["cnnfast_wall_ms"] > 0 and report["onnxruntime_wall_ms"] > 0


def test_tables_show_the_pairs(report):
    table = layers.format_layer_table(report).splitlines()
    stem = next(line for line in table if line.startswith("module.conv1 "))
    row = next(r for r in report["rows"] if r["layer"] == "module.conv1")
    assert f"{row['ms']:.3f}" in stem and f"{row['ort_ms']:.3f}" in stem
    assert table[-1].startswith("whole model")
    two = dict(report, threads=2)
    scaling = layers.format_layer_scaling([report, two]).splitlines()
    assert scaling[0].startswith("per-layer speed-up 2 threads")
    assert "1.00" in next(line for line in scaling if line.startswith("module.conv1 "))


def test_match_rows_pairs_renamed_convolutions_by_shape():
    def ours(name, op, out, weight=None):
        return dict(name=name, op=op, kernel="k", out_shape=out, weight_shape=weight, ms=1.0)

    def node(name, op, out, weight=None):
        return dict(node=name, op=op, out_shape=out, weight_shape=weight, ms=2.0)
    mine = [ours("module.layer2.0.downsample.0", "FusedConv2d", (1, 128, 8, 8), (128, 64, 1, 1)),
            ours("module.layer2.0.conv1", "FusedConv2d", (1, 128, 8, 8), (128, 64, 3, 3)),
            ours("module.avgpool", "AdaptiveAvgPool2d", (1, 512, 1, 1)),
            ours("module.flatten", "Flatten", (1, 512))]
    # onnxruntime names a Conv+ReLU after the ReLU and runs conv1 first
    theirs = [node("/layer2/layer2.0/Relu_output_0_nchwc", "Conv", (1, 128, 8, 8), (128, 64, 3, 3)),
              node("/layer2/layer2.0/downsample/downsample.0/Conv", "Conv", (1, 128, 8, 8),
                   (128, 64, 1, 1)),
              node("ReorderOutput", "ReorderOutput", (1, 512, 1, 1)),
              node("/ReduceMean", "ReduceMean", (1, 512))]
    assert layers.match_rows(mine, theirs) == {0: 1, 1: 0, 3: 2}
    merged = layers.merge_rows(mine, theirs)
    assert [r["layer"] or r["ort_node"] for r in merged] == [
        "module.layer2.0.downsample.0", "module.layer2.0.conv1", "ReorderOutput",
        "module.avgpool", "module.flatten"]
    assert merged[2]["ms"] is None and merged[2]["ratio"] is None
    assert merged[4]["ort_node"] is None
    assert [r["ratio"] for r in merged if r["ratio"]] == [2.0, 2.0, 2.0]
