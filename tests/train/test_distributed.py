"""Data parallelism and gradient accumulation: 2 gloo processes under torchrun (CPU), and
micro-batch accumulation, give the losses and weights of one process with the same global batch
(LayerNorm, dropout off: BatchNorm statistics and per-rank dropout differ by design)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from torchssm.train.checkpoint import WEIGHTS
from torchssm.train.config import load_config
from torchssm.train.distributed import DistContext, micro_batches, rank_shard
from torchssm.train.loop import train

CONFIG = {
    "task": {"name": "adding", "length": 10, "n_train": 40, "n_val": 8, "n_test": 8},
    "model": {"layer": "lru", "d_model": 8, "n_layers": 1, "norm": "layer", "layer_kwargs": {"d_state": 4}},
    "train": {
        "epochs": 2,
        "batch_size": 10,
        "lr": 1e-2,
        "progress": False,
        "device": "cpu",
        "threads": 1,
        "keep_checkpoints": 0,
    },
}


def run_config(out_dir, **train_opts):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["train"].update(out_dir=str(out_dir), **train_opts)
    return cfg


def metrics(run_dir):
    out = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time_s"} for r in out]


def assert_same_run(a, b, rtol):
    ma, mb = metrics(a), metrics(b)
    assert [r["step"] for r in ma] == [r["step"] for r in mb]
    for ra, rb in zip(ma, mb):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=rtol), key
    wa, wb = load_file(a / "last" / WEIGHTS), load_file(b / "last" / WEIGHTS)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=rtol, atol=rtol, msg=k)


def test_rank_shards_cover_the_global_batch_and_micro_batches_split_it():
    batch = {"inputs": torch.arange(10)[:, None], "targets": torch.arange(10)}
    shards = [rank_shard(batch, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(torch.cat([s["targets"] for s in shards]).tolist()) == list(range(10))
    parts = micro_batches(batch, 4)
    assert [len(p["targets"]) for p in parts] == [3, 3, 2, 2]
    assert torch.equal(torch.cat([p["inputs"] for p in parts]), batch["inputs"])
    with pytest.raises(ValueError, match="cannot be split over 3 ranks"):
        rank_shard({"targets": torch.arange(2)}, DistContext(rank=0, world_size=3))


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    data = tmp_path / "data"
    train(load_config(base=run_config(tmp_path / "one")), data_dir=data, log=lambda m: None)
    train(load_config(base=run_config(tmp_path / "acc", grad_accum=3)), data_dir=data, log=lambda m: None)
    assert_same_run(tmp_path / "one", tmp_path / "acc", rtol=1e-5)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process reference run (global batch 10, 2 epochs)."""
    root = tmp_path_factory.mktemp("single")
    train(load_config(base=run_config(root / "run")), data_dir=root / "data", log=lambda m: None)
    return root


def torchrun(tmp_path, data_dir, out_dir, *args, **train_opts):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(run_config(out_dir, **train_opts)))
    env = {**os.environ, "TORCHSSM_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "torchssm",
            "train",
            "--config",
            str(cfg_path),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # two torchrun processes each import torch: 20-60 s, over the area's 45 s budget
def test_torchrun_two_gloo_processes_equal_one_process(tmp_path, single):
    ddp = tmp_path / "ddp"
    proc = torchrun(tmp_path, single / "data", ddp)
    assert proc.stdout.count("test loss:") == 1  # only rank 0 reports
    assert json.loads((ddp / "result.json").read_text())["world_size"] == 2
    assert_same_run(single / "run", ddp, rtol=1e-5)


@pytest.mark.slow  # two torchrun processes each import torch: 20-60 s, over the area's 45 s budget
def test_fsdp_two_processes_with_resume_equal_one_process(tmp_path, single):
    run = tmp_path / "fsdp"
    torchrun(tmp_path, single / "data", run, "--stop-after", "1", fsdp=True)  # epoch 1, full checkpoint
    torchrun(tmp_path, single / "data", run, "--resume", fsdp=True)  # epoch 2 from it
    assert [r["epoch"] for r in metrics(run)] == [1, 2]
    assert_same_run(single / "run", run, rtol=1e-5)
