"""Transfer learning from PyTorch weights, without PyTorch.

    python examples/finetune_pretrained.py --weights resnet18-f37072fd.pth
    python examples/finetune_pretrained.py --quick        # makes its own stand-in file
    python examples/finetune_pretrained.py --model mobilenet_v2 --weights mobilenet_v2-b0353104.pth

1. Read a torchvision weights file (torch.save's zip format, e.g. torchvision's
   published resnet18-f37072fd.pth) with cnnfast.io.read_state_dict: no torch
   needed, no pickled code run. Without --weights the example first writes
   such a file from a randomly initialised ResNet-18 -- with torch.save if
   torch is installed, else with the small writer below, which produces the
   same zip layout -- so it runs anywhere (CI included).
2. Feature extraction: freeze the model, run its base (everything up to the
   final Linear) once over scikit-learn's digits, gray repeated to RGB and
   normalised with ImageNet's statistics, and train a new 10-class head on
   the base's output.
3. Print the test accuracy of the whole model (base + new head).

With random stand-in weights the base is a random feature extractor, so
expect well below what ImageNet weights give. To fine-tune deeper instead,
unfreeze the last stage (model.layer4.unfreeze()) and train the whole model in
train mode with model.backward.
"""
import argparse
import io
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np

import cnnfast.nn as nn
from cnnfast import models
from cnnfast.cli import load_digits_32, predict
from cnnfast.data import DataLoader
from cnnfast.io import read_state_dict
from cnnfast.optim import Adam

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
INPUT_SIZE = {"alexnet": 64}     # its stem needs at least 63x63; the others take 32x32


# ------------------------------------------- a torch.save writer without torch

class _TorchName:
    """A name in torch (e.g. torch.FloatStorage), pickled as a GLOBAL opcode
    without importing torch."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self):           # pickle wants reduce functions to be callable
        raise TypeError("a stand-in")


_REBUILD = _TorchName("torch._utils", "_rebuild_tensor_v2")
_FLOAT_STORAGE = _TorchName("torch", "FloatStorage")


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):         # what torch.Tensor.__reduce_ex__ returns
        a = self.storage.array
        strides = tuple(s // a.itemsize for s in a.strides)
        return _REBUILD, (self.storage, 0, a.shape, strides, False, OrderedDict())


class _Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    # pickle's pure-Python pickler; typeshed lists none of its private methods
    def _save_torch_name(self, obj):
        line = f"{obj.module}\n{obj.name}\n".encode()
        self.write(pickle.GLOBAL + line)  # type: ignore[attr-defined]
        self.memoize(obj)  # type: ignore[attr-defined]

    dispatch[_TorchName] = _save_torch_name  # type: ignore[assignment]

    def persistent_id(self, obj):  # torch's storage record
        if isinstance(obj, _Storage):
            return ("storage", _FLOAT_STORAGE, obj.key, "cpu", obj.array.size)
        return None


def write_torch_file(state, path):
    """torch.save(state) for a dict of float32 arrays: a zip (stored, not
    compressed) of archive/data.pkl, archive/byteorder, archive/data/<key>."""
    storages = [_Storage(str(i), np.ascontiguousarray(v, "<f4"))
                for i, v in enumerate(state.values())]
    pickled = io.BytesIO()
    _Pickler(pickled, protocol=2).dump(OrderedDict((k, _Tensor(s))
                                                   for k, s in zip(state, storages)))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickled.getvalue())
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.array.tobytes())
        zf.writestr("archive/version", "3\n")


def make_stand_in_weights(model_name, folder):
    """A torchvision-format file of a randomly initialised model."""
    path = os.path.join(folder, f"{model_name}-random.pth")
    state = models.MODELS[model_name]().state_dict()      # 1000 classes, as torchvision's
    try:
        import torch
    except ImportError:
        write_torch_file(state, path)
        print(f"wrote {path} (torch not installed: cnnfast's example writer)")
    else:
        torch.save(OrderedDict((k, torch.from_numpy(v)) for k, v in state.items()), path)
        print(f"wrote {path} with torch.save")
    return path


# ----------------------------------------------------------- transfer learning

def to_imagenet_input(gray):
    """(N, 1, H, W) digits in [0, 1] -> (N, 3, H, W), normalised as ImageNet."""
    return (np.repeat(gray, 3, axis=1) - IMAGENET_MEAN) / IMAGENET_STD


def features(model, x, batch_size=128):
    return np.concatenate([model.forward_features(x[i:i + batch_size])
                           for i in range(0, len(x), batch_size)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a torchvision weights file (.pth); default: make "
                                          "one with random weights")
    parser.add_argument("--model", default="resnet18",
                        choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                 "mobilenet_v2", "alexnet", "vgg11", "vgg16", "googlenet"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true",
                        help="300 training images and 5 epochs (a smoke test)")
    args = parser.parse_args(argv)

    nn.manual_seed(0)
    path = args.weights or make_stand_in_weights(args.model, tempfile.mkdtemp())

    state = read_state_dict(path)                    # no torch, no pickled code run
    if args.model == "googlenet":                    # torchvision's file has untrained aux heads
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    model = models.MODELS[args.model]()
    model.load_state_dict(state)
    print(f"loaded {len(state)} arrays from {path} into {args.model}")

    model.freeze().eval()                            # the base: no gradients, BN as loaded
    size = INPUT_SIZE.get(args.model, 32)
    x_tr, y_tr, x_te, y_te = load_digits_32(size=size)
    if args.quick:
        x_tr, y_tr = x_tr[:300], y_tr[:300]
    x_tr, x_te = to_imagenet_input(x_tr), to_imagenet_input(x_te)
    base_before = {k: v for k, v in model.state_dict().items()
                   if not k.startswith(model.head_name)}

    feats = features(model, x_tr)                    # feature extraction: the base runs once
    head = model.replace_head(10)                    # new trainable Linear at model.head_name
    print(f"features {feats.shape}; new head {model.head_name}: {head}")
    loss_fn, opt = nn.CrossEntropyLoss(), Adam(head.parameters(), lr=1e-2)
    epochs = 5 if args.quick else args.epochs
    for epoch in range(epochs):
        total = 0.0
        for fb, yb in DataLoader(feats, y_tr, batch_size=64, seed=epoch):
            total += loss_fn(head(fb), yb) * len(yb)
            opt.zero_grad()
            head.backward(loss_fn.backward())
            opt.step()
        print(f"  epoch {epoch + 1}: mean loss {total / len(feats):.4f}")

    unchanged = all(np.array_equal(v, model.state_dict()[k]) for k, v in base_before.items())
    print(f"frozen base unchanged: {unchanged}")
    accuracy = (predict(model.eval(), x_te) == y_te).mean()   # base + new head, end to end
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
