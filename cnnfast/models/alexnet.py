"""AlexNet, torchvision's variant ("One weird trick", 64-192-384-256-256)."""
from __future__ import annotations

import numpy as np

from ..nn.layers import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from ..nn.layers import Sequential
from ._common import Chain, check_model_args


class AlexNet(Chain):
    def __init__(self, num_classes=1000, in_channels=3, dropout=0.5, dtype=np.float32):
        super().__init__()
        check_model_args(num_classes, in_channels)
        self.features = Sequential(
            Conv2d(in_channels, 64, 11, stride=4, padding=2, dtype=dtype), ReLU(),
            MaxPool2d(3, stride=2),
            Conv2d(64, 192, 5, padding=2, dtype=dtype), ReLU(),
            MaxPool2d(3, stride=2),
            Conv2d(192, 384, 3, padding=1, dtype=dtype), ReLU(),
            Conv2d(384, 256, 3, padding=1, dtype=dtype), ReLU(),
            Conv2d(256, 256, 3, padding=1, dtype=dtype), ReLU(),
            MaxPool2d(3, stride=2),
        )
        self.avgpool = AdaptiveAvgPool2d((6, 6))
        self.flatten = Flatten()
        self.classifier = Sequential(
            Dropout(dropout), Linear(256 * 6 * 6, 4096, dtype=dtype), ReLU(),
            Dropout(dropout), Linear(4096, 4096, dtype=dtype), ReLU(),
            Linear(4096, num_classes, dtype=dtype),
        )


def alexnet(num_classes=1000, in_channels=3, *, dropout=0.5, dtype=np.float32):
    """AlexNet; inputs of at least 63x63 (the three 3x3/2 max pools need room)."""
    return AlexNet(num_classes, in_channels, dropout, dtype)
