"""AlexNet, torchvision's variant ("One weird trick", 64-192-384-256-256)."""
from __future__ import annotations

import numpy as np

from ..nn import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential
from ..nn.container import Chain, set_data_format
from ._common import Transfer, check_model_args, load_weights


class AlexNet(Transfer, Chain):
    """torchvision's AlexNet: `features` is the convolutional base (five convs,
    three max pools), then a 6x6 adaptive average pool and `classifier`, the
    three-layer MLP. Base and head (see Transfer): the head is the last
    Linear, `classifier[6]` (head_name "classifier.6"); forward_features(x)
    returns the (N, 4096) output of classifier[5] (the "fc7" features).
    `model.features.freeze()` freezes the convolutional base alone."""

    head_name = "classifier.6"

    def __init__(self, num_classes=1000, in_channels=3, dropout=0.5, dtype=np.float32, *,
                 weights=None, data_format="channels_first"):
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
        set_data_format(self, data_format)
        load_weights(self, weights)

    def forward_features(self, x):
        x = self.flatten(self.avgpool(self.features(x)))
        for m in self.classifier[:-1]:
            x = m(x)
        return x


def alexnet(num_classes=1000, in_channels=3, *, dropout=0.5, dtype=np.float32, weights=None,
            data_format="channels_first"):
    """AlexNet; inputs of at least 63x63 (the three 3x3/2 max pools need room).
    `weights`: a weights file (.npz, .safetensors, torchvision's .pth);
    `data_format`: "channels_last" for (N, H, W, C) inputs."""
    return AlexNet(num_classes, in_channels, dropout, dtype, weights=weights,
                   data_format=data_format)
