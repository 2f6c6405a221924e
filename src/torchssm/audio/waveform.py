"""Autoregressive waveform modelling on synthetic speech: 8-bit mu-law samples, next-sample prediction.

The SaShiMi / Mamba audio set-up (Goel et al. 2022, Sec. 4; Gu & Dao 2023, Sec. 4.4): audio at 16 kHz
quantised to 256 mu-law levels (ITU-T G.711 companding as in WaveNet, van den Oord et al. 2016, Sec. 2.2;
:func:`torchssm.audio.dsp.mu_law_encode`), a causal sequence model predicting sample t+1 from samples
<= t, scored in bits per sample = cross-entropy / ln 2 (8 bits for a uniform guess).

Task ``spoken_mulaw``: windows of ``length`` + 1 consecutive codes cut from the clean speech of
``spoken_sentences`` (same voice split, ``voice_split``: test windows come from unseen voices); inputs
(length,) long codes, targets (length,) the next codes, kind "seq2seq" (one target per step), so
``torchssm train`` trains the deep model of ``models/backbone.py`` with per-step outputs (pooling none);
its ``loss`` / ln 2 is the bits per sample.

Recordings (``recordings``): "utterances" (the default) cuts windows from single sentences (2-5 s,
32k-80k samples, so a window of 2^16 fits in few of them); "voices" first joins, per voice, the
sentences that voice speaks in the split, in order and without a gap, into one long recording (one
speaker per recording, as a long recording of one person; the rate, pitch and intonation still change
from sentence to sentence), so that every window keeps one speaker however long it is. This joining
is this library's choice (the generator speaks single sentences), not a paper's set-up.

Bits per sample vs context length (by position, by context, with the far context swapped) are measured
in :mod:`torchssm.audio.waveform_analysis`; its command line stays ``python -m torchssm.audio.waveform
positions | context | swap | plot ...`` (:func:`main` here hands over to it).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from torchssm.audio.dsp import mu_law_encode
from torchssm.data.loaders import TensorDictDataset
from torchssm.data.registry import TaskData, TaskInfo, register_task

CHANNELS = 256
RECORDINGS = ("utterances", "voices")
SPLITS = ("train", "val", "test")  # the splits of spoken_mulaw, in the order of their window generators


def window_sources(utterances, length: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) int64 rows (utterance index, start) of :func:`mulaw_windows`' windows: a uniform draw among the
    utterances longer than ``length`` samples, then a uniform start that leaves ``length + 1`` samples."""
    usable = [i for i, u in enumerate(utterances) if len(u) > length]
    if not usable:
        raise ValueError(f"no utterance is longer than length={length} samples; use a shorter length")
    sources = np.empty((n, 2), dtype=np.int64)
    for i in range(n):
        k = usable[int(rng.integers(len(usable)))]
        sources[i] = k, int(rng.integers(len(utterances[k]) - length))
    return sources


def mulaw_windows(utterances, length: int, n: int, rng: np.random.Generator) -> TensorDictDataset:
    """``n`` windows of ``length + 1`` codes at random positions of utterances long enough to hold one
    (where :func:`window_sources` puts them)."""
    windows = np.empty((n, length + 1), dtype=np.int64)
    for i, (k, start) in enumerate(window_sources(utterances, length, n, rng)):
        windows[i] = mu_law_encode(utterances[k][start : start + length + 1], CHANNELS)
    codes = torch.from_numpy(windows)
    return TensorDictDataset(inputs=codes[:, :-1].clone(), targets=codes[:, 1:].clone())


def voice_recordings(clips: Sequence[np.ndarray], voices: Sequence[str]) -> list[np.ndarray]:
    """One recording per voice: the clips of that voice joined in their order, without a gap.

    ``voices[i]`` is the voice of ``clips[i]``; recordings come in the order of each voice's first clip.
    """
    if len(clips) != len(voices):
        raise ValueError(f"got {len(clips)} clips but {len(voices)} voices; expected one voice per clip")
    by_voice: dict[str, list[np.ndarray]] = {}
    for clip, voice in zip(clips, voices):
        by_voice.setdefault(voice, []).append(np.asarray(clip))
    return [np.concatenate(parts) for parts in by_voice.values()]


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
    voice_split: str = "families",
    recordings: str = "utterances",
) -> TaskData:
    """Windows of mu-law codes (see the module docstring); the speech is ``spoken_sentences``' (cached).

    ``n_sentences`` is the training split of ``spoken_sentences`` (its validation / test splits are its
    100 / 200 sentences); with the same ``n_sentences`` and ``voice_split`` the recogniser tasks' cache
    is reused.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    speech = _clean_sentences(data_dir, seed, n_sentences, voice_split, recordings)
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n:
            audio = _split_recordings(speech, name, seed, voice_split, recordings)
            splits[name] = mulaw_windows(audio, length, n, window_rng(seed, name, length))
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


def window_rng(seed: int, split: str, length: int) -> np.random.Generator:
    """The generator of a split's windows in :func:`build_spoken_mulaw` (one per seed, split and length)."""
    return np.random.default_rng([seed, SPLITS.index(split), length])


def _clean_sentences(data_dir, seed: int, n_sentences: int, voice_split: str, recordings: str) -> TaskData:
    """The noiseless ``spoken_sentences`` (``n_sentences`` / 100 / 200, cached) that the windows are cut from."""
    from torchssm.audio.synthetic import build_spoken_sentences

    if recordings not in RECORDINGS:
        raise ValueError(f"recordings must be one of {list(RECORDINGS)}, got {recordings!r}")
    return build_spoken_sentences(
        data_dir, seed=seed, n_train=n_sentences, n_val=100, n_test=200, snr_db=None, voice_split=voice_split
    )


def _split_recordings(speech: TaskData, split: str, seed: int, voice_split: str, recordings: str) -> list[np.ndarray]:
    """The recordings windows of ``split`` are cut from: its utterances, or one per voice (``recordings``)."""
    from torchssm.audio.synthetic import item_voice

    audio = list(getattr(speech, split).audio)
    if recordings == "voices":
        voices = [item_voice(split, j, seed, voice_split) for j in range(len(audio))]
        audio = voice_recordings(audio, voices)
    return audio


def spoken_mulaw_recordings(
    split: str,
    data_dir=None,
    seed: int = 0,
    n_sentences: int = 2000,
    voice_split: str = "families",
    recordings: str = "utterances",
    **_window_options,
) -> list[np.ndarray]:
    """The recordings of ``split`` that :func:`build_spoken_mulaw` with these options cuts its windows from
    (the window options, ``length`` / ``n_train`` / ..., are accepted and ignored)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    speech = _clean_sentences(data_dir, seed, n_sentences, voice_split, recordings)
    return _split_recordings(speech, split, seed, voice_split, recordings)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m torchssm.audio.waveform positions | context | swap | plot ...``: the command line of
    :func:`torchssm.audio.waveform_analysis.main` (returns its exit status)."""
    from torchssm.audio.waveform_analysis import main as analysis_main

    return analysis_main(argv)


if __name__ == "__main__":
    sys.exit(main())
