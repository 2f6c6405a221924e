"""scikit-learn's handwritten digits (UCI optdigits test set, 1797 images of 8x8) as sequences.

Each image is read in raster order: 64 steps of one grey value in 0..16, scaled to [0, 1]
(inputs (64, 1) float32), 10 classes (Alpaydin & Kaynak 1998; ``sklearn.datasets.load_digits``).
The data file ``sklearn/datasets/data/digits.csv.gz`` (one image per line: 64 values then the
label) is read from an installed scikit-learn wheel through its file list, without importing
scikit-learn; scikit-learn is NOT a dependency: the task is only available where it is installed.

Split: a permutation seeded with ``seed`` holds out ``test_fraction`` (default 0.2) for test and
``val_fraction`` (default 0.1) for validation (the data set has no official split).
"""

from __future__ import annotations

import gzip
import importlib.metadata
from pathlib import Path

import numpy as np
import torch

from torchssm.data.loaders import TensorDictDataset
from torchssm.data.lra.common import DataFormatError
from torchssm.data.registry import TaskData, TaskInfo, register_task

CITATION = "Alpaydin & Kaynak 1998, Optical Recognition of Handwritten Digits (UCI); scikit-learn load_digits"


def digits_file() -> Path:
    """Path of ``digits.csv.gz`` inside the installed scikit-learn; FileNotFoundError if absent."""
    try:
        dist = importlib.metadata.distribution("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the 'digits' task reads the copy of the data shipped with scikit-learn, which is "
            "not installed: `pip install scikit-learn` (optional, not a torchssm dependency)"
        ) from None
    path = Path(dist.locate_file("sklearn/datasets/data/digits.csv.gz"))
    if not path.exists():
        raise FileNotFoundError(f"scikit-learn is installed but {path} is missing")
    return path


def read_digits(path) -> tuple:
    """(n, 64) float pixels in 0..16 and (n,) int labels from the gzipped CSV."""
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    if data.ndim != 2 or data.shape[1] != 65:
        raise DataFormatError(f"{path}: expected 65 comma-separated columns per line, got shape {data.shape}")
    return data[:, :64], data[:, 64].astype(np.int64)


@register_task("digits", "scikit-learn 8x8 digits as 64-step sequences; 10 classes (needs scikit-learn installed)")
def build(data_dir=None, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1) -> TaskData:
    """Digits; ``data_dir`` is unused (the data comes with scikit-learn)."""
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ValueError(f"need 0 < test_fraction, 0 <= val_fraction, sum < 1; got {test_fraction}, {val_fraction}")
    pixels, labels = read_digits(digits_file())
    inputs = torch.from_numpy(pixels / 16.0).float().unsqueeze(-1)  # (n, 64, 1)
    full = TensorDictDataset(inputs=inputs, targets=torch.from_numpy(labels))
    n = len(full)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    info = TaskInfo(
        name="digits", d_input=1, d_output=10, length=64, kind="classification", input_kind="real", citation=CITATION
    )
    return TaskData(
        info=info, train=full.subset(train), val=full.subset(val) if n_val else None, test=full.subset(test)
    )
