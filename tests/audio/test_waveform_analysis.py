"""spoken_mulaw analyses: bits per sample by position, by context and with the far context swapped (float64
references), the positions / context / swap / plot CLI."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _speech_common import fake_sentences

from torchssm.audio import waveform, waveform_analysis
from torchssm.audio.dsp import mu_law_encode
from torchssm.audio.waveform_analysis import (
    bits_by_context,
    bits_by_position,
    default_contexts,
    position_edges,
)
from torchssm.data.loaders import TensorDictDataset
from torchssm.models import build_model
from torchssm.models.config import ModelConfig


def test_position_edges():
    assert position_edges(4096) == [0, 256, 512, 1024, 2048, 4096]
    assert position_edges(1000, first=100) == [0, 100, 200, 400, 800, 1000]
    assert position_edges(100) == [0, 100]
    with pytest.raises(ValueError, match="length must be a positive int"):
        position_edges(0)
    with pytest.raises(ValueError, match="first must be a positive int"):
        position_edges(64, first=0)


class _Uniform(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(*x.shape, 256)


def _codes(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 256, (n, length + 1), generator=g)
    return TensorDictDataset(inputs=codes[:, :-1].clone(), targets=codes[:, 1:].clone())


def test_bits_by_position_uniform_is_eight_bits():
    result = bits_by_position(_Uniform(), _codes(3, 40), edges=[0, 8, 40])
    assert [(b["start"], b["stop"]) for b in result["buckets"]] == [(0, 8), (8, 40)]
    for value in [b["bits"] for b in result["buckets"]] + [result["bits"]]:
        assert value == pytest.approx(8.0, abs=1e-9)
    assert result["n_windows"] == 3 and result["length"] == 40


def test_bits_by_position_matches_float64_reference():
    torch.manual_seed(0)
    cfg = ModelConfig(layer="s4d", d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, norm="layer", pooling="none")
    cfg.d_input = cfg.d_output = 256
    cfg.input_kind = "tokens"
    model = build_model(cfg).train()
    data = _codes(5, 48, seed=1)
    edges = position_edges(48, first=6)  # [0, 6, 12, 24, 48]
    result = bits_by_position(model, data, edges, batch_size=2)
    assert model.training  # left as it was found
    ref_model = build_model(cfg).double()
    ref_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        logits = ref_model.eval()(data.tensors["inputs"])
    nll = F.cross_entropy(logits.transpose(1, 2), data.tensors["targets"], reduction="none") / math.log(2.0)
    expected = torch.tensor([float(nll[:, a:b].mean()) for a, b in zip(edges[:-1], edges[1:])], dtype=torch.float64)
    got = torch.tensor([b["bits"] for b in result["buckets"]], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert result["bits"] == pytest.approx(float(nll.mean()), abs=1e-5)
    again = bits_by_position(model, data, edges, batch_size=5)  # the batch size does not matter
    assert again["bits"] == pytest.approx(result["bits"], abs=1e-9)


def test_bits_by_context_matches_float64_reference():
    torch.manual_seed(0)
    cfg = ModelConfig(layer="mamba", d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, norm="layer", glu=False)
    cfg.pooling, cfg.d_input, cfg.d_output, cfg.input_kind = "none", 256, 256, "tokens"
    model = build_model(cfg)
    data = _codes(3, 40, seed=2)
    result = bits_by_context(model, data, contexts=[0, 10, 30], scored=10)
    ref_model = build_model(cfg).double()
    ref_model.load_state_dict(model.state_dict())
    x, y = data.tensors["inputs"], data.tensors["targets"]
    expected, per_window = [], []
    with torch.no_grad():
        for c in (0, 10, 30):
            logits = ref_model.eval()(x[:, 30 - c :])[:, -10:]  # the last 10 targets with c inputs before them
            nll = F.cross_entropy(logits.transpose(1, 2), y[:, -10:], reduction="none")
            expected.append(float(nll.mean()) / math.log(2.0))
            per_window.append(nll.mean(1) / math.log(2.0))  # (3,) bits of each window
    got = [row["bits"] for row in result["contexts"]]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(result["per_window"], dtype=torch.float64), torch.stack(per_window))
    # paired gains between consecutive contexts: mean and standard error of the per-window differences
    assert [(g["from"], g["to"]) for g in result["gains"]] == [(0, 10), (10, 30)]
    for g, a, b in zip(result["gains"], per_window, per_window[1:]):
        diff = a - b
        assert g["gain"] == pytest.approx(float(diff.mean()), abs=1e-6)
        assert g["se"] == pytest.approx(float(diff.std(correction=1)) / math.sqrt(3), abs=1e-6)
    one = bits_by_context(model, data.subset(slice(0, 1)), contexts=[0, 10], scored=10)
    assert math.isnan(one["gains"][0]["se"])  # one window: no standard error
    assert [row["context"] for row in result["contexts"]] == [0, 10, 30] and result["scored"] == 10
    full = bits_by_position(model, data, edges=[0, 30, 40])  # the whole window: the same last 10 samples
    assert full["buckets"][1]["bits"] == pytest.approx(got[2], abs=1e-5)
    assert default_contexts(65536, 1024) == [0, 256, 1024, 4096, 16384, 64512]
    assert default_contexts(4096, 1024) == [0, 256, 1024, 3072]
    with pytest.raises(ValueError, match=r"contexts must be ints in \[0, 30\]"):
        bits_by_context(model, data, contexts=[31], scored=10)
    with pytest.raises(ValueError, match=r"scored must be an int in \[1, 40\]"):
        bits_by_context(model, data, contexts=[0], scored=0)


def test_bits_by_position_bad_input():
    data = _codes(2, 16)
    with pytest.raises(ValueError, match="edges must rise strictly from 0"):
        bits_by_position(_Uniform(), data, edges=[0, 8, 12])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        bits_by_position(_Uniform(), data, batch_size=0)
    with pytest.raises(ValueError, match=r"expected inputs and targets of one shape \(n, length\)"):
        bits_by_position(_Uniform(), TensorDictDataset(inputs=torch.zeros(2, 3, 4), targets=torch.zeros(2, 3, 4)))
    with pytest.raises(ValueError, match="model returned logits of shape"):
        bits_by_position(torch.nn.Embedding(256, 10), data)


def test_positions_cli(monkeypatch, tmp_path, capsys):
    import json

    from torchssm.train.checkpoint import save_checkpoint

    fake_sentences(monkeypatch, clip_len=300)
    cfg = ModelConfig(layer="mamba", d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, norm="layer", glu=False)
    cfg.pooling = "none"
    task = {"name": "spoken_mulaw", "length": 128, "n_train": 2, "n_val": 0, "n_test": 3, "n_sentences": 8}
    built = ModelConfig(**{**cfg.to_dict(), "d_input": 256, "d_output": 256, "input_kind": "tokens"})
    save_checkpoint(tmp_path / "run" / "last", build_model(built), config={"task": task, "model": cfg.to_dict()})
    out = tmp_path / "positions.json"
    assert waveform.main(["positions", str(tmp_path / "run"), "--first", "32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[    64,    128)" in printed and "3 test windows of 128" in printed
    result = json.loads(out.read_text())
    assert [b["start"] for b in result["buckets"]] == [0, 32, 64] and result["n_windows"] == 3
    assert 4.0 < result["bits"] < 12.0  # an untrained model: near the uniform 8 bits
    context_out = tmp_path / "context.json"
    args = ["context", str(tmp_path / "run"), "--scored", "32", "--n-test", "5", "--out", str(context_out)]
    assert waveform.main(args) == 0
    printed = capsys.readouterr().out
    assert "context     96 + [0, 32)" in printed and "gain      0 ->     96:" in printed
    context = json.loads(context_out.read_text())
    assert [r["context"] for r in context["contexts"]] == [0, 96] and context["n_windows"] == 5
    assert [(g["from"], g["to"]) for g in context["gains"]] == [(0, 96)] and len(context["per_window"][1]) == 5
    other_length = tmp_path / "context64.json"
    args = ["context", str(tmp_path / "run"), "--length", "64", "--contexts", "0", "16", "--scored", "16"]
    assert waveform.main([*args, "--out", str(other_length)]) == 0
    capsys.readouterr()
    other = json.loads(other_length.read_text())
    assert other["length"] == 64 and other["n_windows"] == 3 and [r["context"] for r in other["contexts"]] == [0, 16]
    assert waveform.main(["context", str(tmp_path / "run"), "--split", "val", "--n-test", "5"]) == 2
    assert "--n-test changes the test split only" in capsys.readouterr().err
    assert waveform.main(["positions", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    figure = tmp_path / "fig.png"
    assert waveform.main(["plot", str(out), str(out), "--labels", "a", "b", "--out", str(figure)]) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert waveform.main(["plot", str(out), "--labels", "a", "b", "--out", str(figure)]) == 2
    assert "one label per result" in capsys.readouterr().err
    assert waveform.main(["plot", str(tmp_path / "nope.json"), "--out", str(figure)]) == 2
    assert "cannot read" in capsys.readouterr().err


def _find(recording, codes):
    """Every start at which ``recording``'s codes equal ``codes``."""
    full = mu_law_encode(recording)
    n = len(codes)
    return [t for t in range(len(full) - n + 1) if np.array_equal(full[t : t + n], codes)]


