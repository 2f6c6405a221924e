"""Keyword-spotting baseline and SNR sweeps on ``spoken_commands``.

Baseline: log-mel frames (40 channels, 25 ms / 10 ms; :class:`torchssm.audio.features.LogMel`) of
each 1 s clip, flattened to 98 x 40 = 3920 features, standardised with the training set's mean and
standard deviation, and a multinomial logistic regression (scikit-learn ``LogisticRegression``,
L2, C = ``c``). It shows how separable the synthetic words are without any sequence model: the
gap between it and an SSM is what the SSM adds on this data, not on real speech.

:func:`snr_sweep` evaluates a model trained with ``torchssm train`` (a checkpoint) on the same test
voices at several SNRs; :func:`ensemble_accuracy` scores the mean of several such models' logits, and
:func:`accuracy_by_ensemble_size` every ensemble of k of them, k = 1..m.

Detection (:func:`detection_rates`, :func:`detection_curves`): on the twelve-label test clips (``words="12"``: the
commands, ``_silence_``, ``_unknown_``) a classifier *hears* command c in a clip when its most probable class is c
and that probability is at least a threshold t; then

    false alarm rate(t)   = P(a command heard | the clip is _silence_ or _unknown_)
    false reject rate(t)  = P(no command heard | the clip is a command)
    command accuracy(t)   = P(its own command heard | the clip is a command)

and sweeping t traces a detection error trade-off (DET) curve (Martin et al. 1997; drawn here on linear axes).
A ten-word classifier can only stay silent through t; a twelve-label one also through its ``_silence_`` and
``_unknown_`` classes. Both are scored on the same clips.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
import torch

from torchssm.audio.features import LogMel
from torchssm.data.loaders import TensorDictDataset
from torchssm.data.registry import build_task


def _features(dataset, n_mels: int) -> np.ndarray:
    waves = dataset.tensors["inputs"][..., 0]  # (n, 16000)
    with torch.no_grad():
        mel = torch.cat([LogMel(16000, n_mels=n_mels)(waves[i : i + 256]) for i in range(0, len(waves), 256)])
    return mel.reshape(len(waves), -1).numpy()  # (n, 98 * n_mels)


def voice_groups(n: int, seed: int = 0, voice_split: str = "families", words: str | int = "10") -> dict[str, list[int]]:
    """{group: indices of the first ``n`` test clips}: one group per voice family
    (:func:`~torchssm.audio.synthetic.voice_family` of :func:`~torchssm.audio.synthetic.item_voice`), and for
    ``voice_split="speakers"`` also "test_only" (variants m7 / f5, of no training voice), which overlaps them.
    With ``words="12"`` the ``_silence_`` clips (no voice) form a group of their own, outside the families, and
    the ``_unknown_`` clips one that overlaps them: their accuracies are the rates at which no command is heard."""
    from torchssm.audio.synthetic import SILENCE, UNKNOWN, command_class, is_test_only_voice, item_voice, voice_family

    labels = [command_class(i, words) for i in range(n)]
    spoken = [i for i in range(n) if labels[i] != SILENCE]
    voices = {i: item_voice("test", i, seed, voice_split) for i in spoken}
    groups: dict[str, list[int]] = {}
    for i, voice in voices.items():
        groups.setdefault(voice_family(voice), []).append(i)
    groups = dict(sorted(groups.items()))
    test_only = [i for i, v in voices.items() if is_test_only_voice(v)]
    if voice_split == "speakers" and test_only:
        groups["test_only"] = test_only
    for name in (SILENCE, UNKNOWN):
        members = [i for i in range(n) if labels[i] == name]
        if members:  # none among the first n < 11 clips
            groups[name] = members
    return groups


def run_voice_groups(n: int, seed: int, task_options: Mapping) -> dict[str, list[int]]:
    """:func:`voice_groups` of a run's saved task options (its ``voice_split`` and ``words``, their defaults where
    they are left out)."""
    from torchssm.audio.synthetic import words_option

    return voice_groups(n, seed, task_options.get("voice_split", "families"), words_option(task_options))


def logmel_logistic_baseline(
    snr_db: float = 10.0,
    n_mels: int = 40,
    c: float = 1.0,
    seed: int = 0,
    data_dir=None,
    voice_split: str = "speakers",
    **task_options,
) -> dict:
    """{"train_acc", "test_acc", "n_train", "n_test", "test_acc_by_group"} of the log-mel + logistic-regression
    baseline; ``test_acc_by_group``: {group: accuracy} over :func:`voice_groups`.

    ``voice_split`` defaults to "speakers", the split of every ``audio/spoken_commands_*`` preset and of
    ``torchssm speech kws-baseline`` (not the ``spoken_commands`` task's own default, "families"), so the
    baseline is computed on the presets' test clips unless asked otherwise. It uses no val split, so none is
    synthesised (``n_val=0`` unless ``task_options`` say otherwise; the train and test clips are the same)."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as err:
        raise ImportError("the baseline needs scikit-learn: pip install scikit-learn") from err
    from torchssm.audio.synthetic import words_option

    task = build_task(
        "spoken_commands",
        data_dir=data_dir,
        seed=seed,
        snr_db=snr_db,
        features="waveform",
        voice_split=voice_split,
        **{"n_val": 0, **task_options},
    )
    x_train, x_test = _features(task.train, n_mels), _features(task.test, n_mels)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=300)
    train_set, test_set = cast(TensorDictDataset, task.train), cast(TensorDictDataset, task.test)
    y_train, y_test = train_set.tensors["targets"].numpy(), test_set.tensors["targets"].numpy()
    clf.fit((x_train - mean) / std, y_train)
    correct = clf.predict((x_test - mean) / std) == y_test
    groups = voice_groups(len(y_test), seed, voice_split, words_option(task_options))
    return {
        "train_acc": float(clf.score((x_train - mean) / std, y_train)),
        "test_acc": float(correct.mean()),
        "n_train": len(y_train),
        "n_test": len(y_test),
        "test_acc_by_group": {g: float(correct[idx].mean()) for g, idx in groups.items()},
    }


