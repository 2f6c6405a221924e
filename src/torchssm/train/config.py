"""Experiment configuration: ``{task: {name, ...options}, model: ModelConfig, train: TrainConfig}``.

One YAML file per experiment (a shipped preset, ``torchssm presets``, or any file), three sections
and no nesting beyond that (``model.layer_kwargs`` is a plain dict passed to the layer)::

    task:  {name: mnist1d, val_fraction: 0.1}
    model: {layer: lru, d_model: 64, n_layers: 2, layer_kwargs: {d_state: 64, r_min: 0.5}}
    train: {epochs: 40, batch_size: 64, lr: 4.0e-3}

``--set key.sub=value`` overrides any entry; the value is parsed as YAML (``train.lr=1e-3``,
``model.norm=layer``, ``model.layer_kwargs={d_state: 32}``). Unknown keys raise a ``ValueError``
naming the valid ones. The model's ``d_input``/``d_output``/``input_kind``/``paired`` come from the
task (:func:`model_config_for_task`), not from the file.

Two seeds: ``task.seed`` (default 0) seeds the data (generated examples, validation/test splits);
``train.seed`` seeds the initial weights, dropout and the shuffling order. So changing
``train.seed`` alone re-runs the same data with another initialisation, and ``--set task.seed=1``
draws other data. (Before ``task.seed`` existed, ``train.seed`` seeded both; a config saved
without ``task.seed`` is read back with ``task.seed = train.seed``: :func:`saved_config`.)
"""

from __future__ import annotations

import copy
import math
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from torchssm.checks import unit_interval
from torchssm.data.registry import TaskInfo
from torchssm.models.config import ModelConfig

