"""CTC ensembles: ctc.combine_emissions, asr.CTCEnsemble, lm_grid / evaluate_checkpoint / transcribe with several
checkpoints."""

import numpy as np
import pytest
import torch
from _speech_common import TINY_CTC, saved_toy_runs, tiny_ctc_recognizers, toy_asr_task

from torchssm.audio import asr_runs, decoding
from torchssm.audio.asr import ASRConfig, CTCEnsemble, SambaASR
from torchssm.audio.asr_eval import evaluate_asr
from torchssm.audio.asr_runs import load_ctc_ensemble
from torchssm.audio.ctc import combine_emissions, greedy_decode
from torchssm.audio.decoding import evaluate_checkpoint, lm_grid
from torchssm.audio.lm import CharNGramLM
from torchssm.cli import main
from torchssm.train.checkpoint import save_checkpoint


def _emissions(k, *shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.log_softmax(3 * torch.randn(*shape, generator=g, dtype=torch.float64), -1) for _ in range(k)]


def test_combine_emissions_is_the_stated_mean():
    e = _emissions(3, 2, 7, 5)  # three models, (b, t, v)
    p = torch.stack([x.exp() for x in e])
    torch.testing.assert_close(combine_emissions(e, "prob"), (p.mean(0)).log())
    geometric = torch.stack(e).mean(0).exp()
    torch.testing.assert_close(combine_emissions(e, "logprob"), (geometric / geometric.sum(-1, keepdim=True)).log())
    for rule in ("prob", "logprob"):
        out = combine_emissions(e, rule)
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 7, dtype=torch.float64))  # distributions again
        torch.testing.assert_close(combine_emissions([e[0], e[0]], rule), e[0])  # a model with itself: itself
        assert combine_emissions(e[:1], rule) is e[0]


def test_combine_emissions_errors():
    e = _emissions(2, 4, 5)
    with pytest.raises(ValueError, match="combine must be one of"):
        combine_emissions(e, "max")
    with pytest.raises(ValueError, match="at least one model"):
        combine_emissions([])
    with pytest.raises(ValueError, match="one shape"):
        combine_emissions([e[0], e[1][:3]])


