"""``torchssm bench extrapolation``: evaluate a model trained at length L on the same task at 2L..16L.

    torchssm bench extrapolation --checkpoint runs/aa_ab_lru --task aa_ab --train-length 256

For each factor f in ``--factors`` (default 1,2,4,8,16) the task is rebuilt with its length option
(``--length-key``, default "length"; e.g. "delay" for copying) set to f * L and the model (loaded with
:func:`torchssm.from_pretrained`) is evaluated on the test split with the training loop's
:func:`torchssm.train.loop.evaluate`. A recurrent model has no length limit; a Transformer with
rotary positions runs at any length too, but its attention was only trained on distances < L.
Out-of-memory at a length is recorded as "oom" and the longer lengths are skipped.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List, Optional, Sequence

import torch

from torchssm.bench import common


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="a save_pretrained directory (config.json + model.safetensors)")
    p.add_argument("--task", required=True, help="task registry name (torchssm tasks)")
    p.add_argument("--task-options", default="{}", help="JSON options of the task builder (as in training)")
    p.add_argument("--length-key", default="length", help="the task option that sets the length (default: length)")
    p.add_argument("--train-length", type=int, help="L the model was trained at (default: --task-options[key])")
    p.add_argument("--factors", default="1,2,4,8,16", help="evaluate at f * L for each f")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="task seed (the test split is seeded independently)")
    p.add_argument("--json", help="write the results to this JSON file")


def evaluate_lengths(model: torch.nn.Module, task: str, train_length: int, factors: Sequence[int], *,
                     task_options: Optional[dict] = None, length_key: str = "length", batch_size: int = 64,
                     device="cpu", seed: int = 0) -> List[Dict[str, object]]:
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


def run(args) -> int:
    import torchssm

    options = json.loads(args.task_options)
    base = args.train_length or options.get(args.length_key)
    if not isinstance(base, int) or base < 1:
        raise ValueError(f"give --train-length or a positive int task option {args.length_key!r}")
    factors = [int(f) for f in str(args.factors).split(",")]
    device = common.resolve_device(args.device)
    model = torchssm.from_pretrained(args.checkpoint)
    print(f"[bench extrapolation] {args.checkpoint} on {args.task}, L={base}", file=sys.stderr)
    rows = evaluate_lengths(model, args.task, base, factors, task_options=options, length_key=args.length_key,
                            batch_size=args.batch_size, device=device, seed=args.seed)
    env = common.environment(device)
    print(f"# {args.checkpoint} trained at {args.length_key}={base}; task {args.task}; "
          f"{env['device_name']}, torch {env['torch']}, {env['date_utc']}")
    print(common.format_table(rows, ["factor", "length", "loss", "acc", "n", "status"]))
    if args.json:
        common.save_json(args.json, {"benchmark": "length extrapolation", "environment": env,
                                     "checkpoint": str(args.checkpoint), "task": args.task, "task_options": options,
                                     "length_key": args.length_key, "train_length": base, "results": rows})
        print(f"wrote {args.json}")
    return 0
