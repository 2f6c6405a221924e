"""Hybrid Samba-ASR: a CTC head trained beside the decoder (model.ctc_weight) and attention rescoring
(SambaASR.rescore, decoding.rescoring_decoding, speech decode / transcribe --rescore)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _speech_common import toy_asr_task

from torchssm.audio import asr_eval, asr_runs, asr_train, decoding
from torchssm.audio.asr import (
    ASRConfig,
    CTCEnsemble,
    CTCRecognizer,
    SambaASR,
    SambaCTCHead,
    best_rescored,
    can_rescore,
    ctc_loss,
)
from torchssm.audio.ctc import (
    char_error_rate,
    combine_emissions,
    oracle_transcripts,
    paired_cer_difference,
    prefix_beam_search,
)
from torchssm.cli import main
from torchssm.data.registry import TaskData
from torchssm.train.checkpoint import save_checkpoint

TINY = {"d_model": 16, "n_layers": 1, "n_mels": 16, "layer_kwargs": {"d_state": 4}}


def _hybrid(seed=0, cross_connection="mamba", **kwargs):
    torch.manual_seed(seed)
    order = "reversed" if cross_connection == "mamba" else "forward"  # the preset's order; attention has none
    cfg = ASRConfig(
        kind="samba", ctc_weight=0.3, cross_order=order, cross_connection=cross_connection, **TINY, **kwargs
    )
    return SambaASR(cfg).double().eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    audio = 0.1 * torch.randn(2, 4000, generator=g, dtype=torch.float64)
    lengths = torch.tensor([4000, 3000])
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])
    return audio, lengths, targets, torch.tensor([3, 2])


def test_config_checks_the_ctc_weight():
    assert ASRConfig(kind="samba").ctc_weight == 0.0 and SambaASR(ASRConfig(kind="samba", **TINY)).ctc_head is None
    with pytest.raises(ValueError, match=r"ctc_weight must be a loss weight in \[0, 1\), got 1.0"):
        ASRConfig(kind="samba", ctc_weight=1.0)  # the decoder would learn nothing
    with pytest.raises(ValueError, match="ctc_weight must be a loss weight"):
        ASRConfig(kind="samba", ctc_weight=True)
    with pytest.raises(ValueError, match="kind must be 'samba', got 'ctc'"):
        ASRConfig(kind="ctc", ctc_weight=0.3)


def test_joint_loss_is_the_weighted_sum_and_trains_both_heads():
    model = _hybrid().train()
    audio, lengths, targets, target_lengths = _batch()
    torch.manual_seed(3)
    loss = model.loss(audio, lengths, targets, target_lengths)
    ctc = ctc_loss(model.ctc_log_probs(audio, lengths), model.frame_lengths(lengths), targets, target_lengths)
    inputs = torch.tensor([[model.vocab.bos, 1, 2, 3], [model.vocab.bos, 4, 5, 0]])
    outputs = torch.tensor([[1, 2, 3, model.vocab.eos], [4, 5, model.vocab.eos, -100]])
    logits = model.logits(audio, lengths, inputs)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), outputs.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, 0.3 * ctc + 0.7 * ce)
    loss.backward()
    assert model.ctc_head.weight.grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() > 0
    plain = SambaASR(ASRConfig(kind="samba", cross_order="reversed", **TINY)).double()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("ctc_head")})
    torch.testing.assert_close(plain.eval().loss(audio, lengths, targets, target_lengths), ce)  # no head: CE alone
    with pytest.raises(ValueError, match="no CTC head: train it with model.ctc_weight > 0"):
        plain.ctc_log_probs(audio, lengths)


@pytest.mark.parametrize("cross_connection", ["mamba", "attention"])
def test_transcript_log_probs_equal_stepwise_decoding(cross_connection):
    """The teacher-forced score of a transcript is the sum of the decoder's step-by-step log-probabilities."""
    model = _hybrid(cross_connection=cross_connection)
    audio, lengths, _, _ = _batch()
    x, n = audio[1:], lengths[1:]
    transcripts = [[3, 1, 4], [], [2, 2]]
    got = model.transcript_log_probs(x, n, transcripts)
    for y, score in zip(transcripts, got):
        torch.set_grad_enabled(False)
        states = model._start(x, n)
        total, token = 0.0, torch.tensor([model.vocab.bos])
        for c in [*y, model.vocab.eos]:
            logp, states = model._next_logprobs(token, states)
            total += float(logp[0, c])
            token = torch.tensor([c])
        torch.set_grad_enabled(True)
        assert float(score) == pytest.approx(total, abs=1e-9)
    with pytest.raises(ValueError, match="scores one utterance, got a batch of 2"):
        model.transcript_log_probs(audio, lengths, transcripts)


