"""`cnnfast train MODEL --data DIR|FILE.npz` and `cnnfast predict`: training on
a Pillow-drawn image folder and on .npz files, the weights' metadata,
--weights / --freeze-base, predict's output, and every bad input (a clear
message naming the file or option, a non-zero exit, nothing overwritten)."""
import os

import numpy as np
import pytest

import cnnfast
from cnnfast import _checkpoint, _train, cli, data, io, models
from imagefolders import make_folder

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("img") / "shapes", per_class=8)


@pytest.fixture(scope="module")
def four_shapes(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("img4") / "four", per_class=5,
                       classes=("circle", "square", "triangle", "cross"), seed=1)


def _train_run(capsys, *argv):
    code = cli.main(["train", *map(str, argv), "--no-progress", "--batch-size", "8"])
    out, err = capsys.readouterr()
    return code, out, err


def _epoch_accuracies(out):
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    return [float(ln.split("val_acc ")[1].split()[0]) for ln in lines]


def test_train_on_a_folder_then_predict(shapes, tmp_path, capsys):
    out_path = tmp_path / "w.npz"
    code, out, _ = _train_run(capsys, "lenet5", "--data", shapes, "--epochs", 2, "-o", out_path)
    assert code == 0
    accs = _epoch_accuracies(out)
    assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
    assert "18 training / 6 validation images in 3 classes at 32x32" in out
    assert out.strip().splitlines()[-1] == f"val accuracy: {accs[-1]:.4f}"
    meta = io.read_metadata(out_path)
    assert meta["architecture"] == "lenet5"
    assert meta["classes"] == ["circle", "square", "triangle"]
    assert meta["preprocessing"]["image_size"] == [32, 32]
    assert meta["preprocessing"]["mean"] == _train.IMAGENET_MEAN
    model = models.lenet5(num_classes=3, in_channels=3, weights=str(out_path))   # weights=
    cnnfast.load(models.lenet5(num_classes=3, in_channels=3), out_path)           # and load

    # predict: one line per image, top K capped at the class count, best first,
    # probabilities equal to the model's softmax on ImageFolder's preprocessing
    ds = data.ImageFolder(shapes, image_size=32, mean=_train.IMAGENET_MEAN,
                          std=_train.IMAGENET_STD)
    hidden = os.path.join(shapes, "square", ".hidden.png")
    os.link(os.path.join(shapes, "square", "000.png"), hidden)
    open(os.path.join(shapes, "square", "notes.txt"), "w").close()
    try:
        one = ds.samples[0][0]
        assert cli.main(["predict", str(out_path), one, shapes, "--top", "5",
                         "--no-progress", "--batch-size", "7"]) == 0
    finally:
        os.unlink(hidden)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(ds)
    paths = [ln.split("\t")[0] for ln in lines]
    assert paths == [one] + [p for p, _ in ds.samples]
    x = np.stack([ds[i][0] for i in range(len(ds))])
    logits = model.eval()(x).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for line, p in zip(lines[1:], probs):
        fields = line.split("\t")[1:]
        assert len(fields) == 3
        names = [f.rsplit(" ", 1)[0] for f in fields]
        values = [float(f.rsplit(" ", 1)[1]) for f in fields]
        assert values == sorted(values, reverse=True)
        assert names[0] == ds.classes[int(np.argmax(p))]
        for name, v in zip(names, values):
            assert v == pytest.approx(p[ds.class_to_idx[name]], abs=6e-5)


@pytest.mark.parametrize("layout", ["nchw_float", "nhwc_uint8"])
def test_train_on_an_npz(tmp_path, capsys, layout):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    if layout == "nchw_float":
        x = rng.random((30, 1, 32, 32)).astype(np.float32) * 0.5
        x[:, :, :8] += y[:, None, None, None] * 0.25          # a class-dependent band
        extra = {}
    else:
        x = rng.integers(0, 100, size=(30, 32, 32, 3), dtype=np.uint8)
        x[:, :8, :, y % 3] = 250
        extra = {"classes": np.array(["red", "green", "blue"])}
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, **extra)
    out_path = tmp_path / "w.npz"
    code, out, _ = _train_run(capsys, "lenet5", "--data", path, "--epochs", 2,
                              "--val-split", 0.3, "-o", out_path)
    assert code == 0, out
    assert "21 training / 9 validation images in 3 classes at 32x32" in out
    assert len(_epoch_accuracies(out)) == 2
    meta = io.read_metadata(out_path)
    assert meta["classes"] == (["0", "1", "2"] if not extra else ["red", "green", "blue"])
    assert meta["preprocessing"]["in_channels"] == x.shape[1 if layout == "nchw_float" else 3]


