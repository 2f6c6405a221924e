"""Image data for the 2-D models, offline only: nothing here downloads.

* :func:`digits_images`: scikit-learn's 8x8 digits (read from the installed wheel by data/digits.py) as
  (n, 1, 8, 8) grids in [0, 1].
* :func:`pathfinder_images`: generated Pathfinder images (data/lra/pathfinder.py's generator, drawn in
  memory) as (n, 1, S, S) grids in [-1, 1] (the reader's normalisation), labels 0/1.
* :func:`skimage_images`: the photographs that ship inside the scikit-image wheel (``skimage/data/*``,
  read from the package folder with ``skimage.io.imread``, never through a fetcher), grey in [0, 1], split
  BY IMAGE into :data:`RESTORATION_TRAIN` and :data:`RESTORATION_TEST` (no patch of a test image is
  ever trained on); :func:`random_patches` cuts training patches from them.
* Readers of the official on-disk formats for users who have the files: CIFAR-10's python pickles
  (:func:`read_cifar10`, through data/lra/image.py's batch reader) and MNIST's idx files
  (:func:`read_idx`, :func:`read_mnist`: LeCun et al., http://yann.lecun.com/exdb/mnist/ "FILE FORMATS":
  big-endian magic 0x0000 0803 (ubyte images, 3 dims) / 0x0000 0801 (labels), then the dims as int32).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from torchssm.data.lra.common import DataFormatError

# Bundled photographs (file names inside skimage/data). Held out for testing: the four the issue names.
SKIMAGE_FILES = {
    "astronaut": "astronaut.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "moon": "moon.png",
    "coins": "coins.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "page": "page.png",
    "text": "text.png",
    "cell": "cell.png",
    "retina": "retina.jpg",
}
RESTORATION_TEST = ("camera", "astronaut", "chelsea", "coffee")
RESTORATION_TRAIN = tuple(n for n in SKIMAGE_FILES if n not in RESTORATION_TEST)


def digits_images():
    """(n, 1, 8, 8) float32 in [0, 1] and (n,) int64 labels (1797 images)."""
    from torchssm.data.digits import digits_file, read_digits

    pixels, labels = read_digits(digits_file())
    return torch.from_numpy(pixels / 16.0).float().reshape(-1, 1, 8, 8), torch.from_numpy(labels)


def pathfinder_images(n: int, size: int = 32, seed: int = 0, start: int = 0):
    """Images start..start+n-1 of the seeded Pathfinder generator: (n, 1, size, size) float32 in [-1, 1],
    (n,) int64 labels (alternating, so an even n is balanced)."""
    from torchssm.data.lra.pathfinder import draw_pathfinder, generator_options

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    opts = generator_options(size)
    imgs, labels = zip(*(draw_pathfinder(seed, i, opts) for i in range(start, start + n)))
    x = torch.from_numpy(np.stack(imgs)).float().div(255.0).sub(0.5).div(0.5)[:, None]  # (n, 1, S, S)
    return x, torch.tensor(labels, dtype=torch.long)


def skimage_folder() -> Path:
    try:
        import skimage
    except ImportError as err:
        raise FileNotFoundError(
            "the restoration images ship inside scikit-image, which is not installed: `pip install torchssm[vision]`"
        ) from err
    return Path(skimage.__file__).parent / "data"


def skimage_image(name: str) -> np.ndarray:
    """Bundled image ``name`` as grey float64 (H, W) in [0, 1] (RGB -> luminance by ``rgb2gray``)."""
    from skimage.color import rgb2gray
    from skimage.io import imread

    if name not in SKIMAGE_FILES:
        raise ValueError(f"unknown bundled image {name!r}; expected one of {sorted(SKIMAGE_FILES)}")
    path = skimage_folder() / SKIMAGE_FILES[name]
    if not path.exists():
        raise FileNotFoundError(f"{path} is not in this scikit-image install (only bundled images are used)")
    img = imread(path)
    if img.ndim == 3:
        img = rgb2gray(img[..., :3])
    else:
        img = img.astype(np.float64) / (np.iinfo(img.dtype).max if img.dtype.kind in "ui" else 1.0)
    return np.clip(img.astype(np.float64), 0.0, 1.0)


def skimage_images(names) -> list:
    return [skimage_image(n) for n in names]


def random_patches(images, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """n random size x size crops (uniform image, then uniform position) -> (n, 1, size, size) float32."""
    images = [img for img in images if min(img.shape) >= size]
    if not images:
        raise ValueError(f"no image is at least {size}x{size}")
    which = torch.randint(len(images), (n,), generator=generator).tolist()
    out = torch.empty(n, 1, size, size)
    for k, i in enumerate(which):
        h, w = images[i].shape
        r = int(torch.randint(h - size + 1, (1,), generator=generator))
        c = int(torch.randint(w - size + 1, (1,), generator=generator))
        out[k, 0] = torch.from_numpy(images[i][r : r + size, c : c + size])
    return out


def read_cifar10(folder, split: str = "train"):
    """CIFAR-10 python release folder -> (n, 3, 32, 32) uint8 and (n,) int64 (train: data_batch_1..5)."""
    from torchssm.data.lra.image import TRAIN_FILES, read_cifar_batch

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    folder = Path(folder)
    files = TRAIN_FILES if split == "train" else ["test_batch"]
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing CIFAR-10 batch file(s) {missing} (folder cifar-10-batches-py)")
    parts = [read_cifar_batch(folder / f) for f in files]  # (n, 1024, 3) each, raster order
    pixels = np.concatenate([p[0] for p in parts]).transpose(0, 2, 1).reshape(-1, 3, 32, 32)
    return torch.from_numpy(np.ascontiguousarray(pixels)), torch.from_numpy(np.concatenate([p[1] for p in parts]))


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """An idx file (optionally .gz) -> its array. Raises DataFormatError on a bad header or size."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] < 1:
        raise DataFormatError(f"{path}: not an idx file (expected magic 0x0000 <type> <ndim>, e.g. 0x00000803)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataFormatError(f"{path}: truncated idx header")
    dims = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(body) != expected:
        raise DataFormatError(f"{path}: header says {dims} ({expected} bytes of data); the file holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_mnist(folder, split: str = "train"):
    """MNIST idx files (plain or .gz) in ``folder`` -> (n, 1, 28, 28) uint8 and (n,) int64 labels."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    folder = Path(folder)
    paths = []
    for stem in MNIST_FILES[split]:
        found = [folder / (stem + ext) for ext in ("", ".gz") if (folder / (stem + ext)).exists()]
        if not found:
            raise FileNotFoundError(f"{folder}: missing MNIST file {stem}[.gz]")
        paths.append(found[0])
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataFormatError(
            f"{folder}: expected images (n, rows, cols) and n labels; got {images.shape}, {labels.shape}"
        )
    return torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64))