def test_rescore_weight_zero_is_the_ctc_search_and_a_large_weight_follows_the_decoder():
    model = _hybrid()
    audio, lengths, _, _ = _batch()
    log_probs = model.ctc_log_probs(audio, lengths)
    frames = model.frame_lengths(lengths).tolist()
    search = [prefix_beam_search(log_probs[i, : frames[i]], 4) for i in range(2)]
    assert model.rescore(audio, lengths, beam=4, decoder_weight=0.0) == [model.vocab.decode(s[0][0]) for s in search]
    for i in range(2):
        nbest = search[i]
        decoder = model.transcript_log_probs(audio[i : i + 1], lengths[i : i + 1], [list(y) for y, _ in nbest])
        entries = model.scored_nbest(audio[i : i + 1], lengths[i : i + 1], beam=4)[0]
        assert [tuple(y) for y, _, _ in entries] == [y for y, _ in nbest] and len(decoder) == len(nbest)
        # the search ran on the pair's encoding, the entries on one utterance's: equal up to rounding
        torch.testing.assert_close(torch.tensor([s for _, s, _ in entries]), torch.tensor([s for _, s in nbest]))
        torch.testing.assert_close(torch.tensor([d for _, _, d in entries], dtype=torch.float64), decoder)
        favourite = nbest[int(decoder.argmax())][0]
        got = model.rescore(audio[i : i + 1], lengths[i : i + 1], beam=4, decoder_weight=1e6)
        assert got == [model.vocab.decode(favourite)]


def test_best_rescored_adds_the_weighted_decoder_score_and_keeps_the_search_order_on_ties():
    entries = [([1], 0.0, -3.0), ([2], -1.0, -1.0), ([3], -2.0, 0.0)]
    assert best_rescored(entries, 0.0) == [1]  # the search's best
    assert best_rescored(entries, 1.0) == [2]  # -3 / -2 / -2: the first of the two best
    assert best_rescored(entries, 10.0) == [3]


def test_ctc_head_view():
    model = _hybrid()
    audio, lengths, _, _ = _batch()
    head = SambaCTCHead(model)
    torch.testing.assert_close(head(audio, lengths), model.ctc_log_probs(audio, lengths))
    assert head.frame_lengths(lengths).tolist() == model.frame_lengths(lengths).tolist()
    with pytest.raises(ValueError, match="needs a Samba-ASR model with a CTC head"):
        SambaCTCHead(SambaASR(ASRConfig(kind="samba", **TINY)))


def test_paired_cer_difference():
    refs = ["abcd", "abcd", "ab"]
    a, b = ["abcd", "abxx", "b"], ["abcx", "abcd", "ab"]
    diff, se = paired_cer_difference(refs, a, b)
    assert diff == pytest.approx(char_error_rate(refs, a) - char_error_rate(refs, b))
    d = np.array([0 - 1, 2 - 0, 1 - 0])
    assert se == pytest.approx(np.sqrt(3) * d.std(ddof=1) / 10)
    assert paired_cer_difference(refs, a, a) == (0.0, 0.0)
    with pytest.raises(ValueError, match="at least 2 utterances"):
        paired_cer_difference(["a"], ["a"], ["b"])


def _edits(a: str, b: str) -> int:
    """Character Levenshtein distance, by the textbook table."""
    table = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return table[-1][-1]


def test_oracle_transcripts_pick_the_closest_hypothesis():
    refs = ["the cat", "a dog"]
    nbest = [["the bat", "the cat", "he cat"], ["a fog", "a dot"]]
    assert oracle_transcripts(refs, nbest) == ["the cat", "a fog"]  # a tie keeps the first
    with pytest.raises(ValueError, match="2 references but 1 n-best lists"):
        oracle_transcripts(refs, nbest[:1])
    with pytest.raises(ValueError, match="at least one hypothesis"):
        oracle_transcripts(refs, [["x"], []])


