"""The fused inverted-residual block as one driver call
(cnnfast._inverted_residual, _ext/_block.pyx): bit for bit what its three
layers compute one by one, for any shape, band, partition, thread count and
dtype; explain_model shows the call the run makes."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import cnnfast
import cnnfast.nn as nn
from cnnfast import _inverted_residual as IR
from cnnfast import _plan, models
from cnnfast.models.mobilenet import FusedInvertedResidual


def _block(inp, oup, stride, t, dtype, rng):
    nn.manual_seed(1)
    b = models.InvertedResidual(inp, oup, stride, t, dtype=dtype)
    for m in b.modules():   # BatchNorm statistics of a trained block
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[...] = rng.standard_normal(m.running_mean.shape) * 0.1
            m.running_var[...] = rng.uniform(0.5, 2.0, m.running_var.shape)
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.weight.shape)
            m.bias.data[...] = rng.standard_normal(m.bias.shape) * 0.1
    return b.eval()


def _layers_only(monkeypatch):
    monkeypatch.setattr(_plan, "inverted_residual_wins", lambda *a: False)


def _calls(monkeypatch):
    """Count the block driver's calls."""
    from cnnfast._ext import _block
    seen = []
    real = _block.forward

    def counting(*args, **kwargs):
        seen.append(args[8])   # the output's shape
        return real(*args, **kwargs)
    monkeypatch.setattr(_block, "forward", counting)
    return seen


CASES = [
    # inp, oup, stride, expansion, H, W
    (16, 16, 1, 6, 9, 7),      # residual, odd sizes
    (16, 24, 2, 6, 13, 11),    # stride 2, odd sizes
    (24, 24, 1, 4, 5, 5),      # residual on a small plane
    (10, 16, 1, 3, 8, 6),      # 30 expanded channels: part of a vector
    (16, 32, 2, 6, 6, 9),      # stride 2, even height
    (16, 16, 1, 2, 1, 1),      # one pixel
    (32, 16, 1, 1, 10, 7),     # no expansion (MobileNetV2's first block)
    (16, 16, 2, 1, 7, 9),      # no expansion, stride 2
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_block_equals_its_layers(rng, monkeypatch, dtype, case, threads):
    inp, oup, stride, t, H, W = case
    block = _block(inp, oup, stride, t, dtype, rng)
    fused = block.fuse()
    assert isinstance(fused.module, FusedInvertedResidual)
    x = rng.standard_normal((2, inp, H, W)).astype(dtype)
    want_eval = block(x)
    with cnnfast.num_threads(threads):
        seen = _calls(monkeypatch)
        got = [fused(x) for _ in range(3)]   # the third call replays the recorded run
        assert len(seen) >= 2, "the block did not run as one call"
        _layers_only(monkeypatch)
        want = block.fuse()(x)
    for g in got:
        np.testing.assert_array_equal(g, want)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got[0], want_eval, rtol=tol, atol=tol * np.abs(want_eval).max())


@pytest.mark.parametrize("band_bytes", [1, 3000, 1 << 20])
@pytest.mark.parametrize("batch", [0, 1, 3])
def test_bands_and_items(rng, monkeypatch, band_bytes, batch):
    """One output row per band (the ring of KH rows wraps every row), a few
    rows, the whole image; items of a few rows at 3 threads."""
    monkeypatch.setattr(IR, "BAND_BYTES", band_bytes)
    block = _block(16, 16, 1, 6, np.float32, rng)
    block2 = _block(16, 24, 2, 6, np.float32, rng)
    for b, (H, W) in ((block, (17, 5)), (block2, (15, 8))):
        x = rng.standard_normal((batch, 16, H, W)).astype(np.float32)
        with cnnfast.num_threads(3):
            got = b.fuse()(x)
            with monkeypatch.context() as m:
                _layers_only(m)
                want = b.fuse()(x)
        np.testing.assert_array_equal(got, want)
        assert got.shape[0] == batch


def test_configure_fits_the_budget():
    """The ring and the band buffer within BAND_BYTES (or one row); one item
    per thread for a single image, one per image for a batch."""
    from cnnfast._ops.inverted_residual import block_geometries
    rng = np.random.default_rng(0)
    block = _block(24, 24, 1, 6, np.float32, rng).fuse().module
    layers = block._block_layers()
    x = np.zeros((1, 56, 56, 24), np.float32)
    geoms = block_geometries(x, *layers)
    cfg = IR.configure(*geoms, threads=2)
    row = 56 * 144 * 4
    assert cfg.ring == cfg.band + 2
    assert cfg.ring * row + cfg.band * row <= IR.BAND_BYTES
    assert cfg.items == 2 and cfg.rows_per_item == 28
    big = IR.configure(*block_geometries(np.zeros((8, 56, 56, 24), np.float32), *layers), 2)
    assert big.items == 8 and big.rows_per_item == 56


def test_non_finite_inputs_match(rng, monkeypatch):
    block = _block(16, 16, 1, 6, np.float32, rng)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    x[0, 3, 4, 4] = np.nan
    x[0, 5, 0, 8] = np.inf
    got = block.fuse()(x)
    _layers_only(monkeypatch)
    want = block.fuse()(x)
    np.testing.assert_array_equal(got, want)   # NaN where the layers give NaN
    assert np.isnan(got).any()


def test_narrow_projection_runs_layer_by_layer(rng, monkeypatch):
    """8 output channels have no NHWC kernel at float32: the layers run."""
    block = _block(8, 8, 1, 2, np.float32, rng)
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    seen = _calls(monkeypatch)
    got = block.fuse()(x)
    assert seen == []
    np.testing.assert_allclose(got, block(x), rtol=1e-4, atol=1e-4 * np.abs(got).max())


def test_channels_last_block_and_bad_input(rng):
    block = _block(16, 24, 2, 6, np.float32, rng)
    last = nn.container.set_data_format(copy.deepcopy(block), "channels_last").fuse()
    x = rng.standard_normal((2, 16, 11, 10)).astype(np.float32)
    np.testing.assert_array_equal(last(np.ascontiguousarray(x.transpose(0, 2, 3, 1))),
                                  block.fuse()(x).transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="channels"):
        last(np.zeros((1, 11, 10, 15), np.float32))   # 15 channels, the block takes 16


def test_mobilenet_runs_its_blocks_as_one_call(monkeypatch):
    """Every block is one call; explain_model says so,
    with the call's threads and work array."""
    nn.manual_seed(0)
    model = models.mobilenet_v2(num_classes=10).eval()
    fused = model.fuse()
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    seen = _calls(monkeypatch)
    got = fused(x)
    assert len(seen) == 17   # features.1 to features.17
    plan = cnnfast.explain_model(fused, x.shape)
    rows = [r for r in plan.rows if r.passes["forward"].kernel == "inverted_residual_block"]
    assert len(rows) == 2 + 16 * 3 and all("one driver call" in r.note for r in rows)
    assert rows[0].workspace_bytes > 0
    np.testing.assert_allclose(got, model(x), rtol=2e-4, atol=2e-4 * np.abs(got).max())