def test_ensemble_forward_and_transcribe():
    a, b = tiny_ctc_recognizers()
    audio = 0.1 * torch.randn(3, 6000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([6000, 4000, 2500])
    with torch.no_grad():
        for rule in ("prob", "logprob"):
            ens = CTCEnsemble([a, b], combine=rule)
            combined = ens(audio, lengths)
            torch.testing.assert_close(combined, combine_emissions([a(audio, lengths), b(audio, lengths)], rule))
            frames = ens.frame_lengths(lengths).tolist()
            expected = [ens.vocab.decode(greedy_decode(c[:n])) for c, n in zip(combined, frames)]
            assert ens.transcribe(audio, lengths) == expected
            assert CTCEnsemble([a, a], rule).transcribe(audio, lengths, beam=3) == a.transcribe(audio, lengths, beam=3)


def test_ensemble_rejects_what_it_cannot_combine():
    a, b = tiny_ctc_recognizers()
    (slow,) = tiny_ctc_recognizers(1, subsampling=2)
    with pytest.raises(ValueError, match="one frame rate"):
        CTCEnsemble([a, slow])
    with pytest.raises(
        ValueError, match=r"CTC recognisers and hybrid Samba-ASR CTC heads \(SambaCTCHead\) only, got Sam"
    ):
        CTCEnsemble([a, SambaASR(ASRConfig(kind="samba", **TINY_CTC))])  # a hybrid joins by its SambaCTCHead
    with pytest.raises(ValueError, match="at least one"):
        CTCEnsemble([])
    with pytest.raises(ValueError, match="combine must be one of"):
        CTCEnsemble([a, b], combine="vote")


def _saved_pair(tmp_path):
    a, b = tiny_ctc_recognizers()
    for name, model in (("a", a), ("b", b)):
        save_checkpoint(tmp_path / name / "last", model, config={"model": model.cfg.to_dict()})
    return a, b


def test_lm_grid_and_evaluate_checkpoint_take_several_runs(tmp_path, monkeypatch):
    a, b = _saved_pair(tmp_path)
    task = toy_asr_task()
    asked: list = []

    def fake_task(path, data_dir=None, val_heldout=None):
        asked.append(path)
        return path, task

    monkeypatch.setattr(asr_runs, "checkpoint_task", fake_task)
    runs = [tmp_path / "a", tmp_path / "b"]
    for rule in ("prob", "logprob"):
        plain = evaluate_asr(CTCEnsemble([a, b], rule), task.test, ["b"], beam=2)
        got = evaluate_checkpoint(runs, "test", beam=2, combine=rule)
        assert got["cer"] == plain["cer"] and got["examples"] == plain["examples"]
        grid = lm_grid(runs, orders=(2,), alphas=(0.0,), betas=(0.0,), beam=2, split="test", combine=rule, log=str)
        assert grid["no_lm"]["cer"] == pytest.approx(plain["cer"]) and grid["rows"][0]["cer"] == pytest.approx(
            plain["cer"]
        )
    assert set(asked) == {runs[0]}  # the data (and the language model's texts) come from the first run
    self_pair = evaluate_checkpoint([runs[0], runs[0]], "test", beam=2)
    assert self_pair["examples"] == evaluate_checkpoint(runs[0], "test", beam=2)["examples"]
    assert isinstance(load_ctc_ensemble(runs), CTCEnsemble)
    with pytest.raises(ValueError, match="empty list"):
        evaluate_checkpoint([], "test")


def test_an_ensemble_needs_runs_of_one_task(tmp_path):
    a, _ = tiny_ctc_recognizers()
    tasks = {
        "v1": {"name": "spoken_sentences", "n_train": 4200, "seed": 0},
        "v2": {"name": "spoken_sentences", "n_train": 4200, "seed": 0, "voices_per_sentence": 2},
        "more_voices": {"name": "spoken_sentences", "n_train": 4200, "seed": 0, "extra_train_variants": ["klatt"]},
        "accents": {"name": "spoken_sentences", "n_train": 4200, "seed": 0, "extra_train_accents": ["de", "nl"]},
        "virtual_accents": {"name": "spoken_sentences", "n_train": 4200, "seed": 0, "accent_augment": 0.5},
        "other_seed": {"name": "spoken_sentences", "n_train": 4200, "seed": 1},
        "defaults_written": {"name": "spoken_sentences", "n_train": 4200, "seed": 0, "n_val": 100, "snr_db": None},
        "other_val": {"name": "spoken_sentences", "n_train": 4200, "seed": 0, "n_val": 50},
    }
    for name, task in tasks.items():
        save_checkpoint(tmp_path / name / "last", a, config={"model": a.cfg.to_dict(), "task": task})
    same_sentences = [
        tmp_path / name for name in ("v1", "v2", "more_voices", "accents", "virtual_accents", "defaults_written")
    ]
    asr_runs.check_same_sentences(same_sentences)  # they differ in the training voices only
    with pytest.raises(ValueError, match=r"must share one task: task.seed is 0 in .*v1 but 1 in .*other_seed"):
        asr_runs.check_same_sentences([tmp_path / "v1", tmp_path / "other_seed"])
    with pytest.raises(ValueError, match=r"task.n_val is 100 in .*v1 but 50 in .*other_val"):  # the default, filled in
        asr_runs.check_same_sentences([tmp_path / "v1", tmp_path / "other_val"])
    with pytest.raises(ValueError, match="must share one task"):
        evaluate_checkpoint([tmp_path / "v2", tmp_path / "other_seed"], "test")
    wav = tmp_path / "x.wav"
    soundfile.write(wav, np.zeros(4000, dtype=np.float32), 16000)
    args = ["transcribe", "--checkpoint", str(tmp_path / "v1"), "--checkpoint", str(tmp_path / "other_seed"), str(wav)]
    assert main([*args, "--lm", "3"]) == 2  # its language model would be the first run's
    assert main(args) == 0  # without one, the models' own posteriors only


def test_analyse_recognizer_decodes_an_ensemble_with_the_language_model(tmp_path, monkeypatch):
    a, b = tiny_ctc_recognizers()
    for name, model in (("a", a), ("b", b)):
        save_checkpoint(tmp_path / name / "last", model, config={"model": model.cfg.to_dict(), "task": {"name": "toy"}})
    task = toy_asr_task()
    monkeypatch.setattr(asr_runs, "checkpoint_task", lambda path, data_dir=None, val_heldout=None: (path, task))
    runs = [tmp_path / "a", tmp_path / "b"]
    fused = {"beam": 2, "lm_order": 2, "alpha": 0.5, "beta": 1.0}
    out = decoding.analyse_recognizer(runs, n_train=3, combine="logprob", **fused)
    assert {k: out[k] for k in fused} == fused and out["train"]["n"] == 3
    assert out["test"]["cer"] == evaluate_checkpoint(runs, "test", combine="logprob", **fused)["cer"]
    assert out["test"]["cer"] != evaluate_checkpoint(runs, "test", combine="logprob", beam=2)["cer"]  # the LM acts
    assert sum(v["n"] for v in out["test_by_frame_need"].values()) == len(task.test)


soundfile = pytest.importorskip("soundfile")


def test_transcribe_several_checkpoints(tmp_path, capsys):
    a, b = _saved_pair(tmp_path)
    samba = ASRConfig(kind="samba", **TINY_CTC)
    save_checkpoint(tmp_path / "samba" / "last", SambaASR(samba), config={"model": samba.to_dict()})
    audio = (0.1 * np.random.default_rng(0).standard_normal(12000)).astype(np.float32)
    wav = tmp_path / "noise.wav"
    soundfile.write(wav, audio, 16000, subtype="FLOAT")
    x, n = torch.from_numpy(audio)[None], torch.tensor([len(audio)])
    capsys.readouterr()
    args = ["transcribe", "--checkpoint", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "b"), str(wav)]
    for rule in ("prob", "logprob"):
        assert main([*args, "--combine", rule, "--beam", "3"]) == 0
        expected = CTCEnsemble([a, b], rule).transcribe(x, n, beam=3)[0]
        assert capsys.readouterr().out == f"{wav}\t{expected}\n"
    assert main([*args, "--stream"]) == 2
    assert "an ensemble (several --checkpoint) decodes offline" in capsys.readouterr().err
    assert main([*args[:3], str(wav), "--combine", "prob"]) == 2
    assert "--combine says how an ensemble combines its models" in capsys.readouterr().err
    assert main([*args, "--beam", "3"]) == 0  # the mean of the posteriors by default
    assert capsys.readouterr().out == f"{wav}\t{CTCEnsemble([a, b], 'prob').transcribe(x, n, beam=3)[0]}\n"
    assert main([*args[:3], "--checkpoint", str(tmp_path / "samba"), str(wav)]) == 2
    assert "is a Samba-ASR run without a CTC head (model.ctc_weight 0)" in capsys.readouterr().err


