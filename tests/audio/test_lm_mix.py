"""Interpolated character language models (text of another domain mixed in) and their weight chosen on val."""

import json
import math

import numpy as np
import pytest
import torch
from _speech_common import saved_toy_runs

from torchssm.audio import decoding
from torchssm.audio.ctc import prefix_beam_search
from torchssm.audio.lm import CharNGramLM, InterpolatedLM, best_mix_weight, interpolated
from torchssm.cli import main

IN_DOMAIN = ["the cat sat on the mat", "a cat", "return the value of the cat", "set the mat"]
OTHER = ["tensors of any shape", "the shape of the tensor", "return a new tensor", "quiz"]


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.8, 1.0])
def test_the_mixture_is_the_weighted_sum_of_the_models_probabilities(weight):
    a, b = CharNGramLM(IN_DOMAIN, 3), CharNGramLM(OTHER, 5)
    mix = InterpolatedLM([a, b], [weight, 1 - weight])
    assert mix.order == 5 and mix.n_symbols == a.n_symbols and mix.eos == a.eos
    for context in ["", "t", "the ca", "tens", "xyzzy the "]:
        ids = a.encode(context)
        expected = weight * np.exp(a.next_log_probs(ids)) + (1 - weight) * np.exp(b.next_log_probs(ids))
        got = np.exp(mix.next_log_probs(ids))
        torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), rtol=1e-12, atol=0)
        assert got.sum() == pytest.approx(1.0, abs=1e-12)
        assert mix.next_log_probs(ids) is mix.next_log_probs(ids)  # cached by context
    text = "the tensor sat"
    p_each = weight * np.exp(a.symbol_log_probs(text)) + (1 - weight) * np.exp(b.symbol_log_probs(text))
    assert mix.bits_per_char([text]) == pytest.approx(-np.log2(p_each).mean(), abs=1e-12)


def test_best_mix_weight_minimises_held_out_bits_and_reads_each_model_once():
    a, b = CharNGramLM(IN_DOMAIN, 3), CharNGramLM(OTHER, 3)
    held_out = ["the shape of the cat", "a new tensor"]  # both domains: a mixture beats either model
    weight, rows = best_mix_weight(a, b, held_out, weights=(0.0, 0.25, 0.5, 0.75, 1.0))
    assert [r["weight"] for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for row in rows:  # each row is the mixture's own cross-entropy, computed the long way
        mix = interpolated(a, b, row["weight"]) if row["weight"] > 0 else InterpolatedLM([a, b], [0.0, 1.0])
        assert row["bits_per_char"] == pytest.approx(mix.bits_per_char(held_out), abs=1e-12)
    assert weight == min(rows, key=lambda r: r["bits_per_char"])["weight"] and 0.0 < weight < 1.0
    assert rows[-1]["bits_per_char"] == pytest.approx(a.bits_per_char(held_out), abs=1e-12)
    useless = CharNGramLM(["zzz qqq", "qqq zzz"], 3)  # no help on held-out text of the first domain: weight 1
    assert best_mix_weight(a, useless, ["the cat sat"])[0] == 1.0
    assert interpolated(a, useless, 1.0) is a


def test_a_mixture_drives_the_prefix_beam_search_as_its_model_would():
    torch.manual_seed(0)
    a, b = CharNGramLM(IN_DOMAIN, 3), CharNGramLM(OTHER, 3)
    emissions = torch.randn(12, a.n_symbols).log_softmax(-1).double()
    plain = prefix_beam_search(emissions, 4, lm=a, alpha=0.7, beta=1.0)
    assert prefix_beam_search(emissions, 4, lm=InterpolatedLM([a, b], [1.0, 0.0]), alpha=0.7, beta=1.0) == plain
    mixed = prefix_beam_search(emissions, 4, lm=InterpolatedLM([a, b], [0.5, 0.5]), alpha=0.7, beta=1.0)
    assert len(mixed) == len(plain) and all(math.isfinite(score) for _, score in mixed)


def test_bad_mixtures_are_one_line_errors():
    a = CharNGramLM(IN_DOMAIN, 2)
    with pytest.raises(ValueError, match="one weight per model, got 2 models, 1 weights"):
        InterpolatedLM([a, a], [1.0])
    with pytest.raises(ValueError, match="must be >= 0 and sum to 1, got \\[0.5, 0.6\\]"):
        InterpolatedLM([a, a], [0.5, 0.6])
    with pytest.raises(ValueError, match="share one alphabet"):
        InterpolatedLM([a, CharNGramLM(["ab"], 2, alphabet="ab")], [0.5, 0.5])
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\], got \\[1.5\\]"):
        best_mix_weight(a, a, ["the cat"], weights=(1.5,))
    with pytest.raises(ValueError, match="needs held-out texts"):
        best_mix_weight(a, a, [])


def test_tuned_decoding_and_speech_decode_mix_in_the_other_text(tmp_path, monkeypatch, capsys):
    runs = saved_toy_runs(tmp_path, monkeypatch)
    grid = {"orders": (2,), "alphas": (0.0, 0.5), "betas": (1.0,), "beam": 2}
    other = ["a a a", "b b", "a b b a"]
    out = decoding.tuned_decoding(runs, log=str, mix_texts=other, **grid)
    loaded = decoding.LoadedRuns(runs, mix_texts=other)
    loaded.lm(2)  # the same choice, made the long way: the val transcripts' bits per character
    assert out["lm_mix"] == loaded.mix and set(out["lm_mix"]) == {2}
    in_domain = CharNGramLM(dict.fromkeys(loaded.references("train")), 2)
    weight, rows = best_mix_weight(in_domain, CharNGramLM(other, 2), loaded.references("val"))
    assert out["lm_mix"][2] == {"weight": weight, "rows": rows}
    assert "lm_mix" not in decoding.tuned_decoding(runs, log=str, **grid)
    mix_file = tmp_path / "other.txt"
    mix_file.write_text("\n".join(other) + "\n")
    cli = ["speech", "decode", *map(str, runs), "--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "2"]
    assert main([*cli, "--lm-mix-text", str(mix_file), "--out", str(tmp_path / "d.json")]) == 0
    saved = json.loads((tmp_path / "d.json").read_text())
    assert saved["lm_mix"]["2"]["weight"] == weight and saved["test"]["cer"] == out["test"]["cer"]
    assert f"order 2: in-domain weight {weight} against the --lm-mix-text model" in capsys.readouterr().out
    mix_file.write_text("Caf\u00e9 #1\n")
    assert main([*cli, "--lm-mix-text", str(mix_file)]) == 2
    assert "outside the alphabet" in capsys.readouterr().err