def test_far_context_inputs_swap_only_the_far_context():
    rng = np.random.default_rng(0)
    recordings = [rng.uniform(-1, 1, size).astype(np.float32) for size in (300, 90, 500, 40, 200)]
    length, near, scored = 64, 8, 8
    far = length - near - scored
    sources = waveform.window_sources(recordings, length, 12, np.random.default_rng(1))
    out = waveform_analysis.far_context_inputs(recordings, sources, length, near, scored, seed=2)
    assert out["far"] == far and out["skipped"] == int((sources[:, 0] == 1).sum())  # 90 samples: no room outside
    assert out["skipped"] > 0 and len(out["kept"]) == 12 - out["skipped"]
    assert out["own"].shape == (len(out["kept"]), length) and out["none"].shape == (len(out["kept"]), near + scored)
    for row, (i, j) in enumerate(zip(out["kept"], out["other"])):
        k, start = sources[i].tolist()
        window = mu_law_encode(recordings[k][start : start + length + 1])
        assert out["own"][row].tolist() == window[:length].tolist()
        assert out["targets"][row].tolist() == window[-scored:].tolist()
        for name in ("same_voice", "other_voice", "none"):  # the same near context and scored inputs
            assert out[name][row, -(near + scored) :].tolist() == window[far:length].tolist()
        (same_at,) = _find(recordings[k], out["same_voice"][row, :far].numpy())
        assert same_at + far <= start or same_at >= start + length + 1  # outside the window
        assert j != k and len(_find(recordings[j], out["other_voice"][row, :far].numpy())) == 1
        assert j != 3  # 40 samples: too short for a far context of 48
    with pytest.raises(ValueError, match="near \\+ scored must be below the window length 64"):
        waveform_analysis.far_context_inputs(recordings, sources, length, 40, 24)
    with pytest.raises(ValueError, match=r"sources must be \(n, 2\) rows"):
        waveform_analysis.far_context_inputs(recordings, sources[:, 0], length, near, scored)
    with pytest.raises(ValueError, match="does not fit recording"):
        waveform_analysis.far_context_inputs(recordings, np.array([[1, 80]]), length, near, scored)
    with pytest.raises(ValueError, match="no window's recording holds 48 samples outside it"):
        waveform_analysis.far_context_inputs(recordings, np.array([[1, 0]]), length, near, scored)


