"""``torchssm train`` and ``torchssm eval``.

    torchssm train --preset mnist1d_lru [--set train.lr=1e-3 model.n_layers=4]   (or --config my.yaml)
                   [--out-dir runs/x] [--data-dir D] [--resume [CHECKPOINT]] [--overwrite] [--stop-after N]
                   [--init-from CHECKPOINT]
                   [--device cpu|cuda|auto] [--tensorboard]
    torchssm eval --checkpoint runs/x/best [--split test] [--data-dir D]

``--resume`` alone continues from the newest intact checkpoint of ``<out_dir>`` (``last``, else the
newest ``checkpoints/epoch-*``, skipping a torn or corrupt one with a warning); with ``--resume``
the config may be omitted (the checkpoint's own is used). ``--resume RUN/last`` continues into
``RUN``, the directory named (a moved or copied run keeps its history), unless ``--out-dir`` names
another one. A run directory
that already holds a run is refused unless ``--resume`` or ``--overwrite``; a run that cannot
write (full disk, read-only directory) or finds its directory in use by another run stops with
one line and exit status 1. ``--init-from CHECKPOINT`` (``train.init_from``) starts a new run from
another run's weights only (fresh optimizer, schedule and counters; the model config must match:
:mod:`torchssm.train.init_from`). ``eval`` accepts a checkpoint directory or a run directory (then
``best``, else ``last``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from torchssm.presets import preset_path
from torchssm.runs import find_checkpoint, is_run_dir, run_dir_of
from torchssm.train.checkpoint import find_latest_checkpoint, read_checkpoint_state
from torchssm.train.config import load_config, saved_config
from torchssm.train.distributed import is_main_process
from torchssm.train.loop import TrainingDiverged, evaluate, resolve_device, train
from torchssm.train.run_dir import RunDirBusy, RunWriteError

__all__ = ["find_checkpoint", "register"]  # find_checkpoint: the run layout's, torchssm.runs (kept importable here)

_AUTO = "<out_dir>/last"
_DATA_DIR_HELP = "data cache directory (default: $TORCHSSM_DATA or ~/.cache/torchssm)"


def _pct(x) -> str:
    return f"{100 * x:.2f}%"


def _run_train(args) -> int:
    t0, cpu0 = time.perf_counter(), time.process_time()
    overrides = list(args.set or [])
    if args.tbptt_chunk is not None:
        overrides.append(f"train.tbptt_chunk={args.tbptt_chunk}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    if args.tensorboard:
        overrides.append("train.tensorboard=true")
    config = preset_path(args.preset) if args.preset else args.config  # a shipped preset (torchssm presets)
    cfg = load_config(config, overrides) if config else None
    resume = None
    if args.resume is not None:
        if args.resume == _AUTO:
            out_dir = args.out_dir or (cfg.train.out_dir if cfg is not None else None)
            if out_dir is None:
                raise ValueError("--resume without a path needs --config or --out-dir to find <out_dir>/last")
            resume = find_latest_checkpoint(out_dir)
            if resume is None:
                raise FileNotFoundError(
                    f"--resume: no intact checkpoint in {out_dir} (looked at last/ and checkpoints/)"
                )
        else:
            resume = Path(args.resume)
            if is_run_dir(resume):  # a run directory given for its checkpoint: its newest intact one
                found = find_latest_checkpoint(resume)
                if found is None:
                    raise FileNotFoundError(
                        f"--resume: no intact checkpoint in the run directory {resume} "
                        f"(looked at last/ and checkpoints/)"
                    )
                resume = found
        state = read_checkpoint_state(resume)  # a missing / corrupt checkpoint fails here, clearly
        if cfg is None:
            cfg = load_config(base=saved_config(state["config"]), overrides=overrides)
    if cfg is None:
        raise ValueError("torchssm train needs --preset NAME or --config PATH (or --resume CHECKPOINT)")
    if args.init_from is not None:
        if resume is not None:
            raise ValueError("--init-from starts a new run from a checkpoint's weights; --resume continues a run")
        cfg.train.init_from = str(args.init_from)
    if args.out_dir:
        cfg.train.out_dir = str(args.out_dir)
    elif resume is not None:
        run_dir = run_dir_of(resume)  # continue where the checkpoint is, not where its config says it was
        if run_dir is None:
            raise ValueError(
                f"--resume {resume}: this checkpoint is not inside a run directory (no metrics.jsonl "
                f"or config.yaml next to it); say where to write with --out-dir"
            )
        cfg.train.out_dir = str(run_dir)
    try:
        result = train(
            cfg, data_dir=args.data_dir, resume=resume, stop_after_epochs=args.stop_after, overwrite=args.overwrite
        )
    except (TrainingDiverged, RunWriteError, RunDirBusy) as err:
        print(f"torchssm train: stopped: {err}", file=sys.stderr)
        return 1
    if not is_main_process():
        return 0  # under torchrun only rank 0 reports
    last, best = result.last, result.best
    done = f"epoch {result.epochs_done}/{cfg.train.epochs}"
    if "test_acc" in last:
        line = f"test accuracy: {_pct(last['test_acc'])} ({done})"
        if best is not None and "val_acc" in best:
            line += f"; best val {_pct(best['val_acc'])} at epoch {best['epoch']} (test {_pct(best['test_acc'])})"
    elif "test_loss" in last:
        line = f"test loss: {last['test_loss']:.5f} ({done})"
    else:
        line = f"stopped after {done} (not evaluated)"
    print(line)
    # CPU time next to wall time: on a shared machine the wall time also counts other processes' turns
    print(
        f"time: {result.train_time_s:.1f} s training + evaluation, {time.perf_counter() - t0:.1f} s in all "
        f"({time.process_time() - cpu0:.1f} s CPU); outputs in {result.out_dir}"
    )
    return 0


def _run_eval(args) -> int:
    from torchssm.train.reload import load_run

    device = resolve_device(args.device)
    run = load_run(args.checkpoint, data_dir=args.data_dir, device=device)  # the run's own data (task.seed)
    dataset = {"train": run.task.train, "val": run.task.val, "test": run.task.test}[args.split]
    if dataset is None:
        raise ValueError(f"task {run.config.task_name!r} has no {args.split!r} split")
    metrics = evaluate(run.model, dataset, run.task.info, run.config.train.eval_batch_size, device)
    acc = f"accuracy {_pct(metrics['acc'])}, " if "acc" in metrics else ""
    print(
        f"{run.config.task_name} {args.split}: {acc}loss {metrics['loss']:.4f} ({metrics['n']} targets; "
        f"checkpoint {run.checkpoint}, epoch {run.state['epoch']})"
    )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model from a YAML experiment config")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", help="experiment YAML file (any path)")
    source.add_argument(
        "--preset",
        metavar="NAME",
        help="a preset shipped with torchssm: mnist1d_lru, lra/listops_s4d, ... (torchssm presets)",
    )
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        default=[],
        help="override config entries, e.g. --set train.lr=1e-3 model.n_layers=4 (values are YAML)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=_AUTO,
        default=None,
        metavar="CHECKPOINT",
        help="continue from a checkpoint (default: <out_dir>/last), bit-for-bit",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="CHECKPOINT",
        help="start from these weights (a checkpoint, or a run directory: its best), with a fresh optimizer "
        "and schedule; the model config must match (train.init_from)",
    )
    p.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    p.add_argument("--out-dir", default=None, help="where metrics and checkpoints go (overrides train.out_dir)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in the output directory (its metrics and checkpoints are deleted)",
    )
    p.add_argument(
        "--stop-after",
        type=_positive_int,
        default=None,
        metavar="N",
        help="stop after N >= 1 epochs in this invocation (the schedule still spans train.epochs)",
    )
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides train.device)")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log the metrics to <out_dir>/tensorboard (needs the tensorboard package)",
    )
    p.add_argument(
        "--tbptt-chunk",
        type=int,
        default=None,
        metavar="K",
        help="truncated back-propagation through time over chunks of K steps (train.tbptt_chunk)",
    )
    p.set_defaults(func=_run_train)

    e = subparsers.add_parser("eval", help="evaluate a checkpoint on its task's test set")
    e.add_argument("--checkpoint", required=True, help="a checkpoint directory, or a run directory (uses best/)")
    e.add_argument("--split", choices=("test", "val", "train"), default="test")
    e.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    e.add_argument("--device", default="auto", help="auto | cpu | cuda ...")
    e.set_defaults(func=_run_eval)
