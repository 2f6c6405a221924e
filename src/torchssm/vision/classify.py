"""Image classification with the deep SSM model (models/backbone.py) on patch tokens: the 2-D scan
vs the same layer on the raster sequence, and Hydra / 2-D SSM / ViT at equal size.

An image (C, H, W) becomes (H/p)(W/p) tokens of C p^2 pixels, patches in raster order (row by row):
the deep model's Linear encoder on them is exactly a ViT patch embedding (Dosovitskiy et al. 2021,
Eq. 1; vision/patch.py's ``PatchEmbed`` is the same map as a strided conv). Each model is a ``DeepSSM``
with one registered layer:

    raster:   layer L on the raster sequence of patches (e.g. "mamba")
    2-D:      "cross_scan" with mixer L on the (H/p) x (W/p) grid; ``share=True`` keeps the parameters
              of L alone (the equal-parameter comparison); other 2-D layers: "spatial_mamba", "s4nd"
    ViT:      "transformer" with ``causal=False`` (bidirectional softmax attention; its rotary
              positions on the raster index are its position code)

Training: AdamW with warmup + cosine (train/optim.py, train/schedule.py), cross-entropy, a fixed number
of steps for every model (the same budget), test accuracy at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchssm.vision.patch import check_divisible, check_patch_size


def patch_tokens(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(n, C, H, W) -> (n, (H/p)(W/p), C p p): patches in raster order, each flattened (C, p, p)."""
    p = check_patch_size(patch_size)
    n, c, h, w = images.shape
    check_divisible(h, w, p)
    x = images.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (n, H/p, W/p, C, p, p)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


def load_images(data: str, n_images: int, seed: int, cache=None):
    """(images (n, C, H, W), labels, classes) for "digits" (all 1797) or "pathfinder" (n generated).
    ``cache``: a .pt file that keeps generated Pathfinder images (written once, atomically; reused only
    when it holds the same n, seed and generator version)."""
    from pathlib import Path

    from torchssm.fileio import atomic_write
    from torchssm.vision.data import digits_images, pathfinder_images

    if data == "digits":
        x, y = digits_images()
        return x, y, 10
    if data != "pathfinder":
        raise ValueError(f"data must be 'digits' or 'pathfinder'; got {data!r}")
    from torchssm.data.lra.pathfinder import GENERATOR

    # the generator's version is part of the key: images cached by an older generator are not reused
    key = {"n_images": n_images, "seed": seed, "size": 32, "generator": GENERATOR}
    if cache is not None and Path(cache).exists():
        saved = torch.load(cache)
        if saved.get("key") == key:
            return saved["images"], saved["labels"], 2
    x, y = pathfinder_images(n_images, 32, seed)
    if cache is not None:
        atomic_write(cache, lambda p: torch.save({"key": key, "images": x, "labels": y}, p))
    return x, y, 2


def split(n: int, seed: int, test_fraction: float = 0.2):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * n))
    return perm[n_test:], perm[:n_test]


def build_classifier(spec: dict, d_input: int, classes: int, grid: tuple):
    """DeepSSM for ``spec`` = {"layer", "layer_kwargs", "d_model", "n_layers"}; 2-D layers get ``grid``."""
    from torchssm.models.backbone import DeepSSM
    from torchssm.models.config import ModelConfig

    kwargs = dict(spec.get("layer_kwargs", {}))
    if spec["layer"] in ("cross_scan", "spatial_mamba", "s4nd"):
        kwargs["grid"] = tuple(grid)
    cfg = ModelConfig(
        layer=spec["layer"],
        d_model=spec["d_model"],
        n_layers=spec.get("n_layers", 2),
        layer_kwargs=kwargs,
        norm="layer",
        d_input=d_input,
        d_output=classes,
        pooling="mean",
    )
    return DeepSSM(cfg)


def train_classifier(
    model,
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    steps: int,
    batch: int,
    lr: float,
    weight_decay: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    desc: str = "",
) -> dict:
    from torchssm.vision.fit import fit

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(x_train), (batch,), generator=gen)
        return F.cross_entropy(model(x_train[idx]), y_train[idx])

    out = fit(
        model,
        batch_loss,
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        progress=progress,
        desc=desc or "train",
    )
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_test[i : i + 256]).argmax(-1) for i in range(0, len(x_test), 256)])
        train_pred = torch.cat([model(x_train[i : i + 256]).argmax(-1) for i in range(0, min(len(x_train), 1024), 256)])
    return {
        "test_accuracy": (pred == y_test).float().mean().item(),
        "train_accuracy": (train_pred == y_train[: len(train_pred)]).float().mean().item(),
        "final_loss": out["final_loss"],
        "train_cpu_s": out["cpu_s"],
    }


def run_classification(
    out_dir,
    specs: dict,
    *,
    data: str = "pathfinder",
    n_images: int = 2000,
    patch: int = 4,
    steps: int = 300,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    cache=None,
    progress: bool = True,
) -> dict:
    """Train every model of ``specs`` ({name: spec}) for ``steps`` steps on the same split; write
    ``results.json`` under ``out_dir``; return {name: {parameters, test_accuracy, ...}}."""
    from pathlib import Path

    from torchssm.fileio import atomic_write_json

    images, labels, classes = load_images(data, n_images, seed, cache)
    tokens = patch_tokens(images, patch)  # (n, L, C p p)
    grid = (images.shape[2] // patch, images.shape[3] // patch)
    train_idx, test_idx = split(len(tokens), seed)
    results = {}
    for name, spec in specs.items():
        torch.manual_seed(seed)
        model = build_classifier(spec, tokens.shape[-1], classes, grid)
        out = train_classifier(
            model,
            tokens[train_idx],
            labels[train_idx],
            tokens[test_idx],
            labels[test_idx],
            steps=steps,
            batch=batch,
            lr=lr,
            seed=seed,
            progress=progress,
            desc=name,
        )
        results[name] = {"spec": spec, "parameters": sum(p.numel() for p in model.parameters()), **out}
    summary = {
        "data": data,
        "n_images": len(tokens),
        "patch": patch,
        "grid": list(grid),
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "models": results,
    }
    atomic_write_json(Path(out_dir) / "results.json", summary, indent=2)
    return summary
