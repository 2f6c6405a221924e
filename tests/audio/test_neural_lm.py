"""Neural LM rescoring of a CTC decoding's n-best lists: audio.neural_lm, tuned_decoding(rescore_lm=),
speech lm-corpus and speech decode --rescore-lm."""

import json

import pytest
import torch
import torch.nn.functional as F
from _speech_common import saved_toy_runs, tiny_ctc_recognizers, toy_asr_task

from torchssm.audio import decoding
from torchssm.audio.asr import best_rescored
from torchssm.audio.ctc import char_error_rate
from torchssm.audio.lm import CharNGramLM, distinct_sentences, lm_from_task
from torchssm.audio.neural_lm import (
    NEURAL_LM_WEIGHTS,
    lm_scored_lists,
    load_rescoring_lm,
    sentence_log_probs,
    write_lm_corpus,
)
from torchssm.audio.text import CharVocabulary
from torchssm.cli import main
from torchssm.models.lm import CausalLM, LMConfig


def _byte_lm(seed=0, vocab_size=256):
    torch.manual_seed(seed)
    return CausalLM(LMConfig(layer="mamba", d_model=16, n_layer=1, vocab_size=vocab_size, layer_kwargs={"d_state": 4}))


def test_distinct_sentences_are_what_the_ngram_counts():
    task = toy_asr_task()  # "a" and "b", each said four times
    assert distinct_sentences(["x y", "z", "x y"], ["z", "w"]) == ["x y", "z", "w"]
    counted = lm_from_task(task, 2, ["a b"])
    by_hand = CharNGramLM(["a", "b", "a b"], 2)
    assert counted.log_prob("a b a") == by_hand.log_prob("a b a")


def test_write_lm_corpus_shards_every_sentence_once(tmp_path):
    sentences = [f"sentence {i}" for i in range(23)]
    paths = write_lm_corpus(sentences, tmp_path / "c", shards=5, seed=3)
    assert [p.name for p in paths] == [f"lm-corpus-{k:03d}.txt" for k in range(5)]
    lines = [line for p in paths for line in p.read_text().splitlines()]
    assert sorted(lines) == sorted(sentences) and len(lines) == 23
    assert [len(p.read_text().splitlines()) for p in paths] == [5, 5, 5, 4, 4]  # round robin
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [p.name for p in paths]  # no temporary files left
    again = write_lm_corpus(sentences, tmp_path / "d", shards=5, seed=3)
    assert [p.read_text() for p in again] == [p.read_text() for p in paths]  # the seed fixes the order
    other = write_lm_corpus(sentences, tmp_path / "e", shards=5, seed=4)
    assert [p.read_text() for p in other] != [p.read_text() for p in paths]
    with pytest.raises(ValueError, match="already holds a corpus"):
        write_lm_corpus(sentences, tmp_path / "c", shards=5)
    with pytest.raises(ValueError, match=r"shards must be an int >= 3"):
        write_lm_corpus(sentences, tmp_path / "f", shards=2)
    with pytest.raises(ValueError, match="2 sentences cannot fill 3 shards"):
        write_lm_corpus(["a", "b"], tmp_path / "g", shards=3)


def test_sentence_log_probs_are_the_models_next_byte_log_probabilities():
    model = _byte_lm().double().eval()
    texts = ["a b", "the longest one of these", "", "zz z"]
    got = sentence_log_probs(model, texts, batch_size=3)  # padded batches of different lengths
    for text, value in zip(texts, got.tolist()):
        ids = torch.tensor([list(("\n" + text + "\n").encode())])
        with torch.no_grad():
            logp = F.log_softmax(model(ids[:, :-1])[..., :256], -1)
        expected = logp.gather(-1, ids[:, 1:, None]).sum().item()  # no padding at all
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert got.dtype == torch.float64 and (got < 0).all()
    assert sentence_log_probs(model, texts, batch_size=1).tolist() == pytest.approx(got.tolist(), rel=1e-9)


