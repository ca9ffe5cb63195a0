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
    model.skip_input_grad()   # the batch is data, as torch's (no requires_grad)
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


def torch_lenet5(torch, in_channels=1, num_classes=10):
    """LeNet-5 in PyTorch with cnnfast's (and the spec's) parameter names."""
    T = torch.nn

    class LeNet(T.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = T.Conv2d(in_channels, 6, 5), T.Conv2d(6, 16, 5)
            self.conv3 = T.Conv2d(16, 120, 5)
            self.fc1, self.fc2 = T.Linear(120, 84), T.Linear(84, num_classes)

        def forward(self, x):
            x = T.functional.avg_pool2d(torch.tanh(self.conv1(x)), 2)
            x = T.functional.avg_pool2d(torch.tanh(self.conv2(x)), 2)
            x = torch.tanh(self.conv3(x)).flatten(1)
            return self.fc2(torch.tanh(self.fc1(x)))

    return LeNet()


def torch_resnet18(torch, in_channels=3, num_classes=10):
    """torchvision's ResNet-18 layout, written out (torchvision is not a dependency)."""
    T = torch.nn

    class Block(T.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = T.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = T.BatchNorm2d(cout)
            self.conv2 = T.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = T.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = T.Sequential(T.Conv2d(cin, cout, 1, stride, bias=False),
                                               T.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet(T.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = T.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.bn1 = T.BatchNorm2d(64)
            self.maxpool = T.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
                setattr(self, f"layer{i + 1}",
                        T.Sequential(Block(cin, cout, stride), Block(cout, cout, 1)))
                cin = cout
            self.fc = T.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(x.mean(dim=(2, 3)))

    return ResNet()


def _torch_model(torch, case):
    twins = {"lenet5": torch_lenet5, "resnet18": torch_resnet18}
    if case.model not in twins:
        raise ValueError(f"no torch twin for {case.model!r}")
    return twins[case.model](torch, case.in_channels, case.num_classes)


def torch_training_step(case: TrainCase, seed=0):
    """The same step in PyTorch (CPU, float32), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(seed)
    model = _torch_model(torch, case).train()
    x, y = (torch.from_numpy(a) for a in _batch(case, seed))
    return torch_step(torch, model, x, y)


def torch_step(torch, model, x, y):
    """One SGD (momentum) training step of a torch model on (x, y): step() -> loss."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step
