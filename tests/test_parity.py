"""Other torch parity (issue 17): adaptive pooling in 1-D and 3-D,
CrossEntropyLoss(weight, ignore_index, reduction, label_smoothing) with
(N, C, *d) logits and probability targets, BatchNorm2d(bias=False), and any
nonzero divisor_override. Oracles: cnnfast.reference, torch (optional),
finite differences in float64."""
import itertools

import numpy as np
import pytest

import cnnfast
from cnnfast import functional as F, nn, reference as R
from helpers import numeric_gradient, tolerance

# ------------------------------------------------------ adaptive pooling

ADAPTIVE_CASES = {1: [((13,), (4,)), ((5,), (5,)), ((3,), (7,)), ((9,), (1,))],
                  3: [((5, 6, 7), (2, 3, 4)), ((4, 4, 4), (4, 1, 3)), ((3, 2, 5), (5, 3, 2)),
                      ((6, 5, 4), (1, 1, 1))]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nd", [1, 3])
def test_adaptive_pool_matches_reference_and_torch(nd, dtype):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    rng = np.random.default_rng(nd)
    for (size, out), n in itertools.product(ADAPTIVE_CASES[nd], (0, 1, 3)):
        x = rng.standard_normal((n, 2) + size).astype(dtype)
        for mod in (F, R):
            avg = getattr(mod, f"adaptive_avg_pool{nd}d")(x, out)
            y, idx = getattr(mod, f"adaptive_max_pool{nd}d")(x, out, return_indices=True)
            assert avg.shape == y.shape == idx.shape == (n, 2) + out
            assert avg.dtype == y.dtype == dtype and idx.dtype == np.int64
            xt = torch.tensor(x)
            np.testing.assert_allclose(avg, getattr(tF, f"adaptive_avg_pool{nd}d")(xt, out),
                                       atol=tolerance(dtype, np.prod(size)), rtol=0)
            ty, tidx = getattr(tF, f"adaptive_max_pool{nd}d")(xt, out, return_indices=True)
            np.testing.assert_array_equal(y, ty.numpy())
            np.testing.assert_array_equal(idx, tidx.numpy())
            go = rng.standard_normal(y.shape).astype(dtype)
            gmax = getattr(mod, f"adaptive_max_pool{nd}d_backward")(go, idx, x.shape)
            gavg = getattr(mod, f"adaptive_avg_pool{nd}d_backward")(go, x.shape)
            xt.requires_grad_(True)
            (getattr(tF, f"adaptive_max_pool{nd}d")(xt, out) * torch.tensor(go)).sum().backward()
            np.testing.assert_allclose(gmax, xt.grad.numpy(), atol=tolerance(dtype, 8), rtol=0)
            xt.grad = None
            (getattr(tF, f"adaptive_avg_pool{nd}d")(xt, out) * torch.tensor(go)).sum().backward()
            np.testing.assert_allclose(gavg, xt.grad.numpy(), atol=tolerance(dtype, 8), rtol=0)


def test_adaptive_pool3d_ties_nan_and_layouts():
    x = np.zeros((1, 1, 3, 4, 4))
    x[0, 0, 1, 2, 3] = np.nan
    x[0, 0, 2, 0, 0] = np.nan
    y, idx = F.adaptive_max_pool3d(x, 1, return_indices=True)
    ry, ridx = R.adaptive_max_pool3d(x, 1, return_indices=True)
    assert np.isnan(y).all() and np.isnan(ry).all()
    assert idx.item() == ridx.item() and np.isnan(x.reshape(-1)[idx.item()])
    ties = np.ones((2, 3, 4, 5, 6), dtype=np.float32)
    np.testing.assert_array_equal(F.adaptive_max_pool3d(ties, (2, 2, 3), True)[1],
                                  R.adaptive_max_pool3d(ties, (2, 2, 3), True)[1])
    base = np.random.default_rng(0).standard_normal((2, 3, 5, 6, 7))
    want = F.adaptive_avg_pool3d(base, (2, None, 3))
    assert want.shape == (2, 3, 2, 6, 3)
    for layout in (np.asfortranarray(base), base[..., ::-1][..., ::-1], base.astype(">f8")):
        np.testing.assert_array_equal(F.adaptive_avg_pool3d(layout, (2, None, 3)), want)


def test_adaptive_avg_pool_backward_finite_differences():
    rng = np.random.default_rng(2)
    for nd, size, out in ((1, (7,), (3,)), (3, (3, 4, 5), (2, 3, 2))):
        x = rng.standard_normal((1, 2) + size)
        go = rng.standard_normal((1, 2) + out)
        op = getattr(F, f"adaptive_avg_pool{nd}d")
        g = getattr(F, f"adaptive_avg_pool{nd}d_backward")(go, x.shape)
        np.testing.assert_allclose(g, numeric_gradient(lambda: float((op(x, out) * go).sum()),
                                                       x), atol=1e-8)


@pytest.mark.parametrize("mod", [F, R], ids=["functional", "reference"])
def test_adaptive_pool_validation(mod):
    x1, x3 = np.zeros((1, 2, 5)), np.zeros((1, 2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"x must be a 3-D array \(N, C, L\) for "
                                         r"adaptive_avg_pool1d"):
        mod.adaptive_avg_pool1d(x3, 2)
    with pytest.raises(ValueError, match=r"output_size must be an int or a tuple of 3"):
        mod.adaptive_max_pool3d(x3, (1, 2))
    with pytest.raises(ValueError, match=r"output_size must be positive"):
        mod.adaptive_avg_pool1d(x1, 0)
    with pytest.raises(TypeError, match=r"indices must be int64"):
        mod.adaptive_max_pool1d_backward(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), np.int32),
                                         x1.shape)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 60\)"):
        mod.adaptive_max_pool3d_backward(np.zeros((1, 2, 1, 1, 1)),
                                         np.full((1, 2, 1, 1, 1), 60, np.int64), x3.shape)
    with pytest.raises(ValueError, match=r"grad_out has shape \(1, 2, 2\), expected \(N, C\) "
                                         r"= \(1, 2\) followed by 3 positive output sizes"):
        mod.adaptive_avg_pool3d_backward(np.zeros((1, 2, 2)), x3.shape)
    with pytest.raises(TypeError, match="common|float32 or float64"):
        mod.adaptive_avg_pool3d(x3.astype(np.int64), 1)


