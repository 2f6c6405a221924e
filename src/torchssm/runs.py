"""A training run on disk: what ``torchssm train`` leaves in its run directory, and how to find it.

    <run>/config.yaml              the experiment config of the run
    <run>/metrics.jsonl            one JSON record per epoch (epoch, step, lr, train/val/test loss and accuracy)
    <run>/result.json              the last and best records and the times, written when the run ends
    <run>/last/, <run>/best/       checkpoint directories (:mod:`torchssm.train.checkpoint`); each is also a
                                   ``torchssm.from_pretrained`` directory; their sidecar is ``trainer_state.json``
    <run>/checkpoints/epoch-N/     the last ``train.keep_checkpoints`` epochs
    <run>/tensorboard/             TensorBoard event files (``train.tensorboard``)
    <run>/.lock                    present while a run writes into the directory (:mod:`torchssm.train.run_dir`)

This module is the readers' side of that layout (``eval``, ``export``, benchmarks, plots). It
imports nothing else of torchssm, so ``models/`` or ``analysis/`` can find a run's checkpoints
without importing ``train/`` (whose package pulls in the training loop, data and models).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

PathLike = str | os.PathLike

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
LAST, BEST = "last", "best"
SNAPSHOTS = "checkpoints"  # <run>/checkpoints/epoch-NNNNNN
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"
SIDECAR = "trainer_state.json"  # marks a complete checkpoint directory

# What a run writes (``--overwrite`` removes exactly these, plus temporary directories of killed saves).
RUN_FILES = (CONFIG_FILE, METRICS_FILE, RESULT_FILE, LAST, BEST, SNAPSHOTS, TENSORBOARD_DIR)


def find_checkpoint(path: PathLike) -> Path:
    """A checkpoint directory as given, or a run directory's ``best`` (else ``last``) checkpoint."""
    path = Path(path)
    if not (path / SIDECAR).exists():
        for name in (BEST, LAST):
            if (path / name / SIDECAR).exists():
                return path / name
    return path


def run_label(checkpoint: PathLike) -> str:
    """A short name for a checkpoint in tables and plots: the run directory's name for ``<run>/best`` or
    ``<run>/last``, else the checkpoint directory's own name."""
    path = Path(checkpoint)
    return path.parent.name if path.name in (BEST, LAST) else path.name


def is_run_dir(path: PathLike) -> bool:
    """Whether ``path`` is a run directory (it holds ``metrics.jsonl`` or ``config.yaml``) rather
    than a checkpoint directory (which holds ``trainer_state.json``)."""
    path = Path(path)
    return not (path / SIDECAR).exists() and ((path / METRICS_FILE).is_file() or (path / CONFIG_FILE).is_file())


def run_dir_of(checkpoint: PathLike) -> Path | None:
    """The run directory holding ``checkpoint`` (``<run>/last``, ``<run>/best`` or
    ``<run>/checkpoints/epoch-N``), recognised by its ``metrics.jsonl`` or ``config.yaml``;
    None for a checkpoint directory that stands alone."""
    parent = Path(checkpoint).parent
    if parent.name == SNAPSHOTS:
        parent = parent.parent
    return parent if is_run_dir(parent) else None


def read_metrics(path: PathLike, upto_epoch: int | None = None) -> list[dict]:
    """The records of ``<run>/metrics.jsonl`` (``path``: the run directory or the file), oldest first.

    ``upto_epoch`` keeps the records with ``epoch <= upto_epoch``. A last line cut short (a write
    interrupted by a full disk or a kill) is skipped with a warning; a damaged earlier line is an error.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON object per line, got {type(record).__name__}")
            records.append(record)
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            if i < len(lines) - 1:
                raise ValueError(f"{path} line {i + 1} is not a JSON record ({err})") from None
            warnings.warn(f"{path}: skipping its last line, cut short ({err})", RuntimeWarning, stacklevel=2)
    if upto_epoch is not None:
        records = [r for r in records if r.get("epoch", 0) <= upto_epoch]
    return records


def _run_file(run: PathLike, name: str) -> Path:
    """``<run>/name`` for a run directory or a checkpoint directory inside one."""
    run = Path(run)
    folder = run if is_run_dir(run) else run_dir_of(run)
    if folder is None or not (folder / name).is_file():
        raise FileNotFoundError(f"no {name} in {run} or the run directory above it (expected a torchssm train run)")
    return folder / name


def read_config(run: PathLike) -> dict:
    """The experiment config dict a run saved (``<run>/config.yaml``); ``run``: the run directory or a
    checkpoint directory in it. As saved: ``train.config.saved_config`` fills keys added since."""
    import yaml

    path = _run_file(run, CONFIG_FILE)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not YAML ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), dict):
        raise ValueError(f"{path}: expected an experiment config with a task section")
    return config


def read_result(run: PathLike) -> dict:
    """``<run>/result.json`` of a finished run: its "last" and "best" records and times (``run``: the run
    directory or a checkpoint directory in it)."""
    path = _run_file(run, RESULT_FILE)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path} is not JSON ({err})") from None
    if not isinstance(result, dict) or not isinstance(result.get("last"), dict):
        raise ValueError(f"{path}: expected a result with a 'last' record (written when a run ends)")
    return result
