"""load_run: a finished run is rebuilt with its trained weights and its task (options overridable); a run
trained on another task, a missing checkpoint and a directory without a training config are one-line errors."""

import shutil

import pytest
import torch

from torchssm.train.checkpoint import SIDECAR, WEIGHTS, read_checkpoint_state
from torchssm.train.config import load_config
from torchssm.train.loop import evaluate, train
from torchssm.train.reload import load_run, read_run_config

CONFIG = {  # induction heads (vocab 6), one small Mamba block: ~0.2 s per epoch
    "task": {"name": "induction_heads", "length": 8, "vocab_size": 6, "n_train": 32, "n_val": 8, "n_test": 8},
    "model": {"layer": "mamba", "d_model": 8, "n_layers": 1, "pooling": "none", "layer_kwargs": {"d_state": 4}},
    "train": {"epochs": 2, "batch_size": 16, "lr": 1e-2, "progress": False, "device": "cpu", "threads": 1},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("reload") / "run"
    cfg = load_config(base={**CONFIG, "train": {**CONFIG["train"], "out_dir": str(out)}})
    result = train(cfg, log=lambda msg: None)
    return out, result


def test_load_run_gives_the_trained_model_and_its_metrics(finished):
    out, result = finished
    run = load_run(out / "last", task="induction_heads")
    assert run.checkpoint == out / "last" and run.state["epoch"] == 2
    assert run.config.task_name == "induction_heads" and run.config.model.d_model == 8
    assert not run.model.training
    from safetensors.torch import load_file

    saved = load_file(str(out / "last" / WEIGHTS))
    for name, value in run.model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    metrics = evaluate(run.model, run.task.test, run.task.info, batch_size=8)
    assert metrics["loss"] == pytest.approx(result.last["test_loss"], rel=1e-6)  # the same data and weights


def test_run_directory_gives_best_and_overrides_change_the_task(finished):
    out, _ = finished
    run = load_run(out, n_test=3, length=12)  # a run directory: its best checkpoint
    assert run.checkpoint == out / "best"
    assert len(run.task.test) == 3 and run.task.info.length == 12
    assert run.config.task_options["length"] == 8  # the config stays the run's


def test_bad_input_is_a_one_line_error(finished, tmp_path):
    out, _ = finished
    with pytest.raises(ValueError, match=r"trained on task 'induction_heads'; expected 'spoken_commands'"):
        load_run(out / "last", task="spoken_commands")
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path / "missing")
    bare = tmp_path / "bare"
    shutil.copytree(out / "last", bare)
    (bare / SIDECAR).write_text((out / "last" / SIDECAR).read_text().replace('"config"', '"not_config"'))
    with pytest.raises(ValueError, match="holds no training config"):
        read_run_config(bare)
    assert read_checkpoint_state(out / "last")["config"]["task"]["name"] == "induction_heads"