def _toy_runs(tmp_path, monkeypatch):
    toy = toy_asr_task()
    task = TaskData(info=toy.info, train=toy.train, val=toy.test, test=toy.test, extra=toy.extra)
    monkeypatch.setattr(asr_runs, "checkpoint_task", lambda path, data_dir=None, val_heldout=None: (path, task))
    config = {
        "task": {"name": "toy"},
        "model": {"kind": "samba", "ctc_weight": 0.3, "cross_order": "reversed", "subsampling": 2, **TINY},
        "train": {"epochs": 2, "batch_size": 4, "out_dir": str(tmp_path / "hybrid"), "test_beam": 1},
    }
    result = asr_train.train_asr(config, task=task, log=str)
    plain = ASRConfig(kind="samba", **TINY)
    save_checkpoint(tmp_path / "plain" / "last", SambaASR(plain), config={"model": plain.to_dict(), "task": {}})
    return task, result


GRID = {"orders": (2,), "alphas": (0.0, 0.5), "betas": (1.0,), "beam": 3}


def test_training_records_the_ctc_head_and_decode_rescores_on_val(tmp_path, monkeypatch):
    task, result = _toy_runs(tmp_path, monkeypatch)
    assert all("val_ctc_cer" in r and r["ctc_dropped"] == 0 for r in result["history"])
    head = SambaCTCHead(asr_runs.load_recognizer(tmp_path / "hybrid"))
    assert result["test_ctc_greedy"]["cer"] == asr_eval.evaluate_asr(head, task.test, beam=1)["cer"]
    run = str(tmp_path / "hybrid")
    weights = (0.0, 0.5, 100.0)
    out = decoding.tuned_decoding(run, log=str, decoder_weights=weights, **GRID)
    best = decoding.lm_grid(run, **GRID, split="val", log=str)["best"]  # the grid runs on the CTC head
    setting = {"beam": 3, "lm_order": 2, "alpha": best["alpha"], "beta": best["beta"]}
    assert out["setting"] == setting
    by_hand = decoding.rescoring_decoding(run, setting, weights, log=str)
    rows = by_hand["rescoring"]["rows"]
    assert [r["decoder_weight"] for r in rows] == list(weights) and out["rescoring"] == by_hand["rescoring"]
    chosen = min(rows, key=lambda r: (r["cer"], r["wer"], r["decoder_weight"]))
    assert out["rescoring"]["decoder_weight"] == chosen["decoder_weight"]
    model = asr_runs.load_recognizer(run)
    from torchssm.audio.lm import lm_from_task

    lm = lm_from_task(task, 2)
    refs, hyps = [], []
    for i in range(len(task.test)):
        x, n = torch.from_numpy(task.test[i]["audio"])[None], torch.tensor([len(task.test[i]["audio"])])
        w = chosen["decoder_weight"]
        hyps += model.rescore(x, n, 3, w, lm=lm, alpha=setting["alpha"], beta=setting["beta"])
        refs.append(task.test[i]["text"])
    assert [t["hyp"] for t in out["test_transcripts"]] == hyps and out["test"]["cer"] == char_error_rate(refs, hyps)
    zero = [
        model.rescore(
            torch.from_numpy(task.test[i]["audio"])[None],
            torch.tensor([4000]),
            3,
            0.0,
            lm,
            setting["alpha"],
            setting["beta"],
        )[0]
        for i in range(len(task.test))
    ]
    assert [t["ctc_lm"] for t in out["test_transcripts"]] == zero
    assert out["test_decoder_greedy"]["cer"] == asr_eval.evaluate_asr(model, task.test, beam=1)["cer"]
    lists = decoding.rescoring_lists(model, task.test, 3, lm, setting["alpha"], setting["beta"])
    closest = [
        min((model.vocab.decode(y) for y, _, _ in entries), key=lambda h: _edits(ref, h))
        for ref, entries in zip(refs, lists)
    ]
    assert (
        out["test_oracle"]["cer"]
        == char_error_rate(refs, closest)
        <= min(out["test"]["cer"], out["test_ctc_lm"]["cer"])
    )
    wider = decoding.tuned_decoding(run, log=str, decoder_weights=weights, beams=(5,), **GRID)
    rows = wider["rescoring"]["rows"]
    assert [(r["beam"], r["decoder_weight"]) for r in rows] == [(b, w) for b in (3, 5) for w in weights]
    assert rows[: len(weights)] == out["rescoring"]["rows"]  # the grid's width: the lists of before
    best_row = min(rows, key=lambda r: (r["cer"], r["wer"], r["beam"], r["decoder_weight"]))
    assert (
        wider["setting"]["beam"] == best_row["beam"]
        and wider["rescoring"]["decoder_weight"] == best_row["decoder_weight"]
    )
    at = decoding.rescoring_decoding(run, wider["setting"], (best_row["decoder_weight"],), log=str)
    assert wider["test"] == at["test"]  # test read once at the chosen width and weight
    with pytest.raises(ValueError, match="without a CTC head"):
        decoding.tuned_decoding(str(tmp_path / "plain"), log=str, **GRID)
    with pytest.raises(ValueError, match="plain is a Samba-ASR run without a CTC head"):
        decoding.tuned_decoding([run, str(tmp_path / "plain")], log=str, **GRID)


