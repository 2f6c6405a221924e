"""Helpers shared by the speech tests (imported as ``from _speech_common import ...``, as tests/layers does
with its ``_selective_common``)."""

import numpy as np
import torch

from torchssm.audio.asr import ASRConfig, CTCRecognizer
from torchssm.audio.synthetic import SpeechDataset
from torchssm.data.registry import TaskData, TaskInfo

TINY_CTC = {"d_model": 16, "n_layers": 1, "n_mels": 16, "layer_kwargs": {"d_state": 4}}


def toy_asr_task():
    """Two 'words' as tones of different pitch: a recogniser must map them to their letters."""
    t = torch.arange(4000) / 16000
    tone = lambda f: (0.5 * torch.sin(2 * torch.pi * f * t)).numpy()  # noqa: E731
    audio, texts = [], []
    for i in range(8):
        audio.append(tone(300.0) if i % 2 == 0 else tone(2000.0))
        texts.append("a" if i % 2 == 0 else "b")
    ds = SpeechDataset(audio, texts)
    info = TaskInfo(name="toy", d_input=1, d_output=31, length=0, kind="transcription")
    return TaskData(info=info, train=ds, val=None, test=ds, extra={"heldout_words": ["b"]})


def fake_sentences(monkeypatch, clip_len=100):
    """spoken_sentences replaced by short clips whose level tells their voice (no eSpeak needed)."""
    from torchssm.audio import synthetic

    def fake(data_dir=None, seed=0, n_train=2000, n_val=100, n_test=200, voice_split="families", **kwargs):
        splits = {}
        for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            voices = [synthetic.item_voice(name, i, seed, voice_split) for i in range(n)]
            levels = {v: 0.05 * (k + 1) for k, v in enumerate(sorted(set(voices)))}
            audio = [np.full(clip_len, levels[v], dtype=np.float32) for v in voices]
            splits[name] = synthetic.SpeechDataset(audio, ["x"] * n)
        return TaskData(info=None, train=splits["train"], val=splits["val"], test=splits["test"])

    monkeypatch.setattr(synthetic, "build_spoken_sentences", fake)


def tiny_sentences(monkeypatch):
    """spoken_sentences' prose replaced by ~200 three-word sentences of eleven words (eSpeak still speaks them)."""
    from torchssm.audio import prose

    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
    rng = np.random.default_rng(1)
    sentences = sorted({" ".join(rng.choice(words, 3)) for _ in range(200)})
    monkeypatch.setattr(prose, "cached_stdlib_sentences", lambda max_words, data_dir: sentences)


def tiny_ctc_recognizers(n=2, **cfg):
    """``n`` untrained tiny CTC recognisers (seeds 0 .. n - 1), in eval mode."""
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(CTCRecognizer(ASRConfig(**{**TINY_CTC, **cfg})).eval())
    return out


def saved_toy_runs(tmp_path, monkeypatch):
    """Two saved untrained recognisers (``tiny_ctc_recognizers``) of a toy task with val = test (the tones), its
    loading patched in; their run directories."""
    from torchssm.audio import asr_runs
    from torchssm.train.checkpoint import save_checkpoint

    a, b = tiny_ctc_recognizers()
    for name, model in (("a", a), ("b", b)):
        save_checkpoint(tmp_path / name / "last", model, config={"model": model.cfg.to_dict(), "task": {"name": "toy"}})
    toy = toy_asr_task()
    task = TaskData(info=toy.info, train=toy.train, val=toy.test, test=toy.test, extra=toy.extra)
    monkeypatch.setattr(asr_runs, "checkpoint_task", lambda path, data_dir=None, val_heldout=None: (path, task))
    return [tmp_path / "a", tmp_path / "b"]
