"""Keyword-spotting baseline and SNR sweeps on ``spoken_commands``.

Baseline: log-mel frames (40 channels, 25 ms / 10 ms; :class:`torchssm.audio.features.LogMel`) of
each 1 s clip, flattened to 98 x 40 = 3920 features, standardised with the training set's mean and
standard deviation, and a multinomial logistic regression (scikit-learn ``LogisticRegression``,
L2, C = ``c``). It shows how separable the synthetic words are without any sequence model: the
gap between it and an SSM is what the SSM adds on this data, not on real speech.

:func:`snr_sweep` evaluates a model trained with ``torchssm train`` (a checkpoint) on the same test
voices at several SNRs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from torchssm.audio.features import LogMel
from torchssm.data.registry import build_task


def _features(dataset, n_mels: int) -> np.ndarray:
    waves = dataset.tensors["inputs"][..., 0]  # (n, 16000)
    with torch.no_grad():
        mel = torch.cat([LogMel(16000, n_mels=n_mels)(waves[i : i + 256]) for i in range(0, len(waves), 256)])
    return mel.reshape(len(waves), -1).numpy()  # (n, 98 * n_mels)


def logmel_logistic_baseline(
    snr_db: float = 10.0, n_mels: int = 40, c: float = 1.0, seed: int = 0, data_dir=None, **task_options
) -> dict[str, float]:
    """{"train_acc", "test_acc", "n_train", "n_test"} of the log-mel + logistic-regression baseline."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as err:
        raise ImportError("the baseline needs scikit-learn: pip install scikit-learn") from err
    task = build_task(
        "spoken_commands", data_dir=data_dir, seed=seed, snr_db=snr_db, features="waveform", **task_options
    )
    x_train, x_test = _features(task.train, n_mels), _features(task.test, n_mels)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=300)
    y_train, y_test = task.train.tensors["targets"].numpy(), task.test.tensors["targets"].numpy()
    clf.fit((x_train - mean) / std, y_train)
    return {
        "train_acc": float(clf.score((x_train - mean) / std, y_train)),
        "test_acc": float(clf.score((x_test - mean) / std, y_test)),
        "n_train": len(y_train),
        "n_test": len(y_test),
    }


def snr_sweep(
    checkpoint, snrs: Sequence[float] = (0, 5, 10, 15, 20), data_dir=None, batch_size: int = 64
) -> dict[float, float]:
    """{snr: test accuracy} of a ``spoken_commands`` checkpoint, its task rebuilt at each SNR."""
    return {snr: acc["all"] for snr, acc in snr_sweep_by_family(checkpoint, snrs, data_dir, batch_size).items()}


def snr_sweep_by_family(
    checkpoint, snrs: Sequence[float] = (0, 5, 10, 15, 20), data_dir=None, batch_size: int = 64
) -> dict[float, dict[str, float]]:
    """{snr: {"all": accuracy, family: accuracy on that voice family's test clips}} of a checkpoint; a clip's
    family is :func:`~torchssm.audio.synthetic.voice_family` of its :func:`~torchssm.audio.synthetic.item_voice`."""
    from torchssm.audio.synthetic import item_voice, voice_family
    from torchssm.data.loaders import TensorDictDataset
    from torchssm.models import build_model
    from torchssm.train.checkpoint import load_checkpoint, read_checkpoint_state
    from torchssm.train.config import ExperimentConfig, model_config_for_task, saved_config
    from torchssm.train.loop import evaluate

    state = read_checkpoint_state(checkpoint)
    cfg = ExperimentConfig.from_dict(saved_config(state["config"]))
    if cfg.task_name != "spoken_commands":
        raise ValueError(f"{checkpoint} was trained on {cfg.task_name!r}, not spoken_commands")
    seed, voice_split = int(cfg.task_options.get("seed", 0)), cfg.task_options.get("voice_split", "families")
    out: dict[float, dict[str, float]] = {}
    for snr in snrs:
        options = {**cfg.task_options, "snr_db": float(snr), "n_train": 1, "n_val": 0, "speed_perturb": ()}
        task = build_task("spoken_commands", data_dir=data_dir, **options)
        model = build_model(model_config_for_task(cfg.model, task.info))
        load_checkpoint(checkpoint, model)
        tensors = cast(TensorDictDataset, task.test).tensors
        x, y = tensors["inputs"], tensors["targets"]
        families = [voice_family(item_voice("test", i, seed, voice_split)) for i in range(len(y))]
        acc = {"all": evaluate(model, task.test, task.info, batch_size=batch_size)["acc"]}
        for family in sorted(set(families)):
            idx = torch.tensor([i for i, f in enumerate(families) if f == family])
            subset = TensorDictDataset(inputs=x[idx], targets=y[idx])
            acc[family] = evaluate(model, subset, task.info, batch_size=batch_size)["acc"]
        out[float(snr)] = acc
    return out