def test_stratified_seeded_split():
    labels = np.repeat([0, 1, 2], [10, 5, 1])
    tr, va = _train.stratified_split(labels, 0.2, seed=4)
    assert np.bincount(labels[va], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(16))
    tr2, va2 = _train.stratified_split(labels, 0.2, seed=4)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, _train.stratified_split(labels, 0.2, seed=5)[1])
    assert len(_train.stratified_split(labels, 0.0, seed=0)[1]) == 0


def test_weights_replace_the_head_and_freeze_base_keeps_the_base(shapes, four_shapes,
                                                                 tmp_path, capsys, monkeypatch):
    w4 = tmp_path / "w4.npz"
    assert _train_run(capsys, "lenet5", "--data", four_shapes, "--epochs", 1, "-o", w4)[0] == 0
    frozen = tmp_path / "frozen.npz"
    calls = []
    real = models.LeNet5.forward_features
    monkeypatch.setattr(models.LeNet5, "forward_features",
                        lambda self, x: calls.append(len(x)) or real(self, x))
    code, out, _ = _train_run(capsys, "lenet5", "--data", shapes, "--epochs", 2,
                              "--weights", w4, "--freeze-base", "-o", frozen)
    assert code == 0, out
    assert sum(calls) == 24          # each of the 18 + 6 images through the base once
    assert "base frozen" in out and len(_epoch_accuracies(out)) == 2
    before, after = io.read_state_dict(w4), io.read_state_dict(frozen)
    assert after["fc2.weight"].shape == (3, 84)
    for key, value in before.items():
        if not key.startswith("fc2."):
            np.testing.assert_array_equal(after[key], value, err_msg=key)
    # fine-tuning (not frozen) from a file with the same class count loads the head too
    tuned = tmp_path / "tuned.npz"
    code, out, _ = _train_run(capsys, "lenet5", "--data", shapes, "--epochs", 1, "--lr", 1e-9,
                              "--weights", frozen, "--no-augment", "-o", tuned)
    assert code == 0
    np.testing.assert_allclose(io.read_state_dict(tuned)["fc2.weight"], after["fc2.weight"],
                               atol=1e-6)


# ------------------------------------------------------------- bad input

def _fails(capsys, argv, *expected, code=1):
    out_file = None
    if "-o" in argv:
        out_file = argv[argv.index("-o") + 1]
        with open(out_file, "wb") as f:
            f.write(b"previous weights")
    got = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == code, err
    for text in expected:
        assert str(text) in err
    if out_file is not None:
        with open(out_file, "rb") as f:
            assert f.read() == b"previous weights"          # nothing overwritten


def test_corrupt_image_is_named(tmp_path, capsys):
    root = make_folder(tmp_path / "c", per_class=3)
    bad = os.path.join(root, "square", "001.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff garbage")
    _fails(capsys, ["train", "lenet5", "--data", root, "--epochs", "1", "--no-progress",
                    "-o", tmp_path / "w.npz"], bad, "cannot decode")


def test_layout_errors_are_named(tmp_path, capsys):
    root = make_folder(tmp_path / "e", per_class=2)
    os.makedirs(os.path.join(root, "nothing_here"))
    _fails(capsys, ["train", "lenet5", "--data", root, "--no-progress",
                    "-o", tmp_path / "w.npz"], os.path.join(root, "nothing_here"), "no image")
    flat = tmp_path / "flat"
    os.makedirs(flat)
    open(flat / "a.png", "wb").close()
    _fails(capsys, ["train", "lenet5", "--data", flat, "-o", tmp_path / "w.npz"],
           str(flat), "no class folders")
    _fails(capsys, ["train", "lenet5", "--data", tmp_path / "missing"], "missing")


