"""Data augmentation for speech: speed perturbation (Ko et al. 2015) and SpecAugment (Park et al. 2019)."""

import numpy as np
import pytest
import torch

from torchssm.audio import dsp
from torchssm.audio.asr import ASRConfig, CTCRecognizer, SambaASR
from torchssm.audio.asr_runs import load_recognizer
from torchssm.audio.asr_train import ASRTrainConfig, load_encoder, perturb_speed, train_asr
from torchssm.audio.features import SPEC_AUGMENT_POLICIES, spec_augment
from torchssm.audio.synthetic import SpeechDataset
from torchssm.data.registry import TaskData, TaskInfo

TINY = dict(d_model=16, n_layers=2, n_mels=16, n_decoder_layers=1, layer_kwargs={"d_state": 4, "expand": 2})


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / 16000)[spectrum.argmax()])


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_perturb_scales_duration_and_frequency(factor):
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float32)
    fast = dsp.speed_perturb(tone, factor)
    assert fast.dtype == np.float32 and len(fast) == int(np.ceil(16000 / factor))
    assert abs(_peak_hz(fast) - 500 * factor) < 2.0  # pitch moves with the speed
    np.testing.assert_array_equal(dsp.speed_perturb(tone, 1.0), tone)
    with pytest.raises(ValueError, match="speed factor"):
        dsp.speed_perturb(tone, 3.0)


def test_spec_augment_masks_within_bounds():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 200, 80) + 5.0  # no zeros before masking
    lengths = torch.tensor([200, 30] * 32)
    y = spec_augment(x, lengths, "LD", generator=gen)
    masked = y == 0
    torch.testing.assert_close(y[~masked], x[~masked], rtol=0, atol=0)
    freq = masked.all(1)  # (b, channels): channels masked at every frame
    time = masked.all(2)  # (b, t): frames masked in every channel
    max_f, n_freq, max_t, ratio, n_time = SPEC_AUGMENT_POLICIES["LD"]
    assert int(freq.sum(1).max()) <= n_freq * max_f and int(freq.sum()) > 0
    assert int(time.sum(1).max()) <= n_time * max_t and int(time.sum()) > 0
    short = time[1::2]
    assert not short[:, 30:].any()  # time masks stay inside the utterance ...
    assert int(short.sum(1).max()) <= n_time * int(ratio * 30)  # ... and within p * tau per mask
    # every masked element is in a masked channel or frame (masks are full bands)
    torch.testing.assert_close(masked, freq[:, None, :] | time[:, :, None], rtol=0, atol=0)
    again = spec_augment(x, lengths, "LD", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, y, rtol=0, atol=0)
    with pytest.raises(ValueError, match="policy"):
        spec_augment(x, lengths, "XL")


def test_spec_augment_in_the_recogniser_only_when_training():
    with pytest.raises(ValueError, match="spec_augment"):
        ASRConfig(spec_augment="strong")
    torch.manual_seed(0)
    plain = CTCRecognizer(ASRConfig(**TINY)).double()
    augmented = CTCRecognizer(ASRConfig(spec_augment="LB", **TINY)).double()
    augmented.load_state_dict(plain.state_dict())
    audio, lengths = torch.randn(2, 8000, dtype=torch.float64), torch.tensor([8000, 5000])
    targets, target_lengths = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    plain.eval(), augmented.eval()
    torch.testing.assert_close(augmented(audio, lengths), plain(audio, lengths), rtol=0, atol=0)
    plain.train(), augmented.train()
    torch.manual_seed(1)
    loss_aug = augmented.loss(audio, lengths, targets, target_lengths)
    loss_plain = plain.loss(audio, lengths, targets, target_lengths)
    assert not torch.isclose(loss_aug, loss_plain)


def test_speed_perturb_option_of_training():
    with pytest.raises(ValueError, match="speed_perturb"):
        ASRTrainConfig(speed_perturb=[0.9, 5.0])
    items = [{"audio": np.ones(1600, np.float32), "text": "a"} for _ in range(50)]
    out = perturb_speed(items, (0.9, 1.0, 1.1), torch.Generator().manual_seed(0))
    assert {len(it["audio"]) for it in out} == {1600, 1455, 1778}
    assert all(it["text"] == "a" for it in out)


def _toy_task():
    t = torch.arange(4000) / 16000
    audio = [(0.5 * torch.sin(2 * torch.pi * (300.0 if i % 2 == 0 else 2000.0) * t)).numpy() for i in range(8)]
    ds = SpeechDataset(audio, ["a" if i % 2 == 0 else "b" for i in range(8)])
    info = TaskInfo(name="toy", d_input=1, d_output=31, length=0, kind="transcription")
    return TaskData(info=info, train=ds, val=None, test=ds, extra={"heldout_words": []})


