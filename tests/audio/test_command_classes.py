"""Speech Commands' twelve labels (``words="12"``): the commands, ``_silence_`` and ``_unknown_``, in the synthetic
``spoken_commands`` task, the real ``speech_commands`` reader, the voice groups, the baseline and ``speech spot``."""

import math

import numpy as np
import pytest
import torch

soundfile = pytest.importorskip("soundfile")

from torchssm.audio import dsp, synthetic  # noqa: E402
from torchssm.audio.synthetic import COMMANDS, OTHER_WORDS, SILENCE, UNKNOWN  # noqa: E402
from torchssm.data.registry import build_task  # noqa: E402

TWELVE = (*COMMANDS, SILENCE, UNKNOWN)


@pytest.fixture
def heard(monkeypatch):
    """(text, voice) of every utterance synthesis was asked for, in order; eSpeak NG replaced by a tone."""
    said: list[tuple[str, str]] = []

    class Engine:
        def synthesize(self, utterance):
            said.append((utterance.text, utterance.voice))
            return np.sin(np.arange(4000, dtype=np.float32) / (3.0 + len(utterance.text)))

    monkeypatch.setattr(synthetic, "default_engine", lambda: Engine())
    return said


def test_command_classes():
    assert synthetic.command_classes() == COMMANDS and synthetic.command_classes("12") == TWELVE
    assert synthetic.command_classes(12) == TWELVE  # `--set task.words=12` reads an int
    assert len(OTHER_WORDS) == 25 and not set(OTHER_WORDS) & set(COMMANDS)  # v0.02's 35 words in all
    for bad in ("11", "all", True, None):
        with pytest.raises(ValueError, match="words must be '10'"):
            synthetic.command_classes(bad)


def test_spoken_commands_twelve_labels(tmp_path, heard):
    options = {"n_train": 24, "n_val": 0, "n_test": 12, "voice_split": "speakers", "data_dir": tmp_path}
    task = build_task("spoken_commands", words=12, snr_db=None, **options)
    assert task.info.d_output == 12 and task.extra["words"] == TWELVE
    targets = task.train.tensors["targets"]
    assert targets.tolist() == [i % 12 for i in range(24)]
    clips = task.train.tensors["inputs"][..., 0]  # (24, 16000), clean
    assert not clips[targets == 10].any() and clips[targets != 10].abs().amax(-1).min() > 0.1
    train_said = heard[:22]  # silence is never synthesised: 22 of the 24 training clips are spoken
    assert len(heard) == 22 + 11
    spoken = [i for i in range(24) if i % 12 != 10]
    for i, (text, voice) in zip(spoken, train_said):
        assert text == COMMANDS[i % 12] if i % 12 < 10 else text in OTHER_WORDS
        assert voice == synthetic.item_voice("train", i, 0, "speakers")  # the voice draw is unchanged
    # the ten-word task's clips are the same clips: words=12 only turns clips 10, 11 of every 12 into the new classes
    ten = build_task("spoken_commands", snr_db=None, **options)
    torch.testing.assert_close(ten.train.tensors["inputs"][:10], task.train.tensors["inputs"][:10])
    assert len(list(tmp_path.glob("spoken_commands_*.npz"))) == 4  # a cache of its own per split


def test_silence_gets_the_noise_of_an_average_clip(tmp_path, heard):
    options = {"n_train": 12, "n_val": 0, "n_test": 24, "voice_split": "speakers", "data_dir": tmp_path, "words": "12"}
    clean = build_task("spoken_commands", snr_db=None, **options).test.tensors["inputs"][..., 0].numpy()
    noisy = build_task("spoken_commands", snr_db=10.0, **options).test.tensors["inputs"][..., 0].numpy()
    silent = [i for i in range(24) if i % 12 == 10]
    mean_power = np.mean([dsp.power(clean[i]) for i in range(24) if i not in silent])
    for i in silent:
        assert dsp.power(noisy[i]) == pytest.approx(mean_power / 10.0, rel=1e-4)  # 10 dB below the mean clip
    assert not np.allclose(noisy[silent[0]], noisy[silent[1]])  # each its own noise
    with pytest.raises(ValueError, match="silence_power > 0"):
        synthetic.noisy(np.zeros(100, np.int16), 10.0, "white", np.random.default_rng(0))
    assert not synthetic.noisy(np.zeros(100, np.int16), None, "white", np.random.default_rng(0)).any()


def test_voice_groups_twelve_labels():
    from torchssm.audio.kws import voice_groups

    groups = voice_groups(24, voice_split="speakers", words="12")
    assert groups[SILENCE] == [10, 22] and groups[UNKNOWN] == [11, 23]
    families = [g for g in groups if g not in (SILENCE, UNKNOWN, "test_only")]
    in_families = sorted(i for g in families for i in groups[g])
    assert in_families == [i for i in range(24) if i % 12 != 10]  # silence has no voice
    assert SILENCE not in voice_groups(24, voice_split="speakers")
    assert SILENCE not in voice_groups(10, voice_split="speakers", words="12")  # no silence clip among the first 10


