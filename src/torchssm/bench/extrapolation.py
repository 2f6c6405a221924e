"""``torchssm bench extrapolation``: evaluate a model trained at length L on the same task at 2L..16L.

    torchssm bench extrapolation --checkpoint runs/aa_ab_lru            # task and L from the training run
    torchssm bench extrapolation --checkpoint model_dir --task aa_ab --train-length 256

``--checkpoint`` is a training run directory (its ``best/``, else ``last/``), a training checkpoint or
any ``save_pretrained`` directory; the task, its options and L default to those recorded by training
(``trainer_state.json``). For each factor f in ``--factors`` (default 1,2,4,8,16) the task is rebuilt
with its length option (``--length-key``, default "length"; e.g. "delay" for copying) set to f * L and
the model (loaded with :func:`torchssm.from_pretrained`) is evaluated on the test split with the training loop's
:func:`torchssm.train.loop.evaluate`. A recurrent model has no length limit; a Transformer with
rotary positions runs at any length too, but its attention was only trained on distances < L.
Out-of-memory at a length is recorded as "oom" and the longer lengths are skipped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from torchssm.bench import common


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="training run / checkpoint / save_pretrained directory")
    p.add_argument("--task", help="task registry name (default: the one recorded by training)")
    p.add_argument("--task-options", help="JSON options of the task builder (default: those recorded by training)")
    p.add_argument("--length-key", default="length", help="the task option that sets the length (default: length)")
    p.add_argument(
        "--train-length",
        type=int,
        help="L the model was trained at (default: the task's length option, else its TaskInfo.length)",
    )
    p.add_argument("--factors", default="1,2,4,8,16", help="evaluate at f * L for each f")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, help="task seed (default: the training seed, else 0)")
    p.add_argument("--json", help="write the results to this JSON file")


def evaluate_lengths(
    model: torch.nn.Module,
    task: str,
    train_length: int,
    factors: Sequence[int],
    *,
    task_options: dict | None = None,
    length_key: str = "length",
    batch_size: int = 64,
    device="cpu",
    seed: int = 0,
) -> list[dict[str, object]]:
    """One row per factor: {"factor", "length", "status", "loss", "acc", "n"} on the test split."""
    from torchssm.data.registry import build_task
    from torchssm.train.loop import evaluate

    model = model.to(device)
    rows, stop = [], False
    for f in factors:
        row = {"factor": f, "length": f * train_length, "status": "ok", "loss": None, "acc": None, "n": None}
        rows.append(row)
        if stop:
            row["status"] = "skipped (oom at a shorter length)"
            continue
        data = build_task(task, seed=seed, **{**(task_options or {}), length_key: f * train_length})
        try:
            row.update(evaluate(model, data.test, data.info, batch_size=batch_size, device=device))
        except (RuntimeError, torch.OutOfMemoryError) as err:
            if not common.is_oom(err):
                raise
            row["status"], stop = "oom", True
    return rows


def training_record(checkpoint) -> tuple[str, dict | None]:
    """(checkpoint directory, training's {"task", "task_options", "seed"} or None if not a training run, e.g.
    a ``save_pretrained`` directory). A path that does not exist raises FileNotFoundError."""
    from torchssm.train.checkpoint import SIDECAR
    from torchssm.train.cli import find_checkpoint
    from torchssm.train.reload import read_run_config

    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"no training run or checkpoint at {checkpoint}")
    path = find_checkpoint(checkpoint)
    if not (Path(path) / SIDECAR).exists():
        return str(path), None
    try:
        path, _, exp = read_run_config(path)  # the config reader torchssm eval and load_run use
    except ValueError:  # a checkpoint without a training config
        return str(path), None
    options = {k: v for k, v in exp.task_options.items() if k != "seed"}
    return str(path), {"task": exp.task_name, "task_options": options, "seed": exp.data_seed}  # the data's seed


def run(args) -> int:
    import torchssm
    from torchssm.data.registry import build_task

    path, record = training_record(args.checkpoint)
    task = args.task or (record or {}).get("task")
    if not task:
        raise ValueError(f"{args.checkpoint} holds no training record: give --task (and --task-options)")
    options = json.loads(args.task_options) if args.task_options else dict((record or {}).get("task_options", {}))
    seed = args.seed if args.seed is not None else (record or {}).get("seed", 0)
    base = args.train_length or options.get(args.length_key)
    if base is None:
        base = build_task(task, seed=seed, **options).info.length
    if not isinstance(base, int) or base < 1:
        raise ValueError(f"the training length must be a positive int; got {base!r} (give --train-length)")
    factors = [int(f) for f in str(args.factors).split(",")]
    device = common.resolve_device(args.device)
    model = torchssm.from_pretrained(path)
    print(f"[bench extrapolation] {path} on {task}, {args.length_key}={base}", file=sys.stderr)
    rows = evaluate_lengths(
        model,
        task,
        base,
        factors,
        task_options=options,
        length_key=args.length_key,
        batch_size=args.batch_size,
        device=device,
        seed=seed,
    )
    env = common.environment(device)
    print(
        f"# {path} trained at {args.length_key}={base}; task {task}; "
        f"{env['device_name']}, torch {env['torch']}, {env['date_utc']}"
    )
    print(common.format_table(rows, ["factor", "length", "loss", "acc", "n", "status"]))
    if args.json:
        common.save_json(
            args.json,
            {
                "benchmark": "length extrapolation",
                "environment": env,
                "checkpoint": path,
                "task": task,
                "task_options": options,
                "seed": seed,
                "length_key": args.length_key,
                "train_length": base,
                "results": rows,
            },
        )
        print(f"wrote {args.json}")
    return 0
