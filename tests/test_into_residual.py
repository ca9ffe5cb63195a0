"""A fused residual block's last convolution storing its output over the
shortcut (FusedConv2d's into_residual, _nhwc.writes_into_residual): the
same bits as into a new array, and only where nobody reads the shortcut
afterwards: never the caller's input, never a block called on its own or
traced, never inside a container that is not a chain."""
import numpy as np
import pytest

import cnnfast
import cnnfast.nn as nn
from cnnfast import models
from cnnfast import _nhwc
from cnnfast._ops.conv import _conv_forward_fused_last
from cnnfast.models.resnet import BasicBlock, Bottleneck, FusedResidualBlock
from cnnfast.nn.fuse import input_is_scratch


def _last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _case(rng, dtype, C, K, H, k=1):
    x = _last(rng.standard_normal((2, C, H, H + 1)).astype(dtype))
    w = (0.3 * rng.standard_normal((K, C, k, k))).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    res = _last(rng.standard_normal((2, K, H, H + 1)).astype(dtype))
    return x, w, b, res


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C,K,k", [(5, 20, 1), (64, 256, 1), (16, 33, 3), (3, 17, 3)])
@pytest.mark.parametrize("threads", [1, 2])
def test_into_residual_same_bits_and_returns_the_residual(rng, dtype, C, K, k, threads):
    x, w, b, res = _case(rng, dtype, C, K, 7, k)
    with cnnfast.num_threads(threads):
        want = _conv_forward_fused_last(2, x, w, b, 1, k // 2, 1, 1, True, res)
        scratch = res.copy()
        got = _conv_forward_fused_last(2, x, w, b, 1, k // 2, 1, 1, True, scratch,
                                       into_residual=True)
    assert got is scratch
    np.testing.assert_array_equal(got, want)


def test_into_residual_keeps_the_residual_when_it_cannot(rng):
    x, w, b, res = _case(rng, np.float32, 8, 16, 5)
    want = _conv_forward_fused_last(2, x, w, b, 1, 0, 1, 1, True, res)
    cases = {
        "read-only": res.copy(),
        "not contiguous": np.asfortranarray(res),
        "other dtype": res.astype(np.float64),
    }
    cases["read-only"].flags.writeable = False
    for what, r in cases.items():
        kept = r.copy()
        if what == "other dtype":   # the call refuses mixed dtypes before any kernel
            with pytest.raises(TypeError):
                _conv_forward_fused_last(2, x, w, b, 1, 0, 1, 1, True, r, into_residual=True)
            continue
        got = _conv_forward_fused_last(2, x, w, b, 1, 0, 1, 1, True, r, into_residual=True)
        assert got is not r, what
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(r, kept)
    # a residual that is the input itself (x would change under the kernel's reads)
    xs, ws, bs, _ = _case(rng, np.float32, 16, 16, 5)
    want = _conv_forward_fused_last(2, xs, ws, bs, 1, 0, 1, 1, True, xs.copy())
    kept = xs.copy()
    got = _conv_forward_fused_last(2, xs, ws, bs, 1, 0, 1, 1, True, xs, into_residual=True)
    assert got is not xs
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(xs, kept)


def test_into_residual_not_with_chunks_of_input_channels(rng, monkeypatch):
    """A 3x3 with many channels passes over them in chunks, each adding to
    what the last stored: the residual there is read at the last chunk,
    so the output goes to a new array. (Chunks of 64 KB of weights: 256
    channels take several at every ISA level's block width.)"""
    monkeypatch.setattr(_nhwc, "WEIGHT_CHUNK_BYTES", 64 * 1024)
    cnnfast._cache.clear()
    x, w, b, res = _case(rng, np.float32, 256, 64, 4, 3)
    block, _ = cnnfast._ext._conv_nhwc.tiles(np.float32)
    assert 9 * 256 * block * 4 > _nhwc.WEIGHT_CHUNK_BYTES
    try:
        want = _conv_forward_fused_last(2, x, w, b, 1, 1, 1, 1, True, res)
        r = res.copy()
        got = _conv_forward_fused_last(2, x, w, b, 1, 1, 1, 1, True, r, into_residual=True)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(r, res)
    finally:
        cnnfast._cache.clear()   # no plan of these chunks outlives the test


def _no_scratch(fused):
    """fused with every block storing into a new array."""
    for m in fused.modules():
        if isinstance(m, FusedResidualBlock):
            m._own_shortcut = False
            m.consumes_input = False
    return fused


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_resnet_bits_and_the_callers_input(rng, monkeypatch, name, data_format):
    stored_over = []
    run = _nhwc.run

    def counted(*args):
        stored_over.append(args[7])
        return run(*args)

    monkeypatch.setattr(_nhwc, "run", counted)
    nn.manual_seed(0)
    model = models.MODELS[name](num_classes=5, data_format=data_format).eval()
    x = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
    if data_format == "channels_last":
        x = _last(x)
    kept = x.copy()
    fused, plain = model.fuse(), _no_scratch(model.fuse())
    marked = [m.consumes_input for m in fused.modules() if isinstance(m, FusedResidualBlock)]
    assert marked and all(marked)
    for _ in range(4):   # normal, recorded and replayed runs
        np.testing.assert_array_equal(fused(x), plain(x))
        np.testing.assert_array_equal(x, kept)
    # ResNet-50's 16 blocks end in a 1x1 (one pass over its channels): each
    # stores over its shortcut in every normal run (the later runs are
    # replays, which call the driver directly). ResNet-18's 3x3s do where
    # the plan gives them one pass over the channels (the AVX2 and baseline
    # kernels' smaller blocks), not on Winograd or in chunks.
    if name == "resnet50":
        assert sum(stored_over) >= 16 and sum(stored_over) % 16 == 0


def test_a_block_called_on_its_own_keeps_its_input(rng):
    nn.manual_seed(0)
    model = models.resnet50(num_classes=5, data_format="channels_last").eval()
    fused = model.fuse()
    block = fused.module.layer1[1]   # identity shortcut
    x = np.maximum(rng.standard_normal((1, 8, 8, 256)), 0).astype(np.float32)
    kept = x.copy()
    y = block(x)
    np.testing.assert_array_equal(x, kept)
    assert not np.may_share_memory(x, y)
    assert not input_is_scratch(block, x)
    # and through the features the fused model hands out (not its own call)
    img = _last(rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    a = fused.forward_features(img)
    np.testing.assert_array_equal(a, fused.forward_features(img))


class _ReusesItsInput(nn.Module):
    """Not a chain: the Sequential's input is read again after it."""

    def __init__(self, block):
        super().__init__()
        self.body = nn.Sequential(block)

    def forward(self, x):
        return self.body(x) + 2 * x


@pytest.mark.parametrize("block", [lambda: BasicBlock(16, 16),
                                   lambda: Bottleneck(64, 16)])
def test_blocks_below_a_module_that_is_not_a_chain(rng, block):
    nn.manual_seed(0)
    model = _ReusesItsInput(block())
    nn.container.set_data_format(model, "channels_last")
    model.eval()
    C = model.body[0].conv1.weight.shape[1]
    x = _last(rng.standard_normal((2, C, 9, 9)).astype(np.float32))
    want = model(x)
    fused = model.fuse()
    assert not fused.module.body[0].consumes_input
    for _ in range(4):
        np.testing.assert_allclose(fused(x), want, rtol=1e-4, atol=1e-4)


def test_chain_of_blocks_reads_scratch_after_a_view(rng):
    """A chain [block, block] whose model input reaches the first block
    directly: that block must not write over the caller's array."""
    nn.manual_seed(0)
    model = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
    nn.container.set_data_format(model, "channels_last")
    model.eval()
    x = _last(rng.standard_normal((2, 8, 6, 6)).astype(np.float32))
    kept = x.copy()
    want = model(x)
    fused = model.fuse()
    for _ in range(4):
        np.testing.assert_allclose(fused(x), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(x, kept)
    # a view of the caller's array is the caller's array too
    view = x[:, :, :, :]
    fused(view)
    np.testing.assert_array_equal(x, kept)
