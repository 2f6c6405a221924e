"""The lra/ and synthetic/ presets (torchssm.presets): every preset loads, names a registered task, and its
layer accepts its layer_kwargs; every file cites its source; every LRA preset builds its task (tiny files in the
official formats), its model and optimizer, and runs a forward pass."""

import inspect
import math

import pytest
import torch

from torchssm.data.registry import _TASK_MODULES
from torchssm.layers.registry import get_layer_class
from torchssm.presets import PRESET_DIR
from torchssm.train.config import load_config

ROOT = PRESET_DIR
FILES = sorted((ROOT / "lra").glob("*.yaml")) + sorted((ROOT / "synthetic").glob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_is_consistent(path):
    cfg = load_config(path)
    assert cfg.task_name in _TASK_MODULES
    cls = get_layer_class(cfg.model.layer)
    params = inspect.signature(cls.__init__).parameters
    unknown = set(cfg.model.layer_kwargs) - set(params)
    assert not unknown, f"{path.name}: {cfg.model.layer} does not take {sorted(unknown)}"
    text = path.read_text()
    assert text.startswith("#") and any(w in text for w in ("commit", "Sec.", "App.", "NO PUBLISHED", "UNVERIFIED"))


def test_all_lra_tasks_have_s5_s4d_lru_presets():
    names = {p.stem for p in (ROOT / "lra").glob("*.yaml")}
    for task in ("listops", "text", "retrieval", "image", "pathfinder", "pathx"):
        assert {f"{task}_s5", f"{task}_s4d", f"{task}_lru"} <= names
    assert "listops_mamba" in names


# ---------------------------------------------------------------- dry run of every LRA preset
# Tiny files in each official release format (as tests/data/test_lra.py), then for every preset: its task
# built with its own options, its model at its own sizes, its optimizer groups, one forward pass on two
# examples cropped to 16 steps (the layers are length-agnostic; full-length runs belong on a GPU).

# Default run: the LRU presets (1-3 s each on the 2-core CPU). The S5 / S4D / Mamba presets take 2-10 s each
# (S5 at H=512, P=384 about 10 s) and are slow-marked; their keys are checked above by test_preset_is_consistent.
LRA_FILES = [
    p if p.stem.endswith("_lru") else pytest.param(p, marks=pytest.mark.slow)
    for p in sorted((ROOT / "lra").glob("*.yaml"))
]


@pytest.fixture(scope="module")
def lra_root(tmp_path_factory):
    import pickle

    import numpy as np

    from torchssm.data.lra.png import encode_png_gray

    root = tmp_path_factory.mktemp("lra")
    folder = root / "listops-1000"
    folder.mkdir()
    rows = ["( ( [MAX 2 9 ] ) 4 )\t9", "( [SM 3 4 ] )\t7", "( [MIN 5 ( [MED 1 2 3 ] ) ] )\t2"]
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n" + "\n".join(rows) + "\n")
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            (root / "aclImdb" / split / label).mkdir(parents=True)
            for i in range(2):
                (root / "aclImdb" / split / label / f"{i}_7.txt").write_text(f"{label} review {i}")
    tsv = root / "lra_release" / "lra_release" / "tsv_data"
    tsv.mkdir(parents=True)
    for split in ("train", "eval", "test"):
        (tsv / f"new_aan_pairs.{split}.tsv").write_text("1\ta\tb\tpaper one\tpaper two\n0\tc\td\tx\ty\n" * 2)
    cifar = root / "cifar-10-batches-py"
    cifar.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(cifar / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [0, 1]}, f)
    for size in (32, 128):  # noise images in the official layout (drawing 128x128 contours takes seconds)
        folder = root / f"pathfinder{size}" / "curv_contour_length_14"
        (folder / "metadata").mkdir(parents=True)
        (folder / "imgs" / "0").mkdir(parents=True)
        lines = []
        for i in range(10):
            img = rng.integers(0, 256, (size, size), dtype=np.uint8)
            (folder / "imgs" / "0" / f"sample_{i}.png").write_bytes(encode_png_gray(img))
            lines.append(f"imgs/0 sample_{i}.png {i} {i % 2}")
        (folder / "metadata" / "0.npy").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("path", LRA_FILES, ids=lambda p: getattr(p, "name", p))
def test_lra_preset_dry_run(path, lra_root):
    from torchssm.data.registry import build_task
    from torchssm.models import build_model
    from torchssm.train.config import model_config_for_task
    from torchssm.train.loop import _forward
    from torchssm.train.optim import param_groups

    cfg = load_config(path)
    task = build_task(cfg.task_name, data_dir=lra_root, **cfg.task_options)
    model = build_model(model_config_for_task(cfg.model, task.info)).eval()
    assert sum(p.numel() for p in model.parameters()) > 0
    groups = param_groups(model, cfg.train.lr, cfg.train.weight_decay)
    if cfg.model.layer == "lru":  # the preset's LR factor (LRU paper Tb. 9) reaches the optimizer
        factor = cfg.model.layer_kwargs["lr_factor"]
        recurrent = [g for g in groups if any(n.endswith("nu_log") for n in g["names"])]
        assert len(recurrent) == 1 and recurrent[0]["lr"] == pytest.approx(cfg.train.lr * factor)
        assert recurrent[0]["weight_decay"] == 0.0
    batch = {k: v[:2] for k, v in task.train[:2].items()}
    for key in ("inputs", "inputs2"):
        if key in batch:
            batch[key] = batch[key][:, :16]
    for key in ("lengths", "lengths2"):
        if key in batch:
            batch[key] = batch[key].clamp(1, 16)
    with torch.no_grad():
        logits = _forward(model, batch)
    assert logits.shape == (2, task.info.d_output) and torch.isfinite(logits).all()


def test_lru_presets_follow_the_lru_paper_tables():
    """Spot-check of the values read in Orvieto et al. 2023 (App. C.3 Tb. 8, App. D Tb. 9)."""
    table = {  # task: (H, N, batch, LR factor, dropout, r_min, r_max, bidirectional)
        "image": (512, 384, 50, 0.25, 0.1, 0.9, 0.999, False),
        "listops": (128, 256, 32, 0.5, 0.0, 0.0, 0.99, False),
        "text": (256, 192, 32, 0.1, 0.1, 0.5, 0.9, False),
        "retrieval": (128, 256, 64, 0.5, 0.1, 0.5, 0.9, False),
        "pathfinder": (192, 256, 64, 0.25, 0.0, 0.9, 0.999, True),
        "pathx": (128, 256, 32, 0.25, 0.0, 0.999, 0.9999, True),
    }
    for task, (h, n, bsz, factor, dropout, r_min, r_max, bidir) in table.items():
        cfg = load_config(ROOT / "lra" / f"{task}_lru.yaml")
        kw = cfg.model.layer_kwargs
        assert (
            cfg.model.d_model,
            kw["d_state"],
            cfg.train.batch_size,
            kw["lr_factor"],
            cfg.model.dropout,
            kw["r_min"],
            kw["r_max"],
            kw["bidirectional"],
        ) == (h, n, bsz, factor, dropout, r_min, r_max, bidir)
        assert cfg.model.n_layers == 6 and cfg.train.weight_decay == 0.05 and cfg.model.norm == "batch"
        assert cfg.train.warmup_epochs == pytest.approx(0.1 * cfg.train.epochs)
        assert kw["max_phase"] == pytest.approx(math.pi / 10 if task == "pathx" else 2 * math.pi)
