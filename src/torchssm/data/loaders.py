"""In-memory datasets, seeded batch iteration and the data directory.

Glossary: n = number of examples, b = batch size, l = sequence length, m = d_input.

Batches are dicts of tensors (see :mod:`torchssm.data.registry`). The order of the examples is a
pure function of ``(seed, epoch)``: ``torch.randperm(n, generator=Generator().manual_seed(...))``,
so a run resumed at an epoch boundary sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from torchssm.fileio import atomic_write

ENV_DATA_DIR = "TORCHSSM_DATA"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$TORCHSSM_DATA``, else ``~/.cache/torchssm``."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_DATA_DIR) or Path.home() / ".cache" / "torchssm"
    return Path(data_dir).expanduser()


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to ``path`` (.npz) via a temporary file in the same directory + ``os.replace``.

    A reader never sees a half-written cache file, and a failed write leaves no temporary file.
    """

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


class TensorDictDataset(Dataset):
    """A dataset of equally long tensors; item ``i`` is ``{name: tensor[i]}``.

    ``TensorDictDataset(inputs=x, targets=y)`` with x (n, l, m) and y (n,) yields
    ``{"inputs": (l, m), "targets": ()}``. :func:`iterate_batches` slices it directly (no per-item
    Python calls), which matters for small models where the data loader would dominate.
    """

    def __init__(self, **tensors: torch.Tensor):
        if not tensors:
            raise ValueError("TensorDictDataset needs at least one tensor, e.g. inputs=..., targets=...")
        sizes = {name: int(t.shape[0]) for name, t in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all tensors must have the same first dimension (number of examples); got {sizes}")
        self.tensors: dict[str, torch.Tensor] = dict(tensors)
        self._n = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}

    def subset(self, index: slice | torch.Tensor) -> TensorDictDataset:
        """A new dataset of the selected examples (a slice or a 1-D index tensor)."""
        return TensorDictDataset(**{name: t[index] for name, t in self.tensors.items()})


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that orders epoch ``epoch`` of a run seeded with ``seed`` (independent of history)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def batch_indices(
    n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None, min_batch: int = 1
) -> list[torch.Tensor]:
    """Split ``range(n)`` (shuffled with ``generator`` when ``shuffle``) into batches of ``batch_size``.

    A trailing batch shorter than the others and than ``min_batch`` is dropped (``min_batch=2`` keeps
    BatchNorm from seeing a lone leftover example in training); with ``batch_size=1`` every batch is a
    whole one and all ``n`` are kept, as :func:`num_batches` counts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = list(order.split(batch_size))
    if batches and len(batches[-1]) < min(min_batch, batch_size):
        batches.pop()
    return batches


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    min_batch: int = 1,
    skip: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches (dicts of tensors with a leading batch dimension) of ``dataset``, leaving out the
    first ``skip`` (an epoch resumed part-way: the order is drawn whole, then the rest is read).

    A :class:`TensorDictDataset` read in the main process is sliced directly; any other dataset
    goes through a ``DataLoader`` with the same batches (same order), so both paths agree.
    """
    batches = batch_indices(len(dataset), batch_size, shuffle=shuffle, generator=generator, min_batch=min_batch)
    batches = batches[skip:]
    if isinstance(dataset, TensorDictDataset) and num_workers == 0:
        for idx in batches:
            yield dataset[idx]
        return
    loader = DataLoader(dataset, batch_sampler=[idx.tolist() for idx in batches], num_workers=num_workers)
    yield from loader


def num_batches(dataset: Dataset, batch_size: int, min_batch: int = 1) -> int:
    """How many batches :func:`iterate_batches` yields for ``dataset``."""
    n = len(dataset)
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= min_batch and rest > 0 else 0)
