"""LeNet-5 (LeCun et al., 1998) as published: tanh units, average-pooling
subsampling, 32x32 inputs."""
from __future__ import annotations

import numpy as np

from ..nn import AvgPool2d, Conv2d, Flatten, Linear, Tanh
from ..nn.container import Chain, set_data_format
from ._common import Transfer, check_model_args, load_weights


class LeNet5(Transfer, Chain):
    """conv1 5x5 -> 6, tanh, 2x2 avg pool, conv2 5x5 -> 16, tanh, 2x2 avg pool,
    conv3 5x5 -> 120, tanh, fc1 120 -> 84, tanh, fc2 84 -> num_classes.

    Base and head (see Transfer): the head is `fc2`; the base is conv1 ...
    act4, and forward_features(x) returns its (N, 84) output."""

    head_name = "fc2"

    def __init__(self, num_classes=10, in_channels=1, dtype=np.float32, *, weights=None,
                 data_format="channels_first"):
        super().__init__()
        check_model_args(num_classes, in_channels)
        self.conv1 = Conv2d(in_channels, 6, 5, dtype=dtype)     # 32 -> 28
        self.act1 = Tanh()
        self.pool1 = AvgPool2d(2)                                # 28 -> 14
        self.conv2 = Conv2d(6, 16, 5, dtype=dtype)              # 14 -> 10
        self.act2 = Tanh()
        self.pool2 = AvgPool2d(2)                                # 10 -> 5
        self.conv3 = Conv2d(16, 120, 5, dtype=dtype)            # 5 -> 1
        self.act3 = Tanh()
        self.flatten = Flatten()
        self.fc1 = Linear(120, 84, dtype=dtype)
        self.act4 = Tanh()
        self.fc2 = Linear(84, num_classes, dtype=dtype)
        self.data_format = "channels_first"
        set_data_format(self, data_format)
        load_weights(self, weights)

    def _check_input(self, x):
        if getattr(x, "ndim", 0) != 4:
            return
        if (x.shape[1:3] if self.data_format == "channels_last" else x.shape[2:]) != (32, 32):
            raise ValueError(f"LeNet-5 takes 32x32 images, got x of shape {x.shape} "
                             f"(pad or resize the input)")

    def forward(self, x):
        self._check_input(x)
        return super().forward(x)

    def forward_features(self, x):
        self._check_input(x)
        for m in self._stages()[:-1]:
            x = m(x)
        return x


def lenet5(num_classes=10, in_channels=1, *, dtype=np.float32, weights=None,
           data_format="channels_first"):
    """LeNet-5 for (N, in_channels, 32, 32) inputs ((N, 32, 32, in_channels)
    with data_format="channels_last"); `weights`: a weights file (.npz,
    .safetensors, PyTorch .pth) loaded strictly after building."""
    return LeNet5(num_classes, in_channels, dtype=dtype, weights=weights,
                  data_format=data_format)
