"""Autoregressive waveform modelling on synthetic speech: 8-bit mu-law samples, next-sample prediction.

The SaShiMi / Mamba audio set-up (Goel et al. 2022, Sec. 4; Gu & Dao 2023, Sec. 4.4): audio at 16 kHz
quantised to 256 mu-law levels (ITU-T G.711 companding as in WaveNet, van den Oord et al. 2016, Sec. 2.2;
:func:`torchssm.audio.dsp.mu_law_encode`), a causal sequence model predicting sample t+1 from samples
<= t, scored in bits per sample = cross-entropy / ln 2 (8 bits for a uniform guess).

Task ``spoken_mulaw``: windows of ``length`` + 1 consecutive codes cut from the clean utterances of
``spoken_sentences`` (same voice split: test windows come from unseen voices); inputs (length,)
long codes, targets (length,) the next codes, kind "seq2seq" (one target per step), so ``torchssm
train`` trains the deep model of ``models/backbone.py`` with per-step outputs (pooling none); its
``loss`` / ln 2 is the bits per sample. Bits per sample vs context length = runs at length 2^12 .. 2^16.
"""

from __future__ import annotations

import numpy as np
import torch

from torchssm.audio.dsp import mu_law_encode
from torchssm.data.loaders import TensorDictDataset
from torchssm.data.registry import TaskData, TaskInfo, register_task

CHANNELS = 256


def mulaw_windows(utterances, length: int, n: int, rng: np.random.Generator) -> TensorDictDataset:
    """``n`` windows of ``length + 1`` codes at random positions of utterances long enough to hold one."""
    usable = [u for u in utterances if len(u) > length]
    if not usable:
        raise ValueError(f"no utterance is longer than length={length} samples; use a shorter length")
    windows = np.empty((n, length + 1), dtype=np.int64)
    for i in range(n):
        u = usable[int(rng.integers(len(usable)))]
        start = int(rng.integers(len(u) - length))
        windows[i] = mu_law_encode(u[start : start + length + 1], CHANNELS)
    codes = torch.from_numpy(windows)
    return TensorDictDataset(inputs=codes[:, :-1].clone(), targets=codes[:, 1:].clone())


@register_task(
    "spoken_mulaw",
    "8-bit mu-law next-sample prediction on synthetic speech (eSpeak NG, 16 kHz); loss / ln 2 = bits per sample",
)
def build_spoken_mulaw(
    data_dir=None,
    seed: int = 0,
    length: int = 4096,
    n_train: int = 2000,
    n_val: int = 100,
    n_test: int = 200,
    n_sentences: int = 2000,
) -> TaskData:
    """Windows of mu-law codes (see the module docstring); the speech is ``spoken_sentences``' (cached)."""
    from torchssm.audio.synthetic import build_spoken_sentences

    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    speech = build_spoken_sentences(data_dir, seed=seed, n_train=n_sentences, n_val=100, n_test=200, snr_db=None)
    splits = {}
    for i, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        source = getattr(speech, name)
        if n:
            splits[name] = mulaw_windows(source.audio, length, n, np.random.default_rng([seed, i, length]))
    info = TaskInfo(
        name="spoken_mulaw",
        d_input=CHANNELS,
        d_output=CHANNELS,
        length=length,
        kind="seq2seq",
        input_kind="tokens",
        citation="mu-law speech modelling as in SaShiMi (Goel et al. 2022) on eSpeak NG synthetic speech",
    )
    return TaskData(info=info, train=splits["train"], val=splits.get("val"), test=splits["test"])
