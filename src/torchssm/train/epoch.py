"""One epoch of a run: its optimizer steps, its evaluation, and what is written at its end.

The training loop (:mod:`torchssm.train.loop`) sets a :class:`Run` up, then for each epoch::

    record = train_epoch(run, epoch, progress, guard)  # the seeded batches; train loss/accuracy
    evaluate_epoch(run, record, epoch)                 # val_* and test_* when this epoch evaluates
    progress.add(record, run.info.kind)                # history and best record
    write_epoch(run, record, progress, improved, metrics_log, log)  # metrics.jsonl, last/ best/ checkpoints/epoch-N

A step of one global batch (:func:`train_step`) runs this rank's share in ``train.grad_accum``
micro-batches so that the gradients are those of the global mean loss
(:mod:`torchssm.train.distributed`); a non-finite loss or gradient norm skips the step
(:mod:`torchssm.train.guard`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from torchssm.data.loaders import epoch_generator, iterate_batches
from torchssm.data.registry import TaskData, TaskInfo
from torchssm.models.auxiliary import pop_auxiliary_loss
from torchssm.models.config import ModelConfig
from torchssm.runs import BEST, LAST, SNAPSHOTS
from torchssm.train import distributed as D
from torchssm.train.checkpoint import prune_checkpoints, save_checkpoint, snapshot_checkpoint
from torchssm.train.config import ExperimentConfig, TrainConfig
from torchssm.train.guard import NonFiniteGuard
from torchssm.train.losses import batch_to, evaluate, model_loss_and_correct
from torchssm.train.run_dir import RunWriteError
from torchssm.train.tbptt import tbptt_backward


@dataclass
class Run:
    """A run once set up: config, data, model, optimizer and where it writes."""

    cfg: ExperimentConfig
    task: TaskData
    model_cfg: ModelConfig
    model: nn.Module  # the weights; checkpoints are written from / read into it (or `plain`)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    ctx: D.DistContext
    steps_per_epoch: int
    config_dict: dict
    out_dir: Path
    plain: nn.Module | None = None  # FSDP: an unsharded copy on the CPU that checkpoints are written from
    train_model: nn.Module | None = None  # what batches go through: `model` under DDP and/or torch.compile
    t_loop: float = 0.0  # perf_counter at the start of the epoch loop (record["time_s"] counts from it)

    def training_model(self) -> nn.Module:
        """``train_model``, which ``_prepare_for_training`` sets before the first epoch."""
        if self.train_model is None:
            raise RuntimeError("Run.train_model is not set: prepare the run for training first")
        return self.train_model

    def fsdp_plain(self) -> nn.Module:
        """``plain``, which setup sets whenever FSDP is on."""
        if self.plain is None:
            raise RuntimeError("this FSDP run has no unsharded copy of the model (Run.plain)")
        return self.plain

    @property
    def tc(self) -> TrainConfig:
        return self.cfg.train

    @property
    def info(self) -> TaskInfo:
        return self.task.info

    @property
    def fsdp(self) -> bool:
        return self.cfg.train.fsdp and self.ctx.enabled

    @property
    def main(self) -> bool:
        return self.ctx.is_main


@dataclass
class Progress:
    """Where a run stands: epochs done, optimizer steps, the best record and every record so far;
    ``epoch_batches``: batches of epoch ``start_epoch`` already trained (a run stopped part-way through it)."""

    start_epoch: int = 0
    step: int = 0
    epoch_batches: int = 0
    best: dict | None = None
    history: list[dict] = field(default_factory=list)

    def add(self, record: dict, kind: str) -> bool:
        """Append ``record``; True when it is the new best (highest val accuracy, then lowest val loss;
        lowest val loss for regression; never without a validation set)."""
        self.history.append(record)
        if is_better(record, self.best, kind):
            self.best = record
            return True
        return False


def is_better(record: dict, best: dict | None, kind: str) -> bool:
    if "val_loss" not in record:
        return False
    if best is None:
        return True
    if kind == "regression":
        return record["val_loss"] < best["val_loss"]
    return (record["val_acc"], -record["val_loss"]) > (best["val_acc"], -best["val_loss"])


# --- the steps ----------------------------------------------------------------------------------
def train_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    info: TaskInfo,
    tc: TrainConfig,
    ctx: D.DistContext,
    device: torch.device,
):
    """Forward + backward of one global batch (this rank's share, in ``tc.grad_accum`` micro-batches).

    Returns (global mean loss, global number of correct predictions, global target count, mean auxiliary
    loss or None), the gradients accumulated so that they are those of the global mean of loss + auxiliary
    loss (see :mod:`torchssm.train.distributed`; auxiliary losses of layers: :mod:`torchssm.models.auxiliary`).
    """
    # the same number of micro-batches on every rank (FSDP's collectives run per forward)
    n_parts = min(tc.grad_accum, next(iter(batch.values())).shape[0] // ctx.world_size) or 1
    parts = D.micro_batches(D.rank_shard(batch, ctx), n_parts)
    counts = [D.count_targets(p["targets"], info.kind, info.ignore_index) for p in parts]
    n_global = D.all_reduce_sum(torch.stack(counts).sum(), ctx).to(torch.float64)  # one sync
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    aux_sum = None

    def autocast():  # bf16 activations; SSM parameters and states stay float32 (the layers see to it)
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")

    for i, (part, n_i) in enumerate(zip(parts, counts)):
        part = batch_to(part, device)
        weight = n_i.to(torch.float64) * ctx.world_size / n_global  # of this micro-batch's mean loss
        sync = i == len(parts) - 1  # DDP reduces gradients in the last micro-batch's backward
        if tc.tbptt_chunk > 0:
            loss, c = tbptt_backward(model, part, info, tc.tbptt_chunk, weight, sync=sync, autocast=autocast)
            aux = None  # truncated BPTT adds no auxiliary losses of layers
        else:
            with D.no_sync(model, sync):
                with autocast():  # head on scored steps only; the teachers' soft targets under distillation
                    loss, c, _ = model_loss_and_correct(model, part, info, tc.distillation)
                aux = pop_auxiliary_loss(model)  # e.g. a mixture of experts' load balancing
                ((loss if aux is None else loss + aux) * weight.to(loss.dtype)).backward()
            if aux is not None:
                aux_sum = (0.0 if aux_sum is None else aux_sum) + aux.detach().double() * weight
        loss_sum += loss.detach().double() * n_i
        correct += c
    totals = D.all_reduce_sum(torch.stack([loss_sum, correct.double()]), ctx)
    aux_mean = None if aux_sum is None else D.all_reduce_sum(aux_sum, ctx) / ctx.world_size
    return totals[0] / n_global, totals[1].long(), int(n_global), aux_mean


def train_epoch(
    run: Run, epoch: int, progress: Progress, guard: NonFiniteGuard, stop: Callable[[], bool] | None = None
) -> dict:
    """The optimizer steps of epoch ``epoch`` (0-based) over batches in the order fixed by
    (train.seed, epoch), from batch ``progress.epoch_batches`` when the run resumes part-way through it;
    returns the record {"epoch", "step", "lr", "train_loss"[, "train_acc", "skipped_steps"]}. Advances
    ``progress.step``. When ``stop()`` turns true after a batch that is not the epoch's last, the epoch ends
    there and the record also holds ``"epoch_batches"``, the batches trained so far (``train_loss`` and
    ``train_acc`` are means over the batches of this call)."""
    tc, info = run.tc, run.info
    run.model.train()
    params = [p for p in run.model.parameters() if p.requires_grad]
    skip = progress.epoch_batches if epoch == progress.start_epoch else 0
    batches = iterate_batches(
        run.task.train,
        tc.batch_size,
        shuffle=True,
        generator=epoch_generator(tc.seed, epoch),
        num_workers=tc.num_workers,
        min_batch=2,
        skip=skip,
    )
    bar = tqdm(
        batches,
        initial=skip,
        total=run.steps_per_epoch,
        desc=f"epoch {epoch + 1}/{tc.epochs}",
        leave=False,
        disable=None if tc.progress and run.main else True,
        dynamic_ncols=True,
    )
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct_sum = torch.zeros((), dtype=torch.long, device=run.device)
    count = 0
    aux_sum, aux_steps = 0.0, 0
    stopped_at = None
    for i, batch in enumerate(bar, start=skip):
        if stop is not None and i > skip and stop():
            stopped_at = i  # batches 0 .. i-1 of this epoch are trained
            break
        run.optimizer.zero_grad(set_to_none=True)
        loss, correct, n, aux = train_step(run.training_model(), batch, info, tc, run.ctx, run.device)
        where = f"epoch {epoch + 1}, step {progress.step + 1}"
        if not guard.check("loss", loss, where):
            continue  # skipped: no update, the schedule does not advance
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else math.inf)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: DTensor
        if not guard.check("gradient norm", grad_norm, where):
            continue
        guard.ok()
        run.optimizer.step()
        run.scheduler.step()
        progress.step += 1
        loss_sum += loss.detach().double() * n
        correct_sum += correct
        count += n
        if aux is not None:
            aux_sum, aux_steps = aux_sum + aux, aux_steps + 1  # a tensor: no host sync per step
        if i % 10 == 0 or i == run.steps_per_epoch - 1:
            postfix = {"loss": f"{float(loss_sum) / max(count, 1):.4f}"}
            if info.kind != "regression":
                postfix["acc"] = f"{int(correct_sum) / max(count, 1):.4f}"
            bar.set_postfix(postfix)
    bar.close()

    record = {
        "epoch": epoch + 1,
        "step": progress.step,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": float(loss_sum) / max(count, 1),
    }
    if stopped_at is not None:
        record["epoch_batches"] = stopped_at
    if aux_steps:  # the layers' auxiliary losses (torchssm.models.auxiliary), mean over the steps
        record["train_aux_loss"] = float(aux_sum) / aux_steps
    if guard.skipped:
        record["skipped_steps"] = guard.skipped
    if info.kind != "regression":
        record["train_acc"] = int(correct_sum) / max(count, 1)
    return record


def evaluate_epoch(run: Run, record: dict, epoch: int, force: bool = False) -> None:
    """Add ``val_*`` / ``test_*`` metrics to ``record`` every ``train.eval_every`` epochs, after the
    last one and when ``force`` (a run stopping early), then ``time_s`` (seconds since the epoch loop started)."""
    tc = run.tc
    if force or (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs:
        for split, dataset in (("val", run.task.val), ("test", run.task.test)):
            if dataset is not None:
                # FSDP: every rank runs every batch (its collectives must match), so no sharding here
                eval_ctx = None if run.fsdp else run.ctx
                for key, value in evaluate(
                    run.model, dataset, run.info, tc.eval_batch_size, run.device, eval_ctx
                ).items():
                    if key != "n":
                        record[f"{split}_{key}"] = value
                if run.info.kind == "lm":  # bits per byte (loss in nats/token over bytes/token) and perplexity
                    loss = record[f"{split}_loss"]
                    record[f"{split}_bpb"] = loss / math.log(2) / getattr(dataset, "bytes_per_token", 1.0)
                    record[f"{split}_ppl"] = math.exp(min(loss, 700.0))
    record["time_s"] = round(time.perf_counter() - run.t_loop, 3)


def write_epoch(
    run: Run, record: dict, progress: Progress, improved: bool, metrics_log, log: Callable[[str], None] = print
) -> None:
    """Rank 0 appends ``record`` to the metrics and saves ``last/`` (and ``best/`` when ``improved``,
    and the ``checkpoints/epoch-N`` snapshot, logging each older snapshot ``train.keep_checkpoints``
    removes); every rank waits for it. A failed write (full disk, read-only directory) raises
    :class:`~torchssm.train.run_dir.RunWriteError`."""
    tc, out_dir = run.tc, run.out_dir
    saved, optimizer_state = run.model, None
    if run.fsdp and tc.save_checkpoints:  # gather the full state (a collective), rank 0 writes it
        model_state, optimizer_state = D.full_state(run.model, run.optimizer)
        if run.main:
            run.fsdp_plain().load_state_dict(model_state)
        saved = run.fsdp_plain()
    if run.main:
        try:
            metrics_log.append(record)
            if tc.save_checkpoints:
                partial = "epoch_batches" in record  # resume goes on inside the epoch, after those batches
                state = {
                    "config": run.config_dict,
                    "epoch": record["epoch"] - 1 if partial else record["epoch"],  # epochs completed
                    "step": progress.step,
                    "metrics": record,
                    "best": progress.best,
                }
                if partial:
                    state["epoch_batches"] = record["epoch_batches"]
                if improved:
                    save_checkpoint(out_dir / BEST, saved, **state)
                save_checkpoint(
                    out_dir / LAST,
                    saved,
                    run.optimizer if not run.fsdp else None,
                    run.scheduler,
                    optimizer_state=optimizer_state,
                    **state,
                )
                if tc.keep_checkpoints > 0 and not partial:  # snapshots are of whole epochs
                    snapshot_checkpoint(out_dir / LAST, out_dir / SNAPSHOTS / f"epoch-{record['epoch']:06d}")
                    for removed in prune_checkpoints(out_dir / SNAPSHOTS, tc.keep_checkpoints):
                        log(f"removed {SNAPSHOTS}/{removed.name} (train.keep_checkpoints={tc.keep_checkpoints})")
        except OSError as err:
            raise RunWriteError(out_dir, err) from err
    D.barrier(run.ctx)  # no rank runs ahead of rank 0's checkpoint
