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


def test_train_rejects_bad_overrides(capsys):
    assert main(["speech", "train", "--preset", "audio/asr_ctc", "--set", "epochs=1"]) == 2
    assert "section.key=value" in capsys.readouterr().err
