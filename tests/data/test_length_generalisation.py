"""Length evaluation (torchssm.analysis.length): streaming == one full forward, rows, limits, CLI, plot."""

import json

import pytest
import torch

from torchssm.analysis.length import evaluate_lengths, full_correct, has_kv_cache, length_test_set, streaming_correct
from torchssm.models.backbone import build_model
from torchssm.models.config import ModelConfig


def _model(layer="mamba", **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(
        layer=layer,
        d_model=16,
        n_layers=2,
        layer_kwargs=kw,
        norm="layer",
        glu=False,
        pooling="none",
        d_input=8,
        d_output=8,
        input_kind="tokens",
    )
    return build_model(cfg).eval()


@pytest.mark.parametrize("layer", ["mamba", "lru"])
def test_streaming_equals_full_forward(layer):
    """Chunked reading with the carried state scores exactly what one forward scores (all positions)."""
    model = _model(layer)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 8, (3, 50), generator=g)
    y = torch.randint(0, 8, (3, 50), generator=g)
    y[:, ::3] = -100
    full = full_correct(model, x, y)
    assert full[1] == int((y != -100).sum())
    for chunk in (1, 7, 50, 64):
        assert streaming_correct(model, x, y, chunk=chunk) == full
    # and the chunks really carry the state: restarting each chunk from zero changes the logits
    with torch.no_grad():
        restarted = torch.cat([model(x[:, s : s + 7]) for s in range(0, 50, 7)], 1)
        assert not torch.allclose(restarted, model(x), atol=1e-4)


def test_induction_rows_and_budget():
    model = _model("mamba")
    rows = evaluate_lengths(
        model, "induction_heads", [16, 32, 64], n_sequences=5, batch_size=2, chunk=8,
        task_options={"vocab_size": 8}, budget_s=0.0, progress=False,
    )  # fmt: skip
    assert rows[0]["status"] == "ok" and rows[0]["n"] == 5  # one scored step per induction sequence
    assert 0.0 <= rows[0]["acc"] <= 1.0 and rows[0]["cpu_s"] >= 0.0
    assert [r["status"] for r in rows[1:]] == ["skipped (budget)"] * 2


def test_test_set_is_the_induction_extrapolation_set():
    data, ignore = length_test_set("induction_heads", 40, 3, task_options={"vocab_size": 8, "length": 16})
    assert len(data) == 3 and ignore == -100
    ex = data[0]
    assert ex["inputs"].shape == (40,) and int(ex["inputs"][-1]) == 7  # the special token closes the sequence
    assert int((ex["targets"] != -100).sum()) == 1
    # a task without extrapolation sets is rebuilt at the length
    data, _ = length_test_set("selective_copying", 40, 2, task_options={"n_tokens": 4, "vocab_size": 8})
    assert data[0]["inputs"].shape == (40,)


def test_attention_is_full_and_limited():
    model = _model("transformer", n_heads=2)
    assert has_kv_cache(model) and not has_kv_cache(_model("mamba"))
    rows = evaluate_lengths(
        model, "induction_heads", [16, 64], n_sequences=2, task_options={"vocab_size": 8},
        full_max_length=32, progress=False,
    )  # fmt: skip
    assert rows[0]["method"] == "full" and rows[0]["status"] == "ok"
    assert rows[1]["status"].startswith("skipped (attention limit")


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_sequences"):
        evaluate_lengths(_model(), "induction_heads", [16], n_sequences=0)


def test_cli_and_plot(tmp_path):
    """A saved model: `torchssm length-eval` writes the JSON that `torchssm plot length` draws."""
    from torchssm.cli import main

    model = _model("mamba")
    model.save_pretrained(tmp_path / "m")
    out = tmp_path / "len.json"
    rc = main(
        ["length-eval", "--checkpoint", str(tmp_path / "m"), "--task", "induction_heads",
         "--task-options", '{"vocab_size": 8}', "--min-log2", "4",
         "--max-log2", "5", "--n", "4", "--json", str(out), "--label", "tiny"]
    )  # fmt: skip
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["label"] == "tiny" and [r["length"] for r in rec["rows"]] == [16, 32]
    assert main(["plot", "length", str(out), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "length_generalisation.png").stat().st_size > 1000
