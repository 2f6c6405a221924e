"""Reload a finished training run: its checkpoint, config, task and trained model.

    run = load_run("runs/spoken_commands_s4d_frame16/last", task="spoken_commands", snr_db=0.0)
    run.model        # the trained model, weights loaded, in eval mode
    run.task         # the run's task rebuilt with its saved options, the overrides on top
    run.config       # ExperimentConfig of the run (saved_config: older checkpoints read as today's)
    run.state        # the checkpoint's sidecar (epoch, metrics, ...)

The analyses that score a trained model on changed data (an SNR sweep, bits per sample by context
length, ``torchssm eval``) all need the same steps: find the checkpoint (a run directory gives its
``best``, else ``last``: :func:`torchssm.runs.find_checkpoint`), read the config it was trained with,
check it was trained on the task the analysis expects, rebuild that task with some options changed,
build the model for the task's shapes and load the weights. This module is those steps, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from torchssm.data.registry import TaskData, TaskInfo, build_task
from torchssm.models import build_model
from torchssm.runs import find_checkpoint
from torchssm.train.checkpoint import load_checkpoint, read_checkpoint_state
from torchssm.train.config import ExperimentConfig, model_config_for_task, saved_config


@dataclass
class LoadedRun:
    """A trained run rebuilt by :func:`load_run`."""

    checkpoint: Path  # the checkpoint directory read
    state: dict[str, Any]  # its sidecar (trainer_state.json): epoch, metrics, config
    config: ExperimentConfig  # the run's experiment config
    task: TaskData  # the run's task, rebuilt with the overrides
    model: nn.Module  # the trained model (eval mode)


def read_run_config(checkpoint) -> tuple[Path, dict[str, Any], ExperimentConfig]:
    """(checkpoint directory, sidecar, experiment config) of a checkpoint or run directory."""
    path = find_checkpoint(checkpoint)
    state = read_checkpoint_state(path)  # a missing or corrupt checkpoint fails here with its own message
    if not isinstance(state.get("config"), dict) or "task" not in state["config"]:
        raise ValueError(f"{path} holds no training config (not written by torchssm train)")
    return path, state, ExperimentConfig.from_dict(saved_config(state["config"]))


def load_run(checkpoint, *, task: str | None = None, data_dir=None, device="cpu", **task_overrides: Any) -> LoadedRun:
    """Rebuild the run at ``checkpoint`` (a checkpoint or run directory).

    ``task``: the task name the caller expects the run to be trained on (a ``ValueError`` otherwise);
    ``task_overrides``: task options replacing the saved ones (e.g. ``snr_db=0.0``, ``n_test=64``); the
    data seed stays the run's unless ``seed`` is among them.
    """
    path, state, config = read_run_config(checkpoint)
    if task is not None and config.task_name != task:
        raise ValueError(f"{path} was trained on task {config.task_name!r}; expected {task!r}")
    options = {**config.task_options, **task_overrides}
    data = build_task(config.task_name, data_dir=data_dir, **options)
    model = trained_model(path, config, data.info, device)
    return LoadedRun(checkpoint=path, state=state, config=config, task=data, model=model)


def trained_model(path: Path, config: ExperimentConfig, info: TaskInfo, device="cpu") -> nn.Module:
    """The model of ``config`` for a task of shapes ``info``, the weights of checkpoint ``path`` loaded, in eval mode
    (for callers that know the task's shapes without rebuilding its data)."""
    model = build_model(model_config_for_task(config.model, info)).to(device)
    load_checkpoint(path, model, map_location=device)
    return model.eval()
