"""The benchmark shapes, shared by `python -m cnnfast.bench` and bench/ (pytest-benchmark)."""
from typing import NamedTuple


def out_size(sizes, kernel, stride, padding):
    """Output sizes of a square kernel with symmetric padding."""
    return tuple((n + 2 * padding - kernel) // stride + 1 for n in sizes)


class ConvShape(NamedTuple):
    name: str
    N: int
    C: int
    H: int
    W: int
    K: int
    kernel: int
    stride: int
    padding: int

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.C, self.kernel, self.kernel)

    @property
    def out_hw(self):
        return out_size((self.H, self.W), self.kernel, self.stride, self.padding)

    @property
    def flops(self):
        """Forward multiply-adds x 2; the backward pass (input + weight) is twice this."""
        oh, ow = self.out_hw
        return 2 * self.N * self.K * oh * ow * self.C * self.kernel ** 2

    def label(self):
        return (f"{self.name} ({self.N},{self.C},{self.H},{self.W})->{self.K} "
                f"k{self.kernel} s{self.stride} p{self.padding}")


CONV_SHAPES = [
    ConvShape("LeNet c1", 64, 1, 32, 32, 6, 5, 1, 0),
    ConvShape("LeNet c2", 64, 6, 14, 14, 16, 5, 1, 0),
    ConvShape("AlexNet c1", 8, 3, 227, 227, 96, 11, 4, 0),
    ConvShape("VGG 3x3", 8, 64, 56, 56, 64, 3, 1, 1),
    ConvShape("ResNet 3x3", 8, 128, 28, 28, 128, 3, 1, 1),
    ConvShape("stride-2 3x3", 8, 64, 56, 56, 128, 3, 2, 1),
    ConvShape("1x1", 8, 256, 28, 28, 64, 1, 1, 0),
    ConvShape("ResNet 3x3@14", 8, 256, 14, 14, 256, 3, 1, 1),
    ConvShape("1x1@14", 8, 480, 14, 14, 16, 1, 1, 0),
    ConvShape("Inception 5x5", 8, 16, 14, 14, 48, 5, 1, 2),
]

class DepthwiseShape(NamedTuple):
    """A depthwise convolution (groups == C, multiplier 1): x (N, C, H, W),
    square kernel, "same"-style padding (kernel // 2)."""
    name: str
    N: int
    C: int
    H: int
    W: int
    kernel: int
    stride: int

    @property
    def padding(self):
        return self.kernel // 2

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.C, 1, self.kernel, self.kernel)

    @property
    def out_hw(self):
        return out_size((self.H, self.W), self.kernel, self.stride, self.padding)

    @property
    def activation_bytes(self):
        """Bytes a forward must read and write at the least (x and out once, float32)."""
        oh, ow = self.out_hw
        return 4 * self.N * self.C * (self.H * self.W + oh * ow)

    def label(self):
        return (f"{self.name} ({self.N},{self.C},{self.H},{self.W}) dw k{self.kernel} "
                f"s{self.stride}")


# MobileNetV2's depthwise 3x3 layers (torchvision, 224x224 input), batch 1 and 8.
DEPTHWISE_SHAPES = [
    DepthwiseShape(f"MobileNetV2 b{n}", n, c, hw, hw, 3, s)
    for n in (1, 8)
    for c, hw, s in ((32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1),
                     (192, 28, 2), (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1))
]

# Padding modes against zero padding (issue 17: within 10% in the forward).
PADDING_MODE_SHAPES = [
    ConvShape("LeNet c1 pad", 64, 1, 32, 32, 6, 5, 1, 2),
    ConvShape("VGG 3x3", 8, 64, 56, 56, 64, 3, 1, 1),
    ConvShape("stride-2 3x3", 8, 64, 56, 56, 128, 3, 2, 1),
]
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# The shapes whose % of the sgemm peak the conv issue's goals speak about.
BIG_CONV_SHAPES = ("AlexNet c1", "VGG 3x3", "ResNet 3x3", "stride-2 3x3", "ResNet 3x3@14")

CONV_ALGORITHMS = ("auto", "direct", "im2col", "1x1")