def snr_sweep(
    checkpoint, snrs: Sequence[float] = (0, 5, 10, 15, 20), data_dir=None, batch_size: int = 64
) -> dict[float, float]:
    """{snr: test accuracy} of a ``spoken_commands`` checkpoint, its task rebuilt at each SNR."""
    return {snr: acc["all"] for snr, acc in snr_sweep_by_family(checkpoint, snrs, data_dir, batch_size).items()}


def snr_sweep_by_family(
    checkpoint, snrs: Sequence[float] = (0, 5, 10, 15, 20), data_dir=None, batch_size: int = 64
) -> dict[float, dict[str, float]]:
    """{snr: {"all": accuracy, group: accuracy on that group's test clips}} of a checkpoint, the groups of
    :func:`voice_groups` (voice families; with the "speakers" split also "test_only", variants m7 / f5).

    The run is loaded once (:func:`~torchssm.train.reload.load_run`); at each SNR only its test clips are
    rebuilt (its task options and data seed, noise at that SNR), and the model runs once over them: every
    group's accuracy is read from the same per-clip predictions."""
    from torchssm.train.reload import load_run

    only_test = {"n_train": 1, "n_val": 0, "speed_perturb": ()}
    run = None
    out: dict[float, dict[str, float]] = {}
    for snr in snrs:  # the run's own test clips (its task options and data seed), noise at each SNR
        if run is None:
            run = load_run(checkpoint, task="spoken_commands", data_dir=data_dir, snr_db=float(snr), **only_test)
            test = run.task.test
        else:
            options = {**run.config.task_options, **only_test, "snr_db": float(snr)}
            test = build_task(run.config.task_name, data_dir=data_dir, **options).test
        correct = _correct_per_clip(run.model, cast(TensorDictDataset, test), batch_size)
        groups = run_voice_groups(len(correct), run.config.data_seed, run.config.task_options)
        out[float(snr)] = _accuracies(correct, groups)
    return out


_TRAIN_ONLY_OPTIONS = ("n_train", "n_val", "speed_perturb", "rebuild_cache")  # task options the test clips ignore
ENSEMBLE_AVERAGES = ("logits", "probs")
ENSEMBLE_BY_SIZE_MAX = 16  # members: at most 2^16 - 1 ensembles are scored by accuracy_by_ensemble_size


