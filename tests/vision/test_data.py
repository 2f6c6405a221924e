"""Vision data: bundled scikit-image photos (offline, split by image), digits and Pathfinder grids, and
the CIFAR-10 pickle / MNIST idx readers on tiny files written here."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from torchssm.data.lra.common import DataFormatError
from torchssm.vision import data as vd

pytest.importorskip("skimage")


def test_bundled_photos_load_offline_and_split_by_image(monkeypatch):
    import skimage.data

    # any attempt to fetch (pooch) would fail loudly: the loader reads the package folder only
    monkeypatch.setattr(skimage.data, "download_all", lambda *a, **k: pytest.fail("tried to download"), raising=False)
    assert not set(vd.RESTORATION_TRAIN) & set(vd.RESTORATION_TEST)
    for name in vd.RESTORATION_TEST + vd.RESTORATION_TRAIN[:3]:
        img = vd.skimage_image(name)
        assert img.ndim == 2 and min(img.shape) >= 128 and 0 <= img.min() and img.max() <= 1 and img.std() > 0.01
    cam = vd.skimage_image("camera")
    np.testing.assert_allclose(cam, skimage.data.camera() / 255.0)
    with pytest.raises(ValueError, match="unknown bundled image"):
        vd.skimage_image("lena")


def test_random_patches_are_crops_of_the_images():
    imgs = [np.arange(20 * 30, dtype=np.float64).reshape(20, 30) / 600]
    p = vd.random_patches(imgs, 5, 8, torch.Generator().manual_seed(0))
    assert p.shape == (5, 1, 8, 8)
    for k in range(5):
        r, c = divmod(int(round(p[k, 0, 0, 0].item() * 600)), 30)
        torch.testing.assert_close(p[k, 0], torch.from_numpy(imgs[0][r : r + 8, c : c + 8]).float())
    with pytest.raises(ValueError, match="at least 32x32"):
        vd.random_patches(imgs, 1, 32, torch.Generator())


def test_digits_and_pathfinder_grids():
    pytest.importorskip("sklearn")
    x, y = vd.digits_images()
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,) and 0 <= x.min() and x.max() <= 1
    from torchssm.data.lra.pathfinder import draw_pathfinder, generator_options

    imgs, labels = vd.pathfinder_images(2, size=32, seed=3, start=5)
    assert imgs.shape == (2, 1, 32, 32) and labels.tolist() == [1, 0]
    want, _ = draw_pathfinder(3, 6, generator_options(32))
    torch.testing.assert_close(imgs[1, 0], torch.from_numpy(want).float() / 127.5 - 1)


def _write_cifar(folder, names, n=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in names:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
        batches[name] = d
    return batches


def test_cifar10_reader_on_tiny_pickles(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", names)
    x, y = vd.read_cifar10(tmp_path / "cifar-10-batches-py", "test")
    d = batches["test_batch"]
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8
    # channel planes R, G, B of 1024 values each, row-major
    assert x[1, 2, 4, 7].item() == d[b"data"][1, 2 * 1024 + 4 * 32 + 7]
    assert y.tolist() == [int(v) for v in d[b"labels"]]
    x, y = vd.read_cifar10(tmp_path / "cifar-10-batches-py", "train")
    assert x.shape == (15, 3, 32, 32) and y.shape == (15,)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        vd.read_cifar10(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        vd.read_cifar10(tmp_path, "val")


def _idx(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.tobytes()


def test_mnist_idx_reader_on_tiny_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 4).astype(np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(imgs, 0x08))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx(labels, 0x08))
    x, y = vd.read_mnist(tmp_path, "test")
    assert x.shape == (4, 1, 28, 28) and torch.equal(x[:, 0], torch.from_numpy(imgs))
    assert y.tolist() == labels.tolist() and y.dtype == torch.long
    floats = np.arange(6, dtype=">f4").reshape(2, 3)
    (tmp_path / "f.idx").write_bytes(_idx(floats, 0x0D))
    np.testing.assert_array_equal(vd.read_idx(tmp_path / "f.idx"), floats)
    (tmp_path / "bad").write_bytes(b"\x00\x01\x08\x01" + bytes(8))
    with pytest.raises(DataFormatError, match="not an idx file"):
        vd.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx(imgs, 0x08)[:-5])
    with pytest.raises(DataFormatError, match="header says"):
        vd.read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        vd.read_mnist(tmp_path, "train")
