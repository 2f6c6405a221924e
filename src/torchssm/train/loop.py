"""The training loop: seeded, resumable bit-for-bit, stopping cleanly on a non-finite loss.

One run (``train(cfg)``):

1. seed python/numpy/torch; build the task (``data.build_task``) and the model
   (``models.build_model``, d_input/d_output from the task's TaskInfo);
2. AdamW with the layers' parameter groups (:mod:`torchssm.train.optim`), warm-up + cosine per
   step (:mod:`torchssm.train.schedule`), optional global-norm gradient clipping;
3. each epoch: batches in a seeded order that depends only on (seed, epoch), a tqdm bar with the
   running loss/accuracy; then evaluation on val and test, one JSON line in
   ``<out_dir>/metrics.jsonl``, checkpoints ``<out_dir>/last`` (always) and ``<out_dir>/best``
   (best validation accuracy, or lowest validation loss for regression);
4. ``resume=...`` reloads weights, optimizer, scheduler and RNG states from ``last`` and continues
   at the next epoch; with the data order fixed by (seed, epoch) the result equals an
   uninterrupted run exactly.

Scale and reliability (docs/reliability.md): under ``torchrun`` the model is wrapped in DDP, each
rank trains on its share of every global batch and only rank 0 writes
(:mod:`torchssm.train.distributed`); ``train.grad_accum`` micro-batches per step; bf16 autocast
(``train.precision``); ``train.compile``; truncated BPTT (``train.tbptt_chunk``,
:mod:`torchssm.train.tbptt`); a NaN/Inf loss or gradient skips the step and stops training after
``train.max_nonfinite_steps`` in a row (:mod:`torchssm.train.guard`); the last
``train.keep_checkpoints`` epochs are kept for recovery from a torn ``last``.

Loss: cross-entropy for "classification" (logits (b, c), targets (b,)) and per-step tasks
("seq2seq"/"lm": logits (b, l, c), targets (b, l), ``ignore_index`` skipped); mean squared error
for "regression".
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm.auto import tqdm

from torchssm.cpu_threads import get_cpu_threads, set_cpu_threads
from torchssm.data.loaders import epoch_generator, iterate_batches, num_batches
from torchssm.data.registry import TaskData, TaskInfo, build_task
from torchssm.train import distributed as D
from torchssm.train.checkpoint import (OPTIMIZER, SNAPSHOTS, load_checkpoint, prune_checkpoints,
                                       read_checkpoint_state, save_checkpoint, snapshot_checkpoint)
from torchssm.train.config import ExperimentConfig, model_config_for_task, saved_config
from torchssm.train.guard import NonFiniteGuard, TrainingDiverged
from torchssm.train.optim import build_optimizer
from torchssm.train.schedule import build_scheduler

METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
# Entries that may differ between a run and its resumption without changing the result.
RUNTIME_KEYS = {"out_dir", "device", "num_workers", "progress", "threads", "eval_batch_size", "save_checkpoints",
                "keep_checkpoints", "compile"}


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to ``torch.device``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(spec)
    except RuntimeError as err:
        raise ValueError(f"train.device: {err}") from None


# --- loss and metrics ---------------------------------------------------------------------------
def loss_and_correct(output: torch.Tensor, targets: torch.Tensor, info: TaskInfo) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """(mean loss, number of correct predictions (0 for regression), number of counted targets)."""
    if info.kind == "regression":
        # targets (b, d) like the output, or (b,) for d_output 1; never a reshape of another layout
        # (a transposed (d, b) would pair values with the wrong examples) nor a (b,) vs (b, 1) broadcast
        if targets.shape != output.shape and not (output.shape[-1] == 1 and targets.shape == output.shape[:-1]):
            raise ValueError(f"regression targets must have the model output's shape {tuple(output.shape)}"
                             + (f" or {tuple(output.shape[:-1])}" if output.shape[-1] == 1 else "")
                             + f"; got {tuple(targets.shape)}")
        targets = targets.to(output.dtype).reshape(output.shape)
        return F.mse_loss(output, targets), output.new_zeros((), dtype=torch.long), targets.numel()
    logits = output.reshape(-1, output.shape[-1])  # (b, c) or (b*l, c)
    flat = targets.reshape(-1)  # (b,) or (b*l,)
    if flat.shape[0] != logits.shape[0]:
        raise ValueError(f"model output {tuple(output.shape)} does not match targets {tuple(targets.shape)} "
                         f"for a {info.kind!r} task")
    loss = F.cross_entropy(logits, flat, ignore_index=info.ignore_index)
    valid = flat != info.ignore_index
    correct = ((logits.argmax(-1) == flat) & valid).sum()
    return loss, correct, int(valid.sum()) if info.kind != "classification" else flat.shape[0]


def _forward(model: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Model call for a batch dict; ``lengths2`` (padded second sequence of a paired task such as
    LRA Retrieval) is passed only when the batch has it, so models without that argument still work."""
    extra = {"lengths2": batch["lengths2"]} if batch.get("lengths2") is not None else {}
    return model(batch["inputs"], lengths=batch.get("lengths"), inputs2=batch.get("inputs2"), **extra)