GRID = {"orders": (2,), "alphas": (0.0, 0.5), "betas": (1.0,), "beam": 2}


def test_tuned_decoding_chooses_on_val_and_decodes_test_once_with_it(tmp_path, monkeypatch):
    runs = saved_toy_runs(tmp_path, monkeypatch)
    out = decoding.tuned_decoding(runs, log=str, **GRID)
    assert set(out["val"]) == {"prob", "logprob"} and out["runs"] == [str(r) for r in runs]
    assert (out["val_heldout"], out["val_size"]) == (None, len(toy_asr_task().test))  # the runs' own val
    grids = {rule: lm_grid(runs, **GRID, split="val", combine=rule, log=str) for rule in ("prob", "logprob")}
    rule = min(grids, key=lambda r: (grids[r]["best"]["cer"], grids[r]["best"]["wer"]))
    best = grids[rule]["best"]
    assert out["chosen_rule"] == rule and out["val"][rule]["best"] == best
    setting = {"beam": 2, "lm_order": best["order"], "alpha": best["alpha"], "beta": best["beta"]}
    assert out["setting"] == setting
    test = evaluate_checkpoint(runs, "test", combine=rule, **setting)
    assert out["test"]["cer"] == test["cer"] and out["test"]["wer"] == test["wer"]
    assert out["test_greedy"]["cer"] == evaluate_checkpoint(runs, "test", beam=1, combine=rule)["cer"]
    assert {k: out["analysis"][k] for k in setting} == setting
    alone = decoding.tuned_decoding(runs[0], log=str, **GRID)  # one run: no combine rule to choose
    assert set(alone["val"]) == {"prob"} and alone["runs"] == [str(runs[0])]


