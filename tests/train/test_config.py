"""Experiment config: YAML loading, --set overrides (YAML-typed), clear errors, task-filled fields."""

import pytest

from torchssm.data.registry import TaskInfo
from torchssm.train.config import ExperimentConfig, TrainConfig, apply_overrides, load_config, model_config_for_task


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_load_yaml_and_types(tmp_path):
    path = write(
        tmp_path,
        """
task: {name: mnist1d, val_fraction: 0.2}
model: {layer: lru, d_model: 32, layer_kwargs: {d_state: 16, r_min: 0.5}}
train: {lr: 4e-3, epochs: 3, betas: [0.9, 0.98]}
""",
    )
    cfg = load_config(path)
    assert cfg.task_name == "mnist1d" and cfg.task_options == {"val_fraction": 0.2, "seed": 0}  # data seed 0 by default
    assert cfg.model.d_model == 32 and cfg.model.layer_kwargs == {"d_state": 16, "r_min": 0.5}
    assert cfg.train.lr == pytest.approx(4e-3) and isinstance(cfg.train.lr, float)  # YAML 1.1 reads 4e-3 as str
    assert cfg.train.epochs == 3 and cfg.train.betas == (0.9, 0.98)
    # round trip through a plain dict (what the checkpoint sidecar stores)
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_overrides_are_yaml_typed_and_nested(tmp_path):
    path = write(tmp_path, "task: {name: mnist1d}\nmodel: {layer_kwargs: {d_state: 16}}\n")
    cfg = load_config(
        path,
        [
            "train.lr=1e-3",
            "train.grad_clip=1",
            "model.prenorm=false",
            "model.norm=layer",
            "model.layer_kwargs.r_max=0.9",
            "task.limit=100",
            "train.betas=[0.8, 0.9]",
        ],
    )
    assert cfg.train.lr == 1e-3 and cfg.train.grad_clip == 1.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.model.prenorm is False and cfg.model.norm == "layer"
    assert cfg.model.layer_kwargs == {"d_state": 16, "r_max": 0.9}
    assert cfg.task_options == {"limit": 100, "seed": 0}
    assert cfg.train.betas == (0.8, 0.9)


def test_overrides_do_not_mutate_input():
    base = {"task": {"name": "mnist1d"}, "train": {"lr": 1.0}}
    out = apply_overrides(base, ["train.lr=2"])
    assert base["train"]["lr"] == 1.0 and out["train"]["lr"] == 2


@pytest.mark.parametrize(
    "override, error, match",
    [
        ("train.lrr=1", ValueError, r"unknown train config key.*'lrr'.*valid keys: \[.*'lr'"),
        ("model.depth=3", ValueError, r"unknown model config key.*'depth'.*'n_layers'"),
        ("optim.lr=3", ValueError, r"unknown config section 'optim'.*'task', 'model', 'train'"),
        ("lr=3", ValueError, r"section\.key"),
        ("train.lr", ValueError, r"key\.sub=value"),
        ("train.lr=abc", TypeError, r"train\.lr expects a value of type float"),
        ("train.epochs=yes", TypeError, r"train\.epochs expects a value of type int"),
        ("train.epochs=0", ValueError, r"epochs must be >= 1"),
        ("model.layer_kwargs=3", TypeError, r"model\.layer_kwargs expects a value of type dict"),
        ("task.seed=1.5", TypeError, r"task\.seed expects a value of type int"),
        ("task.seed=true", TypeError, r"task\.seed expects a value of type int"),
    ],
)
def test_bad_overrides_raise_clearly(override, error, match):
    with pytest.raises(error, match=match):
        load_config(base={"task": {"name": "mnist1d"}}, overrides=[override])


def test_bad_files_raise_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="unknown config section.*'trian'"):
        load_config(write(tmp_path, "task: {name: mnist1d}\ntrian: {lr: 1}\n"))
    with pytest.raises(ValueError, match="'task' section with a 'name'"):
        load_config(write(tmp_path, "model: {d_model: 8}\n"))
    with pytest.raises(ValueError, match="cannot parse config"):
        load_config(write(tmp_path, "task: [unclosed\n"))


def test_task_fills_model_fields():
    cfg = load_config(base={"task": "mnist1d"})
    info = TaskInfo(name="t", d_input=7, d_output=3, length=5, input_kind="tokens", paired=True)
    model = model_config_for_task(cfg.model, info)
    assert (model.d_input, model.d_output, model.input_kind, model.paired) == (7, 3, "tokens", True)
    assert cfg.model.d_input == 1  # the config itself is not modified
    seq = TaskInfo(name="s", d_input=1, d_output=4, length=5, kind="seq2seq")
    with pytest.raises(ValueError, match="pooling=none"):
        model_config_for_task(cfg.model, seq)


def test_train_config_defaults_validate():
    assert TrainConfig().lr > 0
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=2.0)
