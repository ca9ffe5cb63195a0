"""Training-step benchmarks: one forward + cross-entropy + backward + SGD step.

`training_step(case)` builds the model and a fixed random batch and returns a
`step()` callable (returning the loss); `torch_training_step(case)` does the
same with an equivalent PyTorch model (same layers, same shapes), or returns
None when torch is not importable. Shared by bench/test_train_bench.py and
the CLI's benchmark report.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TrainCase(NamedTuple):
    model: str
    batch: int
    in_channels: int
    size: int
    num_classes: int = 10

    @property
    def name(self):
        return f"{self.model}-b{self.batch}-{self.size}x{self.size}"


TRAIN_CASES = [
    TrainCase("lenet5", 64, 1, 32),
    TrainCase("resnet18", 8, 3, 64),
]

LR, MOMENTUM = 0.01, 0.9


def _batch(case, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.batch, case.in_channels, case.size, case.size),
                            dtype=np.float32)
    y = rng.integers(0, case.num_classes, size=case.batch)
    return x, y


def training_step(case: TrainCase, seed=0):
    """cnnfast: model, batch and SGD (momentum 0.9) -> step() returning the loss."""
    from .. import models, nn, optim

    nn.manual_seed(seed)
    model = models.MODELS[case.model](num_classes=case.num_classes,
                                      in_channels=case.in_channels).train()
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), LR, momentum=MOMENTUM)
    x, y = _batch(case, seed)

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        return loss

    return step


def _torch_model(torch, case):
    tnn = torch.nn
    if case.model == "lenet5":
        return tnn.Sequential(
            tnn.Conv2d(case.in_channels, 6, 5), tnn.Tanh(), tnn.AvgPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.Tanh(), tnn.AvgPool2d(2),
            tnn.Conv2d(16, 120, 5), tnn.Tanh(), tnn.Flatten(),
            tnn.Linear(120, 84), tnn.Tanh(), tnn.Linear(84, case.num_classes))
    if case.model != "resnet18":
        raise ValueError(f"no torch twin for {case.model!r}")

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.downsample = (tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                              tnn.BatchNorm2d(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    layers, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers.append(tnn.Sequential(Block(cin, cout, stride), Block(cout, cout, 1)))
        cin = cout
    return tnn.Sequential(
        tnn.Conv2d(case.in_channels, 64, 7, 2, 3, bias=False), tnn.BatchNorm2d(64), tnn.ReLU(),
        tnn.MaxPool2d(3, 2, 1), *layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(),
        tnn.Linear(512, case.num_classes))


def torch_training_step(case: TrainCase, seed=0):
    """The same step in PyTorch (CPU, float32), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(seed)
    model = _torch_model(torch, case).train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = (torch.from_numpy(a) for a in _batch(case, seed))

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step
