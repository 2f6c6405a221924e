"""Readers for Speech Commands v0.02 and LibriSpeech on tiny files in the official layouts."""

import numpy as np
import pytest
import torch

soundfile = pytest.importorskip("soundfile")

from torchssm.audio.corpora import build_librispeech, build_speech_commands, read_audio  # noqa: E402
from torchssm.data.registry import build_task  # noqa: E402


def _tone(n, f=440.0, rate=16000):
    return (0.3 * np.sin(2 * np.pi * f * np.arange(n) / rate)).astype(np.float32)


def write_speech_commands(root):
    layout = {
        "yes": ["a_nohash_0", "b_nohash_0", "c_nohash_0"],
        "no": ["a_nohash_0", "d_nohash_1"],
        "marvin": ["a_nohash_0"],
    }
    for word, stems in layout.items():
        (root / word).mkdir(parents=True)
        for i, stem in enumerate(stems):
            soundfile.write(root / word / f"{stem}.wav", _tone(12000 + 1000 * i), 16000, subtype="PCM_16")
    (root / "_background_noise_").mkdir()
    soundfile.write(root / "_background_noise_" / "white_noise.wav", _tone(32000, 3000), 16000)
    (root / "validation_list.txt").write_text("yes/b_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/c_nohash_0.wav\nno/d_nohash_1.wav\n")


def test_speech_commands_layout(tmp_path):
    root = tmp_path / "speech_commands_v0.02"
    write_speech_commands(root)
    task = build_task("speech_commands", data_dir=tmp_path)
    assert task.info.d_output == 10 and task.info.length == 16000
    assert task.train.tensors["targets"].tolist() == [1, 0]  # no/a, yes/a (marvin is not one of the 10)
    assert task.val.tensors["targets"].tolist() == [0] and task.test.tensors["targets"].tolist() == [1, 0]
    x = task.test.tensors["inputs"]
    assert x.shape == (2, 16000, 1) and float(x[1, 14000:].abs().max()) == 0.0  # zero-padded
    np.testing.assert_allclose(x[1, :14000, 0].numpy(), _tone(14000), atol=1e-4)  # 16-bit PCM
    every = build_speech_commands(root=str(root), words="all")
    assert every.extra["words"] == ["marvin", "no", "yes"] and len(every.train) == 3
    with pytest.raises(ValueError, match="words"):
        build_speech_commands(root=str(root), words="20")
    (root / "testing_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testing_list"):
        build_speech_commands(root=str(root))


def test_speech_commands_separate_test_archive(tmp_path):
    """test_root: the unpacked speech_commands_test_set_v0.02 (a folder per twelve-label class, no lists) is the
    test split; training and validation still come from the corpus and its lists."""
    write_speech_commands(tmp_path / "speech_commands_v0.02")
    archive = tmp_path / "speech_commands_test_set_v0.02"
    for k, (label, n) in enumerate({"yes": 2, "no": 1, "_silence_": 1, "_unknown_": 2}.items()):
        (archive / label).mkdir(parents=True)
        for i in range(n):
            soundfile.write(archive / label / f"t{i}.wav", _tone(16000, 500 + 100 * k), 16000, subtype="PCM_16")
    listed = build_task("speech_commands", data_dir=tmp_path)
    task = build_task("speech_commands", data_dir=tmp_path, test_root=str(archive))
    assert task.test.tensors["targets"].tolist() == [1, 0, 0]  # no, yes, yes: the archive's command clips
    np.testing.assert_allclose(task.test.tensors["inputs"][0, :, 0].numpy(), _tone(16000, 600), atol=1e-4)
    torch.testing.assert_close(task.train.tensors["inputs"], listed.train.tensors["inputs"])  # training unchanged
    twelve = build_task("speech_commands", data_dir=tmp_path, words="12", test_root="default")
    assert twelve.test.tensors["targets"].tolist() == [10, 11, 11, 1, 0, 0]  # the archive's folders, sorted
    np.testing.assert_allclose(twelve.test.tensors["inputs"][0, :, 0].numpy(), _tone(16000, 700), atol=1e-4)
    with pytest.raises(ValueError, match="needs words='10' or '12', not 'all'"):
        build_task("speech_commands", data_dir=tmp_path, words="all", test_root="default")
    with pytest.raises(FileNotFoundError, match="no Speech Commands test set directory"):
        build_task("speech_commands", data_dir=tmp_path, test_root=str(tmp_path / "missing"))
    (archive / "marvin").mkdir()
    with pytest.raises(ValueError, match=r"folders \['marvin'\] are not test set classes; expected some of"):
        build_task("speech_commands", data_dir=tmp_path, test_root="default")


def write_librispeech(root, lines):
    chapter = root / "test-clean" / "19" / "198"
    chapter.mkdir(parents=True)
    for i, _ in enumerate(lines):
        soundfile.write(chapter / f"19-198-{i:04d}.flac", _tone(8000 + 100 * i), 16000)
    (chapter / "19-198.trans.txt").write_text("".join(f"19-198-{i:04d} {t}\n" for i, t in enumerate(lines)))


def test_librispeech_layout(tmp_path):
    root = tmp_path / "LibriSpeech"
    write_librispeech(root, ["HELLO WORLD", "IT'S  A TEST"])
    task = build_librispeech(root=str(root), train="test-clean", val=None, test="test-clean")
    assert [task.test[i]["text"] for i in range(2)] == ["hello world", "it's a test"]
    assert len(task.test[1]["audio"]) == 8100


@pytest.mark.parametrize("line,match", [("", "empty transcript"), ("HELLO W0RLD", "outside the alphabet")])
def test_librispeech_bad_transcripts(tmp_path, line, match):
    root = tmp_path / "LibriSpeech"
    write_librispeech(root, ["GOOD"])
    trans = root / "test-clean" / "19" / "198" / "19-198.trans.txt"
    trans.write_text(trans.read_text() + f"19-198-0001 {line}\n")
    with pytest.raises(ValueError, match=match):
        build_librispeech(root=str(root), train="test-clean", val=None, test="test-clean")


def test_read_audio_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match="unreadable"):
        read_audio(bad)
    soundfile.write(tmp_path / "8k.wav", _tone(800, rate=8000), 8000)
    with pytest.raises(ValueError, match="8000 Hz, expected 16000"):
        read_audio(tmp_path / "8k.wav")
    soundfile.write(tmp_path / "stereo.wav", np.stack([_tone(100)] * 2, 1), 16000)
    with pytest.raises(ValueError, match="mono"):
        read_audio(tmp_path / "stereo.wav")
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "missing.wav")
