"""train.init_from / --init-from: a new run starts from another run's weights only (a length curriculum:
induction heads at L=8, then L=16), with a fresh optimizer, schedule and history; a different model
config, a missing path and a run directory without checkpoints are one-line errors; a resumed run
ignores init_from; --init-from with --resume is refused."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from torchssm.cli import main
from torchssm.runs import read_metrics
from torchssm.train.checkpoint import SIDECAR, WEIGHTS, read_checkpoint_state
from torchssm.train.config import load_config
from torchssm.train.distributed import DistContext
from torchssm.train.init_from import load_initial_weights, model_config_differences
from torchssm.train.loop import set_up, train

# induction heads (vocab 6) with one small Mamba block: ~0.2 s per epoch
CONFIG = {
    "task": {"name": "induction_heads", "length": 8, "vocab_size": 6, "n_train": 32, "n_val": 8, "n_test": 8},
    "model": {"layer": "mamba", "d_model": 8, "n_layers": 1, "pooling": "none", "layer_kwargs": {"d_state": 4}},
    "train": {"epochs": 2, "batch_size": 16, "lr": 1e-2, "progress": False, "device": "cpu", "threads": 1},
}


def config(out_dir, *overrides):
    return load_config(base={**CONFIG, "train": {**CONFIG["train"], "out_dir": str(out_dir)}}, overrides=overrides)


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A finished run at L = 8 (the curriculum's first stage)."""
    out = tmp_path_factory.mktemp("init") / "l8"
    train(config(out), log=quiet)
    return out


def test_next_stage_starts_from_the_weights_with_a_fresh_schedule(stage1, tmp_path):
    cfg = config(tmp_path / "l16", "task.length=16", f"train.init_from={stage1}")
    lines = []
    run = set_up(cfg, None, None, None, DistContext(), log=lines.append)
    saved = load_file(str(stage1 / "best" / WEIGHTS))  # a run directory gives its best checkpoint
    state = run.model.state_dict()
    assert saved.keys() == state.keys()
    for name, value in saved.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)
    assert any(str(stage1 / "best") in line for line in lines)
    assert run.scheduler.last_epoch == 0 and not run.optimizer.state  # optimizer and schedule start fresh
    fresh = set_up(config(tmp_path / "x", "task.length=16"), None, None, None, DistContext(), log=quiet)
    assert any(not torch.equal(fresh.model.state_dict()[k], v) for k, v in saved.items())  # not the default init

    result = train(cfg, log=quiet)  # the whole run: its own history from epoch 1, the config records the source
    assert [r["epoch"] for r in read_metrics(tmp_path / "l16")] == [1, 2]
    assert result.history[0]["step"] == 2
    assert read_checkpoint_state(tmp_path / "l16" / "last")["config"]["train"]["init_from"] == str(stage1)


def test_a_checkpoint_directory_and_the_cli_option(stage1, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], "out_dir": str(tmp_path / "b")}}))
    args = ["train", "--config", str(cfg_path), "--set", "task.length=16", "--stop-after", "1"]
    assert main([*args, "--init-from", str(stage1 / "last")]) == 0
    assert read_checkpoint_state(tmp_path / "b" / "last")["config"]["train"]["init_from"] == str(stage1 / "last")
    assert main([*args, "--init-from", str(stage1), "--resume"]) == 2  # a new run or a continued one, not both


def test_another_model_is_a_one_line_error_before_any_weight_is_read(stage1, tmp_path):
    with pytest.raises(ValueError, match=r"model\.d_model: checkpoint 8 != now 16"):
        train(config(tmp_path / "c", "model.d_model=16", f"train.init_from={stage1}"), log=quiet)
    with pytest.raises(ValueError, match=r"model\.layer_kwargs: checkpoint \{'d_state': 4\} != now \{'d_state': 8\}"):
        train(config(tmp_path / "c", "model.layer_kwargs={d_state: 8}", f"train.init_from={stage1}"), log=quiet)
    # same model config, another vocabulary: the embedding's shape does not fit
    with pytest.raises(ValueError, match="does not fit this model"):
        train(config(tmp_path / "c", "task.vocab_size=7", f"train.init_from={stage1}"), log=quiet)
    assert not (tmp_path / "c").exists()  # nothing written for a run that could not start
    assert model_config_differences({"betas": (1, 2)}, {"betas": [1, 2]}) == []  # JSON-normalised


def test_missing_sources_are_file_not_found(stage1, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint or run directory at"):
        train(config(tmp_path / "d", f"train.init_from={tmp_path / 'nope'}"), log=quiet)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    shutil.copy(stage1 / "metrics.jsonl", empty / "metrics.jsonl")
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        load_initial_weights(torch.nn.Linear(1, 1), empty, {}, log=quiet)


def test_a_resumed_run_ignores_init_from(stage1, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(stage1, source)
    cfg = config(tmp_path / "e", f"train.init_from={source}")
    train(cfg, stop_after_epochs=1, log=quiet)
    shutil.rmtree(source)  # the resumed run must not need it: its weights come from its own checkpoint
    result = train(cfg, resume=tmp_path / "e" / "last", log=quiet)
    assert result.epochs_done == 2


def test_the_induction_heads_curriculum_presets_chain():
    """synthetic/induction_heads_l256_mamba starts from synthetic/induction_heads_l64_mamba's run: same
    model (init_from requires it), same task but the length, init_from = stage 1's out_dir."""
    from torchssm.presets import preset_path

    stage1 = load_config(preset_path("synthetic/induction_heads_l64_mamba")).to_dict()
    stage2 = load_config(preset_path("synthetic/induction_heads_l256_mamba")).to_dict()
    assert stage2["train"]["init_from"] == stage1["train"]["out_dir"] != stage2["train"]["out_dir"]
    assert model_config_differences(stage1["model"], stage2["model"]) == []
    assert (stage1["task"]["length"], stage2["task"]["length"]) == (64, 256)
    assert {k: v for k, v in stage2["task"].items() if k not in ("length", "n_train")} == {
        k: v for k, v in stage1["task"].items() if k not in ("length", "n_train")
    }


def test_a_checkpoint_from_before_a_new_model_key_takes_its_default(stage1, tmp_path):
    """A checkpoint whose model config lacks a key added later (here tie_embeddings) still seeds a run
    whose config has that key at its default; at another value it is a named difference."""
    old = tmp_path / "old"
    shutil.copytree(stage1 / "best", old)
    state = json.loads((old / SIDECAR).read_text())
    del state["config"]["model"]["tie_embeddings"]
    (old / SIDECAR).write_text(json.dumps(state))
    cfg = config(tmp_path / "next", "task.length=16")
    run = set_up(cfg, None, None, None, DistContext(), log=quiet)
    assert load_initial_weights(run.model, old, cfg.model.to_dict(), log=quiet) == old
    with pytest.raises(ValueError, match=r"model.tie_embeddings: checkpoint False != now True"):
        load_initial_weights(run.model, old, {**cfg.model.to_dict(), "tie_embeddings": True}, log=quiet)
