"""Accuracy against test length: a model trained at one length, evaluated at 2^a .. 2^b.

The Mamba paper's length-generalisation test (Gu & Dao 2023, Sec. 4.1.2, Table 2 / Fig. 4 left):
induction heads trained at L = 256 and tested at L = 2^6 .. 2^20; Mamba keeps 100% accuracy up to
2^20 while attention models fail beyond about 2x the training length.

Memory is linear in the chunk, not in L: a recurrent model reads each test batch in chunks of
``chunk`` steps, carrying its state (``model(x, state=..., return_state=True)``, the deep model's
streaming form), and only the logits of the scored positions (targets != ignore_index) are kept::

    state = None
    for chunk x_c (b, c) of inputs (b, L):   logits_c, state = model(x_c, state=state, return_state=True)
    correct += (argmax logits_c == targets_c)[targets_c != ignore]

A model with a KV cache (the attention baseline: a layer with a ``max_len``) has no constant-size
state; it is evaluated with one full forward per batch, O(L^2) time, and only up to
``full_max_length`` (the issue's limit for attention: 2^14).

Chunk size: by default ``CALL_TOKENS // batch_size`` steps, so one call reads 4096 tokens and its
activations stay in cache. Measured (2026-12-05, 1 thread, shared 2-core AMD EPYC, the 2-layer d_model-64
Mamba of ``synthetic/induction_heads_l64_mamba`` at L = 2^14, 32 sequences, two repeats): batch 16 x
chunk 2048 (the previous default) 15.1-15.5 us of CPU per token; batch 16 x 256 11.0-11.9; batch 32 x 128
10.5-11.7: 1.3-1.45x less CPU at any length. (The one-token ``step`` loop is slower: 28 us per token.)

Each length's CPU time (``time.process_time``) is recorded; once one length costs more than
``budget_s`` the longer ones are skipped (status "skipped (budget)"). Once ``stop_acc`` is given and
``stop_after`` lengths in a row score at or below it (e.g. a little above chance), the longer ones are
skipped too (status "skipped (at or below ACC)"): a model that has fallen to chance is not read at
2^20 tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

from torchssm.checks import unit_interval
from torchssm.fileio import atomic_write_text
from torchssm.runs import run_label

FULL_MAX_LENGTH = 1 << 14  # attention is evaluated up to 2^14 (issue 15: "already hours here" beyond)
CALL_TOKENS = 4096  # tokens per streamed call by default (batch x chunk): measured fastest, module docstring


def default_chunk(batch_size: int) -> int:
    """Steps per streamed chunk for ``batch_size`` sequences: ``CALL_TOKENS // batch_size`` (at least 1)."""
    return max(1, CALL_TOKENS // batch_size)


def has_kv_cache(model: nn.Module) -> bool:
    """True when a layer keeps a growing cache instead of a fixed-size state (attention: ``max_len``)."""
    return any(hasattr(m, "max_len") and hasattr(m, "step") for m in model.modules() if m is not model)


@torch.no_grad()
def streaming_correct(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, chunk: int, ignore_index: int = -100
) -> tuple[int, int]:
    """(correct, scored) of ``model`` on inputs (b, L) / targets (b, L), read ``chunk`` steps at a time."""
    state, correct, count = None, 0, 0
    for start in range(0, inputs.shape[1], chunk):
        logits, state = model(inputs[:, start : start + chunk], state=state, return_state=True)  # (b, c, V)
        t = targets[:, start : start + chunk]  # (b, c)
        mask = t != ignore_index
        if mask.any():
            correct += int((logits[mask].argmax(-1) == t[mask]).sum())
            count += int(mask.sum())
    return correct, count


@torch.no_grad()
def full_correct(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100):
    """(correct, scored) with one forward over the whole batch (O(L^2) for attention)."""
    logits = model(inputs)  # (b, L, V)
    mask = targets != ignore_index
    return int((logits[mask].argmax(-1) == targets[mask]).sum()), int(mask.sum())


def length_test_set(task: str, length: int, n: int, *, seed: int = 0, task_options: dict | None = None):
    """``n`` test examples of ``task`` at ``length`` and the task's ignore_index.

    Tasks with extrapolation sets (``extra["test_lengths"]``, e.g. induction heads) give those;
    any other task is rebuilt with ``length=length`` and its test split is used.
    """
    from torchssm.data.registry import build_task

    options = {k: v for k, v in (task_options or {}).items() if k not in ("seed", "test_lengths", "n_test_lengths")}
    probe = build_task(task, seed=seed, **{**options, "n_train": 1, "n_val": 0, "n_test": 1, "materialize": False})
    if "test_lengths" in probe.extra:
        data = build_task(
            task,
            seed=seed,
            **{**options, "n_train": 1, "n_val": 0, "n_test": 1, "materialize": False},
            test_lengths=[length],
            n_test_lengths=n,
        )
        return data.extra["test_lengths"][length], data.info.ignore_index
    data = build_task(task, seed=seed, **{**options, "length": length, "n_train": 1, "n_val": 0, "n_test": n})
    return data.test, data.info.ignore_index


def evaluate_lengths(
    model: nn.Module,
    task: str,
    lengths: Sequence[int],
    *,
    n_sequences: int = 64,
    batch_size: int = 16,
    chunk: int | None = None,
    seed: int = 0,
    task_options: dict | None = None,
    full_max_length: int = FULL_MAX_LENGTH,
    budget_s: float | None = None,
    stop_acc: float | None = None,
    stop_after: int = 2,
    progress: bool = True,
    on_row=None,
) -> list[dict]:
    """One row per length: {"length", "acc", "n", "cpu_s", "method", "status"}.

    ``method`` is "stream" (chunked, memory linear in ``chunk``; default :func:`default_chunk`) for
    fixed-state models and "full" for
    models with a KV cache (then lengths above ``full_max_length`` are "skipped (attention limit)").
    ``stop_acc`` / ``stop_after``: skip the longer lengths once ``stop_after`` evaluated lengths in a
    row had accuracy <= ``stop_acc`` (module docstring).
    ``on_row(rows)`` is called after each evaluated length (the command line saves its JSON there, so
    an interrupted sweep keeps the lengths already done).
    """
    chunk = default_chunk(batch_size) if chunk is None else chunk
    if n_sequences < 1 or batch_size < 1 or chunk < 1:
        raise ValueError(f"n_sequences, batch_size and chunk must be >= 1; got {n_sequences}, {batch_size}, {chunk}")
    if stop_acc is not None:
        unit_interval("stop_acc", stop_acc, "an accuracy")
    if stop_after < 1:
        raise ValueError(f"stop_after must be >= 1; got {stop_after}")
    from tqdm.auto import tqdm

    model.eval()
    full = has_kv_cache(model)
    rows: list[dict] = []
    over_budget, low_in_a_row = False, 0
    for length in lengths:
        method = "full" if full else "stream"
        row: dict = {"length": int(length), "acc": None, "n": None, "cpu_s": None, "method": method}
        rows.append(row)
        if over_budget:
            row["status"] = "skipped (budget)"
            continue
        if stop_acc is not None and low_in_a_row >= stop_after:
            row["status"] = f"skipped (at or below {stop_acc:g})"
            continue
        if full and length > full_max_length:
            row["status"] = f"skipped (attention limit {full_max_length})"
            continue
        data, ignore = length_test_set(task, int(length), n_sequences, seed=seed, task_options=task_options)
        t0, correct, count = time.process_time(), 0, 0
        batches = range(0, n_sequences, batch_size)
        for start in tqdm(batches, desc=f"L={length}", disable=not progress, leave=False):
            items = [data[i] for i in range(start, min(start + batch_size, n_sequences))]
            x = torch.stack([it["inputs"] for it in items])  # (b, L)
            y = torch.stack([it["targets"] for it in items])  # (b, L)
            if full:
                c, k = full_correct(model, x, y, ignore)
            else:
                c, k = streaming_correct(model, x, y, chunk=chunk, ignore_index=ignore)
            correct, count = correct + c, count + k
        cpu_s = time.process_time() - t0
        row.update(acc=correct / max(count, 1), n=count, cpu_s=cpu_s, status="ok")
        over_budget = budget_s is not None and cpu_s > budget_s
        low_in_a_row = low_in_a_row + 1 if stop_acc is not None and row["acc"] <= stop_acc else 0
        if on_row is not None:
            on_row(rows)
    return rows


# --- command line: torchssm length-eval -------------------------------------------------------------
def _row_line(r: dict) -> str:
    acc = "-" if r["acc"] is None else f"{100 * r['acc']:.2f}%"
    cpu = "-" if r["cpu_s"] is None else f"{r['cpu_s']:.1f}"
    return f"L={r['length']:>8d}  acc {acc:>8s}  n {r['n'] or '-':>4}  cpu_s {cpu:>7s}  {r['method']}  {r['status']}"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "length-eval",
        help="accuracy vs test length 2^a..2^b of a trained run (memory-linear streaming; Mamba Table 2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="training run directory / checkpoint / save_pretrained dir")
    p.add_argument("--task", help="task registry name (default: the one recorded by training)")
    p.add_argument("--task-options", help="JSON options of the task builder (default: those recorded by training)")
    p.add_argument("--min-log2", type=int, default=8, help="shortest test length 2^a (default 8: 256)")
    p.add_argument("--max-log2", type=int, default=20, help="longest test length 2^b (default 20, the paper's)")
    p.add_argument("--n", type=int, default=64, help="test sequences per length (default 64)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help=f"steps per streamed chunk (memory ~ batch * chunk; default {CALL_TOKENS} // batch size: fastest)",
    )
    p.add_argument("--full-max-length", type=int, default=FULL_MAX_LENGTH, help="longest length for attention")
    p.add_argument("--budget-s", type=float, help="skip longer lengths once one length costs more CPU seconds")
    p.add_argument(
        "--stop-acc",
        type=float,
        help="skip longer lengths once --stop-after lengths in a row score at or below this accuracy (0..1)",
    )
    p.add_argument("--stop-after", type=int, default=2, help="lengths in a row for --stop-acc (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--label", help="name of this model in the JSON / plot (default: the checkpoint folder)")
    p.add_argument("--json", help="write {label, rows, ...} to this JSON file (for `torchssm plot length`)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torchssm
    from torchssm.bench.extrapolation import training_record
    from torchssm.cpu_threads import set_cpu_threads

    if not 1 <= args.min_log2 <= args.max_log2 <= 30:
        raise ValueError(f"need 1 <= --min-log2 <= --max-log2 <= 30; got {args.min_log2}, {args.max_log2}")
    set_cpu_threads(args.threads)
    path, record = training_record(args.checkpoint)
    task = args.task or (record or {}).get("task")
    if not task:
        raise ValueError(f"{args.checkpoint} holds no training record: give --task")
    options = json.loads(args.task_options) if args.task_options else (record or {}).get("task_options", {})
    seed = (record or {}).get("seed", 0)
    model = torchssm.from_pretrained(path)
    lengths = [1 << k for k in range(args.min_log2, args.max_log2 + 1)]
    label = args.label or run_label(path)
    print(f"[length-eval] {label}: {path} on {task}, lengths 2^{args.min_log2}..2^{args.max_log2}", file=sys.stderr)

    def save(rows):
        if args.json:
            record = {"label": label, "checkpoint": path, "task": task, "seed": seed, "rows": rows}
            record.update(batch_size=args.batch_size, chunk=args.chunk or default_chunk(args.batch_size))
            text = json.dumps(record, indent=1)
            atomic_write_text(args.json, text + "\n")

    rows = evaluate_lengths(
        model,
        task,
        lengths,
        n_sequences=args.n,
        batch_size=args.batch_size,
        chunk=args.chunk,
        seed=seed,
        task_options=options,
        full_max_length=args.full_max_length,
        budget_s=args.budget_s,
        stop_acc=args.stop_acc,
        stop_after=args.stop_after,
        on_row=lambda rows: (print(_row_line(rows[-1]), flush=True), save(rows)),
    )
    for r in rows:
        if r["status"] != "ok":
            print(_row_line(r))
    if args.json:
        save(rows)
        print(f"wrote {args.json}")
    return 0
