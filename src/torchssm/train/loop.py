"""The training loop: seeded, resumable bit-for-bit, stopping cleanly on a non-finite loss.

One run (``train(cfg)``):

1. seed python/numpy/torch; build the task (``data.build_task``) and the model
   (``models.build_model``, d_input/d_output from the task's TaskInfo); with ``train.init_from``
   its weights are then another run's (:mod:`torchssm.train.init_from`: a curriculum's next stage);
2. AdamW with the layers' parameter groups (:mod:`torchssm.train.optim`), warm-up + cosine per
   step (:mod:`torchssm.train.schedule`), optional global-norm gradient clipping;
3. each epoch: batches in a seeded order that depends only on (seed, epoch), a tqdm bar with the
   running loss/accuracy; then evaluation on val and test, one JSON line in
   ``<out_dir>/metrics.jsonl`` (and TensorBoard scalars with ``train.tensorboard``), checkpoints
   ``<out_dir>/last`` (always) and ``<out_dir>/best`` (best validation accuracy, or lowest
   validation loss for regression);
4. ``resume=...`` reloads weights, optimizer, scheduler and RNG states from a checkpoint and
   continues at the next epoch (or, for a checkpoint taken part-way through one by
   ``train.max_cpu_minutes``, with that epoch's next batch); with the data order fixed by (seed, epoch)
   the result equals an uninterrupted run exactly. The history (``metrics.jsonl`` up to the checkpoint's epoch, and
   ``best/``) comes from the run directory that holds the checkpoint, so a moved or copied run
   keeps it, and a run resumed into another ``out_dir`` starts with it.

Scale and reliability (docs/reliability.md): under ``torchrun`` the model is wrapped in DDP, each
rank trains on its share of every global batch and only rank 0 writes
(:mod:`torchssm.train.distributed`); ``train.grad_accum`` micro-batches per step; bf16 autocast
(``train.precision``); ``train.compile``; truncated BPTT (``train.tbptt_chunk``,
:mod:`torchssm.train.tbptt`); a NaN/Inf loss or gradient skips the step and stops training after
``train.max_nonfinite_steps`` in a row (:mod:`torchssm.train.guard`); the last
``train.keep_checkpoints`` epochs are kept for recovery from a torn ``last``.

Run directory (:mod:`torchssm.runs`, :mod:`torchssm.train.run_dir`): a directory that holds
another run's files is refused unless the run resumes into it or ``overwrite=True``; it is created,
and locked against a second writer, only once the set-up has succeeded; a write that fails (full
disk, read-only) raises a one-line :class:`~torchssm.train.run_dir.RunWriteError`.

Modules: set-up and resume here; one epoch (steps, evaluation, end-of-epoch writing) in
:mod:`torchssm.train.epoch`; losses and evaluation in :mod:`torchssm.train.losses`; the metric
records (``metrics.jsonl``, TensorBoard) in :mod:`torchssm.train.metrics_log`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sized
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from torchssm.bench.common import environment
from torchssm.cpu_threads import auto_cpu_threads, get_cpu_threads, set_cpu_threads
from torchssm.data.loaders import num_batches
from torchssm.data.registry import TaskData, build_task, with_task_defaults
from torchssm.devices import resolve_device
from torchssm.fileio import atomic_write_json
from torchssm.runs import BEST, METRICS_FILE, RESULT_FILE, read_metrics, run_dir_of
from torchssm.train import distributed as D
from torchssm.train.checkpoint import OPTIMIZER, load_checkpoint, read_checkpoint_state, snapshot_checkpoint
from torchssm.train.config import ExperimentConfig, model_config_for_task, saved_config
from torchssm.train.distill import cached_teacher_logits, teacher_logits, with_teacher_logits
from torchssm.train.epoch import Progress, Run, evaluate_epoch, train_epoch, write_epoch
from torchssm.train.guard import NonFiniteGuard, TrainingDiverged
from torchssm.train.init_from import load_initial_weights
from torchssm.train.losses import batch_to as _to
from torchssm.train.losses import evaluate, loss_and_correct
from torchssm.train.losses import forward_batch as _forward
from torchssm.train.metrics_log import open_metrics_log, require_tensorboard
from torchssm.train.optim import build_optimizer
from torchssm.train.run_dir import RunWriteError, check_run_dir, claim_run_dir, same_dir
from torchssm.train.schedule import build_scheduler

# Names other modules import from here (kept where they were before the split).
__all__ = [
    "METRICS_FILE",
    "RESULT_FILE",
    "RunResult",
    "TrainingDiverged",
    "_forward",
    "_to",
    "evaluate",
    "loss_and_correct",
    "resolve_device",
    "seed_everything",
    "train",
]

# Entries that may differ between a run and its resumption without changing the result.
RUNTIME_KEYS = {
    "out_dir",
    "device",
    "num_workers",
    "progress",
    "threads",
    "eval_batch_size",
    "save_checkpoints",
    "keep_checkpoints",
    "compile",
    "tensorboard",
    "init_from",  # only the first start reads it: a resumed run's weights come from its checkpoint
    "init_encoder_from",  # likewise, for `torchssm speech train` (audio.asr_train)
    "max_cpu_minutes",  # a budget of one call: a resumed run may be given more
}


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- the run ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    out_dir: Path
    epochs_done: int
    last: dict  # the last metrics record (train/val/test metrics of the final epoch)
    best: dict | None  # the record of the best validation epoch (None without a validation set)
    train_time_s: float  # time in the epoch loop (training + evaluation) in this invocation
    wall_time_s: float  # the whole call, data and model building included
    history: list = field(default_factory=list)


def config_differences(saved: dict, current: dict) -> list[str]:
    """The entries of two {task, model, train} configs that differ, as "section.key: checkpoint a != now b",
    leaving out the ``train`` entries of :data:`RUNTIME_KEYS` (what a resumed run may change); a task option that
    one side leaves out counts as its builder's default (:func:`~torchssm.data.registry.with_task_defaults`, so a run
    saved before the option existed resumes); also used by ``torchssm speech train --resume``."""
    saved, current = dict(saved), dict(current)
    if "task" in saved and "task" in current:
        saved["task"], current["task"] = with_task_defaults(saved["task"]), with_task_defaults(current["task"])
    diffs = []
    for section in ("task", "model", "train"):
        keys = set(saved.get(section, {})) | set(current.get(section, {}))
        for key in sorted(keys):
            if section == "train" and key in RUNTIME_KEYS:
                continue
            if saved.get(section, {}).get(key) != current.get(section, {}).get(key):
                diffs.append(
                    f"{section}.{key}: checkpoint {saved.get(section, {}).get(key)!r} != "
                    f"now {current.get(section, {}).get(key)!r}"
                )
    return diffs


def _check_resume_config(saved: dict, current: dict) -> None:
    diffs = config_differences(saved, current)
    if diffs:
        raise ValueError(
            "cannot resume: the config differs from the checkpoint's (" + "; ".join(diffs) + "); "
            "resume without --config to use the checkpoint's own"
        )


def train(
    cfg: ExperimentConfig,
    *,
    data_dir=None,
    resume: str | Path | None = None,
    stop_after_epochs: int | None = None,
    task: TaskData | None = None,
    model_builder: Callable[..., nn.Module] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train ``cfg`` (see the module docstring) and return a :class:`RunResult`.

    Args:
        data_dir: where tasks cache their data (default: ``$TORCHSSM_DATA`` or ~/.cache/torchssm).
        resume: a checkpoint directory (``<run>/last``, or a ``<run>/checkpoints/epoch-N``) to
            continue from; the run writes into ``cfg.train.out_dir``.
        stop_after_epochs: stop after this many epochs (>= 1) in this call (the schedule still
            spans ``train.epochs``; continue later with ``resume``).
        task: an already built task (skips ``build_task``); model_builder: replaces
            ``torchssm.models.build_model`` (tests use a small stand-in).
        overwrite: replace the run already in ``cfg.train.out_dir`` (its metrics, checkpoints and
            TensorBoard files are deleted when this run starts) instead of refusing it.
    Raises:
        ValueError: a bad config, a run directory holding another run, a missing device.
        RunDirBusy: another live process is writing into ``out_dir``.
        RunWriteError: a write into ``out_dir`` failed (full disk, read-only directory).
        TrainingDiverged: when more than ``train.max_nonfinite_steps`` steps in a row have a NaN/Inf
            loss or gradient norm (no checkpoint is written for them).
    """
    if stop_after_epochs is not None and (
        isinstance(stop_after_epochs, bool) or not isinstance(stop_after_epochs, int) or stop_after_epochs < 1
    ):
        raise ValueError(f"stop_after_epochs (--stop-after) must be an int >= 1, got {stop_after_epochs!r}")
    if cfg.train.tensorboard:
        require_tensorboard()
    out_dir = Path(cfg.train.out_dir)
    source_run = run_dir_of(resume) if resume is not None else None
    resuming_here = same_dir(source_run, out_dir)
    check_run_dir(out_dir, resuming_here=resuming_here, overwrite=overwrite)  # before any work, changes nothing
    threads = get_cpu_threads()
    # 0: the thread policy, one thread per core other processes leave idle (docs/benchmarks.md, Thread policy)
    set_cpu_threads(cfg.train.threads if cfg.train.threads > 0 else auto_cpu_threads())
    ctx = D.init_distributed(resolve_device(cfg.train.device))
    try:
        return _train(
            cfg,
            data_dir,
            resume,
            source_run,
            resuming_here,
            overwrite,
            stop_after_epochs,
            task,
            model_builder,
            D.main_only(ctx, log),
            ctx,
        )
    finally:
        set_cpu_threads(*threads)  # a library call leaves the process as it found it
        D.shutdown(ctx)


