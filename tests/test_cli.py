"""The `cnnfast` command line: a short LeNet-5 run end to end, its output
format and saved weights, option checking, and the `bench` pass-through."""
import numpy as np
import pytest

import cnnfast.io
from cnnfast import cli, models


def test_digits_are_32x32_with_a_fixed_split():
    x_tr, y_tr, x_te, y_te = cli.load_digits_32()
    assert x_tr.shape[1:] == (1, 32, 32) and x_tr.dtype == np.float32
    assert len(x_tr) + len(x_te) == 1797 and len(x_te) == 360
    assert 0 <= x_tr.min() and x_tr.max() <= 1
    assert np.all(x_tr[:, :, :2] == 0)           # the 2-pixel border
    again = cli.load_digits_32()
    np.testing.assert_array_equal(y_te, again[3])
    assert set(np.bincount(y_te)) <= {35, 36, 37}   # stratified


def test_train_lenet5_short_run(tmp_path, capsys):
    out = tmp_path / "w.npz"
    assert cli.main(["train", "lenet5", "--epochs", "2", "--no-progress", "--output",
                     str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = lines[-1]
    assert last.startswith("test accuracy: ")
    accuracy = float(last.split(": ")[1])
    assert 0.5 < accuracy <= 1          # two epochs already learn most digits
    model = cnnfast.io.load(models.lenet5(), out)
    x_tr, _, x_te, y_te = cli.load_digits_32()
    x = (x_te - x_tr.mean()) / x_tr.std()
    predicted = cli.predict(model, x)
    assert float((predicted == y_te).mean()) == pytest.approx(accuracy, abs=1e-4)


def test_progress_bar_reports_loss_and_accuracy(tmp_path, capsys):
    cli.main(["train", "--model", "lenet5", "--epochs", "1", "--batch-size", "256",
              "--no-augment", "-o", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "0"],
    ["train", "--lr", "-1"],
    ["train", "nosuchnet"],
    ["train", "lenet5", "--model", "resnet18"],
    ["train", "--optimizer", "rmsprop"],
    ["train", "--momentum", "-0.5"],       # was a ValueError traceback from SGD
    ["train", "--weight-decay", "-1"],
])
def test_bad_options_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(argv)
    assert err.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_bench_forwards_its_arguments(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["bench", "--help"])
    assert err.value.code == 0
    assert "python -m cnnfast.bench" in capsys.readouterr().out
