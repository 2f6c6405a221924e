"""LongVQ vs the plain SSM on one long task, with the VQ loss in the training loss.

Both models are the deep model of models/backbone.py on a registered task (data/registry.py): the plain
one with the SSM layer alone (``layer``), the other with ``longvq`` whose embedded SSM is that same layer.
The training loss is the task loss (train/losses.py) + the layers' auxiliary losses (LongVQ's codebook +
commitment loss times its ``vq_weight``), collected with :func:`torchssm.models.auxiliary.pop_auxiliary_loss`
as ``torchssm train`` does. AdamW + warm-up/cosine (train/optim.py, train/schedule.py),
random batches, the same steps, seed and data for both; test accuracy at the end (train/losses.evaluate).
"""

from __future__ import annotations

from pathlib import Path

import torch

from torchssm.models.auxiliary import pop_auxiliary_loss


def build_task_model(layer: str, layer_kwargs: dict, info, *, d_model: int, n_layers: int):
    """DeepSSM for a registered task's ``info`` (per-token head for seq2seq tasks)."""
    from torchssm.models.backbone import DeepSSM
    from torchssm.models.config import ModelConfig
    from torchssm.train.config import model_config_for_task

    pooling = "none" if info.kind in ("seq2seq", "lm") else "mean"
    cfg = ModelConfig(
        layer=layer, d_model=d_model, n_layers=n_layers, layer_kwargs=layer_kwargs, norm="layer", pooling=pooling
    )
    return DeepSSM(model_config_for_task(cfg, info))


def train_with_aux(
    model,
    task,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int = 0,
    progress: bool = True,
    desc: str = "",
) -> dict:
    """Train ``model`` on ``task`` (TaskData) for ``steps`` random batches with loss = task loss + the
    layers' auxiliary losses; return test accuracy / loss, the last losses and the CPU seconds."""
    from torchssm.train.losses import evaluate, forward_batch, loss_and_correct
    from torchssm.vision.fit import fit

    if batch < 1:
        raise ValueError(f"batch must be positive; got {batch}")
    last = {}

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(task.train), (batch,), generator=gen)
        items = [task.train[int(i)] for i in idx]
        data = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        task_loss, _, _ = loss_and_correct(forward_batch(model, data), data["targets"], task.info)
        aux = pop_auxiliary_loss(model)  # LongVQ's weighted VQ loss; None for a plain SSM
        last["task"], last["aux"] = float(task_loss.detach()), 0.0 if aux is None else float(aux.detach())
        return task_loss if aux is None else task_loss + aux

    out = fit(
        model, batch_loss, steps=steps, lr=lr, weight_decay=0.01, seed=seed, progress=progress, desc=desc or "train"
    )
    test = evaluate(model, task.test, task.info, batch_size=64)
    return {
        "test_accuracy": test["acc"],
        "test_loss": test["loss"],
        "final_task_loss": last["task"],
        "final_aux_loss": last["aux"],
        "train_cpu_s": out["cpu_s"],
    }


def run_longvq_comparison(
    out_dir,
    *,
    task: str = "mqar",
    task_kwargs: dict | None = None,
    ssm: str = "s4d",
    ssm_kwargs: dict | None = None,
    longvq_kwargs: dict | None = None,
    d_model: int = 32,
    n_layers: int = 2,
    steps: int = 300,
    batch: int = 16,
    lr: float = 2e-3,
    aux_weight: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train the plain ``ssm`` model and the LongVQ model (same embedded ``ssm``, VQ loss weight
    ``aux_weight``) on ``task``; write ``results.json`` under ``out_dir`` (atomically) and return it."""
    from torchssm.data.registry import build_task
    from torchssm.fileio import atomic_write_json

    data = build_task(task, seed=seed, **(task_kwargs or {}))
    ssm_kwargs = dict(ssm_kwargs or {})
    specs = {
        f"{ssm}": (ssm, ssm_kwargs),
        f"longvq({ssm})": (
            "longvq",
            {"ssm": ssm, "ssm_kwargs": ssm_kwargs, "vq_weight": aux_weight, **(longvq_kwargs or {})},
        ),
    }
    models = {}
    for name, (layer, kwargs) in specs.items():
        torch.manual_seed(seed)
        model = build_task_model(layer, kwargs, data.info, d_model=d_model, n_layers=n_layers)
        res = train_with_aux(model, data, steps=steps, batch=batch, lr=lr, seed=seed, progress=progress, desc=name)
        models[name] = {
            "layer": layer,
            "layer_kwargs": kwargs,
            "parameters": sum(p.numel() for p in model.parameters()),
            **res,
        }
    summary = {
        "task": task,
        "task_kwargs": task_kwargs or {},
        "length": data.info.length,
        "d_model": d_model,
        "n_layers": n_layers,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "aux_weight": aux_weight,
        "seed": seed,
        "models": models,
    }
    atomic_write_json(Path(out_dir) / "results.json", summary, indent=2)
    return summary
