"""MNIST-1D task: the package's own generator with the paper's defaults, cached atomically,
seeded validation split, global RNG streams left alone."""

import os
import random

import numpy as np
import pytest
import torch

from torchssm.data import build_task, list_tasks, mnist1d
from torchssm.data.loaders import (
    ENV_DATA_DIR,
    TensorDictDataset,
    batch_indices,
    iterate_batches,
    num_batches,
    resolve_data_dir,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    build_task("mnist1d", data_dir=path)  # generate once for the module (~1 s)
    return path


def test_shapes_splits_and_paper_defaults(data_dir):
    task = build_task("mnist1d", data_dir=data_dir)
    info = task.info
    assert (info.d_input, info.d_output, info.length, info.kind) == (1, 10, 40, "classification")
    assert "Greydanus" in info.citation
    assert (len(task.train), len(task.val), len(task.test)) == (3600, 400, 1000)  # 4000 train / 1000 test
    item = task.train[0]
    assert item["inputs"].shape == (40, 1) and item["inputs"].dtype == torch.float32
    assert item["targets"].shape == () and item["targets"].dtype == torch.int64
    ys = task.test.tensors["targets"]
    assert set(ys.tolist()) == set(range(10))
    # the generator's own output in its own order: mnist1d's default data set (seed 42) starts with
    # these labels, and is normalised to mean 0 / std 1 over all 5000 examples
    full = build_task("mnist1d", data_dir=data_dir, val_fraction=0.0)
    assert full.train.tensors["targets"][:10].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1]
    x = torch.cat([full.train.tensors["inputs"], task.test.tensors["inputs"]]).double()
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-3


def test_split_is_seeded_and_partitions_train(data_dir):
    a = build_task("mnist1d", data_dir=data_dir, seed=1, val_fraction=0.25)
    b = build_task("mnist1d", data_dir=data_dir, seed=1, val_fraction=0.25)
    c = build_task("mnist1d", data_dir=data_dir, seed=2, val_fraction=0.25)
    assert torch.equal(a.val.tensors["inputs"], b.val.tensors["inputs"])
    assert not torch.equal(a.val.tensors["inputs"], c.val.tensors["inputs"])
    assert (len(a.train), len(a.val)) == (3000, 1000)
    full = build_task("mnist1d", data_dir=data_dir, val_fraction=0.0)
    assert full.val is None and len(full.train) == 4000
    union = torch.cat([a.train.tensors["inputs"], a.val.tensors["inputs"]])[..., 0]
    key = lambda x: sorted(map(tuple, x.tolist()))  # noqa: E731
    assert key(union) == key(full.train.tensors["inputs"][..., 0])


def test_limit_and_bad_options(data_dir):
    task = build_task("mnist1d", data_dir=data_dir, limit=50)
    assert (len(task.train), len(task.val), len(task.test)) == (50, 50, 50)
    with pytest.raises(ValueError, match="val_fraction"):
        build_task("mnist1d", data_dir=data_dir, val_fraction=1.5)
    with pytest.raises(ValueError, match="limit"):
        build_task("mnist1d", data_dir=data_dir, limit=0)
    with pytest.raises(TypeError, match="bad options for task 'mnist1d'"):
        build_task("mnist1d", data_dir=data_dir, colour="red")


def test_cache_is_reused_atomic_and_rebuilt_when_damaged(data_dir, monkeypatch):
    """Also: generating (here, after the damage) leaves python's and numpy's global RNGs alone."""
    path = mnist1d.cache_path(data_dir)
    assert path.is_file() and [p.name for p in data_dir.iterdir()] == [path.name]  # no temp files
    monkeypatch.setattr(mnist1d, "generate_mnist1d", lambda: pytest.fail("the cache was not used"))
    build_task("mnist1d", data_dir=data_dir)
    monkeypatch.undo()
    path.write_bytes(b"garbage")
    random.seed(5), np.random.seed(5)
    expected = (random.random(), np.random.rand())
    random.seed(5), np.random.seed(5)
    with pytest.warns(UserWarning, match="unreadable"):
        task = build_task("mnist1d", data_dir=data_dir)
    assert (random.random(), np.random.rand()) == expected  # the generator calls np.random.seed(42)
    assert len(task.test) == 1000 and path.stat().st_size > 100_000


def test_failed_cache_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    tiny = {
        "x_train": np.zeros((4, 40), np.float32),
        "y_train": np.zeros(4, np.int64),
        "x_test": np.zeros((2, 40), np.float32),
        "y_test": np.zeros(2, np.int64),
    }
    monkeypatch.setattr(mnist1d, "generate_mnist1d", lambda: tiny)
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        build_task("mnist1d", data_dir=tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv(ENV_DATA_DIR)
    assert resolve_data_dir() == resolve_data_dir(os.path.expanduser("~/.cache/torchssm"))


def test_registered():
    assert "mnist1d" in list_tasks()


def test_batches_are_seeded_and_both_paths_agree(data_dir):
    task = build_task("mnist1d", data_dir=data_dir, limit=70)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    fast = list(iterate_batches(task.train, 32, shuffle=True, generator=gen(), min_batch=8))
    slow = list(iterate_batches(list(task.train), 32, shuffle=True, generator=gen(), min_batch=8))
    assert [len(b["targets"]) for b in fast] == [32, 32]  # the trailing 6 < min_batch are dropped
    for f, s in zip(fast, slow, strict=True):
        assert torch.equal(f["inputs"], s["inputs"]) and torch.equal(f["targets"], s["targets"])
    idx = torch.cat(batch_indices(70, 32, shuffle=True, generator=gen()))
    assert sorted(idx.tolist()) == list(range(70))


@pytest.mark.parametrize("n,batch_size,sizes", [(5, 1, [1] * 5), (5, 2, [2, 2]), (6, 2, [2, 2, 2]), (7, 3, [3, 3])])
def test_min_batch_drops_only_a_short_leftover_and_num_batches_counts_what_is_yielded(n, batch_size, sizes):
    """min_batch=2 (the trainer's) drops a lone leftover example; batch_size=1 keeps every example."""
    dataset = TensorDictDataset(x=torch.arange(n))
    batches = batch_indices(n, batch_size, shuffle=False, min_batch=2)
    assert [len(b) for b in batches] == sizes
    assert num_batches(dataset, batch_size, min_batch=2) == len(sizes)
    assert [len(b["x"]) for b in iterate_batches(dataset, batch_size, min_batch=2)] == sizes
