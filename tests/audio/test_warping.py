"""Test-time warping: features.vtlp_warp, warped mel filterbanks, asr.FrequencyWarped and its ensembles, and
--warps in speech decode / transcribe."""

import json

import numpy as np
import pytest
import soundfile
import torch
from _speech_common import TINY_CTC, saved_toy_runs, tiny_ctc_recognizers, toy_asr_task

from torchssm.audio import decoding
from torchssm.audio.asr import ASRConfig, CTCEnsemble, FrequencyWarped, SambaASR, SambaCTCHead, warped_members
from torchssm.audio.asr_eval import evaluate_asr
from torchssm.audio.asr_runs import load_ctc_ensemble
from torchssm.audio.ctc import combine_emissions
from torchssm.audio.features import LogMel, mel_filterbank, spectrum_warp, vtlp_warp
from torchssm.audio.lm import CharNGramLM
from torchssm.cli import main
from torchssm.train.checkpoint import save_checkpoint


def _vtlp_reference(f: float, alpha: float, rate: float, f_hi: float = 4800.0) -> float:
    """Jaitly & Hinton's warp written out for one frequency."""
    half = rate / 2
    if f <= f_hi * min(alpha, 1) / alpha:
        return f * alpha
    return half - (half - f_hi * min(alpha, 1)) / (half - f_hi * min(alpha, 1) / alpha) * (half - f)


