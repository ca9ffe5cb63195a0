"""Filter a real photo with classic 3x3 kernels through cnnfast.conv2d.

    python examples/filter_image.py [output_dir]      # writes PNGs (default: filtered/)

Needs scikit-image (pip install "cnnfast[examples]"). One conv2d call applies
every grey-scale kernel at once (each kernel is one output channel); the colour
photo is blurred per channel with a depthwise convolution (groups=3).
"""
import os
import sys

import numpy as np
from skimage import data, io

import cnnfast

KERNELS = {
    "blur": np.full((3, 3), 1 / 9),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "sobel_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "sobel_y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
}


def to_uint8(img):
    """Stretch to 0..255 (edge maps are signed) and convert for PNG."""
    lo, hi = float(img.min()), float(img.max())
    return np.round(255 * (img - lo) / max(hi - lo, 1e-12)).astype(np.uint8)


def main(out_dir="filtered"):
    os.makedirs(out_dir, exist_ok=True)
    camera = data.camera().astype(np.float32) / 255            # (512, 512) grey
    x = camera[None, None]                                      # (N=1, C=1, H, W)
    weight = np.stack([k for k in KERNELS.values()])[:, None].astype(np.float32)  # (K, 1, 3, 3)
    out = cnnfast.conv2d(x, weight, padding="same")[0]          # (K, H, W)
    io.imsave(os.path.join(out_dir, "camera.png"), to_uint8(camera))
    for name, img in zip(KERNELS, out):
        if name != "sobel_x" and name != "sobel_y":
            keep = np.clip(img, 0, 1) if name in ("blur", "sharpen") else img
            io.imsave(os.path.join(out_dir, f"camera_{name}.png"), to_uint8(keep))
    k = list(KERNELS)
    edges = np.hypot(out[k.index("sobel_x")], out[k.index("sobel_y")])
    io.imsave(os.path.join(out_dir, "camera_edges.png"), to_uint8(edges))

    # Colour: a 5x5 box blur of each RGB channel on its own (depthwise, groups=3).
    rgb = data.astronaut().astype(np.float32).transpose(2, 0, 1)[None] / 255   # (1, 3, H, W)
    box = np.full((3, 1, 5, 5), 1 / 25, np.float32)
    blurred = cnnfast.conv2d(rgb, box, padding=2, groups=3)[0].transpose(1, 2, 0)
    io.imsave(os.path.join(out_dir, "astronaut_blur.png"),
              np.round(255 * np.clip(blurred, 0, 1)).astype(np.uint8))
    print(f"wrote {len(os.listdir(out_dir))} PNGs to {out_dir}/")


if __name__ == "__main__":
    main(*sys.argv[1:2])