class ConvTransposeShape(NamedTuple):
    """A transposed convolution: x (N, C, H, W) -> K channels, square kernel."""
    name: str
    N: int
    C: int
    H: int
    W: int
    K: int
    kernel: int
    stride: int
    padding: int

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.C, self.K, self.kernel, self.kernel)

    @property
    def out_hw(self):
        return tuple((n - 1) * self.stride - 2 * self.padding + self.kernel
                     for n in (self.H, self.W))

    @property
    def flops(self):
        """Forward multiply-adds x 2 (each input times each tap into K channels)."""
        return 2 * self.N * self.C * self.H * self.W * self.K * self.kernel ** 2

    @property
    def conv_equivalent(self):
        """The conv whose input gradient this is: x (N, K, *out) -> C channels."""
        oh, ow = self.out_hw
        return ConvShape(self.name, self.N, self.K, oh, ow, self.C, self.kernel, self.stride,
                         self.padding)

    def label(self):
        return (f"{self.name} ({self.N},{self.C},{self.H},{self.W})->{self.K} "
                f"k{self.kernel} s{self.stride} p{self.padding}")


# The transposed-convolution issue's shapes: the DCGAN generator's layers and
# a U-Net decoder step.
CONV_TRANSPOSE_SHAPES = [
    ConvTransposeShape("DCGAN g1", 64, 512, 4, 4, 256, 4, 2, 1),
    ConvTransposeShape("DCGAN g2", 64, 256, 8, 8, 128, 4, 2, 1),
    ConvTransposeShape("DCGAN g3", 64, 128, 16, 16, 64, 4, 2, 1),
    ConvTransposeShape("DCGAN g4", 64, 64, 32, 32, 3, 4, 2, 1),
    ConvTransposeShape("U-Net up", 8, 256, 28, 28, 128, 2, 2, 0),
]


class PoolShape(NamedTuple):
    name: str
    N: int
    C: int
    H: int
    W: int
    kernel: int
    stride: int
    padding: int

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def is_global(self):
        return self.kernel == 0

    def label(self):
        window = "global" if self.is_global else f"k{self.kernel} s{self.stride} p{self.padding}"
        return f"{self.name} ({self.N},{self.C},{self.H},{self.W}) {window}"


# The pooling issue's shapes: memory-bound, judged against copy bandwidth.
POOL_SHAPES = [
    PoolShape("LeNet", 64, 6, 28, 28, 2, 2, 0),
    PoolShape("AlexNet", 8, 96, 55, 55, 3, 2, 0),
    PoolShape("VGG", 8, 64, 112, 112, 2, 2, 0),
    PoolShape("ResNet stem", 8, 64, 112, 112, 3, 2, 1),
    PoolShape("ResNet head", 8, 512, 7, 7, 0, 0, 0),          # kernel 0: global pooling
]

# (op, pass) rows of the pooling table, for windowed and for global shapes
POOL_OPS = (("max", "forward"), ("max+idx", "forward"), ("max", "backward"),
            ("avg", "forward"), ("avg", "backward"))
GLOBAL_POOL_OPS = (("gmax", "forward"), ("gmax", "backward"), ("gavg", "forward"),
                   ("gavg", "backward"))


def pool_ops(shape):
    return GLOBAL_POOL_OPS if shape.is_global else POOL_OPS


# The Winograd issue's 3x3 stride-1 shapes (padding 1): big layers, the
# batch-1 ResNet-18 layers and two small channel counts.
WINOGRAD_SHAPES = [
    ConvShape("VGG 3x3@56", 8, 64, 56, 56, 64, 3, 1, 1),
    ConvShape("ResNet 3x3@28", 8, 128, 28, 28, 128, 3, 1, 1),
    ConvShape("ResNet 3x3@14", 8, 256, 14, 14, 256, 3, 1, 1),
    ConvShape("ResNet 3x3@7", 8, 512, 7, 7, 512, 3, 1, 1),
    ConvShape("ResNet-18 b1@56", 1, 64, 56, 56, 64, 3, 1, 1),
    ConvShape("ResNet-18 b1@28", 1, 128, 28, 28, 128, 3, 1, 1),
    ConvShape("ResNet-18 b1@14", 1, 256, 14, 14, 256, 3, 1, 1),
    ConvShape("ResNet-18 b1@7", 1, 512, 7, 7, 512, 3, 1, 1),
    ConvShape("3x3 16ch@56", 8, 16, 56, 56, 16, 3, 1, 1),
    ConvShape("3x3 32ch@56", 8, 32, 56, 56, 32, 3, 1, 1),
]