def test_load_rescoring_lm(tmp_path):
    from torchssm.models.pretrained import save_pretrained
    from torchssm.train.checkpoint import save_checkpoint

    model = _byte_lm()
    save_pretrained(model, tmp_path / "run" / "best")
    loaded = load_rescoring_lm(tmp_path / "run")  # a run directory: its best checkpoint
    assert isinstance(loaded, CausalLM) and not loaded.training
    ids = torch.tensor([[10, 32, 97]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model.eval()(ids))
    save_pretrained(_byte_lm(vocab_size=64), tmp_path / "small")
    with pytest.raises(ValueError, match="vocabulary of 64 tokens; rescoring reads characters as bytes"):
        load_rescoring_lm(tmp_path / "small")
    (a,) = tiny_ctc_recognizers(1)
    save_checkpoint(tmp_path / "ctc", a, config={"model": a.cfg.to_dict()})
    with pytest.raises(ValueError, match=r"is not a saved language model \(no config.json\); rescoring needs a causal"):
        load_rescoring_lm(tmp_path / "ctc")


def test_tuned_decoding_rescores_the_chosen_lists_with_the_neural_lm(tmp_path, monkeypatch):
    runs = saved_toy_runs(tmp_path, monkeypatch)
    grid = {"orders": (2,), "alphas": (0.0, 0.5), "betas": (1.0,), "beam": 3}
    model = _byte_lm(seed=1).eval()
    plain = decoding.tuned_decoding(runs, log=str, **grid)
    out = decoding.tuned_decoding(runs, log=str, rescore_lm=model, **grid)
    assert out["setting"] == plain["setting"] and out["chosen_rule"] == plain["chosen_rule"]
    assert out["test_search"]["cer"] == plain["test"]["cer"]  # the search's own transcripts, as without rescoring
    rows = out["neural_lm"]["rows"]
    assert [r["weight"] for r in rows] == list(NEURAL_LM_WEIGHTS)
    assert rows[0]["cer"] == plain["analysis"]["val"]["cer"]  # weight 0: the search alone
    chosen = min(rows, key=lambda r: (r["cer"], r["wer"], r["weight"]))["weight"]
    assert out["neural_lm"]["weight"] == chosen
    loaded = decoding.LoadedRuns(runs)  # the lists by hand, read at the chosen weight
    vocab = CharVocabulary()
    lists = lm_scored_lists(model, loaded.scored_nbest("test", out["chosen_rule"], out["setting"]), vocab)
    hyps = [vocab.decode(best_rescored(entries, chosen)) for entries in lists]
    refs = [t["ref"] for t in out["test_transcripts"]]
    assert [t["hyp"] for t in out["test_transcripts"]] == hyps
    assert [t["search"] for t in out["test_transcripts"]] == [t["hyp"] for t in plain["test_transcripts"]]
    assert out["test"]["cer"] == char_error_rate(refs, hyps)
    forced = decoding.tuned_decoding(runs, log=str, rescore_lm=model, lm_weights=(50.0,), **grid)
    by_lm = [vocab.decode(max(entries, key=lambda e: e[1] + 50.0 * e[2])[0]) for entries in lists]
    assert [t["hyp"] for t in forced["test_transcripts"]] == by_lm  # the weight is applied as stated
    assert by_lm != [t["search"] for t in forced["test_transcripts"]]  # and it changes the choice
    assert forced["neural_lm"]["lm"] == "CausalLM"
    wide = decoding.tuned_decoding(runs, log=str, rescore_lm=model, beams=(4,), **grid)  # val's lists kept per width
    at = wide["setting"]
    chosen_row = next(r for r in wide["beam_rows"] if r["beam"] == at["beam"])
    assert wide["neural_lm"]["rows"][0]["cer"] == chosen_row["cer"]  # weight 0: the search at the chosen width
    lists = lm_scored_lists(model, loaded.scored_nbest("test", wide["chosen_rule"], at), vocab)
    w = wide["neural_lm"]["weight"]
    assert [t["hyp"] for t in wide["test_transcripts"]] == [vocab.decode(best_rescored(e, w)) for e in lists]


def test_speech_lm_corpus_and_decode_rescore_lm_cli(tmp_path, monkeypatch, capsys):
    from torchssm.models.pretrained import save_pretrained

    runs = [str(r) for r in saved_toy_runs(tmp_path, monkeypatch)]
    lm_text = tmp_path / "lm.txt"
    lm_text.write_text("a b a\nb a b\na\n")
    corpus = tmp_path / "corpus"
    args = ["speech", "lm-corpus", "--checkpoint", runs[0], "--lm-text", str(lm_text), "--out", str(corpus)]
    assert main([*args, "--shards", "3"]) == 0
    assert "4 distinct sentences" in capsys.readouterr().out  # "a", "b" (the toy's), "a b a", "b a b"
    assert sorted(line for p in corpus.iterdir() for line in p.read_text().splitlines()) == ["a", "a b a", "b", "b a b"]
    assert main([*args, "--shards", "3"]) == 2
    assert "already holds a corpus" in capsys.readouterr().err
    save_pretrained(_byte_lm(seed=2), tmp_path / "nlm")
    grid = ["--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "3"]
    out = tmp_path / "decode.json"
    assert main(["speech", "decode", *runs, *grid, "--rescore-lm", str(tmp_path / "nlm"), "--out", str(out)]) == 0
    printed, saved = capsys.readouterr().out, json.loads(out.read_text())
    assert saved["neural_lm"]["lm"] == str(tmp_path / "nlm")
    assert f"chosen: neural LM weight {saved['neural_lm']['weight']}\n" in printed
    assert f"test, the search alone (decoded once): CER {saved['test_search']['cer']:.4f}" in printed
    assert "val, neural LM weight 1.5: CER" in printed
    assert main(["speech", "decode", *runs, *grid, "--rescore-lm", runs[0]]) == 2
    assert "is not a saved language model (no config.json)" in capsys.readouterr().err


def test_transcribe_rescore_lm(tmp_path, monkeypatch, capsys):
    from torchssm.audio.asr_runs import load_recognizer
    from torchssm.audio.ctc import prefix_beam_search
    from torchssm.audio.neural_lm import rescore_with_lm
    from torchssm.models.pretrained import save_pretrained

    soundfile = pytest.importorskip("soundfile")
    runs = [str(r) for r in saved_toy_runs(tmp_path, monkeypatch)]
    save_pretrained(_byte_lm(seed=2), tmp_path / "nlm")
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, toy_asr_task().test[1]["audio"], 16000, subtype="FLOAT")
    x = torch.from_numpy(soundfile.read(wav, dtype="float32")[0])[None]
    n = torch.tensor([x.shape[1]])
    model, neural = load_recognizer(runs[0]), load_rescoring_lm(tmp_path / "nlm")
    assert rescore_with_lm(model, x, n, neural, 0.0, beam=3) == model.transcribe(x, n, beam=3)  # the search alone
    with torch.no_grad():
        e = model(x, n)[0, : int(model.frame_lengths(n))]
    found = prefix_beam_search(e, 3)
    scores = sentence_log_probs(neural, [model.vocab.decode(y) for y, _ in found])
    by_hand = model.vocab.decode(max(zip(found, scores.tolist()), key=lambda f: f[0][1] + 50.0 * f[1])[0][0])
    assert rescore_with_lm(model, x, n, neural, 50.0, beam=3) == [by_hand]
    args = ["transcribe", "--checkpoint", runs[0], str(wav), "--beam", "3", "--rescore-lm", str(tmp_path / "nlm")]
    assert main([*args, "--rescore-lm-weight", "50"]) == 0
    assert capsys.readouterr().out == f"{wav}\t{by_hand}\n"
    for extra, message in (
        ([], "--rescore-lm needs --rescore-lm-weight W"),
        (["--rescore-lm-weight", "-1"], "the neural LM's weight must be >= 0"),
        (["--rescore-lm-weight", "1", "--stream", "--beam", "1"], "not with --stream or --rescore"),
    ):
        assert main([*args, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["transcribe", "--checkpoint", runs[0], str(wav), "--rescore-lm-weight", "1"]) == 2
    assert "--rescore-lm-weight weighs a neural LM: add --rescore-lm LM" in capsys.readouterr().err
