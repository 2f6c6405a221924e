"""spoken_mulaw: voice recordings, the windows of the task and where they come from."""

import numpy as np
import pytest
import torch
from _speech_common import fake_sentences

from torchssm.audio import waveform
from torchssm.audio.dsp import mu_law_encode
from torchssm.audio.waveform import voice_recordings


def test_voice_recordings_join_each_voice_in_order():
    clips = [np.full(3, i, dtype=np.float32) for i in range(5)]
    joined = voice_recordings(clips, ["a", "b", "a", "c", "b"])
    assert [r.tolist() for r in joined] == [[0, 0, 0, 2, 2, 2], [1, 1, 1, 4, 4, 4], [3, 3, 3]]
    with pytest.raises(ValueError, match="one voice per clip"):
        voice_recordings(clips, ["a"])


def test_voice_recordings_give_long_single_voice_windows(monkeypatch):
    fake_sentences(monkeypatch)
    kwargs = dict(length=250, n_train=6, n_val=0, n_test=4, n_sentences=40, voice_split="speakers")
    with pytest.raises(ValueError, match="no utterance is longer than length=250"):
        waveform.build_spoken_mulaw(**kwargs)
    task = waveform.build_spoken_mulaw(**kwargs, recordings="voices")
    assert task.val is None and task.info.length == 250
    for split in (task.train, task.test):
        codes = torch.cat([split.tensors["inputs"], split.tensors["targets"][:, -1:]], dim=1)
        assert codes.shape[1] == 251
        assert bool((codes == codes[:, :1]).all())  # one level, so one voice, in each 2.5-clip window
    with pytest.raises(ValueError, match="recordings must be one of"):
        waveform.build_spoken_mulaw(length=64, recordings="speaker")


def test_window_sources_place_the_windows_of_the_task(monkeypatch):
    fake_sentences(monkeypatch, clip_len=120)
    rng_noise = np.random.default_rng(3)
    clips = [rng_noise.uniform(-1, 1, size).astype(np.float32) for size in (50, 300, 90, 400)]
    sources = waveform.window_sources(clips, 64, 20, np.random.default_rng(7))
    assert set(sources[:, 0].tolist()) == {1, 2, 3} and (sources[:, 1] >= 0).all()  # clip 0 is too short
    assert all(start + 65 <= len(clips[k]) for k, start in sources.tolist())
    windows = waveform.mulaw_windows(clips, 64, 20, np.random.default_rng(7))
    for i, (k, start) in enumerate(sources.tolist()):
        codes = mu_law_encode(clips[k][start : start + 65])
        assert windows.tensors["inputs"][i].tolist() == codes[:-1].tolist()
        assert windows.tensors["targets"][i].tolist() == codes[1:].tolist()
    options = dict(seed=0, n_sentences=40, voice_split="speakers", recordings="voices")
    task = waveform.build_spoken_mulaw(length=200, n_train=3, n_val=0, n_test=5, **options)
    recordings = waveform.spoken_mulaw_recordings("test", length=200, **options)
    rebuilt = waveform.mulaw_windows(recordings, 200, 5, waveform.window_rng(0, "test", 200))
    assert torch.equal(rebuilt.tensors["inputs"], task.test.tensors["inputs"])
    with pytest.raises(ValueError, match="split must be one of"):
        waveform.spoken_mulaw_recordings("dev")