def test_weights_for_another_architecture(shapes, tmp_path, capsys):
    w = tmp_path / "l5.npz"
    assert _train_run(capsys, "lenet5", "--data", shapes, "--epochs", 1, "-o", w)[0] == 0
    _fails(capsys, ["train", "resnet18", "--data", shapes, "--weights", w,
                    "-o", tmp_path / "r.npz"], str(w), "lenet5", "resnet18")
    plain = io.save(models.lenet5(), tmp_path / "plain.npz")     # no metadata: keys decide
    _fails(capsys, ["train", "resnet18", "--data", shapes, "--weights", plain,
                    "-o", tmp_path / "r.npz"], plain, "do not fit")
    _fails(capsys, ["predict", plain, shapes], plain, "architecture")
    _fails(capsys, ["predict", w, tmp_path / "nope.png"], "nope.png")


def test_resume_errors(shapes, tmp_path, capsys):
    ck = tmp_path / "ck"
    _fails(capsys, ["train", "lenet5", "--data", shapes, "--checkpoint-dir", ck, "--resume",
                    "-o", tmp_path / "w.npz"], "no checkpoint", str(ck))
    assert _train_run(capsys, "lenet5", "--data", shapes, "--epochs", 2, "--checkpoint-dir", ck,
                      "-o", tmp_path / "w.npz")[0] == 0
    saved = _checkpoint.load_checkpoint(ck)
    assert saved.epoch == 2 and saved.info["classes"] == ["circle", "square", "triangle"]
    assert set(saved.rng) == {"init", "shuffle", "augment0", "augment1"}
    assert saved.optimizer["param_groups"][0]["lr"] > 0 and saved.optimizer["state"]
    np.testing.assert_array_equal(saved.model["fc2.weight"],
                                  io.read_state_dict(tmp_path / "w.npz")["fc2.weight"])
    _fails(capsys, ["train", "lenet5", "--data", shapes, "--epochs", "2", "--lr", "0.1",
                    "--checkpoint-dir", ck, "--resume", "-o", tmp_path / "w2.npz"],
           "--lr", "other options")


@pytest.mark.parametrize("x, y, message", [
    (np.full((4, 1, 32, 32), 2.0, np.float32), [0, 1, 0, 1], "[0, 1]"),
    (np.zeros((4, 1, 32, 32), np.float32), [0, 1, 0], "labels"),
    (np.zeros((4, 32, 32), np.float32), [0, 1, 0, 1], "4-D"),
])
def test_bad_npz(tmp_path, capsys, x, y, message):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.array(y))
    _fails(capsys, ["train", "lenet5", "--data", path, "-o", tmp_path / "w.npz"], message,
           str(path))


@pytest.mark.parametrize("argv", [
    ["train", "--freeze-base"],
    ["train", "--weights", "w.npz"],
    ["train", "--data", "d", "--val-split", "1.5"],
    ["train", "--data", "d", "--resume"],
    ["train", "--data", "d.npz", "--image-size", "64"],
    ["predict", "w.npz", "x.png", "--top", "0"],
    ["predict", "w.npz"],
])
def test_bad_options_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(argv)
    assert err.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_weights_from_a_torch_file_with_another_head(shapes, tmp_path, capsys):
    """A torch.save state dict (as torchvision publishes: tensors, a 10-class
    head, BatchNorm's num_batches_tracked) starts a 3-class run: every array
    but the head's is taken as it is."""
    torch = pytest.importorskip("torch")
    source = models.lenet5(num_classes=10, in_channels=3).state_dict()
    state = {k: torch.from_numpy(v) for k, v in source.items()}
    state["bn.num_batches_tracked"] = torch.tensor(7)
    pth = tmp_path / "lenet5-0123abcd.pth"
    torch.save(state, pth)
    out = tmp_path / "w.npz"
    code, text, _ = _train_run(capsys, "lenet5", "--data", shapes, "--epochs", 1,
                               "--weights", pth, "--freeze-base", "-o", out)
    assert code == 0, text
    got = io.read_state_dict(out)
    assert got["fc2.weight"].shape == (3, 84)
    for key, value in source.items():
        if not key.startswith("fc2."):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
