"""Training curves from a run's ``metrics.jsonl`` (pure functions; the figure is :func:`plots.plot_training_curves`).

``torchssm train`` appends one JSON record per epoch to ``<out_dir>/metrics.jsonl``::

    {"epoch": 3, "step": 168, "lr": 0.0039, "train_loss": 0.41, "train_acc": 0.87,
     "val_loss": 0.38, "val_acc": 0.88, "test_loss": 0.37, "test_acc": 0.89, "time_s": 12.1}

(``*_acc`` only for classification; ``val_*`` / ``test_*`` only on evaluated epochs). A curve is one
metric of one split against ``epoch`` or ``step``: :func:`series` picks the records that have both.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from torchssm.runs import METRICS_FILE
from torchssm.runs import read_metrics as read_run_metrics

SPLITS = ("train", "val", "test")
X_AXES = ("epoch", "step")


def metrics_file(run: str | os.PathLike) -> Path:
    """``run``'s metrics file: ``run`` itself if it is a file, else ``run/metrics.jsonl``."""
    path = Path(run)
    if path.is_file():
        return path
    if (path / METRICS_FILE).is_file():
        return path / METRICS_FILE
    what = "no such directory" if not path.exists() else f"no {METRICS_FILE} in it"
    raise FileNotFoundError(f"{str(run)!r}: {what} (expected a run directory written by `torchssm train`)")


def read_metrics(run: str | os.PathLike) -> list[dict]:
    """The records of ``run/metrics.jsonl`` in file order (:func:`torchssm.runs.read_metrics`: a torn
    last line, from a run still writing or killed mid-write, is skipped with a warning; a bad line
    anywhere else is a ValueError naming the file and line); no records is a ValueError."""
    path = metrics_file(run)
    records = read_run_metrics(path)
    if not records:
        raise ValueError(f"{path} holds no records yet (a run writes one per epoch)")
    return records


def series(records: list[dict], metric: str, x: str = "epoch") -> tuple[list[float], list[float]]:
    """``(xs, ys)`` of ``metric`` (e.g. ``"val_acc"``) against ``x`` ("epoch" or "step"), sorted by x.

    Records without either key (an epoch that was not evaluated) are left out; when x repeats (a run
    resumed from an earlier checkpoint re-writes its epochs) the later record wins."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {X_AXES}, got {x!r}")
    points = {}
    for r in records:
        if isinstance(r.get(x), (int, float)) and isinstance(r.get(metric), (int, float)):
            if math.isfinite(r[metric]):
                points[r[x]] = float(r[metric])
    xs = sorted(points)
    return xs, [points[v] for v in xs]


def has_metric(records: list[dict], kind: str) -> bool:
    """Whether any split has ``kind`` ("loss" or "acc") in any record."""
    return any(f"{split}_{kind}" in r for r in records for split in SPLITS)


def run_labels(runs: list[str | os.PathLike]) -> list[str]:
    """Short distinct names for runs: each directory's name, with as many parent folders as it takes to
    tell two runs apart (``runs/a/lru`` and ``runs/b/lru`` -> ``a/lru``, ``b/lru``)."""
    parts = []
    for run in runs:
        path = Path(run).resolve()
        if path.name == METRICS_FILE or path.is_file():
            path = path.parent
        parts.append(path.parts)
    for depth in range(1, max(map(len, parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(run) for run in runs]  # the same run twice: keep what the user typed
