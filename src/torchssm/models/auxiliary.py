"""Auxiliary training losses of layers (e.g. a mixture of experts' load balancing), added to the task loss.

A module with an auxiliary loss stores it in its attribute ``aux_loss`` during a forward in training mode: a
scalar tensor, already multiplied by the module's coefficient, with its graph; ``None`` in eval mode. Nothing
else is needed from the module, so any layer (inside the LM, the deep model, or a user's model) takes part.
The training loop (:func:`torchssm.train.epoch.train_step`) backpropagates

    loss = task loss + sum over modules of module.aux_loss

and logs the sum as ``train_aux_loss``; evaluation reports the task loss only (bits per byte stay pure
cross-entropy). The loop takes the values with :func:`pop_auxiliary_loss` (which clears them) after each
forward, so a value is never used twice; a module overwrites its value on every forward (never
accumulates), so a loop that never reads it keeps no graph alive beyond the next forward. Truncated BPTT
(``train.tbptt_chunk``) does not add auxiliary losses.
"""

from __future__ import annotations

import torch
from torch import nn


def pop_auxiliary_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of ``m.aux_loss`` over the modules of ``model`` that set one since the last pop (or None); each
    module's ``aux_loss`` is reset to None."""
    total = None
    for module in model.modules():
        value = getattr(module, "aux_loss", None)
        if isinstance(value, torch.Tensor):
            total = value if total is None else total + value
            # popped: used once (torch types nn.Module.__setattr__'s value Tensor | Module; None is a plain attribute)
            module.aux_loss = None  # type: ignore[assignment]
    return total
