"""The synthetic/*_mamba* presets: each preset builds its task (with its own options, few examples) and
its model, and one forward/backward on a cropped batch gives a finite loss; the paper-size selective
copying preset has the Mamba paper's shape (Gu & Dao 2023, Sec. 4.1.1: L = 4096, 16 tokens, vocab 16)."""

import numpy as np
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
ZOOLOGY_PRESETS = sorted(ROOT.glob("mqar_zoology_*.yaml"))  # MQAR at Zoology's Figure 2 setting, one per mixer
FIG2_L64_PRESETS = sorted(ROOT.glob("mqar_fig2_l64_*.yaml"))  # MQAR at Figure 2's shortest row, one per mixer
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


@pytest.mark.parametrize(
    "path",
    sorted(set(MAMBA_PRESETS + TRANSFORMER_PRESETS + ZOOLOGY_PRESETS + FIG2_L64_PRESETS)),
    ids=lambda p: p.name,
)
def test_preset_builds_and_trains_one_step(path):
    cfg = load_config(path)
    extra = {"test_lengths": (64,), "n_test_lengths": 1} if cfg.task_name == "induction_heads" else {}
    task = _task(cfg, materialize=False, **extra)
    ex = task.train[0]
    assert ex["inputs"].shape == (task.info.length,) and ex["targets"].shape == (task.info.length,)
    torch.manual_seed(0)
    model = build_model(model_config_for_task(cfg.model, task.info))
    # the layers are length-agnostic: the last 32 steps hold every scored target of the short presets;
    # MQAR's queries follow the pairs (most of them soon after), so it keeps the whole sequence
    keep = task.info.length if cfg.task_name == "mqar" else min(32, task.info.length)
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


def test_zoology_mqar_rows_differ_only_in_the_mixer_and_use_figure2s_setting():
    """Zoology Fig. 2 (iclr24_zoology_figure2/configs.py): vocab 8192, L 256, 16 pairs, no filler noise,
    100k/3k sequences, 2 layers, d_model 64, batch 256, 64 epochs; the rows share everything but the mixer."""
    import inspect

    from torchssm.data.synthetic.recall import build_mqar

    cfgs = {p.stem.removeprefix("mqar_zoology_"): load_config(p).to_dict() for p in ZOOLOGY_PRESETS}
    assert set(cfgs) == {"mamba", "mamba2", "transformer", "s4d", "lru"}
    defaults = {k: v.default for k, v in inspect.signature(build_mqar).parameters.items() if k != "data_dir"}
    ref = cfgs["mamba"]
    for name, cfg in cfgs.items():
        assert cfg["model"]["layer"] == name
        assert cfg["task"] == ref["task"]
        assert {k: v for k, v in cfg["train"].items() if k != "out_dir"} == {
            k: v for k, v in ref["train"].items() if k != "out_dir"
        }
        assert {k: v for k, v in cfg["model"].items() if k not in ("layer", "layer_kwargs")} == {
            k: v for k, v in ref["model"].items() if k not in ("layer", "layer_kwargs")
        }
    task, model, train = ref["task"], ref["model"], ref["train"]
    assert (task["length"], task["vocab_size"], task["num_kv_pairs"], task["random_non_queries"]) == (
        256,
        8192,
        16,
        False,
    )
    assert (task["n_train"], task["n_test"], task["power_a"]) == (100000, 3000, 0.01)
    assert all(
        task[k] == defaults[k]
        for k in ("length", "vocab_size", "num_kv_pairs", "random_non_queries", "n_train", "n_test")
    )
    assert (model["d_model"], model["n_layers"], train["batch_size"], train["epochs"]) == (64, 2, 256, 64)
    assert model["tie_embeddings"]  # Zoology's LanguageModel ties its head to the word embeddings


def test_fig2_shortest_row_presets_differ_only_in_the_mixer():
    """Zoology Fig. 2's (L, pairs) = (64, 4) row at vocab 8192, d_model 64, tied head; rows equal but the mixer
    (and the lr, a point of Zoology's sweep)."""
    cfgs = {p.stem.removeprefix("mqar_fig2_l64_"): load_config(p).to_dict() for p in FIG2_L64_PRESETS}
    assert set(cfgs) == {"mamba", "mamba2", "transformer", "s4d", "lru"}
    ref = cfgs["mamba"]
    zoology_lrs = [round(x, 6) for x in np.logspace(-4, -2, 4)]  # each row takes its best lr of Zoology's sweep
    for name, cfg in cfgs.items():
        assert cfg["model"]["layer"] == name and cfg["task"] == ref["task"]
        assert round(cfg["train"]["lr"], 6) in zoology_lrs
        assert {k: v for k, v in cfg["train"].items() if k not in ("out_dir", "lr")} == {
            k: v for k, v in ref["train"].items() if k not in ("out_dir", "lr")
        }
        assert {k: v for k, v in cfg["model"].items() if k not in ("layer", "layer_kwargs")} == {
            k: v for k, v in ref["model"].items() if k not in ("layer", "layer_kwargs")
        }
    task, model = ref["task"], ref["model"]
    shape = (task["length"], task["vocab_size"], task["num_kv_pairs"], task["random_non_queries"])
    assert shape == (64, 8192, 4, False)
    assert (task["n_train"], task["n_test"], task["power_a"]) == (100000, 3000, 0.01)
    assert (model["d_model"], model["n_layers"], model["tie_embeddings"]) == (64, 2, True)