def test_bits_by_far_context_matches_float64_reference():
    torch.manual_seed(0)
    cfg = ModelConfig(layer="mamba", d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, norm="layer", glu=False)
    cfg.pooling, cfg.d_input, cfg.d_output, cfg.input_kind = "none", 256, 256, "tokens"
    model = build_model(cfg).train()
    rng = np.random.default_rng(4)
    recordings = [0.3 * rng.standard_normal(size).astype(np.float32) for size in (200, 260, 180)]
    sources = waveform.window_sources(recordings, 48, 4, np.random.default_rng(5))
    inputs = waveform_analysis.far_context_inputs(recordings, sources, 48, near=6, scored=10, seed=6)
    result = waveform_analysis.bits_by_far_context(model, inputs)
    assert model.training and result["near"] == 6 and result["far"] == 32 and result["scored"] == 10
    ref_model = build_model(cfg).double()
    ref_model.load_state_dict(model.state_dict())
    rows = {row["far_context"]: row for row in result["conditions"]}
    expected = {}
    with torch.no_grad():
        for name in waveform_analysis.FAR_CONTEXTS:
            logits = ref_model.eval()(inputs[name])[:, -10:]
            nll = F.cross_entropy(logits.transpose(1, 2), inputs["targets"], reduction="none").mean(1) / math.log(2.0)
            expected[name] = nll
            torch.testing.assert_close(
                torch.tensor(result["per_window"][name], dtype=torch.float64), nll, rtol=1e-5, atol=1e-5
            )
            assert rows[name]["bits"] == pytest.approx(float(nll.mean()), abs=1e-5)
    diff = expected["other_voice"] - expected["none"]
    assert rows["other_voice"]["minus_none"] == pytest.approx(float(diff.mean()), abs=1e-5)
    assert rows["other_voice"]["se"] == pytest.approx(float(diff.std() / 2.0), abs=1e-5)  # 4 windows
    assert rows["none"]["minus_none"] == 0.0
    # "own" is the whole window: the same number as bits_by_context with the longest context
    windows = waveform.mulaw_windows(recordings, 48, 4, np.random.default_rng(5))
    kept = TensorDictDataset(**{k: v[inputs["kept"]] for k, v in windows.tensors.items()})
    by_context = bits_by_context(model, kept, contexts=[6, 38], scored=10)["contexts"]
    assert by_context[0]["bits"] == pytest.approx(rows["none"]["bits"], abs=1e-5)
    assert by_context[1]["bits"] == pytest.approx(rows["own"]["bits"], abs=1e-5)


