"""cnnfast.nn: layers with forward/backward on NumPy arrays, torch.nn-style.

    import cnnfast.nn as nn
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 28 * 28, 10))
    logits = model(x)                 # training mode caches what backward needs
    loss = nn.CrossEntropyLoss()
    value = loss(logits, y)
    model.backward(loss.backward())   # adds into each Parameter's .grad
"""
from . import init
from .activation import Hardtanh, LeakyReLU, ReLU, ReLU6, Sigmoid, Tanh
from .container import Sequential
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .dropout import Dropout
from .init import manual_seed
from .linear import Flatten, Identity, Linear
from .loss import CrossEntropyLoss
from .module import Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .pooling import (
    AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AdaptiveMaxPool1d,
    AdaptiveMaxPool2d, AdaptiveMaxPool3d, AvgPool1d, AvgPool2d, AvgPool3d, GlobalAvgPool2d,
    GlobalMaxPool2d, MaxPool1d, MaxPool2d, MaxPool3d,
)

__all__ = [
    "Module", "Parameter", "manual_seed", "init",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "Linear", "Flatten", "Identity", "ReLU", "ReLU6", "Hardtanh", "LeakyReLU", "Tanh", "Sigmoid",
    "Dropout", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
    "GlobalAvgPool2d", "GlobalMaxPool2d", "Sequential",
    "CrossEntropyLoss",
]
