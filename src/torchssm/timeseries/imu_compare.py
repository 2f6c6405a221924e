"""HiSS vs flat sequence models on the simulated inertial-odometry task (:mod:`torchssm.timeseries.imu`), as
in HiSS's Table 2 protocol (Bhirangi et al. 2024, Sec. 5): every model predicts the velocity at the end of
each chunk of k steps (HiSS natively; flat models read their output at steps k-1, 2k-1, ...), all at the same
parameter budget and with the same number of tuned configurations (learning rates), the best one chosen
on the validation set and reported on the test set: MSE (m^2/s^2) and CPU speed.

    torchssm timeseries imu --budget 20000 --steps 300 --lrs 1e-3,3e-3

A model name may carry architecture options (``flat:mamba@n_layers=3``, ``hiss:s5/s5@pool=mean``; see
:func:`torchssm.timeseries.fit.split_options`): each is one more tuning configuration of its model family, and
:func:`best_per_family` picks a family's best configuration on validation over the rows of several runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch

from torchssm.timeseries.fit import (
    build_sequence_model,
    count_parameters,
    evaluate_loss,
    fit_regression,
    inference_cpu_seconds,
    split_options,
    width_for_budget,
    write_json,
)
from torchssm.timeseries.imu import IMUConfig, imu_dataset

DEFAULT_MODELS = ("hiss:lru/lru", "hiss:s5/s5", "flat:lru", "flat:s5", "flat:mamba", "lstm", "flat:transformer")


def chunk_end_loss(chunk: int) -> Callable:
    """MSE between the per-chunk predictions and the targets at the chunk ends (steps k-1, 2k-1, ...)."""

    def loss_of(model, batch):
        targets = batch["targets"][:, chunk - 1 :: chunk]  # (b, L/k, 3)
        out = model(batch["inputs"])
        if out.shape[1] != targets.shape[1]:  # a per-step model: read it at the chunk ends
            out = out[:, chunk - 1 :: chunk]
        return torch.nn.functional.mse_loss(out, targets)

    return loss_of


def run(
    models=DEFAULT_MODELS,
    *,
    budget: int = 20000,
    steps: int = 300,
    lrs=(1e-3, 3e-3),
    chunk: int = 10,
    n_train: int = 512,
    n_val: int = 128,
    n_test: int = 256,
    seconds: float = 5.0,
    batch_size: int = 16,
    seed: int = 0,
    out=None,
    progress: bool = True,
    data_seed: int = 0,
) -> dict:
    """Train every model at every learning rate; the result has one row per model (its best configuration).
    ``seed`` seeds the weights and the batch order, ``data_seed`` the simulated trajectories (train / val / test
    from :func:`simulate` seeds 3 data_seed + 0 / 1 / 2), so runs of several seeds share their data."""
    torch.set_num_threads(1)
    cfg = IMUConfig(seconds=seconds)
    L = cfg.length
    if not lrs:
        raise ValueError("lrs must name at least one learning rate")
    if L % chunk:
        raise ValueError(f"chunk={chunk} must divide the sequence length {L} (rate_hz * seconds)")
    train, val, test = (imu_dataset(n, cfg, seed=3 * data_seed + i) for i, n in enumerate((n_train, n_val, n_test)))
    loss_of = chunk_end_loss(chunk)
    zero = evaluate_loss(lambda x: torch.zeros(x.shape[0], L // chunk, 3), test, loss_of)
    rows, trials = [], []
    for kind in models:
        kw = dict(d_input=6, d_output=3, length=L, chunk=chunk)
        width = width_for_budget(kind, budget, **kw)
        best = None
        for lr in lrs:
            torch.manual_seed(seed)
            model = build_sequence_model(kind, width, **kw)
            t0 = time.time()
            fit = fit_regression(
                model, train, val, loss_of, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress
            )
            trial = {
                "model": kind,
                "width": width,
                "params": count_parameters(model),
                "lr": lr,
                "val_mse": fit["val"],
                "train_cpu_s_per_step": fit["cpu_s"] / steps,
                "wall_s": time.time() - t0,
            }
            print(json.dumps(trial), flush=True)
            trials.append(dict(trial))
            if best is None or fit["val"] < best[0]["val_mse"]:
                best = (trial, model)
        assert best is not None  # lrs is not empty (checked above)
        trial, model = best
        trial["test_mse"] = evaluate_loss(model, test, loss_of)
        trial["infer_cpu_s_batch16"] = inference_cpu_seconds(model, test.tensors["inputs"][:16])
        rows.append(trial)
        print(json.dumps({"done": trial}), flush=True)  # each model's result as soon as it is known
    result = {
        "task": "imu velocity at chunk ends",
        "imu_config": cfg.__dict__,
        "chunk": chunk,
        "budget": budget,
        "steps": steps,
        "lrs": list(lrs),
        "batch_size": batch_size,
        "n_train": n_train,
        "seed": seed,
        "data_seed": data_seed,
        "zero_predictor_test_mse": zero,
        "rows": rows,
        "trials": trials,  # every configuration's validation MSE (rows: each model's best, with its test MSE)
    }
    if out:
        write_json(out, result)
    return result


def best_per_family(rows) -> dict:
    """{family: the row with the lowest validation MSE among that family's configurations, with "configs": how
    many there were}; a family is the model name without its ``@`` options (``flat:mamba@n_layers=3`` ->
    ``flat:mamba``), so each option set counts as one tuned configuration, like a learning rate."""
    best: dict = {}
    for row in rows:
        family = split_options(row["model"])[0]
        count = best.get(family, {}).get("configs", 0) + 1
        if family not in best or row["val_mse"] < best[family]["val_mse"]:
            best[family] = dict(row)
        best[family]["configs"] = count
    return best


def format_table(result: dict) -> str:
    lines = [
        "| model | width | params | best lr | val MSE | test MSE | train CPU ms/step | infer CPU ms (16 seqs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['width']} | {r['params']} | {r['lr']:g} | {r['val_mse']:.4f} | "
            f"{r['test_mse']:.4f} | {1e3 * r['train_cpu_s_per_step']:.0f} | "
            f"{1e3 * r['infer_cpu_s_batch16']:.0f} |"
        )
    lines.append(f"| predict 0 | | 0 | | | {result['zero_predictor_test_mse']:.4f} | | |")
    return "\n".join(lines)