def test_tuned_decoding_chooses_the_beam_on_val_and_reads_the_oracle(tmp_path, monkeypatch):
    from torchssm.audio.ctc import char_error_rate, oracle_transcripts, prefix_beam_search

    runs = saved_toy_runs(tmp_path, monkeypatch)
    out = decoding.tuned_decoding(runs, log=str, beams=(4, 2, 1), **GRID)  # 2 is the grid's beam: tried once
    rule, setting = out["chosen_rule"], out["setting"]
    assert [r["beam"] for r in out["beam_rows"]] == [2, 4, 1]
    for row in out["beam_rows"]:
        at = {k: setting[k] for k in ("lm_order", "alpha", "beta")} | {"beam": row["beam"]}
        assert row["cer"] == evaluate_checkpoint(runs, "val", combine=rule, **at)["cer"]
    chosen = min(out["beam_rows"], key=lambda r: (r["cer"], r["wer"], r["beam"]))
    assert setting["beam"] == chosen["beam"] and out["analysis"]["beam"] == chosen["beam"]
    val_pairs = [(t["ref"], t["hyp"]) for t in out["val_transcripts"]]  # val read at the chosen setting
    assert [r for r, _ in val_pairs] == [t["text"] for t in toy_asr_task().test]
    assert char_error_rate(*map(list, zip(*val_pairs))) == chosen["cer"]
    assert out["test"]["cer"] == evaluate_checkpoint(runs, "test", combine=rule, **setting)["cer"]
    ens, lm = load_ctc_ensemble(runs, rule), CharNGramLM(dict.fromkeys(t["text"] for t in toy_asr_task().train), 2)
    refs, nbest = [], []
    for item in toy_asr_task().test:
        x, n = torch.from_numpy(item["audio"])[None], torch.tensor([len(item["audio"])])
        e = ens(x, n)[0, : int(ens.frame_lengths(n))]
        found = prefix_beam_search(e, setting["beam"], lm=lm, alpha=setting["alpha"], beta=setting["beta"])
        refs.append(item["text"])
        nbest.append([ens.vocab.decode(y) for y, _ in found])
    assert out["test_oracle"]["cer"] == char_error_rate(refs, oracle_transcripts(refs, nbest)) <= out["test"]["cer"]
    assert decoding.tuned_decoding(runs, log=str, **GRID)["beam_rows"] == []  # no more widths: none tried
    with pytest.raises(ValueError, match="beam widths must be ints >= 1, got 0"):
        decoding.tuned_decoding(runs, log=str, beams=(0,), **GRID)


def test_tuned_decoding_loads_each_run_once(tmp_path, monkeypatch):
    runs = saved_toy_runs(tmp_path, monkeypatch)
    loads, tasks = [], []
    load, task_of = asr_runs.load_recognizer, asr_runs.checkpoint_task
    monkeypatch.setattr(asr_runs, "load_recognizer", lambda path: loads.append(path) or load(path))
    monkeypatch.setattr(
        asr_runs, "checkpoint_task", lambda path, data_dir=None, val_heldout=None: tasks.append(path) or task_of(path)
    )
    encoded = []
    emissions = decoding.ctc_emissions
    monkeypatch.setattr(decoding, "ctc_emissions", lambda m, d: encoded.append(len(d)) or emissions(m, d))
    decoding.tuned_decoding(runs, log=str, beams=(3,), **GRID)  # two rules, two beams, test, greedy
    assert list(map(str, loads)) == list(map(str, runs)) and list(map(str, tasks)) == [str(runs[0])]
    n_val, n_test = len(toy_asr_task().test), len(toy_asr_task().test)
    assert encoded == [n_val, n_val, n_test, n_test]  # each member encodes val and test once