SECTIONS = ("task", "model", "train")
DEFAULT_DATA_SEED = 0  # task.seed when a config gives none (every task builder's own default seed)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one run.

    Defaults are generic (AdamW with warm-up + cosine decay, as in the S5 and LRU training
    set-ups of Smith et al. 2023 and Orvieto et al. 2023); each experiment's YAML sets
    and cites its own values.
    """

    epochs: int = 40
    batch_size: int = 64
    eval_batch_size: int = 512
    lr: float = 1e-3  # peak learning rate of the AdamW "base" group
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.999)  # AdamW defaults (Loshchilov & Hutter 2019)
    warmup_epochs: float = 0.0  # linear warm-up length in epochs (may be fractional) ...
    warmup_steps: int = 0  # ... or in optimizer steps; the larger of the two is used
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 0.0  # max global gradient norm; 0 disables clipping
    seed: int = 0
    out_dir: str = "runs/default"
    eval_every: int = 1  # evaluate (val + test) every this many epochs, and after the last one
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    device: str = "auto"  # "auto" (cuda if available, else cpu) | "cpu" | "cuda" | "cuda:1" ...
    threads: int = 0  # CPU threads of torch and numba during the run (restored after); 0: auto_cpu_threads()
    progress: bool = True  # tqdm bar (hidden automatically when stdout is not a terminal)
    save_checkpoints: bool = True  # write last/ (each evaluation) and best/ (best validation accuracy)
    # Scale and reliability (docs/reliability.md); the values are this library's choices, not a paper's:
    keep_checkpoints: int = 3  # also keep the last K epochs in checkpoints/epoch-N (resume falls back to them)
    max_nonfinite_steps: int = 3  # skip a step with a NaN/Inf loss or gradient; stop after more in a row
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size is the global batch, split over them)
    precision: str = "fp32"  # "fp32" | "bf16" (autocast; SSM parameters and states stay float32)
    compile: bool = False  # torch.compile the model for training
    tbptt_chunk: int = 0  # truncated BPTT: back-propagate through chunks of this many steps (0: full BPTT)
    fsdp: bool = False  # under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP
    tensorboard: bool = False  # also write metrics.jsonl's scalars to <out_dir>/tensorboard (needs `tensorboard`)
    # stop at the first batch boundary after this call's CPU time (time.process_time) passes this many minutes;
    # the model is evaluated and saved there (mid-epoch too), so --resume continues (0: no limit; a shared
    # machine's budget is CPU time)
    max_cpu_minutes: float = 0.0
    # a checkpoint or run directory whose weights (only) start this run: a curriculum's next stage (train/init_from.py)
    init_from: str = ""
    # knowledge distillation (train/distill.py; Hinton, Vinyals & Dean 2015, Sec. 2): checkpoint or run directories of
    # teachers trained on this (classification) task; their mean logits are soft targets at temperature T, weighted w
    # against the labels' (1 - w). T = 4 is UNVERIFIED (our choice; the paper fixes no single temperature);
    # w = 0.9: "a considerably lower weight on the second objective function" (the hard targets), Sec. 2.
    distill_from: list = field(default_factory=list)
    distill_temperature: float = 4.0
    distill_weight: float = 0.9
    # a directory where the teachers' mean logits on the training set are kept, keyed by the teachers' weights and
    # the training tensors, so that students sharing teachers and data score them once ("": not kept)
    distill_cache: str = ""

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("train.batch_size and train.eval_batch_size must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"train.lr must be a positive finite number, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_epochs < 0 or self.warmup_steps < 0:
            raise ValueError("train.weight_decay, grad_clip, warmup_epochs and warmup_steps must be >= 0")
        unit_interval("train.min_lr_ratio", self.min_lr_ratio, "a ratio")
        if self.eval_every < 1:
            raise ValueError(f"train.eval_every must be >= 1, got {self.eval_every}")
        for name in ("keep_checkpoints", "max_nonfinite_steps", "tbptt_chunk", "max_cpu_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.grad_accum < 1 or self.grad_accum > self.batch_size:
            raise ValueError(f"train.grad_accum must be in [1, batch_size={self.batch_size}], got {self.grad_accum}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"train.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if isinstance(self.distill_from, str):
            self.distill_from = [self.distill_from] if self.distill_from else []
        self.distill_from = [str(p) for p in self.distill_from]
        if not (self.distill_temperature > 0 and math.isfinite(self.distill_temperature)):
            raise ValueError(f"train.distill_temperature must be a positive number, got {self.distill_temperature}")
        unit_interval("train.distill_weight", self.distill_weight, "a weight")
        if self.distill_cache and not self.distill_from:
            raise ValueError("train.distill_cache needs train.distill_from (the teachers whose logits it keeps)")
        if self.distill_from and self.tbptt_chunk > 0:
            raise ValueError("train.distill_from does not combine with train.tbptt_chunk (per-step tasks)")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2:
            raise ValueError(f"train.betas must be two numbers, got {self.betas}")

    @property
    def distillation(self) -> tuple[float, float] | None:
        """(temperature, weight) when ``distill_from`` names teachers, else None."""
        return (self.distill_temperature, self.distill_weight) if self.distill_from else None


@dataclass
class ExperimentConfig:
    task: dict[str, Any]  # {"name": registry name, **options passed to the task builder}
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        self.task = dict(self.task)  # a copy: the data seed is recorded in it explicitly
        self.task["seed"] = _coerce(self.task.get("seed", DEFAULT_DATA_SEED), int, "task.seed")

    @property
    def task_name(self) -> str:
        return self.task["name"]

    @property
    def data_seed(self) -> int:
        """``task.seed``: seeds the task's data only (``train.seed`` seeds weights, dropout, shuffling)."""
        return self.task["seed"]

    @property
    def task_options(self) -> dict[str, Any]:
        """Keyword arguments of the task builder, ``seed`` (the data seed) included."""
        return {k: v for k, v in self.task.items() if k != "name"}

    def to_dict(self) -> dict:
        return {"task": copy.deepcopy(self.task), "model": self.model.to_dict(), "train": _plain(asdict(self.train))}

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a mapping with sections {list(SECTIONS)}; got {type(data).__name__}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; expected some of {list(SECTIONS)}")
        task = data.get("task")
        if isinstance(task, str):
            task = {"name": task}
        if not isinstance(task, dict) or not isinstance(task.get("name"), str):
            raise ValueError("config needs a 'task' section with a 'name' (see `torchssm tasks`)")
        return cls(
            task=dict(task),
            model=_build_dataclass(ModelConfig, data.get("model") or {}, "model"),
            train=_build_dataclass(TrainConfig, data.get("train") or {}, "train"),
        )


