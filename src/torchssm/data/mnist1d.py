"""MNIST-1D (Greydanus 2020, "Scaling Down Deep Learning", arXiv:2011.14439), generated offline.

The ten digit templates of length 12 are padded, translated, scaled, sheared, mixed with
correlated and i.i.d. noise and resampled to length 40 by the ``mnist1d`` package's own
generator, ``mnist1d.data.make_dataset(get_dataset_args())``, with the paper's default arguments
(5000 examples, ``train_split=0.8`` -> 4000 train / 1000 test, ``seed=42``). Nothing is
downloaded. The generated arrays are cached as ``mnist1d_<hash>.npz`` in the data directory
(``data_dir`` / ``$TORCHSSM_DATA`` / ``~/.cache/torchssm``), written atomically.

A validation split of ``val_fraction`` of the training examples is carved out with a seeded
permutation; the test set is the generator's own 1000 examples.

Examples: ``{"inputs": (40, 1) float32, "targets": () int64 in [0, 10)}``.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from torchssm.checks import unit_interval
from torchssm.data.loaders import TensorDictDataset, resolve_data_dir, save_npz_atomic
from torchssm.data.registry import TaskData, TaskInfo, register_task

CITATION = "Greydanus 2020, Scaling Down Deep Learning (MNIST-1D), arXiv:2011.14439"


def _generator_args() -> dict:
    """The paper's default generator arguments (``mnist1d.data.get_dataset_args``), minus the download URL."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)
    return args


def generate_mnist1d() -> dict:
    """Run the ``mnist1d`` generator with its default arguments; numpy arrays x (n, 40), y (n,).

    The generator seeds Python's and numpy's global RNGs (``set_seed(42)``); their states are
    restored afterwards so building the data set does not change the caller's random streams.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x_train": np.asarray(data["x"], dtype=np.float32),  # (4000, 40)
        "y_train": np.asarray(data["y"], dtype=np.int64),  # (4000,)
        "x_test": np.asarray(data["x_test"], dtype=np.float32),  # (1000, 40)
        "y_test": np.asarray(data["y_test"], dtype=np.int64),  # (1000,)
    }


def cache_path(data_dir=None) -> Path:
    """Where the generated arrays are cached; the name hashes the generator arguments."""
    key = hashlib.sha256(json.dumps(_generator_args(), sort_keys=True).encode()).hexdigest()[:12]
    return resolve_data_dir(data_dir) / f"mnist1d_{key}.npz"


def load_mnist1d(data_dir=None, regenerate: bool = False) -> dict:
    """The MNIST-1D arrays, from the cache when present (and readable), else generated and cached."""
    path = cache_path(data_dir)
    if path.exists() and not regenerate:
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            return arrays
        except (OSError, ValueError, KeyError, EOFError) as err:  # a damaged cache is rebuilt, not fatal
            warnings.warn(f"MNIST-1D cache {path} is unreadable ({err}); regenerating it", stacklevel=2)
    arrays = generate_mnist1d()
    save_npz_atomic(path, **arrays)
    return arrays


def _dataset(x: np.ndarray, y: np.ndarray) -> TensorDictDataset:
    inputs = torch.from_numpy(x).unsqueeze(-1)  # (n, 40, 1)
    targets = torch.from_numpy(y)  # (n,)
    return TensorDictDataset(inputs=inputs, targets=targets)


@register_task("mnist1d", "MNIST-1D (Greydanus 2020): 10 classes, length 40, 4000 train / 1000 test, generated offline")
def build(
    data_dir=None, seed: int = 0, val_fraction: float = 0.1, limit: int | None = None, regenerate: bool = False
) -> TaskData:
    """MNIST-1D classification task.

    Args:
        data_dir: cache directory (default ``$TORCHSSM_DATA`` or ``~/.cache/torchssm``).
        seed: seeds the train/validation split (the examples themselves use the paper's seed 42).
        val_fraction: fraction of the 4000 training examples held out for validation (0 = none).
        limit: keep at most this many examples per split (quick tests / smoke runs).
        regenerate: ignore the cache and run the generator again.
    """
    unit_interval("val_fraction", val_fraction, "a fraction", include_one=False)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or null, got {limit!r}")
    arrays = load_mnist1d(data_dir, regenerate=regenerate)
    train = _dataset(arrays["x_train"], arrays["y_train"])
    test = _dataset(arrays["x_test"], arrays["y_test"])
    val = None
    n_val = int(round(len(train) * float(val_fraction)))
    if n_val > 0:
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(int(seed)))
        val, train = train.subset(perm[:n_val]), train.subset(perm[n_val:])
    if limit is not None:
        train, test = train.subset(slice(0, limit)), test.subset(slice(0, limit))
        val = val.subset(slice(0, limit)) if val is not None else None
    info = TaskInfo(
        name="mnist1d",
        d_input=1,
        d_output=10,
        length=int(arrays["x_train"].shape[1]),
        kind="classification",
        input_kind="real",
        citation=CITATION,
    )
    return TaskData(info=info, train=train, val=val, test=test)
