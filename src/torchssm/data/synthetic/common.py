"""Shared machinery of the synthetic tasks: per-example seeding and lazily generated data sets.

Every synthetic example is a pure function of ``(seed, split, index)``: example ``i`` of a split
is drawn with a ``torch.Generator`` seeded by :func:`example_seed`. So a data set can be
generated lazily (item by item, nothing stored: L = 4096 selective copying, 2^14-long induction
heads) or materialised into a :class:`~torchssm.data.loaders.TensorDictDataset` (fast slicing by
the training loop) and both hold exactly the same examples.

A generator function has the signature ``make(generator) -> {name: tensor}`` and returns ONE
example without a batch dimension, e.g. ``{"inputs": (L,) long, "targets": (L,) long}``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from torchssm.data.loaders import TensorDictDataset
from torchssm.data.registry import TaskData, TaskInfo

Example = dict[str, torch.Tensor]
MakeExample = Callable[[torch.Generator], Example]

SPLITS = {"train": 0, "val": 1, "test": 2}
_MASK64 = (1 << 64) - 1
# Materialise a split when it holds at most this many sequence steps (64 MiB per int64 tensor).
MATERIALIZE_MAX_STEPS = 1 << 23


def _splitmix64(x: int) -> int:
    """One round of SplitMix64 (Steele et al. 2014): a bijective 64-bit integer mixer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def example_seed(seed: int, split: int, index: int) -> int:
    """The seed of example ``index`` of split ``split`` (0 train, 1 val, 2 test) for run ``seed``."""
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ int(split))
    h = _splitmix64(h ^ int(index))
    return h & ((1 << 63) - 1)


def example_generator(seed: int, split: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(example_seed(seed, split, index))


class GeneratedDataset(Dataset):
    """``n`` examples, example ``i`` = ``make(example_generator(seed, split, i))``; nothing stored."""

    def __init__(self, make: MakeExample, n: int, seed: int, split: int):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"number of examples must be a positive int, got {n!r}")
        self.make, self.n, self.seed, self.split = make, n, int(seed), int(split)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Example:
        index = int(index)
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for a data set of {self.n} examples")
        return self.make(example_generator(self.seed, self.split, index))

    def materialize(self) -> TensorDictDataset:
        """All examples stacked into one :class:`TensorDictDataset` (same values)."""
        items = [self[i] for i in range(self.n)]
        return TensorDictDataset(**{k: torch.stack([it[k] for it in items]) for k in items[0]})


def make_split(
    make: MakeExample, n: int, seed: int, split: str, length: int, materialize: bool | None = None
) -> Dataset:
    """A split of ``n`` examples; materialised when ``materialize`` (default: if n*length is small)."""
    ds = GeneratedDataset(make, n, seed, SPLITS[split])
    if materialize is None:
        materialize = n * length <= MATERIALIZE_MAX_STEPS
    return ds.materialize() if materialize else ds


def synthetic_task(
    info: TaskInfo,
    make: MakeExample,
    *,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    materialize: bool | None = None,
    extra: dict | None = None,
) -> TaskData:
    """TaskData with three independently seeded splits (val omitted when ``n_val == 0``)."""
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(n, int) or n < (0 if name == "n_val" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'n_val' else 'positive'} int, got {n!r}")
    split = lambda name, n: make_split(make, n, seed, name, info.length, materialize)  # noqa: E731
    return TaskData(
        info=info,
        train=split("train", n_train),
        val=split("val", n_val) if n_val else None,
        test=split("test", n_test),
        extra=dict(extra or {}),
    )


def check_positive_ints(**values) -> None:
    """Raise ValueError naming the first option that is not a positive int."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def randint(low: int, high: int, size, generator: torch.Generator) -> torch.Tensor:
    """Integers uniform in [low, high), int64."""
    return torch.randint(low, high, tuple(size) if not isinstance(size, int) else (size,), generator=generator)
