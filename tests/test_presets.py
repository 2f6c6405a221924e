"""Presets shipped inside the package: lookup by name, `torchssm presets`, and `torchssm train --preset`."""

import pytest

from torchssm.cli import main
from torchssm.presets import PRESET_DIR, describe, list_presets, preset_path


def test_presets_live_in_the_package_and_are_found_by_name():
    names = list_presets()
    assert {"mnist1d_lru", "lra/listops_s4d", "synthetic/adding_lru"} <= set(names)
    assert names == sorted(names) and not any(n.endswith(".yaml") for n in names)
    path = preset_path("mnist1d_lru")
    assert path == PRESET_DIR / "mnist1d_lru.yaml" and path.is_file()
    assert preset_path("lra/listops_s4d") == preset_path("lra/listops_s4d.yaml") == PRESET_DIR / "lra/listops_s4d.yaml"
    assert preset_path("listops_s4d") == PRESET_DIR / "lra/listops_s4d.yaml"  # a file name found in one folder only


def test_preset_lookup_errors(tmp_path):
    for area in ("a", "b"):
        (tmp_path / area).mkdir()
        (tmp_path / area / "x.yaml").write_text("# x\ntask: {name: adding}\n")
    (tmp_path / "top.yml").write_text("not: [valid\n")
    (tmp_path / ".x.yaml").write_text("")  # an editor's swap file, not a preset
    assert list_presets(tmp_path) == ["a/x", "b/x", "top"]
    with pytest.raises(ValueError, match=r"ambiguous: a/x, b/x"):
        preset_path("x", tmp_path)
    with pytest.raises(ValueError, match=r"unknown preset 'tpo'; did you mean top\?"):
        preset_path("tpo", tmp_path)
    with pytest.raises(ValueError, match="pass it with --config"):
        preset_path(str(tmp_path / "a" / "x.yaml"), tmp_path / "b")
    with pytest.raises(ValueError, match="non-empty string"):
        preset_path(" ", tmp_path)
    assert list_presets(tmp_path, recursive=False) == ["top"]  # an area's own presets, not its sub-folders
    with pytest.raises(ValueError, match=r"unknown preset 'x'"):
        preset_path("x", tmp_path, recursive=False)  # the unique-file-name match stays within the folder
    assert preset_path("x", tmp_path / "a") == tmp_path / "a" / "x.yaml"  # an area's root
    assert describe("a/x", tmp_path) == "adding | x"
    assert describe("top", tmp_path).startswith("(not valid YAML")


def test_other_commands():
    from torchssm.presets import other_command

    assert other_command("mnist1d_lru") is None and other_command("audio/mulaw_mamba") is None
    assert other_command("rl/repeat_first_easy").startswith("torchssm rl train")
    assert other_command("audio/asr_ctc").startswith("torchssm speech train")


def test_every_preset_has_a_one_line_description():
    for name in list_presets():
        line = describe(name)
        assert line and "\n" not in line, name


def test_presets_command(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    footer = lines.index(next(line for line in lines if line.endswith("show it with `torchssm presets NAME`")))
    assert footer == len(list_presets())
    assert any(line.startswith("mnist1d_lru ") and "mnist1d | lru x2 (H=64) | 40 epochs" in line for line in lines)
    assert main(["presets", "lra"]) == 0
    shown = capsys.readouterr().out.splitlines()[:-1]
    assert shown and all(line.startswith("lra/") for line in shown)
    assert main(["presets", "mnist1d_lru"]) == 0
    assert capsys.readouterr().out == preset_path("mnist1d_lru").read_text()
    assert main(["presets", "mnist1d_lru", "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(preset_path("mnist1d_lru"))
    assert main(["presets", "mnist1d_lr"]) == 2
    assert "did you mean mnist1d_lru" in capsys.readouterr().err


def test_train_preset(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--preset",
        "mnist1d_lru",
        "--set",
        "task.limit=64",
        "model.d_model=8",
        "model.layer_kwargs.d_state=8",
        "train.epochs=1",
        "train.threads=1",
        "train.progress=false",
        "--out-dir",
        str(out),
        "--data-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert "test accuracy" in capsys.readouterr().out and (out / "metrics.jsonl").is_file()
    assert main(["train", "--preset", "nope", "--out-dir", str(tmp_path / "x")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one or the other
        main(["train", "--preset", "mnist1d_lru", "--config", str(preset_path("mnist1d_lru"))])
