"""Long-video experiment on moving-digits clips (vision/video.py) with the Selective S5 model
(vision/selective_s5.py): accuracy and kept-token fraction with and without LSMCL pre-training, the plain
S4 model on every frame, and throughput against a Transformer over the frame tokens at long clips.

Arms (same data, seed, steps and batch):

    s5          token selection (keep fraction ``keep``), supervised training only
    s5_lsmcl    LSMCL pre-training (``pretrain_steps``, no labels), then the same supervised training
    s4_all      every frame token (keep = 1): the S4 model the selection is compared with

Reported per arm: test accuracy, the kept fraction K / T and the event recall (the share of the event
frames, the informative tokens, that the selection keeps) on the test clips, CPU seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

ARMS = ("s5", "s5_lsmcl", "s4_all")


def lsmcl_pretrain(model, data, *, steps: int, batch: int, lr: float, seed: int = 0, progress: bool = True) -> dict:
    """LSMCL on unlabelled clips of ``data`` (MovingDigits); the teacher follows by EMA after each step."""
    from torchssm.vision.fit import fit

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(data), (batch,), generator=gen)
        return model.lsmcl_loss(data.render(idx), generator=gen)

    return fit(
        model,
        batch_loss,
        steps=steps,
        lr=lr,
        weight_decay=0.05,
        seed=seed + 1,
        progress=progress,
        desc="LSMCL",
        after_step=model.update_teacher,
    )


def train_supervised(
    model, data, *, steps: int, batch: int, lr: float, seed: int = 0, progress: bool = True, desc: str = "train"
) -> dict:
    """Cross-entropy on labelled clips; the teacher follows by EMA after each step."""
    from torchssm.vision.fit import fit

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(data), (batch,), generator=gen)
        return F.cross_entropy(model(data.render(idx)), data.labels[idx])

    return fit(
        model,
        batch_loss,
        steps=steps,
        lr=lr,
        weight_decay=0.05,
        seed=seed,
        progress=progress,
        desc=desc,
        after_step=model.update_teacher,
    )


@torch.no_grad()
def evaluate_video(model, data, batch: int = 32) -> dict:
    """Test accuracy, kept fraction K / T and event recall (kept event frames / event frames)."""
    model.eval()
    correct, kept, recall_hits, events = 0, 0.0, 0, 0
    for s in range(0, len(data), batch):
        idx = torch.arange(s, min(s + batch, len(data)))
        logits, sel = model(data.render(idx), return_selection=True)
        correct += int((logits.argmax(-1) == data.labels[idx]).sum())
        ev = data.event_mask(idx)  # (b, T)
        if sel is None:
            kept += len(idx)
            recall_hits += int(ev.sum())
        else:
            kept += len(idx) * sel.shape[1] / data.frames
            recall_hits += int(ev.gather(1, sel).sum())
        events += int(ev.sum())
    return {
        "test_accuracy": correct / len(data),
        "kept_fraction": kept / len(data),
        "event_recall": recall_hits / events,
    }


@torch.no_grad()
def throughput(
    frames_list=(256, 1024, 4096),
    *,
    canvas: int = 12,
    d_model: int = 32,
    n_layers: int = 2,
    keep: float = 0.25,
    batch: int = 2,
    repeats: int = 2,
    seed: int = 0,
) -> list[dict]:
    """CPU seconds per clip of one eval forward: Selective S5 (keep), S4 on every frame, and a Transformer
    (bidirectional softmax attention, 4 heads) over every frame token; same frame encoder and width."""
    from torchssm.vision.selective_s5 import SelectiveS5

    models = {
        f"selective_s5 (keep {keep})": SelectiveS5(canvas**2, 10, d_model, n_layers, "s4d", {"d_state": 16}, keep=keep),
        "s4d (all frames)": SelectiveS5(canvas**2, 10, d_model, n_layers, "s4d", {"d_state": 16}, keep=1.0),
        "transformer (all frames)": SelectiveS5(
            canvas**2,
            10,
            d_model,
            n_layers,
            "transformer",
            {"causal": False, "n_heads": 4, "max_len": max(frames_list)},
            keep=1.0,
        ),
    }
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for T in frames_list:
        x = torch.rand(batch, T, canvas, canvas, generator=gen)
        for name, model in models.items():
            model.eval()
            model(x[:, : min(T, 8)])  # warm-up (kernels, caches)
            t0 = time.process_time()
            for _ in range(repeats):
                model(x)
            cpu = (time.process_time() - t0) / (repeats * batch)
            rows.append({"model": name, "frames": T, "cpu_s_per_clip": cpu, "frames_per_cpu_s": T / cpu})
    return rows


def run_video_experiment(
    out_dir,
    *,
    frames: int = 512,
    canvas: int = 12,
    n_train: int = 2000,
    n_test: int = 300,
    d_model: int = 32,
    n_layers: int = 2,
    d_state: int = 16,
    keep: float = 0.25,
    pretrain_steps: int = 200,
    steps: int = 300,
    batch: int = 16,
    lr: float = 2e-3,
    arms=ARMS,
    throughput_frames=(256, 1024, 4096),
    seed: int = 0,
    data_dir=None,
    progress: bool = True,
) -> dict:
    """Train ``arms`` on moving-digits clips, measure throughput; write ``results.json`` (atomically)."""
    from torchssm.fileio import atomic_write_json
    from torchssm.vision.selective_s5 import SelectiveS5
    from torchssm.vision.video import MovingDigits

    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; expected some of {ARMS}")
    train = MovingDigits(n_train, frames, canvas, split="train", seed=seed, data_dir=data_dir)
    test = MovingDigits(n_test, frames, canvas, split="test", seed=seed, data_dir=data_dir)
    results = {}
    for arm in arms:
        torch.manual_seed(seed)
        model = SelectiveS5(
            canvas**2, 10, d_model, n_layers, "s4d", {"d_state": d_state}, keep=1.0 if arm == "s4_all" else keep
        )
        row: dict = {"parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        if arm == "s5_lsmcl":
            row["pretrain"] = lsmcl_pretrain(
                model, train, steps=pretrain_steps, batch=batch, lr=lr, seed=seed, progress=progress
            )
        row["train"] = train_supervised(
            model, train, steps=steps, batch=batch, lr=lr, seed=seed, progress=progress, desc=arm
        )
        row.update(evaluate_video(model, test))
        results[arm] = row
    summary = {
        "frames": frames,
        "canvas": canvas,
        "n_train": n_train,
        "n_test": n_test,
        "d_model": d_model,
        "n_layers": n_layers,
        "d_state": d_state,
        "keep": keep,
        "pretrain_steps": pretrain_steps,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "arms": results,
        "throughput": throughput(throughput_frames, canvas=canvas, d_model=d_model, n_layers=n_layers, keep=keep)
        if throughput_frames
        else [],
    }
    atomic_write_json(Path(out_dir) / "results.json", summary, indent=2)
    return summary
