"""A convolutional autoencoder on the bundled digits: strided Conv2d layers
encode a 32x32 digit into a 64x4x4 code, ConvTranspose2d layers decode it
back. Saves a figure of test digits and their reconstructions.

    python examples/autoencoder.py [--epochs 15] [--out autoencoder.png] [--quick]

--quick trains for one epoch on a slice of the data (what CI runs). The
printed lines are the mean squared reconstruction error per epoch and, at the
end, on the held-out digits against the error of predicting the mean image.
"""
import argparse

import numpy as np

import cnnfast.nn as nn
from cnnfast.cli import load_digits_32
from cnnfast.data import DataLoader
from cnnfast.optim import Adam


def autoencoder():
    """32x32 -> 16 -> 8 -> 4 with stride-2 convs, and back with the transposed
    convs that invert their shapes (k4 s2 p1 doubles a size)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),         # 16 x 16x16
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),        # 32 x 8x8
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),        # 64 x 4x4: the code
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1), nn.Sigmoid(),
    )


def mse(model, x, batch=256):
    model.eval()
    err = sum(float(((model(x[i:i + batch]) - x[i:i + batch]) ** 2).sum())
              for i in range(0, len(x), batch))
    model.train()
    return err / x.size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--out", default="autoencoder.png", help="figure of inputs and reconstructions")
    p.add_argument("--quick", action="store_true", help="one epoch on 512 digits (for CI)")
    args = p.parse_args(argv)
    x_tr, _, x_te, _ = load_digits_32()
    epochs = args.epochs
    if args.quick:
        x_tr, epochs = x_tr[:512], 1
    nn.manual_seed(0)
    model = autoencoder()
    opt = Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        total = 0.0
        for xb in DataLoader(x_tr, batch_size=32, seed=epoch):
            y = model(xb)
            total += float(((y - xb) ** 2).sum())
            opt.zero_grad()
            model.backward(2 * (y - xb) / y.size)   # gradient of the mean squared error
            opt.step()
        print(f"epoch {epoch + 1}: train mse {total / x_tr.size:.4f}")
    baseline = float(((x_te - x_tr.mean(axis=0)) ** 2).mean())
    print(f"test mse {mse(model, x_te):.4f} (predicting the mean image: {baseline:.4f})")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    shown = x_te[:8]
    rec = model(shown)
    fig, axes = plt.subplots(2, 8, figsize=(8, 2.2))
    for i in range(8):
        for row, img in ((0, shown[i, 0]), (1, rec[i, 0])):
            axes[row, i].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("input", fontsize=8, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