def test_adaptive_layers():
    rng = np.random.default_rng(0)
    for layer, x, out in ((nn.AdaptiveAvgPool1d(3), rng.standard_normal((2, 3, 8)), (3,)),
                          (nn.AdaptiveMaxPool3d((2, None, 1)),
                           rng.standard_normal((2, 3, 4, 5, 6)), (2, 5, 1)),
                          (nn.AdaptiveMaxPool1d(4, return_indices=True),
                           rng.standard_normal((1, 2, 9)), (4,)),
                          (nn.AdaptiveAvgPool3d(2), rng.standard_normal((1, 1, 3, 3, 3)),
                           (2, 2, 2))):
        y = layer(x)
        y = y[0] if isinstance(y, tuple) else y
        assert y.shape == x.shape[:2] + out
        go = rng.standard_normal(y.shape)
        gx = layer.backward(go)
        nd = x.ndim - 2
        if isinstance(layer, nn.AdaptiveAvgPool1d) or isinstance(layer, nn.AdaptiveAvgPool3d):
            want = getattr(F, f"adaptive_avg_pool{nd}d_backward")(go, x.shape)
        else:
            _, idx = getattr(F, f"adaptive_max_pool{nd}d")(x, out, return_indices=True)
            want = getattr(F, f"adaptive_max_pool{nd}d_backward")(go, idx, x.shape)
        np.testing.assert_array_equal(gx, want)
    with pytest.raises(ValueError, match="output_size"):
        nn.AdaptiveAvgPool3d((1, 2))
    with pytest.raises(ValueError, match=r"expects x of shape \(N, C, L\)"):
        nn.AdaptiveAvgPool1d(2)(np.zeros((1, 2, 3, 4)))
    assert callable(cnnfast.adaptive_max_pool3d_backward)
    assert "adaptive_avg_pool1d" in cnnfast.__all__


# ------------------------------------------------------- cross-entropy

def _torch_ce(torch, logits, target, **kw):
    z = torch.tensor(logits, requires_grad=True)
    t = torch.tensor(target)
    if "weight" in kw and kw["weight"] is not None:
        kw["weight"] = torch.tensor(kw["weight"])
    loss = torch.nn.functional.cross_entropy(z, t, **kw)
    return z, loss


