"""NaN/Inf guard of the training loop: skip a non-finite step, stop when they keep coming.

A step whose loss or global gradient norm is NaN/Inf is *skipped*: the gradients are dropped,
neither the optimizer nor the learning-rate schedule advances, and the weights stay as they
were. One bad batch (a rare overflow) therefore costs one step. When ``max_consecutive + 1``
steps in a row are non-finite the cause is not transient (diverged weights, bad data), so the
guard raises :class:`TrainingDiverged`, naming the first bad step, before any update; the last
checkpoint written is the last healthy one (checkpoints refuse non-finite weights).

The check costs one device sync per step (``bool(isfinite)``); the loop already syncs once per
step for the gradient-norm clip, so this is the cost of the loss value only.
"""

from __future__ import annotations

import torch


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm stayed NaN/Inf; training stopped before updating the weights."""


class NonFiniteGuard:
    """Counts consecutive non-finite steps; ``check`` says whether to skip, or raises past the limit.

    Args:
        max_consecutive: how many non-finite steps in a row are skipped; the next one stops
            training (0: stop at the first). ``TrainConfig.max_nonfinite_steps``.
    """

    def __init__(self, max_consecutive: int = 3):
        if not isinstance(max_consecutive, int) or max_consecutive < 0:
            raise ValueError(f"max_consecutive must be an int >= 0, got {max_consecutive!r}")
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0  # total skipped steps in this run
        self._first: str | None = None  # description of the first bad step of the current streak

    def check(self, what: str, value: torch.Tensor, where: str) -> bool:
        """True when ``value`` (a 0-d tensor: the loss or the gradient norm) is finite.

        False means: skip this step. Raises :class:`TrainingDiverged` when this is the
        ``max_consecutive + 1``-th non-finite step in a row.
        """
        if bool(torch.isfinite(value)):
            return True
        if self.consecutive == 0:
            self._first = f"{what} is {float(value.detach())} at {where}"
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive > self.max_consecutive:
            streak = f" and non-finite for the {self.consecutive - 1} step(s) after it" if self.consecutive > 1 else ""
            raise TrainingDiverged(
                f"{self._first}{streak} (limit train.max_nonfinite_steps={self.max_consecutive}); training stopped "
                f"before the update (no checkpoint written for it). Try a lower train.lr or set train.grad_clip"
            )
        return False

    def ok(self) -> None:
        """Record a healthy step (ends a streak)."""
        self.consecutive = 0
        self._first = None