def test_augmented_training_and_encoder_init(tmp_path):
    task = _toy_task()
    ctc_dir = tmp_path / "ctc"
    cfg = {
        "model": {"kind": "ctc", "spec_augment": "SS", **{**TINY, "n_mels": 80}},  # the paper's 80 channels
        "train": {
            "epochs": 120,
            "batch_size": 8,
            "lr": 1e-2,
            "warmup_steps": 0,
            "out_dir": str(ctc_dir),
            "speed_perturb": [0.9, 1.0, 1.1],
            "test_beam": 1,
        },
    }
    result = train_asr(cfg, task=task, log=lambda s: None)
    assert result["test_greedy"]["cer"] == 0.0  # the tones still map to their letters under augmentation
    ctc = load_recognizer(ctc_dir)
    samba = SambaASR(ASRConfig(kind="samba", **{**TINY, "n_mels": 80}))
    load_encoder(samba, ctc_dir)
    for name, value in ctc.encoder.state_dict().items():
        torch.testing.assert_close(samba.encoder.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoder"):
        load_encoder(SambaASR(ASRConfig(kind="samba", **TINY)), ctc_dir)  # 16 mel channels: another encoder


def test_spoken_commands_speed_copies(tmp_path):
    pytest.importorskip("espeakng_loader")
    from torchssm.data.registry import build_task

    kw = dict(n_train=10, n_val=0, n_test=10, snr_db=None)
    plain = build_task("spoken_commands", data_dir=tmp_path, **kw)
    aug = build_task("spoken_commands", data_dir=tmp_path, speed_perturb=[0.8, 1.25], **kw)
    x, y = aug.train.tensors["inputs"][..., 0], aug.train.tensors["targets"]
    assert x.shape == (30, 16000) and y.tolist() == list(range(10)) * 3
    torch.testing.assert_close(x[:10], plain.train.tensors["inputs"][..., 0], rtol=0, atol=0)
    torch.testing.assert_close(aug.test.tensors["inputs"], plain.test.tensors["inputs"], rtol=0, atol=0)

    def span(clip):
        loud = torch.nonzero(clip.abs() > 0)[:, 0]
        return int(loud[-1] - loud[0] + 1)

    for i in range(10):  # the word lasts 1 / factor as long (to a few samples of filter tails)
        assert abs(span(x[10 + i]) - span(x[i]) / 0.8) < 60 or span(x[10 + i]) == 16000
        assert abs(span(x[20 + i]) - span(x[i]) / 1.25) < 60
    with pytest.raises(ValueError, match="speed_perturb"):
        build_task("spoken_commands", data_dir=tmp_path, speed_perturb=[1.0], **kw)


def test_kws_baseline_trains_on_the_speed_copies(tmp_path):
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("sklearn")
    from torchssm.audio.kws import logmel_logistic_baseline

    kw = dict(data_dir=tmp_path, n_train=20, n_val=0, n_test=10)
    r = logmel_logistic_baseline(snr_db=20.0, speed_perturb=(0.9, 1.1), **kw)
    assert r["n_train"] == 60 and r["n_test"] == 10 and 0.0 <= r["test_acc"] <= 1.0


def test_item_voice_is_the_voice_that_speaks_the_item(heard_voices):
    from torchssm.audio import synthetic

    heard = heard_voices
    for i in range(12):
        synthetic.command_clip(3, synthetic.SPLIT_IDS["test"], i, 0.0)
    assert heard == [synthetic.item_voice("test", i, seed=3) for i in range(12)]
    heard.clear()
    for i in range(12):
        synthetic.command_clip(3, synthetic.SPLIT_IDS["test"], i, 0.0, voice_split="speakers")
    assert heard == [synthetic.item_voice("test", i, seed=3, voice_split="speakers") for i in range(12)]
    with pytest.raises(ValueError, match="variant"):
        synthetic.voice_family("en-us")
    with pytest.raises(ValueError, match="split"):
        synthetic.item_voice("dev", 0)


@pytest.mark.slow  # 3-5 s on the loaded 2-core machine (a tiny training run, the sweep, the runs it is checked on)
@pytest.mark.parametrize("voice_split", ["families", "speakers"])
def test_snr_sweep_by_family(tmp_path, monkeypatch, voice_split):
    pytest.importorskip("espeakng_loader")
    from torchssm.audio.kws import snr_sweep, snr_sweep_by_family, voice_groups
    from torchssm.audio.synthetic import item_voice, voice_family
    from torchssm.data.loaders import TensorDictDataset
    from torchssm.train import reload
    from torchssm.train.config import ExperimentConfig
    from torchssm.train.loop import train
    from torchssm.train.losses import evaluate
    from torchssm.train.reload import load_run

    task = {"name": "spoken_commands", "n_train": 10, "n_val": 0, "n_test": 30, "features": "logmel", "n_mels": 8}
    task["voice_split"] = voice_split
    cfg = ExperimentConfig.from_dict(
        {
            "task": task,
            "model": {"layer": "s4d", "d_model": 8, "n_layers": 1, "pooling": "mean"},
            "train": {"epochs": 1, "batch_size": 10, "out_dir": str(tmp_path / "run"), "progress": False},
        }
    )
    train(cfg, data_dir=tmp_path, log=lambda s: None)
    loads = []
    monkeypatch.setattr(reload, "load_run", lambda *a, **k: loads.append(k["snr_db"]) or load_run(*a, **k))
    sweep = snr_sweep_by_family(tmp_path / "run" / "last", [0.0, 20.0], data_dir=tmp_path)
    assert loads == [0.0]  # the run is loaded once, its test clips rebuilt at each SNR
    for snr, accs in sweep.items():  # the numbers of a run rebuilt at that SNR and evaluated group by group
        run = load_run(tmp_path / "run" / "last", data_dir=tmp_path, snr_db=snr, n_train=1, n_val=0)
        x, y = (run.task.test.tensors[k] for k in ("inputs", "targets"))
        assert accs["all"] == evaluate(run.model, run.task.test, run.task.info)["acc"]
        for group, idx in voice_groups(30, voice_split=voice_split).items():
            subset = TensorDictDataset(inputs=x[torch.tensor(idx)], targets=y[torch.tensor(idx)])
            assert accs[group] == evaluate(run.model, subset, run.task.info, batch_size=7)["acc"]
    counts = {}
    for i in range(30):
        family = voice_family(item_voice("test", i, voice_split=voice_split))
        counts[family] = counts.get(family, 0) + 1
    test_only = {"test_only"} if voice_split == "speakers" else set()  # variants m7 / f5 (30 clips hold some)
    for accs in sweep.values():
        assert set(accs) == {"all", *counts, *test_only}
        pooled = sum(accs[f] * n for f, n in counts.items()) / 30  # the families partition the test set
        assert abs(pooled - accs["all"]) < 1e-9
    assert snr_sweep(tmp_path / "run" / "last", [0.0, 20.0], data_dir=tmp_path) == {
        snr: accs["all"] for snr, accs in sweep.items()
    }


def _spec_augment_80(features, policy, generator):  # the masks of before the scaling (F for any channels)
    max_f, n_freq, max_t, ratio, n_time = SPEC_AUGMENT_POLICIES[policy]
    b, t, channels = features.shape
    keep = torch.ones(b, t, channels, dtype=torch.bool)

    def draw(high):
        return int(torch.randint(0, max(high, 0) + 1, (1,), generator=generator))

    for i in range(b):
        for _ in range(n_freq):
            f = draw(min(max_f, channels))
            f0 = draw(channels - f)
            keep[i, :, f0 : f0 + f] = False
        for _ in range(n_time):
            w = draw(min(max_t, int(ratio * t)))
            t0 = draw(t - w)
            keep[i, t0 : t0 + w, :] = False
    return features * keep


@pytest.mark.parametrize("policy", ["LB", "SM"])
def test_spec_augment_frequency_bound_scales_with_channels(policy):
    from torchssm.audio.features import spec_augment_freq_bound

    x = torch.randn(300, 50, 80) + 5.0
    torch.testing.assert_close(  # 80 channels (the paper's): the masks of before, draw for draw
        spec_augment(x, None, policy, generator=torch.Generator().manual_seed(3)),
        _spec_augment_80(x, policy, torch.Generator().manual_seed(3)),
        rtol=0,
        atol=0,
    )
    max_f, n_freq = SPEC_AUGMENT_POLICIES[policy][:2]
    assert [spec_augment_freq_bound(max_f, c) for c in (80, 40, 160)] == [max_f, round(max_f / 2 + 0.01), 2 * max_f]
    small = torch.randn(1000, 200, 40) + 5.0  # time masks at most 100 of the 200 frames
    widths = (spec_augment(small, None, "LB", generator=torch.Generator().manual_seed(0)) == 0).all(1).sum(1)
    assert int(widths.max()) == spec_augment_freq_bound(27, 40) == 14  # 27 * 40 / 80 = 13.5 -> 14, not 27
