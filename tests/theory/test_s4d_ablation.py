"""`torchssm theory s4d-ablation` (theory/ablation.py): one training run per (init, discretization) of a
preset, each run built with that cell's S4D settings; JSON rows on stdout, a JSON summary and a markdown table."""

import json

import pytest
import yaml

from torchssm.cli import main
from torchssm.theory.ablation import ablation_table, s4d_ablation

TINY = [
    "task.n_train=16",
    "task.n_val=8",
    "task.n_test=8",
    "task.delay=10",
    "train.epochs=1",
    "train.batch_size=8",
    "model.d_model=8",
    "model.layer_kwargs.d_state=4",
]


def test_grid_runs_each_cell_with_its_own_settings(tmp_path, capsys):
    out = tmp_path / "abl"
    argv = ["theory", "s4d-ablation", "--inits", "lin", "real", "--discretizations", "zoh", "bilinear"]
    assert main([*argv, "--out-dir", str(out), *(a for o in TINY for a in ("--set", o))]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["rows"] == rows and summary["overrides"] == TINY
    cells = [(r["init"], r["discretization"]) for r in summary["rows"]]
    assert cells == [("lin", "zoh"), ("lin", "bilinear"), ("real", "zoh"), ("real", "bilinear")]
    for r in summary["rows"]:
        saved = yaml.safe_load((out / f"{r['init']}_{r['discretization']}" / "config.yaml").read_text())
        kw = saved["model"]["layer_kwargs"]
        assert (saved["model"]["layer"], kw["init"], kw["discretization"], kw["d_state"]) == (
            "s4d",
            r["init"],
            r["discretization"],
            4,
        )
        assert 0.0 <= r["test_acc"] <= 1.0 and r["cpu_s"] >= 0 and r["epochs"] == 1
    table = (out / "ablation.md").read_text().splitlines()
    assert table[0] == "| init | zoh test acc (CPU-s) | bilinear test acc (CPU-s) |"
    assert [line.split(" |")[0] for line in table[2:]] == ["| lin", "| real"]


def test_table_marks_missing_cells_and_bad_choices_raise(tmp_path):
    rows = [{"init": "legs", "discretization": "zoh", "test_acc": 0.5, "cpu_s": 12.3}]
    assert ablation_table(rows).splitlines()[-1] == "| legs | 50.0% (12) |"
    rows.append({"init": "inv", "discretization": "bilinear", "test_acc": 1.0, "cpu_s": 3.0})
    assert ablation_table(rows).splitlines()[-2:] == ["| legs | 50.0% (12) | - |", "| inv | - | 100.0% (3) |"]
    with pytest.raises(ValueError, match="inits must be"):
        s4d_ablation(tmp_path, inits=["legendre"])
    with pytest.raises(ValueError, match="model.layer s4d"):
        s4d_ablation(tmp_path, preset="synthetic/copying_lru", inits=["legs"], discretizations=["zoh"])