def test_speech_decode_and_transcribe_rescore_a_hybrid(tmp_path, monkeypatch, capsys):
    soundfile = pytest.importorskip("soundfile")
    task, _ = _toy_runs(tmp_path, monkeypatch)
    run = str(tmp_path / "hybrid")
    out = tmp_path / "decode.json"
    grid = ["--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "3"]
    capsys.readouterr()
    assert main(["speech", "decode", run, *grid, "--out", str(out)]) == 0
    printed, saved = capsys.readouterr().out, json.loads(out.read_text())
    weight = saved["rescoring"]["decoder_weight"]
    assert f"chosen: beam 3, decoder weight {weight} (attention rescoring" in printed
    assert f"the CTC head + LM alone CER {saved['test_ctc_lm']['cer']:.4f}" in printed
    assert "greedy: the CTC head CER" in printed and "the decoder CER" in printed
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, task.test[1]["audio"], 16000, subtype="FLOAT")
    model = asr_runs.load_recognizer(run)
    x = torch.from_numpy(soundfile.read(wav, dtype="float32")[0])[None]
    expected = model.rescore(x, torch.tensor([x.shape[1]]), 16, 0.7)[0]
    assert main(["transcribe", "--checkpoint", run, str(wav), "--rescore", "0.7"]) == 0
    assert capsys.readouterr().out == f"{wav}\t{expected}\n"
    assert main(["transcribe", "--checkpoint", str(tmp_path / "plain"), str(wav), "--rescore", "1"]) == 2
    assert "--rescore needs a hybrid Samba-ASR checkpoint" in capsys.readouterr().err
    assert main(["transcribe", "--checkpoint", run, str(wav), "--rescore", "-1"]) == 2
    assert "--rescore WEIGHT must be >= 0" in capsys.readouterr().err


def test_an_ensemble_with_hybrid_members_rescores_with_the_mean_of_their_decoders():
    torch.manual_seed(2)
    ctc = CTCRecognizer(ASRConfig(**TINY)).double().eval()
    first, second = _hybrid(cross_connection="attention"), _hybrid(seed=1)
    audio, lengths, _, _ = _batch()
    x, n = audio[:1], lengths[:1]
    for rule in ("prob", "logprob"):
        ens = CTCEnsemble([ctc, SambaCTCHead(first), SambaCTCHead(second)], rule)
        assert can_rescore(ens) and ens.decoders == [first, second]
        emissions = [ctc(audio, lengths), first.ctc_log_probs(audio, lengths), second.ctc_log_probs(audio, lengths)]
        torch.testing.assert_close(ens(audio, lengths), combine_emissions(emissions, rule))
        nbest = prefix_beam_search(ens(x, n)[0, : int(ens.frame_lengths(n))], 4)
        entries = ens.scored_nbest(x, n, beam=4)[0]
        labellings = [list(y) for y, _ in nbest]
        assert [y for y, _, _ in entries] == labellings
        torch.testing.assert_close(torch.tensor([s for _, s, _ in entries]), torch.tensor([s for _, s in nbest]))
        mean = (first.transcript_log_probs(x, n, labellings) + second.transcript_log_probs(x, n, labellings)) / 2
        torch.testing.assert_close(torch.tensor([d for _, _, d in entries], dtype=torch.float64), mean)
        assert ens.rescore(audio, lengths, beam=4, decoder_weight=0.0) == ens.transcribe(audio, lengths, beam=4)
    alone = CTCEnsemble([SambaCTCHead(first)]).scored_nbest(audio, lengths, beam=3)  # one member: the hybrid's own
    for got, want in zip(alone, first.scored_nbest(audio, lengths, beam=3)):
        assert [y for y, _, _ in got] == [y for y, _, _ in want]
        torch.testing.assert_close(torch.tensor([e[1:] for e in got]), torch.tensor([e[1:] for e in want]))
    plain = CTCEnsemble([ctc, ctc])
    assert not can_rescore(plain) and not can_rescore(ctc) and can_rescore(first)
    with pytest.raises(ValueError, match="needs a hybrid Samba-ASR member"):
        plain.scored_nbest(x, n)