def _to(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: nn.Module, dataset, info: TaskInfo, batch_size: int = 512,
             device: Union[str, torch.device] = "cpu", ctx: Optional["D.DistContext"] = None) -> Dict[str, float]:
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
            batch = _to(batch, torch.device(device))
            loss, c, n = loss_and_correct(_forward(model, batch), batch["targets"], info)
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


# --- the run ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    out_dir: Path
    epochs_done: int
    last: Dict  # the last metrics record (train/val/test metrics of the final epoch)
    best: Optional[Dict]  # the record of the best validation epoch (None without a validation set)
    train_time_s: float  # time in the epoch loop (training + evaluation) in this invocation
    wall_time_s: float  # the whole call, data and model building included
    history: list = field(default_factory=list)


def _is_better(record: Dict, best: Optional[Dict], kind: str) -> bool:
    if "val_loss" not in record:
        return False
    if best is None:
        return True
    if kind == "regression":
        return record["val_loss"] < best["val_loss"]
    return (record["val_acc"], -record["val_loss"]) > (best["val_acc"], -best["val_loss"])


def _check_resume_config(saved: dict, current: dict) -> None:
    diffs = []
    for section in ("task", "model", "train"):
        keys = set(saved.get(section, {})) | set(current.get(section, {}))
        for key in sorted(keys):
            if section == "train" and key in RUNTIME_KEYS:
                continue
            if saved.get(section, {}).get(key) != current.get(section, {}).get(key):
                diffs.append(f"{section}.{key}: checkpoint {saved.get(section, {}).get(key)!r} != "
                             f"now {current.get(section, {}).get(key)!r}")
    if diffs:
        raise ValueError("cannot resume: the config differs from the checkpoint's (" + "; ".join(diffs) + "); "
                         "resume without --config to use the checkpoint's own")


def _read_metrics(path: Path, upto_epoch: int) -> list:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("epoch", 0) <= upto_epoch]


def train(cfg: ExperimentConfig, *, data_dir=None, resume: Union[str, Path, None] = None,
          stop_after_epochs: Optional[int] = None, task: Optional[TaskData] = None,
          model_builder: Optional[Callable[..., nn.Module]] = None, log: Callable[[str], None] = print) -> RunResult:
    """Train ``cfg`` (see the module docstring) and return a :class:`RunResult`.

    Args:
        data_dir: where tasks cache their data (default: ``$TORCHSSM_DATA`` or ~/.cache/torchssm).
        resume: a checkpoint directory (normally ``<out_dir>/last``) to continue from.
        stop_after_epochs: stop after this many epochs in this call (the schedule still spans
            ``train.epochs``; continue later with ``resume``).
        task: an already built task (skips ``build_task``); model_builder: replaces
            ``torchssm.models.build_model`` (tests use a small stand-in).
    Raises:
        TrainingDiverged: when more than ``train.max_nonfinite_steps`` steps in a row have a NaN/Inf
            loss or gradient norm (no checkpoint is written for them).
    """
    threads = get_cpu_threads()
    if cfg.train.threads > 0:
        set_cpu_threads(cfg.train.threads)
    ctx = D.init_distributed(resolve_device(cfg.train.device))
    try:
        return _train(cfg, data_dir, resume, stop_after_epochs, task, model_builder, D.main_only(ctx, log), ctx)
    finally:
        set_cpu_threads(*threads)  # a library call leaves the process as it found it
        D.shutdown(ctx)