def test_kws_baseline_twelve_labels(tmp_path, heard, capsys):
    from torchssm.audio.kws import logmel_logistic_baseline
    from torchssm.cli import main

    r = logmel_logistic_baseline(snr_db=20.0, data_dir=tmp_path, n_train=24, n_test=24, words="12")
    assert r["n_test"] == 24 and set(r["test_acc_by_group"]) >= {SILENCE, UNKNOWN}
    assert main(["speech", "kws-baseline", "--data-dir", str(tmp_path), "--n-train", "24", "--n-test", "24",
                 "--snr", "20", "--words", "12"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"test accuracy {r['test_acc']:.4f}" in out and f"{SILENCE} {r['test_acc_by_group'][SILENCE]:.4f}" in out


def _tone(n, f):
    return (0.3 * np.sin(2 * np.pi * f * np.arange(n) / 16000)).astype(np.float32)


def test_speech_commands_reader_twelve_labels(tmp_path):
    root = tmp_path / "speech_commands_v0.02"
    words = {"yes": 12, "no": 9, "marvin": 3, "bed": 2}  # clips per word, all training clips
    for k, (word, n) in enumerate(words.items()):
        (root / word).mkdir(parents=True)
        for i in range(n):
            soundfile.write(root / word / f"s{i}_nohash_0.wav", _tone(16000, 300 + 50 * k), 16000, subtype="FLOAT")
    (root / "validation_list.txt").write_text("")
    (root / "testing_list.txt").write_text("yes/s0_nohash_0.wav\nbed/s0_nohash_0.wav\n")
    with pytest.raises(FileNotFoundError, match="_background_noise_ has no .wav files"):
        build_task("speech_commands", data_dir=tmp_path, words="12")
    (root / "_background_noise_").mkdir()
    background = np.random.default_rng(0).uniform(-0.5, 0.5, 40000).astype(np.float32)
    soundfile.write(root / "_background_noise_" / "noise.wav", background, 16000, subtype="FLOAT")
    task = build_task("speech_commands", data_dir=tmp_path, words=12)
    assert task.info.d_output == 12 and task.extra["words"] == list(TWELVE)
    train = task.train.tensors["targets"].tolist()
    n_extra = math.ceil(20 * 0.1)  # 11 yes + 9 no training clips: ceil(10%) unknown and as many silence
    assert sorted(train) == sorted([0] * 11 + [1] * 9 + [10] * n_extra + [11] * n_extra)
    assert task.test.tensors["targets"].tolist() == [0, 11, 10]  # yes; bed as unknown; one silence clip
    silence = task.train.tensors["inputs"][torch.tensor(train) == 10, :, 0].numpy()
    for clip in silence:  # a 1-s cut of the background at a volume in [0, 0.1]
        starts = [s for s in range(len(background) - 16000 + 1) if abs(background[s]) > 1e-3]
        scale = [clip[0] / background[s] for s in starts]
        assert any(0 < a <= 0.1 and np.allclose(clip, a * background[s : s + 16000], atol=1e-6) for a, s in
                   zip(scale, starts))  # fmt: skip
    again = build_task("speech_commands", data_dir=tmp_path, words="12")
    torch.testing.assert_close(again.train.tensors["inputs"], task.train.tensors["inputs"])  # deterministic
    with pytest.raises(ValueError, match="words must be '10', '12' or 'all'"):
        build_task("speech_commands", data_dir=tmp_path, words="11")
    from test_spotting import _train

    from torchssm.audio.spotting import load_spotter

    checkpoint = _train(tmp_path, "sc12", {"name": "speech_commands", "words": "12"})
    assert load_spotter(checkpoint, data_dir=tmp_path).words == TWELVE  # its class names without reading the corpus


def test_spotter_and_cli_with_twelve_labels(tmp_path, heard, monkeypatch, capsys):
    from test_spotting import _train

    from torchssm.audio import spotting
    from torchssm.audio.kws import snr_sweep_by_family
    from torchssm.cli import main

    checkpoint = _train(tmp_path, "run", {"name": "spoken_commands", "n_train": 12, "n_val": 0, "n_test": 12,
                                          "voice_split": "speakers", "frame": 16, "words": 12})  # fmt: skip
    spotter = spotting.load_spotter(checkpoint)
    assert spotter.words == TWELVE
    by_group = snr_sweep_by_family(checkpoint, [10.0])[10.0]  # silence and unknown as groups of their own
    assert {SILENCE, UNKNOWN} <= set(by_group) and "male" in by_group
    windows = spotting.spot(spotter, torch.zeros(32000), hop_s=1.0)
    assert len(windows) == 2 and windows[0]["probs"].shape == (12,)
    wav = tmp_path / "two.wav"
    soundfile.write(wav, np.zeros(32000, np.float32), 16000)
    fake = [{"start_s": float(k), "end_s": k + 1.0, "word": w, "prob": 0.9, "probs": torch.full((12,), 1 / 12)}
            for k, w in enumerate(["yes", SILENCE, UNKNOWN, "go"])]  # fmt: skip
    monkeypatch.setattr(spotting, "spot", lambda *a, **k: fake)
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(wav)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(wav), "--keywords-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2].split()[0] for line in lines] == ["yes", "go"]
    monkeypatch.setattr(spotting, "spot", lambda *a, **k: fake[1:3])
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(wav), "--keywords-only"]) == 0
    assert "no window of the 2 reaches probability 0 with a command word" in capsys.readouterr().out


