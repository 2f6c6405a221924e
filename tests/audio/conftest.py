"""Fixtures of the speech tests."""

import numpy as np
import pytest


@pytest.fixture
def heard_voices(monkeypatch):
    """The voices synthesis was asked for, in order: ``audio.synthetic``'s engine replaced by a fake that
    records each utterance's voice and returns a 4000-sample tone (no eSpeak call)."""
    from torchssm.audio import synthetic

    heard: list[str] = []

    class Engine:
        def synthesize(self, utterance):
            heard.append(utterance.voice)
            return np.sin(np.arange(4000, dtype=np.float32) / 5.0)

    monkeypatch.setattr(synthetic, "default_engine", lambda: Engine())
    return heard