def _train_step(model: nn.Module, batch: Dict[str, torch.Tensor], info: TaskInfo, tc, ctx: "D.DistContext",
                device: torch.device):
    """Forward + backward of one global batch (this rank's share, in ``tc.grad_accum`` micro-batches).

    Returns (global mean loss, global number of correct predictions, global target count), the
    gradients accumulated so that they are those of the global mean loss (see
    :mod:`torchssm.train.distributed`).
    """
    # the same number of micro-batches on every rank (FSDP's collectives run per forward)
    n_parts = min(tc.grad_accum, next(iter(batch.values())).shape[0] // ctx.world_size) or 1
    parts = D.micro_batches(D.rank_shard(batch, ctx), n_parts)
    counts = [D.count_targets(p["targets"], info.kind, info.ignore_index) for p in parts]
    n_global = D.all_reduce_sum(torch.stack(counts).sum(), ctx).to(torch.float64)  # one sync
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    def autocast():  # bf16 activations; SSM parameters and states stay float32 (the layers see to it)
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")

    for i, (part, n_i) in enumerate(zip(parts, counts)):
        part = _to(part, device)
        weight = n_i.to(torch.float64) * ctx.world_size / n_global  # of this micro-batch's mean loss
        sync = i == len(parts) - 1  # DDP reduces gradients in the last micro-batch's backward
        if tc.tbptt_chunk > 0:
            from torchssm.train.tbptt import tbptt_backward

            loss, c = tbptt_backward(model, part, info, tc.tbptt_chunk, weight, sync=sync, autocast=autocast)
        else:
            with D.no_sync(model, sync):
                with autocast():
                    loss, c, _ = loss_and_correct(_forward(model, part), part["targets"], info)
                (loss * weight.to(loss.dtype)).backward()
        loss_sum += loss.detach().double() * n_i
        correct += c
    totals = D.all_reduce_sum(torch.stack([loss_sum, correct.double()]), ctx)
    return totals[0] / n_global, totals[1].long(), int(n_global)


def _train(cfg, data_dir, resume, stop_after_epochs, task, model_builder, log, ctx) -> RunResult:
    t_start = time.perf_counter()
    tc = cfg.train
    device = D.rank_device(resolve_device(tc.device), ctx)
    out_dir = Path(tc.out_dir)
    main = ctx.is_main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)

    seed_everything(tc.seed)
    if task is None:
        task = build_task(cfg.task_name, data_dir=data_dir, **cfg.task_options)  # seeded by task.seed, not train.seed
    info = task.info
    model_cfg = model_config_for_task(cfg.model, info)
    if model_builder is None:
        from torchssm.models import build_model as model_builder
    seed_everything(tc.seed)  # the initial weights do not depend on how the data was built
    model = model_builder(model_cfg).to(device)
    fsdp = tc.fsdp and ctx.enabled
    plain = None  # FSDP: an unsharded copy on the CPU that checkpoints are written from / read into
    if fsdp:
        with torch.random.fork_rng(devices=[]):
            plain = model_builder(model_cfg)
        D.shard_model(model)  # before the optimizer: it must hold the sharded parameters
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay, tc.betas)
    steps_per_epoch = num_batches(task.train, tc.batch_size, min_batch=2)
    if steps_per_epoch < 1:
        raise ValueError(f"the training set ({len(task.train)} examples) is smaller than one batch of 2")
    total_steps = tc.epochs * steps_per_epoch
    warmup = min(total_steps, max(tc.warmup_steps, int(round(tc.warmup_epochs * steps_per_epoch))))
    scheduler = build_scheduler(optimizer, total_steps, warmup, tc.min_lr_ratio)

    config_dict = cfg.to_dict()
    start_epoch, step, best = 0, 0, None
    if resume is not None:
        state = read_checkpoint_state(resume)
        _check_resume_config(saved_config(state["config"]), config_dict)
        if fsdp:  # every rank reads the full checkpoint, then keeps its shard
            state = load_checkpoint(resume, plain, restore_rng=True)
            extra = torch.load(Path(resume) / OPTIMIZER, map_location="cpu", weights_only=True)
            D.load_full_state(model, optimizer, plain.state_dict(), extra["optimizer"])
            scheduler.load_state_dict(extra["scheduler"])
        else:
            state = load_checkpoint(resume, model, optimizer, scheduler, restore_rng=True, map_location=device)
        start_epoch, step, best = state["epoch"], state["step"], state.get("best")
        log(f"resumed from {resume} at epoch {start_epoch} (step {step})")
    metrics_path = out_dir / METRICS_FILE
    history = _read_metrics(metrics_path, start_epoch) if resume is not None else []
    if main:
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config_dict, sort_keys=False))

    n_params = sum(p.numel() for p in model.parameters())
    log(f"task {info.name}: {len(task.train)} train / {len(task.val) if task.val is not None else 0} val / "
        f"{len(task.test)} test; model {model_cfg.layer} x{model_cfg.n_layers}, {n_params:,} parameters; "
        f"device {device}; {steps_per_epoch} steps/epoch"
        + (f"; {ctx.world_size} ranks" if ctx.enabled else ""))
    params = [p for p in model.parameters() if p.requires_grad]
    # DDP under torchrun (FSDP shards in place); weights/checkpoints use `model`
    train_model = model if fsdp else D.wrap_model(model, ctx, device)
    if tc.compile:
        train_model = torch.compile(train_model)
    guard = NonFiniteGuard(tc.max_nonfinite_steps)
    t_loop = time.perf_counter()
    record: Dict = history[-1] if history else {}
    end_epoch = tc.epochs if stop_after_epochs is None else min(tc.epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        batches = iterate_batches(task.train, tc.batch_size, shuffle=True, generator=epoch_generator(tc.seed, epoch),
                                  num_workers=tc.num_workers, min_batch=2)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
                   disable=None if tc.progress and main else True, dynamic_ncols=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct_sum = torch.zeros((), dtype=torch.long, device=device)
        count = 0
        for i, batch in enumerate(bar):
            optimizer.zero_grad(set_to_none=True)
            loss, correct, n = _train_step(train_model, batch, info, tc, ctx, device)
            where = f"epoch {epoch + 1}, step {step + 1}"
            if not guard.check("loss", loss, where):
                continue  # skipped: no update, the schedule does not advance
            grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else math.inf)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: DTensor
            if not guard.check("gradient norm", grad_norm, where):
                continue
            guard.ok()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.detach().double() * n
            correct_sum += correct
            count += n
            if i % 10 == 0 or i == steps_per_epoch - 1:
                postfix = {"loss": f"{float(loss_sum) / max(count, 1):.4f}"}
                if info.kind != "regression":
                    postfix["acc"] = f"{int(correct_sum) / max(count, 1):.4f}"
                bar.set_postfix(postfix)
        bar.close()

        record = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
                  "train_loss": float(loss_sum) / max(count, 1)}
        if guard.skipped:
            record["skipped_steps"] = guard.skipped
        if info.kind != "regression":
            record["train_acc"] = int(correct_sum) / max(count, 1)
        if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs:
            for split, dataset in (("val", task.val), ("test", task.test)):
                if dataset is not None:
                    # FSDP: every rank runs every batch (its collectives must match), so no sharding here
                    eval_ctx = None if fsdp else ctx
                    for key, value in evaluate(model, dataset, info, tc.eval_batch_size, device, eval_ctx).items():
                        if key != "n":
                            record[f"{split}_{key}"] = value
        record["time_s"] = round(time.perf_counter() - t_loop, 3)
        history.append(record)
        improved = _is_better(record, best, info.kind)
        if improved:
            best = record
        saved, optimizer_state = model, None
        if fsdp and tc.save_checkpoints:  # gather the full state (a collective), rank 0 writes it
            model_state, optimizer_state = D.full_state(model, optimizer)
            if main:
                plain.load_state_dict(model_state)
            saved = plain
        if main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if tc.save_checkpoints:
                state = {"config": config_dict, "epoch": epoch + 1, "step": step, "metrics": record, "best": best}
                if improved:
                    save_checkpoint(out_dir / "best", saved, **state)
                save_checkpoint(out_dir / "last", saved, optimizer if not fsdp else None, scheduler,
                                optimizer_state=optimizer_state, **state)
                if tc.keep_checkpoints > 0:
                    snapshot_checkpoint(out_dir / "last", out_dir / SNAPSHOTS / f"epoch-{epoch + 1:06d}")
                    prune_checkpoints(out_dir / SNAPSHOTS, tc.keep_checkpoints)
        D.barrier(ctx)  # no rank runs ahead of rank 0's checkpoint
        log(_format_record(record))

    train_time = time.perf_counter() - t_loop
    result = RunResult(out_dir=out_dir, epochs_done=record.get("epoch", start_epoch), last=record, best=best,
                       train_time_s=train_time, wall_time_s=time.perf_counter() - t_start, history=history)
    if main:
        (out_dir / RESULT_FILE).write_text(json.dumps(
            {"last": record, "best": best, "train_time_s": round(train_time, 3),
             "wall_time_s": round(result.wall_time_s, 3), "parameters": n_params, "device": str(device),
             "torch": torch.__version__, "world_size": ctx.world_size}, indent=1))
    return result


def _format_record(r: Dict) -> str:
    parts = [f"epoch {r['epoch']:>3}", f"train loss {r['train_loss']:.4f}"]
    for split in ("train", "val", "test"):
        if f"{split}_acc" in r:
            parts.append(f"{split} acc {100 * r[f'{split}_acc']:.2f}%")
        elif split != "train" and f"{split}_loss" in r:
            parts.append(f"{split} loss {r[f'{split}_loss']:.4f}")
    parts.append(f"{r['time_s']:.1f} s")
    return "  ".join(parts)
