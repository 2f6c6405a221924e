"""Task registry: every task builds a :class:`TaskData` (info + train/val/test datasets).

A task module registers its builder with :func:`register_task`; the registry imports modules
lazily so ``torchssm tasks`` can list everything without building any data.

Batches are dicts of tensors (default collate):
    "inputs":  (L, d_input) float, or (L,) long token ids when ``info.input_kind == "tokens"``;
               for paired tasks (``info.paired``) also "inputs2" (the second sequence).
    "targets": () long class id (classification), (L,) long (seq2seq / lm), or float (regression).
    "lengths": () long, present when sequences are padded (true length before padding).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch.utils.data import Dataset


@dataclass(frozen=True)
class TaskInfo:
    """What a model needs to know about a task.

    name: registry name. d_input: features per step (vocab size when input_kind == "tokens").
    d_output: number of classes (classification / seq2seq / lm) or output features (regression).
    length: (max) sequence length. kind: "classification" (one label per sequence), "seq2seq"
    (one label per step), "lm" (next-token), "regression". input_kind: "real" or "tokens".
    paired: two sequences per example (LRA Retrieval). ignore_index: target value to skip.
    source: where the examples came from, for tasks that can be read or generated: "release" (the
    official files) or "generated" (written by torchssm's generator); "" where there is no choice.
    """

    name: str
    d_input: int
    d_output: int
    length: int
    kind: str = "classification"
    input_kind: str = "real"
    paired: bool = False
    ignore_index: int = -100
    citation: str = ""
    source: str = ""


@dataclass
class TaskData:
    info: TaskInfo
    train: Dataset
    val: Dataset | None
    test: Dataset
    extra: dict = field(default_factory=dict)


# name -> module that registers it on import
_TASK_MODULES: dict[str, str] = {
    "mnist1d": "torchssm.data.mnist1d",
    "copying": "torchssm.data.synthetic.copying",
    "selective_copying": "torchssm.data.synthetic.copying",
    "induction_heads": "torchssm.data.synthetic.recall",
    "mqar": "torchssm.data.synthetic.recall",
    "adding": "torchssm.data.synthetic.signals",
    "aa_ab": "torchssm.data.synthetic.signals",
    "listops": "torchssm.data.lra.listops",
    "text": "torchssm.data.lra.text",
    "retrieval": "torchssm.data.lra.text",
    "image": "torchssm.data.lra.image",
    "scifar": "torchssm.data.lra.image",
    "pathfinder": "torchssm.data.lra.pathfinder",
    "pathx": "torchssm.data.lra.pathfinder",
    "digits": "torchssm.data.digits",
    "ucr": "torchssm.data.timeseries",
    "imu": "torchssm.timeseries.imu",
    "spoken_commands": "torchssm.audio.synthetic",
    "spoken_sentences": "torchssm.audio.synthetic",
    "spoken_mulaw": "torchssm.audio.waveform",
    "speech_commands": "torchssm.audio.corpora",
    "librispeech": "torchssm.audio.corpora",
    "lm_text": "torchssm.data.text",
}
_BUILDERS: dict[str, Callable[..., TaskData]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_task(name: str, description: str = ""):
    """Decorator: ``@register_task("copying")`` on ``def build(data_dir=None, seed=0, **options) -> TaskData``."""

    def wrap(fn):
        _BUILDERS[name] = fn
        doc = (fn.__doc__ or "").strip()
        _DESCRIPTIONS[name] = description or (doc.splitlines()[0] if doc else "")
        return fn

    return wrap


def declare_task_module(name: str, module: str) -> None:
    """Tell the registry which module registers ``name`` (imported on first use)."""
    _TASK_MODULES[name] = module


def _load(name: str) -> None:
    if name in _BUILDERS:
        return
    if name not in _TASK_MODULES:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(set(_TASK_MODULES) | set(_BUILDERS))}")
    importlib.import_module(_TASK_MODULES[name])
    if name not in _BUILDERS:
        raise RuntimeError(f"module {_TASK_MODULES[name]} did not register task {name!r}")


def task_defaults(name: str) -> dict:
    """{option: default} of task ``name``'s builder (its keyword arguments with defaults; tuples as lists, as a
    saved YAML config holds them): a config that leaves an option out and one that writes its default compare equal."""
    _load(name)
    params = inspect.signature(_BUILDERS[name]).parameters.values()
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in params
        if p.default is not inspect.Parameter.empty
    }


def with_task_defaults(task: dict) -> dict:
    """A copy of a task section ({"name", **options}) with each option of its builder that it leaves out at the
    builder's default (:func:`task_defaults`): a run saved before an option existed then compares equal to a config
    that writes the option's default. A section without a name, or of a task this install does not know, as it is."""
    try:
        defaults = task_defaults(task["name"])
    except (KeyError, ValueError):
        return dict(task)
    return {**defaults, **task}


def list_tasks() -> dict[str, str]:
    """{name: one-line description} of every known task."""
    for name in list(_TASK_MODULES):
        try:
            _load(name)
        except ImportError:
            _DESCRIPTIONS.setdefault(name, "(unavailable: missing optional dependency)")
    return {n: _DESCRIPTIONS.get(n, "") for n in sorted(set(_TASK_MODULES) | set(_BUILDERS))}


def build_task(name: str, **options) -> TaskData:
    """Build task ``name``; ``options`` (data_dir, seed, task-specific) go to its builder."""
    _load(name)
    try:
        return _BUILDERS[name](**options)
    except TypeError as err:
        raise TypeError(f"bad options for task {name!r}: {err}") from err
