"""Encoder options of session 10: 20 ms frames (``subsampling: 2``) and the bidirectional encoder."""

import numpy as np
import pytest
import torch

from torchssm.audio.asr import ASRConfig, CTCRecognizer, SambaASR
from torchssm.audio.streaming import StreamingRecognizer, stream_audio

TINY = dict(d_model=16, n_layers=2, n_mels=16, n_decoder_layers=1, layer_kwargs={"d_state": 4, "expand": 2})


def test_subsampling_2_gives_20ms_frames_and_streams():
    torch.manual_seed(0)
    model = CTCRecognizer(ASRConfig(subsampling=2, **TINY)).double().eval()
    audio = torch.randn(7000, dtype=torch.float64)
    offline = model(audio[None])[0]
    mel_frames = (7000 - 400) // 160 + 1  # 42 frames of 10 ms
    assert mel_frames == 42 and offline.shape[0] == 21 == int(model.encoder.frame_lengths(torch.tensor([7000])))
    default = CTCRecognizer(ASRConfig(**TINY)).eval()
    assert default(audio[None].float()).shape[1] == 11  # 40 ms: ceil(ceil(42 / 2) / 2)
    for chunk_ms in (10.0, 13.7):  # the causal 20 ms encoder still streams exactly
        emissions, _ = stream_audio(model, audio, chunk_ms)
        torch.testing.assert_close(emissions, offline, rtol=1e-10, atol=1e-10)


def _batched_equals_alone(model):
    audio = torch.randn(2, 6000, dtype=torch.float64)
    lengths = torch.tensor([6000, 3700])
    batched = model(audio, lengths)
    alone = model(audio[1:, :3700], lengths[1:])
    n = int(model.encoder.frame_lengths(lengths[1:]))
    assert alone.shape[1] == n < batched.shape[1]
    torch.testing.assert_close(batched[1, :n], alone[0], rtol=1e-10, atol=1e-10)  # padding never leaks
    return audio, lengths, batched


@pytest.mark.parametrize("subsampling", [2, 4])
def test_bidirectional_encoder_reads_the_future_but_not_the_padding(subsampling):
    torch.manual_seed(0)
    model = CTCRecognizer(ASRConfig(bidirectional=True, subsampling=subsampling, **TINY)).double().eval()
    audio, lengths, batched = _batched_equals_alone(model)
    # the backward direction: changing the end of the audio changes the first frames' emissions
    later = audio.clone()
    later[0, 4000:] = torch.randn(2000, dtype=torch.float64)
    assert not torch.allclose(model(later, lengths)[0, :3], batched[0, :3])
    # the backward layers are each utterance's own reversal: a causal copy of the forward layers reproduces a
    # time-reversed pass when the forward layers are silenced
    for layer in model.encoder.layers:
        for p in layer.parameters():
            p.data.zero_()
    back_only = model(audio[:1], lengths[:1])
    flipped = model.encoder
    x = flipped.subsample(flipped.front(audio[:1]))
    h = x.flip(1)
    for norm, layer in zip(flipped.norms, flipped.backward_layers):
        h = h + layer(norm(h))
    expected = torch.log_softmax(model.head(flipped.out_norm(h.flip(1))), -1)
    torch.testing.assert_close(back_only, expected, rtol=1e-10, atol=1e-10)


def test_causal_encoder_is_unchanged_by_lengths_and_samba_accepts_bidirectional():
    torch.manual_seed(0)
    model = CTCRecognizer(ASRConfig(**TINY)).double().eval()
    audio = torch.randn(2, 6000, dtype=torch.float64)
    lengths = torch.tensor([6000, 3700])
    torch.testing.assert_close(model(audio, lengths), model(audio))
    samba = SambaASR(ASRConfig(kind="samba", bidirectional=True, subsampling=2, **TINY)).double().eval()
    tokens = torch.tensor([[29, 3, 4], [29, 6, 7]])
    batched = samba.logits(audio, lengths, tokens)
    alone = samba.logits(audio[1:, :3700], lengths[1:], tokens[1:])
    torch.testing.assert_close(batched[1], alone[0])


def test_bidirectional_refuses_streaming_and_bad_options():
    model = CTCRecognizer(ASRConfig(bidirectional=True, **TINY))
    with pytest.raises(ValueError, match="streaming needs a causal encoder"):
        StreamingRecognizer(model)
    with pytest.raises(ValueError, match="no state: it cannot stream"):
        model.encoder.blocks(torch.zeros(1, 3, 16), states=[None, None])
    with pytest.raises(ValueError, match="subsampling must be 2 .20 ms frames. or 4"):
        ASRConfig(subsampling=3)
    with pytest.raises(ValueError, match="subsampling must be"):
        ASRConfig(subsampling=True)
    with pytest.raises(ValueError, match="bidirectional must be true or false"):
        ASRConfig(bidirectional="yes")
    with pytest.raises(ValueError, match="must be causal"):
        CTCRecognizer(
            ASRConfig(
                bidirectional=True,
                layer="lru",
                layer_kwargs={"bidirectional": True},
                **{k: v for k, v in TINY.items() if k != "layer_kwargs"},
            )
        )


