"""Features built separately meet here: channels-last with the 1-D/3-D adaptive pools,
the 1-D/3-D pooling layers and padding modes; Winograd with padding modes; fuse() on a
channels-last model. Each is checked against the combination's plain counterpart."""
import numpy as np
import pytest

import cnnfast
from cnnfast import models, nn

DTYPES = [np.float32, np.float64]


def _last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _first(a):
    return np.moveaxis(a, -1, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_adaptive_pools_channels_last(nd, dtype):
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((2, 5) + (7,) * nd).astype(dtype)
    xl = _last(x)
    avg = getattr(cnnfast, f"adaptive_avg_pool{nd}d")
    y = avg(x, 3)
    yl = avg(xl, 3, data_format="channels_last")
    np.testing.assert_allclose(_first(yl), y, rtol=1e-6)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(dtype)
    back = getattr(cnnfast, f"adaptive_avg_pool{nd}d_backward")
    np.testing.assert_allclose(
        _first(back(_last(g), xl.shape, data_format="channels_last")), back(g, x.shape),
        rtol=1e-6)
    mx = getattr(cnnfast, f"adaptive_max_pool{nd}d")
    y, idx = mx(x, 3, return_indices=True)
    yl, idxl = mx(xl, 3, return_indices=True, data_format="channels_last")
    np.testing.assert_array_equal(_first(yl), y)
    np.testing.assert_array_equal(_first(idxl), idx)
    mback = getattr(cnnfast, f"adaptive_max_pool{nd}d_backward")
    np.testing.assert_array_equal(
        _first(mback(_last(g), idxl, xl.shape, data_format="channels_last")),
        mback(g, idx, x.shape))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_pooling_layers_channels_last(nd):
    rng = np.random.default_rng(10 + nd)
    x = rng.standard_normal((2, 4) + (6,) * nd)
    for name, args in ((f"MaxPool{nd}d", (2,)), (f"AvgPool{nd}d", (2,)),
                       (f"AdaptiveAvgPool{nd}d", (3,)), (f"AdaptiveMaxPool{nd}d", (3,))):
        first = getattr(nn, name)(*args).train()
        last = getattr(nn, name)(*args, data_format="channels_last").train()
        y = first(x)
        np.testing.assert_allclose(_first(last(_last(x))), y, rtol=1e-12, err_msg=name)
        g = rng.standard_normal(y.shape)
        np.testing.assert_allclose(_first(last.backward(_last(g))), first.backward(g),
                                   rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
def test_padding_modes_channels_last(mode, algorithm, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    kw = dict(padding=((1, 2), (2, 1)), padding_mode=mode, algorithm=algorithm)
    y = cnnfast.conv2d(x, w, **kw)
    yl = cnnfast.conv2d(_last(x), w, data_format="channels_last", **kw)
    np.testing.assert_allclose(_first(yl), y, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = cnnfast.conv2d_backward(g, x, w, **kw)
    gxl, gwl, gbl = cnnfast.conv2d_backward(_last(g), _last(x), w,
                                            data_format="channels_last", **kw)
    np.testing.assert_allclose(_first(gxl), gx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gwl, gw, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gbl, gb, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_winograd_with_padding_modes_equals_direct(mode):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 32, 9, 11))
    w = rng.standard_normal((32, 32, 3, 3))
    kw = dict(padding=1, padding_mode=mode)
    y = cnnfast.conv2d(x, w, algorithm="winograd", **kw)
    np.testing.assert_allclose(y, cnnfast.conv2d(x, w, algorithm="direct", **kw),
                               rtol=1e-10, atol=1e-10)
    g = rng.standard_normal(y.shape)
    for a, b in zip(cnnfast.conv2d_backward(g, x, w, algorithm="winograd", **kw),
                    cnnfast.conv2d_backward(g, x, w, algorithm="direct", **kw)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)


def test_fused_channels_last_resnet_equals_unfused():
    nn.manual_seed(0)
    model = models.resnet18(num_classes=10, data_format="channels_last").eval()
    x = np.random.default_rng(4).standard_normal((2, 32, 32, 3)).astype(np.float32)
    expect = model(x)
    np.testing.assert_allclose(model.fuse()(x), expect, rtol=1e-4, atol=1e-4)


def test_fused_winograd_layer_applies_relu():
    # 64 channels at 28x28: auto picks Winograd for this layer (cnnfast._plan.winograd_wins)
    rng = np.random.default_rng(5)
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(64).eval()
    bn.running_mean[...] = rng.standard_normal(64).astype(np.float32)
    block = nn.Sequential(conv, bn, nn.ReLU()).eval()
    x = rng.standard_normal((4, 64, 28, 28)).astype(np.float32)
    plan = cnnfast.explain_conv(x.shape, conv.weight.data.shape, padding=1, need=("forward",))
    assert plan.passes["forward"].algorithm == "winograd"
    np.testing.assert_allclose(block.fuse()(x), block(x), rtol=1e-4, atol=1e-4)