def test_speech_decode_cli(tmp_path, monkeypatch, capsys):
    import json

    runs = [str(r) for r in saved_toy_runs(tmp_path, monkeypatch)]
    lm_text = tmp_path / "lm.txt"
    lm_text.write_text("a b a\nb a b\n")
    grid = ["--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "2"]
    out = tmp_path / "decode.json"
    assert main(["speech", "decode", *runs, *grid, "--lm-text", str(lm_text), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    expected = decoding.tuned_decoding(runs, extra_texts=["a b a", "b a b"], log=str, **GRID)
    assert saved["chosen_rule"] == expected["chosen_rule"] and saved["setting"] == expected["setting"]
    assert saved["test"]["cer"] == expected["test"]["cer"]
    assert f"chosen: combine {expected['chosen_rule']}, order {expected['setting']['lm_order']}" in printed
    assert f"test (decoded once): CER {expected['test']['cer']:.4f}" in printed
    assert "val grid: 2 settings at beam 2, combine logprob ..." in printed and "cer=" not in printed  # rows: --verbose
    assert "chosen: beam 2\n" in printed and "2-best oracle (the floor" in printed
    assert main(["speech", "decode", *runs, *grid, "--beams", "3", "--out", str(out)]) == 0
    printed, saved = capsys.readouterr().out, json.loads(out.read_text())
    assert [r["beam"] for r in saved["beam_rows"]] == [2, 3] and "val, beam 3: CER" in printed
    assert f"chosen: beam {saved['setting']['beam']}\n" in printed
    assert main(["speech", "decode", *runs, *grid, "--beams", "0"]) == 2
    assert "beam widths must be ints >= 1, got 0" in capsys.readouterr().err
    assert main(["speech", "decode", runs[0], runs[0], *grid]) == 2
    assert "runs repeat" in capsys.readouterr().err
    assert main(["speech", "decode", runs[0], str(tmp_path / "absent"), *grid]) == 2
    missing = capsys.readouterr()
    assert "no checkpoint at" in missing.err and "val grid" not in missing.out  # checked before any decoding


def test_the_grid_shared_among_workers_gives_the_same_rows(tmp_path, monkeypatch, capsys):
    runs = saved_toy_runs(tmp_path, monkeypatch)
    grid = {"orders": (2, 3), "alphas": (0.0, 0.5, 1.0), "betas": (0.0, 2.0), "beam": 2}
    one = lm_grid(runs, **grid, split="val", log=str)
    two = lm_grid(runs, **grid, split="val", log=str, workers=2)
    assert two["rows"] == one["rows"] and two["no_lm"] == one["no_lm"] and two["best"] == one["best"]
    assert len(one["rows"]) == 12 and two["cpu_s"] > 0
    a, b = (load_ctc_ensemble(runs).members[i] for i in range(2))
    emissions = [e[0] for e in (a(torch.zeros(1, 4000)), b(torch.zeros(1, 4000)))]
    settings = [(0.0, 0.0), (0.5, 1.0)]
    lm = CharNGramLM(["a b a", "b a b"], 2)
    serial = decoding.grid_transcripts(emissions, a.vocab, 3, lm, settings)
    assert decoding.grid_transcripts(emissions, a.vocab, 3, lm, settings, workers=3) == serial  # 2 processes
    assert len(serial) == 2 and all(len(hyps) == 2 for hyps in serial)
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        lm_grid(runs, **grid, split="val", log=str, workers=0)
    capsys.readouterr()
    cli = ["speech", "decode", *map(str, runs), "--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "2"]
    assert main(cli) == 0
    alone = capsys.readouterr().out
    assert main([*cli, "--workers", "2"]) == 0
    assert capsys.readouterr().out == alone
