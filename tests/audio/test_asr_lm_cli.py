"""torchssm transcribe --lm: the character language model fused into a CTC checkpoint's decoding."""

import numpy as np
import pytest
import torch

from torchssm.cli import main

soundfile = pytest.importorskip("soundfile")


def _checkpoints(tmp_path):
    from torchssm.audio.asr import ASRConfig, CTCRecognizer, SambaASR
    from torchssm.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = ASRConfig(d_model=16, n_layers=1, n_mels=16, layer_kwargs={"d_state": 4})
    ctc = CTCRecognizer(cfg)
    save_checkpoint(tmp_path / "ctc" / "last", ctc, config={"model": cfg.to_dict()})
    samba = ASRConfig(kind="samba", d_model=16, n_layers=1, n_mels=16, layer_kwargs={"d_state": 4})
    save_checkpoint(tmp_path / "samba" / "last", SambaASR(samba), config={"model": samba.to_dict()})
    wav = tmp_path / "noise.wav"
    audio = (0.1 * np.random.default_rng(0).standard_normal(12000)).astype(np.float32)
    soundfile.write(wav, audio, 16000, subtype="FLOAT")
    return ctc.eval(), torch.from_numpy(audio), wav


def _fake_lm(monkeypatch):
    """A small character LM that ``lm_from_checkpoint`` returns, and the list of the orders it was asked for."""
    from torchssm.audio import lm as lm_module

    lm = lm_module.CharNGramLM(["the cat sat on the mat", "a cat"], 3)
    calls: list = []

    def fake(path, order, data_dir=None, extra_texts=()):
        calls.append(order if not extra_texts else (order, list(extra_texts)))
        return lm

    monkeypatch.setattr(lm_module, "lm_from_checkpoint", fake)
    return lm, calls


def test_transcribe_lm_flag(tmp_path, capsys, monkeypatch):
    model, audio, wav = _checkpoints(tmp_path)
    lm, calls = _fake_lm(monkeypatch)
    capsys.readouterr()
    args = ["transcribe", "--checkpoint", str(tmp_path / "ctc"), str(wav), "--beam", "4", "--lm", "3"]
    assert main([*args, "--lm-alpha", "2.0", "--lm-beta", "0.5"]) == 0
    expected = model.transcribe(audio[None], torch.tensor([len(audio)]), beam=4, lm=lm, alpha=2.0, beta=0.5)[0]
    assert capsys.readouterr().out == f"{wav}\t{expected}\n" and calls == [3]
    assert main([*args, "--stream"]) == 2
    assert "--lm decodes offline" in capsys.readouterr().err
    samba = ["transcribe", "--checkpoint", str(tmp_path / "samba"), str(wav), "--lm", "3", "--lm-alpha", "100"]
    assert main(samba) == 0  # the language model spells with so large a weight
    words = capsys.readouterr().out.split("\t")[1].split()
    assert len(words) > 1 and set(words[:-1]) <= {"the", "cat", "sat", "on", "mat", "a"}  # the last: cut at max_tokens


