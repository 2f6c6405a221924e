"""Learning-rate schedule: linear warm-up, then cosine decay, the recipe of the S5 and LRU
training set-ups (Smith et al. 2023; Orvieto et al. 2023); cosine annealing from Loshchilov &
Hutter 2017 ("SGDR"), warm-up from Goyal et al. 2017.

The multiplier of step s (0-based, one step = one optimizer update), warm-up W, total T::

    s <  W:  (s + 1) / W                                   (reaches 1 at the last warm-up step)
    s >= W:  r + (1 - r) * (1 + cos(pi * p)) / 2,  p = (s - W) / max(1, T - W - 1)   (1 -> r)

with r = ``min_ratio``; it multiplies each parameter group's own learning rate, so the groups'
ratios (e.g. the LRU's lr * 0.5) are kept all along.
"""

from __future__ import annotations

import math

import torch

from torchssm.checks import unit_interval


class WarmupCosine:
    """Picklable multiplier ``f(step)`` (see the module docstring) for ``torch.optim.lr_scheduler.LambdaLR``."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        unit_interval("min_ratio", min_ratio, "a ratio")
        self.total_steps, self.warmup_steps, self.min_ratio = int(total_steps), int(warmup_steps), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps - 1))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :class:`WarmupCosine`; call ``scheduler.step()`` after each ``optimizer.step()``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_ratio))
