"""eSpeak NG through ctypes: determinism, voices, parameters, errors."""

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from torchssm.audio.espeak import NATIVE_RATE, Utterance, default_engine, synthesize, voice_name  # noqa: E402


def test_native_rate_and_audio():
    speech = synthesize("yes", voice="en-us+m3")
    assert default_engine().sample_rate == NATIVE_RATE == 22050
    assert speech.dtype == np.float32 and 0.1 * NATIVE_RATE < len(speech) < 1.5 * NATIVE_RATE
    assert 0.01 < np.abs(speech).max() <= 1.0


def test_deterministic_whatever_came_before():
    # libespeak-ng carries state between utterances; each request runs in a fork of a pristine server
    first = synthesize("stop", voice="en-us+m3", rate=150, seed=1)
    synthesize("a different sentence to disturb any state", voice="en-gb-scotland+f2", rate=300)
    again = synthesize("stop", voice="en-us+m3", rate=150, seed=1)
    np.testing.assert_array_equal(first, again)


def test_seed_parameters_and_voices_change_the_audio():
    base = synthesize("go", voice="en+whisper", seed=1)
    assert not np.array_equal(base, synthesize("go", voice="en+whisper", seed=2))  # whisper noise is seeded
    slow, fast = synthesize("left right", rate=100), synthesize("left right", rate=300)
    assert len(slow) > 1.5 * len(fast)
    a, b = synthesize("down", voice="en-us"), synthesize("down", voice="en-us+f3")
    assert not (len(a) == len(b) and np.array_equal(a, b))


def test_bad_input():
    with pytest.raises(ValueError, match="no voice"):
        synthesize("yes", voice="xx-nonexistent")
    with pytest.raises(ValueError, match="rate"):
        Utterance("yes", rate=10)
    with pytest.raises(ValueError, match="non-empty"):
        Utterance("  ")
    with pytest.raises(ValueError, match="accent"):
        voice_name("klingon", "m1")
    with pytest.raises(ValueError, match="variant"):
        voice_name("en-us", "m99")
