"""Language-model metrics: loss, bits per byte, perplexity, and perplexity by position (length extrapolation).

For a split of t tokens holding B bytes (UTF-8) and a mean next-token loss L in nats per token:

    perplexity = exp(L)            bits per byte = L * t / (B ln 2)      (= L / ln 2 for byte-level tokens)

Bits per byte compares models whatever their tokenizer (e.g. MambaByte, Wang et al. 2024, Sec. 4).
Perplexity by position: rows of ``eval_context`` tokens (e.g. 4x the training context) are scored in one
parallel pass, and the loss at position s is averaged over rows and over buckets of positions; a model
that extrapolates keeps a flat (or falling) curve past its training length (Press et al. 2022, "Train
Short, Test Long", Sec. 2, read perplexity this way).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.data.loaders import iterate_batches


@torch.no_grad()
def loss_by_position(model: nn.Module, dataset, batch_size: int = 4, device="cpu") -> torch.Tensor:
    """Mean next-token loss (nats) at each position of the dataset's rows: (context,) float64."""
    model.eval()
    total, count = None, 0
    for batch in iterate_batches(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        kw = {"reset": batch["reset"]} if "reset" in batch else {}
        logits = model(batch["inputs"], **kw)  # (b, l, V)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), reduction="none")
        nll = nll.view(batch["targets"].shape).double().sum(0)  # (l,)
        total = nll if total is None else total + nll
        count += batch["targets"].shape[0]
    if total is None:
        raise ValueError("the evaluation set is empty")
    return (total / count).cpu()


def summarize(per_position: torch.Tensor, train_context: int, bytes_per_token: float = 1.0, n_buckets: int = 0) -> dict:
    """Metrics of a loss-by-position curve: loss / bits per byte / perplexity within the training context and
    over the whole row, and perplexity per bucket of ``train_context`` positions (or ``n_buckets`` buckets)."""
    length = per_position.shape[0]
    width = train_context if n_buckets <= 0 else math.ceil(length / n_buckets)
    inside = float(per_position[:train_context].mean())
    whole = float(per_position.mean())
    buckets = []
    for lo in range(0, length, width):
        loss = float(per_position[lo : lo + width].mean())
        buckets.append(
            {
                "from": lo,
                "to": min(lo + width, length),
                "loss": loss,
                "ppl": math.exp(loss),
                "bpb": loss / math.log(2) / bytes_per_token,
            }
        )
    return {
        "train_context": train_context,
        "eval_context": length,
        "loss": inside,
        "bpb": inside / math.log(2) / bytes_per_token,
        "ppl": math.exp(inside),
        "loss_all": whole,
        "bpb_all": whole / math.log(2) / bytes_per_token,
        "by_position": buckets,
    }
