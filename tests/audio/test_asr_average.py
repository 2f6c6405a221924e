"""Checkpoint averaging of a recogniser run: train.keep_checkpoints, asr_train.average_asr_checkpoints and
`speech average`."""

import pytest
import torch
from _speech_common import toy_asr_task
from safetensors.torch import load_file

from torchssm.audio import asr_runs, asr_train, decoding
from torchssm.cli import main
from torchssm.data.registry import TaskData
from torchssm.train.checkpoint import WEIGHTS, read_checkpoint_state

TINY = {"d_model": 16, "n_layers": 1, "n_mels": 16, "layer_kwargs": {"d_state": 4}}


def _run(tmp_path, monkeypatch, keep=2):
    toy = toy_asr_task()
    task = TaskData(info=toy.info, train=toy.train, val=toy.test, test=toy.test, extra=toy.extra)
    monkeypatch.setattr(asr_runs, "checkpoint_task", lambda path, data_dir=None, val_heldout=None: (path, task))
    config = {
        "task": {"name": "toy"},
        "model": {"kind": "ctc", "subsampling": 2, **TINY},
        "train": {"epochs": 3, "batch_size": 4, "out_dir": str(tmp_path / "run"), "test_beam": 1},
    }
    config["train"]["keep_checkpoints"] = keep
    lines: list[str] = []
    asr_train.train_asr(config, task=task, log=lines.append)
    removed = [line for line in lines if line.startswith("removed")]
    pruned = range(1, 4 - keep) if keep else ()  # keep 0: no snapshot is taken, so none is removed
    assert removed == [f"removed checkpoints/epoch-{e:06d} (train.keep_checkpoints={keep})" for e in pruned]
    return tmp_path / "run"


def test_a_run_keeps_its_last_epochs_and_averages_them(tmp_path, monkeypatch, capsys):
    run = _run(tmp_path, monkeypatch)
    kept = asr_train.asr_snapshots(run)
    assert [p.name for p in kept] == ["epoch-000002", "epoch-000003"]  # epoch 1 pruned (keep 2)
    assert [read_checkpoint_state(p)["epoch"] for p in kept] == [2, 3]
    second, third, last = (load_file(str(p / WEIGHTS)) for p in (*kept, run / "last"))
    assert all(torch.equal(third[k], last[k]) for k in last) and any(not torch.equal(second[k], third[k]) for k in last)
    out = asr_train.average_asr_checkpoints(run, tmp_path / "avg")
    averaged = load_file(str(out / WEIGHTS))
    for k in last:
        torch.testing.assert_close(averaged[k], ((second[k].double() + third[k].double()) / 2).to(last[k].dtype))
    assert read_checkpoint_state(out)["averaged_from"] == [str(p) for p in kept]
    decoded = decoding.evaluate_checkpoint(out, "test", beam=2)  # read as any recogniser checkpoint
    assert 0.0 <= decoded["cer"] and decoded["n"] == len(toy_asr_task().test)
    capsys.readouterr()
    assert main(["speech", "average", str(run), "--epochs", "2", "3"]) == 0
    assert (run / "averaged-epochs-2-3" / WEIGHTS).is_file() and "averaged-epochs-2-3" in capsys.readouterr().out
    assert load_file(str(run / "averaged-epochs-2-3" / WEIGHTS)).keys() == averaged.keys()


def test_averaging_refuses_what_it_cannot_average(tmp_path, monkeypatch, capsys):
    run = _run(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=r"kept no checkpoint of epoch\(s\) \[1\] \(kept: \[2, 3\]"):
        asr_train.asr_snapshots(run, [1, 3])
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        asr_train.average_asr_checkpoints(run, tmp_path / "one", epochs=[3])
    asr_train.average_asr_checkpoints(run, tmp_path / "avg")
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        asr_train.average_asr_checkpoints(run, tmp_path / "avg")
    asr_train.average_asr_checkpoints(run, tmp_path / "avg", overwrite=True)
    with pytest.raises(ValueError, match="is one of the checkpoints averaged"):
        asr_train.average_asr_checkpoints(run, run / "checkpoints" / "epoch-000003", overwrite=True)
    with pytest.raises(ValueError, match="is not a recogniser run directory"):
        asr_train.asr_snapshots(tmp_path)
    with pytest.raises(ValueError, match="train.keep_checkpoints must be an int >= 0"):
        asr_train.ASRTrainConfig(keep_checkpoints=-1)
    assert main(["speech", "average", str(run), "--epochs", "7"]) == 2
    assert "kept no checkpoint of epoch(s) [7]" in capsys.readouterr().err


def test_keep_checkpoints_zero_keeps_none(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch, keep=0)
    assert not (run / "checkpoints").exists()
    with pytest.raises(ValueError, match=r"kept: none"):
        asr_train.asr_snapshots(run, [3])
