"""`torchssm rl train / eval`: presets load, metrics are JSONL, checkpoints resume, bad input is one line."""

import json

import pytest

pytest.importorskip("popgym")

from torchssm.cli import main  # noqa: E402
from torchssm.rl.train import list_presets, load_rl_config  # noqa: E402

TINY = [
    "--set",
    "ppo.num_envs=4",
    "--set",
    "ppo.num_steps=16",
    "--set",
    "ppo.num_minibatches=2",
    "--set",
    "ppo.update_epochs=1",
    "--set",
    "run.checkpoint_every=1",
    "--set",
    "model.d_model=8",
    "--set",
    "model.hidden=8",
    "--set",
    "model.memory_kwargs.d_state=4",
]


def test_every_preset_loads_with_every_model():
    envs, models = list_presets()
    assert "repeat_previous_easy" in envs and {"lru", "s5", "mamba", "gru", "lstm", "window_transformer"} <= set(models)
    for env in envs:
        for model in models:
            cfg = load_rl_config(env, model=model)
            assert cfg.model.memory == model and cfg.ppo.num_envs % cfg.ppo.num_minibatches == 0


def test_train_resume_eval(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "rl",
        "train",
        "--preset",
        "repeat_previous_easy",
        "--model",
        "lru",
        "--out",
        str(out),
        "--no-progress",
        *TINY,
    ]
    assert main(args + ["--iterations", "2"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and rows[-1]["env_steps"] == 2 * 4 * 16
    assert (out / "last" / "trainer_state.json").is_file() and (out / "config.yaml").is_file()
    assert main(args + ["--iterations", "2"]) == 2  # the run exists: refuse to overwrite it
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--iterations", "3", "--resume"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    capsys.readouterr()
    assert main(["rl", "eval", "--checkpoint", str(out), "--episodes", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 4 and -1.0 <= result["mean_return"] <= 1.0 and result["iteration"] == 3
    assert json.loads((out / "eval.json").read_text())["mean_return"] == result["mean_return"]


def test_bad_input(tmp_path, capsys):
    assert main(["rl", "train", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown RL preset 'nope'" in capsys.readouterr().err
    assert (
        main(["rl", "train", "--preset", "repeat_previous_easy", "--model", "hydra", "--out", str(tmp_path / "x")]) == 2
    )
    assert "unknown RL model preset" in capsys.readouterr().err
    assert (
        main(
            [
                "rl",
                "train",
                "--preset",
                "repeat_previous_easy",
                "--set",
                "env=RepeatPrevius",
                "--out",
                str(tmp_path / "x"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "unknown POPGym environment" in capsys.readouterr().err
    assert (
        main(["rl", "train", "--preset", "repeat_previous_easy", "--set", "ppo.lrate=1", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "unknown ppo config key" in capsys.readouterr().err
    assert main(["rl", "eval", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no run or checkpoint" in capsys.readouterr().err
