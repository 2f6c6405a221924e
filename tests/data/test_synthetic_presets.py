"""The synthetic/*_mamba* presets: each preset builds its task (with its own options, few examples) and
its model, and one forward/backward on a cropped batch gives a finite loss; the paper-size selective
copying preset has the Mamba paper's shape (Gu & Dao 2023, Sec. 4.1.1: L = 4096, 16 tokens, vocab 16)."""

import pytest
import torch

from torchssm.data.registry import build_task
from torchssm.models import build_model
from torchssm.presets import PRESET_DIR
from torchssm.train.config import load_config, model_config_for_task
from torchssm.train.loop import loss_and_correct

ROOT = PRESET_DIR / "synthetic"
MAMBA_PRESETS = sorted(ROOT.glob("*_mamba*.yaml"))
TRANSFORMER_PRESETS = sorted(ROOT.glob("*_transformer.yaml"))  # the attention rows beside them
FEW = {"n_train": 2, "n_val": 1, "n_test": 1}


def _task(cfg, **extra):
    return build_task(cfg.task_name, **{"seed": cfg.train.seed, **cfg.task_options, **FEW, **extra})  # as train()


def test_there_are_mamba_presets_for_each_memory_task():
    names = {p.stem for p in MAMBA_PRESETS}
    assert {"selective_copying_mamba", "selective_copying_small_mamba", "induction_heads_mamba", "mqar_mamba"} <= names
    assert "induction_heads_l64_mamba" in names


def test_attention_row_differs_from_the_mamba_preset_only_in_the_mixer():
    """The Transformer row of the length-generalisation comparison trains exactly as the Mamba row."""
    mamba = load_config(ROOT / "induction_heads_l64_mamba.yaml").to_dict()
    attn = load_config(ROOT / "induction_heads_l64_transformer.yaml").to_dict()
    assert attn["task"] == mamba["task"]
    assert {k: v for k, v in attn["train"].items() if k != "out_dir"} == {
        k: v for k, v in mamba["train"].items() if k != "out_dir"
    }
    assert (attn["model"]["layer"], mamba["model"]["layer"]) == ("transformer", "mamba")


@pytest.mark.parametrize("path", MAMBA_PRESETS + TRANSFORMER_PRESETS, ids=lambda p: p.name)
def test_preset_builds_and_trains_one_step(path):
    cfg = load_config(path)
    extra = {"test_lengths": (64,), "n_test_lengths": 1} if cfg.task_name == "induction_heads" else {}
    task = _task(cfg, materialize=False, **extra)
    ex = task.train[0]
    assert ex["inputs"].shape == (task.info.length,) and ex["targets"].shape == (task.info.length,)
    torch.manual_seed(0)
    model = build_model(model_config_for_task(cfg.model, task.info))
    # the layers are length-agnostic: the last 32 steps hold every scored target of the short presets
    keep = min(32, task.info.length)
    x = torch.stack([task.train[i]["inputs"][-keep:] for i in range(2)])  # (2, keep)
    y = torch.stack([task.train[i]["targets"][-keep:] for i in range(2)])  # (2, keep)
    loss, _, n = loss_and_correct(model(x), y, task.info)
    assert n > 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_paper_selective_copying_preset_has_the_paper_shape():
    cfg = load_config(ROOT / "selective_copying_mamba.yaml")
    task = _task(cfg, materialize=False)
    assert (task.info.length, task.info.d_input) == (4096, 16)
    ex = task.train[0]
    scored = ex["targets"] != task.info.ignore_index
    assert int(scored.sum()) == 16 and bool(scored[-16:].all())  # 16 tokens to recall, at the 16 markers
    data = ex["inputs"][:-16]
    assert int((data != 0).sum()) == 16  # 16 data tokens among blanks
    torch.testing.assert_close(data[data != 0], ex["targets"][-16:])  # recalled in order
