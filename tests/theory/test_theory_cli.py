"""``torchssm theory mqar / selectivity``: JSON rows on stdout."""

import json

from torchssm.cli import main


def test_theory_mqar_cli(capsys):
    argv = ["theory", "mqar", "--kind", "mamba2", "--vocab-size", "64", "--length", "64", "--pairs", "8"]
    assert main([*argv, "--examples", "4", "--backend", "naive"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["kind"] == "mamba2" and row["accuracy"] == 1.0 and row["queries"] == 32


def test_theory_selectivity_cli(capsys, tmp_path):
    assert main(["theory", "selectivity", "--sizes", "4", "16", "--out", str(tmp_path / "sel.png")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["state"] for r in lines[:2]] == [4, 16] and "keep_nth_recall_mse" in lines[2]
    assert (tmp_path / "sel.png").stat().st_size > 1000
