"""`torchssm vision longvq | pretrain | video` end to end on tiny YAML presets (the wiring of the CLI to
the runners: preset keys, overrides, printed summary, results.json)."""

import json

import yaml

from torchssm.cli import main


def write(tmp_path, name, cfg):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_cli_longvq_pretrain_video(tmp_path, capsys):
    longvq = {
        "task": "mqar",
        "task_kwargs": {"length": 32, "vocab_size": 40, "num_kv_pairs": 4, "n_train": 16, "n_val": 4, "n_test": 8},
        "ssm_kwargs": {"d_state": 4},
        "longvq_kwargs": {"codebook_size": 4, "d_qk": 4, "window": 8},
        "d_model": 8,
        "n_layers": 1,
        "steps": 50,
        "batch": 4,
    }
    assert (
        main(
            [
                "vision",
                "longvq",
                "--preset",
                write(tmp_path, "lvq", longvq),
                "--out",
                str(tmp_path / "a"),
                "--steps",
                "2",
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["steps"] == 2 and set(res["models"]) == {"s4d", "longvq(s4d)"}
    assert res["models"]["longvq(s4d)"]["final_aux_loss"] > 0 == res["models"]["s4d"]["final_aux_loss"]

    mim = {"data": "digits", "patch": 2, "model": {"layer": "lru", "d_model": 8, "n_layers": 1}, "batch": 8}
    assert (
        main(
            [
                "vision",
                "pretrain",
                "--preset",
                write(tmp_path, "mim", mim),
                "--out",
                str(tmp_path / "b"),
                "--arms",
                "scratch",
                "s6t",
                "--pretrain-steps",
                "2",
                "--finetune-steps",
                "2",
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(res["arms"]) == {"scratch", "s6t"} and res["pretrain_steps"] == 2

    video = {"frames": 48, "n_train": 8, "n_test": 4, "d_model": 8, "d_state": 4, "batch": 4}
    assert (
        main(
            [
                "vision",
                "video",
                "--preset",
                write(tmp_path, "vid", video),
                "--out",
                str(tmp_path / "c"),
                "--arms",
                "s5",
                "--steps",
                "2",
                "--no-throughput",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    assert set(res["arms"]) == {"s5"} and res["throughput"] == []
    out = capsys.readouterr().out
    assert "longvq(s4d)" in out and "with 144 labels" in out and "event frames kept" in out
