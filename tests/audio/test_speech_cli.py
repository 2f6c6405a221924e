"""torchssm speech say / transcribe / train on tiny inputs."""

import pytest

from torchssm.cli import main

pytest.importorskip("espeakng_loader")
soundfile = pytest.importorskip("soundfile")


def test_say_and_transcribe(tmp_path, capsys):
    wav = tmp_path / "go.wav"
    assert main(["speech", "say", "go", "--out", str(wav), "--voice", "en-us+m2"]) == 0
    data, rate = soundfile.read(wav)
    assert rate == 16000 and 2000 < len(data) < 20000
    from torchssm.audio.asr import ASRConfig, CTCRecognizer
    from torchssm.train.checkpoint import save_checkpoint

    cfg = ASRConfig(d_model=16, n_layers=1, n_mels=16, layer_kwargs={"d_state": 4})
    save_checkpoint(tmp_path / "run" / "last", CTCRecognizer(cfg), config={"model": cfg.to_dict()})
    capsys.readouterr()
    assert main(["transcribe", "--checkpoint", str(tmp_path / "run"), str(wav)]) == 0
    assert capsys.readouterr().out.startswith(str(wav))
    assert main(["transcribe", "--checkpoint", str(tmp_path / "run"), str(wav), "--stream", "--chunk-ms", "10"]) == 0
    assert "real-time factor" in capsys.readouterr().out
    assert main(["transcribe", "--checkpoint", str(tmp_path / "run"), str(tmp_path / "missing.wav")]) == 2
    assert "no audio file" in capsys.readouterr().err
    assert main(["speech", "say", "go", "--out", str(wav), "--voice", "nope"]) == 2
    assert "no voice" in capsys.readouterr().err
    from torchssm.audio.asr import SambaASR

    samba = ASRConfig(kind="samba", d_model=16, n_layers=1, n_mels=16, layer_kwargs={"d_state": 4})
    save_checkpoint(tmp_path / "samba" / "last", SambaASR(samba), config={"model": samba.to_dict()})
    assert main(["transcribe", "--checkpoint", str(tmp_path / "samba"), str(wav)]) == 0
    assert main(["transcribe", "--checkpoint", str(tmp_path / "samba"), str(wav), "--stream"]) == 2
    assert "--stream needs a CTC recogniser" in capsys.readouterr().err


def test_train_rejects_bad_overrides(capsys):
    assert main(["speech", "train", "--preset", "audio/asr_ctc", "--set", "epochs=1"]) == 2
    assert "section.key=value" in capsys.readouterr().err


def test_train_writes_its_result_and_flushes_its_log(tmp_path, monkeypatch):
    """speech train: the training log is flushed line by line (progress in a redirected log) and result.json is
    written in out_dir (through a temporary file: no half-written result)."""
    import json

    from torchssm.audio import asr_train

    seen = {}

    def fake_train(config, data_dir=None, log=print, resume=False):
        seen["flush"], seen["resume"] = getattr(log, "keywords", {}).get("flush"), resume
        log("epoch=1")
        return {"test_greedy": {"cer": 0.5}}

    monkeypatch.setattr(asr_train, "train_asr", fake_train)
    out = tmp_path / "run"
    out.mkdir()
    assert main(["speech", "train", "--preset", "audio/asr_ctc", "--set", f"train.out_dir={out}"]) == 0
    assert seen["flush"] is True and seen["resume"] is False
    assert json.loads((out / "result.json").read_text()) == {"test_greedy": {"cer": 0.5}}
    assert [p.name for p in out.iterdir()] == ["result.json"]  # no temporary file left behind
    assert main(["speech", "train", "--preset", "audio/asr_ctc", "--set", f"train.out_dir={out}", "--resume"]) == 0
    assert seen["resume"] is True


def test_kws_baseline_voice_split(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from torchssm.audio.kws import logmel_logistic_baseline, voice_groups
    from torchssm.audio.synthetic import TEST_ONLY_VARIANTS, item_voice

    args = ["speech", "kws-baseline", "--snr", "20", "--n-train", "10", "--n-test", "10", "--data-dir", str(tmp_path)]
    assert main(args) == 0  # the default: the presets' held-out speakers, with the test-only variants m7 / f5
    out = capsys.readouterr().out
    assert "10 train / 10 test clips" in out and "test_only" in out and "whisper" in out
    assert main([*args, "--voice-split", "families"]) == 0  # whole families held out, whisper among them
    out = capsys.readouterr().out
    assert "10 train / 10 test clips" in out and "test_only" not in out and "whisper" in out
    groups = voice_groups(10, voice_split="speakers")
    assert groups["test_only"] == [
        i for i in range(10) if item_voice("test", i, voice_split="speakers").split("+")[1] in TEST_ONLY_VARIANTS
    ]
    r = logmel_logistic_baseline(snr_db=20.0, data_dir=tmp_path, n_train=10, n_test=10, voice_split="speakers")
    assert logmel_logistic_baseline(snr_db=20.0, data_dir=tmp_path, n_train=10, n_test=10) == r  # default: speakers
    families_r = logmel_logistic_baseline(snr_db=20.0, data_dir=tmp_path, n_train=10, n_test=10, voice_split="families")
    assert set(families_r["test_acc_by_group"]) == set(voice_groups(10)) and "test_only" in r["test_acc_by_group"]
    families = {k: v for k, v in groups.items() if k != "test_only"}
    assert sorted(i for idx in families.values() for i in idx) == list(range(10))  # the families partition the test
    pooled = sum(r["test_acc_by_group"][k] * len(idx) for k, idx in families.items()) / 10
    assert abs(pooled - r["test_acc"]) < 1e-9
    assert "test_only" not in voice_groups(10)  # the default families split: no test-only variant
    with pytest.raises(SystemExit):
        main([*args, "--voice-split", "genders"])
    assert "invalid choice: 'genders'" in capsys.readouterr().err
    extra = logmel_logistic_baseline(
        snr_db=20.0, data_dir=tmp_path, n_train=10, n_test=10, extra_train_variants=["klatt"]
    )
    assert main([*args, "--extra-train-variants", "klatt"]) == 0  # other training voices, the same test clips
    assert f"test accuracy {extra['test_acc']:.4f} (train {extra['train_acc']:.4f}, 10 train / 10 test" in (
        capsys.readouterr().out
    )
    assert main([*args, "--extra-train-variants", "whisper"]) == 2
    assert "'whisper' is not an extra variant" in capsys.readouterr().err
    accented = logmel_logistic_baseline(
        snr_db=20.0, data_dir=tmp_path, n_train=10, n_test=10, extra_train_accents=["de"]
    )
    assert main([*args, "--extra-train-accents", "de"]) == 0
    assert f"test accuracy {accented['test_acc']:.4f} (train {accented['train_acc']:.4f}" in capsys.readouterr().out
    assert main([*args, "--extra-train-accents", "en-us-nyc"]) == 2
    assert "'en-us-nyc' is not an extra accent" in capsys.readouterr().err
