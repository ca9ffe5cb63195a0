"""No lost work: optimizers' state_dict/load_state_dict (against torch's),
cnnfast.save's atomic writes (a failure mid-write keeps the old file, a
killed writer's temporary is cleaned up) and the metadata stored beside the
weights."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnfast
from cnnfast import io, nn, optim


def _model(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def _steps(model, opt, n, seed):
    rng = np.random.default_rng(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(n):
        x = rng.standard_normal((6, 4)).astype(np.float32)
        loss_fn(model(x), rng.integers(0, 3, 6))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()


@pytest.mark.parametrize("make", [
    lambda p, lr: optim.SGD(p, lr, momentum=0.9, weight_decay=1e-3, nesterov=True),
    lambda p, lr: optim.SGD(p, lr),
    lambda p, lr: optim.Adam(p, lr, betas=(0.8, 0.99), weight_decay=1e-2),
])
def test_state_round_trip_continues_the_same_trajectory(make):
    a = _model()
    opt_a = make(a.parameters(), 0.05)
    _steps(a, opt_a, 3, seed=1)
    saved_model, saved_opt = a.state_dict(), opt_a.state_dict()
    _steps(a, opt_a, 2, seed=2)                        # the uninterrupted run

    b = _model(seed=99)                                # other initial values
    b.load_state_dict(saved_model)
    opt_b = make(b.parameters(), 123.0)                # other lr: the loaded one wins
    opt_b.load_state_dict(saved_opt)
    assert opt_b.lr == 0.05
    _steps(b, opt_b, 2, seed=2)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(va, vb, err_msg=k)
    # the state dict is a copy: stepping does not change it
    again = opt_a.state_dict()
    for i, entry in saved_opt["state"].items():
        for name, value in entry.items():
            if isinstance(value, np.ndarray):
                assert not np.array_equal(value, again["state"][i][name])


def test_torch_optimizer_state_loads_and_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.Adam([tw], lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    for g in grads[:3]:
        tw.grad = torch.tensor(g)
        topt.step()
    sd = topt.state_dict()
    converted = {
        "state": {i: {k: v.numpy() for k, v in s.items()} for i, s in sd["state"].items()},
        "param_groups": sd["param_groups"],
    }
    p = nn.Parameter(tw.detach().numpy().copy())
    ours = optim.Adam([p], lr=1.0)
    ours.load_state_dict(converted)
    assert ours.betas == (0.9, 0.99) and ours.weight_decay == 0.1 and ours.state[0]["step"] == 3
    for g in grads[3:]:
        tw.grad = torch.tensor(g)
        topt.step()
        p.grad = g.copy()
        ours.step()
    np.testing.assert_allclose(p.data, tw.detach().numpy(), rtol=1e-12, atol=1e-14)

    tw2 = torch.nn.Parameter(torch.tensor(w0))
    tsgd = torch.optim.SGD([tw2], lr=0.1, momentum=0.5)
    tw2.grad = torch.tensor(grads[0])
    tsgd.step()
    buf = tsgd.state_dict()["state"][0]["momentum_buffer"].numpy()
    ours_sd = optim.SGD([nn.Parameter(w0.copy())], 0.1, momentum=0.5)
    ours_sd.params[0].grad = grads[0].copy()
    ours_sd.step()
    np.testing.assert_allclose(ours_sd.state_dict()["state"][0]["momentum_buffer"], buf)
    assert set(ours_sd.state_dict()["param_groups"][0]) >= {
        "lr", "momentum", "dampening", "weight_decay", "nesterov", "params"}


def test_bad_state_dicts_change_nothing():
    model = _model()
    opt = optim.Adam(model.parameters(), lr=0.01)
    _steps(model, opt, 1, seed=0)
    good = opt.state_dict()
    sgd_state = optim.SGD(model.parameters(), 0.1, momentum=0.9).state_dict()
    cases = [
        ({"state": {}}, "param_groups"),
        ({**good, "param_groups": [{**good["param_groups"][0], "params": [0, 1]}]},
         "has 2 parameters"),
        ({**good, "state": {0: {**good["state"][0], "exp_avg": np.zeros(7)}}}, "exp_avg"),
        (sgd_state, "lacks"),
        ({**good, "state": {9: good["state"][0]}}, "9"),
        ({**good, "param_groups": [{**good["param_groups"][0], "lr": -1}]}, "lr"),
        ({**good, "param_groups": [{**good["param_groups"][0], "amsgrad": True}]}, "amsgrad"),
    ]
    before = opt.state_dict()
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


# ------------------------------------------------------------------ saving

def _files(folder):
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_failure_mid_write_keeps_the_old_file(tmp_path, monkeypatch, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    target = tmp_path / f"w{suffix}"
    io.save(_model(), target)
    old = target.read_bytes()
    os.chmod(target, 0o640)

    real_fsync = os.fsync
    if suffix == ".npz":
        real = np.lib.format.write_array
        calls = []

        def failing(fp, array, *args, **kwargs):        # fails after writing some arrays
            calls.append(1)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
            return real(fp, array, *args, **kwargs)

        monkeypatch.setattr(np.lib.format, "write_array", failing)
    else:
        def failing(fd):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError):
        io.save(_model(seed=5), target)
    assert target.read_bytes() == old
    assert _files(tmp_path) == [target.name]            # no temporary left behind
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.undo()
    io.save(_model(seed=5), target)
    assert target.read_bytes() != old
    assert os.stat(target).st_mode & 0o777 == 0o640     # the file keeps its permissions
    assert _files(tmp_path) == [target.name]


def test_killed_writers_temporaries_are_removed_by_the_next_save(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(done.stdout)
    stray = tmp_path / f".w.npz.{dead_pid}.0123456789abcdef.tmp"
    stray.write_bytes(b"half a file")
    live = tmp_path / f".w.npz.{os.getppid()}.fedcba9876543210.tmp"   # a running writer's
    live.write_bytes(b"being written")
    other = tmp_path / ".keep.tmp"                                     # not our pattern
    other.write_bytes(b"x")
    io.save(_model(), tmp_path / "other_name.npz")
    assert _files(tmp_path) == sorted([live.name, other.name, "other_name.npz"])


def test_a_kill_mid_write_leaves_the_previous_file(tmp_path):
    """A writer SIGKILLed while it writes: the target is still the old file."""
    target = tmp_path / "w.npz"
    io.save(_model(), target)
    old = target.read_bytes()
    script = (
        "import os, signal, numpy as np, cnnfast\n"
        "from cnnfast import nn\n"
        "real = np.lib.format.write_array\n"
        "def dying(fp, a, *args, **kw):\n"
        "    real(fp, a, *args, **kw)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "np.lib.format.write_array = dying\n"
        f"cnnfast.save(nn.Linear(40, 50), {str(target)!r})\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__)))
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path)   # not the source tree
    assert proc.returncode == -9
    assert target.read_bytes() == old
    assert any(n.startswith(".w.npz.") and n.endswith(".tmp") for n in _files(tmp_path))
    io.save(_model(), tmp_path / "next.npz")
    assert _files(tmp_path) == ["next.npz", "w.npz"]


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_metadata_is_kept_apart_from_the_state_dict(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    model = _model()
    meta = {"architecture": "mlp", "classes": ["cat", "dög"],
            "preprocessing": {"image_size": [32, 32], "mean": [0.5], "std": [0.25]}}
    path = io.save(model, tmp_path / f"m{suffix}", metadata=meta)
    assert io.read_metadata(path) == meta
    assert set(io.read_state_dict(path)) == set(model.state_dict())
    cnnfast.load(_model(seed=3), path)                 # strict load still works
    plain = io.save(model, tmp_path / f"plain{suffix}")
    assert io.read_metadata(plain) == {}
    with pytest.raises(ValueError, match="JSON"):
        io.save(model, tmp_path / "bad.npz", metadata={"x": object()})
    with pytest.raises(TypeError, match="metadata"):
        io.save(model, tmp_path / "bad.npz", metadata=["x"])
    assert not (tmp_path / "bad.npz").exists()
