"""audio.spotting and `torchssm speech spot`: a trained keyword classifier over 1-s windows of a recording; each
window's probabilities are the model's on that clip as the run's task gives it."""

import json

import pytest
import torch

soundfile = pytest.importorskip("soundfile")

TASK = {"name": "spoken_commands", "n_train": 10, "n_val": 0, "n_test": 4, "voice_split": "speakers"}


def _train(tmp_path, name: str, task: dict, seed: int = 0) -> str:
    from torchssm.train.config import ExperimentConfig
    from torchssm.train.loop import train

    cfg = ExperimentConfig.from_dict(
        {
            "task": task,
            "model": {"layer": "s4d", "d_model": 8, "n_layers": 1, "pooling": "mean", "norm": "batch"},
            "train": {"epochs": 1, "batch_size": 5, "seed": seed, "out_dir": str(tmp_path / name), "progress": False},
        }
    )
    train(cfg, data_dir=tmp_path, log=lambda s: None)
    return str(tmp_path / name / "last")


def _test_clips(checkpoint, data_dir, **overrides):
    """(the run's test inputs, the model's probabilities on them)."""
    from torchssm.train.reload import load_run

    run = load_run(checkpoint, data_dir=data_dir, **overrides)
    inputs = run.task.test.tensors["inputs"]
    with torch.no_grad():
        probs = run.model(inputs).softmax(-1)
    return inputs, probs


def test_window_starts():
    from torchssm.audio.spotting import window_starts

    assert window_starts(16000, 4000) == [0] and window_starts(100, 4000) == [0]
    assert window_starts(40000, 4000) == [0, 4000, 8000, 12000, 16000, 20000, 24000]  # the last ends at 40000
    assert window_starts(41000, 4000) == [0, 4000, 8000, 12000, 16000, 20000, 24000, 25000]  # one more to the end
    assert window_starts(32001, 16000) == [0, 16000, 16001]
    with pytest.raises(ValueError, match="empty"):
        window_starts(0, 4000)
    with pytest.raises(ValueError, match="at least one sample"):
        window_starts(20000, 0)


@pytest.mark.parametrize("shape", [{"frame": 16}, {"features": "logmel", "n_mels": 8}])
def test_spot_gives_the_models_probabilities(tmp_path, heard_voices, shape):
    from torchssm.audio.spotting import load_spotter, spot

    checkpoint = _train(tmp_path, "run", {**TASK, **shape})
    inputs, probs = _test_clips(checkpoint, tmp_path, n_train=1, n_val=0)
    waves = inputs.reshape(len(inputs), 16000) if "frame" in shape else None
    if waves is None:  # log-mel inputs: the waves are the task's noisy clips before the front end
        from torchssm.data.registry import build_task

        options = {k: v for k, v in TASK.items() if k != "name"}
        raw = build_task("spoken_commands", data_dir=tmp_path, **{**options, "n_train": 1, "n_val": 0})
        waves = raw.test.tensors["inputs"][..., 0]
    spotter = load_spotter(checkpoint)
    assert spotter.words == ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
    recording = waves[:3].reshape(-1)  # three clips end to end: windows at 0, 1 and 2 s with a hop of 1 s
    windows = spot(spotter, recording, hop_s=1.0)
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    torch.testing.assert_close(torch.stack([w["probs"] for w in windows]), probs[:3])
    assert [w["word"] for w in windows] == [spotter.words[int(k)] for k in probs[:3].argmax(-1)]
    assert [w["prob"] for w in windows] == pytest.approx(probs[:3].max(-1).values.tolist())
    half = spot(spotter, waves[3, :8000])  # shorter than a second: one window, zero-padded at its end
    assert len(half) == 1 and half[0]["end_s"] == 0.5
    padded = torch.cat([waves[3, :8000], torch.zeros(8000)])
    torch.testing.assert_close(half[0]["probs"], spot(spotter, padded)[0]["probs"])
    assert len(spot(spotter, recording, hop_s=0.25)) == 9  # starts 0, 0.25, ..., 2.0 s
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        spot(spotter, waves[:2])
    with pytest.raises(ValueError, match="hop_s must be > 0"):
        spot(spotter, recording, hop_s=0.0)