def _train(
    cfg, data_dir, resume, source_run, resuming_here, overwrite, stop_after_epochs, task, model_builder, log, ctx
) -> RunResult:
    t_start = time.perf_counter()
    run = set_up(cfg, data_dir, task, model_builder, ctx, resuming=resume is not None, log=log)
    progress = resume_run(run, resume, source_run, log) if resume is not None else Progress()
    # only now, with config, data, model and checkpoint known good, does the run directory appear (rank 0)
    claim = (
        claim_run_dir(run.out_dir, resuming_here=resuming_here, overwrite=overwrite, log=log)
        if run.main
        else nullcontext()
    )
    with claim:
        D.barrier(ctx)  # no rank goes on before the directory is there
        metrics_log = _start_writing(run, progress, source_run if not resuming_here else None)
        try:
            record = _run_epochs(run, progress, stop_after_epochs, metrics_log, log)
        finally:
            metrics_log.close()
        return _finish(run, progress, record, t_start)


def _start_writing(run: Run, progress: Progress, fork_of: Path | None):
    """Rank 0: ``config.yaml`` and ``metrics.jsonl`` holding the history; for a run resumed into
    another directory (``fork_of``: the checkpoint's run), its ``best/`` too. Returns the metrics log."""
    try:
        metrics_log = open_metrics_log(
            run.main, run.out_dir, progress.history, run.config_dict, tensorboard=run.tc.tensorboard
        )
        if run.main and fork_of is not None:
            _copy_best(fork_of, run.out_dir, progress)
    except OSError as err:
        raise RunWriteError(run.out_dir, err) from err
    return metrics_log