def test_transcribe_lm_text(tmp_path, capsys, monkeypatch):
    """--lm-text: the files' sentences (read_lm_text) go to the language model with the run's transcripts."""
    _, _, wav = _checkpoints(tmp_path)
    _, calls = _fake_lm(monkeypatch)
    (tmp_path / "a.txt").write_text("THE CAT  SAT\n\nA MAT\n")
    (tmp_path / "b.txt").write_text("on the mat\n")
    capsys.readouterr()
    args = ["transcribe", "--checkpoint", str(tmp_path / "ctc"), str(wav)]
    assert main([*args, "--lm", "3", "--lm-text", str(tmp_path / "a.txt"), "--lm-text", str(tmp_path / "b.txt")]) == 0
    assert calls == [(3, ["the cat sat", "a mat", "on the mat"])]
    assert main([*args, "--lm-text", str(tmp_path / "a.txt")]) == 2
    assert "--lm-text adds sentences to a language model: add --lm" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("fine\nnot 4 this\n")
    assert main([*args, "--lm", "3", "--lm-text", str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt:2: characters ['4'] outside the alphabet" in capsys.readouterr().err


def test_read_lm_text_errors(tmp_path):
    from torchssm.audio.lm import read_lm_text

    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no sentence"):
        read_lm_text(tmp_path / "empty.txt")
    (tmp_path / "ok.txt").write_text("It's  Fine\n")
    assert read_lm_text(tmp_path / "ok.txt") == ["it's fine"]


def test_transcribe_lm_needs_the_runs_task(tmp_path, capsys):
    _, _, wav = _checkpoints(tmp_path)  # saved without a task in the config
    capsys.readouterr()
    assert main(["transcribe", "--checkpoint", str(tmp_path / "ctc"), str(wav), "--lm", "5"]) == 2
    assert "no task in its config" in capsys.readouterr().err


def _transcribe_args(*flags):
    from torchssm.cli import build_parser

    return build_parser().parse_args(["transcribe", "--checkpoint", "run", "my.wav", *flags])


def test_transcribe_defaults_are_the_documented_val_choice():
    """`transcribe --lm` alone decodes with the setting docs/speech.md shows and RESULTS.md records as chosen on val."""
    import shlex
    from pathlib import Path

    from torchssm.audio.cli import LM_DEFAULTS, decoding_settings

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "speech.md").read_text()
    [line] = [x for x in doc.splitlines() if x.startswith("torchssm transcribe") and "# the defaults:" in x]
    command, _, comment = line.partition("#")
    assert shlex.split(command)[-1] == "--lm"  # the documented command gives --lm alone ...
    flags = shlex.split(comment.split(":", 1)[1])  # ... and says what that means
    documented = decoding_settings(_transcribe_args(*flags))
    assert decoding_settings(_transcribe_args("--lm")) == documented == (16, 10, 1.2, 3.0)
    assert documented == (LM_DEFAULTS["beam"], LM_DEFAULTS["order"], LM_DEFAULTS["alpha"], LM_DEFAULTS["beta"])
    # RESULTS.md: session 12's grid (2) on val for the offline preset chose this setting
    assert "Test with the chosen setting (beam 16, order 10, alpha 1.2, beta 3)" in (root / "RESULTS.md").read_text()
    # without --lm: greedy, no fusion; given flags win over the defaults
    assert decoding_settings(_transcribe_args()) == (1, 0, 0.0, 0.0)
    assert decoding_settings(_transcribe_args("--beam", "4")) == (4, 0, 0.0, 0.0)
    assert decoding_settings(_transcribe_args("--lm", "6", "--beam", "8", "--lm-beta", "2")) == (8, 6, 1.2, 2.0)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lm-alpha", "1.0"], "--lm-alpha / --lm-beta weigh a language model"),
        (["--lm-beta", "3"], "--lm-alpha / --lm-beta weigh a language model"),
        (["--lm", "-2"], "--lm ORDER must be >= 1"),
        (["--beam", "0"], "--beam must be >= 1"),
        (["--lm", "--stream"], "--lm decodes offline"),
        (["--stream", "--beam", "4"], "--stream decodes greedily"),
    ],
)
def test_transcribe_rejects_settings_it_would_ignore(tmp_path, capsys, flags, message):
    _, _, wav = _checkpoints(tmp_path)
    capsys.readouterr()
    assert main(["transcribe", "--checkpoint", str(tmp_path / "ctc"), str(wav), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_transcribe_lm_alone_decodes_with_the_defaults(tmp_path, capsys, monkeypatch):
    model, audio, wav = _checkpoints(tmp_path)
    lm, calls = _fake_lm(monkeypatch)
    capsys.readouterr()
    assert main(["transcribe", "--checkpoint", str(tmp_path / "ctc"), "--lm", "--", str(wav)]) == 0
    expected = model.transcribe(audio[None], torch.tensor([len(audio)]), beam=16, lm=lm, alpha=1.2, beta=3.0)[0]
    assert capsys.readouterr().out == f"{wav}\t{expected}\n" and calls == [10]


def test_speech_lm_text_writes_the_runs_extra_text(tmp_path, capsys, monkeypatch):
    from _speech_common import tiny_sentences

    from torchssm.audio import prose
    from torchssm.audio.lm import read_lm_text
    from torchssm.audio.synthetic import sentence_texts
    from torchssm.train.checkpoint import save_checkpoint

    tiny_sentences(monkeypatch)
    docs = ["Alpha beta gamma. Delta kappa.", "Omega sigma theta zeta. Lambda."]
    monkeypatch.setattr(prose, "stdlib_docstrings", lambda: iter(docs))
    ctc, _, _ = _checkpoints(tmp_path)
    task = {"name": "spoken_sentences", "n_train": 60, "n_val": 10, "n_test": 20, "n_heldout_words": 0, "seed": 0}
    save_checkpoint(tmp_path / "run" / "last", ctc, config={"model": ctc.cfg.to_dict(), "task": task})
    out = tmp_path / "lm.txt"
    assert (
        main(
            ["speech", "lm-text", "--checkpoint", str(tmp_path / "run"), "--out", str(out), "--data-dir", str(tmp_path)]
        )
        == 0
    )
    texts = sentence_texts(tmp_path, seed=0, n_train=60, n_val=10, n_test=20, n_heldout_words=0)
    expected = prose.language_model_text(texts)
    assert expected and read_lm_text(out) == expected and f"{len(expected)} sentences" in capsys.readouterr().out
    assert main(["speech", "lm-text", "--checkpoint", str(tmp_path / "ctc"), "--out", str(tmp_path / "x.txt")]) == 2
    assert "was not trained on spoken_sentences" in capsys.readouterr().err and not (tmp_path / "x.txt").exists()
    package = tmp_path / "pkgs" / "tsm_cli_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Package prose for the model. Another plain line."""\n')
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    out_pk = tmp_path / "lm_pk.txt"
    run = ["speech", "lm-text", "--checkpoint", str(tmp_path / "run"), "--data-dir", str(tmp_path)]
    assert main([*run, "--packages", "tsm_cli_pkg", "--out", str(out_pk)]) == 0
    assert read_lm_text(out_pk) == sorted(expected + ["package prose for the model", "another plain line"])
    assert main([*run, "--packages", "tsm_cli_pkg", "--no-stdlib", "--out", str(out_pk)]) == 0
    assert read_lm_text(out_pk) == ["another plain line", "package prose for the model"]
    capsys.readouterr()
    assert main([*run, "--packages", "tsm_no_such_pkg", "--out", str(tmp_path / "z.txt")]) == 2
    assert "package 'tsm_no_such_pkg' is not installed" in capsys.readouterr().err
    assert not (tmp_path / "z.txt").exists()
    monkeypatch.setattr(prose, "stdlib_docstrings", lambda: iter(["Call f(x) twice."]))  # nothing plain left
    assert main([*run, "--out", str(tmp_path / "y.txt")]) == 2
    assert "no docstring sentence of at most 60 words" in capsys.readouterr().err and not (tmp_path / "y.txt").exists()
