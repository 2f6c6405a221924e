"""audio.progress: the bar shows on a terminal only, and never changes what is iterated."""

import io
import sys

from torchssm.audio import asr_train, decoding
from torchssm.audio.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_shows_on_a_terminal_only(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress(range(3), 3, "work")) == [0, 1, 2]
    assert "work" in terminal.getvalue()  # drawn, then cleared (leave=False)
    assert list(progress(range(3), 3, "few", least=50)) == [0, 1, 2] and "few" not in terminal.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file or a pipe: no bar
    bar = progress(range(3), 3, "quiet")
    assert list(bar) == [0, 1, 2] and bar.disable


def test_the_decoding_grid_draws_its_settings(monkeypatch):
    import torch

    from torchssm.audio.text import CharVocabulary

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    emissions = [torch.log_softmax(torch.randn(6, len(CharVocabulary().alphabet) + 1), -1)]
    hyps = decoding.grid_transcripts(emissions, CharVocabulary(), 2, None, [(0.0, 0.0), (0.0, 0.0)])
    assert len(hyps) == 2 and "beam 2, no LM: settings" in terminal.getvalue()


def test_training_a_recogniser_draws_its_epochs(tmp_path, monkeypatch):
    from _speech_common import toy_asr_task

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    config = {
        "task": {"name": "toy"},
        "model": {"kind": "ctc", "d_model": 16, "n_layers": 1, "n_mels": 16, "layer_kwargs": {"d_state": 4}},
        "train": {"epochs": 1, "batch_size": 4, "out_dir": str(tmp_path / "run"), "test_beam": 1},
    }
    asr_train.train_asr(config, task=toy_asr_task(), log=str)
    assert "epoch 1/1" in terminal.getvalue()