def _run_epochs(run: Run, progress: Progress, stop_after_epochs: int | None, metrics_log, log) -> dict:
    """Epochs ``progress.start_epoch ..`` up to ``train.epochs`` (or ``stop_after_epochs`` of them);
    returns the last record (the history's last one when no epoch is left)."""
    tc = run.tc
    log(_describe(run))
    _prepare_for_training(run)
    guard = NonFiniteGuard(tc.max_nonfinite_steps)
    run.t_loop = time.perf_counter()
    record: dict = progress.history[-1] if progress.history else {}
    end_epoch = tc.epochs if stop_after_epochs is None else min(tc.epochs, progress.start_epoch + stop_after_epochs)
    cpu0 = time.process_time()

    def over_budget() -> bool:  # checked after every batch: a one-epoch run can be capped too
        return bool(tc.max_cpu_minutes) and time.process_time() - cpu0 > 60 * tc.max_cpu_minutes

    for epoch in range(progress.start_epoch, end_epoch):
        record = train_epoch(run, epoch, progress, guard, stop=over_budget)
        stopping = over_budget()
        evaluate_epoch(run, record, epoch, force=stopping)
        improved = progress.add(record, run.info.kind)
        write_epoch(run, record, progress, improved, metrics_log, log)
        log(_format_record(record))
        if stopping and (epoch + 1 < end_epoch or "epoch_batches" in record):
            where = (
                f"in epoch {epoch + 1}/{tc.epochs} after {record['epoch_batches']}/{run.steps_per_epoch} batches"
                if "epoch_batches" in record
                else f"after epoch {epoch + 1}/{tc.epochs}"
            )
            log(f"stopped {where}: {tc.max_cpu_minutes:g} CPU minutes used (train.max_cpu_minutes); --resume continues")
            break
    return record