def _plain(value):
    """Tuples -> lists, recursively, so a config round-trips through JSON unchanged."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value, annotation, key: str):
    """Convert a YAML value to a field's declared type (YAML 1.1 reads ``1e-3`` as a string)."""
    if typing.get_origin(annotation) is Union:  # Optional[X]
        if value is None:
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    base = typing.get_origin(annotation) or annotation
    ok = True
    try:
        if base is bool:
            ok = isinstance(value, bool)
        elif base is int:
            ok = not isinstance(value, bool) and (
                isinstance(value, (int, str)) or (isinstance(value, float) and value.is_integer())
            )
            value = int(value) if ok else value
        elif base is float:
            ok = not isinstance(value, bool) and isinstance(value, (int, float, str))
            value = float(value) if ok else value
        elif base is str:
            ok = isinstance(value, str)
        elif base is tuple:
            ok = isinstance(value, (list, tuple))
            value = tuple(value) if ok else value
        elif base is dict:
            ok = isinstance(value, dict)
    except ValueError:
        ok = False
    if not ok:
        raise TypeError(f"{key} expects a value of type {getattr(base, '__name__', base)}, got {value!r}")
    return value


def _build_dataclass(cls, data: dict, section: str):
    if not isinstance(data, dict):
        raise ValueError(f"config section {section!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {section} config key(s) {unknown}; valid keys: {known}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def parse_override(text: str):
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001); the value is YAML (numbers, bools, lists, dicts)."""
    if "=" not in text:
        raise ValueError(f"--set expects key.sub=value (e.g. train.lr=1e-3), got {text!r}")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise ValueError(f"--set key must look like section.key (sections: {list(SECTIONS)}), got {key!r}")
    if path[0] not in SECTIONS:
        raise ValueError(f"unknown config section {path[0]!r} in --set {text!r}; expected one of {list(SECTIONS)}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"cannot parse the value of --set {text!r} as YAML: {err}") from None
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; a number was meant
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return path, value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of the raw config dict with ``key.sub=value`` overrides applied.

    Keys are checked when the result is turned into an :class:`ExperimentConfig` (model/train
    keys must exist; task options are checked by the task's builder).
    """
    data = copy.deepcopy(data) if data else {}
    for text in overrides or ():
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--set {text!r}: {part!r} is not a mapping (it holds {child!r})")
            node = child
        node[path[-1]] = value
    return data


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), base: dict | None = None
) -> ExperimentConfig:
    """Read a YAML experiment config (or start from ``base``), apply ``--set`` overrides, validate."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"cannot parse config {path}: {err}") from None
    else:
        data = copy.deepcopy(base) if base is not None else {}
    return ExperimentConfig.from_dict(apply_overrides(data or {}, overrides))


def saved_config(data: dict) -> dict:
    """A config dict read back from a run (checkpoint sidecar, ``config.yaml``), ready for
    :meth:`ExperimentConfig.from_dict` and for comparison with a current config: one saved before
    ``task.seed`` existed built its data with ``train.seed``, so that becomes its ``task.seed``; a
    ``model`` or ``train`` key added since the run was saved takes its default (a copy; nothing else changes)."""
    data = copy.deepcopy(data)
    task = data.get("task")
    if isinstance(task, dict) and "seed" not in task:
        task["seed"] = (data.get("train") or {}).get("seed", TrainConfig.seed)
    for section, defaults in (("model", ModelConfig()), ("train", TrainConfig())):
        if isinstance(data.get(section), dict):
            data[section] = {**asdict(defaults), **data[section]}
    return data


def model_config_for_task(model: ModelConfig, info: TaskInfo) -> ModelConfig:
    """A copy of ``model`` with the task-given fields filled in (d_input, d_output, input_kind, paired).

    Tasks with one target per step ("seq2seq", "lm") need the per-token head: pooling "none".
    """
    cfg = copy.deepcopy(model)
    cfg.d_input, cfg.d_output, cfg.input_kind, cfg.paired = info.d_input, info.d_output, info.input_kind, info.paired
    if info.kind in ("seq2seq", "lm") and cfg.pooling != "none":
        raise ValueError(
            f"task {info.name!r} has one target per step ({info.kind}); set model.pooling=none (got {cfg.pooling!r})"
        )
    return cfg
