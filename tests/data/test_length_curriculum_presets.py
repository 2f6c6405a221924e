"""The length-curriculum presets of the Mamba paper's synthetic tasks (Gu & Dao 2023, Sec. 4.1, Tables 1-2):
one induction-heads row per mixer at L = 64 (stage 1) and L = 256 (stage 2), differing from the Mamba row only
in the mixer, and each stage 2 starting from its own stage 1's run (train.init_from needs the same model)."""

import pytest

from torchssm.presets import PRESET_DIR
from torchssm.train.config import load_config

ROOT = PRESET_DIR / "synthetic"
MIXERS = ("mamba", "mamba2", "transformer", "s4d", "lru")


def _cfg(name: str) -> dict:
    return load_config(ROOT / f"{name}.yaml").to_dict()


def _without(section: dict, *keys: str) -> dict:
    return {k: v for k, v in section.items() if k not in keys}


@pytest.mark.parametrize("stage", ["l64", "l256"])
def test_induction_rows_differ_from_mamba_only_in_the_mixer(stage):
    ref = _cfg(f"induction_heads_{stage}_mamba")
    layers = set()
    for mixer in MIXERS:
        cfg = _cfg(f"induction_heads_{stage}_{mixer}")
        layers.add(cfg["model"]["layer"])
        assert cfg["model"]["layer"] == mixer
        assert cfg["task"] == ref["task"]
        assert _without(cfg["model"], "layer", "layer_kwargs") == _without(ref["model"], "layer", "layer_kwargs")
        assert _without(cfg["train"], "out_dir", "init_from") == _without(ref["train"], "out_dir", "init_from")
        assert cfg["train"]["out_dir"] == f"runs/induction_heads_{stage}_{mixer}"
    assert layers == set(MIXERS)
    assert (ref["task"]["length"], ref["task"]["vocab_size"]) == ((64 if stage == "l64" else 256), 16)


@pytest.mark.parametrize("mixer", MIXERS)
def test_induction_stage2_starts_from_its_own_stage1(mixer):
    stage1, stage2 = _cfg(f"induction_heads_l64_{mixer}"), _cfg(f"induction_heads_l256_{mixer}")
    assert stage2["train"]["init_from"] == stage1["train"]["out_dir"]
    assert stage2["model"] == stage1["model"]  # init_from refuses any other model
    assert stage2["task"]["name"] == stage1["task"]["name"] == "induction_heads"
    assert _without(stage2["task"], "length", "n_train") == _without(stage1["task"], "length", "n_train")
    assert (stage1["task"]["length"], stage2["task"]["length"]) == (64, 256)


@pytest.mark.parametrize("name", ["induction_heads_l64_s4d", "induction_heads_l64_lru"])
def test_time_invariant_rows_build_and_train_one_step(name):
    """(The Mamba, Mamba-2 and Transformer rows are built by test_synthetic_presets.py.)"""
    import torch

    from torchssm.data.registry import build_task
    from torchssm.models import build_model
    from torchssm.train.config import model_config_for_task
    from torchssm.train.loop import loss_and_correct

    cfg = load_config(ROOT / f"{name}.yaml")
    task = build_task(cfg.task_name, **{**cfg.task_options, "n_train": 2, "n_val": 1, "n_test": 1})
    torch.manual_seed(0)
    model = build_model(model_config_for_task(cfg.model, task.info))
    x = torch.stack([task.train[i]["inputs"] for i in range(2)])  # (2, 64)
    y = torch.stack([task.train[i]["targets"] for i in range(2)])  # (2, 64)
    loss, _, n = loss_and_correct(model(x), y, task.info)
    assert n == 2 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


SC_STAGES = ("selective_copying_small_mamba", "selective_copying_l256_mamba", "selective_copying_l1024_mamba",
             "selective_copying_l4096_mamba")  # fmt: skip


def test_selective_copying_curriculum_chains_its_stages_up_to_the_papers_setting():
    """Gu & Dao 2023, Sec. 4.1.1 / Table 1: 16 data tokens, vocabulary 16, L = 4096 (the last stage)."""
    from torchssm.data.synthetic.copying import MAMBA_PRESET

    cfgs = [_cfg(name) for name in SC_STAGES]
    assert [c["task"]["length"] for c in cfgs] == [64, 256, 1024, 4096]
    for prev, cur in zip(cfgs, cfgs[1:]):
        assert cur["train"]["init_from"] == prev["train"]["out_dir"]
        assert cur["model"] == prev["model"]  # init_from refuses any other model
        assert cur["train"]["batch_size"] == prev["train"]["batch_size"] == 32
        keep = ("length", "n_train", "n_val", "n_test")
        assert _without(cur["task"], *keep) == _without(prev["task"], *keep)
    last = cfgs[-1]["task"]
    assert last["name"] == "selective_copying"
    assert {k: last[k] for k in MAMBA_PRESET} == MAMBA_PRESET
