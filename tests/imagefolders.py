"""Image folders drawn with Pillow for the image tests: each class a shape
(circle, square, triangle, cross, diamond, ring) at a random place, size and colour on a
noisy background, so a small network separates them. Never downloaded."""
import os

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring")


def draw(shape, rng, size=32):
    from PIL import Image, ImageDraw

    background = rng.integers(0, 96, size=(size, size, 3), dtype=np.uint8)
    im = Image.fromarray(background, "RGB")
    d = ImageDraw.Draw(im)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
    colour = tuple(int(v) for v in rng.integers(140, 256, size=3))
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, r // 3))
    else:
        w = max(2, r // 2)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    return im


def make_folder(root, per_class=8, classes=SHAPES[:3], size=32, seed=0, formats=("png", "jpg")):
    """root/<shape>/<i>.<fmt>; returns root."""
    rng = np.random.default_rng(seed)
    for shape in classes:
        os.makedirs(os.path.join(root, shape), exist_ok=True)
        for i in range(per_class):
            fmt = formats[i % len(formats)]
            im = draw(shape, rng, size)
            im.save(os.path.join(root, shape, f"{i:03d}.{fmt}"),
                    quality=95 if fmt == "jpg" else None)
    return str(root)
