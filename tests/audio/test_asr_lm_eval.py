"""decoding.lm_grid / evaluate_checkpoint on a tiny trained CTC run (the task stands in for the cache)."""

import pytest
from _speech_common import toy_asr_task

from torchssm.audio import asr_runs
from torchssm.audio.asr_eval import evaluate_asr
from torchssm.audio.asr_runs import load_recognizer
from torchssm.audio.asr_train import train_asr
from torchssm.audio.decoding import evaluate_checkpoint, lm_grid

TINY = {"d_model": 16, "n_layers": 1, "n_mels": 16, "layer_kwargs": {"d_state": 4}}


def test_lm_grid_and_evaluate_checkpoint(tmp_path, monkeypatch):
    task = toy_asr_task()
    cfg = {
        "model": {"kind": "ctc", **TINY},
        "train": {"epochs": 3, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0, "out_dir": str(tmp_path)},
    }
    train_asr(cfg, task=task, log=lambda s: None)
    monkeypatch.setattr(
        asr_runs, "checkpoint_task", lambda path, data_dir=None, val_heldout=None: (tmp_path / "last", task)
    )
    model = load_recognizer(tmp_path)
    plain = evaluate_asr(model, task.test, ["b"], beam=2)
    logs = []
    grid = lm_grid(tmp_path, orders=(1, 2), alphas=(0.0, 0.5), betas=(0.0, 1.0), beam=2, split="test", log=logs.append)
    assert [(r["order"], r["alpha"], r["beta"]) for r in grid["rows"]] == [
        (o, a, b) for o in (1, 2) for a in (0.0, 0.5) for b in (0.0, 1.0)
    ]
    assert grid["no_lm"]["cer"] == pytest.approx(plain["cer"])
    zero = [r for r in grid["rows"] if r["alpha"] == 0.0 and r["beta"] == 0.0]
    assert all(r["cer"] == pytest.approx(plain["cer"]) for r in zero)  # zero weights: the plain search
    assert grid["best"] == min(grid["rows"], key=lambda r: (r["cer"], r["wer"]))
    assert len(logs) == 1 + len(grid["rows"]) and grid["cpu_s"] > 0
    fused = evaluate_checkpoint(tmp_path, "test", beam=2, lm_order=2, alpha=0.0)
    assert fused["cer"] == pytest.approx(plain["cer"]) and fused["heldout_words_n"] == plain["heldout_words_n"]
    more = lm_grid(tmp_path, orders=(2,), alphas=(0.5,), betas=(0.0,), beam=2, split="test", extra_texts=["zzz zzz"])
    [row] = [r for r in grid["rows"] if (r["order"], r["alpha"], r["beta"]) == (2, 0.5, 0.0)]
    assert more["rows"][0]["bits_per_char"] != row["bits_per_char"]  # the extra sentence reached the model
    assert evaluate_checkpoint(tmp_path, "test", beam=2, lm_order=2, alpha=0.0, extra_texts=["zzz"])["cer"] == (
        pytest.approx(plain["cer"])
    )
    with pytest.raises(ValueError, match="split must be"):
        lm_grid(tmp_path, split="dev")
    with pytest.raises(ValueError, match="no val split"):
        lm_grid(tmp_path, orders=(2,), split="val")
