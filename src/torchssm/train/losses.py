"""Loss, accuracy and evaluation of a model on the task's batches.

Loss by task kind (:class:`~torchssm.data.registry.TaskInfo`): cross-entropy for
"classification" (logits (b, c), targets (b,)) and per-step tasks ("seq2seq"/"lm": logits
(b, l, c), targets (b, l), ``info.ignore_index`` skipped); mean squared error for "regression"
(output (b, d), targets (b, d), or (b,) when d = 1).

Per-step tasks with few scored positions (MQAR: 16 of 256): :func:`model_loss_and_correct` applies
the output head of a :class:`~torchssm.models.backbone.DeepSSM` to the scored steps only
(``DeepSSM.logits_at``), automatically; loss, gradients and accuracy are those of the full output.

Shared by the training loop (:mod:`torchssm.train.epoch`), truncated BPTT
(:mod:`torchssm.train.tbptt`) and evaluation; it imports neither of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.data.loaders import iterate_batches
from torchssm.data.registry import TaskInfo
from torchssm.models.backbone import DeepSSM
from torchssm.train import distributed as D
from torchssm.train.distill import TEACHER_KEY, distillation_loss

Batch = dict[str, torch.Tensor]


def loss_and_correct(
    output: torch.Tensor, targets: torch.Tensor, info: TaskInfo
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mean loss, number of correct predictions (0 for regression), number of counted targets)."""
    if info.kind == "regression":
        # targets (b, d) like the output, or (b,) for d_output 1; never a reshape of another layout
        # (a transposed (d, b) would pair values with the wrong examples) nor a (b,) vs (b, 1) broadcast
        if targets.shape != output.shape and not (output.shape[-1] == 1 and targets.shape == output.shape[:-1]):
            raise ValueError(
                f"regression targets must have the model output's shape {tuple(output.shape)}"
                + (f" or {tuple(output.shape[:-1])}" if output.shape[-1] == 1 else "")
                + f"; got {tuple(targets.shape)}"
            )
        targets = targets.to(output.dtype).reshape(output.shape)
        return F.mse_loss(output, targets), output.new_zeros((), dtype=torch.long), targets.numel()
    logits = output.reshape(-1, output.shape[-1])  # (b, c) or (b*l, c)
    flat = targets.reshape(-1)  # (b,) or (b*l,)
    if flat.shape[0] != logits.shape[0]:
        raise ValueError(
            f"model output {tuple(output.shape)} does not match targets {tuple(targets.shape)} for a {info.kind!r} task"
        )
    loss = F.cross_entropy(logits, flat, ignore_index=info.ignore_index)
    valid = flat != info.ignore_index
    correct = ((logits.argmax(-1) == flat) & valid).sum()
    return loss, correct, int(valid.sum()) if info.kind != "classification" else flat.shape[0]


def forward_batch(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Model call for a batch dict; ``lengths2`` (padded second sequence of a paired task such as
    LRA Retrieval) is passed only when the batch has it, so models without that argument still work;
    an unpadded, unpaired batch calls ``model(inputs)``, with ``reset=`` when it has packed documents."""
    if batch.get("lengths") is None and batch.get("inputs2") is None:  # e.g. lm_text's packed token rows
        extra = {"reset": batch["reset"]} if batch.get("reset") is not None else {}  # a document starts at reset
        return model(batch["inputs"], **extra)
    extra = {"lengths2": batch["lengths2"]} if batch.get("lengths2") is not None else {}
    return model(batch["inputs"], lengths=batch.get("lengths"), inputs2=batch.get("inputs2"), **extra)


def model_loss_and_correct(
    model: nn.Module, batch: Batch, info: TaskInfo, distill: tuple[float, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``loss_and_correct(forward_batch(model, batch), batch["targets"], info)``, the same numbers.

    ``distill`` = (temperature T, weight w) and a batch with ``teacher_logits`` (training under
    ``train.distill_from``, :mod:`torchssm.train.distill`): the loss is (1 - w) * cross-entropy + w *
    the distillation loss; the correct count is the labels'.

    When some steps of a per-step ("seq2seq" / "lm") batch are not scored (``info.ignore_index``) and
    ``model`` is an unwrapped per-step :class:`DeepSSM` (not DDP / torch.compile, whose forward must
    run), the head is applied to the scored steps only (``model.logits_at``): the mean cross-entropy,
    its gradients and the correct count are those of the full logits, without the (b, l, d_output)
    tensor. Any other case (every step scored, other models, pooled or paired outputs) is the plain call.
    """
    targets = batch["targets"]
    inputs = batch["inputs"]
    if distill is not None and batch.get(TEACHER_KEY) is not None:
        temperature, weight = distill
        output = forward_batch(model, batch)  # (b, c)
        hard, correct, n = loss_and_correct(output, targets, info)
        soft = distillation_loss(output, batch[TEACHER_KEY], temperature)
        return (1.0 - weight) * hard + weight * soft, correct, n
    if (
        info.kind in ("seq2seq", "lm")
        and isinstance(model, DeepSSM)
        and model.config.pooling == "none"
        and not model.config.paired
        and batch.get("inputs2") is None
        and batch.get("reset") is None
        and targets.shape == inputs.shape[:2]
    ):
        scored = targets != info.ignore_index  # (b, l)
        if int(scored.sum()) < targets.numel():
            logits = model.logits_at(inputs, scored, batch.get("lengths"))  # (n, d_output)
            return loss_and_correct(logits, targets[scored], info)  # the n scored targets (n,)
    return loss_and_correct(forward_batch(model, batch), targets, info)


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of ``batch`` on ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    info: TaskInfo,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    ctx: D.DistContext | None = None,
) -> dict[str, float]:
    """{"loss", "acc" (classification kinds), "n"} of ``model`` on ``dataset`` (eval mode, restored after).

    Under ``torchrun`` (``ctx``) each rank evaluates the examples ``rank::world`` and the sums are
    all-reduced, so every rank returns the numbers of the whole set.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    if ctx is not None and ctx.enabled:
        dataset = D.rank_subset(dataset, ctx)
    try:
        for batch in iterate_batches(dataset, batch_size) if len(dataset) else ():
            batch = batch_to(batch, torch.device(device))
            loss, c, n = model_loss_and_correct(model, batch, info)
            loss_sum += float(loss) * n
            correct += int(c)
            count += n
    finally:
        model.train(was_training)
    if ctx is not None and ctx.enabled:
        totals = D.all_reduce_sum(torch.tensor([loss_sum, correct, count], dtype=torch.float64, device=device), ctx)
        loss_sum, correct, count = float(totals[0]), int(totals[1]), int(totals[2])
    out = {"loss": loss_sum / max(count, 1), "n": count}
    if info.kind != "regression":
        out["acc"] = correct / max(count, 1)
    return out
