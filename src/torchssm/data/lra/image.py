"""CIFAR-10 as sequences: LRA Image (grey, 1024 steps) and sequential CIFAR (colour, 1024 x 3).

Both read the CIFAR-10 python release (Krizhevsky 2009,
https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, folder ``cifar-10-batches-py`` with the
pickles ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``: dict with b"data" (10000, 3072)
uint8, R then G then B planes, each 32x32 row-major, and b"labels"). Pixels are read in raster
order (row by row): step s = 32 * row + col.

- ``image`` (LRA Image, Tay et al. 2021, Sec. 3.4): grey = 0.2989 R + 0.5870 G + 0.1140 B (as
  ``tf.image.rgb_to_grayscale`` in the LRA pipeline and torchvision's Grayscale), (1024, 1).
  ``tokens=True`` gives LRA's integer pixels 0..255 (input_kind "tokens", vocab 256) exactly as
  LRA computes them (``lra_benchmarks/image/input_pipeline.py``:
  ``tf.cast(tf.image.rgb_to_grayscale(x['image']), tf.int32)``): TensorFlow converts the uint8
  image to float32 (x * (1/255)), takes the weighted sum, and converts back to uint8 with
  ``convert_image_dtype``, which multiplies by 255.5 and casts - a truncation, so the token is
  floor(g * 255.5 / 255) for the grey value g in 0..255, not round(g) (they differ on about a
  quarter of the pixels). See :func:`lra_grey_tokens`.
- ``scifar`` (sequential CIFAR, the task of the LRU's 89.0 in the LRU article's table): (1024, 3).

Normalisation (state-spaces/s4 ``src/dataloaders/basic.py``): grey (x/255 - 122.6/255) / (61.0/255);
colour per channel with mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
Validation: ``val_fraction`` (default 0.1, as the s4 loader's ``val_split``) of the 50000
training images, held out with a seeded permutation; the test set is ``test_batch``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from torchssm.checks import unit_interval
from torchssm.data.loaders import TensorDictDataset
from torchssm.data.lra.common import LRA_CITATION, DataFormatError, find_dir, split_off
from torchssm.data.registry import TaskData, TaskInfo, register_task

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_CITATION = "Krizhevsky 2009, CIFAR-10"
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
GREY_MEAN, GREY_STD = 122.6 / 255.0, 61.0 / 255.0
RGB_MEAN, RGB_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


def read_cifar_batch(path: Path):
    """(n, 1024, 3) uint8 pixels in raster order and (n,) int64 labels from one pickle batch."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataFormatError(f"{path}: not a CIFAR-10 python pickle ({err})") from err
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataFormatError(f"{path}: expected a dict with b'data' and b'labels'")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataFormatError(f"{path}: b'data' must be (n, 3072) with n labels; got {data.shape}, {len(labels)}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{path}: labels must be in 0..9")
    return data.reshape(-1, 3, 1024).transpose(0, 2, 1), labels  # (n, 1024, 3)


def _load(data_dir):
    folder = find_dir(
        data_dir,
        ["cifar-10-batches-py", "cifar"],
        TRAIN_FILES + ["test_batch"],
        "CIFAR-10 (python)",
        f"Download {CIFAR_URL} and unpack it (`tar xzf cifar-10-python.tar.gz`) to get the folder "
        f"'cifar-10-batches-py'.",
    )
    parts = [read_cifar_batch(folder / name) for name in TRAIN_FILES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return folder, train, read_cifar_batch(folder / "test_batch")


def lra_grey_tokens(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) int64 grey tokens, as ``tf.image.rgb_to_grayscale`` on uint8.

    TensorFlow ``image_ops_impl.py``: ``convert_image_dtype`` uint8 -> float32 is cast * (1/255);
    ``rgb_to_grayscale`` is a tensordot with (0.2989, 0.5870, 0.1140) in float32; float32 -> uint8
    multiplies by ``dtype.max + 0.5`` = 255.5 and casts (truncation toward zero).
    """
    flt = pixels.astype(np.float32) * np.float32(1.0 / 255.0)  # (..., 3)
    grey = flt @ np.asarray(GREY_WEIGHTS, dtype=np.float32)  # (...,) float32 in [0, 1]
    return (grey * np.float32(255.5)).astype(np.int64)


def to_sequences(pixels: np.ndarray, grey: bool, tokens: bool = False, normalize: bool = True) -> torch.Tensor:
    """(n, 1024, 3) uint8 -> (n, 1024) long tokens, or (n, 1024, 1|3) float32."""
    if grey and tokens:
        return torch.from_numpy(lra_grey_tokens(pixels))  # (n, 1024)
    x = torch.from_numpy(pixels).float()  # (n, 1024, 3) in 0..255
    if grey:
        x = x @ torch.tensor(GREY_WEIGHTS)[:, None]  # (n, 1024, 1)
        return (x / 255.0 - GREY_MEAN) / GREY_STD if normalize else x / 255.0
    x = x / 255.0
    return (x - torch.tensor(RGB_MEAN)) / torch.tensor(RGB_STD) if normalize else x


def _build(name, data_dir, seed, val_fraction, grey, tokens, normalize, limit) -> TaskData:
    unit_interval("val_fraction", val_fraction, "a fraction", include_one=False)
    folder, (xtr, ytr), (xte, yte) = _load(data_dir)

    def ds(x, y):
        return TensorDictDataset(inputs=to_sequences(x, grey, tokens, normalize), targets=torch.from_numpy(y))

    train, test = ds(xtr, ytr), ds(xte, yte)
    val = None
    if val_fraction > 0:
        rest, held = split_off(len(train), val_fraction, seed)
        train, val = train.subset(rest), train.subset(held)
    if limit is not None:
        train, test = train.subset(slice(0, int(limit))), test.subset(slice(0, int(limit)))
        val = val.subset(slice(0, int(limit))) if val is not None else None
    d_input = 256 if tokens else (1 if grey else 3)
    info = TaskInfo(
        name=name,
        d_input=d_input,
        d_output=10,
        length=1024,
        kind="classification",
        input_kind="tokens" if tokens else "real",
        citation=(LRA_CITATION + "; " if grey else "") + CIFAR_CITATION,
    )
    return TaskData(info=info, train=train, val=val, test=test, extra={"folder": str(folder)})


@register_task("image", "LRA Image: grey CIFAR-10 pixel by pixel; 10 classes, length 1024 (needs CIFAR-10)")
def build_image(
    data_dir=None, seed: int = 0, val_fraction: float = 0.1, tokens: bool = False, normalize: bool = True, limit=None
) -> TaskData:
    """LRA Image: (1024, 1) normalised grey pixels, or (1024,) pixel tokens with ``tokens=True``."""
    return _build("image", data_dir, seed, val_fraction, True, tokens, normalize, limit)


@register_task("scifar", "sequential CIFAR-10 in colour; 10 classes, length 1024 x 3 channels (needs CIFAR-10)")
def build_scifar(
    data_dir=None, seed: int = 0, val_fraction: float = 0.1, normalize: bool = True, limit=None
) -> TaskData:
    """sCIFAR: (1024, 3) per-channel normalised pixels in raster order."""
    return _build("scifar", data_dir, seed, val_fraction, False, False, normalize, limit)