CE_CASES = [
    dict(),
    dict(label_smoothing=0.2),
    dict(weight="w"),
    dict(weight="w", label_smoothing=0.3),
    dict(ignore_index=1),
    dict(weight="w", ignore_index=2, label_smoothing=0.1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", range(len(CE_CASES)))
@pytest.mark.parametrize("spatial", [(), (3,), (2, 3)])
def test_cross_entropy_class_indices_match_torch(spatial, case, reduction, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(case)
    C = 4
    logits = (3 * rng.standard_normal((5, C) + spatial)).astype(dtype)
    target = rng.integers(0, C, (5,) + spatial)
    kw = dict(CE_CASES[case])
    if kw.get("weight") == "w":
        kw["weight"] = rng.uniform(0.2, 2.0, C).astype(dtype)
    loss = nn.CrossEntropyLoss(reduction=reduction, **kw)
    value = loss(logits, target)
    z, tl = _torch_ce(torch, logits, target, reduction=reduction, **kw)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    if reduction == "none":
        assert isinstance(value, np.ndarray) and value.shape == (5,) + spatial
        np.testing.assert_allclose(value, tl.detach().numpy(), atol=tol, rtol=tol)
        grad = rng.standard_normal(value.shape).astype(dtype)
        tl.backward(torch.tensor(grad))
        np.testing.assert_allclose(loss.backward(grad), z.grad.numpy(), atol=tol, rtol=tol)
        z.grad = None
        z2, tl2 = _torch_ce(torch, logits, target, reduction="none", **kw)
        tl2.sum().backward()
        np.testing.assert_allclose(loss.backward(), z2.grad.numpy(), atol=tol, rtol=tol)
    else:
        assert isinstance(value, float)
        np.testing.assert_allclose(value, tl.item(), atol=tol, rtol=tol)
        tl.backward()
        g = loss.backward()
        assert g.shape == logits.shape and g.dtype == dtype
        np.testing.assert_allclose(g, z.grad.numpy(), atol=tol, rtol=tol)
        np.testing.assert_allclose(loss.backward(2.5), 2.5 * z.grad.numpy(), atol=tol,
                                   rtol=tol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kw", [dict(), dict(label_smoothing=0.25),
                                dict(weight=np.array([0.5, 1.0, 2.0]), label_smoothing=0.1)])
def test_cross_entropy_probability_targets_match_torch(reduction, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 3, 2))
    target = rng.dirichlet(np.ones(3), (4, 2)).transpose(0, 2, 1).copy()
    loss = nn.CrossEntropyLoss(reduction=reduction, **kw)
    value = loss(logits, target)
    z, tl = _torch_ce(torch, logits, target, reduction=reduction, **kw)
    np.testing.assert_allclose(value, tl.detach().numpy(), atol=1e-12)
    (tl if reduction != "none" else tl.sum()).backward()
    np.testing.assert_allclose(loss.backward(), z.grad.numpy(), atol=1e-12)


def test_cross_entropy_finite_differences():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 4, 2))
    target = np.array([[0, 3], [-100, 1], [2, 2]])
    for kw in (dict(), dict(weight=np.array([1.0, 0.5, 2.0, 1.5]), label_smoothing=0.2),
               dict(reduction="sum", label_smoothing=0.4)):
        loss = nn.CrossEntropyLoss(**kw)
        loss(logits, target)
        g = loss.backward()
        np.testing.assert_allclose(
            g, numeric_gradient(lambda: nn.CrossEntropyLoss(**kw)(logits, target), logits),
            atol=1e-8)
    loss = nn.CrossEntropyLoss(reduction="none", label_smoothing=0.1)
    go = rng.standard_normal((3, 2))
    loss(logits, target)
    np.testing.assert_allclose(
        loss.backward(go),
        numeric_gradient(lambda: float((loss(logits, target) * go).sum()), logits), atol=1e-8)


def test_cross_entropy_empty_and_all_ignored():
    torch = pytest.importorskip("torch")
    empty, labels = np.zeros((0, 5)), np.zeros((0,), np.int64)
    assert nn.CrossEntropyLoss(reduction="sum")(empty, labels) == 0.0
    assert np.isnan(nn.CrossEntropyLoss()(empty, labels))
    loss = nn.CrossEntropyLoss(reduction="none")
    assert loss(empty, labels).shape == (0,) and loss.backward().shape == (0, 5)
    loss = nn.CrossEntropyLoss(reduction="sum")
    loss(empty, labels)
    assert loss.backward().shape == (0, 5)
    ignored = np.array([-100, -100])
    logits = np.ones((2, 3))
    want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(ignored))
    assert np.isnan(nn.CrossEntropyLoss()(logits, ignored)) and np.isnan(want.item())
    assert nn.CrossEntropyLoss(reduction="sum")(logits, ignored) == 0.0


