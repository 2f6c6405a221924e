"""Truncated back-propagation through time (``train.tbptt_chunk`` / ``--tbptt-chunk K``).

A batch of length L is run as chunks of K steps; the model's state (every layer's SSM state,
conv buffers, the running pooled sum) is carried from chunk to chunk, so the *forward values*
are exactly those of one call on the whole sequence, but it is detached at chunk boundaries,
so back-propagation stops there and memory is O(K) instead of O(L):

* per-step outputs (pooling "none": seq2seq / lm tasks): chunk c's loss
  ``mean_c * n_c / n`` (n_c its counted targets, n those of the batch) is back-propagated as
  soon as the chunk is done; the sum over chunks is the full-sequence mean loss;
* pooled outputs (classification / regression on the whole sequence): the loss exists only at
  the end, so chunks 1..C-1 run without gradient (carrying the state and the pooled sum) and
  the gradient flows through the last chunk only.

With K >= L this is ordinary back-propagation. Needs the model's streaming interface
(``model(x, state=..., return_state=True)``, :class:`~torchssm.models.backbone.DeepSSM` with
causal layers) and unpadded batches (no ``lengths``).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from torchssm.data.registry import TaskInfo
from torchssm.train import distributed as D
from torchssm.train.losses import loss_and_correct


def detach_state(state):
    """The same nested dict/list/tuple of tensors, detached from the graph."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return type(state)(detach_state(v) for v in state)


def tbptt_backward(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    info: TaskInfo,
    chunk: int,
    weight: torch.Tensor | None = None,
    *,
    sync: bool = True,
    autocast=nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward + truncated backward of one batch; returns (mean loss (detached), correct count).

    Gradients of ``weight * mean loss`` (see the module docstring) are accumulated into the
    parameters. ``sync``: let DDP reduce gradients in this call (its last backward); ``autocast``:
    a context factory wrapping each forward (bf16), backward runs outside it.
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"tbptt chunk must be a positive int, got {chunk!r}")
    if batch.get("lengths") is not None or batch.get("inputs2") is not None:
        raise ValueError(
            "truncated BPTT needs unpadded, unpaired batches (no lengths / inputs2); "
            "set train.tbptt_chunk=0 for this task"
        )
    inputs, targets = batch["inputs"], batch["targets"]  # (b, l[, m]), (b[, l])
    length = inputs.shape[1]
    weight = torch.ones((), dtype=torch.float64) if weight is None else weight
    per_step = getattr(D.unwrap(model).config, "pooling", None) == "none"
    starts = list(range(0, length, chunk))
    state = None
    if not per_step:  # the loss is at the end: earlier chunks only build the state
        with torch.no_grad(), autocast():
            for s in starts[:-1]:
                _, state = model(inputs[:, s : s + chunk], state=state, return_state=True)
        with D.no_sync(model, sync), autocast():
            out, _ = model(inputs[:, starts[-1] :], state=state, return_state=True)
            loss, correct, _ = loss_and_correct(out, targets, info)
        (loss * weight.to(loss.dtype)).backward()
        return loss.detach(), correct
    total = D.count_targets(targets, info.kind, info.ignore_index).clamp_min(1).to(torch.float64)
    loss_sum = torch.zeros((), dtype=torch.float64, device=inputs.device)
    correct = torch.zeros((), dtype=torch.long, device=inputs.device)
    for i, s in enumerate(starts):
        tgt = targets[:, s : s + chunk]
        n_c = D.count_targets(tgt, info.kind, info.ignore_index)
        with D.no_sync(model, sync and i == len(starts) - 1), autocast():
            out, state = model(inputs[:, s : s + chunk], state=state, return_state=True)
            if int(n_c) == 0:  # nothing counted in this chunk (all ignore_index): a zero loss keeps DDP in step
                loss, c = out.float().sum() * 0.0, torch.zeros((), dtype=torch.long, device=out.device)
            else:
                loss, c, _ = loss_and_correct(out, tgt, info)
        share = n_c.to(torch.float64) / total
        (loss * (share * weight).to(loss.dtype)).backward()
        state = detach_state(state)
        loss_sum += loss.detach().double() * share
        correct += c
    return loss_sum, correct