def ensemble_accuracy(
    checkpoints: Sequence,
    snr_db: float | None = None,
    average: str = "logits",
    data_dir=None,
    batch_size: int = 64,
    by_size: bool = False,
) -> dict:
    """{"ensemble": accuracies, "members": [accuracies of each model]} of ``spoken_commands`` checkpoints
    evaluated on the same test clips; accuracies as :func:`snr_sweep_by_family` gives them ({"all": ..., group:
    ...} over :func:`voice_groups`). ``by_size``: also "by_size", :func:`accuracy_by_ensemble_size` of the
    members (each model's logits computed once).

    The ensemble's class is the argmax of the mean over the models of their logits (``average="logits"``,
    the default: the normalised geometric mean of the members' class probabilities; the one pre-registered
    in RESULTS.md, Speech, session 12) or of their softmax probabilities (``"probs"``: the arithmetic mean, as
    deep ensembles average, Lakshminarayanan et al. 2017). Both use the members' outputs as they are (no
    temperature); they differ only where the members disagree. ``snr_db``: the test clips' SNR (None: the
    runs' own). Every run must have been trained on the same test clips (task options other than n_train,
    n_val, speed_perturb and rebuild_cache equal, data seed included): the test set is built once. An
    ensemble of m models costs m times one model's inference."""
    from torchssm.models import build_model
    from torchssm.train.checkpoint import load_checkpoint
    from torchssm.train.config import model_config_for_task

    if average not in ENSEMBLE_AVERAGES:
        raise ValueError(f"average must be one of {list(ENSEMBLE_AVERAGES)}, got {average!r}")
    runs, options = _same_test_clips(checkpoints, snr_db)
    if by_size and len(runs) > ENSEMBLE_BY_SIZE_MAX:
        raise ValueError(f"by_size scores every subset: at most {ENSEMBLE_BY_SIZE_MAX} checkpoints, got {len(runs)}")
    first = runs[0][2]
    task = build_task("spoken_commands", data_dir=data_dir, **options, n_train=1, n_val=0, speed_perturb=())
    test = cast(TensorDictDataset, task.test)
    targets = test.tensors["targets"]
    groups = run_voice_groups(len(targets), first.data_seed, options)
    logits = []
    for path, _, config in runs:
        model = build_model(model_config_for_task(config.model, task.info))
        load_checkpoint(path, model, map_location="cpu")
        logits.append(_logits_per_clip(model, test, batch_size).double())
    stacked = torch.stack(logits)  # (models, clips, classes)
    out = {
        "ensemble": _accuracies(_member_scores(stacked, average).mean(0).argmax(-1) == targets, groups),
        "members": [_accuracies(x.argmax(-1) == targets, groups) for x in logits],
    }
    if by_size:
        out["by_size"] = accuracy_by_ensemble_size(stacked, targets, average)
    return out


def _member_scores(stacked: torch.Tensor, average: str) -> torch.Tensor:
    """(models, clips, classes) member logits -> the members' scores (same shape) whose mean over the models is
    an ensemble's score (argmax = its class): the logits themselves, or their softmax probabilities."""
    return stacked if average == "logits" else stacked.softmax(-1)


