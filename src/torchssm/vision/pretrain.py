"""Masked pretraining then fine-tuning with few labels: accuracy with vs without pretraining.

Arms, all with the same encoder (a DeepSSM classifier of vision/classify.py), seed, split and budget:

    scratch     fine-tune only (random init)
    s6t         MambaMIM pretraining with S6T token interpolation (vision/mim.py), then fine-tune
    mask_token  the same pretraining with a learned mask token (the paper's ablation), then fine-tune

Pretraining sees every training image without labels; fine-tuning sees ``label_fraction`` of them
(10%: the setting asked for) with labels; accuracy on the held-out test split.
"""

from __future__ import annotations

from pathlib import Path

import torch

ARMS = ("scratch", "s6t", "mask_token")


def pretrain(
    mim,
    tokens: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int = 0,
    progress: bool = True,
    desc: str = "pretrain",
) -> dict:
    """AdamW + warm-up/cosine (vision/fit.py) on the masked-reconstruction loss over random batches."""
    from torchssm.vision.fit import fit

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(tokens), (batch,), generator=gen)
        return mim(tokens[idx], generator=gen)[0]

    return fit(mim, batch_loss, steps=steps, lr=lr, weight_decay=0.05, seed=seed, progress=progress, desc=desc)


@torch.no_grad()
def reconstruction_loss(mim, tokens: torch.Tensor, seed: int = 1) -> float:
    """Masked-cell MSE on ``tokens`` with a fixed random mask (the same for every model)."""
    from torchssm.vision.mim import random_visible

    mim.eval()
    visible = random_visible(len(tokens), tokens.shape[1], mim.ratio, torch.Generator().manual_seed(seed))
    return float(mim(tokens, visible)[0])


def run_mim_experiment(
    out_dir,
    model: dict,
    *,
    data: str = "digits",
    n_images: int = 2000,
    patch: int = 2,
    ratio: float = 0.6,
    pretrain_steps: int = 600,
    finetune_steps: int = 300,
    batch: int = 32,
    lr: float = 2e-3,
    label_fraction: float = 0.1,
    arms=ARMS,
    seed: int = 0,
    cache=None,
    progress: bool = True,
) -> dict:
    """Run ``arms`` on ``data``; write ``results.json`` under ``out_dir`` (atomically) and return it."""
    from torchssm.fileio import atomic_write_json
    from torchssm.vision.classify import build_classifier, load_images, patch_tokens, split, train_classifier
    from torchssm.vision.mim import MaskedImageModel

    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; expected some of {ARMS}")
    if not 0.0 < label_fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1]; got {label_fraction}")
    images, labels, classes = load_images(data, n_images, seed, cache)
    tokens = patch_tokens(images, patch)  # (n, L, C p p)
    grid = (images.shape[2] // patch, images.shape[3] // patch)
    train_idx, test_idx = split(len(tokens), seed)
    labelled = train_idx[: max(classes, round(label_fraction * len(train_idx)))]
    results = {}
    for arm in arms:
        torch.manual_seed(seed)
        clf = build_classifier(model, tokens.shape[-1], classes, grid)
        row: dict = {}
        if arm != "scratch":
            mim = MaskedImageModel(clf, fill=arm, ratio=ratio)
            row["pretrain"] = pretrain(
                mim,
                tokens[train_idx],
                steps=pretrain_steps,
                batch=batch,
                lr=lr,
                seed=seed,
                progress=progress,
                desc=f"pretrain {arm}",
            )
            row["pretrain"]["test_reconstruction_mse"] = reconstruction_loss(mim, tokens[test_idx])
        row.update(
            train_classifier(
                clf,
                tokens[labelled],
                labels[labelled],
                tokens[test_idx],
                labels[test_idx],
                steps=finetune_steps,
                batch=batch,
                lr=lr,
                seed=seed,
                progress=progress,
                desc=f"fine-tune {arm}",
            )
        )
        results[arm] = row
    summary = {
        "data": data,
        "n_images": len(tokens),
        "patch": patch,
        "grid": list(grid),
        "ratio": ratio,
        "model": model,
        "pretrain_steps": pretrain_steps,
        "finetune_steps": finetune_steps,
        "batch": batch,
        "lr": lr,
        "label_fraction": label_fraction,
        "n_labelled": len(labelled),
        "n_unlabelled": len(train_idx),
        "n_test": len(test_idx),
        "seed": seed,
        "arms": results,
    }
    atomic_write_json(Path(out_dir) / "results.json", summary, indent=2)
    return summary
