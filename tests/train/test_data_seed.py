"""task.seed seeds the data, train.seed the initial weights (and dropout, shuffling): two train seeds see
the same generated data and start from different weights; configs saved before task.seed existed
(data seeded by train.seed) are read back with task.seed = train.seed."""

import json
from dataclasses import asdict

import pytest
import torch

from torchssm.data import registry
from torchssm.train import loop
from torchssm.train.checkpoint import SIDECAR, read_checkpoint_state
from torchssm.train.config import ExperimentConfig, TrainConfig, saved_config

# adding problem: generated from the seed, tiny (length 8, 16 / 4 / 4 examples), a 1-block LRU
TASK = {"name": "adding", "length": 8, "n_train": 16, "n_val": 4, "n_test": 4}
MODEL = {"layer": "lru", "d_model": 8, "n_layers": 1, "layer_kwargs": {"d_state": 4}, "pooling": "last"}


def config(tmp_path, train_seed, save=False, **task):
    return ExperimentConfig.from_dict(
        {
            "task": {**TASK, **task},
            "model": MODEL,
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "seed": train_seed,
                "out_dir": str(tmp_path / f"run{train_seed}"),
                "progress": False,
                "device": "cpu",
                "save_checkpoints": save,
            },
        }
    )


def run(cfg, monkeypatch, **kwargs):
    """Train ``cfg``; return (the task data it built, its model's initial state, the builder's seed)."""
    seen = {}

    def build_task(name, **options):
        seen["seed"] = options.get("seed")
        seen["task"] = registry.build_task(name, **options)
        return seen["task"]

    def model_builder(model_cfg):
        from torchssm.models import build_model

        model = build_model(model_cfg)
        seen["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    monkeypatch.setattr(loop, "build_task", build_task)
    loop.train(cfg, model_builder=model_builder, log=lambda *_: None, **kwargs)
    return seen


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def splits(task):
    return [(s[:]["inputs"], s[:]["targets"]) for s in (task.train, task.val, task.test)]


def test_train_seed_changes_initialisation_not_data(tmp_path, monkeypatch):
    a = run(config(tmp_path, 0), monkeypatch)
    b = run(config(tmp_path, 1), monkeypatch)
    assert a["seed"] == b["seed"] == 0  # the default data seed, whatever train.seed is
    for (xa, ya), (xb, yb) in zip(splits(a["task"]), splits(b["task"])):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a["init"].keys() == b["init"].keys()
    assert not same_weights(a["init"], b["init"])
    # task.seed draws other data; the run records it in its config.yaml
    c = run(config(tmp_path, 0, seed=1), monkeypatch, overwrite=True)  # into run0 again: replace it
    assert c["seed"] == 1 and not torch.equal(c["task"].train[:]["inputs"], a["task"].train[:]["inputs"])
    assert same_weights(c["init"], a["init"])


def test_saved_config_of_an_older_run_keeps_its_data_seed():
    legacy = {"task": {"name": "adding"}, "train": {"seed": 3}}
    restored = saved_config(legacy)
    assert restored["task"] == {"name": "adding", "seed": 3} and restored["train"]["seed"] == 3
    assert restored["train"] == {**asdict(TrainConfig()), "seed": 3}  # train keys it lacks at their defaults
    assert legacy == {"task": {"name": "adding"}, "train": {"seed": 3}}  # not mutated
    assert saved_config({"task": {"name": "adding"}})["task"]["seed"] == 0  # train.seed's default
    recent = {"task": {"name": "adding", "seed": 0}, "train": {"seed": 3}}
    assert saved_config(recent)["task"] == recent["task"]
    assert ExperimentConfig.from_dict({"task": "adding"}).data_seed == 0


def test_resume_of_a_run_saved_before_task_seed(tmp_path, monkeypatch):
    cfg = config(tmp_path, 2, save=True, seed=2)  # what an older run with train.seed 2 used as its data seed
    run(cfg, monkeypatch, stop_after_epochs=1)
    last = tmp_path / "run2" / "last"
    sidecar = json.loads((last / SIDECAR).read_text())
    assert sidecar["config"]["task"]["seed"] == 2
    del sidecar["config"]["task"]["seed"]  # as written before task.seed existed
    (last / SIDECAR).write_text(json.dumps(sidecar))
    state = read_checkpoint_state(last)
    resumed = run(ExperimentConfig.from_dict(saved_config(state["config"])), monkeypatch, resume=last)
    assert resumed["seed"] == 2
    with pytest.raises(ValueError, match=r"task\.seed: checkpoint 2 != now 0"):
        loop.train(config(tmp_path, 2, save=True), resume=last, log=lambda *_: None)
