"""An ONNX model in, fine-tuned in NumPy.

    python examples/onnx_finetune.py --quick
    python examples/onnx_finetune.py --model my_lenet.onnx   # your own export (1x32x32 in)

1. Export LeNet-5 from a PyTorch twin (cnnfast.bench.train.torch_lenet5)
   with torch.onnx.export, dynamic batch. Without torch, the same graph is
   written with onnx.helper from cnnfast's own LeNet-5 weights, so the
   example runs anywhere `onnx` is installed.
2. cnnfast.onnx.load it: the graph runs on cnnfast's kernels. Compare the
   outputs with onnxruntime's when it is installed.
3. Fine-tune the head (the two fully connected layers, Gemm nodes in the
   file) on scikit-learn's digits, the convolutions frozen, and report the
   test accuracy before and after. The state dict keeps the file's
   initializer names (conv1.weight, fc2.bias, ...), so cnnfast.save writes
   weights the PyTorch twin loads as they are.
"""
import argparse
import os
import tempfile
import warnings

import numpy as np

import cnnfast
import cnnfast.nn as nn
import cnnfast.onnx
from cnnfast import models
from cnnfast.cli import load_digits_32
from cnnfast.data import DataLoader
from cnnfast.optim import Adam


def export_with_torch(path):
    import torch

    from cnnfast.bench.train import torch_lenet5
    torch.manual_seed(0)
    twin = torch_lenet5(torch).eval()
    # the TorchScript exporter: the newer dynamo one also needs the onnxscript package
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(twin, (torch.zeros(1, 1, 32, 32),), path, dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})


def export_with_onnx_helper(path):
    """LeNet-5 written node by node, from cnnfast's own randomly initialised model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nn.manual_seed(0)
    weights = models.lenet5().state_dict()
    nodes, x = [], "x"
    for i, conv in enumerate(("conv1", "conv2", "conv3")):
        nodes.append(helper.make_node("Conv", [x, f"{conv}.weight", f"{conv}.bias"], [f"c{i}"],
                                      kernel_shape=[5, 5]))
        nodes.append(helper.make_node("Tanh", [f"c{i}"], [f"t{i}"]))
        x = f"t{i}"
        if i < 2:
            nodes.append(helper.make_node("AveragePool", [x], [f"p{i}"], kernel_shape=[2, 2],
                                          strides=[2, 2]))
            x = f"p{i}"
    nodes += [helper.make_node("Flatten", [x], ["f"]),
              helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["h"], transB=1),
              helper.make_node("Tanh", ["h"], ["th"]),
              helper.make_node("Gemm", ["th", "fc2.weight", "fc2.bias"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "lenet5", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def accuracy(model, x, y):
    model.eval()
    return float(np.mean(np.concatenate([model(x[i:i + 256]).argmax(1)
                                         for i in range(0, len(x), 256)]) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an ONNX file taking (N, 1, 32, 32) and giving 10 "
                                        "logits (default: export LeNet-5 first)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--quick", action="store_true", help="one short epoch (CI smoke run)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = os.path.join(tmp, "lenet5.onnx")
            try:
                export_with_torch(path)
                print(f"exported LeNet-5 from its PyTorch twin to {path}")
            except ImportError:
                export_with_onnx_helper(path)
                print(f"torch not installed: wrote LeNet-5 with onnx.helper to {path}")
        model = cnnfast.onnx.load(path)
        print(f"loaded: {len(model.named_children())} operators, parameters "
              f"{[k for k, _ in model.named_parameters()]}")

        x_tr, y_tr, x_te, y_te = load_digits_32()
        try:
            import onnxruntime
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            theirs = session.run(None, {session.get_inputs()[0].name: x_te[:64]})[0]
            diff = np.abs(model(x_te[:64]) - theirs).max()
            print(f"max |cnnfast - onnxruntime| over 64 digits: {diff:.2e}")
        except ImportError:
            print("onnxruntime not installed: comparison skipped")

        # fine-tune the head: every Gemm (fully connected) parameter, the rest frozen
        model.freeze()
        head = [p for k, p in model.named_parameters() if k.startswith("fc")] or \
            model.parameters()
        for p in head:
            p.requires_grad = True
        model.skip_input_grad()
        print(f"test accuracy before fine-tuning: {accuracy(model, x_te, y_te):.3f}")
        loss_fn = nn.CrossEntropyLoss()
        opt = Adam(head, lr=args.lr)
        epochs, limit = (1, 12) if args.quick else (args.epochs, None)
        for epoch in range(epochs):
            model.train()
            losses = []
            loader = DataLoader(x_tr, y_tr, batch_size=64, shuffle=True, seed=epoch)
            for step, (xb, yb) in enumerate(loader):
                if limit is not None and step == limit:
                    break
                loss = loss_fn(model(xb), yb)
                opt.zero_grad()
                model.backward(loss_fn.backward())
                opt.step()
                losses.append(loss)
            print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}, "
                  f"test accuracy {accuracy(model, x_te, y_te):.3f}")
        out = cnnfast.save(model, os.path.join(tmp, "finetuned.npz"))
        print(f"fine-tuned weights ({len(model.state_dict())} arrays keyed as in the ONNX "
              f"file) saved to {os.path.basename(out)}")


if __name__ == "__main__":
    main()
