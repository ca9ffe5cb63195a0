"""A checkpointed `cnnfast train --data` run SIGKILLed at random moments after
its first checkpoint, then resumed with --resume, ends with exactly the
weights of the same run uninterrupted (same thread count): every random draw
(initialisation, shuffling, augmentation) continues from the checkpointed
generator states, and the checkpoint is replaced atomically."""
import os
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

import cnnfast

ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__)),
           OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """48 one-channel 32x32 images in 3 classes (a class-dependent band)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 16)
    x = rng.random((48, 1, 32, 32)).astype(np.float32) * 0.5
    for c in range(3):
        x[y == c, :, 10 * c:10 * c + 8] += 0.5
    path = tmp_path_factory.mktemp("npz") / "bands.npz"
    np.savez(path, x=x, y=y)
    return str(path)


CONFIGS = {
    "sgd_augmented": ["--epochs", "8", "--optimizer", "sgd", "--lr", "0.05"],
    "adam_no_augment": ["--epochs", "8", "--optimizer", "adam", "--lr", "1e-3", "--no-augment",
                        "--val-split", "0.25"],
}


def _argv(dataset, out, config, *extra):
    return [sys.executable, "-m", "cnnfast", "train", "lenet5", "--data", dataset,
            "--threads", "1", "--no-progress", "--batch-size", "8", "-o", str(out),
            *CONFIGS[config], *extra]


def _arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("config, kills", [("sgd_augmented", 3), ("adam_no_augment", 2)])
def test_kill_9_and_resume_is_bit_identical(dataset, tmp_path, config, kills):
    reference = tmp_path / "reference.npz"
    # cwd: not the repository root, whose unbuilt source tree would shadow the tested cnnfast
    subprocess.run(_argv(dataset, reference, config), env=ENV, check=True,
                   stdout=subprocess.DEVNULL, cwd=tmp_path)
    expected = _arrays(reference)
    rng = np.random.default_rng(zlib.crc32(config.encode()))
    for attempt in range(kills):
        ck, out = tmp_path / f"ck{attempt}", tmp_path / f"out{attempt}.npz"
        proc = subprocess.Popen(_argv(dataset, out, config, "--checkpoint-dir", ck), env=ENV,
                                stdout=subprocess.DEVNULL, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while not (ck / "checkpoint.npz").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.5))           # somewhere in the epochs that follow
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():          # killed after the output was written: it is whole
            assert _arrays(out).keys() == expected.keys()
        resumed = subprocess.run(_argv(dataset, out, config, "--checkpoint-dir", ck, "--resume"),
                                 env=ENV, capture_output=True, text=True, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming from" in resumed.stdout
        got = _arrays(out)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{key} (kill {attempt})")
        assert [n for n in os.listdir(ck) if n.endswith(".tmp")] == []


def test_checkpoint_restores_every_generator(tmp_path):
    """The generators' states (cnnfast.nn's for dropout, a loader's, an
    augmentation's) come back exactly: the draws after a restore repeat."""
    from cnnfast import _checkpoint, data, nn, optim

    nn.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    opt = optim.SGD(model.parameters(), 0.1, momentum=0.9)
    loader = data.DataLoader(np.zeros((10, 1, 2, 2)), seed=1)
    flip = data.RandomHorizontalFlip(seed=2)
    rngs = {"init": nn.init.generator(), "shuffle": loader.rng, "augment0": flip.rng}
    for g in rngs.values():
        g.random(5)
    _checkpoint.save_checkpoint(tmp_path, model=model, optimizer=opt, epoch=4, rngs=rngs,
                                info={"classes": ["a"]})
    expected = {k: g.random(3) for k, g in rngs.items()}
    ck = _checkpoint.load_checkpoint(tmp_path)
    assert ck.epoch == 4 and ck.info == {"classes": ["a"]}
    _checkpoint.restore_rngs(ck, rngs)
    for k, g in rngs.items():
        np.testing.assert_array_equal(g.random(3), expected[k])
    _checkpoint.restore_rngs(ck, rngs)
    keep = model.train()(np.ones((2, 4), np.float32))
    _checkpoint.restore_rngs(ck, rngs)
    np.testing.assert_array_equal(model(np.ones((2, 4), np.float32)), keep)   # same mask
    with pytest.raises(ValueError, match="no checkpoint"):
        _checkpoint.load_checkpoint(tmp_path / "elsewhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ValueError, match="checkpoint"):
        _checkpoint.load_checkpoint(tmp_path / "bad")


def test_interrupted_feature_extraction_resumes_exactly(dataset, tmp_path, monkeypatch):
    """--weights + --freeze-base stopped after its second checkpoint and resumed
    (in this process): the resumed run recomputes the features from the
    checkpointed base and ends as the uninterrupted run."""
    from cnnfast import _checkpoint, cli, io, models

    weights = io.save(models.lenet5(num_classes=5), tmp_path / "pre.npz")
    argv = ["train", "lenet5", "--data", dataset, "--epochs", "4", "--weights", weights,
            "--freeze-base", "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "8",
            "--no-progress"]
    assert cli.main(argv + ["-o", str(tmp_path / "ref.npz")]) == 0
    real = _checkpoint.save_checkpoint

    def stop_after_two(folder, **kw):
        real(folder, **kw)
        if kw["epoch"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(_checkpoint, "save_checkpoint", stop_after_two)
    ck = tmp_path / "ck"
    out = ["-o", str(tmp_path / "out.npz"), "--checkpoint-dir", str(ck)]
    with pytest.raises(KeyboardInterrupt):
        cli.main(argv + out)
    monkeypatch.undo()
    assert cli.main(argv + out + ["--resume"]) == 0
    expected, got = _arrays(tmp_path / "ref.npz"), _arrays(tmp_path / "out.npz")
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
