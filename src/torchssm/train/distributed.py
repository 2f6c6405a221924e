"""Data-parallel training under ``torchrun`` (DistributedDataParallel), and gradient accumulation.

    torchrun --nproc-per-node 2 -m torchssm train --preset mnist1d_lru

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``;
:func:`init_distributed` joins the process group (NCCL on CUDA, gloo on CPU) and every rank
builds the same model from the same seed. Batches: ``train.batch_size`` is the *global* batch
B. Every rank draws the same seeded order of global batches (``epoch_generator(seed, epoch)``)
and keeps the examples ``rank::world`` of each one (the striding of torch's
``DistributedSampler``, applied per global batch); each rank's slice is further split into
``train.grad_accum`` micro-batches. The loss of micro-batch i on rank r is weighted by
``n_i * world / N`` (n_i its targets, N those of the global batch, one all-reduce), so that
after DDP averages the gradients over ranks the update is that of the mean loss over the global
batch: the same as one process with batch B and no accumulation (up to float rounding), with
LayerNorm (BatchNorm statistics are per micro-batch and per rank by design) and dropout off.

Only rank 0 writes metrics, checkpoints and logs; evaluation is sharded the same way
(examples ``rank::world``, sums all-reduced), so every rank holds the metrics of the whole set.

``train.fsdp=true`` shards parameters, gradients and optimizer state instead (FSDP2
``fully_shard`` per residual block, :func:`shard_model`); checkpoints are gathered in full on rank
0 (:func:`full_state`) and have the same format as unsharded ones, so a run can be resumed, or
evaluated, with or without FSDP.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

Batch = dict[str, torch.Tensor]


@dataclass
class DistContext:
    """Where this process stands in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this context initialised the process group (and destroys it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistContext:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (else a single-process context).

    ``device`` decides the backend: NCCL for CUDA, gloo otherwise. On CUDA each rank uses
    ``cuda:LOCAL_RANK`` (see :func:`rank_device`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local, owns_group=False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, owns_group=True)


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun; other devices unchanged."""
    if ctx.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself."""
    if not ctx.enabled:
        return model
    ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def no_sync(model: nn.Module, sync: bool):
    """Skip the gradient reduction for accumulation micro-batches that are not the last (DDP's
    ``no_sync()``, FSDP2's ``set_requires_gradient_sync(False)``); a no-op otherwise."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if not sync and hasattr(model, "set_requires_gradient_sync"):
        return _fsdp_no_sync(model)
    return nullcontext()


@contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


# --- FSDP2 (models that do not fit one device) ------------------------------------------------------------
def shard_model(model: nn.Module) -> nn.Module:
    """FSDP2 in place: ``fully_shard`` every residual block (``model.blocks``, or a language model's
    ``backbone.layers``), then the root. Build the optimizer *after* this (parameters become DTensors)."""
    from torch.distributed.fsdp import fully_shard

    blocks = getattr(model, "blocks", None)
    if blocks is None:
        blocks = getattr(getattr(model, "backbone", None), "layers", [])
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def full_state(model: nn.Module, optimizer) -> tuple:
    """(model state dict, optimizer state dict keyed by parameter names), gathered in full on rank 0
    (other ranks get empty dicts). A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer, model_state: dict, optimizer_state: dict) -> None:
    """Load full (unsharded) state dicts into a sharded model and its optimizer (every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optimizer_state,
        options=StateDictOptions(full_state_dict=True),
    )


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself when not distributed)."""
    if ctx.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def rank_shard(batch: Batch, ctx: DistContext) -> Batch:
    """This rank's examples ``rank::world`` of a global batch (every tensor has a batch dimension)."""
    if not ctx.enabled:
        return batch
    n = next(iter(batch.values())).shape[0]
    if n < ctx.world_size:
        raise ValueError(
            f"a global batch of {n} examples cannot be split over {ctx.world_size} ranks; "
            f"use train.batch_size >= {ctx.world_size}"
        )
    return {k: v[ctx.rank :: ctx.world_size] for k, v in batch.items()}


def rank_subset(dataset, ctx: DistContext):
    """This rank's examples ``rank::world`` of a whole dataset (for sharded evaluation)."""
    from torch.utils.data import Subset

    from torchssm.data.loaders import TensorDictDataset

    index = torch.arange(ctx.rank, len(dataset), ctx.world_size)
    return dataset.subset(index) if isinstance(dataset, TensorDictDataset) else Subset(dataset, index.tolist())


def micro_batches(batch: Batch, n: int) -> list[Batch]:
    """Split a batch into ``n`` nearly equal micro-batches (empty ones dropped) for accumulation."""
    size = next(iter(batch.values())).shape[0]
    if size == 0:
        return []
    parts = [{k: v[idx] for k, v in batch.items()} for idx in torch.arange(size).tensor_split(min(n, size))]
    return [p for p in parts if next(iter(p.values())).shape[0] > 0]


def count_targets(targets: torch.Tensor, kind: str, ignore_index: int) -> torch.Tensor:
    """Number of targets a batch contributes to the mean loss (as ``loss_and_correct`` counts them)."""
    if kind == "regression":
        return torch.tensor(targets.numel(), device=targets.device)
    if kind == "classification":
        return torch.tensor(targets.shape[0], device=targets.device)
    return (targets != ignore_index).sum()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and/or ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = cast(nn.Module, model.module)  # the wrapped module
        elif hasattr(model, "_orig_mod"):
            model = cast(nn.Module, model._orig_mod)  # torch.compile's wrapped module
        else:
            return model


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job (``RANK`` unset: a single process, so True)."""
    return int(os.environ.get("RANK", "0")) == 0


def main_only(ctx: DistContext | None, fn):
    """``fn`` on rank 0, a no-op elsewhere (for logging callbacks)."""
    if ctx is None or ctx.is_main:
        return fn
    return lambda *a, **k: None