def test_detection_rates_by_hand():
    from torchssm.audio.kws import detection_rates

    probs = torch.zeros(5, 12)
    probs[0, 3] = 0.95  # command 3, heard right and sure
    probs[1, 4] = 0.6  # command 3 clip heard as command 4, unsure
    probs[2, 10] = 0.9  # command 5 clip called silence: a false reject at every threshold
    probs[3, 11] = 0.99  # unknown clip called unknown
    probs[4, 7] = 0.7  # silence clip heard as command 7: a false alarm below 0.7
    targets = torch.tensor([3, 3, 5, 11, 10])
    r = detection_rates(probs, targets, thresholds=(0.0, 0.65, 0.99))
    assert r["threshold"] == [0.0, 0.65, 0.99]
    assert r["command_accuracy"] == pytest.approx([1 / 3, 1 / 3, 0.0])
    assert r["false_reject"] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert r["false_alarm"] == pytest.approx([0.5, 0.5, 0.0])
    assert r["false_alarm_silence"] == pytest.approx([1.0, 1.0, 0.0]) and r["false_alarm_unknown"] == [0.0] * 3
    ten = detection_rates(probs[:, :10], targets, thresholds=(0.0,))  # a ten-word model always hears a command
    assert ten["false_alarm"] == [1.0] and ten["false_reject"] == [0.0]
    for bad_probs, bad_targets, match in [
        (probs[:, :11], targets, r"probs \(n, 10 or 12\)"),
        (probs, targets[:4], "targets"),
    ]:
        with pytest.raises(ValueError, match=match):
            detection_rates(bad_probs, bad_targets)
    with pytest.raises(ValueError, match="thresholds must be probabilities"):
        detection_rates(probs, targets, thresholds=(1.5,))


def test_detection_curves_and_cli(tmp_path, heard, capsys):
    from test_spotting import _train

    from torchssm.audio.kws import detection_curves, detection_rates
    from torchssm.cli import main
    from torchssm.train.reload import load_run

    task = {"name": "spoken_commands", "n_train": 12, "n_val": 0, "n_test": 24, "voice_split": "speakers"}
    twelve = _train(tmp_path, "twelve", {**task, "frame": 16, "words": 12})
    ten = _train(tmp_path, "ten", {**task, "frame": 16}, seed=1)
    curves = detection_curves([twelve, ten], thresholds=(0.0, 0.5), data_dir=tmp_path)
    run = load_run(twelve, data_dir=tmp_path)  # its own test clips are the twelve-label ones
    with torch.no_grad():
        probs = run.model(run.task.test.tensors["inputs"]).softmax(-1)
    expected = detection_rates(probs, run.task.test.tensors["targets"], (0.0, 0.5))
    assert set(curves[twelve]) == set(expected)
    for key, values in expected.items():
        assert curves[twelve][key] == pytest.approx(values, nan_ok=True)
    assert curves[ten]["false_alarm"][0] == 1.0  # the ten-word model hears a command in every clip at threshold 0
    figure = tmp_path / "det.png"
    argv = [
        "speech",
        "kws-detection",
        "--checkpoints",
        twelve,
        ten,
        "--labels",
        "12",
        "10",
        "--data-dir",
        str(tmp_path),
    ]
    assert main([*argv, "--thresholds", "0", "0.5", "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "12" and f"false alarms {expected['false_alarm'][0]:.4f}" in out
    assert figure.stat().st_size > 0
    assert main(["speech", "kws-detection", "--checkpoints", twelve, ten, "--labels", "one"]) == 2
    assert "--labels: one per checkpoint, got 1 for 2" in capsys.readouterr().err
    assert main(["speech", "kws-detection", "--checkpoints", twelve, ten, "--labels", "a", "a"]) == 2
    assert "--labels repeat" in capsys.readouterr().err
    other = _train(tmp_path, "other_voices", {**task, "frame": 16, "voice_split": "families"})
    with pytest.raises(ValueError, match="tested on other clips"):
        detection_curves([twelve, other], data_dir=tmp_path)
    with pytest.raises(ValueError, match="checkpoints repeat"):
        detection_curves([twelve, twelve], data_dir=tmp_path)