def test_transcribe_cli_refuses_to_stream_a_bidirectional_checkpoint(tmp_path, capsys):
    soundfile = pytest.importorskip("soundfile")
    from torchssm.cli import main
    from torchssm.train.checkpoint import save_checkpoint

    wav = tmp_path / "noise.wav"
    soundfile.write(wav, (0.1 * torch.randn(8000)).numpy(), 16000)
    cfg = ASRConfig(bidirectional=True, subsampling=2, **TINY)
    save_checkpoint(tmp_path / "run" / "last", CTCRecognizer(cfg), config={"model": cfg.to_dict()})
    assert main(["transcribe", "--checkpoint", str(tmp_path / "run"), str(wav)]) == 0  # offline: fine
    capsys.readouterr()
    assert main(["transcribe", "--checkpoint", str(tmp_path / "run"), str(wav), "--stream"]) == 2
    err = capsys.readouterr().err.strip()
    assert "streaming needs a causal encoder" in err and len(err.splitlines()) == 1


def test_min_frames_is_where_ctc_becomes_possible():
    from torchssm.audio.ctc import labelling_log_prob, min_frames

    torch.manual_seed(0)
    for labels in ([1, 2, 3], [1, 1, 2], [2, 2, 2], [1, 2, 1]):
        t = min_frames(labels)
        assert t == {0: 3, 1: 4, 2: 5}[sum(a == b for a, b in zip(labels, labels[1:]))]
        short = torch.log_softmax(torch.randn(t - 1, 4, dtype=torch.float64), -1)
        enough = torch.log_softmax(torch.randn(t, 4, dtype=torch.float64), -1)
        assert labelling_log_prob(short, labels) == -float("inf")
        assert labelling_log_prob(enough, labels) > -float("inf")


def test_encoder_frames_and_ctc_frame_need():
    from torchssm.audio.asr import encoder_frames
    from torchssm.audio.asr_eval import ctc_frame_need
    from torchssm.audio.synthetic import SpeechDataset

    n = torch.tensor([400, 3000, 6000, 7001, 16000])
    for s in (2, 4):
        enc = CTCRecognizer(ASRConfig(subsampling=s, **TINY)).encoder
        assert torch.equal(encoder_frames(n, s), enc.frame_lengths(n))
    ds = SpeechDataset([torch.zeros(7000).numpy(), torch.zeros(16000).numpy()], ["ab", "too fast speech"])
    need40, need20 = ctc_frame_need(ds, 4), ctc_frame_need(ds, 2)
    # "ab": 2 frames of 11 (40 ms); "too fast speech": 15 characters + 2 repeats (oo, ee) of 25 frames (49 at 20 ms)
    assert need40.tolist() == pytest.approx([2 / 11, 17 / 25])
    assert need20.tolist() == pytest.approx([2 / 21, 17 / 49])
    assert ctc_frame_need(ds, 4, speed=1.1)[1] == pytest.approx(17 / 23)  # ceil(16000 / 1.1) samples: 89 mel frames
    with pytest.raises(ValueError, match="subsampling must be"):
        encoder_frames(n, 8)
    with pytest.raises(ValueError, match="must be a list of speed factors in"):
        ctc_frame_need(ds, 4, speed=0)


def test_speed_perturbed_length_is_dsp_speed_perturb_length():
    from torchssm.audio import dsp
    from torchssm.audio.dsp import speed_perturbed_length  # what ctc_frame_need counts with

    rng = np.random.default_rng(0)
    for factor in (0.9, 1.0, 1.1, 0.95, 1.05, 1.25, 0.5, 2.0, 1 / 3 + 0.5, 1.37, 0.777):
        for n in (1, 2, 9, 10, 11, 399, 16000, 16001, int(rng.integers(2, 60000))):
            x = np.zeros(n, np.float32)
            assert speed_perturbed_length(n, factor) == len(dsp.speed_perturb(x, factor)), (n, factor)
    with pytest.raises(ValueError, match="must be a list of speed factors in"):
        speed_perturbed_length(100, 3.0)


def test_need_buckets():
    from torchssm.audio.asr_eval import _need_bucket

    got = [_need_bucket(r) for r in (0.3, 0.6, 0.75, 0.89, 0.9, 1.0, 1.01)]
    assert got == ["< 0.6", "0.6-0.7", "0.7-0.8", "0.8-0.9", "0.9-1", "0.9-1", "> 1 (cannot align)"]


def test_spec_augment_frames_are_the_log_mel_frames(monkeypatch):
    from torchssm.audio import asr
    from torchssm.audio.features import LogMel

    seen = []
    monkeypatch.setattr(asr, "spec_augment", lambda x, frames, policy: seen.append(frames) or x)
    n = torch.tensor([399, 400, 3000, 7001, 16000])
    enc = CTCRecognizer(ASRConfig(spec_augment="LB", **TINY)).encoder.train()
    enc.subsample(enc.front(torch.zeros(5, 16000)), n)
    mel = LogMel(16000, n_fft=asr.MEL_WINDOW, hop=asr.MEL_HOP, n_mels=8)
    actual = [0] + [mel(torch.zeros(1, int(k))).shape[1] for k in n[1:]]  # LogMel of each alone (399: none)
    assert seen[0].tolist() == actual == asr.log_mel_frames(n).tolist() == [0, 1, 17, 42, 98]