def set_up(
    cfg: ExperimentConfig,
    data_dir,
    task: TaskData | None,
    model_builder,
    ctx: D.DistContext,
    *,
    resuming: bool = False,
    log: Callable[[str], None] = print,
) -> Run:
    """Seed, build the task and the model (seeded again, so the initial weights do not depend on
    how the data was built; then ``train.init_from``'s weights, unless ``resuming``), the optimizer
    groups and the warm-up + cosine schedule."""
    tc = cfg.train
    if tc.max_cpu_minutes and ctx.enabled:
        raise ValueError("train.max_cpu_minutes counts one process's CPU time; under torchrun the ranks would disagree")
    device = D.rank_device(resolve_device(tc.device), ctx)
    seed_everything(tc.seed)
    if task is None:
        task = build_task(cfg.task_name, data_dir=data_dir, **cfg.task_options)  # seeded by task.seed, not train.seed
    if tc.distill_from:  # the teachers' mean logits travel with the training examples (train/distill.py)
        score = partial(cached_teacher_logits, cache_dir=tc.distill_cache) if tc.distill_cache else teacher_logits
        scores = score(tc.distill_from, task.train, task.info, batch_size=tc.eval_batch_size, device=device, log=log)
        task = replace(task, train=with_teacher_logits(task.train, scores))
    model_cfg = model_config_for_task(cfg.model, task.info)
    if model_builder is None and task.info.kind == "lm":  # language modelling: a CausalLM (torchssm.lm.build)
        from torchssm.lm.build import causal_lm_builder

        model_builder = causal_lm_builder(task)
    if model_builder is None:
        from torchssm.models import build_model as model_builder
    seed_everything(tc.seed)  # the initial weights do not depend on how the data was built
    model = model_builder(model_cfg).to(device)
    if tc.init_from and not resuming:  # a curriculum's next stage: weights only (train/init_from.py)
        load_initial_weights(model, tc.init_from, cfg.model.to_dict(), map_location=device, log=log)
    plain = None
    if tc.fsdp and ctx.enabled:
        with torch.random.fork_rng(devices=[]):
            plain = model_builder(model_cfg)
        D.shard_model(model)  # before the optimizer: it must hold the sharded parameters
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay, tc.betas)
    steps_per_epoch = num_batches(task.train, tc.batch_size, min_batch=2)
    if steps_per_epoch < 1:
        raise ValueError(f"the training set ({_size(task.train)} examples) is smaller than one batch of 2")
    total_steps = tc.epochs * steps_per_epoch
    warmup = min(total_steps, max(tc.warmup_steps, int(round(tc.warmup_epochs * steps_per_epoch))))
    scheduler = build_scheduler(optimizer, total_steps, warmup, tc.min_lr_ratio)
    return Run(
        cfg=cfg,
        task=task,
        model_cfg=model_cfg,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        ctx=ctx,
        steps_per_epoch=steps_per_epoch,
        config_dict=cfg.to_dict(),
        out_dir=Path(tc.out_dir),
        plain=plain,
    )


def resume_run(run: Run, resume, source_run: Path | None, log) -> Progress:
    """Load weights, optimizer, scheduler and RNG states from checkpoint ``resume`` (after checking
    that the config matches the checkpoint's) and the history of ``source_run`` up to its epoch."""
    state = read_checkpoint_state(resume)
    _check_resume_config(saved_config(state["config"]), run.config_dict)
    if run.fsdp:  # every rank reads the full checkpoint, then keeps its shard
        state = load_checkpoint(resume, run.fsdp_plain(), restore_rng=True)
        extra = torch.load(Path(resume) / OPTIMIZER, map_location="cpu", weights_only=True)
        D.load_full_state(run.model, run.optimizer, run.fsdp_plain().state_dict(), extra["optimizer"])
        run.scheduler.load_state_dict(extra["scheduler"])
    else:
        state = load_checkpoint(
            resume, run.model, run.optimizer, run.scheduler, restore_rng=True, map_location=run.device
        )
    progress = Progress(
        start_epoch=state["epoch"],
        step=state["step"],
        best=state.get("best"),
        epoch_batches=state.get("epoch_batches", 0),
    )
    if source_run is not None:
        progress.history = read_metrics(source_run / METRICS_FILE, progress.start_epoch)
    log(
        f"resumed from {resume} at epoch {progress.start_epoch}"
        + (f" + {progress.epoch_batches} batches" if progress.epoch_batches else "")
        + f" (step {progress.step})"
        + (f"; writing to {run.out_dir}" if source_run is None or not same_dir(source_run, run.out_dir) else "")
    )
    return progress


