"""Helpers shared by the training-loop tests (imported as ``from _loop_common import ...``): a toy task, its
config, a silent log and a model whose output turns NaN."""

import torch
from torch import nn

from torchssm.data.loaders import TensorDictDataset
from torchssm.data.registry import TaskData, TaskInfo
from torchssm.train.config import load_config


def toy_task(n=96, length=6):
    """Label = which of 3 input channels has the largest sum: learnable in a few epochs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 32, length, 3, generator=g)  # (n, l, 3)
    y = x.sum(1).argmax(-1)  # (n,)
    ds = TensorDictDataset(inputs=x, targets=y)
    info = TaskInfo(name="toy", d_input=3, d_output=3, length=length)
    return TaskData(
        info=info, train=ds.subset(slice(0, n)), val=ds.subset(slice(n, n + 16)), test=ds.subset(slice(n + 16, n + 32))
    )


def tiny_train(**changes) -> dict:
    """The ``train`` section of the tiny runs several test files write out: a few epochs of batch 16 at lr 1e-2 on
    one CPU thread (tiny tensors: one thread avoids OpenMP overhead and keeps float32 reductions in one order),
    no progress bar; ``changes`` add or replace entries."""
    return {"epochs": 3, "batch_size": 16, "lr": 1e-2, "progress": False, "device": "cpu", "threads": 1, **changes}


def config(out_dir, *extra):
    return load_config(
        base={
            "task": {"name": "toy"},
            "model": {"layer": "lru", "d_model": 8, "n_layers": 1, "dropout": 0.1, "layer_kwargs": {"d_state": 4}},
            "train": {
                "epochs": 2,
                "batch_size": 16,
                "lr": 1e-2,
                "warmup_steps": 2,
                "grad_clip": 1.0,
                "out_dir": str(out_dir),
                "progress": False,
                "threads": 1,
            },  # tiny tensors: one thread avoids OpenMP overhead on a shared CPU
        },
        overrides=list(extra),
    )


def quiet(msg):
    pass


class Exploding(nn.Module):
    """Stand-in model (the interface of models.build_model) whose output turns NaN from its 9th call."""

    def __init__(self, cfg):
        super().__init__()
        self.lin = nn.Linear(cfg.d_input, cfg.d_output)
        self.calls = 0

    def forward(self, inputs, lengths=None, inputs2=None):
        self.calls += 1
        out = self.lin(inputs.mean(1))  # (b, d_output)
        return out * float("nan") if self.calls > 8 else out