def accuracy_by_ensemble_size(logits: torch.Tensor, targets: torch.Tensor, average: str = "logits") -> dict:
    """{k: {"mean", "min", "max", "ensembles"}} for k = 1..m: the test accuracy of every ensemble of k of the m
    members (all C(m, k) subsets, scored as :func:`ensemble_accuracy` scores one), its mean, lowest and highest.

    logits: (m, n, c) the members' logits on the same n clips; targets: (n,) class indices. How many seeds an
    ensemble needs for an accuracy is read off the means; the spread shows how much rides on which seeds."""
    if average not in ENSEMBLE_AVERAGES:
        raise ValueError(f"average must be one of {list(ENSEMBLE_AVERAGES)}, got {average!r}")
    if logits.dim() != 3 or targets.shape != logits.shape[1:2]:
        raise ValueError(
            f"expected logits (m, n, c) and targets (n,), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    m = logits.shape[0]
    if not 1 <= m <= ENSEMBLE_BY_SIZE_MAX:
        raise ValueError(f"expected 1 to {ENSEMBLE_BY_SIZE_MAX} members, got {m}")
    n = max(len(targets), 1)
    scores = _member_scores(logits, average)  # (m, n, c) once; an ensemble is the mean of its members' rows
    out = {}
    for k in range(1, m + 1):
        accs = [
            int((scores[list(members)].mean(0).argmax(-1) == targets).sum()) / n  # count / n, as _accuracies
            for members in itertools.combinations(range(m), k)
        ]
        out[k] = {"mean": sum(accs) / len(accs), "min": min(accs), "max": max(accs), "ensembles": len(accs)}
    return out


def plot_accuracy_by_ensemble_size(by_size: dict, path, title: str = "") -> str:
    """Figure of :func:`accuracy_by_ensemble_size`'s result: the mean accuracy (%) of the ensembles of each size
    and the band from the lowest to the highest, written atomically to ``path`` (.png / .svg / .pdf)."""
    from torchssm.analysis.plots import legend, new_figure, save_figure

    sizes = sorted(int(k) for k in by_size)
    if not sizes:
        raise ValueError("no ensemble sizes to plot")
    row = {int(k): v for k, v in by_size.items()}
    mean, low, high = ([100 * row[k][key] for k in sizes] for key in ("mean", "min", "max"))
    fig, (ax,) = new_figure()
    ax.fill_between(sizes, low, high, alpha=0.25, label="lowest to highest ensemble")
    ax.plot(sizes, mean, marker="o", label="mean over the ensembles of that size")
    ax.set_xlabel("models in the ensemble")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(sizes)
    if title:
        ax.set_title(title, fontsize=9)
    legend(ax, loc="lower right")
    return save_figure(fig, path)


DETECTION_THRESHOLDS = (0.0, 0.5, 0.9, 0.99)


def detection_rates(
    probs: torch.Tensor, targets: torch.Tensor, thresholds: Sequence[float] = DETECTION_THRESHOLDS
) -> dict[str, list[float]]:
    """{"threshold", "command_accuracy", "false_reject", "false_alarm", "false_alarm_silence",
    "false_alarm_unknown"}: one value per threshold (module docstring). probs: (n, 10 or 12) class probabilities;
    targets: (n,) twelve-label targets (0-9 the commands, 10 ``_silence_``, 11 ``_unknown_``)."""
    from torchssm.audio.synthetic import COMMANDS

    n_commands = len(COMMANDS)
    if probs.dim() != 2 or probs.shape[1] not in (n_commands, n_commands + 2) or targets.shape != probs.shape[:1]:
        raise ValueError(
            f"expected probs (n, 10 or 12) and targets (n,), got {tuple(probs.shape)} and {tuple(targets.shape)}"
        )
    if any(not 0.0 <= t <= 1.0 for t in thresholds) or not len(thresholds):
        raise ValueError(f"thresholds must be probabilities in [0, 1], got {list(thresholds)}")
    top, best = probs.max(-1)  # (n,), (n,)
    command = targets < n_commands
    out: dict[str, list[float]] = {k: [] for k in ("threshold", "command_accuracy", "false_reject", "false_alarm")}
    out |= {"false_alarm_silence": [], "false_alarm_unknown": []}

    def rate(hit: torch.Tensor, among: torch.Tensor) -> float:
        return float(hit[among].float().mean()) if bool(among.any()) else float("nan")

    for t in thresholds:
        heard = (best < n_commands) & (top >= t)  # (n,) a command is heard
        out["threshold"].append(float(t))
        out["command_accuracy"].append(rate(heard & (best == targets), command))
        out["false_reject"].append(rate(~heard, command))
        out["false_alarm"].append(rate(heard, ~command))
        out["false_alarm_silence"].append(rate(heard, targets == n_commands))
        out["false_alarm_unknown"].append(rate(heard, targets == n_commands + 1))
    return out


def detection_curves(
    checkpoints: Sequence,
    thresholds: Sequence[float] = DETECTION_THRESHOLDS,
    snr_db: float | None = None,
    data_dir=None,
    batch_size: int = 64,
) -> dict[str, dict[str, list[float]]]:
    """{checkpoint: :func:`detection_rates`} of ``spoken_commands`` classifiers (ten-word or twelve-label) on the
    twelve-label test clips of the first run's task options (``words="12"``; ``snr_db``: None, the runs' own).
    Every run must have the same test options apart from ``words``."""
    from torchssm.audio.spotting import load_spotter

    runs, options = _same_test_clips(checkpoints, snr_db, ignore=("words",))
    if len({str(c) for c in checkpoints}) != len(checkpoints):
        raise ValueError(f"checkpoints repeat: {[str(c) for c in checkpoints]}")
    task = build_task("spoken_commands", data_dir=data_dir, **options, words="12", n_train=1, n_val=0, speed_perturb=())
    test = cast(TensorDictDataset, task.test)
    out = {}
    for checkpoint, (path, _, _) in zip(checkpoints, runs):
        model = load_spotter(path).model  # its own classes (10 or 12) and input shape, from its config
        probs = _logits_per_clip(model, test, batch_size).softmax(-1)  # (n, 10 or 12)
        out[str(checkpoint)] = detection_rates(probs, test.tensors["targets"], thresholds)
    return out


def plot_detection_curves(curves: dict[str, dict[str, list[float]]], path, title: str = "") -> str:
    """Figure of :func:`detection_curves`' result: false alarms (%) against false rejects (%) over the thresholds,
    one line per classifier (its label: the dict key), written atomically to ``path`` (.png / .svg / .pdf)."""
    from torchssm.analysis.plots import legend, new_figure, save_figure

    if not curves:
        raise ValueError("no detection curves to plot")
    fig, (ax,) = new_figure()
    for name, rates in curves.items():
        ax.plot(
            [100 * r for r in rates["false_reject"]], [100 * a for a in rates["false_alarm"]], marker="o", label=name
        )
    ax.set_xlabel("false rejects (% of command clips)")
    ax.set_ylabel("false alarms (% of silence and unknown clips)")
    if title:
        ax.set_title(title, fontsize=9)
    legend(ax, loc="upper right")
    return save_figure(fig, path)


def _same_test_clips(checkpoints: Sequence, snr_db: float | None, ignore: Sequence[str] = ()) -> tuple[list, dict]:
    """([read_run_config of each checkpoint], their shared test options): the task options but the training-only
    ones and ``ignore``, ``snr_db`` set unless None; a ValueError unless every run is a ``spoken_commands`` run
    with the same test options."""
    from torchssm.train.reload import read_run_config

    if isinstance(checkpoints, (str, bytes, os.PathLike)) or not len(checkpoints):
        raise ValueError(f"checkpoints must be a non-empty list of checkpoints or run directories, got {checkpoints!r}")
    runs = [read_run_config(c) for c in checkpoints]

    def test_options(config) -> dict:
        options = {k: v for k, v in config.task_options.items() if k not in (*_TRAIN_ONLY_OPTIONS, *ignore)}
        return options if snr_db is None else {**options, "snr_db": float(snr_db)}

    first_path, _, first = runs[0]
    options = test_options(first)
    for path, _, config in runs:
        if config.task_name != "spoken_commands":
            raise ValueError(f"{path} was trained on task {config.task_name!r}; expected 'spoken_commands'")
        if test_options(config) != options:
            raise ValueError(
                f"{path} was tested on other clips than {first_path}: task options {test_options(config)} vs {options}"
            )
    return runs, options


def _accuracies(correct: torch.Tensor, groups: dict[str, list[int]]) -> dict[str, float]:
    acc = {"all": int(correct.sum()) / max(len(correct), 1)}  # count / n, as train.losses.evaluate gives it
    for group, indices in groups.items():
        acc[group] = int(correct[torch.tensor(indices)].sum()) / len(indices)
    return acc


@torch.no_grad()
def _logits_per_clip(model: torch.nn.Module, dataset: TensorDictDataset, batch_size: int) -> torch.Tensor:
    """(n, classes): the model's logits for each clip, in eval mode (its mode restored after)."""
    from torchssm.data.loaders import iterate_batches
    from torchssm.train.losses import forward_batch

    was_training = model.training
    model.eval()
    try:
        out = [forward_batch(model, batch) for batch in iterate_batches(dataset, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def _correct_per_clip(model: torch.nn.Module, dataset: TensorDictDataset, batch_size: int) -> torch.Tensor:
    """(n,) bool: whether the model's class (argmax of its logits, in eval mode) is each clip's target."""
    logits = _logits_per_clip(model, dataset, batch_size)
    if not len(logits):
        return torch.zeros(0, dtype=torch.bool)
    return logits.argmax(-1) == dataset.tensors["targets"]