def _copy_best(source_run: Path, out_dir: Path, progress: Progress) -> None:
    """A run resumed into a new directory takes its ``best/`` along when that is the best record's."""
    src = source_run / BEST
    if progress.best is None or not src.is_dir() or (out_dir / BEST).exists():
        return
    try:
        if read_checkpoint_state(src, verify=False).get("epoch") != progress.best.get("epoch"):
            return
    except (ValueError, OSError):
        return
    snapshot_checkpoint(src, out_dir / BEST)


def _prepare_for_training(run: Run) -> None:
    """DDP under torchrun (FSDP shards in place) and torch.compile; weights/checkpoints use ``run.model``."""
    train_model = run.model if run.fsdp else D.wrap_model(run.model, run.ctx, run.device)
    if run.tc.compile:
        train_model = cast(nn.Module, torch.compile(train_model))  # an OptimizedModule (an nn.Module)
    run.train_model = train_model


def _size(dataset: object) -> int:
    """len() of a task's dataset (map-style: sized, though torch's Dataset type does not declare __len__)."""
    return len(cast(Sized, dataset))


def _describe(run: Run) -> str:
    task, info, model_cfg, ctx = run.task, run.info, run.model_cfg, run.ctx
    n_params = sum(p.numel() for p in run.model.parameters())
    return (
        f"task {info.name}: {_size(task.train)} train / {_size(task.val) if task.val is not None else 0} val / "
        f"{_size(task.test)} test; model {model_cfg.layer} x{model_cfg.n_layers}, {n_params:,} parameters; "
        f"device {run.device}; {run.steps_per_epoch} steps/epoch" + (f"; {ctx.world_size} ranks" if ctx.enabled else "")
    )


def _finish(run: Run, progress: Progress, record: dict, t_start: float) -> RunResult:
    """The :class:`RunResult`; rank 0 writes ``result.json``."""
    train_time = time.perf_counter() - run.t_loop
    result = RunResult(
        out_dir=run.out_dir,
        epochs_done=record["epoch"] - ("epoch_batches" in record) if record else progress.start_epoch,
        last=record,
        best=progress.best,
        train_time_s=train_time,
        wall_time_s=time.perf_counter() - t_start,
        history=progress.history,
    )
    if run.main:
        summary = {
            "last": record,
            "best": progress.best,
            "train_time_s": round(train_time, 3),
            "wall_time_s": round(result.wall_time_s, 3),
            "parameters": sum(p.numel() for p in run.model.parameters()),
            "device": str(run.device),
            "torch": torch.__version__,
            "world_size": run.ctx.world_size,
            "environment": environment(run.device),  # host and versions: a seeded run reproduces on like hosts
        }
        if run.task.extra.get("record"):  # what the task records about its data (lm_text: the corpus)
            summary["data"] = run.task.extra["record"]
        try:
            atomic_write_json(run.out_dir / RESULT_FILE, summary, indent=1)
        except OSError as err:
            raise RunWriteError(run.out_dir, err) from err
    return result


def _format_record(r: dict) -> str:
    epoch = f"epoch {r['epoch']:>3}" + (f" (first {r['epoch_batches']} batches)" if "epoch_batches" in r else "")
    parts = [epoch, f"train loss {r['train_loss']:.4f}"]
    for split in ("train", "val", "test"):
        if f"{split}_acc" in r:
            parts.append(f"{split} acc {100 * r[f'{split}_acc']:.2f}%")
            if f"{split}_bpb" in r:  # language modelling
                parts.append(f"{split} bpb {r[f'{split}_bpb']:.4f}")
        elif split != "train" and f"{split}_loss" in r:
            parts.append(f"{split} loss {r[f'{split}_loss']:.4f}")
    parts.append(f"{r['time_s']:.1f} s")
    return "  ".join(parts)
