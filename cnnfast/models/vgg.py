"""VGG (Simonyan & Zisserman, 2014), configurations A (VGG-11) and D (VGG-16)."""
from __future__ import annotations

import numpy as np

from ..nn import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential
from ..nn.container import Chain, set_data_format
from ..nn.train_layout import ChannelsLastTraining
from ._common import Transfer, check_model_args, load_weights, torchvision_init

# Output channels of each 3x3 conv; "M" is a 2x2 max pool.
CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}


def make_features(config, in_channels, dtype):
    layers = []
    for v in config:
        if v == "M":
            layers.append(MaxPool2d(2, stride=2))
        else:
            layers += [Conv2d(in_channels, v, 3, padding=1, dtype=dtype), ReLU()]
            in_channels = v
    return Sequential(*layers)


class VGG(ChannelsLastTraining, Transfer, Chain):
    """torchvision's VGG: `features` is the convolutional base (3x3 convs and
    max pools), then a 7x7 adaptive average pool and `classifier`, the
    three-layer MLP. Base and head (see Transfer): the head is the last
    Linear, `classifier[6]` (head_name "classifier.6"); forward_features(x)
    returns the (N, 4096) output of classifier[5] (the "fc7" features).
    `model.features.freeze()` freezes the convolutional base alone. With
    `weights`, the random initialisation is skipped."""

    head_name = "classifier.6"

    def __init__(self, features, num_classes=1000, dropout=0.5, init_weights=True,
                 dtype=np.float32, *, weights=None, data_format="channels_first"):
        super().__init__()
        self.features = features
        self.avgpool = AdaptiveAvgPool2d((7, 7))
        self.flatten = Flatten()
        self.classifier = Sequential(
            Linear(512 * 7 * 7, 4096, dtype=dtype), ReLU(), Dropout(dropout),
            Linear(4096, 4096, dtype=dtype), ReLU(), Dropout(dropout),
            Linear(4096, num_classes, dtype=dtype),
        )
        if init_weights and weights is None:
            torchvision_init(self, conv="kaiming_fan_out", linear="normal")
        set_data_format(self, data_format)
        load_weights(self, weights)

    def forward_features(self, x):
        x = self.flatten(self.avgpool(self.features(x)))
        for m in self.classifier[:-1]:
            x = m(x)
        return x


def _vgg(name, num_classes, in_channels, dropout, init_weights, dtype, weights, data_format):
    check_model_args(num_classes, in_channels)
    return VGG(make_features(CONFIGS[name], in_channels, dtype), num_classes, dropout,
               init_weights, dtype, weights=weights, data_format=data_format)


def vgg11(num_classes=1000, in_channels=3, *, dropout=0.5, init_weights=True,
          dtype=np.float32, weights=None, data_format="channels_first"):
    """VGG-11 (configuration A); inputs of at least 32x32. `weights`: a
    weights file (.npz, .safetensors, torchvision's .pth); `data_format`:
    "channels_last" for (N, H, W, C) inputs."""
    return _vgg("vgg11", num_classes, in_channels, dropout, init_weights, dtype, weights,
                data_format)


def vgg16(num_classes=1000, in_channels=3, *, dropout=0.5, init_weights=True,
          dtype=np.float32, weights=None, data_format="channels_first"):
    """VGG-16 (configuration D); inputs of at least 32x32. `weights`: a
    weights file (.npz, .safetensors, torchvision's .pth); `data_format`:
    "channels_last" for (N, H, W, C) inputs."""
    return _vgg("vgg16", num_classes, in_channels, dropout, init_weights, dtype, weights,
                data_format)
