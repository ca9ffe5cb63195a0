"""cnnfast.models: classic CNNs whose state_dict keys equal torchvision's.

Each builder takes (num_classes, in_channels, ...) and a keyword `dtype`.
Residual and Inception blocks are importable for building other networks.
"""
from .alexnet import AlexNet, alexnet
from .googlenet import BasicConv2d, GoogLeNet, GoogLeNetOutputs, Inception, InceptionAux
from .googlenet import googlenet
from .lenet import LeNet5, lenet5
from .mobilenet import InvertedResidual, MobileNetV2, mobilenet_v2
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101
from .resnet import resnet152
from .vgg import VGG, vgg11, vgg16

MODELS = {"lenet5": lenet5, "alexnet": alexnet, "vgg11": vgg11, "vgg16": vgg16,
          "googlenet": googlenet, "resnet18": resnet18, "resnet34": resnet34,
          "resnet50": resnet50, "resnet101": resnet101, "resnet152": resnet152,
          "mobilenet_v2": mobilenet_v2}

__all__ = ["lenet5", "alexnet", "vgg11", "vgg16", "googlenet", "resnet18", "resnet34",
           "resnet50", "resnet101", "resnet152", "mobilenet_v2",
           "LeNet5", "AlexNet", "VGG", "GoogLeNet", "ResNet", "BasicBlock", "Bottleneck",
           "MobileNetV2", "InvertedResidual", "Inception",
           "InceptionAux", "BasicConv2d", "GoogLeNetOutputs", "MODELS"]
