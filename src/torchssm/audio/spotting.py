"""Keyword spotting in audio files with a trained ``spoken_commands`` or ``speech_commands`` classifier.

These classifiers see one-second 16 kHz clips (S4's SC10 setting, Gu et al. 2022, Sec. 5.3). A recording is cut
into one-second windows every ``hop`` seconds (the last window ends where the recording ends, so its tail is
always seen; a recording shorter than a second is one window, zero-padded at its end as the Speech Commands
reader pads short clips), each window is turned into model inputs exactly as the run's task turns its clips
(:func:`torchssm.audio.synthetic.clip_inputs`: raw samples, framed or not, or log-mel frames), and the model's
softmax gives each window's word probabilities:

    p(word | window k) = softmax(f(x[k * hop : k * hop + 16000]))

The ten-word classifiers have no "silence" or "unknown" class: every window gets one of their words, and the
probability says how sure the model is (``torchssm speech spot --threshold`` hides the unsure windows). A
classifier trained with ``task.words=12`` (Speech Commands' twelve labels) has ``_silence_`` and ``_unknown_``
classes, so a window without a command can say so (``spot --keywords-only`` then hides those windows).

    spotter = load_spotter("runs/spoken_commands_s4d_bidir/last")
    for window in spot(spotter, audio_16k):  # (n,) float tensor at 16 kHz
        print(window["start_s"], window["word"], window["prob"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from torchssm.audio.synthetic import SAMPLE_RATE

WINDOW = SAMPLE_RATE  # samples per window: the classifiers' one-second clips


@dataclass
class KeywordSpotter:
    """A trained keyword classifier and how its task turns 1-s clips into its inputs."""

    model: nn.Module  # eval mode
    words: tuple[str, ...]  # class names, label i = words[i]
    featurize: Callable[[torch.Tensor], torch.Tensor]  # (n, 16000) clips -> (n, L, d) model inputs


def load_spotter(checkpoint, data_dir=None) -> KeywordSpotter:
    """The classifier of a ``torchssm train`` run on ``spoken_commands`` or ``speech_commands`` (a checkpoint or run
    directory), built from its saved config without rebuilding the task's data (``speech_commands`` with
    ``words="all"`` lists the corpus' folders for its word list: ``data_dir`` or the run's ``root``)."""
    from torchssm.audio.corpora import (
        speech_commands_files,
        speech_commands_info,
        speech_commands_root,
        speech_commands_words,
    )
    from torchssm.audio.synthetic import clip_inputs, command_classes, commands_info, words_option
    from torchssm.train.reload import read_run_config, trained_model

    path, _, config = read_run_config(checkpoint)
    options = config.task_options
    which = words_option(options)
    if config.task_name == "spoken_commands":
        shape = {k: options[k] for k in ("features", "n_mels", "frame") if k in options}
        words: Sequence[str] = command_classes(which)
        info = commands_info(**shape, words=which)
        featurize: Callable[[torch.Tensor], torch.Tensor] = partial(clip_inputs, **shape)
    elif config.task_name == "speech_commands":
        files = speech_commands_files(speech_commands_root(data_dir, options.get("root"))) if which == "all" else {}
        words = speech_commands_words(files, which)
        info = speech_commands_info(len(words))
        featurize = partial(torch.unsqueeze, dim=-1)  # (n, 16000) -> (n, 16000, 1)
    else:
        raise ValueError(
            f"{path} was trained on task {config.task_name!r}; keyword spotting needs a spoken_commands or "
            "speech_commands classifier"
        )
    return KeywordSpotter(model=trained_model(path, config, info), words=tuple(words), featurize=featurize)


def window_starts(n: int, hop: int, size: int = WINDOW) -> list[int]:
    """Start samples of the windows over ``n`` samples: every ``hop`` samples, and a last one ending at ``n``
    when the hops stop short of it; one window at 0 when ``n <= size``."""
    if n < 1:
        raise ValueError("the audio is empty (0 samples)")
    if hop < 1:
        raise ValueError(f"hop must be at least one sample, got {hop}")
    if n <= size:
        return [0]
    starts = list(range(0, n - size + 1, hop))
    if starts[-1] + size < n:
        starts.append(n - size)
    return starts


def spot(spotter: KeywordSpotter, audio: torch.Tensor, hop_s: float = 0.25, batch_size: int = 64) -> list[dict]:
    """One dict per one-second window of ``audio`` ((n,) float samples at 16 kHz, in [-1, 1]):
    {"start_s", "end_s", "word": the most probable word, "prob": its probability, "probs": (n_words,) tensor}.
    ``end_s`` is where the window's audio ends (before any zero-padding)."""
    if audio.dim() != 1:
        raise ValueError(f"audio must be one channel of samples, shape (n,); got shape {tuple(audio.shape)}")
    if not hop_s > 0:
        raise ValueError(f"hop_s must be > 0 seconds, got {hop_s}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    audio = audio.float()
    starts = window_starts(len(audio), max(1, round(hop_s * SAMPLE_RATE)))
    padded = torch.nn.functional.pad(audio, (0, max(0, WINDOW - len(audio))))  # (max(n, 16000),)
    probs = []
    with torch.no_grad():
        for i in range(0, len(starts), batch_size):
            clips = torch.stack([padded[s : s + WINDOW] for s in starts[i : i + batch_size]])  # (b, 16000)
            probs.append(spotter.model(spotter.featurize(clips)).softmax(-1))  # (b, n_words)
    p = torch.cat(probs)  # (windows, n_words)
    top, best = p.max(-1)
    return [
        {
            "start_s": s / SAMPLE_RATE,
            "end_s": min(s + WINDOW, len(audio)) / SAMPLE_RATE,
            "word": spotter.words[int(best[k])],
            "prob": float(top[k]),
            "probs": p[k],
        }
        for k, s in enumerate(starts)
    ]


def plot_spots(windows: Sequence[dict], words: Sequence[str], path, title: str = "") -> str:
    """Figure of :func:`spot`'s result: each word's probability (rows) in each window (columns, by start time),
    written atomically to ``path`` (.png / .svg / .pdf)."""
    from torchssm.analysis.plots import new_figure, save_figure

    if not windows:
        raise ValueError("no windows to plot")
    p = torch.stack([w["probs"] for w in windows]).T.numpy()  # (n_words, windows)
    starts = [w["start_s"] for w in windows]
    half = (starts[1] - starts[0]) / 2 if len(starts) > 1 else 0.5
    # column edges: halfway between window starts (the last window may start closer than a hop to the one before)
    edges = [starts[0] - half, *((a + b) / 2 for a, b in zip(starts, starts[1:])), starts[-1] + half]
    fig, (ax,) = new_figure(size=(max(5.0, min(14.0, 0.25 * len(windows))), 0.3 * len(words) + 1.5))
    image = ax.pcolormesh(edges, range(len(words) + 1), p, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_yticks([k + 0.5 for k in range(len(words))], list(words))
    ax.set_xlabel("window start (s); each window is 1 s long")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="probability")
    return save_figure(fig, path)