def _toy_ensemble(tmp_path, monkeypatch):
    """The hybrid of :func:`_toy_runs` and a CTC run of the same toy task: [ctc run, hybrid run]."""
    task, _ = _toy_runs(tmp_path, monkeypatch)
    config = {
        "task": {"name": "toy"},
        "model": {"kind": "ctc", "subsampling": 2, **TINY},
        "train": {"epochs": 1, "batch_size": 4, "out_dir": str(tmp_path / "ctc"), "test_beam": 1},
    }
    asr_train.train_asr(config, task=task, log=str)
    return task, [str(tmp_path / "ctc"), str(tmp_path / "hybrid")]


def test_speech_decode_rescores_an_ensemble_with_its_hybrid_member(tmp_path, monkeypatch, capsys):
    task, runs = _toy_ensemble(tmp_path, monkeypatch)
    weights = (0.0, 0.5, 100.0)
    out = decoding.tuned_decoding(runs, log=str, decoder_weights=weights, **GRID)
    assert set(out["val"]) == {"prob", "logprob"}
    setting, rule = out["setting"], out["chosen_rule"]
    by_hand = decoding.rescoring_decoding(runs, setting, weights, log=str, combine=rule)
    assert out["rescoring"] == by_hand["rescoring"]
    ens = asr_runs.load_ctc_ensemble(runs, rule)
    from torchssm.audio.lm import lm_from_task

    lm, w = lm_from_task(task, 2), out["rescoring"]["decoder_weight"]
    hyps = []
    for i in range(len(task.test)):
        x, n = torch.from_numpy(task.test[i]["audio"])[None], torch.tensor([len(task.test[i]["audio"])])
        hyps += ens.rescore(x, n, 3, w, lm=lm, alpha=setting["alpha"], beta=setting["beta"])
    assert [t["hyp"] for t in out["test_transcripts"]] == hyps
    heldout = task.extra["heldout_words"]
    greedy = asr_eval.evaluate_asr(ens, task.test, heldout, beam=1)  # from the cached emissions: the same rates
    assert out["test_greedy"] == {k: v for k, v in greedy.items() if k != "examples"}
    hybrid = asr_runs.load_recognizer(runs[1])
    assert out["test_decoder_greedy"] == [asr_eval.evaluate_asr(hybrid, task.test, heldout, beam=1)]
    grid = ["--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "3"]
    capsys.readouterr()
    assert main(["speech", "decode", *runs, *grid]) == 0
    printed = capsys.readouterr().out
    assert "n-best oracle (the floor of any rescoring of these lists): CER" in printed
    assert "(attention rescoring of the ensemble's n-best)" in printed and "greedy: the ensemble CER" in printed
    soundfile = pytest.importorskip("soundfile")
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, task.test[1]["audio"], 16000, subtype="FLOAT")
    x = torch.from_numpy(soundfile.read(wav, dtype="float32")[0])[None]
    expected = asr_runs.load_ctc_ensemble(runs).rescore(x, torch.tensor([x.shape[1]]), 16, 0.7)[0]
    assert main(["transcribe", "--checkpoint", runs[0], "--checkpoint", runs[1], str(wav), "--rescore", "0.7"]) == 0
    assert capsys.readouterr().out == f"{wav}\t{expected}\n"
    assert main(["transcribe", "--checkpoint", runs[0], "--checkpoint", runs[0], str(wav), "--rescore", "1"]) == 2
    assert (
        "--rescore needs a hybrid Samba-ASR checkpoint (model.ctc_weight > 0), alone or among"
        in capsys.readouterr().err
    )