@pytest.mark.parametrize("alpha", [0.9, 0.95, 1.0, 1.05, 1.1])
def test_vtlp_warp_is_the_piecewise_line(alpha):
    freqs = torch.linspace(0, 8000, 161, dtype=torch.float64)
    got = vtlp_warp(freqs, alpha, 16000)
    expected = torch.tensor([_vtlp_reference(float(f), alpha, 16000) for f in freqs], dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    assert got[0] == 0 and abs(float(got[-1]) - 8000) < 1e-9  # the band's ends stay put
    assert (got[1:] > got[:-1]).all()  # monotone
    boundary = torch.tensor([4800 * min(alpha, 1) / alpha], dtype=torch.float64)
    below, above = boundary - 1e-6, boundary + 1e-6  # continuous at the bend
    assert abs(float(vtlp_warp(below, alpha, 16000) - vtlp_warp(above, alpha, 16000))) < 1e-4
    if alpha == 1.0:
        torch.testing.assert_close(got, freqs)


def test_vtlp_warp_errors():
    f = torch.tensor([100.0])
    for bad in (0.3, 2.5, True, "1.1", None):
        with pytest.raises(ValueError, match="a VTLP warp factor must be a number in"):
            vtlp_warp(f, bad, 16000)
    with pytest.raises(ValueError, match="VTLP's f_hi must lie in"):
        vtlp_warp(f, 1.1, 8000, f_hi=4800.0)
    with pytest.raises(ValueError, match="a VTLP warp factor"):
        LogMel(warp=0.1)


def test_a_warped_filterbank_reads_a_scaled_tone_as_the_plain_one_reads_the_tone():
    torch.testing.assert_close(mel_filterbank(40, 400, 16000, warp=1.0), mel_filterbank(40, 400, 16000))
    t = torch.arange(8000, dtype=torch.float64) / 16000
    plain, warped = LogMel(n_mels=40).double(), LogMel(n_mels=40, warp=1.1).double()
    assert warped.warp == 1.1 and plain.warped(1.1).filters.equal(warped.filters)
    for f in (700.0, 1500.0, 3000.0):
        a = plain(torch.sin(2 * torch.pi * f * t)[None])[0].mean(0)  # (n_mels,)
        b = warped(torch.sin(2 * torch.pi * 1.1 * f * t)[None])[0].mean(0)
        assert int(a.argmax()) == int(b.argmax())  # the same channel hears it
        c = plain(torch.sin(2 * torch.pi * 1.1 * f * t)[None])[0].mean(0)
        assert int(c.argmax()) != int(a.argmax())  # and without the warp another one does


@pytest.mark.parametrize("alpha", [0.85, 0.9, 1.0, 1.1, 1.2])
def test_the_warp_reads_the_spectrum_at_the_warped_frequencies(alpha):
    power = torch.rand(201, dtype=torch.float64)  # a power spectrum on the 201 bins of a 400-point DFT at 16 kHz
    bins = np.arange(201) * 40.0
    source = vtlp_warp(torch.from_numpy(bins), alpha, 16000).numpy()
    expected = np.interp(source, bins, power.numpy())  # P(f'(f_k)), linear between bins
    torch.testing.assert_close(spectrum_warp(400, 16000, alpha) @ power, torch.from_numpy(expected))
    plain = mel_filterbank(80, 400, 16000, dtype=torch.float64)
    warped = mel_filterbank(80, 400, 16000, dtype=torch.float64, warp=alpha)
    torch.testing.assert_close(warped, plain @ spectrum_warp(400, 16000, alpha))
    # every filter keeps its weight: none empties, though the lowest of 80 are narrower than a bin
    torch.testing.assert_close(warped.sum(1), plain.sum(1))


def test_frequency_warped_shares_the_recognizer_and_reads_warped_frames():
    (model,) = tiny_ctc_recognizers(1)
    x = 0.1 * torch.randn(2, 6000)
    n = torch.tensor([6000, 4500])
    torch.testing.assert_close(FrequencyWarped(model, 1.0)(x, n), model(x, n))
    warped = FrequencyWarped(model, 0.9)
    expected = model.mel_log_probs(model.encoder.front.warped(0.9)(x), n)
    torch.testing.assert_close(warped(x, n), expected)
    assert not torch.allclose(warped(x, n), model(x, n))
    assert warped.recognizer is model and warped.frame_lengths(n).equal(model.frame_lengths(n))
    assert {id(p) for p in warped.parameters()} == {id(p) for p in model.parameters()}  # no copy of the weights


def test_warped_members_make_one_ensemble():
    a, b = tiny_ctc_recognizers(2)
    members = warped_members([a, b], (0.9, 1.0, 1.1))
    assert [m.warp if isinstance(m, FrequencyWarped) else 1.0 for m in members] == [0.9, 1.0, 1.1] * 2
    assert members[1] is a and members[4] is b
    x, n = 0.1 * torch.randn(1, 6000), torch.tensor([6000])
    ens = CTCEnsemble(members, "logprob")
    torch.testing.assert_close(ens(x, n), combine_emissions([m(x, n) for m in members], "logprob"))
    for bad in ((), (1.0, 1.0), (0.2,)):
        with pytest.raises(ValueError, match="warp"):
            warped_members([a], bad)
    hybrid = SambaCTCHead(SambaASR(ASRConfig(kind="samba", ctc_weight=0.3, **TINY_CTC)))
    assert warped_members([hybrid], (1.0,)) == [hybrid]
    with pytest.raises(ValueError, match="test-time warping reads a CTCRecognizer's log-mel front end"):
        warped_members([hybrid], (0.9, 1.0))


GRID = {"orders": (2,), "alphas": (0.0, 0.5), "betas": (1.0,), "beam": 2}


def test_tuned_decoding_with_warps_decodes_the_warped_ensemble(tmp_path, monkeypatch):
    runs = saved_toy_runs(tmp_path, monkeypatch)
    warps = (0.9, 1.0, 1.1)
    out = decoding.tuned_decoding(runs[0], log=str, warps=warps, **GRID)  # one run's copies: both rules tried
    assert out["warps"] == list(warps) and set(out["val"]) == {"prob", "logprob"}
    rule, setting = out["chosen_rule"], out["setting"]
    ens = load_ctc_ensemble(runs[:1], rule, warps)
    assert len(ens.members) == 3
    lm = CharNGramLM(dict.fromkeys(t["text"] for t in toy_asr_task().train), 2)
    at = {"beam": setting["beam"], "lm": lm, "alpha": setting["alpha"], "beta": setting["beta"]}
    test = evaluate_asr(ens, toy_asr_task().test, ["b"], **at)
    assert out["test"]["cer"] == test["cer"]
    at = {k: setting[k] for k in ("beam", "lm_order", "alpha", "beta")}
    assert decoding.evaluate_checkpoint(runs[0], "test", combine=rule, warps=warps, **at)["cer"] == test["cer"]
    assert decoding.tuned_decoding(runs, log=str, **GRID)["warps"] == [1.0]


def test_warps_in_the_cli(tmp_path, monkeypatch, capsys):
    runs = [str(r) for r in saved_toy_runs(tmp_path, monkeypatch)]
    grid = ["--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "2"]
    out = tmp_path / "decode.json"
    assert main(["speech", "decode", runs[0], *grid, "--warps", "0.9", "1.1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["warps"] == [0.9, 1.1] and "test-time warps (VTLP): 0.9 1.1\n" in printed
    assert main(["speech", "decode", runs[0], *grid, "--warps", "1.1", "1.1"]) == 2
    assert "warps must be one or more distinct warp factors" in capsys.readouterr().err
    audio = (0.1 * np.random.default_rng(0).standard_normal(12000)).astype(np.float32)
    wav = tmp_path / "noise.wav"
    soundfile.write(wav, audio, 16000, subtype="FLOAT")
    x, n = torch.from_numpy(audio)[None], torch.tensor([len(audio)])
    (a,) = tiny_ctc_recognizers(1)
    for rule in ("prob", "logprob"):
        assert main(["transcribe", "--checkpoint", runs[0], str(wav), "--warps", "0.9", "1.1", "--combine", rule]) == 0
        expected = CTCEnsemble(warped_members([a], (0.9, 1.1)), rule).transcribe(x, n)[0]
        assert capsys.readouterr().out == f"{wav}\t{expected}\n"
    assert main(["transcribe", "--checkpoint", runs[0], str(wav), "--warps", "0.9", "--stream"]) == 2
    assert "decodes offline, and so do --warps" in capsys.readouterr().err
    assert main(["transcribe", "--checkpoint", runs[0], str(wav), "--warps", "3"]) == 2
    assert "a VTLP warp factor must be a number in [0.5, 2]" in capsys.readouterr().err
    hybrid = ASRConfig(kind="samba", ctc_weight=0.3, **TINY_CTC)
    save_checkpoint(tmp_path / "hybrid" / "last", SambaASR(hybrid), config={"model": hybrid.to_dict()})
    assert main(["transcribe", "--checkpoint", str(tmp_path / "hybrid"), str(wav), "--warps", "0.9"]) == 2
    assert "test-time warps read CTC recognisers only" in capsys.readouterr().err


# --- VTLP in training (model.vtlp): each utterance's spectrum warped by its own factor


def test_per_utterance_warps_equal_each_utterance_warped_alone():
    torch.manual_seed(0)
    front = LogMel(n_mels=16)
    audio = torch.randn(3, 2400, dtype=torch.float64)
    warps = torch.tensor([0.9, 1.0, 1.07], dtype=torch.float64)
    got = front(audio, warps)  # (3, t, 16)
    for i, alpha in enumerate(warps.tolist()):
        torch.testing.assert_close(got[i], front.warped(alpha)(audio[i : i + 1])[0])
    torch.testing.assert_close(front(audio, torch.ones(3, dtype=torch.float64)), front(audio))
    with pytest.raises(ValueError, match=r"one factor per utterance, shape \(3,\), got \(2,\)"):
        front(audio, warps[:2])


def test_warp_ranges_and_draws():
    from torchssm.audio.features import check_warp_range, draw_warps

    assert check_warp_range([]) == () and check_warp_range([0.9, 1.1]) == (0.9, 1.1)
    for bad, match in (([1.1, 0.9], "low <= high"), ([0.9], r"\[\] \(off\) or \[low, high\]"), ("0.9", "off")):
        with pytest.raises(ValueError, match=match):
            check_warp_range(bad)
    with pytest.raises(ValueError, match=r"in \[0.5, 2\]"):
        check_warp_range([0.3, 1.0])
    draws = draw_warps(1000, (0.9, 1.1), torch.Generator().manual_seed(1))
    assert draws.shape == (1000,) and 0.9 <= draws.min() and draws.max() <= 1.1
    assert draws.min() < 0.91 and draws.max() > 1.09  # spread over the range, not one factor
    torch.testing.assert_close(draws, draw_warps(1000, (0.9, 1.1), torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match=r"vtlp must be \[\] \(off\) or \[low, high\]"):
        ASRConfig(**TINY_CTC, vtlp=[1.0])


def test_vtlp_warps_in_training_only():
    """model.vtlp: in train mode each utterance is read at its drawn factor (global RNG); in eval mode, unwarped."""
    from torchssm.audio.asr import CTCRecognizer
    from torchssm.audio.features import draw_warps

    torch.manual_seed(0)
    model = CTCRecognizer(ASRConfig(**TINY_CTC, vtlp=(0.9, 1.1))).double()
    audio = torch.randn(2, 3200, dtype=torch.float64)
    front = model.encoder.front
    model.train()
    torch.manual_seed(5)
    train_mel = model.encoder.log_mel(audio)
    torch.manual_seed(5)
    torch.testing.assert_close(train_mel, front(audio, draw_warps(2, (0.9, 1.1))))
    assert not torch.allclose(train_mel, front(audio))
    model.eval()
    torch.testing.assert_close(model.encoder.log_mel(audio), front(audio))
    torch.testing.assert_close(model(audio), model.mel_log_probs(front(audio)))


def test_a_vtlp_run_trains_and_an_older_run_still_resumes(tmp_path):
    """train_asr with model.vtlp saves it in the run's config; a run saved before the key existed (no ``vtlp`` in its
    sidecar) resumes, the missing key read as its default."""
    from torchssm.audio.asr_train import train_asr
    from torchssm.train.checkpoint import read_checkpoint_state

    train = {"epochs": 1, "batch_size": 4, "warmup_steps": 0, "test_beam": 1, "test_limit": 1}
    run = {"model": {"kind": "ctc", **TINY_CTC, "vtlp": [0.9, 1.1]}, "train": {**train, "out_dir": str(tmp_path / "v")}}
    result = train_asr(run, task=toy_asr_task(), log=lambda s: None)
    assert np.isfinite(result["history"][0]["train_loss"])
    assert read_checkpoint_state(tmp_path / "v" / "last")["config"]["model"]["vtlp"] == [0.9, 1.1]

    plain = {"model": {"kind": "ctc", **TINY_CTC}, "train": {**train, "out_dir": str(tmp_path / "p")}}
    train_asr(plain, task=toy_asr_task(), log=lambda s: None)
    sidecar = next(p for p in (tmp_path / "p" / "last").iterdir() if p.suffix == ".json" and "vtlp" in p.read_text())
    saved = json.loads(sidecar.read_text())
    del saved["config"]["model"]["vtlp"]  # as a run of the library before model.vtlp
    sidecar.write_text(json.dumps(saved))
    logs: list = []
    train_asr(plain, task=toy_asr_task(), log=logs.append, resume=True)  # a finished run: nothing left to train
    assert "resumed from" in logs[0] and "at epoch 1" in logs[0]
