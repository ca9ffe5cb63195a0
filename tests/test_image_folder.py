"""cnnfast.data.ImageFolder: torchvision's folder layout and preprocessing
(decoded with Pillow), its layout errors, lazy decoding errors that name the
file, and DataLoader batching it on a thread pool."""
import os

import numpy as np
import pytest

from cnnfast import data
from imagefolders import make_folder

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "shapes", per_class=3)


def test_layout_classes_and_sorted_samples(folder):
    os.makedirs(os.path.join(folder, ".cache"))                       # hidden folder
    Image.new("RGB", (8, 8)).save(os.path.join(folder, ".cache", "x.png"))
    open(os.path.join(folder, "circle", "notes.txt"), "w").close()    # not an image
    Image.new("RGB", (8, 8)).save(os.path.join(folder, "circle", ".hidden.png"))
    Image.new("RGB", (8, 8)).save(os.path.join(folder, "circle", "UPPER.PNG"))
    os.makedirs(os.path.join(folder, "square", "nested"))
    Image.new("RGB", (8, 8)).save(os.path.join(folder, "square", "nested", "deep.bmp"))
    open(os.path.join(folder, "stray.png"), "wb").close()              # files in root: ignored
    ds = data.ImageFolder(folder, image_size=16)
    assert ds.classes == ["circle", "square", "triangle"]
    assert ds.class_to_idx == {"circle": 0, "square": 1, "triangle": 2}
    names = [os.path.relpath(p, folder) for p, _ in ds.samples]
    assert names == sorted(names, key=lambda n: (n.split(os.sep)[0], n))
    assert os.path.join("circle", "UPPER.PNG") in names
    assert os.path.join("square", "nested", "deep.bmp") in names
    assert not any(".hidden" in n or "notes" in n or ".cache" in n for n in names)
    assert len(ds) == 3 + 1 + 3 + 1 + 3
    x, label = ds[len(ds) - 1]
    assert type(label) is int and label == 2
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    assert ds[-1][1] == 2


def test_listed_classes_set_the_label_order(folder):
    ds = data.ImageFolder(folder, image_size=8, classes=["triangle", "circle"])
    assert ds.classes == ["triangle", "circle"] and ds.class_to_idx["circle"] == 1
    assert [os.path.basename(os.path.dirname(p)) for p, _ in ds.samples][:3] == ["triangle"] * 3
    assert set(ds.targets.tolist()) == {0, 1} and len(ds) == 6


@pytest.mark.parametrize("layout, message", [
    ("empty_class", "holds no image files"),
    ("no_class_folders", "no class folders"),
    ("missing_listed", "have no folder"),
    ("not_a_folder", "is not a folder"),
    ("duplicate_listed", "more than once"),
])
def test_layout_errors(tmp_path, layout, message):
    root = tmp_path / "root"
    classes = None
    if layout == "empty_class":
        make_folder(root, per_class=1)
        os.makedirs(root / "empty")
        open(root / "empty" / "readme.txt", "w").close()
    elif layout == "no_class_folders":
        os.makedirs(root / ".hidden")
        Image.new("RGB", (4, 4)).save(root / "loose.png")
    elif layout == "missing_listed":
        make_folder(root, per_class=1)
        classes = ["circle", "dog"]
    elif layout == "not_a_folder":
        root = tmp_path / "nothing"
    else:
        make_folder(root, per_class=1)
        classes = ["circle", "circle"]
    with pytest.raises(ValueError, match=message) as err:
        data.ImageFolder(root, classes=classes)
    if layout == "empty_class":
        assert "empty" in str(err.value)
    if layout == "missing_listed":
        assert "dog" in str(err.value)


@pytest.mark.parametrize("kwargs", [dict(image_size=0), dict(image_size=2.5),
                                    dict(mean=[0.5]), dict(std=[0.5]),
                                    dict(mean=[0.5, 0.5], std=[1, 1]),
                                    dict(mean=0.5, std=0), dict(classes="circle"),
                                    dict(data_format="nhwc")])
def test_bad_arguments_name_themselves(folder, kwargs):
    with pytest.raises((ValueError, TypeError), match="|".join(kwargs)):
        data.ImageFolder(folder, **kwargs)


