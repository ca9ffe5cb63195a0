"""cnnfast.optim: SGD (momentum, dampening, nesterov, weight decay) and Adam
against torch.optim, step by step, plus the rules for frozen parameters and
argument validation."""
import numpy as np
import pytest

from cnnfast.nn import Linear, Parameter
from cnnfast.optim import SGD, Adam

SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.8, weight_decay=0.01),
    dict(lr=0.1, momentum=0.9, weight_decay=0.05, nesterov=True),
    dict(lr=0.1, momentum=0.9, dampening=0.3),
]
ADAM_CASES = [
    dict(),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
]


def _run_both(torch, make_ours, make_theirs, rng, steps=4, dtype=np.float64):
    """Apply the same gradient sequence to twin parameters in both libraries."""
    init = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    ours = [Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt, topt = make_ours(ours), make_theirs(theirs)
    for _ in range(steps):
        grads = [rng.standard_normal(a.shape).astype(dtype) for a in init]
        opt.zero_grad()
        topt.zero_grad()
        for p, tp, g in zip(ours, theirs, grads):
            p.accumulate(g.copy())
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            rtol = 1e-12 if dtype == np.float64 else 1e-6
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=rtol, atol=rtol)
            assert p.data.dtype == dtype


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_matches_torch(rng, kwargs):
    torch = pytest.importorskip("torch")
    ours = {k: v for k, v in kwargs.items() if k != "lr"}
    _run_both(torch, lambda ps: SGD(ps, kwargs["lr"], **ours),
              lambda ps: torch.optim.SGD(ps, **kwargs), rng)


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_matches_torch(rng, kwargs):
    torch = pytest.importorskip("torch")
    _run_both(torch, lambda ps: Adam(ps, **kwargs), lambda ps: torch.optim.Adam(ps, **kwargs), rng)


def test_float32_steps_stay_float32(rng):
    torch = pytest.importorskip("torch")
    _run_both(torch, lambda ps: Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01), rng,
              dtype=np.float32)
    _run_both(torch, lambda ps: SGD(ps, 0.1, momentum=0.9, nesterov=True),
              lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True), rng,
              dtype=np.float32)


def test_plain_sgd_rule_without_torch():
    p = Parameter(np.array([1.0, 2.0]))
    opt = SGD([p], 0.5, momentum=0.9, weight_decay=0.1)
    p.accumulate(np.array([1.0, -1.0]))
    opt.step()
    d1 = np.array([1.0, -1.0]) + 0.1 * np.array([1.0, 2.0])   # first step: buf = d
    np.testing.assert_allclose(p.data, [1.0, 2.0] - 0.5 * d1)
    before = p.data.copy()
    opt.step()   # same gradient again: buf = 0.9 * buf + d
    d2 = np.array([1.0, -1.0]) + 0.1 * before
    np.testing.assert_allclose(p.data, before - 0.5 * (0.9 * d1 + d2))


def test_parameters_without_grad_are_skipped():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(3))
    for opt in (SGD([a, b], 0.1, momentum=0.9, weight_decay=1.0), Adam([a, b], weight_decay=1.0)):
        a.accumulate(np.ones(3))
        opt.step()
        np.testing.assert_array_equal(b.data, 1)      # no grad: no decay, no update
        assert b.grad is None
        opt.zero_grad()
        assert a.grad is None


def test_zero_grad_in_place():
    lin = Linear(2, 2)
    opt = SGD(lin.parameters(), 0.1)
    lin.weight.accumulate(np.ones((2, 2), np.float32))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(lin.weight.grad, 0)


@pytest.mark.parametrize("build, arg", [
    (lambda ps: SGD(ps, -0.1), "lr"),
    (lambda ps: SGD(ps, 0.1, momentum=-1), "momentum"),
    (lambda ps: SGD(ps, 0.1, weight_decay=-1), "weight_decay"),
    (lambda ps: SGD(ps, 0.1, nesterov=True), "nesterov"),
    (lambda ps: Adam(ps, lr=-1), "lr"),
    (lambda ps: Adam(ps, betas=(0.9, 1.0)), "betas"),
    (lambda ps: Adam(ps, eps=-1), "eps"),
    (lambda ps: SGD([], 0.1), "params"),
])
def test_bad_arguments(build, arg):
    with pytest.raises(ValueError, match=arg):
        build([Parameter(np.zeros(2))])
    with pytest.raises(TypeError):
        SGD([np.zeros(2)], 0.1)


def _step_both(params, opts, g):
    """One step of each optimizer on its parameter, with gradient g, on two threads."""
    import cnnfast

    for p, opt in zip(params, opts):
        opt.zero_grad()
        p.accumulate(g.copy())
        with cnnfast.num_threads(2):
            opt.step()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_c_update_matches_numpy_rule(rng, kwargs, dtype):
    """The one-pass C update (C-contiguous parameters, spans over two
    threads) against the NumPy expressions of the same rule, which run for
    a parameter the kernel cannot write in place (a Fortran-ordered one)."""
    import cnnfast

    init = rng.standard_normal((300, 257)).astype(dtype)   # > one span of the kernel
    fast = Parameter(init.copy())
    slow = Parameter(init.copy())
    slow.data = np.asfortranarray(slow.data)               # the NumPy path
    lr = kwargs["lr"]
    rest = {k: v for k, v in kwargs.items() if k != "lr"}
    opts = SGD([fast], lr, **rest), SGD([slow], lr, **rest)
    for step in range(3):
        g = rng.standard_normal(init.shape).astype(dtype)
        _step_both((fast, slow), opts, g)
        assert fast.data.flags.c_contiguous and fast.data.dtype == dtype
        tol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(fast.data, slow.data, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_c_update_matches_numpy_rule(rng, kwargs, dtype):
    """Adam's one-pass C update (spans over two threads) against the NumPy
    expressions of the same rule (a Fortran-ordered parameter takes them),
    including a step after loading the optimizer's state dict."""
    init = rng.standard_normal((300, 257)).astype(dtype)   # > one span of the kernel
    fast = Parameter(init.copy())
    slow = Parameter(init.copy())
    slow.data = np.asfortranarray(slow.data)               # the NumPy path
    opts = [Adam([fast], **kwargs), Adam([slow], **kwargs)]
    for step in range(4):
        if step == 2:   # moments from a state dict: fresh C-ordered copies
            opts[0] = Adam([fast], **kwargs)
            opts[0].load_state_dict(opts[1].state_dict())
        g = rng.standard_normal(init.shape).astype(dtype)
        g[0, :3] = [0.0, 1e-30, -1e30 if dtype == np.float64 else -1e18]   # tiny, huge
        _step_both((fast, slow), opts, g)
        assert fast.data.flags.c_contiguous and fast.data.dtype == dtype
        assert opts[0].state_dict()["state"][0]["step"] == step + 1
        tol = 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(fast.data, slow.data, rtol=tol, atol=tol)


def test_adam_c_update_propagates_nan():
    p = Parameter(np.array([1.0, 2.0, 3.0], np.float32))
    opt = Adam([p], lr=0.1)
    p.accumulate(np.array([np.nan, 1.0, np.inf], np.float32))
    opt.step()
    assert np.isnan(p.data[0]) and np.isfinite(p.data[1]) and np.isnan(p.data[2])
