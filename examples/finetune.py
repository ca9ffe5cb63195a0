"""Fine-tuning with cnnfast: load trained weights, freeze the feature
extractor, retrain a new classifier head.

    python examples/finetune.py

1. "Pretrain" LeNet-5 on the digits 0-4 (scikit-learn's 8x8 digits at 32x32)
   and save the weights -- the stand-in for a model someone else trained.
2. Build a fresh LeNet-5, load those weights, freeze everything, swap in a new
   fc2 head and train only that head on the digits 5-9.
The frozen layers still pass gradients through (backward returns the input
gradient), but compute no parameter gradients and the optimizer leaves them
untouched.
"""
import os
import tempfile

import numpy as np

import cnnfast.nn as nn
from cnnfast.cli import load_digits_32, predict
from cnnfast.data import DataLoader, Normalize
from cnnfast.io import load, save
from cnnfast.models import lenet5
from cnnfast.optim import SGD


def fit(model, x, y, epochs, lr, seed=0):
    loss_fn = nn.CrossEntropyLoss()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = SGD(trainable, lr, momentum=0.9)
    loader = DataLoader(x, y, batch_size=32, seed=seed)
    for epoch in range(epochs):
        total = 0.0
        for xb, yb in loader:
            total += loss_fn(model(xb), yb) * len(yb)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
        print(f"  epoch {epoch + 1}: mean loss {total / len(x):.4f}")


def main():
    x_tr, y_tr, x_te, y_te = load_digits_32()
    norm = Normalize([x_tr.mean()], [x_tr.std()])
    x_tr, x_te = norm(x_tr), norm(x_te)
    old_tr, new_tr = y_tr < 5, y_tr >= 5
    new_te = y_te >= 5

    print("1. pretraining LeNet-5 on digits 0-4")
    nn.manual_seed(0)
    pretrained = lenet5()
    fit(pretrained, x_tr[old_tr], y_tr[old_tr], epochs=5, lr=0.05)
    path = os.path.join(tempfile.mkdtemp(), "lenet5_digits0to4.npz")
    save(pretrained, path)

    print("2. fine-tuning a new head on digits 5-9, features frozen")
    model = load(lenet5(), path)
    model.freeze()                      # conv1..conv3, fc1: no gradients, no updates
    model.fc2 = nn.Linear(84, 10)       # a new head (trainable)
    before = {k: v.copy() for k, v in model.state_dict().items() if not k.startswith("fc2")}
    acc0 = (predict(model, x_te[new_te]) == y_te[new_te]).mean()
    fit(model, x_tr[new_tr], y_tr[new_tr], epochs=10, lr=0.05)
    acc1 = (predict(model, x_te[new_te]) == y_te[new_te]).mean()
    unchanged = all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())
    print(f"accuracy on test digits 5-9: {acc0:.3f} with the new head untrained, "
          f"{acc1:.3f} after fine-tuning")
    print(f"feature extractor unchanged: {unchanged}; trained: {sorted(model.named_grads())}")


if __name__ == "__main__":
    main()