def test_cross_entropy_validation():
    logits = np.zeros((2, 3))
    for kw, exc, what in [(dict(reduction="max"), ValueError, "reduction"),
                          (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
                          (dict(ignore_index=1.0), TypeError, "ignore_index"),
                          (dict(weight=np.ones((3, 1))), ValueError, "weight"),
                          (dict(weight=[1, 2, 3]), TypeError, "weight")]:
        with pytest.raises(exc, match=what):
            nn.CrossEntropyLoss(**kw)
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"class indices outside \[0, 3\)"):
        loss(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"class-index target must have shape \(2,\)"):
        loss(logits, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="probability targets must have the logits' shape"):
        loss(logits, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"weight has shape \(2,\), expected \(3,\)"):
        nn.CrossEntropyLoss(weight=np.ones(2))(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="logits must have shape"):
        loss(np.zeros(3), np.array(0))
    loss(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="grad_out must be a scalar"):
        loss.backward(np.ones(2))
    loss = nn.CrossEntropyLoss(reduction="none")
    loss(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"grad_out must have the loss's shape \(2,\)"):
        loss.backward(np.ones(3))


# ------------------------------------------------ BatchNorm2d(bias=False)

def test_batchnorm_without_bias_matches_torch():
    torch = pytest.importorskip("torch")
    bn = nn.BatchNorm2d(3, bias=False, dtype=np.float64)
    assert bn.bias is None and "bias" not in bn.state_dict()
    assert [n for n, _ in bn.named_parameters()] == ["weight"]
    tbn = torch.nn.BatchNorm2d(3, bias=False, dtype=torch.float64)
    assert set(bn.state_dict()) | {"num_batches_tracked"} == set(tbn.state_dict())
    rng = np.random.default_rng(0)
    bn.weight.data[:] = tbn.weight.data.numpy()[:] = rng.uniform(0.5, 2, 3)
    x = rng.standard_normal((4, 3, 5, 5))
    xt = torch.tensor(x, requires_grad=True)
    y, yt = bn(x), tbn(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
    go = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(go))
    np.testing.assert_allclose(bn.backward(go), xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(bn.weight.grad, tbn.weight.grad.numpy(), atol=1e-12)
    bn.eval(), tbn.eval()
    np.testing.assert_allclose(bn(x), tbn(torch.tensor(x)).detach().numpy(), atol=1e-12)
    assert "bias=False" in repr(bn)
    with pytest.raises(TypeError, match="bias must be a bool"):
        nn.BatchNorm2d(3, bias="no")
    assert nn.BatchNorm2d(3).bias is not None


# ------------------------------------------------------ divisor_override

@pytest.mark.parametrize("nd", [2, 3])   # torch's avg_pool1d has no divisor_override
@pytest.mark.parametrize("divisor", [-3, -1, 1, 7])
def test_divisor_override_any_nonzero_matches_torch(nd, divisor):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((2, 3) + (7,) * nd)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, f"avg_pool{nd}d")(xt, 3, 2, 1, True,
                                                       divisor_override=divisor)
    for mod in (F, R):
        y = getattr(mod, f"avg_pool{nd}d")(x, 3, 2, 1, True, divisor_override=divisor)
        np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
    go = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(go))
    for mod in (F, R):
        g = getattr(mod, f"avg_pool{nd}d_backward")(go, x.shape, 3, 2, 1, True,
                                                    divisor_override=divisor)
        np.testing.assert_allclose(g, xt.grad.numpy(), atol=1e-12)


def test_divisor_override_1d_and_layer():
    x = np.random.default_rng(0).standard_normal((1, 2, 9))
    np.testing.assert_allclose(F.avg_pool1d(x, 3, divisor_override=-2),
                               F.avg_pool1d(x, 3) * 3 / -2, atol=1e-12)
    layer = nn.AvgPool2d(2, divisor_override=-4)
    x2 = np.ones((1, 1, 4, 4), np.float32)
    np.testing.assert_array_equal(layer(x2), -np.ones((1, 1, 2, 2), np.float32))
    for bad, exc in [(0, ValueError), (1.5, TypeError), (2 ** 40, ValueError)]:
        with pytest.raises(exc, match="divisor_override"):
            nn.AvgPool2d(2, divisor_override=bad)
        with pytest.raises(exc, match="divisor_override"):
            F.avg_pool2d(x2, 2, divisor_override=bad)