def test_swap_cli_and_context_plot(monkeypatch, tmp_path, capsys):
    import json

    from torchssm.train.checkpoint import save_checkpoint

    fake_sentences(monkeypatch, clip_len=300)
    cfg = ModelConfig(layer="mamba", d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, norm="layer", glu=False)
    cfg.pooling = "none"
    task = {
        "name": "spoken_mulaw",
        "length": 128,
        "n_train": 2,
        "n_val": 0,
        "n_test": 3,
        "n_sentences": 8,
        "voice_split": "speakers",
        "recordings": "voices",
    }
    built = ModelConfig(**{**cfg.to_dict(), "d_input": 256, "d_output": 256, "input_kind": "tokens"})
    save_checkpoint(tmp_path / "run" / "last", build_model(built), config={"task": task, "model": cfg.to_dict()})
    out = tmp_path / "swap.json"
    args = ["swap", str(tmp_path / "run"), "--near", "16", "--scored", "16", "--n-test", "6", "--out", str(out)]
    assert waveform.main(args) == 0
    printed = capsys.readouterr().out
    assert "far context other_voice" in printed and "far context 96" in printed
    result = json.loads(out.read_text())
    assert [r["far_context"] for r in result["conditions"]] == list(waveform_analysis.FAR_CONTEXTS)
    assert result["n_windows"] + result["skipped"] == 6 and result["near"] == 16
    assert waveform.main(["swap", str(tmp_path / "run"), "--near", "100", "--scored", "28"]) == 2
    assert "near + scored must be below the window length 128" in capsys.readouterr().err
    context_out = tmp_path / "context.json"
    assert waveform.main(["context", str(tmp_path / "run"), "--scored", "32", "--out", str(context_out)]) == 0
    pytest.importorskip("matplotlib")
    figure = tmp_path / "context.png"
    argv = ["plot", str(context_out), str(context_out), "--labels", "a", "b", "--out", str(figure)]
    assert waveform.main(argv) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    positions_out = tmp_path / "positions.json"
    assert waveform.main(["positions", str(tmp_path / "run"), "--out", str(positions_out)]) == 0
    capsys.readouterr()
    assert waveform.main(["plot", str(context_out), str(positions_out), "--out", str(figure)]) == 2
    assert "results of one kind" in capsys.readouterr().err


def _fake_run(root, layer, length, n_train, batch_size, test_loss, steps_run, task="spoken_mulaw"):
    import json

    import yaml

    root.mkdir(parents=True)
    config = {
        "task": {"name": task, "length": length, "n_train": n_train},
        "model": {"layer": layer},
        "train": {"epochs": 1, "batch_size": batch_size},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    last = {"step": steps_run, "val_loss": 4.0, "test_loss": test_loss}
    (root / "result.json").write_text(json.dumps({"last": last, "best": last}))
    return str(root)


def test_lengths_cli(tmp_path, capsys):
    import json

    runs = [
        _fake_run(tmp_path / "a", "mamba", 4096, 2400, 16, 3.0 * math.log(2.0), 150),
        _fake_run(tmp_path / "b", "mamba", 65536, 150, 1, 4.0 * math.log(2.0), 149),  # merged last batch
        _fake_run(tmp_path / "c", "sashimi", 4096, 14400, 16, 5.0 * math.log(2.0), 900),
    ]
    out = tmp_path / "lengths.json"
    assert waveform.main(["lengths", *runs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SaShiMi        900 steps (900 run)  length   4096" in printed
    rows = json.loads(out.read_text())["runs"]
    assert [(r["layer"], r["length"], r["steps"], r["steps_run"]) for r in rows] == [
        ("mamba", 4096, 150, 150),
        ("mamba", 65536, 150, 149),
        ("sashimi", 4096, 900, 900),
    ]
    assert [r["test_bits"] for r in rows] == pytest.approx([3.0, 4.0, 5.0])
    assert rows[0]["val_bits"] == pytest.approx(4.0 / math.log(2.0))
    other = _fake_run(tmp_path / "d", "mamba", 4096, 10, 1, 1.0, 10, task="spoken_commands")
    assert waveform.main(["lengths", other]) == 2
    assert "a run of task 'spoken_commands', expected spoken_mulaw" in capsys.readouterr().err
    assert waveform.main(["lengths", str(tmp_path / "missing")]) == 2
    assert "no config.yaml in" in capsys.readouterr().err
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "config.yaml").write_text("task: {name: spoken_mulaw}\n")
    (tmp_path / "e" / "result.json").write_text('{"last": {"step": 3}}')
    assert waveform.main(["lengths", str(tmp_path / "e")]) == 2
    assert "lack 'layer' (expected a spoken_mulaw run)" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    figure = tmp_path / "lengths.png"
    assert waveform.main(["lengths", *runs, "--figure", str(figure)]) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one run summary"):
        waveform_analysis.plot_by_length([], figure)
