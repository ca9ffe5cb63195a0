"""torchvision's MobileNetV2, Bottleneck ResNets (50/101/152), VGG-11 and
GoogLeNet written out in plain torch (torchvision is not a dependency), read
off torchvision's mobilenetv2.py, resnet.py, vgg.py and googlenet.py: the
same modules, forward and state-dict keys.
The models benchmark times them and the tests use them as oracles; nothing
here imports cnnfast's models."""
from __future__ import annotations

BOTTLENECK_LAYERS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3],
                     "resnet152": [3, 8, 36, 3]}


def torch_resnet_bottleneck(torch, layers, in_channels=3, num_classes=1000):
    """torchvision's ResNet with Bottleneck blocks (stride on the 3x3 conv,
    expansion 4); `layers` e.g. [3, 4, 6, 3] for ResNet-50."""
    T = torch.nn

    class Bottleneck(T.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = T.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = T.BatchNorm2d(planes)
            self.conv2 = T.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = T.BatchNorm2d(planes)
            self.conv3 = T.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = T.BatchNorm2d(planes * 4)
            self.relu = T.ReLU()
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class ResNet(T.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = 64
            self.conv1 = T.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.bn1 = T.BatchNorm2d(64)
            self.relu = T.ReLU()
            self.maxpool = T.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(64, layers[0], 1)
            self.layer2 = self._make_layer(128, layers[1], 2)
            self.layer3 = self._make_layer(256, layers[2], 2)
            self.layer4 = self._make_layer(512, layers[3], 2)
            self.avgpool = T.AdaptiveAvgPool2d((1, 1))
            self.fc = T.Linear(512 * 4, num_classes)

        def _make_layer(self, planes, blocks, stride):
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = T.Sequential(
                    T.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                    T.BatchNorm2d(planes * 4))
            out = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            out += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return T.Sequential(*out)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def torch_resnet50(torch, in_channels=3, num_classes=1000):
    return torch_resnet_bottleneck(torch, BOTTLENECK_LAYERS["resnet50"], in_channels,
                                   num_classes)


def _make_divisible(v, divisor, min_value=None):
    # torchvision's _utils._make_divisible, copied so the twin stands alone
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def torch_mobilenet_v2(torch, in_channels=3, num_classes=1000, width_mult=1.0, dropout=0.2):
    """torchvision's MobileNetV2 (Conv2dNormActivation written as a Sequential
    of Conv2d, BatchNorm2d, ReLU6: the same keys)."""
    T = torch.nn

    def conv_bn_act(inp, oup, kernel_size=3, stride=1, groups=1):
        return T.Sequential(T.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2,
                                     groups=groups, bias=False),
                            T.BatchNorm2d(oup), T.ReLU6())

    class InvertedResidual(T.Module):
        def __init__(self, inp, oup, stride, expand_ratio):
            super().__init__()
            hidden_dim = int(round(inp * expand_ratio))
            self.use_res_connect = stride == 1 and inp == oup
            layers = [conv_bn_act(inp, hidden_dim, 1)] if expand_ratio != 1 else []
            layers += [conv_bn_act(hidden_dim, hidden_dim, 3, stride, hidden_dim),
                       T.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), T.BatchNorm2d(oup)]
            self.conv = T.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(T.Module):
        def __init__(self):
            super().__init__()
            setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                       [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
            input_channel = _make_divisible(32 * width_mult, 8)
            self.last_channel = _make_divisible(1280 * max(1.0, width_mult), 8)
            features = [conv_bn_act(in_channels, input_channel, stride=2)]
            for t, c, n, s in setting:
                output_channel = _make_divisible(c * width_mult, 8)
                for i in range(n):
                    features.append(InvertedResidual(input_channel, output_channel,
                                                      s if i == 0 else 1, t))
                    input_channel = output_channel
            features.append(conv_bn_act(input_channel, self.last_channel, 1))
            self.features = T.Sequential(*features)
            self.classifier = T.Sequential(T.Dropout(p=dropout),
                                           T.Linear(self.last_channel, num_classes))

        def forward(self, x):
            x = T.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2()


# torchvision's cfgs["A"]: output channels of each 3x3 conv, "M" a 2x2 max pool
VGG11_CONFIG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def torch_vgg11(torch, in_channels=3, num_classes=1000, dropout=0.5):
    """torchvision's VGG-11 (no batch norm): features, a 7x7 adaptive average
    pool and the three-layer classifier."""
    T = torch.nn

    class VGG(T.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [], in_channels
            for v in VGG11_CONFIG:
                if v == "M":
                    layers.append(T.MaxPool2d(2, 2))
                else:
                    layers += [T.Conv2d(cin, v, 3, padding=1), T.ReLU()]
                    cin = v
            self.features = T.Sequential(*layers)
            self.avgpool = T.AdaptiveAvgPool2d((7, 7))
            self.classifier = T.Sequential(
                T.Linear(512 * 7 * 7, 4096), T.ReLU(), T.Dropout(dropout),
                T.Linear(4096, 4096), T.ReLU(), T.Dropout(dropout),
                T.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return VGG()


def torch_googlenet(torch, in_channels=3, num_classes=1000, dropout=0.2):
    """torchvision's GoogLeNet with aux_logits=False, transform_input=False:
    BasicConv2d (conv without bias, BatchNorm eps 1e-3, ReLU), Inception's
    branch3 a 3x3 conv as torchvision builds it, ceil_mode max pools."""
    T = torch.nn

    class BasicConv2d(T.Module):
        def __init__(self, cin, cout, **conv_args):
            super().__init__()
            self.conv = T.Conv2d(cin, cout, bias=False, **conv_args)
            self.bn = T.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    class Inception(T.Module):
        def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
            super().__init__()
            self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
            self.branch2 = T.Sequential(BasicConv2d(cin, ch3x3red, kernel_size=1),
                                        BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
            self.branch3 = T.Sequential(BasicConv2d(cin, ch5x5red, kernel_size=1),
                                        BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
            self.branch4 = T.Sequential(T.MaxPool2d(3, 1, 1, ceil_mode=True),
                                        BasicConv2d(cin, pool_proj, kernel_size=1))

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                              self.branch4(x)], 1)

    class GoogLeNet(T.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = T.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = BasicConv2d(64, 64, kernel_size=1)
            self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
            self.maxpool2 = T.MaxPool2d(3, 2, ceil_mode=True)
            self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
            self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
            self.maxpool3 = T.MaxPool2d(3, 2, ceil_mode=True)
            self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
            self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
            self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
            self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
            self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
            self.maxpool4 = T.MaxPool2d(2, 2, ceil_mode=True)
            self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
            self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
            self.avgpool = T.AdaptiveAvgPool2d((1, 1))
            self.dropout = T.Dropout(dropout)
            self.fc = T.Linear(1024, num_classes)

        def forward(self, x):
            for name in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
                         "inception3b", "maxpool3", "inception4a", "inception4b",
                         "inception4c", "inception4d", "inception4e", "maxpool4",
                         "inception5a", "inception5b", "avgpool"):
                x = getattr(self, name)(x)
            return self.fc(self.dropout(torch.flatten(x, 1)))

    return GoogLeNet()
