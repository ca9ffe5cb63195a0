"""Benchmarks of cnnfast's kernels against cnnfast.reference and PyTorch CPU,
with the machine's own limits (sgemm GFLOP/s) measured in the same run."""
from .shapes import BIG_CONV_SHAPES, CONV_ALGORITHMS, CONV_SHAPES, ConvShape

__all__ = ["CONV_SHAPES", "BIG_CONV_SHAPES", "CONV_ALGORITHMS", "ConvShape"]