def test_spot_speech_commands_reader(tmp_path):
    """A classifier trained on the real Speech Commands reader: its word list (all words) and inputs (16000, 1)."""
    from test_corpora import write_speech_commands

    from torchssm.audio.spotting import load_spotter, spot

    write_speech_commands(tmp_path / "speech_commands_v0.02")
    checkpoint = _train(tmp_path, "sc", {"name": "speech_commands", "words": "all"})
    spotter = load_spotter(checkpoint, data_dir=tmp_path)
    assert spotter.words == ("marvin", "no", "yes")
    inputs, probs = _test_clips(checkpoint, tmp_path)
    windows = spot(spotter, inputs[:, :, 0].reshape(-1), hop_s=1.0)
    torch.testing.assert_close(torch.stack([w["probs"] for w in windows]), probs)


def test_spot_cli(tmp_path, heard_voices, capsys):
    from torchssm.cli import main

    checkpoint = _train(tmp_path, "run", {**TASK, "frame": 16})
    inputs, probs = _test_clips(checkpoint, tmp_path, n_train=1, n_val=0)
    recording = inputs[:3].reshape(-1).numpy()
    wav = tmp_path / "three.wav"
    soundfile.write(wav, recording, 16000, subtype="FLOAT")  # float samples: read back to the bit
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(wav), "--hop-ms", "1000", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, p, start in zip(lines, probs[:3], (0, 1, 2)):
        path, span, best, others = line.split("\t")
        order = p.argsort(descending=True)
        assert path == str(wav) and span == f"{start:.2f}-{start + 1:.2f} s"
        assert best == f"{words[int(order[0])]} {float(p[order[0]]):.3f}"
        assert others == f"({words[int(order[1])]} {float(p[order[1]]):.3f})"
    top = float(probs[:3].max())
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(wav), "--hop-ms", "1000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["words"] == words and len(out["windows"]) == 3
    torch.testing.assert_close(torch.tensor([w["probs"] for w in out["windows"]]), probs[:3])
    threshold = ["--threshold", f"{top - 1e-6:.7f}", "--hop-ms", "1000"]
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(wav), *threshold]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # only the surest window
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(wav), "--threshold", "1"]) == 0
    assert "no window of the 9 reaches probability 1" in capsys.readouterr().out
    figure = tmp_path / "spots.png"
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(wav), "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 0 and f"figure: {figure}" in capsys.readouterr().out
    for bad, message in [
        ([str(wav), "--threshold", "1.5"], "--threshold must be a probability in [0, 1]"),
        ([str(wav), "--top", "0"], "--top must be >= 1"),
        ([str(wav), "--hop-ms", "0"], "hop_s must be > 0"),
        ([str(wav), str(wav), "--figure", str(figure)], "--figure draws one recording; got 2 files"),
    ]:
        assert main(["speech", "spot", "--checkpoint", checkpoint, *bad]) == 2
        assert message in capsys.readouterr().err
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, recording[:0], 16000)
    assert main(["speech", "spot", "--checkpoint", checkpoint, str(empty)]) == 2
    assert "the audio is empty" in capsys.readouterr().err
    other = _train_other_task(tmp_path)
    assert main(["speech", "spot", "--checkpoint", other, str(wav)]) == 2
    assert "trained on task 'adding'; keyword spotting needs a spoken_commands" in capsys.readouterr().err


def _train_other_task(tmp_path) -> str:
    from torchssm.train.config import ExperimentConfig
    from torchssm.train.loop import train

    cfg = ExperimentConfig.from_dict(
        {
            "task": {"name": "adding", "length": 16, "n_train": 8, "n_val": 0, "n_test": 4},
            "model": {"layer": "s4d", "d_model": 4, "n_layers": 1, "pooling": "mean"},
            "train": {"epochs": 1, "batch_size": 4, "out_dir": str(tmp_path / "adding"), "progress": False},
        }
    )
    train(cfg, data_dir=tmp_path, log=lambda s: None)
    return str(tmp_path / "adding" / "last")