def test_corrupt_file_fails_when_read_naming_it(folder):
    bad = os.path.join(folder, "square", "broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = os.path.join(folder, "circle", "cut.png")
    with open(os.path.join(folder, "circle", "000.png"), "rb") as f:
        head = f.read()[:60]
    with open(truncated, "wb") as f:
        f.write(head)
    ds = data.ImageFolder(folder, image_size=8)        # layout is fine: lazy decoding
    for path in (bad, truncated):
        i = [p for p, _ in ds.samples].index(path)
        with pytest.raises(ValueError, match="cannot decode") as err:
            ds[i]
        assert path in str(err.value)
    with pytest.raises(ValueError, match="broken.jpg|cut.png"):
        for _ in data.DataLoader(ds, batch_size=4, num_workers=2):
            pass


def test_resize_crop_scale_normalise_as_torchvision(tmp_path):
    """Resize(shorter side) + CenterCrop + ToTensor + Normalize, torchvision's
    geometry written out: a 40x30 image at size 20 is resized to 26x20 (the
    longer side truncated) and cropped at left = round(6 / 2) = 3."""
    root = tmp_path / "r"
    os.makedirs(root / "a")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)      # h=30, w=40
    Image.fromarray(pixels).save(root / "a" / "wide.png")
    tall = rng.integers(0, 256, size=(41, 20, 3), dtype=np.uint8)        # h=41, w=20
    Image.fromarray(tall).save(root / "a" / "zz_tall.png")
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    ds = data.ImageFolder(root, image_size=20, mean=mean, std=std)

    def expected(arr, resized, box):
        im = Image.fromarray(arr).resize(resized, Image.Resampling.BILINEAR).crop(box)
        x = np.asarray(im).astype(np.float32) / np.float32(255)
        x = (x - np.float32(mean)) / np.float32(std)
        return x.transpose(2, 0, 1)

    np.testing.assert_array_equal(ds[0][0], expected(pixels, (26, 20), (3, 0, 23, 20)))
    # 20x41 -> 20x41 (no resize), crop top = round(21 / 2) = 10 (Python rounds half to even)
    np.testing.assert_array_equal(ds[1][0], expected(tall, (20, 41), (0, 10, 20, 30)))
    last = data.ImageFolder(root, image_size=20, data_format="channels_last", dtype=np.float64)
    assert last[0][0].shape == (20, 20, 3) and last[0][0].dtype == np.float64
    np.testing.assert_allclose(last[0][0],
                               data.ImageFolder(root, image_size=20)[0][0].transpose(1, 2, 0),
                               atol=1e-6)


def test_any_mode_becomes_rgb(tmp_path):
    root = tmp_path / "m"
    os.makedirs(root / "a")
    Image.new("L", (6, 6), 128).save(root / "a" / "gray.png")
    Image.new("RGBA", (6, 6), (255, 0, 0, 0)).save(root / "a" / "rgba.png")
    Image.new("P", (6, 6), 3).save(root / "a" / "palette.gif")
    Image.new("RGB", (6, 6), (0, 255, 0)).save(root / "a" / "x.webp", lossless=True)
    ds = data.ImageFolder(root, image_size=6)
    for i in range(len(ds)):
        assert ds[i][0].shape == (3, 6, 6)
    gray = ds[[os.path.basename(p) for p, _ in ds.samples].index("gray.png")][0]
    np.testing.assert_array_equal(gray, np.float32(128) / np.float32(255))


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_loader_batches_the_same_whatever_the_threads(folder, workers):
    ds = data.ImageFolder(folder, image_size=12)
    ref = data.DataLoader(ds, batch_size=4, seed=3, num_workers=0,
                          transform=data.Compose([data.RandomHorizontalFlip(seed=1),
                                                  data.RandomCrop(12, padding=2, seed=2)]))
    got = data.DataLoader(ds, batch_size=4, seed=3, num_workers=workers,
                          transform=data.Compose([data.RandomHorizontalFlip(seed=1),
                                                  data.RandomCrop(12, padding=2, seed=2)]))
    batches = list(got)
    assert [len(y) for _, y in batches] == [4, 4, 1]
    for (xa, ya), (xb, yb) in zip(ref, batches):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    x_all = np.concatenate([x for x, _ in data.DataLoader(ds, batch_size=4, shuffle=False)])
    np.testing.assert_array_equal(x_all, np.stack([ds[i][0] for i in range(len(ds))]))


def test_subset_and_generic_datasets(folder):
    ds = data.ImageFolder(folder, image_size=8)
    sub = data.Subset(ds, [7, 0, -1])
    assert len(sub) == 3 and sub.targets.tolist() == [2, 0, 2]
    np.testing.assert_array_equal(sub[1][0], ds[0][0])
    (xb, yb), = list(data.DataLoader(sub, batch_size=8, shuffle=False))
    np.testing.assert_array_equal(xb[2], ds[len(ds) - 1][0])

    class Pairs:               # any object with len() and ds[i] -> (x, y)
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((1, 2, 2), i, np.float32), i % 2

    batches = list(data.DataLoader(Pairs(), batch_size=2, shuffle=False))
    assert batches[2][0].shape == (1, 1, 2, 2) and batches[1][1].tolist() == [0, 1]
    with pytest.raises(ValueError, match="indices"):
        data.Subset(ds, [len(ds)])
    with pytest.raises(ValueError, match="y must be None"):
        data.DataLoader(ds, np.zeros(len(ds)))
    with pytest.raises(ValueError, match="num_workers"):
        data.DataLoader(ds, num_workers=-1)
