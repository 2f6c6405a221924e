"""torchssm length-eval's default chunk (batch x chunk = CALL_TOKENS per call): the chunked reading it
chooses scores exactly what one forward scores, also with a last chunk shorter than the others, and the
JSON records the batch size and chunk used."""

import json

import pytest
import torch

from torchssm.analysis.length import CALL_TOKENS, default_chunk, evaluate_lengths, full_correct, streaming_correct
from torchssm.cli import main
from torchssm.models.backbone import build_model
from torchssm.models.config import ModelConfig


def _mamba():
    torch.manual_seed(0)
    cfg = ModelConfig(
        layer="mamba", d_model=16, n_layers=2, layer_kwargs={"d_state": 4}, norm="layer", glu=False,
        pooling="none", d_input=8, d_output=8, input_kind="tokens",
    )  # fmt: skip
    return build_model(cfg).eval()


def test_default_chunk():
    assert default_chunk(16) == CALL_TOKENS // 16 and default_chunk(32) * 32 == CALL_TOKENS
    assert default_chunk(3) == CALL_TOKENS // 3 and default_chunk(10 * CALL_TOKENS) == 1


def test_default_chunked_reading_equals_one_forward(monkeypatch):
    """With CALL_TOKENS lowered so that the default chunk (4 sequences: 37 // 4 = 9 steps) leaves a short
    last chunk of a 50-step sequence, the streamed reading scores exactly the one-forward result."""
    import torchssm.analysis.length as length

    model = _mamba()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 8, (4, 50), generator=g)  # (b, L)
    y = torch.randint(0, 8, (4, 50), generator=g)  # (b, L)
    y[:, ::3] = -100
    monkeypatch.setattr(length, "CALL_TOKENS", 37)
    chunk = length.default_chunk(4)
    assert chunk == 9 and 50 % chunk != 0
    assert streaming_correct(model, x, y, chunk=chunk) == full_correct(model, x, y)

    seen = []
    real = length.streaming_correct
    monkeypatch.setattr(length, "streaming_correct", lambda *a, **k: seen.append(k["chunk"]) or real(*a, **k))
    rows = evaluate_lengths(model, "induction_heads", [32], n_sequences=4, batch_size=4,
                            task_options={"vocab_size": 8}, progress=False)  # fmt: skip
    assert seen == [9] and rows[0]["status"] == "ok"


def test_cli_records_batch_and_chunk(tmp_path):
    model = _mamba()
    model.save_pretrained(tmp_path / "m")
    out = tmp_path / "len.json"
    args = ["length-eval", "--checkpoint", str(tmp_path / "m"), "--task", "induction_heads",
            "--task-options", '{"vocab_size": 8}', "--min-log2", "4", "--max-log2", "4", "--n", "4",
            "--batch-size", "2", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    rec = json.loads(out.read_text())
    assert (rec["batch_size"], rec["chunk"]) == (2, CALL_TOKENS // 2)
    assert main([*args, "--chunk", "5"]) == 0
    assert json.loads(out.read_text())["chunk"] == 5


def test_stop_acc_skips_longer_lengths_after_a_run_of_low_accuracies(monkeypatch):
    """Only `stop_after` lengths IN A ROW at or below `stop_acc` stop the sweep; a good length resets the count."""
    import torchssm.analysis.length as length

    accs = iter([1.0, 0.05, 0.5, 0.1, 0.0])  # one batch per length: its (correct, scored) of 20 sequences
    monkeypatch.setattr(length, "streaming_correct", lambda *a, **k: (round(20 * next(accs)), 20))
    lengths = [8, 16, 32, 64, 128, 256, 512]
    rows = evaluate_lengths(_mamba(), "induction_heads", lengths, n_sequences=20, batch_size=20,
                            task_options={"vocab_size": 8}, stop_acc=0.1, stop_after=2, progress=False)  # fmt: skip
    assert [r["acc"] for r in rows[:5]] == [1.0, 0.05, 0.5, 0.1, 0.0]
    assert [r["status"] for r in rows] == ["ok"] * 5 + ["skipped (at or below 0.1)"] * 2
    assert rows[5]["acc"] is None and rows[6]["cpu_s"] is None
    with pytest.raises(ValueError, match="stop_acc"):
        evaluate_lengths(_mamba(), "induction_heads", [8], stop_acc=1.5, progress=False)
    with pytest.raises(ValueError, match="stop_after"):
        evaluate_lengths(_mamba(), "induction_heads", [8], stop_acc=0.1, stop_after=0, progress=False)
