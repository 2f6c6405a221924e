"""Initial weights from another run's checkpoint (``train.init_from``): a curriculum's next stage.

A run with ``train.init_from: PATH`` builds its model as usual, then replaces the freshly initialised
weights with those of checkpoint ``PATH`` (a checkpoint directory, or a run directory: its ``best``,
else ``last``). Only the weights are taken: the optimizer state, the learning-rate schedule (warm-up
included), the epoch/step counters, the RNG states and the metric history start fresh, as the new
config says. Typical use: train at a short length, then continue at a longer one (a length curriculum;
``synthetic/induction_heads_l256_mamba``), or fine-tune on another task with the same vocabulary.

The checkpoint's ``model`` config section must equal this run's (layer, sizes, layer_kwargs, ...):
a difference is a one-line ``ValueError`` naming the keys, before any weight is read; a task whose
input/output sizes differ fails on the tensor shapes (also a ``ValueError``). A resumed run ignores
``init_from`` (its weights come from the checkpoint it resumes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from torchssm.runs import BEST, LAST, find_checkpoint, is_run_dir
from torchssm.train.checkpoint import load_checkpoint, read_checkpoint_state
from torchssm.train.config import saved_config


def resolve_init_checkpoint(spec: str | Path) -> Path:
    """The checkpoint directory named by ``train.init_from`` (a run directory gives its best, else last)."""
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"train.init_from: no checkpoint or run directory at {path}")
    checkpoint = find_checkpoint(path)
    if checkpoint == path and is_run_dir(path):
        raise FileNotFoundError(f"train.init_from: the run directory {path} holds no checkpoint ({BEST}/ or {LAST}/)")
    return checkpoint


def model_config_differences(saved: dict, current: dict) -> list[str]:
    """``"key: checkpoint X != now Y"`` for every model-config entry that differs (JSON-normalised,
    so a tuple and a list of the same numbers are equal)."""
    saved, current = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    return [
        f"model.{key}: checkpoint {saved.get(key)!r} != now {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]


def load_initial_weights(
    model: nn.Module,
    spec: str | Path,
    model_config: dict,
    *,
    map_location: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> Path:
    """Load the weights of checkpoint ``spec`` into ``model`` after checking that the checkpoint's
    model config equals ``model_config`` (this run's ``cfg.model.to_dict()``). Returns the checkpoint path."""
    path = resolve_init_checkpoint(spec)
    state = read_checkpoint_state(path)  # a torn or corrupt checkpoint fails here, with its own message
    saved_model = (saved_config(state.get("config") or {}).get("model")) or None  # new keys at defaults
    if saved_model is None:
        raise ValueError(f"train.init_from: checkpoint {path} records no model config; it cannot be checked")
    diffs = model_config_differences(saved_model, model_config)
    if diffs:
        raise ValueError(
            f"train.init_from: checkpoint {path} holds another model (" + "; ".join(diffs) + "); "
            "the model section must match the checkpoint's"
        )
    load_checkpoint(path, model, map_location=map_location)  # weights only; shape mismatches are ValueErrors
    log(f"initial weights from {path} (its epoch {state.get('epoch')}, step {state.get('step')})")
    return path
