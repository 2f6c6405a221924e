"""The one optimisation loop of the vision experiments (classification, masked pretraining, LongVQ,
video): AdamW with warm-up + cosine (train/optim.py, train/schedule.py; warm-up = 10% of the steps),
gradient clipping at norm 1, a seeded generator for the batches, CPU seconds measured with
``time.process_time``. What differs between experiments is the loss of one batch, passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


def fit(
    model: nn.Module,
    batch_loss: Callable[[torch.Generator], torch.Tensor],
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
    after_step: Callable[[], None] | None = None,
) -> dict:
    """``steps`` optimizer steps on ``batch_loss(generator)`` (a scalar that draws its own batch with the
    generator seeded by ``seed``); ``after_step`` runs after each step (e.g. a momentum teacher's update).
    Returns {"final_loss", "cpu_s"}; leaves ``model`` in training mode."""
    from tqdm.auto import tqdm

    from torchssm.train.optim import build_optimizer
    from torchssm.train.schedule import build_scheduler

    if steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps}")
    gen = torch.Generator().manual_seed(seed)
    opt = build_optimizer(model, lr, weight_decay)
    sched = build_scheduler(opt, steps, warmup_steps=max(1, steps // 10))
    model.train()
    t0 = time.process_time()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        loss = batch_loss(gen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step()
    return {"final_loss": float(loss.detach()), "cpu_s": time.process_time() - t0}
